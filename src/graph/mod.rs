//! Microsoft Graph checks: what an app registration and a tenant tell about the mail
//! integration before the mail protocols notice (o365-facts.md section 8).
//!
//! - `app_credentials`: the application's client secrets and certificates with their end dates
//!   (`GET /v1.0/applications(appId='…')`), so a secret is replaced weeks before Microsoft answers
//!   AADSTS7000222; the one the credential is configured with (matched by the secret's `hint`,
//!   its first three characters, or the certificate's thumbprint) feeds
//!   `o365_client_secret_expiry_timestamp_seconds` in place of `secret_expires`.
//! - `licenses`: whether each mailbox's user holds an enabled Exchange plan
//!   (`GET /v1.0/users/{upn}?$select=assignedLicenses,assignedPlans`); shared mailboxes are
//!   usually unlicensed and skipped (`licensed: false`).
//! - `service_health`: Exchange Online's status and open incidents and advisories
//!   (`/v1.0/admin/serviceAnnouncement/healthOverviews` and `…/issues`, paginated).
//!
//! Shape and why:
//! - A Graph token has its own scope, so each credential with a `graph:` section gets a second
//!   [`TokenSource`] built from a derived credential named `<credential>/graph`, on the same token
//!   machinery and cache rules but cached separately from the Exchange token. It is asked for a
//!   token only when a check runs (hourly by default), and survives reloads while unchanged.
//! - Each (credential, check) runs in its own task on its own schedule, so a 403 or a 429 on one
//!   check never delays or fails another. Throttling honours `Retry-After`; transient failures
//!   retry after at most 5 minutes, and a reload keeps the schedule (no burst of requests).
//! - Results go to [`GraphStore`] (in [`State`]); `/metrics` and the status page only read it.
//!   Reasons are a closed set ([`GraphReason`]); issue titles, key names and hints never become
//!   labels.
//! - [`client`] never sends the token to another origin than the configured Graph URL, even
//!   when a next link says so.

pub mod check;
pub mod client;
pub mod model;
pub mod status;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use store::{GraphStore, RunOutcome};

use crate::config::{ClientAuth, Config, Credential, GraphCheck, GraphSettings};
use crate::oauth::http::HttpClient;
use crate::oauth::{TokenSource, TokenStore};
use crate::state::State;

/// Why a Graph check ended as it did; `as_str` is the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GraphReason {
    Ok,
    Pending,
    /// 403: the app lacks the application permission (or its admin consent).
    PermissionDenied,
    /// 429: Graph throttles the app; retried after `Retry-After`.
    Throttled,
    /// 400/404 from an API the cloud does not offer (service health in national clouds).
    NotAvailable,
    /// The application, a mailbox's user or the configured service does not exist.
    NotFound,
    /// No Graph token (see the detail: the token request's own reason).
    TokenUnavailable,
    /// 401: Graph refused the token (wrong scope or cloud).
    TokenRejected,
    Network,
    Timeout,
    /// 5xx.
    ServerError,
    /// An answer that is not the documented JSON, too large, or leads elsewhere.
    BadResponse,
    /// The check could not be set up (e.g. an unreadable CA file).
    ConfigError,
}

impl GraphReason {
    pub const ALL: [GraphReason; 13] = [
        GraphReason::Ok,
        GraphReason::Pending,
        GraphReason::PermissionDenied,
        GraphReason::Throttled,
        GraphReason::NotAvailable,
        GraphReason::NotFound,
        GraphReason::TokenUnavailable,
        GraphReason::TokenRejected,
        GraphReason::Network,
        GraphReason::Timeout,
        GraphReason::ServerError,
        GraphReason::BadResponse,
        GraphReason::ConfigError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GraphReason::Ok => "ok",
            GraphReason::Pending => "pending",
            GraphReason::PermissionDenied => "permission_denied",
            GraphReason::Throttled => "throttled",
            GraphReason::NotAvailable => "not_available",
            GraphReason::NotFound => "not_found",
            GraphReason::TokenUnavailable => "token_unavailable",
            GraphReason::TokenRejected => "token_rejected",
            GraphReason::Network => "network",
            GraphReason::Timeout => "timeout",
            GraphReason::ServerError => "server_error",
            GraphReason::BadResponse => "bad_response",
            GraphReason::ConfigError => "config_error",
        }
    }

    /// Failures that may pass by themselves: retried sooner than the interval.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            GraphReason::Throttled
                | GraphReason::Network
                | GraphReason::Timeout
                | GraphReason::ServerError
                | GraphReason::TokenUnavailable
        )
    }
}

