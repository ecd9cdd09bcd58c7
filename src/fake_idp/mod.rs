//! A faithful fake of Microsoft's identity platform (Entra ID's v2.0 endpoints) for the
//! integration tests, the end-to-end tests and the demo. It answers like
//! `login.microsoftonline.com` on the wire (o365-facts.md sections 3–5): the same success and
//! error JSON, HTTP statuses, AADSTS codes and token claims; and it can be told to fail in each
//! way the exporter must classify. It runs in-process ([`FakeIdp::builder`]) or as its own
//! process (`o365-fake-idp`, configured by [`FileConfig`]), always over plain HTTP on loopback
//! (the exporter accepts `http://` token endpoints on loopback only).
//!
//! # Endpoints
//! - `POST /{tenant}/oauth2/v2.0/token`: `client_credentials` (client secret, or certificate
//!   assertion RS256/PS256 with `x5t`/`x5t#S256`, `aud` = the token URL, `iss` = `sub` =
//!   client id, `exp` in the future), `refresh_token` (rotates on every use; old tokens stay
//!   valid, or die in strict mode with AADSTS70000), `authorization_code` (PKCE S256/plain,
//!   single use: AADSTS54005, `redirect_uri` must match: AADSTS500112) and
//!   `urn:ietf:params:oauth:grant-type:device_code` (`authorization_pending`, `slow_down` when
//!   polled faster than `interval` (+5 s each time, RFC 8628), `expired_token` after
//!   `expires_in`, `authorization_declined`, tokens once approved).
//! - `GET /{tenant}/oauth2/v2.0/authorize`: approves at once as the signed-in user and
//!   redirects 302 to `redirect_uri?code=…&state=…` (`response_mode=form_post` gives the
//!   auto-posting form). Unknown client or unregistered redirect URI: an HTML error page (400).
//! - `POST /{tenant}/oauth2/v2.0/devicecode`: `user_code`, `device_code`, `verification_uri`,
//!   `expires_in`, `interval`, `message` (no `verification_uri_complete`, as Entra).
//! - `GET /v1.0/…`: a fake Microsoft Graph for the exporter's Graph checks (applications'
//!   credentials, users' assigned plans, service health with paging), answering only tokens this
//!   fake issued, with a Graph audience and the API's application role ([`FakeGraph`], set with
//!   [`FakeIdpBuilder::graph`] or [`FakeIdpHandle::update_graph`]; `graph.rs`).
//! - `/_fake/…`: the control API (loopback peers only), JSON in and out:
//!   `GET health`, `GET stats`, `POST stats/reset`, `POST inject` ([`Injection`] JSON),
//!   `GET injections`, `POST clear`, `POST user {"upn"}`, `GET device` (pending user codes),
//!   `POST device/approve {"user_code"?}`, `POST device/decline {"user_code"?}`,
//!   `POST strict {"on"}`, `POST loop_detection {"on"}`, `POST clock {"offset_secs"}`,
//!   `POST revoke {"upn"}`. The same operations are methods of [`FakeIdpHandle`].
//!
//! `{tenant}` is the tenant id, an alias, or `common`/`organizations`/`consumers`
//! (client credentials refuse `common`/`consumers`, AADSTS9001023); anything else answers
//! AADSTS90002.
//!
//! # Tokens
//! Access tokens are JWTs with header exactly `{"typ":"JWT","alg":"HS256"}` (Dovecot's oauth2
//! passdb wants `typ` = `JWT`), HMAC-signed with the secret given at start (the mail stack's
//! `DIR/idp/hs256.secret`), or RS256 with a PKCS#8 key and a `kid`. Claims are a Microsoft v1
//! token's: `aud` (the requested resource, or the configured fixed audience), `iss` =
//! `https://sts.windows.net/{tid}/`, `iat`/`nbf` (five minutes back, as Microsoft), `exp`,
//! `appid`, `appidacr`, `tid`, `sub`, `oid`, `ver` `1.0`; delegated tokens add `scp`, `upn`,
//! `unique_name`, `name`, `amr`; app-only tokens add `roles` (when granted) and `idtyp` `app`.
//! Refresh tokens, codes and device codes are opaque random strings.
//!
//! **The test stack's kindness:** Microsoft's app-only tokens carry no `upn`, but the test
//! Dovecot needs `upn` to equal the XOAUTH2 user. An app registered with
//! [`App::app_token_upn`] gets that `upn` in its app-only tokens. Nothing else deviates from
//! Microsoft on purpose.
//!
//! # Failures
//! [`Failure`] presets answer the AADSTS code, `error` and status of facts section 4, plus
//! hostile answers (malformed JSON, an HTML sign-in page with 200, a huge body, a hang);
//! [`Injection`] scopes one to a client id and/or grant, for `n` requests or until cleared.
//! Loop detection (off by default): the 15th identical token request within 5 minutes
//! answers `invalid_grant` AADSTS50196. [`Stats`] count requests by endpoint, grant, client
//! and outcome.
//!
//! # Time
//! The fake's clock is wall time at start plus tokio's elapsed time plus an offset
//! ([`FakeIdpHandle::set_clock_offset`]), so paused-clock tests move device-code intervals and
//! expiries with `tokio::time::advance`, and a negative offset mints tokens a real server sees
//! as expired. While serving, the fake arms no tokio timers (only shutdown is bounded by one), so
//! it is safe under a paused clock.
//!
//! # In-process use
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use o365_mail_exporter::fake_idp::{App, FakeIdp, Failure, Injection, User};
//! let idp = FakeIdp::builder()
//!     .app(App::new("11111111-2222-3333-4444-555555555555").secret("s3cret").roles(["IMAP.AccessAsApp"]))
//!     .user(User::new("alice@example.test"))
//!     .start()
//!     .await?;
//! let url = idp.token_url(); // http://127.0.0.1:PORT/{tenant}/oauth2/v2.0/token
//! idp.inject(Injection::once(Failure::Throttled { retry_after_secs: 60 }));
//! assert_eq!(idp.stats().token_requests(), 0);
//! idp.shutdown().await;
//! # let _ = url; Ok(()) }
//! ```
//!
//! Secrets (client secrets, tokens, the signing key) are never logged; the request log names
//! grant, client id and outcome only.

