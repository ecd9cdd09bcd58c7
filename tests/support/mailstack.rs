//! The project's real mail stack (scripts/mailstack: Dovecot IMAPS + POP3S, Postfix submission
//! with STARTTLS) for login tests, one private instance per test.
//!
//! ```ignore
//! let stack = MailStack::start().await;          // free loopback ports, temp dir under /tmp
//! stack.add_mail("alice@example.test", 2);       // INBOX now holds 2 messages
//! let idp = stack.fake_idp()                      // tenant, issuer, audience and HS256 key of the stack
//!     .app(App::new(CLIENT).secret("s").app_token_upn("alice@example.test"))
//!     .start().await.expect("fake idp");
//! // ... log in to 127.0.0.1:stack.imaps_port with TLS trusting stack.ca_file ...
//! // Drop runs `stop.sh --fast` and removes the directory (MAILSTACK_KEEP=1 keeps it).
//! ```
//!
//! Needs root and the Debian packages of `scripts/install-deps.sh`; without them `start`
//! panics saying so. Dovecot accepts a token when: header `typ` is `JWT`, the signature checks
//! with `hs256_secret_file` (HS256, no kid) or `rs256_key_file` (RS256, kid `rs256_kid`), `iss`
//! is `issuer`, `aud` contains `audience`, `exp` is not past, and `upn` equals the login name
//! (both lowercased). A failed login takes about 0.5 s (Dovecot's fixed flush timer): run bad
//! cases concurrently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use o365_mail_exporter::fake_idp::{FakeIdp, FakeIdpBuilder};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Where start.sh keeps the generated CA, server certificate and token keys between stacks
/// (saves ~1 s of RSA key generation per test).
const KEY_CACHE: &str = "/tmp/o365-mailstack-key-cache";

pub struct MailStack {
    /// The stack directory (etc/, log/, mail/, keys/, idp/, tls/, stack.env).
    pub dir: PathBuf,
    pub imaps_port: u16,
    pub pop3s_port: u16,
    pub submission_port: u16,
    /// CA that signed the servers' certificate (SAN `localhost`, `127.0.0.1`).
    pub ca_file: PathBuf,
    /// Base64 HS256 secret Dovecot trusts (tokens without `kid`).
    pub hs256_secret_file: PathBuf,
    /// PKCS#8 PEM RSA key whose public half Dovecot trusts under `rs256_kid`.
    pub rs256_key_file: PathBuf,
    pub rs256_kid: String,
    pub tenant: String,
    /// `https://sts.windows.net/{tenant}/`, the only accepted `iss`.
    pub issuer: String,
    /// The value `aud` must contain.
    pub audience: String,
    /// All of `stack.env`.
    pub env: HashMap<String, String>,
    tmp: Option<tempfile::TempDir>,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl MailStack {
    /// Starts a stack on free loopback ports in a fresh directory under /tmp. Panics with the
    /// script's output when the stack cannot start (not root, packages missing, …).
    pub async fn start() -> MailStack {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "the mail stack tests need root (Postfix) and scripts/install-deps.sh's packages"
        );
        let mut last_err = String::new();
        // Ports are picked free, then handed to start.sh; another test can grab one in between,
        // which start.sh reports ("already in use"): try again with new ports.
        for _ in 0..3 {
            let tmp = tempfile::Builder::new()
                .prefix("o365-mailstack-")
                .tempdir_in("/tmp")
                .expect("temp dir under /tmp");
            let (i, p, s) = (free_port(), free_port(), free_port());
            if i == p || p == s || i == s {
                continue;
            }
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                tokio::process::Command::new(scripts().join("start.sh"))
                    .arg(tmp.path())
                    .args([i.to_string(), p.to_string(), s.to_string()])
                    .env("MAILSTACK_KEY_CACHE", KEY_CACHE)
                    .stdin(std::process::Stdio::null())
                    .output(),
            )
            .await
            .expect("start.sh finishes within 60 s")
            .expect("run start.sh");
            if !out.status.success() {
                last_err = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let get = |k: &str| {
                env.get(k)
                    .cloned()
                    .unwrap_or_else(|| panic!("stack.env lacks {k}"))
            };
            return MailStack {
                dir: tmp.path().to_path_buf(),
                imaps_port: i,
                pop3s_port: p,
                submission_port: s,
                ca_file: get("CA_FILE").into(),
                hs256_secret_file: get("HS256_SECRET_FILE").into(),
                rs256_key_file: get("RS256_KEY_FILE").into(),
                rs256_kid: get("RS256_KID"),
                tenant: get("TENANT"),
                issuer: get("ISSUER"),
                audience: get("AUDIENCE"),
                env,
                tmp: Some(tmp),
            };
        }
        panic!("the mail stack did not start:\n{last_err}");
    }

    /// A fake IdP builder that mints tokens this stack accepts: the stack's tenant (so `iss`
    /// matches), its HS256 secret, and its audience as the fixed `aud` (Exchange Online accepts
    /// several audiences, the test Dovecot exactly one; docs/testing.md).
    pub fn fake_idp(&self) -> FakeIdpBuilder {
        FakeIdp::builder()
            .tenant(&self.tenant)
            .audience(&self.audience)
            .hs256_secret_file(&self.hs256_secret_file)
            .expect("the stack's HS256 secret")
    }

    /// Delivers `n` messages to `user`'s INBOX (scripts/mailstack/add-mail.sh); returns the
    /// mailbox's message count afterwards.
    pub fn add_mail(&self, user: &str, n: u32) -> u32 {
        let out = std::process::Command::new(scripts().join("add-mail.sh"))
            .arg(&self.dir)
            .arg(user)
            .arg(n.to_string())
            .output()
            .expect("run add-mail.sh");
        assert!(
            out.status.success(),
            "add-mail.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("add-mail.sh prints the count")
    }

    /// Dovecot's log (login failures with reasons), for assertion messages.
    pub fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/dovecot.log")).unwrap_or_default()
    }

    /// A TLS client trusting only the stack's CA (TLS 1.2+, aws-lc-rs).
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca_file).expect("CA file") {
            roots.add(c.expect("CA certificate")).expect("add CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Connects to `port` on 127.0.0.1 and completes a verified TLS handshake (server name
    /// `localhost`).
    pub async fn connect_tls(&self, port: u16) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        self.tls_connector()
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake with the stack")
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let _ = std::process::Command::new(scripts().join("stop.sh"))
            .arg("--fast")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if std::env::var_os("MAILSTACK_KEEP").is_some() {
            if let Some(t) = self.tmp.take() {
                eprintln!("mail stack directory kept: {}", t.keep().display());
            }
        }
    }
}

/// The base64 SASL XOAUTH2 initial response (o365-facts.md 2.1).
pub fn xoauth2(user: &str, token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// Line-oriented access to a TLS session, every read bounded in time (10 s) and size.
pub struct Lines {
    inner: BufReader<TlsStream<TcpStream>>,
}

impl Lines {
    pub fn new(s: TlsStream<TcpStream>) -> Lines {
        Lines {
            inner: BufReader::new(s),
        }
    }

    pub async fn send(&mut self, line: &str) {
        let s = self.inner.get_mut();
        s.write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        s.flush().await.expect("flush");
    }

    pub async fn recv(&mut self) -> String {
        let mut buf = Vec::new();
        let mut limited = (&mut self.inner).take(64 * 1024);
        tokio::time::timeout(Duration::from_secs(10), limited.read_until(b'\n', &mut buf))
            .await
            .expect("a server line within 10 s")
            .expect("read");
        String::from_utf8_lossy(&buf).trim_end().to_string()
    }
}
