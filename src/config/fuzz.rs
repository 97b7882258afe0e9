//! Fuzz loops (proptest) of the config loader: arbitrary text, YAML maps of the real keys
//! with values of any type, and mutations of the template all give a config that passes
//! its own checks or one clear error line naming the file, never a panic; valid settings
//! round-trip. Run long with `PROPTEST_CASES` (see docs/fuzzing.md).

use proptest::prelude::*;

use super::*;

const ORIGIN: &str = "fuzz.yaml";

/// Every key of the config file.
const KEYS: &[&str] = &[
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
    "membership_profile",
    "probe_interval",
    "probe_timeout",
    "indirect_probes",
    "suspicion_multiplier",
    "gossip_interval",
    "gossip_fanout",
    "push_pull_interval",
    "member_reap_after",
    "sync_interval",
    "max_clock_skew",
    "http_header_timeout",
    "http_idle_timeout",
    "max_connections",
];

/// What any outcome must be: a config that passes its checks (and yields its derived
/// settings), or one line that starts with the file's name.
fn check_outcome(result: Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    match result {
        Ok(config) => {
            prop_assert!(config.validate(Path::new(ORIGIN)).is_ok());
            prop_assert!(config.swim_config().is_ok());
            prop_assert!(config.default_permissions().is_some());
            let _ = (config.http_limits(), config.store_options());
        }
        Err(error) => {
            let line = error.to_string();
            prop_assert!(line.starts_with(ORIGIN), "{:?}", line);
            prop_assert!(!line.contains('\n'), "more than one line: {:?}", line);
            if let Some(key) = error.key() {
                prop_assert!(KEYS.contains(&key), "unknown key {:?}", key);
                prop_assert!(line.contains(key), "{:?} does not name {:?}", line, key);
            }
        }
    }
    Ok(())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// A YAML scalar or small collection, written as YAML text: numbers of every size and
/// sign, durations, booleans, addresses, strings (quoted or not), lists, maps, nulls.
fn yaml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (
            any::<u64>(),
            prop_oneof![
                Just("ms"),
                Just("s"),
                Just("m"),
                Just("h"),
                Just("d"),
                Just("x"),
                Just("")
            ]
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        (
            0u64..5000,
            prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h")]
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        prop_oneof![
            Just("true"),
            Just("false"),
            Just("null"),
            Just("~"),
            Just("yes")
        ]
        .prop_map(String::from),
        prop_oneof![
            Just("127.0.0.1"),
            Just("::1"),
            Just("0.0.0.0"),
            Just("lan"),
            Just("wan"),
            Just("info"),
            Just("debug"),
            Just("f31"),
            Just("fff"),
            Just("host:7946"),
            Just(":1"),
            Just("a:99999"),
        ]
        .prop_map(String::from),
        text(12).prop_map(|s| serde_json::to_string(&s).expect("a JSON string is YAML")),
        "[a-zA-Z0-9 _./:-]{0,16}",
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|pairs| {
                let pairs: Vec<String> = pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// A YAML map of real keys (now and then an unknown or repeated one) to any values.
fn yaml_config() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        20 => proptest::sample::select(KEYS),
        1 => Just("no_such_key"),
    ];
    proptest::collection::vec((key, yaml_value()), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    })
}

/// A duration of at most 24h, the bound of the HTTP timeouts.
fn http_timeout_text() -> impl Strategy<Value = (String, Duration)> {
    duration_text().prop_filter("at most 24h", |(_, d)| *d <= Duration::from_secs(86_400))
}

fn duration_text() -> impl Strategy<Value = (String, Duration)> {
    (1u64..1000, 0usize..4).prop_map(|(n, unit)| {
        let (suffix, ms) = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)][unit];
        (format!("{n}{suffix}"), Duration::from_millis(n * ms))
    })
}

