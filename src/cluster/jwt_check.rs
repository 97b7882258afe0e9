//! Telling nodes that sign tokens with another `jwt_secret`. Such a node has the cluster
//! secret, so it joins and replicates, but a token one of them issued is refused by the
//! other wherever auth is on (`root.token` too). Each node with auth on publishes a
//! fingerprint of its `jwt_secret` in its membership metadata; a live member whose
//! fingerprint differs is logged once per start of it, counted in `/metrics` and marked
//! in `/members`. A node with auth off checks no token: it publishes and compares none.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kvs_membership::{Member, MemberState, MembershipEvent};
use kvs_net::ClusterSecret;

use super::MemberMeta;

/// The fingerprint of `jwt_secret` that membership carries: the first 8 bytes of an
/// HMAC-SHA256 under a key derived from `cluster_secret`, in hex. Gossip is authenticated,
/// not encrypted: keyed so, the fingerprint tells an outsider without the cluster secret
/// nothing, nor lets one test guesses of the `jwt_secret` against it.
pub fn jwt_fingerprint(cluster_secret: &str, jwt_secret: &str) -> String {
    let digest = ClusterSecret::new(cluster_secret)
        .digest(b"kvs jwt_secret fingerprint v1", jwt_secret.as_bytes());
    hex::encode(&digest[..8])
}

/// Whether a member that published the fingerprint `theirs` signs tokens with the
/// secret behind `own`; `None` when either side has none (auth off, or a node of an
/// older version, or the simulator's).
pub(super) fn same_jwt_secret(own: &str, theirs: &str) -> Option<bool> {
    (!own.is_empty() && !theirs.is_empty()).then(|| theirs == own)
}

/// The live members (alive or suspect) of `members` that sign tokens with another
/// secret than the one behind `own`.
pub(super) fn live_with_other_secret(own: &str, members: &[Member]) -> usize {
    members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .filter(|m| {
            same_jwt_secret(own, &MemberMeta::decode(&m.meta).jwt_fingerprint) == Some(false)
        })
        .count()
}

/// Members already warned about, by node id, with the start (`life`) warned about.
#[derive(Default)]
pub(super) struct OtherSecretWarnings {
    warned: Mutex<HashMap<String, u32>>,
}

impl OtherSecretWarnings {
    /// Checks a member that came up or restarted (see [`Self::check`]), and forgets one
    /// that membership forgot.
    pub(super) fn note(&self, own: &str, event: &MembershipEvent) {
        match event {
            MembershipEvent::Alive(m) | MembershipEvent::Updated(m) => {
                let meta = MemberMeta::decode(&m.meta);
                self.check(own, m.id.as_str(), meta.life, &meta.jwt_fingerprint);
            }
            MembershipEvent::Removed(id) => self.forget(id.as_str()),
            _ => {}
        }
    }

    /// Logs a warning when the member `node_id`, in its start `life`, signs tokens with
    /// another secret than `own`, once per start of it; returns whether it warned.
    fn check(&self, own: &str, node_id: &str, life: u32, theirs: &str) -> bool {
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
            "member {node_id} has another jwt_secret than this node: a token issued by either is refused by the other; give every node of the cluster the same jwt_secret"
        );
        true
    }

    /// Drops what is remembered of a member membership forgot.
    fn forget(&self, node_id: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        warned.remove(node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_both_secrets() {
        // Pinned: nodes of different versions compare it.
        assert_eq!(jwt_fingerprint("cluster", "tokens"), "8a19fe19fcd90ad7");
        assert_ne!(
            jwt_fingerprint("cluster", "tokens"),
            jwt_fingerprint("cluster", "tokens2")
        );
        assert_ne!(
            jwt_fingerprint("cluster", "tokens"),
            jwt_fingerprint("cluster2", "tokens")
        );
    }

    #[test]
    fn members_are_compared_only_where_both_published_a_fingerprint() {
        let own = jwt_fingerprint("c", "j");
        assert_eq!(same_jwt_secret(&own, &own), Some(true));
        assert_eq!(
            same_jwt_secret(&own, &jwt_fingerprint("c", "k")),
            Some(false)
        );
        assert_eq!(same_jwt_secret(&own, ""), None);
        assert_eq!(same_jwt_secret("", &own), None);
    }

    #[test]
    fn only_live_members_with_another_secret_are_counted() {
        let own = jwt_fingerprint("c", "j");
        let member = |id: &str, state, jwt: &str| Member {
            id: kvs_net::NodeId::new(id),
            addr: "127.0.0.1:1".parse().unwrap(),
            meta: MemberMeta {
                jwt_fingerprint: jwt.to_owned(),
                ..MemberMeta::default()
            }
            .encode(),
            state,
            incarnation: 1,
            joined_at: 0,
            flap_score: 0.0,
            rtt: None,
        };
        let other = jwt_fingerprint("c", "k");
        let members = [
            member("same", MemberState::Alive, &own),
            member("none", MemberState::Alive, ""),
            member("alive", MemberState::Alive, &other),
            member("suspect", MemberState::Suspect, &other),
            member("dead", MemberState::Dead, &other),
            member("left", MemberState::Left, &other),
        ];
        assert_eq!(live_with_other_secret(&own, &members), 2);
        assert_eq!(
            live_with_other_secret("", &members),
            0,
            "auth off compares none"
        );
    }

    #[test]
    fn a_member_is_warned_about_once_per_start_of_it() {
        let own = jwt_fingerprint("c", "j");
        let other = jwt_fingerprint("c", "k");
        let warnings = OtherSecretWarnings::default();
        assert!(!warnings.check(&own, "n1", 1, &own));
        assert!(!warnings.check(&own, "n1", 1, ""));
        assert!(!warnings.check("", "n1", 1, &other));
        assert!(warnings.check(&own, "n1", 1, &other));
        assert!(!warnings.check(&own, "n1", 1, &other));
        assert!(warnings.check(&own, "n2", 1, &other));
        assert!(warnings.check(&own, "n1", 2, &other));
        warnings.forget("n1");
        assert!(
            warnings.check(&own, "n1", 2, &other),
            "a forgotten member is new again"
        );
    }
}
