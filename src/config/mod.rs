//! The node's configuration: a YAML file whose keys `shared/spec/cli-and-config.md`
//! fixes, with documented defaults, a commented template for new files, and checks that
//! name the offending key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::http_server::HttpLimits;

mod error;
mod file;
mod help;
mod membership;

pub use self::error::{ConfigError, KeyError};
pub use self::file::{
    config_arg, config_path, default_config_text, instance_name, load_or_create, secret,
    warn_if_exposed, warn_if_weak,
};
pub use self::help::HELP;

/// A duration written as in the API (`500ms`, `30s`, `1m`, `24h`, `7d` or seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like 500ms, 30s, 10m, 24h, 7d, or seconds")
            }

            fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration(Duration::from_secs(seconds)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                kvs_api::parse_duration(text)
                    .map(ConfigDuration)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A string key that may be left out (for a generated value) but not written empty: an
/// empty `cluster_secret: ""` is far more likely a template or an unset variable than a
/// wish for a generated secret, and two nodes that each generate one never form a cluster.
/// The error names the key itself: serde's own path is lost in a `deserialize_with`.
/// A YAML null (`node_id:` or `node_id: ~`) is as if the key were left out; it read as
/// the name `null`.
fn non_empty<'de, D: Deserializer<'de>>(deserializer: D, key: &str) -> Result<String, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(String::new());
    };
    if text.is_empty() {
        return Err(serde::de::Error::custom(format!(
            "{key}: must not be empty (leave the key out to have one generated)"
        )));
    }
    Ok(text)
}

fn non_empty_node_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    non_empty(deserializer, "node_id")
}

fn non_empty_cluster_secret<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    non_empty(d, "cluster_secret")
}

fn non_empty_jwt_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    non_empty(deserializer, "jwt_secret")
}

fn duration(text: &str) -> ConfigDuration {
    ConfigDuration(kvs_api::parse_duration(text).unwrap_or_default())
}

