//! The cluster-secret proof run on every new QUIC connection before it is handed over, and
//! the limits that hold until it passes.
//!
//! Both sides derive the same 32 bytes from the TLS session (RFC 5705 exporter), and each
//! proves it holds the secret with `HMAC(key, role || exporter)` on the first stream,
//! exactly [`TAG_LEN`] bytes and then the end of its side of the stream. The client speaks
//! first; the server answers only after verifying it, so a peer without the secret learns
//! nothing usable (the tags are bound to this session and to the role). Tags are compared
//! in constant time (`hmac`'s `verify_slice`). The tag itself ([`ProofKey::tag`],
//! [`ProofKey::verify`]) is pure; the rest drives it over a connection.
//!
//! Until its peer has passed, a connection lets the peer open one bidirectional stream
//! (the proof's) and no unidirectional one, send at most [`UNPROVEN_WINDOW`] bytes of
//! stream data in all, and no QUIC datagrams. The proof lifts the stream count and the
//! connection window ([`open_up`]). quinn cannot change a stream's own window later, so
//! that one is the proven connections' throughout: the connection window is what bounds
//! the bytes an unproven peer can make us buffer.

use std::time::Duration;

use hmac::Mac;
use quinn::VarInt;

use crate::auth::keyed;
use crate::{AuthError, ClusterSecret, NetError};

const EXPORTER_LABEL: &[u8] = b"EXPORTER-kvs-cluster-auth-v1";
/// The length of a proof tag.
pub(super) const TAG_LEN: usize = 32;
/// How long the TLS handshake, and then the proof, may take before the connection is
/// dropped.
pub(super) const PROOF_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream bytes an unproven peer may send in all (the proof needs [`TAG_LEN`]).
pub(super) const UNPROVEN_WINDOW: u32 = 1024;
/// Bidirectional streams a proven peer may have open at once (quinn's default).
const PROVEN_STREAMS: u32 = 100;
/// The bytes a peer may send on one stream ahead of what this side has read: a few sync
/// messages (4 MiB each), so that a bootstrap's sender goes on while the receiver merges
/// (quinn's default of 1.25 MB stalled it on every message; BENCHMARKS.md). Before the
/// proof, the connection window bounds it.
const STREAM_WINDOW: u32 = 16 << 20;

/// Which side of the connection a tag speaks for (so a tag cannot be reflected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"client",
            Role::Server => b"server",
        }
    }
}

/// The connection-proof key derived from the cluster secret.
#[derive(Clone)]
pub(super) struct ProofKey([u8; 32]);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(..)")
    }
}

impl ProofKey {
    pub(super) fn new(secret: &ClusterSecret) -> Self {
        Self(secret.derive(b"kvs quic auth v1"))
    }

    fn mac(&self, role: Role, exporter: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = keyed(&self.0);
        mac.update(role.label());
        mac.update(exporter);
        mac
    }

    /// The tag `role` sends in the session whose exporter is `exporter`.
    pub(super) fn tag(&self, role: Role, exporter: &[u8]) -> [u8; TAG_LEN] {
        self.mac(role, exporter).finalize().into_bytes().into()
    }

    /// Checks a tag received from `role` (any other length is refused).
    pub(super) fn verify(&self, role: Role, exporter: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        self.mac(role, exporter)
            .verify_slice(tag)
            .map_err(|_| AuthError::PeerRefused)
    }
}

/// The QUIC transport settings of a connection whose peer has not passed the proof yet.
pub(super) fn unproven_limits() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .receive_window(VarInt::from_u32(UNPROVEN_WINDOW))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .send_window(2 * u64::from(STREAM_WINDOW))
        .datagram_receive_buffer_size(None);
    config
}

/// Lifts the limits of [`unproven_limits`] once the peer passed the proof.
fn open_up(conn: &quinn::Connection) {
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(PROVEN_STREAMS));
    conn.set_receive_window(VarInt::MAX);
}

fn conn_err(e: impl std::fmt::Display) -> NetError {
    NetError::Connection(e.to_string())
}

/// The session's exporter value, the same on both sides.
pub(super) fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], NetError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| NetError::Connection("TLS exporter unavailable".into()))?;
    Ok(out)
}

/// Reads the peer's whole side of the proof stream (at most one byte more than a tag) and
/// checks it as `role`'s tag.
async fn expect_tag(
    recv: &mut quinn::RecvStream,
    key: &ProofKey,
    role: Role,
    exporter: &[u8],
) -> Result<(), NetError> {
    let tag = recv
        .read_to_end(TAG_LEN + 1)
        .await
        .map_err(|_| AuthError::PeerRefused)?;
    Ok(key.verify(role, exporter, &tag)?)
}

/// Client side: send our tag, then check the server's.
pub(super) async fn prove_client(conn: &quinn::Connection, key: &ProofKey) -> Result<(), NetError> {
    let ekm = exporter(conn)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(conn_err)?;
    send.write_all(&key.tag(Role::Client, &ekm))
        .await
        .map_err(conn_err)?;
    send.finish().map_err(conn_err)?;
    expect_tag(&mut recv, key, Role::Server, &ekm).await?;
    open_up(conn);
    Ok(())
}

