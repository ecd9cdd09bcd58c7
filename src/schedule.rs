//! Runs every configured check in the background, each on its own interval with jitter, under a
//! bound on concurrent checks. Scrapes never trigger network I/O: they read what the last runs
//! published in [`State`].
//!
//! A configuration (re)load starts a new *generation*: everything needed to run it (TLS trust
//! stores from `ca_file`s) is prepared first, so a reload that cannot run is refused before
//! anything stops; then the old generation is cancelled and the new one spawned. Counters survive
//! because [`State::reconcile_checks`] keeps the records of checks that are still configured.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::oauth::{TokenSource, TokenStore, Tokens};
use crate::probe::tls::TlsClient;
use crate::probe::{Outcome, Protocol};
use crate::state::{CheckKey, State};

/// What a configuration needs at run time, built before it replaces the running one.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One TLS client per distinct trust setting (`None` = built-in roots).
    pub tls: HashMap<Option<PathBuf>, TlsClient>,
}

impl Plan {
    /// Build the TLS clients for every `ca_file` in `cfg`; an unreadable or empty CA file refuses
    /// the configuration.
    pub fn prepare(cfg: &Config) -> Result<Plan, String> {
        let mut files: Vec<Option<PathBuf>> = vec![None];
        files.extend(cfg.endpoints.iter().map(|e| e.ca_file.clone()));
        for m in &cfg.mailboxes {
            files.extend([
                m.imap.ca_file.clone(),
                m.pop3.ca_file.clone(),
                m.smtp.ca_file.clone(),
            ]);
        }
        let mut tls = HashMap::new();
        let mut problems = Vec::new();
        for f in files {
            if tls.contains_key(&f) {
                continue;
            }
            match TlsClient::new(f.as_deref()) {
                Ok(c) => {
                    tls.insert(f, c);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(Plan { tls })
        } else {
            Err(problems.join("\n"))
        }
    }

    pub fn tls_for(&self, ca_file: &Option<PathBuf>) -> Option<&TlsClient> {
        self.tls.get(ca_file)
    }
}

struct Generation {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Owns the running generation of check tasks, and the token sources (which outlive a
/// generation when their credential is unchanged, so a reload costs no token request).
pub struct Scheduler {
    state: Arc<State>,
    current: Mutex<Option<Generation>>,
    tokens: Mutex<Tokens>,
    tokens_cancel: CancellationToken,
    graph: crate::graph::Runner,
}

impl Scheduler {
    pub fn new(state: Arc<State>) -> Scheduler {
        let tokens_cancel = CancellationToken::new();
        Scheduler {
            tokens: Mutex::new(Tokens::new(state.clone(), tokens_cancel.clone())),
            graph: crate::graph::Runner::new(state.clone()),
            state,
            current: Mutex::new(None),
            tokens_cancel,
        }
    }

    /// Replace the running generation with one for `cfg`.
    pub fn start(&self, cfg: Arc<Config>, plan: Plan) {
        let keys = check_keys(&cfg);
        self.state.reconcile_checks(&keys);
        let store = Arc::new(TokenStore::new(&cfg.state_dir));
        let sources: HashMap<String, Arc<TokenSource>> = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            for (name, err) in tokens.reconcile(&cfg.credentials, &store) {
                tracing::error!(credential = %name, error = %err, "cannot set up the token source");
            }
            cfg.credentials
                .iter()
                .filter_map(|c| tokens.get(&c.name).map(|s| (c.name.clone(), s)))
                .collect()
        };
        let gen = Generation {
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let sem = Arc::new(Semaphore::new(cfg.defaults.max_concurrent_checks));
        let jitter = cfg.defaults.jitter;
        for ep in &cfg.endpoints {
            let Some(tls) = plan.tls_for(&ep.ca_file).cloned() else {
                continue;
            };
            let ep = ep.clone();
            let key = CheckKey::Endpoint(ep.name.clone());
            let interval = ep.interval;
            gen.tasks.spawn(run_check(
                key,
                interval,
                jitter,
                self.state.clone(),
                sem.clone(),
                gen.cancel.clone(),
                move || {
                    let ep = ep.clone();
                    let tls = tls.clone();
                    async move { crate::probe::endpoint::probe(&ep, &tls).await }
                },
            ));
        }
        for (i, m) in cfg.mailboxes.iter().enumerate() {
            for p in &m.protocols {
                let Some(tls) = plan.tls_for(&m.server(*p).ca_file).cloned() else {
                    continue;
                };
                let key = CheckKey::Login {
                    mailbox: m.name.clone(),
                    protocol: *p,
                };
                // The task reads its mailbox from the shared configuration (no copy per task).
                let cfg = cfg.clone();
                let source = sources.get(&m.credential).cloned();
                let protocol = *p;
                gen.tasks.spawn(run_check(
                    key,
                    m.interval,
                    jitter,
                    self.state.clone(),
                    sem.clone(),
                    gen.cancel.clone(),
                    move || {
                        let (cfg, tls, source) = (cfg.clone(), tls.clone(), source.clone());
                        async move {
                            // `i` indexes the configuration it was enumerated from (invariant)
                            login_check(&cfg.mailboxes[i], protocol, tls, source).await
                        }
                    },
                ));
            }
        }
        self.graph.start(&cfg, &gen.tasks, &gen.cancel, &sem);
        gen.tasks.close();
        let old = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(gen);
        if let Some(old) = old {
            old.cancel.cancel();
        }
    }

    /// Cancel the running generation and the token sources, and wait (bounded) for the checks.
    pub async fn shutdown(&self, grace: Duration) {
        self.tokens_cancel.cancel();
        let gen = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(g) = gen {
            g.cancel.cancel();
            let _ = tokio::time::timeout(grace, g.tasks.wait()).await;
        }
    }
}

/// One login: the credential's current access token (cached, or fetched once if none), then
/// the protocol dialogue. Without a usable token the dialogue still measures the connection
/// and fails in `auth` with `token_unavailable`.
pub async fn login_check(
    mailbox: &crate::config::Mailbox,
    protocol: Protocol,
    tls: TlsClient,
    source: Option<Arc<TokenSource>>,
) -> Outcome {
    let token = match &source {
        Some(s) => s.access_token().await.map_err(|e| e.to_string()),
        None => Err(format!(
            "credential {} could not be set up (see the token line)",
            mailbox.credential
        )),
    };
    let secret = token.as_ref().map(|t| &t.secret).map_err(Clone::clone);
    crate::probe::login::probe(mailbox, protocol, &tls, secret).await
}

/// Every check a configuration defines, in display order.
pub fn check_keys(cfg: &Config) -> Vec<CheckKey> {
    let mut keys: Vec<CheckKey> = cfg
        .endpoints
        .iter()
        .map(|e| CheckKey::Endpoint(e.name.clone()))
        .collect();
    for m in &cfg.mailboxes {
        for p in &m.protocols {
            keys.push(CheckKey::Login {
                mailbox: m.name.clone(),
                protocol: *p,
            });
        }
    }
    keys
}

/// A random duration in `[0, max]`.
pub fn random_upto(max: Duration) -> Duration {
    let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Run one check forever: first after a random part of `jitter`, then every `interval` plus a
/// random part of `jitter`, or later when the outcome asks to back off (Exchange's "Suggested
/// Backoff Time"). One run at a time per check, so e.g. a mailbox never has two SMTP probes open.
pub async fn run_check<F, Fut>(
    key: CheckKey,
    interval: Duration,
    jitter: Duration,
    state: Arc<State>,
    sem: Arc<Semaphore>,
    cancel: CancellationToken,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut due = Instant::now() + random_upto(jitter.min(interval));
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep_until(due) => {}
    }
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = sem.acquire() => match p { Ok(p) => p, Err(_) => return },
        };
        // The interval counts from when the run really starts, after waiting for a permit: at
        // start-up every check is due within `jitter` and they queue (3,000 logins at 16 at a
        // time take a while), and counting from the due time would keep them bunched and queuing
        // every cycle; counted from the start, the next cycle arrives spread out as this one ran.
        let started = Instant::now();
        // How late this run starts against its schedule: timer lateness plus the wait for a
        // concurrency permit. Logged (not a metric) so a too-low max_concurrent_checks for the
        // number of checks shows up; docs/benchmarks.md reads it.
        let slip = started.saturating_duration_since(due);
        // Boxed: a login dialogue's future is kilobytes, and inline it would sit in every idle
        // task for the whole interval (3,000 of them at 1,000 mailboxes); boxed, only the checks
        // running right now hold one.
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = Box::pin(check()) => o,
        };
        drop(permit);
        let mut wait = interval + random_upto(jitter);
        if let Some(b) = outcome.backoff {
            wait = wait.max(b);
        }
        let next = started + wait;
        due = next;
        let next_wall = SystemTime::now() + next.saturating_duration_since(Instant::now());
        let slip_ms = slip.as_millis() as u64;
        if outcome.success {
            tracing::debug!(check = %key.id(), duration_ms = outcome.duration.as_millis() as u64, slip_ms, "check ok");
        } else {
            tracing::info!(
                check = %key.id(),
                reason = outcome.reason.as_str(),
                phase = outcome.failed_phase.map(|p| p.as_str()).unwrap_or("-"),
                detail = %outcome.detail,
                slip_ms,
                "check failed"
            );
        }
        state.publish(&key, outcome, Some(next_wall));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A run that had to wait for a concurrency permit counts its interval from when it really
    /// started, so checks queued at start-up do not stay bunched (and queue again) every cycle.
    #[tokio::test(start_paused = true)]
    async fn interval_counts_from_the_start_after_the_permit() {
        let state = Arc::new(State::new());
        let keys = [
            CheckKey::Endpoint("a".into()),
            CheckKey::Endpoint("b".into()),
        ];
        state.reconcile_checks(&keys);
        let sem = Arc::new(Semaphore::new(1));
        let cancel = CancellationToken::new();
        for key in &keys {
            tokio::spawn(run_check(
                key.clone(),
                Duration::from_secs(60),
                Duration::ZERO,
                state.clone(),
                sem.clone(),
                cancel.clone(),
                || async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Outcome::pending()
                },
            ));
        }
        // Both due at 0; one runs 0-10 s, the other waits and runs 10-20 s. The paused clock
        // does not move SystemTime, so `next_run` (wall time) reads as "publish time + the wait
        // left": 60 s from the run's start, less the 10 s it ran, for the queued one too (counted
        // from its due time it would be 40 s).
        tokio::time::sleep(Duration::from_secs(25)).await;
        let now = SystemTime::now();
        let ahead: Vec<u64> = keys
            .iter()
            .map(|k| {
                let next = state.check(k).and_then(|r| r.next_run).expect("scheduled");
                next.duration_since(now)
                    .map_or(0, |d| d.as_secs_f64().round() as u64)
            })
            .collect();
        assert_eq!(ahead, vec![50, 50]);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_interval_and_honours_backoff() {
        let state = Arc::new(State::new());
        let key = CheckKey::Endpoint("x".into());
        state.reconcile_checks(std::slice::from_ref(&key));
        let runs = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let r = runs.clone();
        let task = tokio::spawn(run_check(
            key.clone(),
            Duration::from_secs(60),
            Duration::ZERO,
            state.clone(),
            Arc::new(Semaphore::new(1)),
            cancel.clone(),
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut o = Outcome::pending();
                    o.reason = crate::probe::Reason::Throttled;
                    if n == 1 {
                        o.backoff = Some(Duration::from_secs(300));
                    }
                    o
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // the second run asked for 300 s: nothing at +60 s, the third run at +300 s
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(state.check(&key).map(|r| r.runs), Some(3));
        cancel.cancel();
        task.await.unwrap();
    }
}
