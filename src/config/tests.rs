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
        (
            "http_idle_timeout: 18446744073709551615",
            "http_idle_timeout",
        ),
        ("http_header_timeout: 25h", "http_header_timeout"),
        ("max_connections: 0", "max_connections"),
    ] {
        assert_refused_naming(yaml, key);
    }
}

#[test]
fn the_help_names_every_key_of_the_default_config() {
    for line in include_str!("../config_template.yaml").lines() {
        let line = line.trim_start_matches("# ");
        let Some((key, _)) = line.split_once(':') else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            assert!(HELP.contains(key), "kvs --help does not name {key}");
        }
    }
}

#[test]
fn a_generated_config_sets_every_key_of_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let arg = dir.path().join("node1");
    let (path, _) = load_or_create(arg.to_str().unwrap()).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let written: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    // The table of shared/spec/cli-and-config.md.
    for key in [
        "node_id",
        "bind_address",
        "advertise_address",
        "http_port",
        "gossip_port",
        "sync_port",
        "data_dir",
        "seed_nodes",
        "clustering_enabled",
        "cluster_secret",
        "jwt_secret",
        "auth_enabled",
        "allow_anonymous_read",
        "allow_anonymous_write",
        "default_permissions",
        "rate_limiting_enabled",
        "rate_limit_requests",
        "rate_limit_window",
        "revision_history_enabled",
        "max_revisions",
        "compression_enabled",
        "compression_min_bytes",
        "tamper_logging_enabled",
        "backup_enabled",
        "backup_interval",
        "backup_retention",
        "tombstone_ttl",
        "max_value_bytes",
        "log_level",
        "sync_interval",
        "max_clock_skew",
        "http_header_timeout",
        "http_idle_timeout",
        "max_connections",
    ] {
        assert!(written.contains_key(key), "the written config has no {key}");
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

/// Asserts that `yaml` (after a `node_id`) is refused with one line naming exactly `key`,
/// as a field too unless the YAML parser refused it.
#[track_caller]
fn assert_refused_naming(yaml: &str, key: &str) {
    let err = parse(&format!("node_id: a\n{yaml}\n")).unwrap_err();
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("t.yaml: {key}: ")),
        "{yaml:?} should name {key}: {err}"
    );
    assert!(!line.contains('\n'), "{err}");
    match err {
        ConfigError::Parse { path, .. } => assert_eq!(path, Path::new("t.yaml")),
        ConfigError::Invalid {
            path, key: named, ..
        } => {
            assert_eq!((path.as_path(), named), (Path::new("t.yaml"), key));
        }
        other => panic!("{yaml:?}: {other:?}"),
    }
}

#[test]
fn zero_settings_name_their_key() {
    for (yaml, key) in [
        ("max_value_bytes: 0", "max_value_bytes"),
        ("max_revisions: 0", "max_revisions"),
        (
            "rate_limiting_enabled: true\nrate_limit_requests: 0",
            "rate_limit_requests",
        ),
        (
            "rate_limiting_enabled: true\nrate_limit_window: 0s",
            "rate_limit_window",
        ),
        (
            "backup_enabled: true\nbackup_interval: 0s",
            "backup_interval",
        ),
        (
            "backup_enabled: true\nbackup_retention: 0",
            "backup_retention",
        ),
    ] {
        assert_refused_naming(yaml, key);
    }
}

#[test]
fn settings_of_features_that_are_off_may_be_zero() {
    let config = parse(
        "node_id: a\nrevision_history_enabled: false\nmax_revisions: 0\n\
         rate_limit_requests: 0\nrate_limit_window: 0s\nbackup_interval: 0s\nbackup_retention: 0\n",
    )
    .unwrap();
    assert_eq!(config.store_options().max_revisions, 0);
    assert!(!config.rate_limiting_enabled && !config.backup_enabled);
}

