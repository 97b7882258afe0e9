//! Randomness as protocol code sees it: a seeded generator passed in. One generator per
//! purpose is derived from a run seed, so that adding draws for one purpose does not
//! shift the others.

use rand::RngCore;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

/// The seeded generator used by kvs protocol code and the simulator.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// The generator for `purpose` derived from `seed` (SHA-256 of both): the same inputs
/// always give the same stream; different purposes give independent streams.
pub fn seeded_rng(seed: u64, purpose: &str) -> SeededRng {
    let mut hasher = Sha256::new();
    hasher.update(b"kvs seeded rng v1\0");
    hasher.update(seed.to_le_bytes());
    hasher.update(purpose.as_bytes());
    SeededRng::from_seed(hasher.finalize().into())
}

/// A fresh seed from the operating system, for real nodes (log it to replay a run).
pub fn random_seed() -> u64 {
    rand::rngs::OsRng.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_purposes_differ() {
        let a = seeded_rng(7, "swim").next_u64();
        assert_eq!(a, seeded_rng(7, "swim").next_u64());
        assert_ne!(a, seeded_rng(7, "sync").next_u64());
        assert_ne!(a, seeded_rng(8, "swim").next_u64());
    }
}
