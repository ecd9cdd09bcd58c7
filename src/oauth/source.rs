//! [`TokenSource`]: the access token of one credential, kept fresh in memory; and [`Tokens`], the
//! set of sources of the running configuration.
//!
//! The rules, and why:
//! - The access token lives in memory only and is refreshed `refresh_ahead` before it expires
//!   (at the latest halfway through its life), so probes never wait for a token.
//! - Requests are rare by construction: Microsoft's loop detection answers AADSTS50196 after
//!   about 15 identical requests in 5 minutes and throttles clients without a token cache
//!   (o365-facts.md 9). A source sends at most one request per `min_spacing` (30 s), one per
//!   token lifetime when healthy, and backs off on failures: transient ones (429 with
//!   `Retry-After`, 5xx, network, timeout, a garbled answer) exponentially from 30 s to 15 min
//!   with jitter, ones that need a human (a wrong secret, a revoked grant) every 15 min.
//! - The last good access token stays in use until it expires, whatever the failures.
//! - Delegated credentials read the refresh token from the [`TokenStore`] at each refresh (so a
//!   `login` run while the exporter runs is picked up) and persist the rotated one before the
//!   new access token is handed out. If the save fails, the new refresh token is kept in memory,
//!   used for the next refresh and saved again on every tick; the old file stays intact.
//! - Every attempt updates the credential's [`TokenRecord`](crate::state::TokenRecord).
//!
//! Scheduling uses tokio's clock (so tests can run an hour in milliseconds); wall-clock times
//! are only reported.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::assertion::Alg;
use super::error::TokenReason;
use super::grant::{self, Failure, Fetched, Grant};
use super::http::HttpClient;
use super::inspect::{self, Inspection};
use super::store::{StoredToken, TokenStore};
use super::OauthError;
use crate::config::{ClientAuth, Credential, GrantKind};
use crate::state::State;

/// Timing of a source; [`Tuning::default`] is what production uses.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// First delay after a transient failure; doubles per failure in a row.
    pub transient_base: Duration,
    pub transient_cap: Duration,
    /// Delay after a failure only a human can fix.
    pub permanent_delay: Duration,
    /// No two requests of one source are closer than this.
    pub min_spacing: Duration,
    /// A token with less than this left is not handed out (a probe must finish with it).
    pub expiry_margin: Duration,
    pub assertion_alg: Alg,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            transient_base: Duration::from_secs(30),
            transient_cap: Duration::from_secs(15 * 60),
            permanent_delay: Duration::from_secs(15 * 60),
            min_spacing: Duration::from_secs(30),
            expiry_margin: Duration::from_secs(60),
            assertion_alg: Alg::default(),
        }
    }
}

impl Tuning {
    /// The delay before the next attempt after `failures` failures in a row ending in `reason`.
    /// Never shorter than the server's `Retry-After` or `min_spacing`.
    pub fn delay(
        &self,
        reason: TokenReason,
        failures: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        let base = if reason.is_transient() {
            let exp = failures.saturating_sub(1).min(20);
            self.transient_base
                .saturating_mul(1u32 << exp)
                .min(self.transient_cap)
        } else {
            self.permanent_delay
        };
        // jitter downwards only, so the cap holds and sources started together drift apart
        let jittered = base.mul_f64(0.8 + 0.2 * rand::random::<f64>());
        jittered
            .max(retry_after.unwrap_or(Duration::ZERO))
            .max(self.min_spacing)
    }
}

/// An access token ready for use.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: SecretString,
    pub expires_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why there is no access token right now, in one secret-free sentence.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenUnavailable {
    pub reason: TokenReason,
    pub message: String,
}

struct Cached {
    secret: SecretString,
    expires_at: SystemTime,
    /// Handed out until then.
    usable_until: Instant,
    refresh_at: Instant,
}

struct Status {
    token: Option<Cached>,
    /// No request before then (spacing and backoff).
    next_attempt: Instant,
    failures_in_row: u32,
    last_failure: Option<(TokenReason, String)>,
    /// A rotated refresh token the store could not save yet.
    pending_rt: Option<SecretString>,
    /// Identity seen in the last token (kept in the token file).
    identity: Option<String>,
    /// `saved_at` of the token file last read or written, to notice a new `login`.
    store_seen: Option<i64>,
    last_request: Option<Instant>,
}

