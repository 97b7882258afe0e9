//! Replication across hosts, and healing after a partition, with three real `kvs` nodes
//! in network namespaces.
//!
//! The test builds its own network with `ip` (iproute2), so it needs root: a bridge in the
//! root namespace holding `10.77.<n>.254/24`, and three namespaces `kvs-<tag>-a/b/c`, each
//! joined to the bridge by a veth and addressed `10.77.<n>.1`, `.2`, `.3` (tag and subnet
//! random per run). Each namespace runs `kvs run` bound to its own address on the default
//! ports; the test process talks to every node over the bridge. It checks that the
//! cluster forms, that a write on one host reaches the others, and that after host c is
//! cut off (its bridge-side veth down) and both sides take writes, a conflicting write and
//! a delete, healing the link brings every host to the same keys, the same winner, no
//! deleted key and the same merkle root. Everything it creates goes away on drop, panic
//! or not. Without root or `ip netns` it prints a skip line, or fails when `CI` is set.

mod common;

use std::fs::File;
use std::fs::Permissions;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Answer, kvs_bin, request};
use serde_json::Value;

const HOSTS: [char; 3] = ['a', 'b', 'c'];
const HTTP_PORT: u16 = 8080;
const GOSSIP_PORT: u16 = 7946;
const POLL: Duration = Duration::from_millis(100);

/// Runs `ip args`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let output = run_ip(args);
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip")
}

/// Root (the owner of `/proc/self` is the effective uid) with a working `ip netns`.
fn netns_available() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Polls `check` every 100 ms for at most `limit`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if check() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

/// A third octet for `10.77.<n>.0/24` that no route or address of the root namespace
/// mentions yet (another run's bridge, or a network of the machine).
fn free_subnet() -> u8 {
    let used = run_ip(&["-4", "route", "show", "table", "all"]).stdout;
    let used = String::from_utf8_lossy(&used);
    loop {
        let n = rand::random::<u8>() % 254;
        if !used.contains(&format!("10.77.{n}.")) {
            return n;
        }
    }
}

/// The bridge, namespaces and veths of one run; removed on drop.
struct Network {
    tag: String,
    subnet: u8,
}

impl Network {
    fn create() -> Network {
        let network = Network {
            tag: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            subnet: free_subnet(),
        };
        let bridge = network.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let address = format!("{}/24", network.addr(254));
        ip(&["addr", "add", &address, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for host in HOSTS {
            network.add_host(host);
        }
        network
    }

    fn add_host(&self, host: char) {
        let (ns, veth) = (self.namespace(host), self.veth(host));
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge(), "up"]);
        let address = format!("{}/24", self.host_addr(host));
        ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    fn bridge(&self) -> String {
        format!("kvsbr{}", self.tag)
    }

    fn namespace(&self, host: char) -> String {
        format!("kvs-{}-{host}", self.tag)
    }

    /// The bridge-side end of `host`'s veth.
    fn veth(&self, host: char) -> String {
        format!("kvs{}{host}", self.tag)
    }

    fn addr(&self, last: u8) -> String {
        format!("10.77.{}.{last}", self.subnet)
    }

    fn host_addr(&self, host: char) -> String {
        self.addr(host as u8 - b'a' + 1)
    }

    fn set_link(&self, host: char, state: &str) {
        ip(&["link", "set", &self.veth(host), state]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in HOSTS {
            let _ = run_ip(&["netns", "del", &self.namespace(host)]);
            let _ = run_ip(&["link", "del", &self.veth(host)]);
        }
        let _ = run_ip(&["link", "del", &self.bridge()]);
    }
}

/// A `kvs run` process inside a namespace, with its data dir and log; killed on drop.
struct NsNode {
    host: char,
    namespace: String,
    base: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl NsNode {
    fn start(network: &Network, host: char) -> NsNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.yaml");
        std::fs::write(&config, node_config(network, host, dir.path())).expect("config");
        std::fs::set_permissions(&config, Permissions::from_mode(0o600)).expect("chmod");
        let log = File::create(dir.path().join("node.log")).expect("log file");
        let namespace = network.namespace(host);
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace, kvs_bin(), "run"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvs in its namespace");
        let addr = network.host_addr(host);
        let node = NsNode {
            host,
            namespace,
            base: format!("http://{addr}:{HTTP_PORT}"),
            dir,
            child,
        };
        node.wait_until_listening(&addr);
        node
    }

    fn wait_until_listening(&self, addr: &str) {
        let socket: SocketAddr = format!("{addr}:{HTTP_PORT}").parse().unwrap();
        let up = within(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&socket, POLL).is_ok()
        });
        assert!(
            up,
            "host {} did not listen:\n{}",
            self.host,
            self.log_tail()
        );
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let headers = [("content-type", "application/json")];
        request(&format!("{}{path}", self.base), method, body, &headers)
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    fn put(&self, key: &str, value: &str) -> Answer {
        self.call("PUT", &format!("/kv/{key}"), Some(value))
    }

    /// Runs the `kvs` client inside this node's namespace (the way to reach a cut-off
    /// host); returns its stdout when it succeeds.
    fn client(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.namespace, kvs_bin()])
            .args(args)
            .args(["--addr", &self.base])
            .stdin(Stdio::null())
            .output()
            .expect("run the kvs client");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn members(&self) -> Value {
        self.get("/health").json()["members"].clone()
    }