#[test]
fn other_bad_values_name_their_key() {
    for (yaml, key) in [
        ("log_level: loud", "log_level"),
        ("default_permissions: fz1", "default_permissions"),
        ("default_permissions: f311", "default_permissions"),
        ("seed_nodes: [\"no-port\"]", "seed_nodes"),
        ("seed_nodes: [\":7946\"]", "seed_nodes"),
        ("seed_nodes: [\"127.0.0.1:0\"]", "seed_nodes"),
        ("cluster_secret: \"\"", "cluster_secret"),
        ("jwt_secret: ''", "jwt_secret"),
        ("gossip_port: 7000\nsync_port: 7000", "sync_port"),
        ("advertise_address: 0.0.0.0", "advertise_address"),
        ("advertise_address: \"::\"", "advertise_address"),
    ] {
        assert_refused_naming(yaml, key);
    }
    // The same port for both is fine where clustering is off (neither is bound), and
    // port 0 picks two different ones.
    parse("clustering_enabled: false\ngossip_port: 7000\nsync_port: 7000\n").unwrap();
    parse("gossip_port: 0\nsync_port: 0\n").unwrap();
    // A YAML null is the key left out: generated, not the name "null".
    for null in ["node_id:", "node_id: ~", "node_id: null"] {
        assert_eq!(parse(&format!("{null}\n")).unwrap().node_id, "", "{null}");
    }
    let secrets = parse("cluster_secret:\njwt_secret: ~\n").unwrap();
    assert_eq!(
        (secrets.cluster_secret.as_str(), secrets.jwt_secret.as_str()),
        ("", "")
    );
    assert_eq!(parse("node_id: \"null\"\n").unwrap().node_id, "null");
    let err = parse("node_id: \"\"\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("t.yaml: node_id: must not be empty"),
        "{err}"
    );
    for id in ["a\\0b", "tab\\there"] {
        let err = parse(&format!("node_id: \"{id}\"\n")).unwrap_err();
        assert_eq!(err.key(), Some("node_id"), "{err}");
        assert!(err.to_string().contains("control character"), "{err}");
    }
    // Levels in any case, as Consul takes them.
    assert_eq!(parse("log_level: DEBUG\n").unwrap().log_level, "debug");
    let err = parse("node_id: \"  \"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yaml: node_id: must not be blank (leave it out to generate one)"
    );
    assert_eq!(err.key(), Some("node_id"));
    // The longest id gossip carries is accepted; one byte more is a config error.
    let longest = "é".repeat(64);
    assert_eq!(
        parse(&format!("node_id: {longest}\n")).unwrap().node_id,
        longest
    );
    let err = parse(&format!("node_id: {longest}x\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yaml: node_id: is 129 bytes; at most 128 (it travels in every gossip datagram)"
    );
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
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let line = err.to_string();
    assert!(line.starts_with("t.yaml: unknown key `bogus`"), "{err}");
    assert!(!line.contains('\n'), "{err}");
    for (yaml, key) in [
        ("http_port: high", "http_port"),
        ("bind_address: nowhere", "bind_address"),
        ("tombstone_ttl: 3 weeks", "tombstone_ttl"),
        ("rate_limit_window: soon", "rate_limit_window"),
    ] {
        assert_refused_naming(yaml, key);
    }
}

#[test]
fn values_must_fit_a_log_record() {
    assert_refused_naming("max_value_bytes: 300000000", "max_value_bytes");
    assert_refused_naming("max_value_bytes: 16777216", "max_value_bytes");
    assert!(parse("node_id: a\nmax_value_bytes: 16000000\n").is_ok());
}

#[test]
fn sync_keys_are_checked() {
    let base = "node_id: a\n";
    assert_refused_naming("sync_interval: 0s", "sync_interval");
    assert_refused_naming("sync_interval: 9ms", "sync_interval");
    assert_refused_naming(
        "backup_enabled: true\nbackup_interval: 1ms",
        "backup_interval",
    );
    assert_refused_naming(
        "backup_enabled: true\nbackup_interval: 999ms",
        "backup_interval",
    );
    assert_refused_naming("max_clock_skew: 0s", "max_clock_skew");
    assert_refused_naming("tombstone_ttl: 10s\nmax_clock_skew: 1m", "tombstone_ttl");
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
        ("probe_timeout: 200ms\n", "probe_timeout"),
        ("probe_interval: 0s\n", "probe_interval"),
        ("probe_timeout: 0s\n", "probe_timeout"),
        ("gossip_interval: 0s\n", "gossip_interval"),
        ("push_pull_interval: 0s\n", "push_pull_interval"),
        ("suspicion_multiplier: 0\n", "suspicion_multiplier"),
        ("membership_profile: moon\n", "membership_profile"),
    ] {
        assert_refused_naming(yaml.trim_end(), key);
    }
}

/// Without a ping-req relay SWIM cannot tell a lost ack from a dead member, and a gossip
/// round with nobody to send to drops the pending updates: both must be at least 1.
#[test]
fn indirect_probes_and_gossip_fanout_must_be_above_zero() {
    assert_refused_naming("indirect_probes: 0", "indirect_probes");
    assert_refused_naming("gossip_fanout: 0", "gossip_fanout");
    let swim = parse("node_id: a\nindirect_probes: 1\ngossip_fanout: 1\n")
        .unwrap()
        .swim_config()
        .unwrap();
    assert_eq!((swim.indirect_checks, swim.gossip_fanout), (1, 1));
}

