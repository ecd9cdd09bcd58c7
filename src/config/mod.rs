//! Configuration: YAML file (or the embedded default) -> [`Config`].
//!
//! Loading is two steps, as in ripgrep: `raw` holds what was written, `validate` turns it into
//! resolved values and collects *every* problem with its line and field path. Only a fully valid
//! [`Config`] leaves this module; start-up, `--config.check` and hot reload all come through
//! [`load_file`] / [`load_str`], so they can never disagree.

pub mod cloud;
pub mod lint;
pub mod locate;
pub mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use cloud::Cloud;

use crate::probe::Protocol;

/// The configuration used when no `--config.file` is given: the cloud preset's four public
/// endpoints, no credentials, no mailboxes.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.yaml");
/// Name shown for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (file path or [`EMBEDDED_NAME`]).
    pub source: String,
    pub cloud: &'static Cloud,
    pub defaults: Defaults,
    /// Directory for the token store (rotated refresh tokens).
    pub state_dir: PathBuf,
    pub endpoints: Vec<Endpoint>,
    pub credentials: Vec<Credential>,
    pub mailboxes: Vec<Mailbox>,
    pub product: Option<Product>,
    /// Microsoft Graph checks, one entry per credential with a `graph:` section.
    pub graph: Vec<GraphSettings>,
    /// The outbound HTTP proxy (`proxy:`), when one is configured and (for `from_env`) set.
    pub proxy: Option<Arc<ProxySettings>>,
    /// `proxy.from_env: true` was configured (so "no proxy" may mean an unset variable).
    pub proxy_from_env: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    /// Each run starts up to this much later than its interval says, at random, so checks of
    /// many exporters (one per ECE server) do not hit Microsoft in lock-step.
    pub jitter: Duration,
    pub login_interval: Duration,
    pub login_timeout: Duration,
    pub token_interval: Duration,
    pub max_concurrent_checks: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            jitter: Duration::from_secs(5),
            login_interval: Duration::from_secs(300),
            login_timeout: Duration::from_secs(30),
            token_interval: Duration::from_secs(60),
            max_concurrent_checks: 16,
        }
    }
}

/// How a connection reaches TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, POP3S 995, HTTPS 443).
    Implicit,
    StarttlsSmtp,
    StarttlsImap,
    StarttlsPop3,
    /// Plain TCP only.
    None,
}

