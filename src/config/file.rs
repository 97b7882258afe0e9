//! Config files: where a CONFIG argument points, the instance it names, a new file
//! written from the template with fresh secrets, the shape checked before a file is
//! parsed, and the warning about a file others may read.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};
use crate::private_files;

/// The config file for a CONFIG argument: `node1` means `node1.yaml` (unless only a
/// file `node1` exists).
pub fn config_path(arg: &str) -> PathBuf {
    let path = PathBuf::from(arg);
    if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        return path;
    }
    let with_yaml = PathBuf::from(format!("{arg}.yaml"));
    // A file the user named is used as named (`node.conf`, or a pipe: `<(...)`), unless
    // `NAME.yaml` exists too; `node1` (a directory, or nothing) means `node1.yaml`.
    if !with_yaml.exists() && path.exists() && !path.is_dir() {
        return path;
    }
    with_yaml
}

/// Checks a CONFIG (or NAME) argument: its file name less `.yaml` is the instance's name,
/// so it must be a name of its own (not empty, not dots, no surrounding spaces). For
/// clap's `value_parser`.
pub fn config_arg(arg: &str) -> Result<String, String> {
    let file_name = arg.rsplit('/').next().unwrap_or(arg);
    let stem = file_name.trim_end_matches(".yaml").trim_end_matches(".yml");
    if stem.is_empty() || stem.chars().all(|c| c == '.') || stem.trim() != stem {
        return Err(format!(
            "{arg:?} names no config: give one such as node1 (or dir/node1)"
        ));
    }
    Ok(arg.to_owned())
}

/// The deepest nesting of `[` and `{` in `text`, outside quoted strings and comments.
pub(super) fn flow_nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut quote, mut comment) = (0usize, 0, None, false);
    let mut previous = ' ';
    for c in text.chars() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some(open), _) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    deepest
}

/// The instance name of a config file: its file name without `.yaml`.
pub fn instance_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kvs".into())
}

/// Loads CONFIG (`node1` means `node1.yaml`), writing the default config there first
/// if it does not exist.
pub fn load_or_create(arg: &str) -> Result<(PathBuf, Config), ConfigError> {
    let path = config_path(arg);
    if !path.exists() && path.symlink_metadata().is_ok() {
        // A link to nothing (or a loop): not a config to write through it.
        return Err(ConfigError::Read {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a symbolic link to a missing file, or a loop of links",
            ),
        });
    }
    if !path.exists() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_files::create_dir(parent).map_err(|source| ConfigError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // It holds the secrets: readable by this user only.
        private_files::write_new(&path, default_config_text().as_bytes()).map_err(|source| {
            ConfigError::Write {
                path: path.clone(),
                source,
            }
        })?;
        eprintln!("wrote a default config to {}", path.display());
    }
    let config = Config::load(&path)?;
    Ok((path, config))
}

/// Logs a warning when the config file at `path`, which holds the cluster's secrets (the
/// caller knows), is readable by group or others.
pub fn warn_if_exposed(path: &Path) {
    if private_files::exposed(path) {
        tracing::warn!(
            path = %path.display(),
            "the config file holds a secret (cluster_secret or jwt_secret) but is readable by group or others; run chmod 600 on it"
        );
    }
}

/// Secrets shorter than this are warned about (the generated ones have 64 hex digits).
const MIN_SECRET_BYTES: usize = 16;

/// The secrets of `config` short enough to guess (`cluster_secret: a` authenticates a
/// cluster's gossip and sync; found by a black-box audit, accepted without a word).
pub(super) fn weak_secrets(config: &Config) -> Vec<&'static str> {
    [
        ("cluster_secret", &config.cluster_secret),
        ("jwt_secret", &config.jwt_secret),
    ]
    .into_iter()
    .filter(|(_, secret)| secret.len() < MIN_SECRET_BYTES)
    .map(|(name, _)| name)
    .collect()
}

/// Logs a warning for each of [`weak_secrets`].
pub fn warn_if_weak(config: &Config) {
    for name in weak_secrets(config) {
        tracing::warn!(
            key = name,
            "{name} is shorter than {MIN_SECRET_BYTES} bytes and easy to guess; use a long random one (kvs init writes one)"
        );
    }
}

/// A fresh random secret: 32 random bytes in hex.
pub fn secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A complete, commented default config with a fresh `node_id` and secrets.
pub fn default_config_text() -> String {
    include_str!("../config_template.yaml")
        .replace("{node_id}", &uuid::Uuid::new_v4().to_string())
        .replace("{cluster_secret}", &secret())
        .replace("{jwt_secret}", &secret())
}