/// A huge period or multiplier made the suspicion timeout overflow `Duration` (a panic in
/// the running node); refused at load, naming the key, and the bounds themselves pass.
#[test]
fn membership_timing_is_bounded() {
    for (yaml, key) in [
        ("suspicion_multiplier: 4294967295", "suspicion_multiplier"),
        ("suspicion_multiplier: 1001", "suspicion_multiplier"),
        ("probe_interval: 18446744073709551615", "probe_interval"),
        ("probe_interval: 3601", "probe_interval"),
        ("gossip_interval: 3601", "gossip_interval"),
        ("push_pull_interval: 3601", "push_pull_interval"),
        ("member_reap_after: 0s", "member_reap_after"),
        ("member_reap_after: 59s", "member_reap_after"),
        (
            "membership_profile: wan\nmember_reap_after: 119s",
            "member_reap_after",
        ),
        (
            "push_pull_interval: 1s\nmember_reap_after: 1999ms",
            "member_reap_after",
        ),
        ("member_reap_after: 366d", "member_reap_after"),
    ] {
        assert_refused_naming(yaml, key);
    }
    for (yaml, reap_after) in [
        ("node_id: a\n", Duration::from_secs(3600)),
        (
            "node_id: a\nmember_reap_after: 60s\n",
            Duration::from_secs(60),
        ),
        (
            "node_id: a\npush_pull_interval: 1s\nmember_reap_after: 2s\n",
            Duration::from_secs(2),
        ),
        (
            "node_id: a\nmember_reap_after: 72h\n",
            Duration::from_secs(72 * 3600),
        ),
        (
            "node_id: a\nmember_reap_after: 365d\n",
            Duration::from_secs(365 * 86_400),
        ),
    ] {
        let swim = parse(yaml).unwrap().swim_config().unwrap();
        assert_eq!(swim.reap_after, reap_after, "{yaml}");
    }
    let at_the_bounds = "node_id: a\nsuspicion_multiplier: 1000\nprobe_interval: 1h\n\
                         gossip_interval: 1h\npush_pull_interval: 1h\n";
    let swim = parse(at_the_bounds).unwrap().swim_config().unwrap();
    assert_eq!(swim.suspicion_mult, 1000);
    assert_eq!(
        swim.reap_after,
        Duration::from_secs(7200),
        "twice push_pull_interval"
    );
    assert_eq!(swim.probe_interval, Duration::from_secs(3600));
    // The longest deadline the protocol derives from them (Lifeguard's initial suspicion
    // timeout in a cluster of usize::MAX members) stays representable.
    let longest = swim
        .probe_interval
        .checked_mul(swim.suspicion_mult * swim.suspicion_max_mult)
        .and_then(|d| d.checked_mul(20));
    assert!(longest.is_some_and(|d| d < Duration::from_secs(1 << 40)));
}

#[test]
fn durations_accept_numbers_and_units() {
    let config = parse("node_id: a\nclustering_enabled: false\nauth_enabled: false\nrate_limit_window: 90\nbackup_interval: 12h\n").unwrap();
    assert_eq!(config.rate_limit_window.0, Duration::from_secs(90));
    assert_eq!(config.backup_interval.0, Duration::from_secs(43_200));
}

/// Found by a black-box audit: a one-character `cluster_secret` started without a word.
#[test]
fn short_secrets_are_named_for_a_warning() {
    let config = parse("node_id: a\ncluster_secret: a\njwt_secret: 0123456789abcdef\n").unwrap();
    assert_eq!(super::file::weak_secrets(&config), ["cluster_secret"]);
    let generated = format!(
        "node_id: a\ncluster_secret: {}\njwt_secret: {}\n",
        secret(),
        secret()
    );
    assert!(super::file::weak_secrets(&parse(&generated).unwrap()).is_empty());
}

/// Found by a black-box audit: `kvs run node.conf` (or a file `plainname`) wrote and
/// ran a fresh default config `node.conf.yaml` beside the user's file.
#[test]
fn a_config_file_without_yaml_is_used_as_named() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(at("node.conf"), "node_id: a\n").unwrap();
    assert_eq!(
        config_path(&at("node.conf")),
        PathBuf::from(at("node.conf"))
    );
    std::fs::write(at("both"), "").unwrap();
    std::fs::write(at("both.yaml"), "").unwrap();
    assert_eq!(config_path(&at("both")), PathBuf::from(at("both.yaml")));
    std::fs::create_dir(at("node1")).unwrap();
    assert_eq!(config_path(&at("node1")), PathBuf::from(at("node1.yaml")));
    assert_eq!(instance_name(Path::new(&at("node.conf"))), "node");
}

