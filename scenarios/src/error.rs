//! The errors of kvs-scenarios: a scenario file that cannot be read or makes no sense.
//! (A property that fails is not an error but a [`crate::Violation`] in the run report.)

use std::path::PathBuf;

/// Why a scenario could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not match the format (unknown key, wrong type, bad duration...).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key where serde knows it.
        message: String,
    },
    /// A value is well-formed but invalid (a node that does not exist, a probability
    /// above 1...).
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// The trace file could not be written.
    #[error("trace file: {0}")]
    TraceIo(#[from] std::io::Error),
}

impl SimError {
    /// An [`SimError::Invalid`] from anything printable.
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// The same error with the key it is about put in front: `network.default: ...`, or
    /// `network.default.loss: ...` where the message starts with a key of its own.
    pub(crate) fn at(self, key: &str) -> Self {
        match self {
            Self::Invalid(m) => {
                let inner_key = m.split_once(": ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
                });
                let joint = if inner_key { "." } else { ": " };
                Self::Invalid(format!("{key}{joint}{m}"))
            }
            other => other,
        }
    }
}