impl TlsMode {
    pub const ALL: [TlsMode; 5] = [
        TlsMode::Implicit,
        TlsMode::StarttlsSmtp,
        TlsMode::StarttlsImap,
        TlsMode::StarttlsPop3,
        TlsMode::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::StarttlsSmtp => "starttls-smtp",
            TlsMode::StarttlsImap => "starttls-imap",
            TlsMode::StarttlsPop3 => "starttls-pop3",
            TlsMode::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<TlsMode> {
        TlsMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn is_starttls(self) -> bool {
        matches!(
            self,
            TlsMode::StarttlsSmtp | TlsMode::StarttlsImap | TlsMode::StarttlsPop3
        )
    }
}

/// A host:port to check for reachability and TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Name sent in SNI and checked against the certificate (default: `host`).
    pub server_name: String,
    /// Trust only this CA bundle instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Checked through this proxy (HTTP CONNECT, then TLS end to end); `None`: directly.
    /// Resolved at load from `via_proxy`, the port, the TLS mode and `proxy.no_proxy`.
    pub proxy: Option<Arc<ProxySettings>>,
}

/// Where the outbound HTTP proxy's address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyOrigin {
    /// `proxy.url`.
    Config,
    /// `proxy.from_env: true` and this environment variable.
    Env(&'static str),
}

/// The outbound HTTP proxy (`proxy:`). Token and Graph requests go through it (except to
/// `no_proxy` hosts), and so do the HTTPS endpoint checks that follow it; IMAP, POP3 and SMTP
/// never do (ECE cannot send them through an HTTP proxy either).
///
/// The password is a secret: `Debug` and [`ProxySettings::describe`] never show it.
#[derive(Clone)]
pub struct ProxySettings {
    /// `http://host:port/`, without credentials (safe to show).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Hosts reached directly, one entry each in curl's `NO_PROXY` syntax (`example.com` matches
    /// it and its subdomains, `10.0.0.0/8`, `::1`, `*`).
    pub no_proxy: Vec<String>,
    pub origin: ProxyOrigin,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("no_proxy", &self.no_proxy)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Equal when every setting is, the password included (a changed password is a changed
/// configuration on reload).
impl PartialEq for ProxySettings {
    fn eq(&self, o: &Self) -> bool {
        self.url == o.url
            && self.host == o.host
            && self.port == o.port
            && self.username == o.username
            && self.password.as_ref().map(|p| p.expose_secret())
                == o.password.as_ref().map(|p| p.expose_secret())
            && self.no_proxy == o.no_proxy
            && self.origin == o.origin
    }
}

impl ProxySettings {
    /// The `no_proxy` list as reqwest and curl take it.
    pub fn no_proxy_string(&self) -> String {
        self.no_proxy.join(",")
    }

    /// Whether `host` (a name, an IPv4 address or a bracketed or bare IPv6 address) is reached
    /// directly because `no_proxy` matches it. Uses the very matcher reqwest applies to the
    /// token and Graph requests, so the endpoint checks and the HTTP clients always agree.
    pub fn bypasses(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = if bare.contains(':') {
            format!("[{bare}]")
        } else {
            bare.to_string()
        };
        let Ok(uri) = format!("https://{authority}/").parse::<http::Uri>() else {
            return false;
        };
        let m = hyper_util::client::proxy::matcher::Matcher::builder()
            .all(self.url.clone())
            .no(self.no_proxy_string())
            .build();
        m.intercept(&uri).is_none()
    }

    /// A digest of the credentials, for the change fingerprints of token sources and Graph
    /// clients (`Debug` hides the password, so a changed password alone would otherwise keep the
    /// old client on reload). Never shown.
    pub fn credentials_digest(&self) -> String {
        use aws_lc_rs::digest::{digest, SHA256};
        let raw = format!(
            "{}\u{0}{}",
            self.username.as_deref().unwrap_or(""),
            self.password
                .as_ref()
                .map(|p| p.expose_secret())
                .unwrap_or("")
        );
        digest(&SHA256, raw.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether the proxy itself listens on this machine.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// `Proxy-Authorization` value (`Basic base64(user:password)`), when credentials are set.
    pub fn basic_auth(&self) -> Option<SecretString> {
        use base64::Engine;
        let (user, pass) = (self.username.as_ref()?, self.password.as_ref()?);
        let raw = format!("{user}:{}", pass.expose_secret());
        Some(SecretString::from(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )))
    }

    /// One line for `--config.check`, `check` and the logs: the address, the user, whether a
    /// password is set (never the password), `no_proxy` and where it came from.
    pub fn describe(&self) -> String {
        let mut s = self.url.trim_end_matches('/').to_string();
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => s.push_str(&format!(", user {u} with a password")),
            (Some(u), None) => s.push_str(&format!(", user {u}")),
            _ => s.push_str(", no credentials"),
        }
        if !self.no_proxy.is_empty() {
            s.push_str(&format!(", no_proxy {}", self.no_proxy.join(",")));
        }
        if let ProxyOrigin::Env(var) = self.origin {
            s.push_str(&format!(" (from {var})"));
        }
        s
    }
}

/// `localhost`, `127.0.0.0/8` or `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A mail server for one protocol of the mailbox logins.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub server_name: String,
    pub ca_file: Option<PathBuf>,
}

/// How a credential obtains access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantKind {
    /// App-only: client secret or certificate, no user, no refresh token.
    ClientCredentials,
    /// Delegated: a user signed in once with `login`; the rotated refresh token is kept in the
    /// token store.
    RefreshToken,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::ClientCredentials => "client_credentials",
            GrantKind::RefreshToken => "refresh_token",
        }
    }
}

/// How the client authenticates itself to the token endpoint.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// No client credential: a public client (device code, delegated).
    None,
    Secret(SecretString),
    /// Certificate: a signed client assertion (o365-facts.md 3.2).
    Certificate {
        /// DER of the certificate (for the `x5t`/`x5t#S256` thumbprints).
        cert_der: Vec<u8>,
        /// PKCS#8 DER of the private key.
        key_der: SecretBytes,
    },
}

