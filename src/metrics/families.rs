//! Every metric family of `/metrics`, in exposition order: name, help, type, and how its series
//! are drawn from the configuration and the state. The contract is `docs/metrics.md`.
//!
//! A family walks one list of the configuration (endpoints, credentials, logins, mailboxes) one
//! item at a time, so that a scrape can stop between two items when a chunk is full and go on
//! from there with the next chunk (`super::Scrape`). The small families (exporter, Microsoft
//! Graph) are written whole. Each item's records are looked up again per chunk, under that
//! chunk's read lock: an item whose check is gone (a reload removed it) is skipped.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::time::SystemTime;

use super::text::{Kind, Labels, Writer};
use super::{b, endpoint_phases, l1, login_phases, opt_ts};
use crate::config::{Config, Credential, Endpoint, GrantKind, Mailbox, TlsMode};
use crate::graph::store::Snapshot;
use crate::probe::Protocol;
use crate::state::{unix, CheckKey, CheckRecord, ReloadStatus, TokenRecord};

/// What a scrape reads once, at its start.
pub(super) struct Ctx<'a> {
    pub cfg: &'a Config,
    pub tokens: &'a BTreeMap<String, TokenRecord>,
    pub graph: &'a Snapshot,
    pub reload: &'a ReloadStatus,
    pub started: SystemTime,
    /// Scrape time, Unix seconds (`o365_token_age_seconds`).
    pub now_s: f64,
}

pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub walk: Walk,
}

/// The list a family's series come from, with the function writing one item's series.
pub(super) enum Walk {
    /// Written whole: a handful of series.
    Once(fn(&mut Writer<'_>, &Ctx<'_>)),
    /// Configured endpoints that have a check record.
    Endpoints(fn(&mut Writer<'_>, &Endpoint, &CheckRecord)),
    /// Configured credentials that have a token record.
    Credentials(fn(&mut Writer<'_>, &Ctx<'_>, &Credential, &TokenRecord)),
    /// Configured logins (mailbox x protocol) that have a check record.
    Logins(fn(&mut Writer<'_>, &Login<'_>, &CheckRecord)),
    /// Configured mailboxes.
    Mailboxes(fn(&mut Writer<'_>, &Mailbox, &mut Records<'_>)),
}

/// One configured login, with its `mailbox` and `protocol` labels rendered (once per scrape).
pub(super) struct Login<'a> {
    pub m: &'a Mailbox,
    pub p: Protocol,
    pub labels: &'a [u8],
}

/// Check records looked up by configuration item, under one read lock.
///
/// The configuration lists logins mostly in the map's own order (mailbox, then protocol), so
/// the next record is usually the one just after the previous hit: the map is walked along,
/// and searched only on a miss (a configuration listed out of order, a removed check).
pub(super) struct Records<'a> {
    map: &'a BTreeMap<CheckKey, CheckRecord>,
    next: Peekable<btree_map::Range<'a, CheckKey, CheckRecord>>,
    /// The key searched for on a miss, reused so that a search does not allocate.
    key: CheckKey,
}

impl<'a> Records<'a> {
    pub(super) fn new(map: &'a BTreeMap<CheckKey, CheckRecord>) -> Records<'a> {
        Records {
            map,
            next: map.range::<CheckKey, _>(..).peekable(),
            key: CheckKey::Endpoint(String::new()),
        }
    }

    pub(super) fn endpoint(&mut self, name: &str) -> Option<&'a CheckRecord> {
        self.find(
            |k| matches!(k, CheckKey::Endpoint(n) if same(n, name)),
            |k| match k {
                CheckKey::Endpoint(n) => {
                    n.clear();
                    n.push_str(name);
                }
                other => *other = CheckKey::Endpoint(name.to_string()),
            },
        )
    }