    fn uuid_of(&self, key: &str) -> Option<Value> {
        let answer = self.get(&format!("/kv/{key}"));
        (answer.status == 200).then(|| answer.json()["uuid"].clone())
    }

    fn merkle_root(&self) -> Value {
        self.get("/sync").json()["merkle_root"].clone()
    }

    /// The last 40 lines of the node's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_config(network: &Network, host: char, dir: &std::path::Path) -> String {
    let seeds = if host == 'a' {
        "[]".to_owned()
    } else {
        format!("[\"{}:{GOSSIP_PORT}\"]", network.host_addr('a'))
    };
    format!(
        "node_id: host-{host}\nbind_address: {}\nhttp_port: {HTTP_PORT}\n\
         gossip_port: {GOSSIP_PORT}\nsync_port: 7947\nauth_enabled: false\n\
         cluster_secret: netns-test-{}\nsync_interval: 500ms\nseed_nodes: {seeds}\n\
         data_dir: {}\n",
        network.host_addr(host),
        network.tag,
        dir.join("data").display()
    )
}

/// Three nodes on their own network. Fields drop in order: nodes first, then the network.
struct Lab {
    nodes: Vec<NsNode>,
    network: Network,
}

impl Lab {
    fn start() -> Lab {
        let network = Network::create();
        let nodes = HOSTS.map(|host| NsNode::start(&network, host)).into();
        Lab { nodes, network }
    }

    fn host(&self, host: char) -> &NsNode {
        &self.nodes[(host as u8 - b'a') as usize]
    }

    /// Every node's health, sync status, view of `keys` and log tail, for a failure
    /// message (a host out of reach shows the error instead).
    fn report(&self, keys: &[&str]) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out += &format!("--- host {}\n", node.host);
            let paths = ["/health".to_owned(), "/sync".to_owned()];
            for path in paths
                .into_iter()
                .chain(keys.iter().map(|k| format!("/kv/{k}")))
            {
                out += &format!("  {path}: {}\n", fetch_for_report(&node.base, &path));
            }
            out += &format!("  log:\n{}\n", node.log_tail());
        }
        out
    }
}

/// `GET base/path` as "status body", or the error; never panics.
fn fetch_for_report(base: &str, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    match agent.get(&format!("{base}{path}")).call() {
        Ok(mut answer) => {
            let body = answer.body_mut().read_to_string().unwrap_or_default();
            format!("{} {body}", answer.status().as_u16())
        }
        Err(e) => format!("unreachable: {e}"),
    }
}