mod aad;
mod clock;
mod config;
mod failure;
mod grant;
mod graph;
mod ids;
mod jwt;
mod registry;
mod server;
mod state;
mod stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::FileConfig;
pub use failure::{Failure, Injection};
pub use graph::{
    FakeGraph, GraphApi, GraphApplication, GraphFailure, GraphIssue, GraphKey, GraphPlan,
    GraphSecret, GraphService, GraphUser,
};
pub use registry::{App, AppSecret, User};
pub use stats::{StatRow, Stats};

use state::{Settings, State};

/// The tenant id used unless one is configured: the one the mail stack's Dovecot trusts by
/// default (`ISSUER=https://sts.windows.net/00000000-0000-0000-0000-00000000beef/`).
pub const DEFAULT_TENANT: &str = "00000000-0000-0000-0000-00000000beef";

/// Errors of starting or controlling the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeIdpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bad signing key: {0}")]
    Key(String),
    #[error("bad fake IdP configuration: {0}")]
    Config(String),
    #[error("no user {0} is registered")]
    UnknownUser(String),
    #[error("no pending device code (unknown, expired or already decided)")]
    NoPendingDeviceCode,
    #[error("no user is signed in and none is registered")]
    NoSignedInUser,
}

/// An HTTP answer decided under the state lock, written after it is released.
#[derive(Debug)]
pub(crate) enum Reply {
    Http {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Accept and never answer (until shutdown).
    Hang,
}

impl Reply {
    pub(crate) fn ok(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply::Http {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Reply {
        Reply::Http {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    pub(crate) fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::Http {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: v.to_string().into_bytes(),
        }
    }

    /// Token-endpoint answers carry Entra's no-cache headers.
    pub(crate) fn json_no_store(status: u16, body: Vec<u8>) -> Reply {
        Reply::Http {
            status,
            content_type: "application/json; charset=utf-8",
            headers: vec![
                ("cache-control", "no-store, no-cache".to_string()),
                ("pragma", "no-cache".to_string()),
            ],
            body,
        }
    }

    pub(crate) fn aad(e: &aad::AadError, now: i64, correlation: Option<&str>) -> Reply {
        let mut r = Reply::json_no_store(e.status, e.to_json(now, correlation));
        if let (Some(secs), Reply::Http { headers, .. }) = (e.retry_after, &mut r) {
            headers.push(("retry-after", secs.to_string()));
        }
        r
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters to a test fake; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Entry point: `FakeIdp::builder()`.
pub struct FakeIdp;

impl FakeIdp {
    pub fn builder() -> FakeIdpBuilder {
        FakeIdpBuilder {
            settings: Settings::default(),
            hs256_secret: None,
            rs256: None,
            apps: Vec::new(),
            users: Vec::new(),
            signed_in: None,
            strict_refresh: false,
            refresh_grace: false,
            loop_detection: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            graph: FakeGraph::default(),
        }
    }
}

/// Registration and settings of a fake; [`FakeIdpBuilder::start`] runs it.
pub struct FakeIdpBuilder {
    settings: Settings,
    hs256_secret: Option<Vec<u8>>,
    rs256: Option<(Vec<u8>, String)>,
    apps: Vec<App>,
    users: Vec<User>,
    signed_in: Option<String>,
    strict_refresh: bool,
    refresh_grace: bool,
    loop_detection: bool,
    listen: SocketAddr,
    graph: FakeGraph,
}

impl FakeIdpBuilder {
    /// The tenant id (GUID) put in `tid` and `iss`. Default [`DEFAULT_TENANT`].
    pub fn tenant(mut self, id: &str) -> Self {
        self.settings.tenant_id = id.to_string();
        self
    }

    /// Another name for the tenant in URLs (e.g. `contoso.onmicrosoft.com`).
    pub fn tenant_alias(mut self, alias: &str) -> Self {
        self.settings.tenant_aliases.push(alias.to_string());
        self
    }

    /// Fixed `aud` for every access token, instead of the requested scope's resource.
    pub fn audience(mut self, aud: &str) -> Self {
        self.settings.audience = Some(aud.to_string());
        self
    }

    /// `expires_in` of access tokens. Default 3599 s.
    pub fn access_token_lifetime(mut self, d: Duration) -> Self {
        self.settings.access_token_lifetime = d;
        self
    }

    /// Refresh-token inactivity limit (AADSTS700082 after it). Default 90 days.
    pub fn refresh_token_max_inactive(mut self, d: Duration) -> Self {
        self.settings.refresh_token_max_inactive = d;
        self
    }

    /// Authorization-code lifetime. Default 10 minutes.
    pub fn auth_code_lifetime(mut self, d: Duration) -> Self {
        self.settings.auth_code_lifetime = d;
        self
    }

    /// Device-code polling `interval` (whole seconds on the wire). Default 5 s.
    pub fn device_code_interval(mut self, d: Duration) -> Self {
        self.settings.device_code_interval = d;
        self
    }

    /// Device-code `expires_in`. Default 900 s.
    pub fn device_code_lifetime(mut self, d: Duration) -> Self {
        self.settings.device_code_lifetime = d;
        self
    }

    /// `verification_uri` of device codes. Default `https://microsoft.com/devicelogin`.
    pub fn verification_uri(mut self, uri: &str) -> Self {
        self.settings.verification_uri = uri.to_string();
        self
    }

    /// The HS256 signing secret (raw bytes). Default: 32 random bytes.
    pub fn hs256_secret(mut self, secret: &[u8]) -> Self {
        self.hs256_secret = Some(secret.to_vec());
        self
    }

    /// The HS256 secret as the mail stack stores it (`DIR/idp/hs256.secret`: base64).
    pub fn hs256_secret_base64(self, b64: &str) -> Result<Self, FakeIdpError> {
        use base64::Engine as _;
        let cleaned: String = b64.split_whitespace().collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(cleaned)
            .map_err(|e| FakeIdpError::Key(format!("HS256 secret is not base64: {e}")))?;
        Ok(self.hs256_secret(&raw))
    }

    /// Sign with RS256 (PKCS#8 DER private key) and put `kid` in the header, instead of HS256.
    pub fn rs256_key(mut self, pkcs8_der: &[u8], kid: &str) -> Self {
        self.rs256 = Some((pkcs8_der.to_vec(), kid.to_string()));
        self
    }

    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// The user the fake's "browser" is signed in as (default: the first registered user).
    pub fn signed_in_user(mut self, upn: &str) -> Self {
        self.signed_in = Some(upn.to_string());
        self
    }

    /// Strict refresh-token rotation: a used refresh token answers AADSTS70000.
    pub fn strict_refresh(mut self, on: bool) -> Self {
        self.strict_refresh = on;
        self
    }

    /// Strict rotation's lost-answer grace (only with [`Self::strict_refresh`]): a used refresh
    /// token stays redeemable until the token it was rotated into has been used, and redeeming
    /// it again retires that unused successor. No client can persist a token it has not
    /// received yet, so without the grace a crash between the server's rotation and the
    /// client's save kills any chain; with it, AADSTS70000 (or 9002313 for a retired token)
    /// means the client used a token it had not persisted, or went back to an older one.
    pub fn refresh_grace(mut self, on: bool) -> Self {
        self.refresh_grace = on;
        self
    }

    /// Microsoft's loop detection (AADSTS50196 from the 15th identical request in 5 min).
    pub fn loop_detection(mut self, on: bool) -> Self {
        self.loop_detection = on;
        self
    }

    /// Loop detection limits (default 15 requests, 5 minutes).
    pub fn loop_limits(mut self, threshold: usize, window: Duration) -> Self {
        self.settings.loop_threshold = threshold;
        self.settings.loop_window = window;
        self
    }

    /// What the fake Microsoft Graph (`/v1.0/…` on the same port) serves. Default: nothing.
    pub fn graph(mut self, graph: FakeGraph) -> Self {
        self.graph = graph;
        self
    }

    /// Listen address. Default `127.0.0.1:0` (a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Binds, spawns the server on the current tokio runtime and returns its handle.
    pub async fn start(self) -> Result<FakeIdpHandle, FakeIdpError> {
        if let Some(upn) = &self.signed_in {
            if !self.users.iter().any(|u| u.upn.eq_ignore_ascii_case(upn)) {
                return Err(FakeIdpError::UnknownUser(upn.clone()));
            }
        }
        let signer = match &self.rs256 {
            Some((der, kid)) => jwt::Signer::rs256(der, kid).map_err(FakeIdpError::Key)?,
            None => {
                let secret = self
                    .hs256_secret
                    .clone()
                    .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
                jwt::Signer::hs256(&secret)
            }
        };
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| FakeIdpError::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| FakeIdpError::Bind {
            addr: self.listen,
            source,
        })?;
        let mut state = State::new(self.settings, signer, self.apps, self.users, self.signed_in);
        state.strict_refresh = self.strict_refresh;
        state.refresh_grace = self.refresh_grace;
        state.loop_detection = self.loop_detection;
        state.graph = self.graph;
        state.base_url = format!("http://{addr}");
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            cancel: cancel.clone(),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(server::serve(
            listener,
            shared.clone(),
            cancel.clone(),
            tasks.clone(),
        ));
        Ok(FakeIdpHandle {
            shared,
            addr,
            cancel,
            tasks,
        })
    }
}

/// A running fake. Dropping it stops the server (without waiting); [`Self::shutdown`] waits.
pub struct FakeIdpHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for FakeIdpHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl FakeIdpHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (the exporter's `authority` override).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configured tenant id.
    pub fn tenant(&self) -> String {
        self.shared.lock().settings.tenant_id.clone()
    }

    /// `https://sts.windows.net/{tenant}/`: the `iss` of access tokens (the mail stack's ISSUER).
    pub fn issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant())
    }

    /// Token URL of the configured tenant.
    pub fn token_url(&self) -> String {
        self.token_url_for(&self.tenant())
    }

    /// Token URL for any tenant segment (`common`, an alias, an unknown one…).
    pub fn token_url_for(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    pub fn authorize_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/authorize",
            self.base_url(),
            self.tenant()
        )
    }

    pub fn device_code_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/devicecode",
            self.base_url(),
            self.tenant()
        )
    }

