//! The cluster-secret proof run on every new QUIC connection before it is handed over:
//! both sides derive the same 32 bytes from the TLS session (RFC 5705 exporter), and each
//! proves it holds the secret with `HMAC(key, role || exporter)` on the first stream. The
//! client speaks first; the server answers only after verifying it, so a peer without the
//! secret learns nothing usable (the tags are bound to this session). Tags are compared in
//! constant time (`hmac`'s `verify_slice`).

use std::time::Duration;

use hmac::Mac;

use crate::auth::keyed;
use crate::{AuthError, ClusterSecret, NetError};

const EXPORTER_LABEL: &[u8] = b"EXPORTER-kvs-cluster-auth-v1";
const TAG_LEN: usize = 32;
/// How long the proof may take before the connection is dropped.
pub(super) const PROOF_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection-proof key derived from the cluster secret.
#[derive(Clone)]
pub(super) struct ProofKey([u8; 32]);

impl ProofKey {
    pub(super) fn new(secret: &ClusterSecret) -> Self {
        Self(secret.derive(b"kvs quic auth v1"))
    }

    fn mac(&self, role: &[u8], exporter: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = keyed(&self.0);
        mac.update(role);
        mac.update(exporter);
        mac
    }
}

fn conn_err(e: impl std::fmt::Display) -> NetError {
    NetError::Connection(e.to_string())
}

fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], NetError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| NetError::Connection("TLS exporter unavailable".into()))?;
    Ok(out)
}

/// Reads the peer's tag and checks it for `role`.
async fn expect_tag(
    recv: &mut quinn::RecvStream,
    key: &ProofKey,
    role: &[u8],
    exporter: &[u8],
) -> Result<(), NetError> {
    let mut tag = [0u8; TAG_LEN];
    recv.read_exact(&mut tag)
        .await
        .map_err(|_| AuthError::PeerRefused)?;
    key.mac(role, exporter)
        .verify_slice(&tag)
        .map_err(|_| NetError::Auth(AuthError::PeerRefused))
}

/// Client side: send our tag, then check the server's.
pub(super) async fn prove_client(conn: &quinn::Connection, key: &ProofKey) -> Result<(), NetError> {
    let ekm = exporter(conn)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(conn_err)?;
    let tag = key.mac(b"client", &ekm).finalize().into_bytes();
    send.write_all(&tag).await.map_err(conn_err)?;
    let _ = send.finish();
    expect_tag(&mut recv, key, b"server", &ekm).await
}

/// Server side: check the client's tag, then send ours.
pub(super) async fn prove_server(conn: &quinn::Connection, key: &ProofKey) -> Result<(), NetError> {
    let ekm = exporter(conn)?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(conn_err)?;
    expect_tag(&mut recv, key, b"client", &ekm).await?;
    let tag = key.mac(b"server", &ekm).finalize().into_bytes();
    send.write_all(&tag).await.map_err(conn_err)?;
    let _ = send.finish();
    Ok(())
}