/// Every key of the config file. Defaults are the contract's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's identity; when left out, a UUID generated at first start and kept in
    /// the data dir.
    #[serde(deserialize_with = "non_empty_node_id")]
    pub node_id: String,
    /// Address all listeners bind to.
    pub bind_address: IpAddr,
    /// Address peers use to reach this node (default: `bind_address`).
    pub advertise_address: Option<IpAddr>,
    /// HTTP API port (TCP).
    pub http_port: u16,
    /// SWIM membership port (UDP).
    pub gossip_port: u16,
    /// Data sync port (QUIC over UDP).
    pub sync_port: u16,
    /// LMDB environment, backups, `root.token` (default `./data` next to the config).
    pub data_dir: Option<PathBuf>,
    /// Gossip addresses (`host:port`) to join through.
    pub seed_nodes: Vec<String>,
    /// Membership and sync on or off.
    pub clustering_enabled: bool,
    /// Shared by every node of a cluster; authenticates gossip and sync. When left out,
    /// the node generates one at first start and keeps it in its data dir (written
    /// empty, it is refused).
    #[serde(deserialize_with = "non_empty_cluster_secret")]
    pub cluster_secret: String,
    /// Shared by every node of a cluster; signs tokens. Generated and kept like
    /// `cluster_secret` when left out.
    #[serde(deserialize_with = "non_empty_jwt_secret")]
    pub jwt_secret: String,
    /// JWT authentication and permissions.
    pub auth_enabled: bool,
    /// Anonymous reads allowed.
    pub allow_anonymous_read: bool,
    /// Anonymous writes allowed.
    pub allow_anonymous_write: bool,
    /// Permission bits of a new key, three hex digits.
    pub default_permissions: String,
    /// Per-client rate limits on or off.
    pub rate_limiting_enabled: bool,
    /// Requests per window.
    pub rate_limit_requests: u32,
    /// The rate limit window.
    pub rate_limit_window: ConfigDuration,
    /// Keep old versions.
    pub revision_history_enabled: bool,
    /// Versions kept per key.
    pub max_revisions: usize,
    /// zstd for stored values.
    pub compression_enabled: bool,
    /// Values smaller than this stay raw.
    pub compression_min_bytes: usize,
    /// Hash-chained audit log.
    pub tamper_logging_enabled: bool,
    /// Scheduled backups.
    pub backup_enabled: bool,
    /// Time between scheduled backups.
    pub backup_interval: ConfigDuration,
    /// Backups kept.
    pub backup_retention: u32,
    /// How long a delete is remembered.
    pub tombstone_ttl: ConfigDuration,
    /// Request body limit in bytes.
    pub max_value_bytes: usize,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Membership timing preset: `lan` (default) or `wan`; the keys below override it.
    pub membership_profile: String,
    /// Time between probes of one member (SWIM protocol period).
    pub probe_interval: Option<ConfigDuration>,
    /// Initial wait for a direct ack (it then adapts to each peer's round-trip time).
    pub probe_timeout: Option<ConfigDuration>,
    /// Members asked to probe indirectly when a direct probe fails.
    pub indirect_probes: Option<usize>,
    /// Suspicion timeout multiplier (of `log10(N)` protocol periods).
    pub suspicion_multiplier: Option<u32>,
    /// Time between gossip rounds.
    pub gossip_interval: Option<ConfigDuration>,
    /// Members each gossip round sends to.
    pub gossip_fanout: Option<usize>,
    /// Time between full member-list exchanges with a random peer.
    pub push_pull_interval: Option<ConfigDuration>,
    /// How long a dead or left member stays listed before it is forgotten.
    pub member_reap_after: Option<ConfigDuration>,
    /// Time between anti-entropy rounds with a random live peer.
    pub sync_interval: ConfigDuration,
    /// Versions stamped further ahead of the local clock are refused and counted.
    pub max_clock_skew: ConfigDuration,
    /// A client must send a request's headers within this once it has started.
    pub http_header_timeout: ConfigDuration,
    /// A connection without a request in progress is closed after this without traffic.
    pub http_idle_timeout: ConfigDuration,
    /// Concurrent HTTP connections; more wait to be accepted.
    pub max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            advertise_address: None,
            http_port: 8080,
            gossip_port: 7946,
            sync_port: 7947,
            data_dir: None,
            seed_nodes: Vec::new(),
            clustering_enabled: true,
            cluster_secret: String::new(),
            jwt_secret: String::new(),
            auth_enabled: true,
            allow_anonymous_read: false,
            allow_anonymous_write: false,
            default_permissions: "f31".into(),
            rate_limiting_enabled: false,
            rate_limit_requests: 100,
            rate_limit_window: duration("1m"),
            revision_history_enabled: true,
            max_revisions: 10,
            compression_enabled: true,
            compression_min_bytes: 1024,
            tamper_logging_enabled: true,
            backup_enabled: false,
            backup_interval: duration("24h"),
            backup_retention: 7,
            tombstone_ttl: duration("7d"),
            max_value_bytes: 1_048_576,
            log_level: "info".into(),
            membership_profile: "lan".into(),
            probe_interval: None,
            probe_timeout: None,
            indirect_probes: None,
            suspicion_multiplier: None,
            gossip_interval: None,
            gossip_fanout: None,
            push_pull_interval: None,
            member_reap_after: None,
            sync_interval: duration("5s"),
            max_clock_skew: duration("30s"),
            // nginx's client_header_timeout is 60s and its keepalive_timeout 75s; Go's
            // net/http leaves both to the caller. 10s is ample for headers on any link,
            // 60s keeps connections warm between a client's bursts, and 10000 connections
            // stay well below the usual 65536 open files.
            http_header_timeout: duration("10s"),
            http_idle_timeout: duration("60s"),
            max_connections: 10_000,
        }
    }
}