/// The token lifecycle of one credential.
pub struct TokenSource {
    cred: Arc<Credential>,
    store: Arc<TokenStore>,
    state: Arc<State>,
    http: HttpClient,
    tuning: Tuning,
    status: Mutex<Status>,
    /// Serialises requests: concurrent callers wait for the one request in flight.
    fetch: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.cred.name)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    crate::state::unix(SystemTime::now()) as i64
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

impl TokenSource {
    pub fn new(
        cred: Arc<Credential>,
        store: Arc<TokenStore>,
        state: Arc<State>,
    ) -> Result<TokenSource, OauthError> {
        TokenSource::with_tuning(cred, store, state, Tuning::default())
    }

    pub fn with_tuning(
        cred: Arc<Credential>,
        store: Arc<TokenStore>,
        state: Arc<State>,
        tuning: Tuning,
    ) -> Result<TokenSource, OauthError> {
        let http = HttpClient::new(cred.ca_file.as_deref(), cred.timeout, cred.proxy.as_ref())?;
        grant::client(&cred).map_err(|f| OauthError::Credential {
            credential: cred.name.clone(),
            message: f.message,
        })?;
        if cred.grant == GrantKind::RefreshToken {
            store.path(&cred.name)?;
        }
        Ok(TokenSource {
            cred,
            store,
            state,
            http,
            tuning,
            status: Mutex::new(Status {
                token: None,
                next_attempt: Instant::now(),
                failures_in_row: 0,
                last_failure: None,
                pending_rt: None,
                identity: None,
                store_seen: None,
                last_request: None,
            }),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    pub fn credential(&self) -> &Arc<Credential> {
        &self.cred
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self) -> Option<AccessToken> {
        let s = self.status();
        s.token
            .as_ref()
            .filter(|t| Instant::now() < t.usable_until)
            .map(|t| AccessToken {
                secret: t.secret.clone(),
                expires_at: t.expires_at,
            })
    }

    fn unavailable(&self) -> TokenUnavailable {
        let s = self.status();
        let wait = s.next_attempt.saturating_duration_since(Instant::now());
        match &s.last_failure {
            Some((reason, msg)) => TokenUnavailable {
                reason: *reason,
                message: format!(
                    "no access token for credential {}: {msg} (next attempt in {})",
                    self.cred.name,
                    human(wait)
                ),
            },
            None => TokenUnavailable {
                reason: TokenReason::Other,
                message: format!(
                    "no access token for credential {} yet (next attempt in {})",
                    self.cred.name,
                    human(wait)
                ),
            },
        }
    }

    /// The cached token; or, when there is none and no backoff is running, the result of one
    /// request.
    pub async fn access_token(&self) -> Result<AccessToken, TokenUnavailable> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _one = self.fetch.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        if Instant::now() < self.status().next_attempt {
            return Err(self.unavailable());
        }
        self.attempt().await;
        self.cached().ok_or_else(|| self.unavailable())
    }

    /// Keep the token fresh until `cancel` fires: acquire at start, refresh ahead of expiry,
    /// back off on failures, retry saving a rotated refresh token.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            if self.due() {
                let _one = self.fetch.lock().await;
                if self.due() {
                    self.attempt().await;
                }
            }
            self.retry_pending_save().await;
            self.notice_new_login().await;
            let wake = self.next_wake();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Whether a request should be sent now.
    fn due(&self) -> bool {
        let s = self.status();
        let now = Instant::now();
        now >= s.next_attempt && s.token.as_ref().is_none_or(|t| now >= t.refresh_at)
    }

    fn next_wake(&self) -> Instant {
        let s = self.status();
        let target = match &s.token {
            Some(t) => t.refresh_at.max(s.next_attempt),
            None => s.next_attempt,
        };
        // wake at least every interval (cheap: no request unless due) to retry a pending save
        let tick = Instant::now() + self.cred.interval.max(Duration::from_secs(1));
        target.min(tick)
    }

    async fn attempt(&self) {
        self.status().last_request = Some(Instant::now());
        let mut rotated = false;
        let mut store_error = None;
        let result = match self.cred.grant {
            GrantKind::ClientCredentials => grant::request(
                &self.http,
                &self.cred,
                Grant::ClientCredentials,
                &self.cred.scopes,
                self.tuning.assertion_alg,
            )
            .await
            .map(|f| {
                let i = self.inspect(&f);
                (f, i)
            }),
            GrantKind::RefreshToken => self.refresh(&mut rotated, &mut store_error).await,
        };
        match result {
            Ok((fetched, inspection)) => self.succeeded(fetched, inspection, rotated, store_error),
            Err(f) => self.failed(f),
        }
    }

    async fn refresh(
        &self,
        rotated: &mut bool,
        store_error: &mut Option<String>,
    ) -> Result<(Fetched, Inspection), Failure> {
        let pending = self.status().pending_rt.clone();
        let old = match pending {
            Some(p) => p,
            None => self.load_refresh_token().await?,
        };
        let fetched = grant::request(
            &self.http,
            &self.cred,
            Grant::Refresh(&old),
            &self.cred.scopes,
            self.tuning.assertion_alg,
        )
        .await?;
        let inspection = self.inspect(&fetched);
        if let Some(new) = &fetched.refresh_token {
            if new.expose_secret() != old.expose_secret() {
                *rotated = true;
                if let Some(id) = &inspection.identity_seen {
                    self.status().identity = Some(id.clone());
                }
                // persisted before the new access token is handed out (o365-facts.md 9)
                match self.save(new.clone()).await {
                    Ok(()) => self.status().pending_rt = None,
                    Err(e) => {
                        tracing::error!(credential = %self.cred.name, "{e}");
                        self.status().pending_rt = Some(new.clone());
                        *store_error = Some(e);
                    }
                }
            }
        }
        Ok((fetched, inspection))
    }

    async fn load_refresh_token(&self) -> Result<SecretString, Failure> {
        let store = self.store.clone();
        let name = self.cred.name.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load(&name))
            .await
            .map_err(|e| Failure::local(TokenReason::StoreError, e.to_string()))?;
        match loaded {
            Ok(Some(t)) if t.client_id == self.cred.client_id => {
                let mut s = self.status();
                s.store_seen = Some(t.saved_at);
                if s.identity.is_none() {
                    s.identity = t.identity.clone();
                }
                Ok(t.refresh_token)
            }
            Ok(Some(t)) => Err(Failure::local(
                TokenReason::NoRefreshToken,
                format!(
                    "the stored refresh token was issued to client {}, not {}: run `o365-mail-exporter login --credential {}`",
                    t.client_id, self.cred.client_id, self.cred.name
                ),
            )),
            Ok(None) => Err(Failure::local(
                TokenReason::NoRefreshToken,
                format!(
                    "no refresh token stored for credential {}: run `o365-mail-exporter login --credential {}` once",
                    self.cred.name, self.cred.name
                ),
            )),
            Err(e) => Err(Failure::local(TokenReason::StoreError, e.to_string())),
        }
    }

