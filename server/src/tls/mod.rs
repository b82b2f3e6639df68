//! HTTPS on the listen address (rustls, ring): the certificate comes from
//! PEM files (read again when they change, so a renewal needs no restart),
//! is made at start (self-signed, for a LAN), or is obtained and renewed by
//! ACME (TLS-ALPN-01 on the same port). With any of them the address
//! speaks only TLS: a plain-HTTP request fails its handshake and gets no
//! answer. See [`listener`] for how connections are accepted.

mod acme;
mod files;
pub mod listener;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

pub use files::{fingerprint, spki_sha256_base64};
pub use listener::TlsListener;

/// Why HTTPS could not be set up; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate chain.
    #[error("CLEANROOM_TLS_CERT (--tls-cert) {path}: {why}")]
    Cert {
        /// The certificate file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The key file is unreadable or holds no usable PEM private key.
    #[error("CLEANROOM_TLS_KEY (--tls-key) {path}: {why}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("CLEANROOM_TLS_KEY (--tls-key): the key does not belong to the certificate in CLEANROOM_TLS_CERT")]
    Mismatch,
    /// The self-signed certificate could not be made.
    #[error("CLEANROOM_TLS_SELF_SIGNED: {0}")]
    SelfSigned(String),
    /// The ACME directory's CA file is unreadable or holds no PEM certificate.
    #[error("CLEANROOM_ACME_DIRECTORY_CA (--acme-directory-ca) {path}: {why}")]
    AcmeCa {
        /// The CA file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The ACME cache folder could not be created.
    #[error("CLEANROOM_ACME_CACHE (--acme-cache) {path}: {why}")]
    AcmeCache {
        /// The cache folder.
        path: String,
        /// Why it could not be created.
        why: String,
    },
}

/// The crypto every TLS piece of the server uses (one provider, chosen here
/// rather than by whichever dependency installed a process default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS configurations of the listen address: the one for browsers and,
/// with ACME, the one that answers the CA's TLS-ALPN-01 validation.
#[derive(Clone)]
pub struct Tls {
    pub(crate) default: Arc<ServerConfig>,
    pub(crate) challenge: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("acme", &self.challenge.is_some()).finish_non_exhaustive()
    }
}

impl Tls {
    /// HTTPS as configured (`None`: plain HTTP). Reading the certificate
    /// files, making the self-signed certificate or opening the ACME cache
    /// fails here, before the port is bound; renewals and reloads run on
    /// `tasks` until `stop`.
    pub fn from_config(
        config: &Config,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Option<Self>, TlsError> {
        let resolver: Arc<dyn ResolvesServerCert> = if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key)
        {
            let files = Arc::new(files::FileCert::load(cert, key)?);
            tracing::info!(
                cert = %cert.display(),
                sha256 = %fingerprint(files.leaf().as_ref()),
                "HTTPS with the certificate files (reloaded when they change)"
            );
            files.clone().watch(Duration::from_millis(config.tls_reload_ms), tasks, stop);
            files
        } else if config.tls_self_signed {
            let mut names: Vec<String> =
                config.ice_addrs.iter().chain(&config.ice_public_addrs).map(ToString::to_string).collect();
            if !config.addr.ip().is_unspecified() {
                names.push(config.addr.ip().to_string());
            }
            names.push("localhost".into());
            names.sort();
            names.dedup();
            let made = files::self_signed(&names)?;
            let leaf = made.cert.first().cloned().ok_or_else(|| TlsError::SelfSigned("no certificate made".into()))?;
            tracing::info!(
                names = %names.join(","),
                sha256 = %fingerprint(leaf.as_ref()),
                spki_sha256 = %spki_sha256_base64(leaf.as_ref()).unwrap_or_default(),
                "HTTPS with a self-signed certificate made at start; compare its SHA-256 fingerprint in the browser"
            );
            Arc::new(files::Fixed(Arc::new(made)))
        } else if !config.acme_domains.is_empty() {
            return acme::start(config, tasks, stop).map(Some);
        } else {
            return Ok(None);
        };
        Ok(Some(Self { default: server_config(resolver), challenge: None }))
    }
}

/// A server configuration for browsers: HTTP/1.1 (the signalling socket
/// upgrades from it), certificates from `resolver`.
pub(crate) fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = match ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(builder) => builder.with_no_client_auth().with_cert_resolver(resolver),
        // The ring provider supports the default versions; kept total anyway.
        Err(_) => ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
