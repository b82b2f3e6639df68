//! Certificates from PEM files (reloaded on change) and the self-signed
//! certificate made at start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{display, provider, TlsError};

/// The SHA-256 fingerprint of a certificate, as browsers show it
/// (`AB:CD:…`).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a certificate: what Chromium's
/// `--ignore-certificate-errors-spki-list` and HPKP-style pins name.
pub fn spki_sha256_base64(der: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(cert.public_key().raw)))
}

/// Reads a chain and its key; every way it can be wrong names the file.
fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |why: String| TlsError::Cert { path: display(cert), why };
    let key_err = |why: String| TlsError::Key { path: display(key), why };
    let pem = std::fs::read(cert).map_err(|e| cert_err(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain ({e:?})")))?;
    if chain.is_empty() {
        return Err(cert_err("holds no PEM certificate".into()));
    }
    let pem = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| key_err(format!("not a PEM private key ({e:?})")))?;
    let signing = provider().key_provider.load_private_key(der).map_err(|e| key_err(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch),
        // `Unknown` (a key type whose public half cannot be derived) is let through.
        _ => Ok(certified),
    }
}

/// A file's identity for change detection.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The certificate of `CLEANROOM_TLS_CERT`/`CLEANROOM_TLS_KEY`, served to
/// every handshake and replaced when the files change.
#[derive(Debug)]
pub(super) struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last read (successfully or not).
    seen: Mutex<(Stamp, Stamp)>,
}

impl FileCert {
    pub(super) fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let certified = read(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new(seen),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The leaf certificate being served.
    pub(super) fn leaf(&self) -> CertificateDer<'static> {
        self.current().cert.first().cloned().unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }

    /// Reads the files again if they changed. A pair that does not load (a
    /// renewal half written, a bad file) keeps the old certificate in
    /// service and is tried again once the files change again.
    pub(super) fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let Ok(mut seen) = self.seen.lock() else { return false };
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match read(&self.cert, &self.key) {
            Ok(certified) => {
                let sha256 = certified.cert.first().map(|c| fingerprint(c.as_ref())).unwrap_or_default();
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(certified),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(certified),
                }
                tracing::info!(cert = %self.cert.display(), %sha256, "certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but do not load; still serving the previous one");
                false
            }
        }
    }

    /// Checks the files every `every` until `stop`.
    pub(super) fn watch(self: Arc<Self>, every: Duration, tasks: &TaskTracker, stop: CancellationToken) {
        let this = Arc::downgrade(&self);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(files) = this.upgrade() else { break };
                // File reads are quick but blocking: off the async threads.
                let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
            }
        });
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// One certificate for the process's life (the self-signed one).
#[derive(Debug)]
pub(super) struct Fixed(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A self-signed certificate for `names` (IP addresses and DNS names).
pub(super) fn self_signed(names: &[String]) -> Result<CertifiedKey, TlsError> {
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let signing = provider().key_provider.load_private_key(key).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok(CertifiedKey::new(vec![made.cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate");
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, made.cert.pem()).expect("write cert");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cleanroom-tls-{label}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn every_bad_pair_names_its_setting() {
        let dir = temp_dir("bad");
        let (cert, key) = write_pair(&dir, "a", &["localhost"]);
        let (_, other_key) = write_pair(&dir, "b", &["localhost"]);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").expect("write");
        let missing = dir.join("missing.pem");

        assert!(read(&cert, &key).is_ok());
        let line = |e: TlsError| e.to_string();
        assert!(line(read(&missing, &key).unwrap_err()).starts_with("CLEANROOM_TLS_CERT"));
        assert!(line(read(&garbage, &key).unwrap_err()).starts_with("CLEANROOM_TLS_CERT"));
        assert!(line(read(&cert, &missing).unwrap_err()).starts_with("CLEANROOM_TLS_KEY"));
        assert!(line(read(&cert, &garbage).unwrap_err()).starts_with("CLEANROOM_TLS_KEY"));
        assert!(matches!(read(&cert, &other_key), Err(TlsError::Mismatch)));
        // The key file given as the certificate: no certificate in it.
        assert!(line(read(&key, &key).unwrap_err()).starts_with("CLEANROOM_TLS_CERT"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn changed_files_are_served_and_a_broken_change_keeps_the_old_certificate() {
        let dir = temp_dir("reload");
        let (cert, key) = write_pair(&dir, "live", &["localhost"]);
        let files = FileCert::load(&cert, &key).expect("load");
        let first = files.leaf();
        assert!(!files.reload_if_changed(), "nothing changed");

        // Half a renewal: a new certificate with the old key.
        let (new_cert, new_key) = write_pair(&dir, "next", &["localhost"]);
        std::fs::copy(&new_cert, &cert).expect("copy");
        assert!(!files.reload_if_changed());
        assert_eq!(files.leaf(), first, "a mismatched pair is not served");

        std::fs::copy(&new_key, &key).expect("copy");
        assert!(files.reload_if_changed());
        assert_ne!(files.leaf(), first);
        assert_eq!(files.leaf().as_ref(), read(&new_cert, &new_key).expect("read").cert[0].as_ref());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_self_signed_certificate_names_every_address() {
        let made = self_signed(&["10.1.2.3".into(), "localhost".into()]).expect("made");
        let (_, cert) = x509_parser::parse_x509_certificate(made.cert[0].as_ref()).expect("parse");
        let sans = cert.subject_alternative_name().expect("ext").expect("san").value.general_names.len();
        assert_eq!(sans, 2);
        assert_eq!(fingerprint(made.cert[0].as_ref()).len(), 32 * 3 - 1);
        assert!(spki_sha256_base64(made.cert[0].as_ref()).is_some_and(|s| s.len() == 44));
    }
}