    async fn save(&self, rt: SecretString) -> Result<(), String> {
        let saved_at = unix_now();
        let token = StoredToken {
            refresh_token: rt,
            client_id: self.cred.client_id.clone(),
            identity: self.status().identity.clone(),
            saved_at,
        };
        let store = self.store.clone();
        let name = self.cred.name.clone();
        tokio::task::spawn_blocking(move || store.save(&name, &token))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.status().store_seen = Some(saved_at);
        Ok(())
    }

    /// After a failure only a human can fix, a new token file (someone ran `login`) ends the
    /// slow retry: the next request goes out now instead of up to 15 minutes later.
    async fn notice_new_login(&self) {
        if self.cred.grant != GrantKind::RefreshToken {
            return;
        }
        let (waiting, seen) = {
            let s = self.status();
            let waiting = s
                .last_failure
                .as_ref()
                .is_some_and(|(r, _)| !r.is_transient())
                && Instant::now() < s.next_attempt;
            (waiting, s.store_seen)
        };
        if !waiting {
            return;
        }
        let store = self.store.clone();
        let name = self.cred.name.clone();
        let Ok(Ok(Some(t))) = tokio::task::spawn_blocking(move || store.load(&name)).await else {
            return;
        };
        if Some(t.saved_at) == seen {
            return;
        }
        tracing::info!(credential = %self.cred.name, "a new refresh token was stored; trying it now");
        let mut s = self.status();
        s.pending_rt = None;
        s.failures_in_row = 0;
        let earliest = s
            .last_request
            .map(|t| t + self.tuning.min_spacing)
            .unwrap_or_else(Instant::now);
        s.next_attempt = earliest.max(Instant::now());
    }

