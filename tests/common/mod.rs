//! The black-box harness: real `kvs` processes on 127.0.0.1 with port 0, each in its own
//! temp dir, talked to over real HTTP. Processes are killed and dirs removed on drop.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod readme;
pub mod sse;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ureq::http::{Method, Request};

/// The `kvs` binary under test.
pub fn kvs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvs")
}

/// A node process with its own data dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub base: String,
    logs: Option<mpsc::Receiver<String>>,
    /// What the process printed until it served, for [`Node::drain_logs`].
    startup_logs: std::sync::Mutex<Vec<String>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }
}

/// The default test config: auth and clustering off, free port.
pub const PLAIN: &str = "auth_enabled: false\nclustering_enabled: false\n";

impl Node {
    /// Starts a node whose config is `node_id` plus `extra` YAML lines.
    pub fn start(extra: &str) -> Node {
        Node::start_named("test-node", extra)
    }

    /// Starts a node with id `node_id` whose config is `extra` YAML lines.
    pub fn start_named(node_id: &str, extra: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.yaml");
        std::fs::write(
            &config,
            format!("node_id: {node_id}\nhttp_port: 0\n{extra}"),
        )
        .expect("write config");
        let mut node = Node {
            dir,
            config,
            child: None,
            base: String::new(),
            logs: None,
            startup_logs: Default::default(),
        };
        node.launch();
        node
    }

    /// Starts the process on the existing config and waits until it serves.
    pub fn launch(&mut self) {
        let mut child = Command::new(kvs_bin())
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvs");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut printed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("http_addr="))
                    {
                        self.base = format!("http://{addr}");
                        printed.push(line);
                        break;
                    }
                    printed.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let exit = child.wait().map(|status| status.to_string());
                    panic!(
                        "the node did not start within 20 s ({exit:?}); it printed:\n{}",
                        printed.join("\n")
                    );
                }
            }
        }
        self.child = Some(child);
        self.logs = Some(rx);
        *self.startup_logs.lock().unwrap() = printed;
    }

    /// Log lines printed since the last call (the first call: since the process began).
    pub fn drain_logs(&self) -> Vec<String> {
        let mut lines = std::mem::take(&mut *self.startup_logs.lock().unwrap());
        if let Some(rx) = &self.logs {
            lines.extend(rx.try_iter());
        }
        lines
    }

    /// Writes the port the node serves on now into its config, so that a restart
    /// ([`Node::kill`] then [`Node::launch`]) serves on it again (clients keep it).
    pub fn keep_port(&self) {
        let port = self.base.rsplit(':').next().expect("a port");
        let config = std::fs::read_to_string(&self.config).expect("the config");
        let config = config.replace("http_port: 0", &format!("http_port: {port}"));
        std::fs::write(&self.config, config).expect("the config");
    }

    /// Sends SIGKILL and waits for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        request(&format!("{}{path}", self.base), method, body, headers)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[])
    }

    /// The value of the `/metrics` line that starts with `name ` (a whole name, labels
    /// included; no token: auth off).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.get("/metrics")
            .body
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn put(&self, path: &str, body: &str) -> Answer {
        self.request(
            "PUT",
            path,
            Some(body),
            &[("content-type", "application/json")],
        )
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None, &[])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP request with a client that reports every status as data.
pub fn request(url: &str, method: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(body) => agent.run(builder.body(body.to_owned()).expect("request")),
        None => agent.run(builder.body(()).expect("request")),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = if method == "HEAD" {
        String::new()
    } else {
        response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Runs `kvs` with `args` to completion.
pub fn run_kvs(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(kvs_bin());
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run kvs")
}

/// Runs `kvs` with `args` in `cwd` to completion, killed (and the test failed, with what
/// it printed) if it still runs after `limit`: a command that should end at once, or a
/// node that should have refused to start, would otherwise hang the test.
pub fn run_kvs_within(args: &[&str], cwd: &Path, limit: Duration) -> std::process::Output {
    let mut child = Command::new(kvs_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvs");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "kvs {args:?} still ran after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
