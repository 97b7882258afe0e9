//! Telling nodes that sign tokens with another `jwt_secret`. Such a node has the cluster
//! secret, so it joins and replicates, but a token one of them issued is refused by the
//! other (`root.token` too). Each node publishes a fingerprint of its `jwt_secret` in its
//! membership metadata; a member whose fingerprint differs is logged once per start of
//! it, counted in `/metrics` and marked in `/members`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fingerprint of `jwt_secret` that membership carries: the first 8 bytes of
/// HMAC-SHA256 keyed by `cluster_secret`, in hex. Gossip is authenticated, not encrypted:
/// keyed so, the fingerprint tells an outsider without the cluster secret nothing, nor
/// lets one test guesses of the `jwt_secret` against it.
pub fn jwt_fingerprint(cluster_secret: &str, jwt_secret: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(cluster_secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(b"kvs jwt_secret fingerprint v1\0");
    mac.update(jwt_secret.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// Whether a member that published `theirs` signs tokens with the secret behind `own`;
/// `None` when it published none (the simulator's nodes do not).
pub(super) fn same_jwt_secret(own: &str, theirs: &str) -> Option<bool> {
    (!theirs.is_empty()).then(|| theirs == own)
}

/// Members already warned about, by node id, with the start (`life`) warned about.
#[derive(Default)]
pub(super) struct OtherSecretWarnings {
    warned: Mutex<HashMap<String, u32>>,
}

impl OtherSecretWarnings {
    /// Logs a warning when the member `node_id`, in its start `life`, signs tokens with
    /// another secret than `own`, once per start of it; returns whether it warned.
    pub(super) fn check(&self, own: &str, node_id: &str, life: u32, theirs: &str) -> bool {
        if same_jwt_secret(own, theirs) != Some(false) {
            return false;
        }
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.get(node_id) == Some(&life) {
            return false;
        }
        warned.insert(node_id.to_owned(), life);
        tracing::warn!(
            member = node_id,
            "member {node_id} has another jwt_secret than this node: a token issued by either is refused by the other wherever auth_enabled is true; give every node of the cluster the same jwt_secret"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_both_secrets() {
        let fingerprint = jwt_fingerprint("cluster", "tokens");
        assert_eq!(fingerprint.len(), 16);
        assert_eq!(fingerprint, jwt_fingerprint("cluster", "tokens"));
        assert_ne!(fingerprint, jwt_fingerprint("cluster", "tokens2"));
        assert_ne!(fingerprint, jwt_fingerprint("cluster2", "tokens"));
        // The separator keeps the two inputs apart.
        assert_ne!(jwt_fingerprint("a", "b"), jwt_fingerprint("ab", ""));
    }

    #[test]
    fn a_member_is_compared_only_when_it_published_a_fingerprint() {
        let own = jwt_fingerprint("c", "j");
        assert_eq!(same_jwt_secret(&own, &own), Some(true));
        assert_eq!(
            same_jwt_secret(&own, &jwt_fingerprint("c", "k")),
            Some(false)
        );
        assert_eq!(same_jwt_secret(&own, ""), None);
    }

    #[test]
    fn a_member_is_warned_about_once_per_start_of_it() {
        let own = jwt_fingerprint("c", "j");
        let other = jwt_fingerprint("c", "k");
        let warnings = OtherSecretWarnings::default();
        assert!(!warnings.check(&own, "n1", 1, &own));
        assert!(!warnings.check(&own, "n1", 1, ""));
        assert!(warnings.check(&own, "n1", 1, &other));
        assert!(!warnings.check(&own, "n1", 1, &other));
        assert!(warnings.check(&own, "n2", 1, &other));
        assert!(warnings.check(&own, "n1", 2, &other));
    }
}