    pub(super) fn login(&mut self, mailbox: &str, protocol: Protocol) -> Option<&'a CheckRecord> {
        self.find(
            |k| matches!(k, CheckKey::Login { mailbox: m, protocol: p } if *p == protocol && same(m, mailbox)),
            |k| match k {
                CheckKey::Login {
                    mailbox: m,
                    protocol: p,
                } => {
                    m.clear();
                    m.push_str(mailbox);
                    *p = protocol;
                }
                other => {
                    *other = CheckKey::Login {
                        mailbox: mailbox.to_string(),
                        protocol,
                    }
                }
            },
        )
    }

    fn find(
        &mut self,
        is: impl Fn(&CheckKey) -> bool,
        set: impl FnOnce(&mut CheckKey),
    ) -> Option<&'a CheckRecord> {
        // A few steps along the map cover the other protocols of the previous mailbox.
        for _ in 0..4 {
            match self.next.peek() {
                Some((k, _)) if is(k) => return self.next.next().map(|(_, r)| r),
                Some(_) => {
                    self.next.next();
                }
                None => break,
            }
        }
        set(&mut self.key);
        let map = self.map;
        self.next = map.range(&self.key..).peekable();
        match self.next.peek() {
            Some((k, _)) if is(k) => self.next.next().map(|(_, r)| r),
            _ => None,
        }
    }
}

