//! The latest results of the Graph checks, shared between the check tasks (writers) and
//! `/metrics` and the status page (readers), like [`crate::state::State`] for the other checks.
//!
//! Facts from a successful run (key expiry dates, licences, service health) stay while later
//! runs fail, because a throttled or denied request says nothing new about them, but only for
//! [`STALE_AFTER_INTERVALS`] intervals after the last success: then they are dropped and show as
//! unknown, so an incident Microsoft closed meanwhile cannot keep an alert or an inhibition alive.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use super::GraphReason;
use crate::config::{GraphCheck, GraphSettings};

/// Facts older than this many intervals after their last successful read are dropped.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Bookkeeping of one (credential, check).
#[derive(Clone, Debug)]
pub struct CheckRecord {
    pub reason: GraphReason,
    /// One sentence for the status page and logs (no secrets, no hint text).
    pub detail: String,
    pub runs: u64,
    /// Graph requests sent by this check since start.
    pub requests: u64,
    pub failures: BTreeMap<GraphReason, u64>,
    pub last_check: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub next_run: Option<SystemTime>,
    pub duration: Duration,
}

impl CheckRecord {
    fn pending() -> CheckRecord {
        CheckRecord {
            reason: GraphReason::Pending,
            detail: "not run yet".to_string(),
            runs: 0,
            requests: 0,
            failures: BTreeMap::new(),
            last_check: None,
            last_success: None,
            next_run: None,
            duration: Duration::ZERO,
        }
    }
}

/// One credential (key) of the app registration.
#[derive(Clone, Debug, PartialEq)]
pub struct AppKey {
    /// Graph's `keyId` (a GUID), reduced to label-safe characters.
    pub key_id: String,
    pub kind: super::model::KeyKind,
    /// Display name, for the status page only.
    pub name: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Whether this is the secret or certificate the credential is configured with.
    pub in_use: bool,
}

/// What the app-credentials check read about one credential's app registration.
#[derive(Clone, Debug, PartialEq)]
pub struct AppFacts {
    /// The credential whose Graph check read it.
    pub reader: String,
    pub app_name: String,
    pub keys: Vec<AppKey>,
    pub as_of: SystemTime,
}

/// A mailbox user's Exchange licence.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenceFacts {
    pub credential: String,
    pub status: super::model::PlanStatus,
    /// Exchange service plan ids with their state (status page only).
    pub plans: Vec<String>,
    pub licences: usize,
    pub as_of: SystemTime,
}

/// An open service issue (status page and logs only; never labels).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenIssue {
    pub id: String,
    pub title: String,
    pub classification: &'static str,
    pub status: &'static str,
    pub feature_group: String,
    pub start: Option<i64>,
    pub last_modified: Option<i64>,
}

/// What the service-health check read.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthFacts {
    /// The configured service name (the `service` label).
    pub service: String,
    pub status: &'static str,
    /// Open issues per classification (`incident`, `advisory`, `other`).
    pub open: BTreeMap<&'static str, u64>,
    /// The open issues themselves, at most [`MAX_ISSUES_KEPT`].
    pub issues: Vec<OpenIssue>,
    pub as_of: SystemTime,
}

/// Issues listed on the status page; the counts cover all of them.
pub const MAX_ISSUES_KEPT: usize = 50;

/// What one run of a check found (besides its reason).
#[derive(Clone, Debug)]
pub enum Facts {
    /// Nothing new (a failure): earlier facts stay until they are stale.
    None,
    /// App registrations read in this run, by credential, and the credentials whose application
    /// was not found (forgotten).
    Apps {
        found: Vec<(String, AppFacts)>,
        missing: Vec<String>,
    },
    /// Licences read in this run, and the mailboxes whose user does not exist (forgotten).
    Licences {
        found: Vec<(String, LicenceFacts)>,
        missing: Vec<String>,
    },
    Health(HealthFacts),
}

/// The result of one run of one check.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub reason: GraphReason,
    pub detail: String,
    pub requests: u64,
    pub duration: Duration,
    /// `Retry-After` of a throttled or unavailable answer.
    pub retry_after: Option<Duration>,
    pub facts: Facts,
}

/// A copy of everything, for one scrape or page.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub checks: BTreeMap<(String, GraphCheck), CheckRecord>,
    /// By the credential whose app registration it is.
    pub apps: BTreeMap<String, AppFacts>,
    /// By mailbox.
    pub licences: BTreeMap<String, LicenceFacts>,
    /// By credential.
    pub health: BTreeMap<String, HealthFacts>,
}

#[derive(Debug, Default)]
pub struct GraphStore {
    inner: RwLock<Snapshot>,
}

