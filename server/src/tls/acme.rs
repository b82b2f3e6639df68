//! Certificates by ACME (`CLEANROOM_ACME_DOMAINS`), obtained and renewed by
//! `rustls-acme` with the TLS-ALPN-01 challenge, answered on the listen
//! port itself: the CA connects with ALPN `acme-tls/1` and is shown the
//! challenge certificate ([`super::listener`] tells the two apart).
//! Account and certificates are kept in `CLEANROOM_ACME_CACHE`, so a restart
//! serves the cached certificate at once.

use std::sync::Arc;

use futures::StreamExt as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::caches::DirCache;
use rustls_acme::AcmeConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{display, provider, server_config, Tls, TlsError};
use crate::config::Config;

/// The client configuration for talking to a directory whose HTTPS is
/// signed by the CAs in `path` (a private ACME server).
fn directory_client(path: &std::path::Path) -> Result<Arc<ClientConfig>, TlsError> {
    let bad = |why: String| TlsError::AcmeCa { path: display(path), why };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate ({e:?})")))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Starts ordering (or loading the cached) certificate; the order and its
/// renewals run on `tasks` until `stop`.
pub(super) fn start(config: &Config, tasks: &TaskTracker, stop: CancellationToken) -> Result<Tls, TlsError> {
    let cache = &config.acme_cache;
    std::fs::create_dir_all(cache).map_err(|e| TlsError::AcmeCache { path: display(cache), why: e.to_string() })?;
    let acme = match &config.acme_directory_ca {
        Some(ca) => AcmeConfig::new_with_client_config(&config.acme_domains, directory_client(ca)?),
        None => AcmeConfig::new_with_provider(&config.acme_domains, provider()),
    };
    let mut state = acme.directory(&config.acme_directory).cache(DirCache::new(cache.clone())).state();
    let tls = Tls {
        default: server_config(state.resolver()),
        challenge: Some(state.challenge_rustls_config_with_provider(provider())),
    };
    tracing::info!(
        domains = %config.acme_domains.join(","),
        directory = %config.acme_directory,
        "HTTPS with certificates by ACME (TLS-ALPN-01)"
    );
    tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = state.next() => event,
            };
            match event {
                Some(Ok(ok)) => tracing::info!(event = ?ok, "ACME"),
                Some(Err(e)) => tracing::warn!(error = %e, "ACME: no certificate yet; retrying"),
                None => break,
            }
        }
    });
    Ok(tls)
}