    async fn retry_pending_save(&self) {
        let Some(rt) = self.status().pending_rt.clone() else {
            return;
        };
        match self.save(rt).await {
            Ok(()) => {
                self.status().pending_rt = None;
                tracing::info!(credential = %self.cred.name, "saved the rotated refresh token");
                self.state.update_token(&self.cred.name, |r| {
                    if r.last_reason == TokenReason::StoreError.as_str() {
                        r.last_reason = TokenReason::Ok.as_str();
                        r.last_attempt_success = Some(true);
                        r.detail = "the rotated refresh token is saved again".to_string();
                    }
                });
            }
            Err(e) => tracing::debug!(credential = %self.cred.name, "still cannot save: {e}"),
        }
    }

    fn inspect(&self, f: &Fetched) -> Inspection {
        inspect::inspect(
            &self.cred,
            f.access_token.expose_secret(),
            f.id_token.as_ref().map(|t| t.expose_secret()),
            &f.scopes,
        )
    }

    fn succeeded(
        &self,
        fetched: Fetched,
        inspection: Inspection,
        rotated: bool,
        store_error: Option<String>,
    ) {
        let now = Instant::now();
        let life = fetched.expires_in;
        let expires_at = SystemTime::now() + life;
        let ahead = self.cred.refresh_ahead.min(life / 2);
        let margin = self.tuning.expiry_margin.min(life / 4);
        {
            let mut s = self.status();
            s.token = Some(Cached {
                secret: fetched.access_token.clone(),
                expires_at,
                usable_until: now + life - margin,
                refresh_at: now + life - ahead,
            });
            s.failures_in_row = 0;
            s.last_failure = None;
            s.next_attempt = now + self.tuning.min_spacing;
        }
        let issued = unix_now();
        let expires = issued + life.as_secs() as i64;
        let mut detail = format!(
            "token valid for {}, until {}",
            human(life),
            humantime::format_rfc3339_seconds(expires_at)
        );
        match (&inspection.identity_seen, inspection.identity_match) {
            (Some(id), Some(false)) => detail.push_str(&format!(
                "; WRONG IDENTITY: the token belongs to {id}, not {}",
                self.cred.expected_identity.as_deref().unwrap_or("?")
            )),
            (Some(id), _) => detail.push_str(&format!("; signed in as {id}")),
            _ => {}
        }
        let missing = inspection.missing();
        if !missing.is_empty() {
            detail.push_str(&format!("; missing {}", missing.join(", ")));
        }
        let reason = match &store_error {
            Some(e) => {
                detail = format!(
                    "{detail}; but the rotated refresh token could not be saved ({e}); it is kept in memory and saved again every {}",
                    human(self.cred.interval)
                );
                TokenReason::StoreError
            }
            None => TokenReason::Ok,
        };
        tracing::info!(
            credential = %self.cred.name,
            expires_in = life.as_secs(),
            rotated,
            "token obtained"
        );
        self.state.update_token(&self.cred.name, |r| {
            r.requests += 1;
            r.request_duration.observe(fetched.duration.as_secs_f64());
            r.last_attempt_success = Some(reason == TokenReason::Ok);
            r.last_reason = reason.as_str();
            if reason != TokenReason::Ok {
                *r.failures.entry(reason.as_str()).or_insert(0) += 1;
            }
            r.last_success = Some(issued);
            r.issued = Some(issued);
            r.expires = Some(expires);
            if rotated {
                r.refresh_token_rotated = Some(issued);
            }
            r.identity_match = inspection.identity_match;
            r.identity_seen = inspection.identity_seen.clone();
            r.scopes = inspection.scopes.clone();
            r.detail = detail;
        });
    }

