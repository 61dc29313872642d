//! The servers' TLS identity: the certificate chain and key named by
//! `local.ssl.certfile` and `local.ssl.keyfile` (configure writes a
//! self-signed pair, or installs the one given), as a rustls server
//! configuration every protocol daemon shares.

use std::sync::Arc;

use anyhow::Context as _;
use epistle_config::{Config, MsgSvrBase};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the pair and builds the server configuration (TLS 1.2 and 1.3).
/// The error names the file and the parameter to fix.
pub fn server_config(base: &MsgSvrBase, cfg: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let cert_path = base.resolve(cfg.get("local.ssl.certfile"));
    let key_path = base.resolve(cfg.get("local.ssl.keyfile"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the certificate {} (local.ssl.certfile): {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "{} (local.ssl.certfile) holds no certificate",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the private key {} (local.ssl.keyfile): {e}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the key {} does not match the certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    Ok(Arc::new(config))
}