/// `a == b`, compared inline: the cursor above compares a configured name with a map key once
/// per family per item (~30,000 times a scrape at 1,000 mailboxes), and for names of a few
/// bytes the call into libc's `memcmp` cost more than the comparison (~10 % of the encode).
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            return false;
        };
        if u64::from_ne_bytes(x) != u64::from_ne_bytes(y) {
            return false;
        }
    }
    let mut diff = 0u8;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The families in exposition order (the same order as the reference encoder's).
pub(super) const FAMILIES: &[Family] = &[
    // --- exporter ---
    Family {
        name: "o365_exporter_build",
        help: "Build information of the exporter; value is always 1",
        kind: Kind::Info,
        walk: Walk::Once(|w, c| {
            w.info(&Labels::of([
                ("version", crate::VERSION),
                ("cloud", c.cfg.cloud.name),
            ]))
        }),
    },
    Family {
        name: "o365_exporter_config_last_reload_successful",
        help: "Whether the last configuration reload succeeded (1) or was refused (0)",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| w.gauge(&Labels::NONE, b(c.reload.successful))),
    },
    Family {
        name: "o365_exporter_config_last_reload_success_timestamp_seconds",
        help: "Time of the last successful configuration load",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| w.gauge(&Labels::NONE, unix(c.reload.last_success))),
    },
    Family {
        name: "o365_exporter_start_time_seconds",
        help: "Time the exporter started",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| w.gauge(&Labels::NONE, unix(c.started))),
    },
    // --- endpoints ---
    Family {
        name: "o365_endpoint",
        help: "Configured endpoint: host, port and TLS mode; value is always 1",
        kind: Kind::Info,
        walk: Walk::Endpoints(|w, ep, _| {
            let mut port = itoa::Buffer::new();
            w.info(&Labels::of([
                ("endpoint", ep.name.as_str()),
                ("host", ep.host.as_str()),
                ("port", port.format(ep.port)),
                ("tls", ep.tls.as_str()),
            ]))
        }),
    },
    Family {
        name: "o365_endpoint_up",
        help: "Whether the last check of the endpoint succeeded (DNS, TCP, STARTTLS and TLS as configured)",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| w.gauge(&l1("endpoint", &ep.name), b(r.latest.success))),
    },
    Family {
        name: "o365_endpoint_reason",
        help: "Reason of the last check of the endpoint (ok, pending or a failure reason); one series per endpoint, value 1",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            w.gauge(
                &Labels::of([
                    ("endpoint", ep.name.as_str()),
                    ("reason", r.latest.reason.as_str()),
                ]),
                1.0,
            )
        }),
    },
    Family {
        name: "o365_endpoint_phase_duration_seconds",
        help: "Duration of each phase of the last check of the endpoint",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            for ph in endpoint_phases(ep.tls) {
                let d = r.latest.phase_duration(*ph).map(|d| d.as_secs_f64());
                w.gauge(
                    &Labels::of([("endpoint", ep.name.as_str()), ("phase", ph.as_str())]),
                    d.unwrap_or(0.0),
                );
            }
        }),
    },
    Family {
        name: "o365_endpoint_check_duration_seconds",
        help: "Total duration of the last check of the endpoint",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            w.gauge(&l1("endpoint", &ep.name), r.latest.duration.as_secs_f64())
        }),
    },
    Family {
        name: "o365_endpoint_last_check_timestamp_seconds",
        help: "When the last check of the endpoint finished (0 before the first)",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| w.gauge(&l1("endpoint", &ep.name), last_check(r))),
    },
    Family {
        name: "o365_endpoint_last_success_timestamp_seconds",
        help: "When a check of the endpoint last succeeded (0 if never since start)",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            w.gauge(&l1("endpoint", &ep.name), opt_ts(r.last_success))
        }),
    },
    Family {
        name: "o365_endpoint_checks",
        help: "Checks of the endpoint run since start",
        kind: Kind::Counter,
        walk: Walk::Endpoints(|w, ep, r| w.counter(&l1("endpoint", &ep.name), r.runs)),
    },
    Family {
        name: "o365_endpoint_failures",
        help: "Failed checks of the endpoint since start, by reason",
        kind: Kind::Counter,
        walk: Walk::Endpoints(|w, ep, r| {
            for (reason, n) in &r.failures {
                w.counter(
                    &Labels::of([("endpoint", ep.name.as_str()), ("reason", reason.as_str())]),
                    *n,
                );
            }
        }),
    },
    Family {
        name: "o365_tls_handshake_duration_seconds",
        help: "Duration of completed TLS handshakes with the endpoint",
        kind: Kind::Histogram,
        walk: Walk::Endpoints(|w, ep, r| {
            if ep.tls != TlsMode::None {
                w.histogram(&l1("endpoint", &ep.name), &r.tls_handshake);
            }
        }),
    },
    Family {
        name: "o365_tls_cert_not_after_timestamp_seconds",
        help: "Expiry (notAfter) of the endpoint's leaf certificate, also when verification failed; present once a certificate was seen",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            let t = r.latest.tls.as_ref().and_then(|t| t.cert_not_after);
            if let (true, Some(t)) = (ep.tls != TlsMode::None, t) {
                w.gauge(&l1("endpoint", &ep.name), t as f64);
            }
        }),
    },
    Family {
        name: "o365_tls_verify_success",
        help: "Whether the endpoint's certificate chain and name verified; present once a certificate was seen",
        kind: Kind::Gauge,
        walk: Walk::Endpoints(|w, ep, r| {
            let Some(t) = r.latest.tls.as_ref() else {
                return;
            };
            if ep.tls != TlsMode::None && t.cert_not_after.is_some() {
                w.gauge(&l1("endpoint", &ep.name), b(t.verified));
            }
        }),
    },
    Family {
        name: "o365_tls",
        help: "TLS version and cipher suite negotiated by the last successful handshake with the endpoint",
        kind: Kind::Info,
        walk: Walk::Endpoints(|w, ep, r| {
            let Some(t) = r.latest.tls.as_ref() else {
                return;
            };
            if ep.tls != TlsMode::None && !t.version.is_empty() {
                w.info(&Labels::of([
                    ("endpoint", ep.name.as_str()),
                    ("version", t.version.as_str()),
                    ("cipher", t.cipher.as_str()),
                ]));
            }
        }),
    },
    // --- tokens ---
    Family {
        name: "o365_token",
        help: "Configured credential and its grant; value is always 1",
        kind: Kind::Info,
        walk: Walk::Credentials(|w, _, c, _| {
            w.info(&Labels::of([
                ("credential", c.name.as_str()),
                ("grant", c.grant.as_str()),
            ]))
        }),
    },
    Family {
        name: "o365_token_requests",
        help: "Token requests sent to the identity platform",
        kind: Kind::Counter,
        walk: Walk::Credentials(|w, _, c, t| w.counter(&l1("credential", &c.name), t.requests)),
    },
    Family {
        name: "o365_token_request_failures",
        help: "Failed token requests, by reason",
        kind: Kind::Counter,
        walk: Walk::Credentials(|w, _, c, t| {
            for (reason, n) in &t.failures {
                w.counter(
                    &Labels::of([("credential", c.name.as_str()), ("reason", *reason)]),
                    *n,
                );
            }
        }),
    },
    Family {
        name: "o365_token_refresh_success",
        help: "Whether the last token request succeeded (0 also before the first)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            w.gauge(
                &l1("credential", &c.name),
                b(t.last_attempt_success == Some(true)),
            )
        }),
    },
    Family {
        name: "o365_token_reason",
        help: "Reason of the last token request (ok, pending or a failure reason); one series per credential, value 1",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            w.gauge(
                &Labels::of([("credential", c.name.as_str()), ("reason", t.last_reason)]),
                1.0,
            )
        }),
    },
    Family {
        name: "o365_token_last_success_timestamp_seconds",
        help: "When a token was last obtained (0 if never since start)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            w.gauge(&l1("credential", &c.name), ts(t.last_success))
        }),
    },
    Family {
        name: "o365_token_issued_timestamp_seconds",
        help: "When the access token in use was issued (0 if none)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| w.gauge(&l1("credential", &c.name), ts(t.issued))),
    },
    Family {
        name: "o365_token_expiry_timestamp_seconds",
        help: "When the access token in use expires (0 if none)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| w.gauge(&l1("credential", &c.name), ts(t.expires))),
    },
    Family {
        name: "o365_token_age_seconds",
        help: "Age of the access token in use, computed at scrape time (0 if none)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, x, c, t| {
            let age = t.issued.map(|i| (x.now_s - i as f64).max(0.0));
            w.gauge(&l1("credential", &c.name), age.unwrap_or(0.0))
        }),
    },
    Family {
        name: "o365_token_request_duration_seconds",
        help: "Duration of token requests",
        kind: Kind::Histogram,
        walk: Walk::Credentials(|w, _, c, t| {
            w.histogram(&l1("credential", &c.name), &t.request_duration)
        }),
    },
    Family {
        name: "o365_refresh_token_last_rotated_timestamp_seconds",
        help: "When the stored refresh token was last rotated (delegated credentials; 0 if unknown)",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            if c.grant == GrantKind::RefreshToken {
                w.gauge(&l1("credential", &c.name), ts(t.refresh_token_rotated));
            }
        }),
    },
    Family {
        name: "o365_token_identity_match",
        help: "Whether the token belongs to expected_identity (1), to someone else (0); absent when unknown",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            if let Some(m) = t.identity_match {
                w.gauge(&l1("credential", &c.name), b(m));
            }
        }),
    },
    Family {
        name: "o365_token_scope_present",
        help: "Whether the token carries each scope or role the configured protocols need; absent when the token is opaque",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            for (s, ok) in &t.scopes {
                w.gauge(
                    &Labels::of([("credential", c.name.as_str()), ("scope", s.as_str())]),
                    b(*ok),
                );
            }
        }),
    },
    Family {
        name: "o365_client_secret_expiry_timestamp_seconds",
        help: "When the credential's client secret or certificate expires (from secret_expires); absent when unknown",
        kind: Kind::Gauge,
        walk: Walk::Credentials(|w, _, c, t| {
            if let Some(e) = t.secret_expires {
                w.gauge(&l1("credential", &c.name), e as f64);
            }
        }),
    },
    // --- mailbox logins ---
    Family {
        name: "o365_mailbox",
        help: "Configured mailbox: its credential and whether it is reached through a delegate (shared mailbox); value is always 1",
        kind: Kind::Info,
        walk: Walk::Mailboxes(|w, m, _| {
            let shared = if m.login_as.is_some() { "true" } else { "false" };
            w.info(&Labels::of([
                ("mailbox", m.name.as_str()),
                ("credential", m.credential.as_str()),
                ("shared", shared),
            ]))
        }),
    },
    Family {
        name: "o365_login_success",
        help: "Whether the last login to the mailbox over the protocol succeeded, including the mailbox command after authentication",
        kind: Kind::Gauge,
        walk: Walk::Logins(|w, x, r| w.gauge(&mp(x), b(r.latest.success))),
    },
    Family {
        name: "o365_login_reason",
        help: "Reason of the last login (ok, pending or a failure reason); one series per mailbox and protocol, value 1",
        kind: Kind::Gauge,
        walk: Walk::Logins(|w, x, r| {
            let mut l = mp(x);
            l.push(("reason", r.latest.reason.as_str()));
            w.gauge(&l, 1.0)
        }),
    },
    Family {
        name: "o365_login_phase_duration_seconds",
        help: "Duration of each phase of the last login",
        kind: Kind::Gauge,
        walk: Walk::Logins(|w, x, r| {
            w.begin_last(&mp(x), "phase");
            for ph in login_phases(x.p, x.m.server(x.p).tls) {
                let d = r.latest.phase_duration(*ph).map(|d| d.as_secs_f64());
                w.gauge_last(ph.as_str(), d.unwrap_or(0.0));
            }
        }),
    },
    Family {
        name: "o365_login_attempts",
        help: "Logins attempted since start",
        kind: Kind::Counter,
        walk: Walk::Logins(|w, x, r| w.counter(&mp(x), r.runs)),
    },
    Family {
        name: "o365_login_failures",
        help: "Failed logins since start, by reason",
        kind: Kind::Counter,
        walk: Walk::Logins(|w, x, r| {
            for (reason, n) in &r.failures {
                let mut l = mp(x);
                l.push(("reason", reason.as_str()));
                w.counter(&l, *n);
            }
        }),
    },
    Family {
        name: "o365_login_last_check_timestamp_seconds",
        help: "When the last login attempt finished (0 before the first)",
        kind: Kind::Gauge,
        walk: Walk::Logins(|w, x, r| w.gauge(&mp(x), last_check(r))),
    },
    Family {
        name: "o365_login_last_success_timestamp_seconds",
        help: "When a login last succeeded (0 if never since start)",
        kind: Kind::Gauge,
        walk: Walk::Logins(|w, x, r| w.gauge(&mp(x), opt_ts(r.last_success))),
    },
    Family {
        name: "o365_mailbox_messages",
        help: "Messages in the mailbox's INBOX at the last successful IMAP (else POP3) login; a growing count means the product's retriever has stalled",
        kind: Kind::Gauge,
        // INBOX count: IMAP's EXAMINE if the mailbox is checked over IMAP, else POP3's STAT.
        walk: Walk::Mailboxes(|w, m, records| {
            let Some(pick) = [Protocol::Imap, Protocol::Pop3]
                .into_iter()
                .find(|p| m.protocols.contains(p))
            else {
                return;
            };
            if let Some(n) = records.login(&m.name, pick).and_then(|r| r.latest.messages) {
                w.gauge(&l1("mailbox", &m.name), n as f64);
            }
        }),
    },
    // --- Microsoft Graph (see `crate::graph`) ---
    Family {
        name: "o365_graph_check_success",
        help: "Whether the last run of the Microsoft Graph check succeeded",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                let ok = r.reason == crate::graph::GraphReason::Ok;
                w.gauge(&cc(&s.credential, check), b(ok));
            }
        }),
    },
    Family {
        name: "o365_graph_check_reason",
        help: "Reason of the last run of the Microsoft Graph check (ok, pending or a failure reason); one series per credential and check, value 1",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                let mut l = cc(&s.credential, check);
                l.push(("reason", r.reason.as_str()));
                w.gauge(&l, 1.0);
            }
        }),
    },
    Family {
        name: "o365_graph_last_check_timestamp_seconds",
        help: "When the last run of the Microsoft Graph check finished (0 before the first)",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                w.gauge(&cc(&s.credential, check), opt_ts(r.last_check));
            }
        }),
    },
    Family {
        name: "o365_graph_last_success_timestamp_seconds",
        help: "When the Microsoft Graph check last succeeded (0 if never since start)",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                w.gauge(&cc(&s.credential, check), opt_ts(r.last_success));
            }
        }),
    },
    Family {
        name: "o365_graph_requests",
        help: "Requests sent to Microsoft Graph by the check",
        kind: Kind::Counter,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                w.counter(&cc(&s.credential, check), r.requests);
            }
        }),
    },
    Family {
        name: "o365_graph_check_failures",
        help: "Failed runs of the Microsoft Graph check since start, by reason",
        kind: Kind::Counter,
        walk: Walk::Once(|w, c| {
            for (s, check, r) in graph_runs(c) {
                for (reason, n) in &r.failures {
                    let mut l = cc(&s.credential, check);
                    l.push(("reason", reason.as_str()));
                    w.counter(&l, *n);
                }
            }
        }),
    },
    Family {
        name: "o365_app_credential_expiry_timestamp_seconds",
        help: "When each client secret (type password) or certificate of the credential's app registration expires, as Microsoft Graph reports it; once known",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            let targets = c
                .cfg
                .graph
                .iter()
                .filter(|s| s.runs(crate::config::GraphCheck::AppCredentials))
                .flat_map(|s| s.app_targets.iter());
            for cred in targets {
                let Some(app) = c.graph.apps.get(cred) else {
                    continue;
                };
                for k in &app.keys {
                    if let Some(end) = k.end {
                        let l = Labels::of([
                            ("credential", cred.as_str()),
                            ("key_id", k.key_id.as_str()),
                            ("type", k.kind.as_str()),
                        ]);
                        w.gauge(&l, end as f64);
                    }
                }
            }
        }),
    },
    Family {
        name: "o365_mailbox_exchange_licensed",
        help: "Whether the mailbox's user holds an Exchange plan that is Enabled or in its Warning grace period; once known",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (m, l) in licences(c) {
                w.gauge(&l1("mailbox", m), b(l.status.licensed()));
            }
        }),
    },
    Family {
        name: "o365_mailbox_exchange_plan_status",
        help: "State of the mailbox user's Exchange plan (Enabled, Warning, Suspended, LockedOut, Deleted, none, other); one series per mailbox, value 1; once known",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (m, l) in licences(c) {
                w.gauge(
                    &Labels::of([("mailbox", m.as_str()), ("status", l.status.as_str())]),
                    1.0,
                );
            }
        }),
    },
    Family {
        name: "o365_service_status",
        help: "Status of the service as Microsoft's service health reports it (serviceOperational, serviceDegradation, ...); one series per credential and service, value 1; once known",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, h) in health(c) {
                let l = Labels::of([
                    ("credential", s.credential.as_str()),
                    ("service", h.service.as_str()),
                    ("status", h.status),
                ]);
                w.gauge(&l, 1.0);
            }
        }),
    },
    Family {
        name: "o365_service_issues_open",
        help: "Open (unresolved) service issues of the service, by classification (incident, advisory, other); once known",
        kind: Kind::Gauge,
        walk: Walk::Once(|w, c| {
            for (s, h) in health(c) {
                for (class, n) in &h.open {
                    let l = Labels::of([
                        ("credential", s.credential.as_str()),
                        ("service", h.service.as_str()),
                        ("classification", *class),
                    ]);
                    w.gauge(&l, *n as f64);
                }
            }
        }),
    },
];