impl GraphStore {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the records match `settings`: keep those still configured (counters survive a
    /// reload), add pending ones, drop the rest with their facts.
    pub fn reconcile(&self, settings: &[GraphSettings]) {
        let mut s = self.write();
        let wanted: Vec<(String, GraphCheck)> = settings
            .iter()
            .flat_map(|g| g.checks.iter().map(move |c| (g.credential.clone(), *c)))
            .collect();
        s.checks.retain(|k, _| wanted.contains(k));
        for k in wanted {
            s.checks.entry(k).or_insert_with(CheckRecord::pending);
        }
        let runs = |cred: &str, check: GraphCheck| {
            settings
                .iter()
                .any(|g| g.credential == cred && g.runs(check))
        };
        s.apps.retain(|c, a| {
            settings.iter().any(|g| {
                g.credential == a.reader
                    && g.runs(GraphCheck::AppCredentials)
                    && g.app_targets.contains(c)
            })
        });
        s.health.retain(|c, _| runs(c, GraphCheck::ServiceHealth));
        s.licences.retain(|m, f| {
            settings.iter().any(|g| {
                g.credential == f.credential
                    && g.runs(GraphCheck::Licenses)
                    && g.licence_targets.iter().any(|t| &t.mailbox == m)
            })
        });
    }

    /// Record a run of `check` for `credential` (ignored when no longer configured).
    pub fn publish(
        &self,
        credential: &str,
        check: GraphCheck,
        interval: Duration,
        out: RunOutcome,
        next_run: Option<SystemTime>,
    ) {
        let now = SystemTime::now();
        let mut s = self.write();
        let key = (credential.to_string(), check);
        let Some(rec) = s.checks.get_mut(&key) else {
            return;
        };
        rec.runs += 1;
        rec.requests += out.requests;
        rec.reason = out.reason;
        rec.detail = out.detail;
        rec.last_check = Some(now);
        rec.duration = out.duration;
        rec.next_run = next_run;
        if out.reason == GraphReason::Ok {
            rec.last_success = Some(now);
        } else {
            *rec.failures.entry(out.reason).or_insert(0) += 1;
        }
        match out.facts {
            Facts::None => {}
            Facts::Apps { found, missing } => {
                for (c, a) in found {
                    s.apps.insert(c, a);
                }
                for c in missing {
                    s.apps.remove(&c);
                }
            }
            Facts::Health(h) => {
                s.health.insert(credential.to_string(), h);
            }
            Facts::Licences { found, missing } => {
                for (m, f) in found {
                    s.licences.insert(m, f);
                }
                for m in missing {
                    s.licences.remove(&m);
                }
            }
        }
        // facts not refreshed for too long are no longer known
        let max_age = interval.saturating_mul(STALE_AFTER_INTERVALS);
        let fresh = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO) <= max_age;
        match check {
            GraphCheck::AppCredentials => s
                .apps
                .retain(|_, a| a.reader != credential || fresh(a.as_of)),
            GraphCheck::ServiceHealth => {
                if s.health.get(credential).is_some_and(|h| !fresh(h.as_of)) {
                    s.health.remove(credential);
                }
            }
            GraphCheck::Licenses => s
                .licences
                .retain(|_, f| f.credential != credential || fresh(f.as_of)),
        }
    }

    /// When the check last finished (to keep its schedule across reloads).
    pub fn last_check(&self, credential: &str, check: GraphCheck) -> Option<SystemTime> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        s.checks
            .get(&(credential.to_string(), check))
            .and_then(|r| r.last_check)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(checks: &[GraphCheck]) -> GraphSettings {
        GraphSettings {
            credential: "app".into(),
            checks: checks.to_vec(),
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            url: "https://graph.microsoft.com".into(),
            scope: "https://graph.microsoft.com/.default".into(),
            service: "Exchange Online".into(),
            licence_targets: Vec::new(),
            app_targets: vec!["app".into()],
        }
    }

    fn health(as_of: SystemTime) -> RunOutcome {
        RunOutcome {
            reason: GraphReason::Ok,
            detail: String::new(),
            requests: 2,
            duration: Duration::ZERO,
            retry_after: None,
            facts: Facts::Health(HealthFacts {
                service: "Exchange Online".into(),
                status: "serviceDegradation",
                open: BTreeMap::from([("incident", 1)]),
                issues: Vec::new(),
                as_of,
            }),
        }
    }

    fn failed(reason: GraphReason) -> RunOutcome {
        RunOutcome {
            reason,
            detail: "x".into(),
            requests: 1,
            duration: Duration::ZERO,
            retry_after: None,
            facts: Facts::None,
        }
    }

    #[test]
    fn failures_keep_facts_until_they_are_stale() {
        let st = GraphStore::default();
        let hour = Duration::from_secs(3600);
        st.reconcile(&[settings(&[GraphCheck::ServiceHealth])]);
        st.publish(
            "app",
            GraphCheck::ServiceHealth,
            hour,
            health(SystemTime::now()),
            None,
        );
        st.publish(
            "app",
            GraphCheck::ServiceHealth,
            hour,
            failed(GraphReason::Throttled),
            None,
        );
        let s = st.snapshot();
        assert!(s.health.contains_key("app"), "kept after one failure");
        let rec = &s.checks[&("app".to_string(), GraphCheck::ServiceHealth)];
        assert_eq!(
            (rec.runs, rec.requests, rec.reason),
            (2, 3, GraphReason::Throttled)
        );
        assert_eq!(rec.failures[&GraphReason::Throttled], 1);
        assert!(rec.last_success.is_some());
        // facts read four hours ago with a 1h interval are dropped at the next failure
        let old = SystemTime::now() - 4 * hour;
        st.publish("app", GraphCheck::ServiceHealth, hour, health(old), None);
        st.publish(
            "app",
            GraphCheck::ServiceHealth,
            hour,
            failed(GraphReason::Network),
            None,
        );
        assert!(!st.snapshot().health.contains_key("app"));
    }

    #[test]
    fn reconcile_drops_unconfigured_checks_and_facts() {
        let st = GraphStore::default();
        let hour = Duration::from_secs(3600);
        st.reconcile(&[settings(&GraphCheck::ALL)]);
        assert_eq!(st.snapshot().checks.len(), 3);
        st.publish(
            "app",
            GraphCheck::ServiceHealth,
            hour,
            health(SystemTime::now()),
            None,
        );
        st.reconcile(&[settings(&[GraphCheck::Licenses])]);
        let s = st.snapshot();
        assert_eq!(s.checks.len(), 1);
        assert!(s.health.is_empty());
        // publishing for a check no longer configured is ignored
        st.publish(
            "app",
            GraphCheck::ServiceHealth,
            hour,
            health(SystemTime::now()),
            None,
        );
        assert!(st.snapshot().health.is_empty());
    }
}
