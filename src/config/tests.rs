//! Tests of the config: defaults, the template, and the checks that name a key.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn http_limits_default_and_are_checked() {
    let config = parse("node_id: a\n").unwrap();
    let limits = config.http_limits();
    assert_eq!(limits.header_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.max_connections, 10_000);
    let set = parse(
        "node_id: a\nhttp_header_timeout: 500ms\nhttp_idle_timeout: 2s\nmax_connections: 3\n",
    );
    let limits = set.unwrap().http_limits();
    assert_eq!(limits.header_timeout, Duration::from_millis(500));
    assert_eq!(limits.idle_timeout, Duration::from_secs(2));
    assert_eq!(limits.max_connections, 3);
    for (yaml, key) in [
        ("http_header_timeout: 0", "http_header_timeout"),
        ("http_idle_timeout: 0s", "http_idle_timeout"),
        ("max_connections: 0", "max_connections"),
    ] {
        let err = parse(&format!("node_id: a\n{yaml}\n")).unwrap_err();
        assert!(err.0.contains(key), "{err}");
    }
}

#[test]
fn a_generated_config_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let arg = dir.path().join("new/node1");
    let (path, config) = load_or_create(arg.to_str().unwrap()).unwrap();
    assert!(!config.jwt_secret.is_empty());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the config holds the secrets");
    assert_eq!(mode(&dir.path().join("new")), 0o700);
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.yaml"))
}

#[test]
fn template_parses_to_the_defaults() {
    let config = parse(&default_config_text()).unwrap();
    assert_eq!(config.http_port, 8080);
    assert_eq!(config.tombstone_ttl, duration("7d"));
    assert_eq!(config.sync_interval, duration("5s"));
    assert_eq!(config.max_clock_skew, duration("30s"));
    assert_eq!(config.http_limits(), Config::default().http_limits());
    assert_eq!(config.default_permissions(), Some(0xf31));
    assert_eq!(config.cluster_secret.len(), 64);
    assert!(config.auth_enabled);
}

#[test]
fn unknown_key_and_wrong_type_name_the_key() {
    let err = parse("node_id: a\nclustering_enabled: false\nauth_enabled: false\nbogus: 1\n")
        .unwrap_err();
    assert!(err.0.contains("bogus"), "{err}");
    let err = parse("node_id: a\nhttp_port: high\n").unwrap_err();
    assert!(err.0.contains("http_port"), "{err}");
    let err = parse(
        "node_id: a\nclustering_enabled: false\nauth_enabled: false\ndefault_permissions: fz1\n",
    )
    .unwrap_err();
    assert!(err.0.contains("default_permissions"), "{err}");
    let err = parse(
        "node_id: a\nclustering_enabled: false\nauth_enabled: false\ntombstone_ttl: 3 weeks\n",
    )
    .unwrap_err();
    assert!(err.0.contains("tombstone_ttl"), "{err}");
    assert!(!err.0.contains('\n'));
}

#[test]
fn values_must_fit_a_log_record() {
    let err = parse("node_id: a\nmax_value_bytes: 300000000\n").unwrap_err();
    assert!(err.0.contains("max_value_bytes"), "{err}");
    let err = parse("node_id: a\nmax_value_bytes: 16777216\n").unwrap_err();
    assert!(err.0.contains("max_value_bytes"), "{err}");
    assert!(parse("node_id: a\nmax_value_bytes: 16000000\n").is_ok());
}

#[test]
fn sync_keys_are_checked() {
    let base = "node_id: a\n";
    let err = parse(&format!("{base}sync_interval: 0s\n")).unwrap_err();
    assert!(err.0.contains("sync_interval"), "{err}");
    let err = parse(&format!("{base}max_clock_skew: 0s\n")).unwrap_err();
    assert!(err.0.contains("max_clock_skew"), "{err}");
    let err = parse(&format!("{base}tombstone_ttl: 10s\nmax_clock_skew: 1m\n")).unwrap_err();
    assert!(err.0.contains("tombstone_ttl"), "{err}");
    let config = parse(&format!("{base}sync_interval: 250ms\nmax_clock_skew: 5s\n")).unwrap();
    assert_eq!(config.sync_interval, duration("250ms"));
    assert_eq!(config.max_clock_skew, duration("5s"));
}

#[test]
fn probe_timing_overrides_derive_the_bounds() {
    let swim = |yaml: &str| parse(&format!("node_id: a\n{yaml}")).map(|c| c.swim_config());
    for yaml in [
        "probe_interval: 100ms\n",
        "probe_interval: 2s\nprobe_timeout: 1s\n",
        "membership_profile: wan\nprobe_interval: 1s\n",
        "probe_timeout: 150ms\n",
        "probe_interval: 1ms\n",
    ] {
        let config = swim(yaml).unwrap().unwrap();
        assert!(config.probe_timeout_max < config.probe_interval, "{yaml}");
        assert!(config.probe_timeout_min <= config.probe_timeout, "{yaml}");
    }
    let wan = swim("membership_profile: wan\nprobe_interval: 1s\n").unwrap();
    assert_eq!(wan.unwrap().probe_timeout, Duration::from_millis(500));
    for (yaml, key) in [
        (
            "probe_interval: 100ms\nprobe_timeout: 250ms\n",
            "probe_timeout",
        ),
        ("probe_timeout: 200ms\n", "probe_interval"),
        ("probe_interval: 0s\n", "probe_interval"),
        ("gossip_interval: 0s\n", "gossip_interval"),
        ("membership_profile: moon\n", "membership_profile"),
    ] {
        let err = parse(&format!("node_id: a\n{yaml}")).unwrap_err();
        assert!(err.0.contains(key), "{yaml}: {err}");
    }
}

#[test]
fn durations_accept_numbers_and_units() {
    let config = parse("node_id: a\nclustering_enabled: false\nauth_enabled: false\nrate_limit_window: 90\nbackup_interval: 12h\n").unwrap();
    assert_eq!(config.rate_limit_window.0, Duration::from_secs(90));
    assert_eq!(config.backup_interval.0, Duration::from_secs(43_200));
}

#[test]
fn config_paths() {
    assert_eq!(config_path("node1"), PathBuf::from("node1.yaml"));
    assert_eq!(config_path("a/node1.yaml"), PathBuf::from("a/node1.yaml"));
    assert_eq!(instance_name(Path::new("a/node1.yaml")), "node1");
    let config = parse("node_id: a\nclustering_enabled: false\nauth_enabled: false\n").unwrap();
    assert_eq!(
        config.data_dir(Path::new("/x/n.yaml")),
        PathBuf::from("/x/data")
    );
}
