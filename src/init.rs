//! `kvs init NAME --join CONFIG`: the config of another node of CONFIG's cluster (CONFIG's
//! text, so that the settings the cluster shares stay the same), written
//! next to NAME: the same secrets (from CONFIG, or from its node's data dir where the
//! node generated them), CONFIG's node as its seed, ports that are free (not
//! bound on this machine, and not named by another config in NAME's folder), and a data
//! dir of its own.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use crate::config::{Config, config_arg, config_path};
use crate::store::read_meta_texts;

/// The ports of a new node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    http: u16,
    gossip: u16,
    sync: u16,
}

/// Writes NAME's config; returns a line saying what it holds, or a one-line error.
pub fn write_joining(name: &str, join: &str) -> Result<String, String> {
    config_arg(name)?;
    let target = config_path(name);
    if target.exists() {
        return Err(format!("{}: exists already", target.display()));
    }
    let seed_path = config_path(join);
    // Read once: the config may be a pipe.
    let seed_text = Config::read_text(&seed_path).map_err(|e| e.to_string())?;
    let mut seed = Config::parse(&seed_text, &seed_path).map_err(|e| e.to_string())?;
    secrets_from_data_dir(&mut seed, &seed_path)?;
    let folder = target.parent().filter(|p| !p.as_os_str().is_empty());
    let taken = ports_of_configs(folder.unwrap_or(Path::new(".")));
    let ports = free_ports(seed.bind_address, &seed, &taken)
        .ok_or("no free ports found above the seed's ports")?;
    let advertise = seed.advertise_address.unwrap_or(seed.bind_address);
    let seed_addr = SocketAddr::new(advertise, seed.gossip_port);
    let stem = crate::config::instance_name(&target);
    let text = joining_text(&seed_text, &seed, ports, seed_addr, &stem);
    Config::parse(&text, &target)
        .map_err(|e| format!("the config for {stem} would not load: {e}"))?;
    if let Some(folder) = folder {
        crate::private_files::create_dir(folder)
            .map_err(|e| format!("{}: {e}", folder.display()))?;
    }
    crate::private_files::write_new(&target, text.as_bytes())
        .map_err(|e| format!("{}: cannot write: {e}", target.display()))?;
    // The new node clusters whatever the seed's config says; a seed that does not
    // takes no peers until it does.
    let unclustered_seed = match seed.clustering_enabled {
        true => String::new(),
        false => format!(
            "; but {} has clustering_enabled: false: set it to true and restart that node, \
             or no node joins through it",
            seed_path.display()
        ),
    };
    Ok(format!(
        "wrote {}: http {}:{}, gossip {}, sync {}, data_dir ./data-{stem}, joining through {seed_addr}{unclustered_seed}",
        target.display(),
        seed.bind_address,
        ports.http,
        ports.gossip,
        ports.sync
    ))
}

/// Fills in the secrets a config leaves out from its node's data dir, where the node
/// keeps those it generated at its first start (read alongside a running node).
fn secrets_from_data_dir(seed: &mut Config, seed_path: &Path) -> Result<(), String> {
    if !seed.cluster_secret.is_empty() && !seed.jwt_secret.is_empty() {
        return Ok(());
    }
    let data_dir = seed.data_dir(seed_path);
    let unknown = |why: String| {
        format!(
            "{}: it names no cluster_secret and jwt_secret, and its data dir does not hold them ({why}); start that node once, or write the secrets into the config",
            seed_path.display()
        )
    };
    let kept = read_meta_texts(&data_dir, &["cluster_secret", "jwt_secret"])
        .map_err(|e| unknown(e.to_string()))?;
    for (value, kept) in [&mut seed.cluster_secret, &mut seed.jwt_secret]
        .into_iter()
        .zip(kept)
    {
        if value.is_empty() {
            *value = kept.ok_or_else(|| unknown("not generated yet".to_owned()))?;
        }
    }
    Ok(())
}