impl fmt::Display for GraphReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest wait after a transient failure (when the interval is longer).
pub const TRANSIENT_RETRY: Duration = Duration::from_secs(300);

/// The credential the Graph token source uses: the configured one with the Graph scope and its
/// own name, so its cache and its log lines are its own.
pub fn graph_credential(cred: &Credential, g: &GraphSettings) -> Credential {
    let mut c = cred.clone();
    c.name = format!("{}/graph", cred.name);
    c.scopes = vec![g.scope.clone()];
    c.protocols = Vec::new();
    c.expected_identity = None;
    c.timeout = g.timeout;
    c
}

/// Identifies a derived credential, its secret included (as a digest).
fn fingerprint(c: &Credential) -> String {
    use aws_lc_rs::digest::{digest, SHA256};
    let secret = match &c.client_auth {
        ClientAuth::None => Vec::new(),
        ClientAuth::Secret(s) => digest(&SHA256, s.expose_secret().as_bytes())
            .as_ref()
            .to_vec(),
        ClientAuth::Certificate { key_der, .. } => digest(&SHA256, &key_der.0).as_ref().to_vec(),
    };
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    // the proxy password too: Debug hides it
    let proxy = c
        .proxy
        .as_ref()
        .map(|p| p.credentials_digest())
        .unwrap_or_default();
    format!("{c:?}|{hex}|{proxy}")
}

/// Runs the Graph checks of the running configuration; owned by the scheduler.
pub struct Runner {
    state: Arc<State>,
    /// Graph token sources by credential name, with their fingerprint.
    sources: Mutex<BTreeMap<String, (String, Arc<TokenSource>)>>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(state: Arc<State>) -> Runner {
        Runner {
            state,
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// Set up the Graph checks of `cfg` and spawn one task per (credential, check) on `tasks`,
    /// stopped by `cancel` (the scheduler's generation). Unchanged token sources are kept.
    pub fn start(
        &self,
        cfg: &Config,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
        sem: &Arc<Semaphore>,
    ) {
        self.state.graph.reconcile(&cfg.graph);
        for c in &cfg.credentials {
            let reads = cfg
                .graph
                .iter()
                .any(|g| g.runs(GraphCheck::AppCredentials) && g.app_targets.contains(&c.name));
            if !reads {
                let configured = c.secret_expires;
                self.state.update_token(&c.name, |r| {
                    if r.secret_expires_source == "graph" {
                        r.secret_expires = configured;
                        r.secret_expires_source = if configured.is_some() { "config" } else { "" };
                    }
                });
            }
        }
        let store = Arc::new(TokenStore::new(&cfg.state_dir));
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for g in &cfg.graph {
            let Some(cred) = cfg.credential(&g.credential) else {
                continue;
            };
            let derived = graph_credential(cred, g);
            let fp = fingerprint(&derived);
            let source = match sources.remove(&g.credential) {
                Some((f, s)) if f == fp => Ok(s),
                _ => TokenSource::new(Arc::new(derived), store.clone(), self.state.clone())
                    .map(Arc::new),
            };
            let http = HttpClient::new(cred.ca_file.as_deref(), g.timeout, cred.proxy.as_ref());
            let (source, http) = match (source, http) {
                (Ok(s), Ok(h)) => (s, h),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(credential = %g.credential, error = %e, "cannot set up the Graph checks");
                    for check in &g.checks {
                        let out = check_outcome(GraphReason::ConfigError, e.to_string());
                        self.state
                            .graph
                            .publish(&g.credential, *check, g.interval, out, None);
                    }
                    continue;
                }
            };
            next.insert(g.credential.clone(), (fp, source.clone()));
            let ctx = Arc::new(check::Ctx {
                settings: g.clone(),
                targets: targets(cfg, g),
                source,
                http,
                state: self.state.clone(),
            });
            for check in &g.checks {
                tasks.spawn(check_loop(
                    ctx.clone(),
                    *check,
                    cfg.defaults.jitter,
                    sem.clone(),
                    cancel.clone(),
                ));
            }
        }
        *sources = next;
    }
}

/// The credentials whose app registrations `g` reads.
fn targets(cfg: &Config, g: &GraphSettings) -> Vec<Arc<Credential>> {
    g.app_targets
        .iter()
        .filter_map(|n| cfg.credential(n))
        .map(|c| Arc::new(c.clone()))
        .collect()
}

fn check_outcome(reason: GraphReason, detail: String) -> RunOutcome {
    RunOutcome {
        reason,
        detail,
        requests: 0,
        duration: Duration::ZERO,
        retry_after: None,
        facts: store::Facts::None,
    }
}

/// When to run next after `out`: the interval; after a transient failure at most
/// [`TRANSIENT_RETRY`]; never before `Retry-After`.
pub fn next_wait(interval: Duration, out: &RunOutcome) -> Duration {
    let base = if out.reason.is_transient() {
        interval.min(TRANSIENT_RETRY)
    } else {
        interval
    };
    base.max(out.retry_after.unwrap_or(Duration::ZERO))
}

/// Run one check of one credential until `cancel`: first after a random part of `jitter` (or
/// when the last run before a reload says it is due), then on its schedule.
async fn check_loop(
    ctx: Arc<check::Ctx>,
    check: GraphCheck,
    jitter: Duration,
    sem: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let interval = ctx.settings.interval;
    let cred = ctx.settings.credential.clone();
    let mut first = crate::schedule::random_upto(jitter.min(interval));
    if let Some(last) = ctx.state.graph.last_check(&cred, check) {
        if let Ok(left) = (last + interval).duration_since(SystemTime::now()) {
            first = first.max(left);
        }
    }
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(first) => {}
    }
    loop {
        let started = Instant::now();
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = sem.acquire() => match p { Ok(p) => p, Err(_) => return },
        };
        let out = tokio::select! {
            _ = cancel.cancelled() => return,
            o = check::run(&ctx, check) => o,
        };
        drop(permit);
        let wait = next_wait(interval, &out) + crate::schedule::random_upto(jitter);
        let next_wall = SystemTime::now() + wait;
        if out.reason == GraphReason::Ok {
            tracing::debug!(credential = %cred, check = check.as_str(), requests = out.requests, "graph check ok");
        } else {
            tracing::info!(
                credential = %cred,
                check = check.as_str(),
                reason = out.reason.as_str(),
                retry_in = wait.as_secs(),
                detail = %out.detail,
                "graph check failed"
            );
        }
        ctx.state
            .graph
            .publish(&cred, check, interval, out, Some(next_wall));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(started + wait) => {}
        }
    }
}

