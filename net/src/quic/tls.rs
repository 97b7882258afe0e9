//! TLS for the QUIC transport: the node's self-signed certificate, made at first start and
//! kept in the data dir, and the rustls configs. Certificates prove nothing about cluster
//! membership (anyone can make one), so the client accepts any server certificate (it
//! still checks the handshake signature); membership is proven afterwards with the
//! cluster secret bound to the TLS session (`proof.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::NetError;

/// The ALPN protocol of kvs sync connections.
const ALPN: &[u8] = b"kvs-sync/1";
const CERT_FILE: &str = "quic-cert.der";
/// How often an idle connection is kept alive.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);
const KEY_FILE: &str = "quic-key.der";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_err(e: impl std::fmt::Display) -> NetError {
    NetError::Certificate(e.to_string())
}

/// Loads the certificate and key from `dir`, or makes and stores them at first start.
pub(super) fn load_or_create(
    dir: &Path,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read(&cert_path)?;
        let key = std::fs::read(&key_path)?;
        return Ok((
            CertificateDer::from(cert),
            PrivatePkcs8KeyDer::from(key).into(),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let made = rcgen::generate_simple_self_signed(vec!["kvs".to_string()]).map_err(cert_err)?;
    let key = made.key_pair.serialize_der();
    write_private(&key_path, &key)?;
    std::fs::write(&cert_path, made.cert.der())?;
    Ok((
        made.cert.der().clone(),
        PrivatePkcs8KeyDer::from(key).into(),
    ))
}

/// The error of a certificate and key kept in `dir` that do not make a TLS identity
/// (damaged, or not a pair): names the files, and how to have new ones made.
pub(super) fn kept_files_unusable(dir: &Path, error: &NetError) -> NetError {
    let error = match error {
        NetError::Certificate(why) => why.clone(),
        other => other.to_string(),
    };
    NetError::Certificate(format!(
        "{} and {} do not make a certificate and its key ({error}); delete both to have \
         new ones made at the next start (peers take any node's certificate)",
        dir.join(CERT_FILE).display(),
        dir.join(KEY_FILE).display()
    ))
}

/// Writes a file readable by its owner only (where the platform has modes).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, bytes)?;
    Ok(())
}

/// The server side: our certificate, no client certificates, `transport`'s limits.
pub(super) fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, NetError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cert_err)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(cert_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(cert_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The client side: any server certificate, checked signatures, `transport`'s limits.
pub(super) fn client_config(
    mut transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let verifier = AnyServerCert(provider.signature_verification_algorithms);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cert_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(cert_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // Keep-alives hold a connection open through quiet spells (quinn's default idle
    // timeout is 30 s), so that the first write after one goes out at once.
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts any certificate (self-signed by design) but verifies handshake signatures, so
/// the session is bound to the key of the certificate presented.
#[derive(Debug)]
struct AnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