fn all_members_count(lab: &Lab, hosts: &[char], count: usize) -> bool {
    hosts.iter().all(|&h| lab.host(h).members() == count)
}

/// Writes during the cut: distinct keys on each side, `both` on a then on c, and a
/// delete of `doomed` on a. Returns the uuid of c's `both`, the later (winning) write.
fn write_on_both_sides(lab: &Lab) -> Value {
    let (a, c) = (lab.host('a'), lab.host('c'));
    assert_eq!(a.put("from-a", "\"a\"").status, 201);
    assert!(c.client(&["put", "from-c", "\"c\""]).is_some(), "put on c");
    assert_eq!(a.put("both", "\"written on a\"").status, 201);
    std::thread::sleep(Duration::from_millis(20));
    let put = c
        .client(&["put", "both", "\"written on c\""])
        .expect("put on c");
    assert_eq!(a.call("DELETE", "/kv/doomed", None).status, 204);
    assert!(
        c.client(&["get", "from-a"]).is_none(),
        "c got a write while cut off"
    );
    serde_json::from_str::<Value>(&put).expect("put answer")["uuid"].clone()
}

fn converged(lab: &Lab, winner: &Value) -> bool {
    let root = lab.nodes[0].merkle_root();
    lab.nodes.iter().all(|node| {
        node.members() == 3
            && ["across", "from-a", "from-c"]
                .iter()
                .all(|key| node.get(&format!("/kv/{key}")).status == 200)
            && node.uuid_of("both").as_ref() == Some(winner)
            && node.get("/kv/doomed").status == 404
            && node.merkle_root() == root
    })
}

/// The keys the test writes, shown for every host in a failure message.
const KEYS: [&str; 5] = ["across", "doomed", "from-a", "from-c", "both"];

/// The cluster forms, and a's writes reach b and c.
fn check_formed_and_replicating(lab: &Lab) {
    let formed = within(Duration::from_secs(30), || {
        all_members_count(lab, &HOSTS, 3)
    });
    assert!(formed, "the cluster did not form:\n{}", lab.report(&KEYS));
    assert_eq!(lab.host('a').put("across", "\"hosts\"").status, 201);
    assert_eq!(lab.host('a').put("doomed", "1").status, 201);
    let replicated = within(Duration::from_secs(15), || {
        lab.nodes
            .iter()
            .all(|n| n.get("/kv/across").status == 200 && n.get("/kv/doomed").status == 200)
    });
    let report = || lab.report(&KEYS);
    assert!(
        replicated,
        "a's writes did not reach b and c:\n{}",
        report()
    );
}

/// Sets c's link down and waits until a and b have dropped it.
fn cut_off_c(lab: &Lab) {
    lab.network.set_link('c', "down");
    let cut = within(Duration::from_secs(15), || {
        all_members_count(lab, &['a', 'b'], 2)
    });
    assert!(cut, "a and b still count c:\n{}", lab.report(&KEYS));
}

#[test]
fn hosts_replicate_and_heal_after_a_partition() {
    if !netns_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/netns.rs needs root and iproute2 (`ip netns`), and CI must not skip it"
        );
        println!("skipped: needs root and iproute2");
        return;
    }
    let started = Instant::now();
    let lab = Lab::start();
    check_formed_and_replicating(&lab);
    cut_off_c(&lab);
    let winner = write_on_both_sides(&lab);
    lab.network.set_link('c', "up");
    let healed = Instant::now();
    let ok = within(Duration::from_secs(30), || converged(&lab, &winner));
    let report = || lab.report(&KEYS);
    assert!(
        ok,
        "no convergence 30 s after healing (winner {winner}):\n{}",
        report()
    );
    println!(
        "converged {:.1} s after healing; test took {:.1} s",
        healed.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
