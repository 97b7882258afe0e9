//! The config keys, files, environment and exit codes as `kvs --help` lists them after
//! the commands (a test checks that it names every key of the default config).

/// What `kvs --help` says after the commands: every config key with its default, the
/// files and environment variables, and the exit codes.
pub const HELP: &str = "\
Config (YAML; every key is optional; README.md explains each):
  node_id (generated, kept in the data dir)   bind_address (127.0.0.1)
  advertise_address (bind_address)   http_port (8080)   gossip_port (7946)   sync_port (7947)
  data_dir (./data next to the config)   seed_nodes ([])   clustering_enabled (true)
  cluster_secret, jwt_secret (generated)   auth_enabled (true)
  allow_anonymous_read (false)   allow_anonymous_write (false)   default_permissions (f31)
  rate_limiting_enabled (false)   rate_limit_requests (100)   rate_limit_window (1m)
  revision_history_enabled (true)   max_revisions (10)
  compression_enabled (true)   compression_min_bytes (1024)   tamper_logging_enabled (true)
  backup_enabled (false)   backup_interval (24h)   backup_retention (7)
  tombstone_ttl (7d)   sync_interval (5s)   max_clock_skew (30s)   max_value_bytes (1048576)
  http_header_timeout (10s)   http_idle_timeout (60s)   max_connections (10000)
  log_level (info: error, warn, info, debug, trace)
  membership_profile (lan, or wan); each overrides one value of the profile:
    probe_interval (200ms)   probe_timeout (80ms)   indirect_probes (3)
    suspicion_multiplier (4)   gossip_interval (100ms)   gossip_fanout (3)   push_pull_interval (30s)
    member_reap_after (1h, at least twice push_pull_interval)
  Durations: 500ms, 30s, 10m, 24h, 7d, or a bare number of seconds.

Files: under $KVS_HOME (default ~/.kvs), pids/<name>.pid, pids/<name>.addr and
  logs/kvs_<name>.yaml.log, where <name> is the config's file name without .yaml.
Environment: KVS_HOME; KVS_ADDR (the client commands' node, default
  http://127.0.0.1:8080) and KVS_TOKEN (their bearer token).
Exit codes: 0 success, 1 runtime failure, 2 usage or config error.";
