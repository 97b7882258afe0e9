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
}
