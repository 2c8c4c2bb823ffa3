//! Serving HTTPS directly (rustls, TLS 1.2 and 1.3), for schools without a reverse proxy.
//! Handshakes run in each connection's own task with a time limit ([`crate::connections`]), so
//! a slow or silent client cannot hold up everyone else's connections.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Reads a PEM certificate chain and private key; the error names the file and the problem.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the TLS certificate {} is not valid PEM: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "the TLS certificate file {} holds no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "cannot read a private key from {} (PEM, PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the TLS certificate and key do not work together: {e}"))?;
    // HTTP/1.1 only: the server is built without HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
