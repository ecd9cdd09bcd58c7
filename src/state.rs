//! The latest result of every configured check, shared between the scheduler (writer) and the
//! HTTP side (readers: `/metrics`, the status page, transcripts).
//!
//! Locks are held only to copy or replace a record, never across I/O. On reload the set of
//! checks is reconciled: records of checks still configured keep their counters, new checks get
//! a pending record (so their series exist from the first scrape), removed ones disappear.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::probe::{Outcome, Protocol, Reason};

/// Identifies a network check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKey {
    Endpoint(String),
    Login { mailbox: String, protocol: Protocol },
}

impl CheckKey {
    /// URL-safe name used in `/checks/{id}`: `endpoint:smtp`, `login:support:imap`.
    pub fn id(&self) -> String {
        match self {
            CheckKey::Endpoint(n) => format!("endpoint:{n}"),
            CheckKey::Login { mailbox, protocol } => format!("login:{mailbox}:{protocol}"),
        }
    }

    pub fn parse_id(s: &str) -> Option<CheckKey> {
        let mut it = s.split(':');
        match (it.next()?, it.next(), it.next(), it.next()) {
            ("endpoint", Some(n), None, None) => Some(CheckKey::Endpoint(n.to_string())),
            ("login", Some(m), Some(p), None) => Some(CheckKey::Login {
                mailbox: m.to_string(),
                protocol: Protocol::parse(p)?,
            }),
            _ => None,
        }
    }
}

/// Fixed-bucket histogram (cumulative on encode).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Buckets for network phases and token requests, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// `(upper bound, cumulative count)` pairs including `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c;
                (*b, acc)
            })
            .collect();
        out.push((f64::INFINITY, self.count));
        out
    }
}

/// Everything kept about one network check.
#[derive(Clone, Debug)]
pub struct CheckRecord {
    pub latest: Outcome,
    pub last_success: Option<SystemTime>,
    pub runs: u64,
    pub failures: BTreeMap<Reason, u64>,
    pub tls_handshake: Histogram,
    /// When the next run is due (for the status page).
    pub next_run: Option<SystemTime>,
}

impl CheckRecord {
    fn pending() -> CheckRecord {
        CheckRecord {
            latest: Outcome::pending(),
            last_success: None,
            runs: 0,
            failures: BTreeMap::new(),
            tls_handshake: Histogram::new(LATENCY_BUCKETS),
            next_run: None,
        }
    }
}

/// Token health of one credential, written by its token source.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub grant: &'static str,
    pub requests: u64,
    /// Failures by bounded reason.
    pub failures: BTreeMap<&'static str, u64>,
    /// Whether the last token request succeeded; None before the first one.
    pub last_attempt_success: Option<bool>,
    /// Reason of the last attempt (`ok`, `pending` or a failure reason).
    pub last_reason: &'static str,
    pub last_success: Option<i64>,
    pub issued: Option<i64>,
    pub expires: Option<i64>,
    pub refresh_token_rotated: Option<i64>,
    /// Whether the token belongs to `expected_identity`; None when unknown (opaque token, or no
    /// expectation configured).
    pub identity_match: Option<bool>,
    /// The identity seen in the token, for the status page only (never a label).
    pub identity_seen: Option<String>,
    /// Needed scope/role -> present in the token.
    pub scopes: Vec<(String, bool)>,
    pub secret_expires: Option<i64>,
    /// Where `secret_expires` came from (`config` or `graph`).
    pub secret_expires_source: &'static str,
    pub request_duration: Histogram,
    /// One sentence for the status page (no secrets).
    pub detail: String,
}

impl TokenRecord {
    pub fn new(grant: &'static str, secret_expires: Option<i64>) -> TokenRecord {
        TokenRecord {
            grant,
            requests: 0,
            failures: BTreeMap::new(),
            last_attempt_success: None,
            last_reason: "pending",
            last_success: None,
            issued: None,
            expires: None,
            refresh_token_rotated: None,
            identity_match: None,
            identity_seen: None,
            scopes: Vec::new(),
            secret_expires,
            secret_expires_source: if secret_expires.is_some() {
                "config"
            } else {
                ""
            },
            request_duration: Histogram::new(LATENCY_BUCKETS),
            detail: "no token requested yet".to_string(),
        }
    }
}

/// Result of the last configuration (re)load.
#[derive(Clone, Debug)]
pub struct ReloadStatus {
    pub successful: bool,
    pub last_success: SystemTime,
    pub last_error: Option<String>,
}

/// Shared state: latest results and counters.
#[derive(Debug)]
pub struct State {
    checks: RwLock<BTreeMap<CheckKey, CheckRecord>>,
    tokens: RwLock<BTreeMap<String, TokenRecord>>,
    reload: RwLock<ReloadStatus>,
    pub started: SystemTime,
    /// Results of the Microsoft Graph checks.
    pub graph: crate::graph::GraphStore,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    pub fn new() -> State {
        State {
            checks: RwLock::new(BTreeMap::new()),
            tokens: RwLock::new(BTreeMap::new()),
            reload: RwLock::new(ReloadStatus {
                successful: true,
                last_success: SystemTime::now(),
                last_error: None,
            }),
            started: SystemTime::now(),
            graph: crate::graph::GraphStore::default(),
        }
    }