/// The seed's config text (its comments and every cluster-wide setting: auth,
/// permissions, tombstone_ttl, max_clock_skew, sync_interval, membership timing, ...)
/// with what is the node's own replaced: a fresh node_id, `ports`, a data dir named after
/// the node, the seed as its only seed, and the secrets written out (the seed's config
/// may leave them to its data dir).
fn joining_text(
    seed_text: &str,
    seed: &Config,
    ports: Ports,
    seed_addr: SocketAddr,
    stem: &str,
) -> String {
    let own = [
        ("node_id", uuid::Uuid::new_v4().to_string()),
        ("http_port", ports.http.to_string()),
        ("gossip_port", ports.gossip.to_string()),
        ("sync_port", ports.sync.to_string()),
        ("data_dir", format!("./data-{stem}")),
        ("seed_nodes", format!("[\"{seed_addr}\"]")),
        ("clustering_enabled", "true".to_owned()),
        ("cluster_secret", format!("\"{}\"", seed.cluster_secret)),
        ("jwt_secret", format!("\"{}\"", seed.jwt_secret)),
    ];
    let mut lines = Vec::new();
    let mut written = HashSet::new();
    // While on the indented lines that continue a replaced key (a block list of seeds).
    let mut replaced_block = false;
    for line in seed_text.lines() {
        let continues = line.starts_with([' ', '\t', '-']) && !line.trim().is_empty();
        if replaced_block && continues {
            continue;
        }
        replaced_block = false;
        let key = line.split_once(':').map(|(key, _)| key);
        match own.iter().find(|(name, _)| Some(*name) == key) {
            Some((name, value)) => {
                lines.push(format!("{name}: {value}"));
                written.insert(*name);
                replaced_block = true;
            }
            None => lines.push(line.to_owned()),
        }
    }
    for (name, value) in &own {
        if !written.contains(name) {
            lines.push(format!("{name}: {value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// Ports named by the configs in `folder` (those that parse).
fn ports_of_configs(folder: &Path) -> HashSet<u16> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter_map(|path: PathBuf| Config::load(&path).ok())
        .flat_map(|c| [c.http_port, c.gossip_port, c.sync_port])
        .collect()
}

/// The first ports above the seed's that no config in the folder names and that can be
/// bound now: TCP for HTTP, UDP for gossip and sync.
fn free_ports(ip: IpAddr, seed: &Config, taken: &HashSet<u16>) -> Option<Ports> {
    let usable = |port: u16, used: &HashSet<u16>| {
        port != 0 && !taken.contains(&port) && !used.contains(&port)
    };
    // The seed's own ports are never handed out, wherever its config lives and whether or
    // not its node runs now.
    let mut used = HashSet::from([seed.http_port, seed.gossip_port, seed.sync_port]);
    let next = |from: u16, bindable: &dyn Fn(u16) -> bool, used: &mut HashSet<u16>| {
        let port = (from.checked_add(1)?..=u16::MAX).find(|&p| usable(p, used) && bindable(p))?;
        used.insert(port);
        Some(port)
    };
    let tcp = |port: u16| TcpListener::bind((ip, port)).is_ok();
    let udp = |port: u16| UdpSocket::bind((ip, port)).is_ok();
    let http = next(seed.http_port, &tcp, &mut used)?;
    let gossip = next(seed.gossip_port, &udp, &mut used)?;
    let sync = next(gossip, &udp, &mut used)?;
    Some(Ports { http, gossip, sync })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_config_text;

    #[test]
    fn the_new_config_joins_with_the_same_secrets_on_other_ports() {
        let dir = tempfile::tempdir().unwrap();
        let node1 = dir.path().join("node1.yaml");
        std::fs::write(&node1, default_config_text()).unwrap();
        let node2 = dir.path().join("node2");
        let said = write_joining(node2.to_str().unwrap(), node1.to_str().unwrap()).unwrap();
        assert!(said.contains("joining through 127.0.0.1:7946"), "{said}");
        let (one, two) = (
            Config::load(&node1).unwrap(),
            Config::load(&dir.path().join("node2.yaml")).unwrap(),
        );
        assert_eq!(two.cluster_secret, one.cluster_secret);
        assert_eq!(two.jwt_secret, one.jwt_secret);
        assert_eq!(two.seed_nodes, vec!["127.0.0.1:7946".to_owned()]);
        assert_ne!(two.node_id, one.node_id);
        let ports = [two.http_port, two.gossip_port, two.sync_port];
        assert!(
            ports.iter().all(|p| ![8080, 7946, 7947].contains(p)),
            "{ports:?}"
        );
        assert_ne!(two.gossip_port, two.sync_port);
        assert_ne!(
            two.data_dir(&dir.path().join("node2.yaml")),
            one.data_dir(&node1)
        );
        let node3 = dir.path().join("node3");
        write_joining(node3.to_str().unwrap(), node1.to_str().unwrap()).unwrap();
        let three = Config::load(&dir.path().join("node3.yaml")).unwrap();
        let theirs = [three.http_port, three.gossip_port, three.sync_port];
        assert!(
            theirs.iter().all(|p| !ports.contains(p)),
            "node3 takes node2's ports"
        );
        let again = write_joining(node2.to_str().unwrap(), node1.to_str().unwrap());
        assert!(again.unwrap_err().contains("exists"));
    }

    /// Found by a README audit: `clustering_enabled: false` was copied into a config
    /// whose seed would never answer, without a word.
    #[test]
    fn a_node_joining_through_one_without_clustering_clusters_and_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let alone = dir.path().join("alone.yaml");
        let text =
            default_config_text().replace("clustering_enabled: true", "clustering_enabled: false");
        assert!(text.contains("clustering_enabled: false"));
        std::fs::write(&alone, text).unwrap();
        let joiner = dir.path().join("joiner");
        let said = write_joining(joiner.to_str().unwrap(), alone.to_str().unwrap()).unwrap();
        assert!(said.contains("has clustering_enabled: false"), "{said}");
        let written = Config::load(&dir.path().join("joiner.yaml")).unwrap();
        assert!(written.clustering_enabled);
    }

    #[test]
    fn the_new_config_keeps_the_clusters_settings() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("first.yaml");
        std::fs::write(
            &seed,
            "# a hand-written first node\nnode_id: first\nhttp_port: 41000\ngossip_port: 41001\n\
             sync_port: 41002\nauth_enabled: false\ntombstone_ttl: 20s\nmax_clock_skew: 5s\n\
             sync_interval: 1s\nprobe_interval: 300ms\nseed_nodes:\n  - \"127.0.0.1:1\"\n  - \"127.0.0.1:2\"\n\
             cluster_secret: \"shared-secret-0123456789abcdef\"\njwt_secret: \"jwt-secret-0123456789abcdef01\"\n",
        )
        .unwrap();
        let joiner = dir.path().join("second");
        write_joining(joiner.to_str().unwrap(), seed.to_str().unwrap()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("second.yaml")).unwrap();
        let (one, two) = (
            Config::load(&seed).unwrap(),
            Config::load(&dir.path().join("second.yaml")).unwrap(),
        );
        assert!(!two.auth_enabled, "{text}");
        assert_eq!(two.tombstone_ttl, one.tombstone_ttl);
        assert_eq!(two.max_clock_skew, one.max_clock_skew);
        assert_eq!(two.sync_interval, one.sync_interval);
        assert_eq!(two.probe_interval, one.probe_interval);
        assert!(text.starts_with("# a hand-written first node"), "{text}");
        assert_eq!(two.seed_nodes, ["127.0.0.1:41001"]);
        assert_ne!(two.node_id, "first");
        assert_eq!(two.cluster_secret, one.cluster_secret);
    }

    #[test]
    fn the_seeds_ports_are_never_handed_out_from_another_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        let seed = dir.path().join("a/seed.yaml");
        // Contiguous ports, the seed not running: the port above its gossip port is its
        // sync port.
        let text = default_config_text()
            .replace("http_port: 8080", "http_port: 40003")
            .replace("gossip_port: 7946", "gossip_port: 40000")
            .replace("sync_port: 7947", "sync_port: 40001");
        std::fs::write(&seed, text).unwrap();
        let joiner = dir.path().join("b/joiner");
        write_joining(joiner.to_str().unwrap(), seed.to_str().unwrap()).unwrap();
        let joiner = Config::load(&dir.path().join("b/joiner.yaml")).unwrap();
        let theirs = [joiner.http_port, joiner.gossip_port, joiner.sync_port];
        assert!(
            theirs.iter().all(|p| ![40000, 40001, 40003].contains(p)),
            "{theirs:?}"
        );
    }
}
