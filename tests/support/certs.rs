//! Throw-away certificates for loopback TLS tests: one trusted CA per test, leaf certificates
//! for `localhost` / `127.0.0.1` / `::1` in the shapes a probe has to tell apart (valid, expired,
//! not yet valid, wrong name, signed by a CA the client does not trust), and rustls server
//! configurations built from them.
//!
//! Validity dates are whole seconds from "now", so a test can compare the `notAfter` the probe
//! reports with the one generated here exactly (X.509 times carry seconds, no fractions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const DAY: u64 = 24 * 3600;

/// The kind of leaf certificate to issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// Valid now, for DNS:localhost, IP:127.0.0.1 and IP:::1, signed by the trusted CA.
    Valid,
    /// notAfter one day in the past.
    Expired,
    /// notBefore one day in the future.
    NotYetValid,
    /// Valid now, but only for DNS:wrong.example.
    WrongName,
    /// Valid now and for the right names, but signed by a CA the client does not trust.
    UnknownCa,
}

/// A certificate authority that can sign leaves.
pub struct Ca {
    pub der: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let now = now_secs();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, now - DAY, now + 365 * DAY);
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issue a leaf for `names` (DNS names or IP addresses) valid from `not_before` to
    /// `not_after` (Unix seconds).
    pub fn issue(&self, names: &[&str], not_before: u64, not_after: u64) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("valid DNS name")),
            })
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after);
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            ca_der: self.der.clone(),
            ca_pem: self.pem.clone(),
            not_before: not_before as i64,
            not_after: not_after as i64,
        }
    }
}

/// A leaf certificate, its key, and the CA that signed it.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// Unix seconds, exactly as encoded in the certificate.
    pub not_before: i64,
    pub not_after: i64,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Leaf then issuing CA, as a server sends them.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone(), self.ca_der.clone()]
    }

    /// Write `STEM.pem` (leaf + CA) and `STEM.key` into `dir` (for real servers such as Dovecot).
    pub fn write_pem(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, format!("{}{}", self.pem, self.ca_pem)).expect("write leaf PEM");
        std::fs::write(&key, &self.key_pem).expect("write key PEM");
        (cert, key)
    }
}

/// Which TLS versions a test server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// TLS 1.3 and 1.2 (rustls' default): a client supporting both ends on 1.3.
    Default,
    /// TLS 1.2 only, as some older middleboxes and servers still are.
    Tls12Only,
}

/// A trusted CA written to a temporary directory, ready to issue leaves.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    /// PEM file holding only the trusted CA: give it to `TlsClient::new(Some(..))`.
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("o365-mail-exporter test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).expect("write CA PEM");
        Pki { dir, ca, ca_file }
    }

    /// Issue a leaf of `kind`. Validity windows are whole seconds around now.
    pub fn leaf(&self, kind: LeafKind) -> Leaf {
        let now = now_secs();
        let good = ["localhost", "127.0.0.1", "::1"];
        match kind {
            LeafKind::Valid => self.ca.issue(&good, now - DAY, now + 30 * DAY),
            LeafKind::Expired => self.ca.issue(&good, now - 30 * DAY, now - DAY),
            LeafKind::NotYetValid => self.ca.issue(&good, now + DAY, now + 30 * DAY),
            LeafKind::WrongName => self.ca.issue(&["wrong.example"], now - DAY, now + 30 * DAY),
            LeafKind::UnknownCa => Ca::new("some other CA").issue(&good, now - DAY, now + 30 * DAY),
        }
    }
}

/// A rustls server configuration presenting `leaf` (with its CA) for `versions`.
pub fn server_config(leaf: &Leaf, versions: Versions) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let v: &[&'static rustls::SupportedProtocolVersion] = match versions {
        Versions::Default => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12Only => &[&rustls::version::TLS12],
    };
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(v)
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.key())
        .expect("certificate and key match");
    Arc::new(cfg)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Set the validity window in Unix seconds. rcgen's dates are `time::OffsetDateTime`; building
/// them from its own epoch keeps the `time` crate out of our dependencies.
fn set_validity(params: &mut CertificateParams, not_before: u64, not_after: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
}