impl Config {
    /// Parses and checks a config text.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let unlike = |why: String| ConfigError::Unlike {
            path: origin.to_path_buf(),
            why,
        };
        if text.len() > error::MAX_CONFIG_BYTES {
            return Err(unlike(format!(
                "more than {} bytes, the most a config file holds",
                error::MAX_CONFIG_BYTES
            )));
        }
        if file::flow_nesting(text) > error::MAX_CONFIG_NESTING {
            return Err(unlike(format!(
                "nested deeper than {} levels of [ and {{",
                error::MAX_CONFIG_NESTING
            )));
        }
        // A byte order mark, which some editors put first, is not YAML's.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: origin.to_path_buf(),
                source,
            })?
        };
        // `INFO` as well as `info`, as Consul takes it; `WAN` as well as `wan`.
        config.log_level.make_ascii_lowercase();
        config.membership_profile.make_ascii_lowercase();
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&Self::read_text(path)?, path)
    }

    /// The text of a config file; no more of it is read than a config may hold (a link
    /// to `/dev/zero` is refused, not read for ever).
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(error::MAX_CONFIG_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(read_error)?;
        if bytes.len() > error::MAX_CONFIG_BYTES {
            return Err(ConfigError::Unlike {
                path: path.to_path_buf(),
                why: format!(
                    "more than {} bytes, the most a config file holds",
                    error::MAX_CONFIG_BYTES
                ),
            });
        }
        String::from_utf8(bytes).map_err(|_| {
            read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ))
        })
    }

    /// Checks relations between fields.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let fail = |key: &'static str, why: String| Err(KeyError::new(key, why).at(origin));
        if !self.node_id.is_empty() && self.node_id.trim().is_empty() {
            return fail(
                "node_id",
                "must not be blank (leave it out to generate one)".into(),
            );
        }
        if self.node_id.chars().any(char::is_control) {
            return fail(
                "node_id",
                format!("{:?} holds a control character", self.node_id),
            );
        }
        if self.node_id.len() > kvs_membership::MAX_ID_LEN {
            return fail(
                "node_id",
                format!(
                    "is {} bytes; at most {} (it travels in every gossip datagram)",
                    self.node_id.len(),
                    kvs_membership::MAX_ID_LEN
                ),
            );
        }
        if self.default_permissions().is_none() {
            return fail(
                "default_permissions",
                format!(
                    "{:?} is not three hex digits like f31",
                    self.default_permissions
                ),
            );
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return fail(
                "log_level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log_level
                ),
            );
        }
        // A value travels in one WAL record and in one sync frame, with room for its key,
        // its metadata and the framing.
        let max_value = crate::store::MAX_LOG_RECORD.min(kvs_net::MAX_FRAME) - (64 << 10);
        if self.max_value_bytes == 0 || self.max_value_bytes > max_value {
            return fail(
                "max_value_bytes",
                format!(
                    "must be above zero and at most {max_value} (a value must fit one sync frame)"
                ),
            );
        }
        if let Err((key, feature)) = self.check_enabled_features() {
            return fail(key, format!("must be above zero while {feature} is true"));
        }
        if self.sync_interval.0 < Duration::from_millis(10) {
            return fail("sync_interval", "must be at least 10ms".into());
        }
        if self.backup_enabled && self.backup_interval.0 < MIN_BACKUP_INTERVAL {
            // Each backup copies all the data: `1ms` took 597 backups in 3 s.
            return fail(
                "backup_interval",
                "must be at least 1s while backup_enabled is true".into(),
            );
        }
        if self.max_clock_skew.0.is_zero() {
            return fail("max_clock_skew", "must be above zero".into());
        }
        if self.tombstone_ttl.0 < self.max_clock_skew.0 {
            return fail(
                "tombstone_ttl",
                "must be at least max_clock_skew (a delete must outlive the clock skew)".into(),
            );
        }
        if let Err((key, why)) = self.check_http_limits() {
            return fail(key, why.into());
        }
        if self
            .data_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return fail(
                "data_dir",
                "must not be empty (leave it out for ./data)".into(),
            );
        }
        if let Some(advertised) = self.advertise_address.filter(IpAddr::is_unspecified) {
            return fail(
                "advertise_address",
                format!("{advertised} is a wildcard: give an address the other hosts reach"),
            );
        }
        if self.clustering_enabled && self.sync_port != 0 && self.sync_port == self.gossip_port {
            return fail(
                "sync_port",
                format!(
                    "{} is gossip_port too: both are UDP and need a port each",
                    self.sync_port
                ),
            );
        }
        self.swim_config().map_err(|e| e.at(origin))?;
        for seed in &self.seed_nodes {
            if seed
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return fail("seed_nodes", format!("{seed:?} is not host:port"));
            }
            if seed
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse() == Ok(0u16))
            {
                return fail("seed_nodes", format!("{seed:?}: port 0 reaches no node"));
            }
        }
        Ok(())
    }

    /// Checks the settings of the features that are on: `(key, feature)` of the first
    /// that is zero.
    fn check_enabled_features(&self) -> Result<(), (&'static str, &'static str)> {
        let history = (self.revision_history_enabled, "revision_history_enabled");
        let rate = (self.rate_limiting_enabled, "rate_limiting_enabled");
        let backup = (self.backup_enabled, "backup_enabled");
        let zero = [
            ("max_revisions", history, self.max_revisions == 0),
            ("rate_limit_requests", rate, self.rate_limit_requests == 0),
            (
                "rate_limit_window",
                rate,
                self.rate_limit_window.0.is_zero(),
            ),
            ("backup_interval", backup, self.backup_interval.0.is_zero()),
            ("backup_retention", backup, self.backup_retention == 0),
        ];
        match zero.iter().find(|(_, (on, _), is_zero)| *on && *is_zero) {
            Some((key, (_, feature), _)) => Err((key, feature)),
            None => Ok(()),
        }
    }

    /// Checks the HTTP server's limits: `(key, why)` of the first that is off.
    fn check_http_limits(&self) -> Result<(), (&'static str, &'static str)> {
        for (key, timeout) in [
            ("http_header_timeout", self.http_header_timeout.0),
            ("http_idle_timeout", self.http_idle_timeout.0),
        ] {
            if timeout.is_zero() {
                return Err((key, "must be above zero"));
            }
            if timeout > MAX_HTTP_TIMEOUT {
                return Err((key, "must be at most 24h"));
            }
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be above zero"));
        }
        Ok(())
    }

    /// The HTTP server's limits.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: self.http_header_timeout.0,
            idle_timeout: self.http_idle_timeout.0,
            max_connections: self.max_connections,
        }
    }

    /// The key of the audit chain, while `tamper_logging_enabled`.
    pub fn audit_key(&self) -> Option<kvs_sync::AuditKey> {
        self.tamper_logging_enabled
            .then(|| kvs_sync::AuditKey::from_secret(&self.cluster_secret))
    }

    /// How the store keeps data, from the history and compression keys.
    pub fn store_options(&self) -> kvs_sync::StoreOptions {
        kvs_sync::StoreOptions {
            max_revisions: if self.revision_history_enabled {
                self.max_revisions
            } else {
                0
            },
            compression_min_bytes: self
                .compression_enabled
                .then_some(self.compression_min_bytes),
        }
    }

    /// `default_permissions` as bits.
    pub fn default_permissions(&self) -> Option<u16> {
        let text = &self.default_permissions;
        (text.len() == 3 && text.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(text, 16).ok())
            .flatten()
    }

    /// The data directory, relative paths taken from the config file's directory.
    pub fn data_dir(&self, config_path: &Path) -> PathBuf {
        let base = config_path.parent().unwrap_or(Path::new("."));
        match &self.data_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => base.join(dir),
            None => base.join("data"),
        }
    }
}

/// The longest `http_header_timeout` and `http_idle_timeout`: a day is beyond any use,
/// and the connection deadlines stay far inside what `Instant` can add.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The shortest `backup_interval` while backups are on.
const MIN_BACKUP_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
