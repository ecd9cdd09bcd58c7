//! `--web.config.file`: TLS and basic authentication for every route, in the exporter-toolkit
//! file format Prometheus users already know:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_ca_file: clients-ca.crt        # optional: mTLS
//!   client_auth_type: RequireAndVerifyClientCert
//!   min_version: TLS12                     # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                 # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! bcrypt is slow by design (tens of milliseconds per check), so a successful check is cached
//! under a SHA-256 of the presented credentials; a wrong password is never cached.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
}

/// The validated web configuration.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: HashMap<String, String>,
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WebConfigError {
    pub path: String,
    pub message: String,
}

impl WebConfig {
    /// Load and validate `path`; relative file names resolve against its directory.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |message: String| WebConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig {
                tls_server_config: None,
                basic_auth_users: HashMap::new(),
            }
        } else {
            serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |s: &str| -> PathBuf {
            let p = Path::new(s);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for (user, hash) in &raw.basic_auth_users {
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
                return Err(err(format!("basic_auth_users.{user}: not a bcrypt hash")));
            }
        }
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(server_config(&t, &resolve).map_err(err)?)),
        };
        Ok(WebConfig {
            tls,
            users: raw.basic_auth_users,
            verified: Arc::default(),
        })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value grants access.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(creds) = header.and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        }) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(creds.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, decoded.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(d.as_ref());
            k
        };
        if self
            .verified
            .lock()
            .map(|s| s.contains(&key))
            .unwrap_or(false)
        {
            return true;
        }
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        if ok {
            if let Ok(mut s) = self.verified.lock() {
                if s.len() < 1024 {
                    s.insert(key);
                }
            }
        }
        ok
    }
}

fn server_config(
    t: &RawTls,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<rustls::ServerConfig, String> {
    let cert_path = resolve(&t.cert_file);
    let key_path = resolve(&t.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| format!("tls_server_config.cert_file: {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file: {} holds no certificate",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("tls_server_config.key_file: {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(v) => {
            return Err(format!(
                "tls_server_config.min_version: {v:?} is not TLS12 or TLS13"
            ))
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match (t.client_auth_type.as_deref(), &t.client_ca_file) {
        (None | Some("NoClientCert"), None) => builder.with_no_client_auth(),
        (Some("RequireAndVerifyClientCert") | None, Some(ca)) | (Some("VerifyClientCertIfGiven"), Some(ca)) => {
            let ca_path = resolve(ca);
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
                .map_err(|e| format!("tls_server_config.client_ca_file: {}: {e}", ca_path.display()))?
                .filter_map(Result::ok)
                .collect();
            roots.add_parsable_certificates(cas);
            let mut vb = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if t.client_auth_type.as_deref() == Some("VerifyClientCertIfGiven") {
                vb = vb.allow_unauthenticated();
            }
            let verifier = vb.build().map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        (Some(other), _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} needs client_ca_file (supported: NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not match: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_bcrypt_and_caches_success() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let mut users = HashMap::new();
        users.insert("prom".to_string(), hash);
        let wc = WebConfig {
            tls: None,
            users,
            verified: Arc::default(),
        };
        let h = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(!wc.authorized(None));
        assert!(!wc.authorized(Some(&h("prom", "wrong"))));
        assert!(!wc.authorized(Some(&h("other", "s3cret"))));
        assert!(!wc.authorized(Some("Basic !!!")));
        assert!(wc.authorized(Some(&h("prom", "s3cret"))));
        assert!(wc.authorized(Some(&h("prom", "s3cret"))));
        assert_eq!(wc.verified.lock().map(|s| s.len()).unwrap_or(0), 1);
    }

    #[test]
    fn unknown_fields_and_bad_hashes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "basic_auth_users:\n  a: plaintext\n").expect("write");
        assert!(WebConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a bcrypt hash"));
        std::fs::write(&p, "tls_config: {}\n").expect("write");
        assert!(WebConfig::load(&p).is_err());
    }
}
