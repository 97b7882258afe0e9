//! The config's errors. Each is one line that names the file, and the key when one key is
//! at fault (`node1.yaml: log_level: "loud" is not one of ...`), as
//! `shared/spec/cli-and-config.md` asks of a bad config; the variants carry the same
//! parts as fields, so that code and tests can tell which key was refused.

use std::io;
use std::path::{Path, PathBuf};

/// Why a config could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The directory of a new config file could not be made.
    #[error("{}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A new config file could not be written.
    #[error("{}: cannot write: {source}", .path.display())]
    Write {
        /// The config file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Not YAML, an unknown key or a value of the wrong type: the YAML parser's message on
    /// one line, which names the key.
    #[error("{}: {}", .path.display(), one_line(.source))]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A file no config is like (larger than [`MAX_CONFIG_BYTES`], or nested deeper than
    /// [`MAX_CONFIG_NESTING`]), refused before it is parsed.
    #[error("{}: {why}", .path.display())]
    Unlike {
        /// The config file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A key's value is refused by the checks.
    #[error("{}: {key}: {why}", .path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The refused key.
        key: &'static str,
        /// Why.
        why: String,
    },
    /// A key's value passed the checks but is unusable when the node starts (a port in
    /// use, a data dir that cannot be opened). Without the file: the caller knows it.
    #[error("{key}: {why}")]
    Unusable {
        /// The key naming what is unusable.
        key: &'static str,
        /// Why.
        why: String,
    },
}

impl ConfigError {
    /// The key at fault, when the error names one as a field (a parse error names it only
    /// in its message).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { key, .. } | Self::Unusable { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A value unusable at start (see [`ConfigError::Unusable`]).
    pub fn unusable(key: &'static str, why: impl std::fmt::Display) -> Self {
        Self::Unusable {
            key,
            why: why.to_string(),
        }
    }
}

/// A refused key without the file: what the checks of one part of the config return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct KeyError {
    /// The refused key.
    pub key: &'static str,
    /// Why.
    pub why: String,
}

impl KeyError {
    /// `key` refused for `why`.
    pub fn new(key: &'static str, why: impl Into<String>) -> Self {
        Self {
            key,
            why: why.into(),
        }
    }

    /// The error of the config file at `path`.
    pub fn at(self, path: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: self.key,
            why: self.why,
        }
    }
}

/// The most bytes of a config file: the whole default config is under 10 KB.
pub(super) const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The deepest nesting of `[` and `{` in a config file (a list of seeds is one level):
/// the YAML parser takes time quadratic in it.
pub(super) const MAX_CONFIG_NESTING: usize = 32;
/// The most characters of the parser's message quoted: it quotes the offending value,
/// which may be the whole file.
const MAX_MESSAGE_CHARS: usize = 300;

/// serde_yaml's message on one line, cut after [`MAX_MESSAGE_CHARS`].
fn one_line(error: &serde_yaml::Error) -> String {
    let serde_line = error.to_string().replace('\n', " ");
    let line = unknown_key(&serde_line).unwrap_or(serde_line);
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}... ({} more bytes)", &line[..cut], line.len() - cut),
        None => line,
    }
}

/// The longest unknown key matched against the known ones (which are far shorter).
const MAX_KEY_CHARS: usize = 64;

/// serde's "unknown field `probe_intervall`, expected one of `node_id`, ... at line 2
/// column 1", whose list of every key would be cut, as "unknown key `probe_intervall` at
/// line 2 column 1 (did you mean `probe_interval`?)"; `None` for any other message.
fn unknown_key(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    // A key no config has (`? <a long text>`): named, cut at the end, without a match.
    if name.len() > MAX_KEY_CHARS {
        return None;
    }
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let at = rest.rfind(" at line ").map_or("", |at| &rest[at..]);
    // A key a few edits away, else one the name begins (`membership`).
    let misspelt = expected
        .iter()
        .map(|key| (strsim::damerau_levenshtein(name, key), *key))
        .min()
        .filter(|(distance, _)| *distance <= 2.max(name.len() / 3))
        .map(|(_, key)| key);
    let begun = || {
        expected
            .iter()
            .find(|key| name.len() >= 4 && key.starts_with(name))
            .copied()
    };
    let hint = match misspelt.or_else(begun) {
        Some(key) => format!(" (did you mean `{key}`?)"),
        None => " (README, \"Configuration\", lists every key)".to_owned(),
    };
    Some(format!("unknown key `{name}`{at}{hint}"))
}