/// Found by an audit: `kvs run /dev/zero` wrote `/dev/zero.yaml` (a file named but not a
/// regular one was taken for missing), and a config linked to `/dev/zero` was read
/// without bound before its size was checked.
#[test]
fn a_config_that_is_no_regular_file_is_read_as_named_and_no_further_than_a_config_goes() {
    assert_eq!(config_path("/dev/zero"), PathBuf::from("/dev/zero"));
    assert_eq!(config_path("/dev/null"), PathBuf::from("/dev/null"));
    let started = std::time::Instant::now();
    let endless = Config::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(endless.contains("more than 1048576 bytes"), "{endless}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, b"node_id: \xff\n").unwrap();
    let refused = Config::load(&binary).unwrap_err().to_string();
    assert!(
        refused.contains("cannot read") && refused.contains("UTF-8"),
        "{refused}"
    );
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

/// The lines a user sees keep their wording: `<file>: <key>: <why>`, or `<file>: cannot
/// read: ...`; a value unusable at start names the key and leaves the file to the caller.
#[test]
fn errors_read_as_one_line_naming_file_and_key() {
    let missing = Config::load(Path::new("/nonexistent/n1.yaml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing:?}");
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/n1.yaml: cannot read: "),
        "{missing}"
    );
    assert_eq!(missing.key(), None);
    // Found by an audit: `WAN` was refused where `INFO` was taken, and a file an editor
    // began with a byte order mark was "more than one document".
    assert_eq!(
        parse("node_id: a\nmembership_profile: WAN\n")
            .unwrap()
            .membership_profile,
        "wan"
    );
    assert_eq!(
        parse("\u{feff}node_id: a\nhttp_port: 1234\n")
            .unwrap()
            .http_port,
        1234
    );
    let profile = parse("node_id: a\nmembership_profile: moon\n").unwrap_err();
    assert_eq!(
        profile.to_string(),
        "t.yaml: membership_profile: \"moon\" is not lan or wan"
    );
    let taken = ConfigError::unusable("http_port", "cannot listen on 127.0.0.1:1: in use");
    assert_eq!(
        taken.to_string(),
        "http_port: cannot listen on 127.0.0.1:1: in use"
    );
    assert_eq!(taken.key(), Some("http_port"));
}

/// Found by a README audit: serde's message listed every key and was cut before the
/// one meant (`probe_interval` never showed for `probe_intervall`), and before its line.
#[test]
fn an_unknown_key_is_named_with_its_line_and_the_key_it_is_closest_to() {
    let typo = parse("node_id: a\nprobe_intervall: 1s\n").unwrap_err();
    assert_eq!(
        typo.to_string(),
        "t.yaml: unknown key `probe_intervall` at line 2 column 1 (did you mean `probe_interval`?)"
    );
    let other = parse("node_id: a\nmembership: lan\n")
        .unwrap_err()
        .to_string();
    assert!(
        other.contains("(did you mean `membership_profile`?)"),
        "{other}"
    );
    // A key of a whole file's length is cut as any message is.
    let long = format!("node_id: a\n? {}\n: 1\n", "k".repeat(100_000));
    let said = parse(&long).unwrap_err().to_string();
    assert!(said.len() < 500 && said.contains("more bytes"), "{said}");
    let far = parse("node_id: a\nzzzzzz: 1\n").unwrap_err().to_string();
    assert_eq!(
        far,
        "t.yaml: unknown key `zzzzzz` at line 2 column 1 (README, \"Configuration\", lists every key)"
    );
}

#[test]
fn files_no_config_is_like_are_refused_before_parsing_and_messages_stay_short() {
    let refused = |text: &str| parse(text).expect_err("refused").to_string();
    let huge = format!("node_id: {}\n", "x".repeat(2 << 20));
    assert!(refused(&huge).contains("more than 1048576 bytes"));
    // Nesting the parser would take minutes over (quadratic): refused at once.
    let deep = format!("node_id: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    assert!(refused(&deep).contains("nested deeper than 32"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // Brackets in quotes and comments do not count; a list of seeds is one level.
    let fine = format!(
        "node_id: \"{}\"\n# {}\nseed_nodes: [\"127.0.0.1:7946\", \"127.0.0.1:7947\"]\n",
        "[".repeat(40),
        "{".repeat(40)
    );
    assert_eq!(parse(&fine).unwrap().seed_nodes.len(), 2);
    // The parser quotes the offending value: cut, so that a line stays a line.
    let long = "x".repeat(100_000);
    let said = refused(&long);
    assert!(said.len() < 500 && said.contains("more bytes"), "{said}");
}

#[test]
fn a_config_that_is_a_link_to_nothing_is_refused_and_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("node.yaml");
    std::os::unix::fs::symlink(dir.path().join("missing.yaml"), &link).unwrap();
    let error = load_or_create(link.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(error.contains("symbolic link to a missing file"), "{error}");
    assert!(!dir.path().join("missing.yaml").exists());
}