/// Secret bytes that never print.
#[derive(Clone)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// An OAuth2 client registration and the way to get tokens for it.
#[derive(Clone, Debug)]
pub struct Credential {
    pub name: String,
    pub tenant: String,
    pub client_id: String,
    pub grant: GrantKind,
    pub client_auth: ClientAuth,
    /// `https://login.microsoftonline.com` or the override.
    pub authority: String,
    /// `{authority}/{tenant}/oauth2/v2.0/token` unless overridden.
    pub token_url: String,
    pub authorize_url: String,
    pub device_code_url: String,
    pub scopes: Vec<String>,
    pub expected_identity: Option<String>,
    /// Configured client-secret expiry (Unix seconds), from `secret_expires`.
    pub secret_expires: Option<i64>,
    pub refresh_ahead: Duration,
    pub redirect_uri: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Trust only this CA for the token endpoint (tests, TLS-intercepting proxies).
    pub ca_file: Option<PathBuf>,
    /// Protocols of the mailboxes that use this credential (for scope checks).
    pub protocols: Vec<Protocol>,
    /// The outbound HTTP proxy of the token (and Graph) requests; `no_proxy` hosts bypass it.
    pub proxy: Option<Arc<ProxySettings>>,
}

/// SASL mechanism for the mailbox logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    XOAuth2,
    OAuthBearer,
}

/// A mailbox to log in to, per protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct Mailbox {
    /// Short label used in metrics (never the address).
    pub name: String,
    pub address: String,
    pub credential: String,
    pub protocols: Vec<Protocol>,
    /// Delegate account for shared mailboxes.
    pub login_as: Option<String>,
    pub mechanism: Mechanism,
    /// SMTP: also send `MAIL FROM:<address>` + `RSET` (checks the sender is accepted; no
    /// message is ever sent).
    pub smtp_mail_from: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// Shared (`Arc`) with every other mailbox on the same servers: a configuration lists the
    /// servers once and at 1,000 mailboxes a copy each was ~0.6 MB.
    pub imap: Arc<Server>,
    pub pop3: Arc<Server>,
    pub smtp: Arc<Server>,
}

impl Mailbox {
    pub fn server(&self, p: Protocol) -> &Server {
        match p {
            Protocol::Imap => &self.imap,
            Protocol::Pop3 => &self.pop3,
            Protocol::Smtp => &self.smtp,
        }
    }

    /// The XOAUTH2 `user=` for `protocol` (o365-facts.md section 6): IMAP/POP use the mailbox
    /// address even when a delegate's token is used; SMTP authenticates as the delegate and puts
    /// the shared address in `MAIL FROM`.
    pub fn sasl_user(&self, p: Protocol) -> &str {
        match (p, &self.login_as) {
            (Protocol::Smtp, Some(delegate)) => delegate,
            _ => &self.address,
        }
    }
}

/// One of the Microsoft Graph checks (o365-facts.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GraphCheck {
    /// Expiry of the app registration's client secrets and certificates.
    AppCredentials,
    /// Whether each mailbox's user holds an enabled Exchange plan.
    Licenses,
    /// Exchange Online's status and open incidents/advisories.
    ServiceHealth,
}

impl GraphCheck {
    pub const ALL: [GraphCheck; 3] = [
        GraphCheck::AppCredentials,
        GraphCheck::Licenses,
        GraphCheck::ServiceHealth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GraphCheck::AppCredentials => "app_credentials",
            GraphCheck::Licenses => "licenses",
            GraphCheck::ServiceHealth => "service_health",
        }
    }

    pub fn parse(s: &str) -> Option<GraphCheck> {
        GraphCheck::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A mailbox whose user's licence a Graph `licenses` check reads.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenceTarget {
    /// The mailbox's name (the metric label).
    pub mailbox: String,
    /// Looked up as the user's userPrincipalName.
    pub address: String,
}

/// The Graph checks of one app-only credential (`credentials[].graph`).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSettings {
    /// The credential whose app registration and token are used.
    pub credential: String,
    pub checks: Vec<GraphCheck>,
    pub interval: Duration,
    pub timeout: Duration,
    /// `https://graph.microsoft.com` (the cloud's Graph host) or the override, no trailing `/`.
    pub url: String,
    /// Scope of the Graph token, `https://<graph host>/.default` unless overridden.
    pub scope: String,
    /// The service-health service to watch, `Exchange Online` by default.
    pub service: String,
    /// Mailboxes whose licence this credential checks (each mailbox is checked by one credential).
    pub licence_targets: Vec<LicenceTarget>,
    /// Credentials whose app registration `app_credentials` reads: this one, and those of the
    /// same tenant without a Graph section of their own that runs it (each read by one).
    pub app_targets: Vec<String>,
}