fn mp<'a>(x: &Login<'a>) -> Labels<'a> {
    Labels::rendered(x.labels)
}

fn cc(credential: &str, check: crate::config::GraphCheck) -> Labels<'_> {
    Labels::of([("credential", credential), ("check", check.as_str())])
}

fn ts(v: Option<i64>) -> f64 {
    v.map(|x| x as f64).unwrap_or(0.0)
}

/// When the last run finished; 0 before the first.
fn last_check(r: &CheckRecord) -> f64 {
    let t = (r.runs != 0).then(|| r.latest.started + r.latest.duration);
    opt_ts(t)
}

/// Configured Graph checks that have a record, in configuration order.
fn graph_runs<'a>(
    c: &'a Ctx<'_>,
) -> impl Iterator<
    Item = (
        &'a crate::config::GraphSettings,
        crate::config::GraphCheck,
        &'a crate::graph::store::CheckRecord,
    ),
> + 'a {
    let graph = c.graph;
    c.cfg
        .graph
        .iter()
        .flat_map(|s| s.checks.iter().map(move |check| (s, *check)))
        .filter_map(move |(s, check)| {
            // The snapshot is keyed by an owned credential name; a handful of lookups a scrape.
            let r = graph.checks.get(&(s.credential.clone(), check))?;
            Some((s, check, r))
        })
}

fn licences<'a>(
    c: &'a Ctx<'_>,
) -> impl Iterator<Item = (&'a String, &'a crate::graph::store::LicenceFacts)> + 'a {
    let graph = c.graph;
    c.cfg
        .graph
        .iter()
        .flat_map(|s| s.licence_targets.iter())
        .filter_map(move |t| graph.licences.get(&t.mailbox).map(|l| (&t.mailbox, l)))
}

fn health<'a>(
    c: &'a Ctx<'_>,
) -> impl Iterator<
    Item = (
        &'a crate::config::GraphSettings,
        &'a crate::graph::store::HealthFacts,
    ),
> + 'a {
    let graph = c.graph;
    c.cfg
        .graph
        .iter()
        .filter_map(move |s| graph.health.get(&s.credential).map(|h| (s, h)))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_is_string_equality() {
        let words = [
            "",
            "a",
            "b",
            "mb0001",
            "mb0002",
            "mb000",
            "mb00011",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "abcdefghj",
            "bbcdefghi",
            "λ",
            "λx",
            "0123456789abcdef0",
            "0123456789abcdef1",
            "1123456789abcdef0",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