    fn failed(&self, f: Failure) {
        let now = Instant::now();
        let (delay, keep) = {
            let mut s = self.status();
            s.failures_in_row = s.failures_in_row.saturating_add(1);
            let delay = self
                .tuning
                .delay(f.reason, s.failures_in_row, f.retry_after);
            s.next_attempt = now + delay;
            s.last_failure = Some((f.reason, f.message.clone()));
            if !f.reason.is_transient() {
                // a refused in-memory token is dead; the next attempt reads the store again
                s.pending_rt = None;
            }
            let keep = s
                .token
                .as_ref()
                .filter(|t| now < t.usable_until)
                .map(|t| t.expires_at);
            (delay, keep)
        };
        let mut detail = format!("{} Next attempt in {}.", f.message, human(delay));
        if let Some(exp) = keep {
            detail.push_str(&format!(
                " The current token stays in use until {}.",
                humantime::format_rfc3339_seconds(exp)
            ));
        }
        tracing::warn!(
            credential = %self.cred.name,
            reason = f.reason.as_str(),
            retry_in = delay.as_secs(),
            "{}",
            f.message
        );
        self.state.update_token(&self.cred.name, |r| {
            if let Some(d) = f.duration {
                r.requests += 1;
                r.request_duration.observe(d.as_secs_f64());
            }
            r.last_attempt_success = Some(false);
            r.last_reason = f.reason.as_str();
            *r.failures.entry(f.reason.as_str()).or_insert(0) += 1;
            r.detail = detail;
        });
    }
}

/// The token sources of the running configuration, by credential name.
pub struct Tokens {
    state: Arc<State>,
    cancel: CancellationToken,
    tuning: Tuning,
    sources: BTreeMap<String, Entry>,
}

struct Entry {
    source: Arc<TokenSource>,
    fingerprint: String,
    cancel: CancellationToken,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What identifies a credential's configuration, secrets included (as digests): a source is kept
/// across a reload only when this is unchanged.
fn fingerprint(cred: &Credential, store: &TokenStore) -> String {
    use aws_lc_rs::digest::{digest, SHA256};
    let secret = match &cred.client_auth {
        ClientAuth::None => Vec::new(),
        ClientAuth::Secret(s) => digest(&SHA256, s.expose_secret().as_bytes())
            .as_ref()
            .to_vec(),
        ClientAuth::Certificate { key_der, .. } => digest(&SHA256, &key_der.0).as_ref().to_vec(),
    };
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    // the proxy password too: Debug hides it
    let proxy = cred
        .proxy
        .as_ref()
        .map(|p| p.credentials_digest())
        .unwrap_or_default();
    format!("{cred:?}|{hex}|{proxy}|{}", store.dir().display())
}

impl Tokens {
    /// An empty set; sources' background loops stop when `cancel` fires.
    pub fn new(state: Arc<State>, cancel: CancellationToken) -> Tokens {
        Tokens::with_tuning(state, cancel, Tuning::default())
    }

    pub fn with_tuning(state: Arc<State>, cancel: CancellationToken, tuning: Tuning) -> Tokens {
        Tokens {
            state,
            cancel,
            tuning,
            sources: BTreeMap::new(),
        }
    }

