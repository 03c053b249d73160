//! TLS for the HTTP and gRPC ports from one PEM certificate chain and private key, with rustls on
//! the ring crypto provider (no C toolchain beyond ring's own, no aws-lc build).

pub mod listener;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

pub use listener::TlsListener;

/// A client that opens a connection and sends nothing may hold a handshake slot this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the TLS certificate file {} holds no PEM certificate ({source})", path.display())]
    NoCertificate { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the TLS key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1) ({source})", path.display())]
    NoKey { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the TLS certificate {} and key {} cannot be used: {source}", cert.display(), key.display())]
    Unusable { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The server's certificate and key, checked once at start-up and shared by both doors.
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    http: Arc<ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Makes ring the process' rustls provider, for the code (tonic's) that asks for the default one.
pub fn install_crypto_provider() {
    // Err only when one is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsIdentity {
    /// Reads and checks the pair: both PEM, the key of the certificate (rustls compares them).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|chain| {
                if chain.is_empty() {
                    Err(rustls::pki_types::pem::Error::NoItemsFound)
                } else {
                    Ok(chain)
                }
            })
            .map_err(|source| TlsError::NoCertificate { path: cert.into(), source })?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|source| TlsError::NoKey { path: key.into(), source })?;
        let unusable = |source| TlsError::Unusable { cert: cert.into(), key: key.into(), source };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(unusable)?;
        // The HTTP port speaks HTTP/1.1 only (axum's http2 feature is off).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { cert_pem, key_pem, http: Arc::new(config) })
    }

    /// The acceptor of the HTTP port.
    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.http.clone())
    }

    /// tonic's configuration for the gRPC port (it negotiates h2 by ALPN itself).
    pub fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        tonic::transport::ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE_TIMEOUT)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
}