    /// Make the set of checks exactly `keys`: keep existing records, add pending ones.
    pub fn reconcile_checks(&self, keys: &[CheckKey]) {
        // A set, not `keys.contains`: at 3,000 checks the linear search made a reload quadratic.
        let wanted: BTreeSet<&CheckKey> = keys.iter().collect();
        let mut map = self.checks.write().unwrap_or_else(|e| e.into_inner());
        let mut old = std::mem::take(&mut *map);
        old.retain(|k, _| wanted.contains(k));
        // Rebuilt in one go rather than inserted key by key: `collect` bulk-builds a B-tree with
        // full nodes, where inserting keys in order (a configuration lists them so) splits every
        // node half-empty. At 3,000 checks of ~0.6 kB each that is ~1 MB of empty slots.
        *map = wanted
            .into_iter()
            .map(|k| {
                let rec = old.remove(k).unwrap_or_else(CheckRecord::pending);
                (k.clone(), rec)
            })
            .collect();
    }

    /// Make the set of credentials exactly `creds` (name, grant, configured secret expiry).
    pub fn reconcile_tokens(&self, creds: &[(String, &'static str, Option<i64>)]) {
        let mut map = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| creds.iter().any(|(n, _, _)| n == k));
        for (name, grant, secret) in creds {
            let rec = map
                .entry(name.clone())
                .or_insert_with(|| TokenRecord::new(grant, *secret));
            rec.grant = grant;
            if rec.secret_expires_source != "graph" {
                rec.secret_expires = *secret;
                rec.secret_expires_source = if secret.is_some() { "config" } else { "" };
            }
        }
    }

    /// Publish the outcome of a run. Ignored for a check that is no longer configured.
    pub fn publish(&self, key: &CheckKey, outcome: Outcome, next_run: Option<SystemTime>) {
        let mut map = self.checks.write().unwrap_or_else(|e| e.into_inner());
        let Some(rec) = map.get_mut(key) else { return };
        rec.runs += 1;
        if outcome.success {
            rec.last_success = Some(outcome.started + outcome.duration);
        } else {
            *rec.failures.entry(outcome.reason).or_insert(0) += 1;
        }
        if let Some(d) = outcome.phase_duration(crate::probe::Phase::Tls) {
            if outcome.tls.as_ref().is_some_and(|t| !t.version.is_empty()) {
                rec.tls_handshake.observe(d.as_secs_f64());
            }
        }
        // keep certificate facts from the last run that saw a certificate
        let mut outcome = outcome;
        if outcome.tls.is_none() {
            outcome.tls = rec.latest.tls.take().map(|mut t| {
                t.version.clear();
                t.cipher.clear();
                t
            });
        }
        rec.latest = outcome;
        rec.next_run = next_run;
    }

    /// Update a credential's token record in place.
    pub fn update_token(&self, name: &str, f: impl FnOnce(&mut TokenRecord)) {
        let mut map = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if let Some(rec) = map.get_mut(name) {
            f(rec);
        }
    }

    pub fn checks(&self) -> BTreeMap<CheckKey, CheckRecord> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Run `f` on the records under the read lock, without copying them (the `/metrics`
    /// collector: at a thousand mailboxes a copy costs more than the encoding). `f` must not do
    /// I/O or call back into the state's check writers.
    pub fn with_checks<R>(&self, f: impl FnOnce(&BTreeMap<CheckKey, CheckRecord>) -> R) -> R {
        f(&self.checks.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn check(&self, key: &CheckKey) -> Option<CheckRecord> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn tokens(&self) -> BTreeMap<String, TokenRecord> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn token(&self, name: &str) -> Option<TokenRecord> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_reload(&self, result: Result<(), String>) {
        let mut r = self.reload.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                r.successful = true;
                r.last_success = SystemTime::now();
                r.last_error = None;
            }
            Err(e) => {
                r.successful = false;
                r.last_error = Some(e);
            }
        }
    }

    /// Whether every check has run at least once (readiness).
    pub fn all_checked(&self) -> bool {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .all(|r| r.runs > 0)
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for k in [
            CheckKey::Endpoint("smtp".into()),
            CheckKey::Login {
                mailbox: "support".into(),
                protocol: Protocol::Pop3,
            },
        ] {
            assert_eq!(CheckKey::parse_id(&k.id()), Some(k));
        }
        assert_eq!(CheckKey::parse_id("login:x:gopher"), None);
    }

    #[test]
    fn reconcile_keeps_counters_and_drops_removed() {
        let s = State::new();
        let a = CheckKey::Endpoint("a".into());
        let b = CheckKey::Endpoint("b".into());
        s.reconcile_checks(&[a.clone(), b.clone()]);
        let mut o = Outcome::pending();
        o.reason = Reason::Dns;
        s.publish(&a, o, None);
        s.reconcile_checks(std::slice::from_ref(&a));
        let checks = s.checks();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[&a].runs, 1);
        assert_eq!(checks[&a].failures[&Reason::Dns], 1);
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        assert_eq!(h.cumulative(), vec![(0.1, 1), (1.0, 2), (f64::INFINITY, 3)]);
    }
}