    /// Base URL of the fake Microsoft Graph (the exporter's `graph.graph_url`): the same
    /// `http://127.0.0.1:PORT`.
    pub fn graph_url(&self) -> String {
        self.base_url()
    }

    /// Changes what the fake Graph serves (applications, users, service health, failures).
    pub fn update_graph(&self, f: impl FnOnce(&mut FakeGraph)) {
        f(&mut self.shared.lock().graph);
    }

    /// Adds a failure injection (checked in order, before normal processing).
    pub fn inject(&self, injection: Injection) {
        self.shared.lock().inject(injection);
    }

    /// Removes every injection.
    pub fn clear_injections(&self) {
        self.shared.lock().clear_injections();
    }

    /// Signs the fake's "browser" in as `upn` (registering an unknown user): later
    /// authorizations and device-code approvals are this user's.
    pub fn set_signed_in_user(&self, upn: &str) -> User {
        self.shared.lock().set_signed_in_user(upn)
    }

    /// Strict refresh-token rotation on/off.
    pub fn set_strict_refresh(&self, on: bool) {
        self.shared.lock().strict_refresh = on;
    }

    /// Loop detection on/off.
    pub fn set_loop_detection(&self, on: bool) {
        self.shared.lock().loop_detection = on;
    }

    /// Approves a pending device code as the signed-in user (`None`: the newest pending one).
    /// Returns its user code.
    pub fn approve_device_code(&self, user_code: Option<&str>) -> Result<String, FakeIdpError> {
        self.shared.lock().approve_device(user_code)
    }

    /// Declines a pending device code (`None`: the newest pending one).
    pub fn decline_device_code(&self, user_code: Option<&str>) -> Result<String, FakeIdpError> {
        self.shared.lock().decline_device(user_code)
    }

    /// Shifts the fake's clock by `secs` (negative: into the past) from real/tokio time.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.lock().clock.set_offset(secs);
    }

    /// Revokes the refresh tokens issued so far to `upn` (next use: AADSTS50173).
    pub fn revoke_user_tokens(&self, upn: &str) -> Result<(), FakeIdpError> {
        self.shared.lock().revoke_user(upn)
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().counters.reset();
    }

    /// Stops accepting, ends hanging answers, and waits (at most 5 s) for the tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        // Bounded: a client that keeps a connection busy cannot hold a test forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}