/// Run every configured Graph check once, in order, and publish the results (the `check`
/// command and tests). Token sources are built for this run only.
pub async fn run_once(cfg: &Config, state: &Arc<State>) {
    state.graph.reconcile(&cfg.graph);
    let store = Arc::new(TokenStore::new(&cfg.state_dir));
    for g in &cfg.graph {
        let Some(cred) = cfg.credential(&g.credential) else {
            continue;
        };
        let source = TokenSource::new(
            Arc::new(graph_credential(cred, g)),
            store.clone(),
            state.clone(),
        );
        let http = HttpClient::new(cred.ca_file.as_deref(), g.timeout, cred.proxy.as_ref());
        let (source, http) = match (source, http) {
            (Ok(s), Ok(h)) => (Arc::new(s), h),
            (Err(e), _) | (_, Err(e)) => {
                for check in &g.checks {
                    let out = check_outcome(GraphReason::ConfigError, e.to_string());
                    state
                        .graph
                        .publish(&g.credential, *check, g.interval, out, None);
                }
                continue;
            }
        };
        let ctx = check::Ctx {
            settings: g.clone(),
            targets: targets(cfg, g),
            source,
            http,
            state: state.clone(),
        };
        for check in &g.checks {
            let out = check::run(&ctx, *check).await;
            state
                .graph
                .publish(&g.credential, *check, g.interval, out, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_snake_case_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in GraphReason::ALL {
            let s = r.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(seen.insert(s), "{s} twice");
        }
    }

    #[test]
    fn docs_graph_md_explains_every_reason() {
        let doc = include_str!("../../docs/graph.md");
        for r in GraphReason::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", r.as_str())),
                "docs/graph.md has no row for reason {r}"
            );
        }
    }

    #[test]
    fn throttling_waits_for_retry_after_and_transient_failures_retry_sooner() {
        let hour = Duration::from_secs(3600);
        let mut o = check_outcome(GraphReason::Ok, String::new());
        assert_eq!(next_wait(hour, &o), hour);
        o.reason = GraphReason::Network;
        assert_eq!(next_wait(hour, &o), TRANSIENT_RETRY);
        o.reason = GraphReason::Throttled;
        o.retry_after = Some(Duration::from_secs(900));
        assert_eq!(next_wait(hour, &o), Duration::from_secs(900));
        // a short interval still waits for Retry-After
        assert_eq!(
            next_wait(Duration::from_secs(10), &o),
            Duration::from_secs(900)
        );
        o.reason = GraphReason::PermissionDenied;
        o.retry_after = None;
        assert_eq!(next_wait(hour, &o), hour);
    }
}