/// Server side: check the client's tag, then send ours.
pub(super) async fn prove_server(conn: &quinn::Connection, key: &ProofKey) -> Result<(), NetError> {
    let ekm = exporter(conn)?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(conn_err)?;
    expect_tag(&mut recv, key, Role::Client, &ekm).await?;
    // Before our tag, so that the raised limits reach the client with it.
    open_up(conn);
    send.write_all(&key.tag(Role::Server, &ekm))
        .await
        .map_err(conn_err)?;
    send.finish().map_err(conn_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: [u8; 32] = [7; 32];

    fn key(secret: &str) -> ProofKey {
        ProofKey::new(&ClusterSecret::new(secret))
    }

    #[test]
    fn a_tag_verifies_for_its_key_role_and_session_only() {
        let k = key("s");
        for role in [Role::Client, Role::Server] {
            let tag = k.tag(role, &SESSION);
            assert_eq!(k.verify(role, &SESSION, &tag), Ok(()), "{role:?}");
            assert_eq!(key("s").verify(role, &SESSION, &tag), Ok(()), "same secret");
            assert_eq!(
                key("other").verify(role, &SESSION, &tag),
                Err(AuthError::PeerRefused)
            );
            let mut other_session = SESSION;
            other_session[31] ^= 1;
            assert_eq!(
                k.verify(role, &other_session, &tag),
                Err(AuthError::PeerRefused),
                "a tag from another session"
            );
        }
        // A tag is not valid for the other role: the server cannot reflect the client's.
        let client = k.tag(Role::Client, &SESSION);
        assert_eq!(
            k.verify(Role::Server, &SESSION, &client),
            Err(AuthError::PeerRefused)
        );
    }

    #[test]
    fn truncated_extended_and_altered_tags_are_refused() {
        let k = key("s");
        let tag = k.tag(Role::Client, &SESSION);
        for n in 0..TAG_LEN {
            assert_eq!(
                k.verify(Role::Client, &SESSION, &tag[..n]),
                Err(AuthError::PeerRefused),
                "truncated to {n}"
            );
        }
        let mut longer = tag.to_vec();
        longer.push(0);
        assert_eq!(
            k.verify(Role::Client, &SESSION, &longer),
            Err(AuthError::PeerRefused)
        );
        for i in 0..TAG_LEN {
            let mut bad = tag;
            bad[i] ^= 0x80;
            assert_eq!(
                k.verify(Role::Client, &SESSION, &bad),
                Err(AuthError::PeerRefused),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn the_key_depends_on_the_secret_and_keeps_it_out_of_debug() {
        let (a, b) = (key("s"), key("t"));
        assert_ne!(a.tag(Role::Client, &SESSION), b.tag(Role::Client, &SESSION));
        assert_eq!(format!("{a:?}"), "ProofKey(..)");
    }
}

/// Fuzz loops of the connection proof (run long with `PROPTEST_CASES`; see
/// docs/fuzzing.md): what a peer sends on the proof stream is the only input.
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::*;

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Client), Just(Role::Server)]
    }

    proptest! {
        // proptest's default: 256 cases, or PROPTEST_CASES.

        #[test]
        fn fuzz_proof_arbitrary_tags_never_verify(
            secret in ".{0,16}",
            exporter in any::<[u8; 32]>(),
            role in role(),
            // Lengths around the tag's, and the exact one most often.
            tag in prop_oneof![
                proptest::collection::vec(any::<u8>(), TAG_LEN..=TAG_LEN),
                proptest::collection::vec(any::<u8>(), 0..=2 * TAG_LEN),
            ],
        ) {
            let key = ProofKey::new(&ClusterSecret::new(&secret));
            prop_assume!(tag[..] != key.tag(role, &exporter)[..]);
            prop_assert_eq!(key.verify(role, &exporter, &tag), Err(AuthError::PeerRefused));
        }

        #[test]
        fn fuzz_proof_tags_round_trip_for_their_key_role_and_session_only(
            secret in ".{0,16}",
            other_secret in ".{0,16}",
            exporter in any::<[u8; 32]>(),
            other_exporter in any::<[u8; 32]>(),
            role in role(),
        ) {
            let key = ProofKey::new(&ClusterSecret::new(&secret));
            let tag = key.tag(role, &exporter);
            prop_assert_eq!(key.verify(role, &exporter, &tag), Ok(()));
            let other_role = if role == Role::Client { Role::Server } else { Role::Client };
            prop_assert!(key.verify(other_role, &exporter, &tag).is_err(), "reflected");
            if other_exporter != exporter {
                prop_assert!(key.verify(role, &other_exporter, &tag).is_err(), "other session");
            }
            // HMAC pads short keys with zeros: secrets that differ only in trailing NULs
            // are one key (config secrets are printable text; the generated ones hex).
            if other_secret.trim_end_matches('\0') != secret.trim_end_matches('\0') {
                let other = ProofKey::new(&ClusterSecret::new(&other_secret));
                prop_assert!(other.verify(role, &exporter, &tag).is_err(), "other secret");
            }
        }

        #[test]
        fn fuzz_proof_changed_tags_are_refused(
            exporter in any::<[u8; 32]>(),
            role in role(),
            at in 0..TAG_LEN,
            flip in 1u8..=255,
            cut in 0..TAG_LEN,
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let key = ProofKey::new(&ClusterSecret::new("fuzz"));
            let tag = key.tag(role, &exporter);
            let mut flipped = tag;
            flipped[at] ^= flip;
            prop_assert!(key.verify(role, &exporter, &flipped).is_err(), "flip at {}", at);
            prop_assert!(key.verify(role, &exporter, &tag[..cut]).is_err(), "cut at {}", cut);
            let mut longer = tag.to_vec();
            longer.extend(extra);
            prop_assert!(key.verify(role, &exporter, &longer).is_err(), "extended");
        }
    }
}