proptest! {
    // proptest's default: 256 cases, or PROPTEST_CASES.

    #[test]
    fn fuzz_config_arbitrary_text_is_a_config_or_one_clear_line(text in prop_oneof![
        text(200),
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        "[a-z_:\\- \n\"'\\[\\]{}&*!|>%@`#0-9]{0,200}",
    ]) {
        check_outcome(Config::parse(&text, Path::new(ORIGIN)))?;
    }

    #[test]
    fn fuzz_config_real_keys_with_any_values_are_a_config_or_one_clear_line(yaml in yaml_config()) {
        check_outcome(Config::parse(&yaml, Path::new(ORIGIN)))?;
    }

    #[test]
    fn fuzz_config_template_mutations_are_a_config_or_one_clear_line(
        how in 0u8..4,
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = default_config_text().into_bytes();
        let at = at % bytes.len();
        match how {
            0 => bytes[at] ^= byte.max(1),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        check_outcome(Config::parse(&text, Path::new(ORIGIN)))?;
    }

    #[test]
    fn fuzz_config_valid_settings_round_trip(
        node_id in "[a-zA-Z0-9-]{1,20}",
        ports in any::<(u16, u16, u16)>()
            .prop_filter("gossip and sync on ports of their own", |(_, g, s)| g != s || *g == 0),
        bind in any::<[u8; 4]>(),
        seeds in proptest::collection::vec(("[a-z0-9.-]{1,12}", 1u16..), 0..4),
        secret in "[ -~]{1,40}",
        permissions in "[0-9a-fA-F]{3}",
        flags in any::<[bool; 5]>(),
        counts in (1u32..1_000_000, 1usize..10_000, 1u32..1000, 1usize..(1 << 20)),
        durations in (duration_text(), http_timeout_text(), http_timeout_text()),
        level in proptest::sample::select(&["error", "warn", "info", "debug", "trace"][..]),
        profile in prop_oneof![Just("lan"), Just("wan")],
    ) {
        let (rate_window, header_timeout, idle_timeout) = durations;
        let seed_list: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let yaml = format!(
            "node_id: \"{node_id}\"\nbind_address: {ip}\nhttp_port: {}\ngossip_port: {}\nsync_port: {}\n\
             seed_nodes: {seeds}\ncluster_secret: {secret_json}\njwt_secret: {secret_json}\n\
             default_permissions: \"{permissions}\"\nauth_enabled: {}\nallow_anonymous_read: {}\n\
             compression_enabled: {}\nrate_limiting_enabled: {}\nbackup_enabled: {}\n\
             rate_limit_requests: {}\nmax_revisions: {}\nbackup_retention: {}\nmax_value_bytes: {}\n\
             rate_limit_window: {}\nhttp_header_timeout: {}\nhttp_idle_timeout: {}\n\
             log_level: {level}\nmembership_profile: {profile}\n",
            ports.0, ports.1, ports.2,
            flags[0], flags[1], flags[2], flags[3], flags[4],
            counts.0, counts.1, counts.2, counts.3,
            rate_window.0, header_timeout.0, idle_timeout.0,
            ip = std::net::Ipv4Addr::from(bind),
            seeds = serde_json::to_string(&seed_list).unwrap(),
            secret_json = serde_json::to_string(&secret).unwrap(),
        );
        let config = Config::parse(&yaml, Path::new(ORIGIN))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&config.node_id, &node_id);
        prop_assert_eq!(config.bind_address, IpAddr::from(bind));
        prop_assert_eq!((config.http_port, config.gossip_port, config.sync_port), ports);
        prop_assert_eq!(&config.seed_nodes, &seed_list);
        prop_assert_eq!(&config.cluster_secret, &secret);
        prop_assert_eq!(&config.jwt_secret, &secret);
        prop_assert_eq!(config.default_permissions(), u16::from_str_radix(&permissions, 16).ok());
        prop_assert_eq!(
            [config.auth_enabled, config.allow_anonymous_read, config.compression_enabled,
             config.rate_limiting_enabled, config.backup_enabled],
            flags
        );
        prop_assert_eq!(
            (config.rate_limit_requests, config.max_revisions, config.backup_retention, config.max_value_bytes),
            counts
        );
        prop_assert_eq!(config.rate_limit_window.0, rate_window.1);
        prop_assert_eq!(config.http_header_timeout.0, header_timeout.1);
        prop_assert_eq!(config.http_idle_timeout.0, idle_timeout.1);
        prop_assert_eq!(&config.log_level, level);
        prop_assert_eq!(&config.membership_profile, profile);
    }
}
