//! TLS client side of every probe: TLS 1.2+ only, certificate facts captured even when
//! verification fails, failures mapped to bounded reasons.
//!
//! Verification is never skipped: a probe must not hand a bearer token to a server it could not
//! verify. To still report *why* (an expired certificate, a TLS-intercepting proxy's CA, a wrong
//! name) the verifier wraps rustls' WebPKI verifier and records the leaf certificate and the
//! verdict before passing the verdict on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::time::Instant;

use super::line::BoxStream;
use super::{Dir, Phase, ProbeError, Reason, Recorder, TlsFacts};

/// A reusable TLS client configuration for one trust setting (built-in roots or a CA file).
#[derive(Clone, Debug)]
pub struct TlsClient {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable certificate")]
    Empty { path: PathBuf },
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(String),
}

/// The Mozilla root set (webpki-root-certs), parsed once per process and shared by every TLS
/// client that trusts it (probes and token requests alike): it is compiled in, so it never
/// changes, and each parsed copy costs ~50 kB (50 credentials made that megabytes).
pub fn builtin_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned(),
            );
            Arc::new(roots)
        })
        .clone()
}

impl TlsClient {
    /// Trust the Mozilla root set (webpki-root-certs), or only the certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<TlsClient, TlsSetupError> {
        let roots = match ca_file {
            None => builtin_roots(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let data = std::fs::read(path).map_err(|source| TlsSetupError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
                    .filter_map(Result::ok)
                    .collect();
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsSetupError::Empty {
                        path: path.to_path_buf(),
                    });
                }
                Arc::new(roots)
            }
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
        Ok(TlsClient { verifier, provider })
    }

    /// A rustls client config whose verifier records what it saw into `seen`.
    pub fn config(&self, seen: Arc<Mutex<Option<TlsFacts>>>) -> Arc<rustls::ClientConfig> {
        let verifier = Arc::new(Recording {
            inner: self.verifier.clone(),
            seen,
        });
        let cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("invariant: aws-lc-rs supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Arc::new(cfg)
    }

    /// Run the TLS handshake over `stream` before `deadline`; records the `tls` phase and the
    /// certificate facts in `rec.tls` (also on failure).
    pub async fn handshake(
        &self,
        rec: &mut Recorder,
        stream: BoxStream,
        server_name: &str,
        deadline: Instant,
    ) -> Result<BoxStream, ProbeError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            ProbeError::new(
                Phase::Tls,
                Reason::TlsHandshake,
                format!("{server_name:?} is not a valid TLS server name"),
            )
        })?;
        let seen = Arc::new(Mutex::new(None));
        let connector = tokio_rustls::TlsConnector::from(self.config(seen.clone()));
        let t = Instant::now();
        let result = tokio::time::timeout_at(deadline, connector.connect(name, stream)).await;
        rec.record(Phase::Tls, t.elapsed());
        let mut facts = seen
            .lock()
            .map(|mut g| g.take())
            .unwrap_or(None)
            .unwrap_or_default();
        match result {
            Err(_) => {
                rec.tls = Some(facts);
                Err(ProbeError::new(
                    Phase::Tls,
                    Reason::Timeout,
                    "TLS handshake did not finish before the deadline",
                ))
            }
            Ok(Err(e)) => {
                let (reason, detail) = classify(&e);
                if facts.verify_error.is_none() && !facts.verified && facts.cert_not_after.is_some()
                {
                    facts.verify_error = Some(detail.clone());
                }
                rec.tls = Some(facts);
                Err(ProbeError::new(Phase::Tls, reason, detail))
            }
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                facts.version = match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                    Some(v) => format!("{v:?}"),
                    None => String::new(),
                };
                facts.cipher = conn
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .unwrap_or("")
                    .to_string();
                rec.note(
                    Dir::Note,
                    &format!(
                        "TLS {} {} certificate {} (issuer {})",
                        facts.version, facts.cipher, facts.cert_subject, facts.cert_issuer
                    ),
                );
                rec.tls = Some(facts);
                Ok(Box::new(tls))
            }
        }
    }
}

/// Map a handshake error to a reason and a sentence.
fn classify(e: &std::io::Error) -> (Reason, String) {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        let reason = match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => Reason::ConnectionClosed,
            _ => Reason::TlsHandshake,
        };
        return (reason, format!("TLS handshake failed: {e}"));
    };
    let reason = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Reason::CertExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Reason::CertNotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Reason::CertNameMismatch
            }
            _ => Reason::CertUntrusted,
        },
        rustls::Error::PeerIncompatible(_) => Reason::TlsVersion,
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion) => {
            Reason::TlsVersion
        }
        _ => Reason::TlsHandshake,
    };
    (reason, format!("TLS handshake failed: {err}"))
}

#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<TlsFacts>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut facts = cert_facts(end_entity.as_ref());
        facts.verified = result.is_ok();
        facts.verify_error = result.as_ref().err().map(|e| e.to_string());
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some(facts);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Validity and names of a DER certificate; empty facts when it does not parse.
pub fn cert_facts(der: &[u8]) -> TlsFacts {
    let mut f = TlsFacts::default();
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        f.cert_not_after = Some(cert.validity().not_after.timestamp());
        f.cert_not_before = Some(cert.validity().not_before.timestamp());
        f.cert_subject = cert.subject().to_string();
        f.cert_issuer = cert.issuer().to_string();
    }
    f
}