impl GraphSettings {
    pub fn runs(&self, check: GraphCheck) -> bool {
        self.checks.contains(&check)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    pub external_url: String,
}

impl Config {
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.name == name)
    }

    /// The proxy line of `--config.check` and `check`: None when no proxy was configured.
    pub fn proxy_summary(&self) -> Option<String> {
        match &self.proxy {
            Some(p) => {
                let via: Vec<&str> = self
                    .endpoints
                    .iter()
                    .filter(|e| e.proxy.is_some())
                    .map(|e| e.name.as_str())
                    .collect();
                let endpoints = if via.is_empty() {
                    "no endpoint checks".to_string()
                } else {
                    format!("endpoint checks {}", via.join(", "))
                };
                Some(format!(
                    "proxy {} for token and Graph requests and {endpoints}",
                    p.describe()
                ))
            }
            None if self.proxy_from_env => Some(
                "no proxy: proxy.from_env is set but HTTPS_PROXY and https_proxy are not".into(),
            ),
            None => None,
        }
    }
}

/// One configuration problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// Field path, e.g. `endpoints[2].port`.
    pub path: String,
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "{}", self.source_name)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.col {
                    write!(f, ":{col}")?;
                }
            }
            if p.path.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Read and validate a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source_name: name.clone(),
        problems: vec![Problem {
            line: None,
            col: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let ctx = validate::Context {
        source: name.clone(),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        file_private: file_is_private(path),
        env: None,
    };
    validate::load(&text, &ctx)
}

/// Validate configuration text; `name` is used in messages, relative paths resolve against
/// `base_dir`. Inline secrets are refused (there is no file whose permissions protect them).
pub fn load_str(text: &str, name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let ctx = validate::Context {
        source: name.to_string(),
        base_dir: base_dir.to_path_buf(),
        file_private: false,
        env: None,
    };
    validate::load(text, &ctx)
}

/// The embedded default configuration.
pub fn embedded_default() -> Config {
    load_str(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("."))
        .expect("invariant: the embedded default config is valid (tested)")
}

#[cfg(unix)]
fn file_is_private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 == 0)
        .unwrap_or(false)
}

/// Windows has no mode bits; an inline secret there is refused (use `*_file` or `*_env`).
#[cfg(not(unix))]
fn file_is_private(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_like_curl_and_reqwest() {
        let p = ProxySettings {
            url: "http://proxy.example.com:3128/".into(),
            host: "proxy.example.com".into(),
            port: 3128,
            username: None,
            password: None,
            no_proxy: vec![
                "corp.example".into(),
                ".internal.example".into(),
                "10.0.0.0/8".into(),
                "::1".into(),
            ],
            origin: ProxyOrigin::Config,
        };
        for (host, direct) in [
            ("corp.example", true),
            ("sso.corp.example", true),
            ("notcorp.example", false),
            ("a.internal.example", true),
            ("10.1.2.3", true),
            ("11.1.2.3", false),
            ("::1", true),
            ("[::1]", true),
            ("login.microsoftonline.com", false),
        ] {
            assert_eq!(p.bypasses(host), direct, "{host}");
        }
        let all = ProxySettings {
            no_proxy: vec!["*".into()],
            ..p.clone()
        };
        assert!(all.bypasses("login.microsoftonline.com"));
        assert!(!p.is_loopback());
        assert_eq!(p.basic_auth().map(|_| ()), None);
    }

    #[test]
    fn embedded_default_has_the_four_public_endpoints() {
        let c = embedded_default();
        let got: Vec<(String, String, u16, TlsMode)> = c
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.host.clone(), e.port, e.tls))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "login".into(),
                    "login.microsoftonline.com".into(),
                    443,
                    TlsMode::Implicit
                ),
                (
                    "imap".into(),
                    "outlook.office365.com".into(),
                    993,
                    TlsMode::Implicit
                ),
                (
                    "pop3".into(),
                    "outlook.office365.com".into(),
                    995,
                    TlsMode::Implicit
                ),
                (
                    "smtp".into(),
                    "smtp.office365.com".into(),
                    587,
                    TlsMode::StarttlsSmtp
                ),
            ]
        );
        assert!(c.credentials.is_empty() && c.mailboxes.is_empty());
    }
}