    /// Make the set of sources match `creds`: an unchanged credential keeps its source (and its
    /// cached token), a changed one gets a new source, a removed one is stopped. Each new source's
    /// [`TokenSource::run`] is spawned on the current runtime. The token records in the state are
    /// reconciled too. Returns the credentials whose source could not be built.
    pub fn reconcile(
        &mut self,
        creds: &[Credential],
        store: &Arc<TokenStore>,
    ) -> Vec<(String, OauthError)> {
        let records: Vec<(String, &'static str, Option<i64>)> = creds
            .iter()
            .map(|c| (c.name.clone(), c.grant.as_str(), c.secret_expires))
            .collect();
        self.state.reconcile_tokens(&records);
        let mut errors = Vec::new();
        let mut next = BTreeMap::new();
        for cred in creds {
            let fp = fingerprint(cred, store);
            if let Some(e) = self.sources.remove(&cred.name) {
                if e.fingerprint == fp {
                    next.insert(cred.name.clone(), e);
                    continue;
                }
                e.cancel.cancel();
            }
            match TokenSource::with_tuning(
                Arc::new(cred.clone()),
                store.clone(),
                self.state.clone(),
                self.tuning.clone(),
            ) {
                Ok(source) => {
                    let source = Arc::new(source);
                    let cancel = self.cancel.child_token();
                    let (s, c) = (source.clone(), cancel.clone());
                    tokio::spawn(async move { s.run(c).await });
                    next.insert(
                        cred.name.clone(),
                        Entry {
                            source,
                            fingerprint: fp,
                            cancel,
                        },
                    );
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.state.update_token(&cred.name, |r| {
                        r.last_attempt_success = Some(false);
                        r.last_reason = TokenReason::ConfigError.as_str();
                        *r.failures
                            .entry(TokenReason::ConfigError.as_str())
                            .or_insert(0) += 1;
                        r.detail = msg;
                    });
                    errors.push((cred.name.clone(), e));
                }
            }
        }
        for (_, e) in std::mem::take(&mut self.sources) {
            e.cancel.cancel();
        }
        self.sources = next;
        errors
    }

    pub fn get(&self, name: &str) -> Option<Arc<TokenSource>> {
        self.sources.get(name).map(|e| e.source.clone())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        for e in self.sources.values() {
            e.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_backoff_doubles_to_the_cap_and_honours_retry_after() {
        let t = Tuning::default();
        let mut prev = Duration::ZERO;
        for n in 1..=12 {
            let d = t.delay(TokenReason::ServerError, n, None);
            let base = (t.transient_base * 2u32.pow(n.min(20) - 1)).min(t.transient_cap);
            assert!(d <= base && d >= base.mul_f64(0.8), "{n}: {d:?}");
            assert!(d >= prev.mul_f64(0.8) || d >= t.transient_cap.mul_f64(0.8));
            prev = d;
        }
        assert!(t.delay(TokenReason::Network, 50, None) <= t.transient_cap);
        let ra = Duration::from_secs(120);
        assert!(t.delay(TokenReason::Throttled, 1, Some(ra)) >= ra);
        let p = t.delay(TokenReason::InvalidClientSecret, 1, None);
        assert!(p >= t.permanent_delay.mul_f64(0.8) && p <= t.permanent_delay);
        assert!(t.delay(TokenReason::Timeout, 1, None) >= t.min_spacing);
    }

    #[test]
    fn a_changed_proxy_password_changes_the_fingerprint_without_showing_it() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("secret.txt"), "client-secret").expect("write");
        let text = "proxy:\n  url: http://127.0.0.1:3128\n  username: u\n  password_file: pw.txt\n\
                    credentials:\n  - {name: a, tenant: t.example, client_id: x, grant: client_credentials, client_secret_file: secret.txt}\n";
        let store = TokenStore::new(dir.path());
        let fp = |pw: &str| {
            std::fs::write(dir.path().join("pw.txt"), pw).expect("write");
            let cfg = crate::config::load_str(text, "t.yaml", dir.path())
                .unwrap_or_else(|e| panic!("{e}"));
            fingerprint(&cfg.credentials[0], &store)
        };
        let (one, two) = (fp("CANARY-one"), fp("CANARY-two"));
        assert_ne!(
            one, two,
            "a reload with a new proxy password rebuilds the source"
        );
        assert_eq!(one, fp("CANARY-one"));
        assert!(!one.contains("CANARY") && !two.contains("CANARY"));
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken {
            secret: SecretString::from("CANARY-AT".to_string()),
            expires_at: SystemTime::now(),
        };
        assert!(!format!("{t:?}").contains("CANARY"));
    }
}
