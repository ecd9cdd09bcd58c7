//! The reference encoder: the `/metrics` exposition through prometheus-client's registry and
//! its text encoders, as the exporter served it before the hand-written writer (`super::text`).
//!
//! Kept compiled on purpose: the project's design names prometheus-client, and the tests in
//! `super` compare the served exposition with this one byte for byte, in both formats, so the
//! two cannot drift apart unnoticed. The bench prints both encoders' times. Not on the serving
//! path: a scrape is streamed by [`super::Scrape`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::text::Labels;
use super::{b, endpoint_phases, l1, login_phases, opt_ts};
use crate::config::Config;
use crate::probe::Protocol;
use crate::state::{unix, CheckKey, CheckRecord, Histogram, State};

/// prometheus-client's view of a label set.
struct Set<'a, 'l>(&'a Labels<'l>);

impl EncodeLabelSet for Set<'_, '_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        debug_assert!(
            self.0.pre().is_empty(),
            "the reference gets label pairs only"
        );
        self.0.pairs().encode(encoder)
    }
}

/// Reads [`State`] (and the current config, for info series) on every scrape.
#[derive(Debug)]
pub struct Collector {
    state: Arc<State>,
    config: Arc<ArcSwap<Config>>,
    /// The clock of `o365_token_age_seconds`; fixed by the comparison tests, else now.
    now: Option<SystemTime>,
}

/// Build the reference registry.
pub fn registry(state: Arc<State>, config: Arc<ArcSwap<Config>>) -> Registry {
    registry_at(state, config, None)
}

/// The reference registry with its scrape clock fixed at `now` (when `Some`), so that its
/// output can be compared with [`super::Scrape::at`]'s.
pub fn registry_at(
    state: Arc<State>,
    config: Arc<ArcSwap<Config>>,
    now: Option<SystemTime>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Collector { state, config, now }));
    r
}

/// Render with prometheus-client in the Prometheus text format 0.0.4, or OpenMetrics 1.0 when
/// `openmetrics`.
pub fn render_reference(registry: &Registry, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    }
    Ok(out)
}

struct Enc<'a, 'b> {
    e: &'a mut DescriptorEncoder<'b>,
}

impl Enc<'_, '_> {
    fn gauge<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, f64)>,
    ) -> fmt::Result {
        let mut m = self
            .e
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (l, v) in samples {
            m.encode_family(&Set(&l))?.encode_gauge(&v)?;
        }
        Ok(())
    }

    /// `name` without `_total`; the encoder appends it.
    fn counter<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> fmt::Result {
        let mut m = self
            .e
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (l, v) in samples {
            m.encode_family(&Set(&l))?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }

    /// `name` without `_info`; the encoder appends it.
    fn info<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = Labels<'l>>,
    ) -> fmt::Result {
        let mut m = self
            .e
            .encode_descriptor(name, help, None, MetricType::Info)?;
        for l in samples {
            m.encode_info(&Set(&l))?;
        }
        Ok(())
    }

    fn histogram<'l, 'h>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, &'h Histogram)>,
    ) -> fmt::Result {
        let mut m = self
            .e
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for (l, h) in samples {
            buckets.clear();
            buckets.extend(h.bounds.iter().copied().zip(h.counts.iter().copied()));
            let in_buckets: u64 = h.counts.iter().sum();
            buckets.push((f64::INFINITY, h.count - in_buckets));
            m.encode_family(&Set(&l))?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // Encoded under the state's read lock instead of on a copy: copying every check's record
        // (transcripts included) cost more than encoding it. Publishing waits meanwhile; the
        // encode is CPU only, no I/O (docs/benchmarks.md has the figures).
        self.state
            .with_checks(|checks| self.encode_checks(checks, &mut encoder))
    }
}

impl Collector {
    fn encode_checks(
        &self,
        checks: &BTreeMap<CheckKey, CheckRecord>,
        encoder: &mut DescriptorEncoder,
    ) -> fmt::Result {
        let cfg = self.config.load();
        let tokens = self.state.tokens();
        let reload = self.state.reload_status();
        let now = self.now.unwrap_or_else(SystemTime::now);
        let mut e = Enc { e: encoder };

        // --- exporter ---
        e.info(
            "o365_exporter_build",
            "Build information of the exporter; value is always 1",
            [Labels::of([
                ("version", crate::VERSION),
                ("cloud", cfg.cloud.name),
            ])],
        )?;
        e.gauge(
            "o365_exporter_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or was refused (0)",
            [(Labels::NONE, if reload.successful { 1.0 } else { 0.0 })],
        )?;
        e.gauge(
            "o365_exporter_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load",
            [(Labels::NONE, unix(reload.last_success))],
        )?;
        e.gauge(
            "o365_exporter_start_time_seconds",
            "Time the exporter started",
            [(Labels::NONE, unix(self.state.started))],
        )?;

        // --- endpoints ---
        let eps: Vec<_> = cfg
            .endpoints
            .iter()
            .filter_map(|ep| {
                checks
                    .get(&CheckKey::Endpoint(ep.name.clone()))
                    .map(|r| (ep, r))
            })
            .collect();
        let ports: Vec<String> = eps.iter().map(|(ep, _)| ep.port.to_string()).collect();
        e.info(
            "o365_endpoint",
            "Configured endpoint: host, port and TLS mode; value is always 1",
            eps.iter().zip(&ports).map(|((ep, _), port)| {
                Labels::of([
                    ("endpoint", ep.name.as_str()),
                    ("host", ep.host.as_str()),
                    ("port", port.as_str()),
                    ("tls", ep.tls.as_str()),
                ])
            }),
        )?;
        e.gauge(
            "o365_endpoint_up",
            "Whether the last check of the endpoint succeeded (DNS, TCP, STARTTLS and TLS as configured)",
            eps.iter().map(|(ep, r)| (l1("endpoint", &ep.name), b(r.latest.success)))
        )?;
        e.gauge(
            "o365_endpoint_reason",
            "Reason of the last check of the endpoint (ok, pending or a failure reason); one series per endpoint, value 1",
            eps.iter()
                .map(|(ep, r)| (Labels::of([("endpoint", ep.name.as_str()), ("reason", r.latest.reason.as_str())]), 1.0))
        )?;
        e.gauge(
            "o365_endpoint_phase_duration_seconds",
            "Duration of each phase of the last check of the endpoint",
            eps.iter().flat_map(|(ep, r)| {
                endpoint_phases(ep.tls).iter().map(move |ph| {
                    (
                        Labels::of([("endpoint", ep.name.as_str()), ("phase", ph.as_str())]),
                        r.latest
                            .phase_duration(*ph)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0),
                    )
                })
            }),
        )?;
        e.gauge(
            "o365_endpoint_check_duration_seconds",
            "Total duration of the last check of the endpoint",
            eps.iter()
                .map(|(ep, r)| (l1("endpoint", &ep.name), r.latest.duration.as_secs_f64())),
        )?;
        e.gauge(
            "o365_endpoint_last_check_timestamp_seconds",
            "When the last check of the endpoint finished (0 before the first)",
            eps.iter().map(|(ep, r)| {
                let t = if r.runs == 0 {
                    None
                } else {
                    Some(r.latest.started + r.latest.duration)
                };
                (l1("endpoint", &ep.name), opt_ts(t))
            }),
        )?;
        e.gauge(
            "o365_endpoint_last_success_timestamp_seconds",
            "When a check of the endpoint last succeeded (0 if never since start)",
            eps.iter()
                .map(|(ep, r)| (l1("endpoint", &ep.name), opt_ts(r.last_success))),
        )?;
        e.counter(
            "o365_endpoint_checks",
            "Checks of the endpoint run since start",
            eps.iter().map(|(ep, r)| (l1("endpoint", &ep.name), r.runs)),
        )?;
        e.counter(
            "o365_endpoint_failures",
            "Failed checks of the endpoint since start, by reason",
            eps.iter().flat_map(|(ep, r)| {
                r.failures.iter().map(move |(reason, n)| {
                    (
                        Labels::of([("endpoint", ep.name.as_str()), ("reason", reason.as_str())]),
                        *n,
                    )
                })
            }),
        )?;
        let tls_eps: Vec<_> = eps
            .iter()
            .filter(|(ep, _)| ep.tls != crate::config::TlsMode::None)
            .collect();
        e.histogram(
            "o365_tls_handshake_duration_seconds",
            "Duration of completed TLS handshakes with the endpoint",
            tls_eps
                .iter()
                .map(|(ep, r)| (l1("endpoint", &ep.name), &r.tls_handshake)),
        )?;
        e.gauge(
            "o365_tls_cert_not_after_timestamp_seconds",
            "Expiry (notAfter) of the endpoint's leaf certificate, also when verification failed; present once a certificate was seen",
            tls_eps
                .iter()
                .filter_map(|(ep, r)| {
                    let t = r.latest.tls.as_ref()?.cert_not_after?;
                    Some((l1("endpoint", &ep.name), t as f64))
                })
        )?;
        e.gauge(
            "o365_tls_verify_success",
            "Whether the endpoint's certificate chain and name verified; present once a certificate was seen",
            tls_eps
                .iter()
                .filter_map(|(ep, r)| {
                    let t = r.latest.tls.as_ref()?;
                    t.cert_not_after?;
                    Some((l1("endpoint", &ep.name), b(t.verified)))
                })
        )?;
        e.info(
            "o365_tls",
            "TLS version and cipher suite negotiated by the last successful handshake with the endpoint",
            tls_eps
                .iter()
                .filter_map(|(ep, r)| {
                    let t = r.latest.tls.as_ref()?;
                    if t.version.is_empty() {
                        return None;
                    }
                    Some(Labels::of([
                        ("endpoint", ep.name.as_str()),
                        ("version", t.version.as_str()),
                        ("cipher", t.cipher.as_str()),
                    ]))
                })
        )?;

        // --- tokens ---
        let creds: Vec<_> = cfg
            .credentials
            .iter()
            .filter_map(|c| tokens.get(&c.name).map(|t| (c, t)))
            .collect();
        e.info(
            "o365_token",
            "Configured credential and its grant; value is always 1",
            creds.iter().map(|(c, _)| {
                Labels::of([("credential", c.name.as_str()), ("grant", c.grant.as_str())])
            }),
        )?;
        e.counter(
            "o365_token_requests",
            "Token requests sent to the identity platform",
            creds
                .iter()
                .map(|(c, t)| (l1("credential", &c.name), t.requests)),
        )?;
        e.counter(
            "o365_token_request_failures",
            "Failed token requests, by reason",
            creds.iter().flat_map(|(c, t)| {
                t.failures.iter().map(move |(reason, n)| {
                    (
                        Labels::of([("credential", c.name.as_str()), ("reason", *reason)]),
                        *n,
                    )
                })
            }),
        )?;
        e.gauge(
            "o365_token_refresh_success",
            "Whether the last token request succeeded (0 also before the first)",
            creds.iter().map(|(c, t)| {
                (
                    l1("credential", &c.name),
                    b(t.last_attempt_success == Some(true)),
                )
            }),
        )?;
        e.gauge(
            "o365_token_reason",
            "Reason of the last token request (ok, pending or a failure reason); one series per credential, value 1",
            creds
                .iter()
                .map(|(c, t)| (Labels::of([("credential", c.name.as_str()), ("reason", t.last_reason)]), 1.0))
        )?;
        let ts = |v: Option<i64>| v.map(|x| x as f64).unwrap_or(0.0);
        e.gauge(
            "o365_token_last_success_timestamp_seconds",
            "When a token was last obtained (0 if never since start)",
            creds
                .iter()
                .map(|(c, t)| (l1("credential", &c.name), ts(t.last_success))),
        )?;
        e.gauge(
            "o365_token_issued_timestamp_seconds",
            "When the access token in use was issued (0 if none)",
            creds
                .iter()
                .map(|(c, t)| (l1("credential", &c.name), ts(t.issued))),
        )?;
        e.gauge(
            "o365_token_expiry_timestamp_seconds",
            "When the access token in use expires (0 if none)",
            creds
                .iter()
                .map(|(c, t)| (l1("credential", &c.name), ts(t.expires))),
        )?;
        let now_s = unix(now);
        e.gauge(
            "o365_token_age_seconds",
            "Age of the access token in use, computed at scrape time (0 if none)",
            creds.iter().map(|(c, t)| {
                (
                    l1("credential", &c.name),
                    t.issued.map(|i| (now_s - i as f64).max(0.0)).unwrap_or(0.0),
                )
            }),
        )?;
        e.histogram(
            "o365_token_request_duration_seconds",
            "Duration of token requests",
            creds
                .iter()
                .map(|(c, t)| (l1("credential", &c.name), &t.request_duration)),
        )?;
        e.gauge(
            "o365_refresh_token_last_rotated_timestamp_seconds",
            "When the stored refresh token was last rotated (delegated credentials; 0 if unknown)",
            creds
                .iter()
                .filter(|(c, _)| c.grant == crate::config::GrantKind::RefreshToken)
                .map(|(c, t)| (l1("credential", &c.name), ts(t.refresh_token_rotated))),
        )?;
        e.gauge(
            "o365_token_identity_match",
            "Whether the token belongs to expected_identity (1), to someone else (0); absent when unknown",
            creds
                .iter()
                .filter_map(|(c, t)| Some((l1("credential", &c.name), b(t.identity_match?))))
        )?;
        e.gauge(
            "o365_token_scope_present",
            "Whether the token carries each scope or role the configured protocols need; absent when the token is opaque",
            creds
                .iter()
                .flat_map(|(c, t)| {
                    t.scopes
                        .iter()
                        .map(move |(s, ok)| (Labels::of([("credential", c.name.as_str()), ("scope", s.as_str())]), b(*ok)))
                })
        )?;
        e.gauge(
            "o365_client_secret_expiry_timestamp_seconds",
            "When the credential's client secret or certificate expires (from secret_expires); absent when unknown",
            creds
                .iter()
                .filter_map(|(c, t)| Some((l1("credential", &c.name), t.secret_expires? as f64)))
        )?;

        // --- mailbox logins ---
        let logins: Vec<_> = cfg
            .mailboxes
            .iter()
            .flat_map(|m| m.protocols.iter().map(move |p| (m, *p)))
            .filter_map(|(m, p)| {
                let key = CheckKey::Login {
                    mailbox: m.name.clone(),
                    protocol: p,
                };
                checks.get(&key).map(|r| (m, p, r))
            })
            .collect();
        fn mp(m: &crate::config::Mailbox, p: Protocol) -> Labels<'_> {
            Labels::of([("mailbox", m.name.as_str()), ("protocol", p.as_str())])
        }
        e.info(
            "o365_mailbox",
            "Configured mailbox: its credential and whether it is reached through a delegate (shared mailbox); value is always 1",
            cfg.mailboxes
                .iter()
                .map(|m| {
                    Labels::of([
                        ("mailbox", m.name.as_str()),
                        ("credential", m.credential.as_str()),
                        ("shared", if m.login_as.is_some() { "true" } else { "false" }),
                    ])
                })
        )?;
        e.gauge(
            "o365_login_success",
            "Whether the last login to the mailbox over the protocol succeeded, including the mailbox command after authentication",
            logins.iter().map(|(m, p, r)| (mp(m, *p), b(r.latest.success)))
        )?;
        e.gauge(
            "o365_login_reason",
            "Reason of the last login (ok, pending or a failure reason); one series per mailbox and protocol, value 1",
            logins
                .iter()
                .map(|(m, p, r)| {
                    let mut l = mp(m, *p);
                    l.push(("reason", r.latest.reason.as_str()));
                    (l, 1.0)
                })
        )?;
        e.gauge(
            "o365_login_phase_duration_seconds",
            "Duration of each phase of the last login",
            logins.iter().flat_map(|(m, p, r)| {
                login_phases(*p, m.server(*p).tls).iter().map(move |&ph| {
                    let mut l = mp(m, *p);
                    l.push(("phase", ph.as_str()));
                    (
                        l,
                        r.latest
                            .phase_duration(ph)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0),
                    )
                })
            }),
        )?;
        e.counter(
            "o365_login_attempts",
            "Logins attempted since start",
            logins.iter().map(|(m, p, r)| (mp(m, *p), r.runs)),
        )?;
        e.counter(
            "o365_login_failures",
            "Failed logins since start, by reason",
            logins.iter().flat_map(|(m, p, r)| {
                r.failures.iter().map(move |(reason, n)| {
                    let mut l = mp(m, *p);
                    l.push(("reason", reason.as_str()));
                    (l, *n)
                })
            }),
        )?;
        e.gauge(
            "o365_login_last_check_timestamp_seconds",
            "When the last login attempt finished (0 before the first)",
            logins.iter().map(|(m, p, r)| {
                let t = if r.runs == 0 {
                    None
                } else {
                    Some(r.latest.started + r.latest.duration)
                };
                (mp(m, *p), opt_ts(t))
            }),
        )?;
        e.gauge(
            "o365_login_last_success_timestamp_seconds",
            "When a login last succeeded (0 if never since start)",
            logins
                .iter()
                .map(|(m, p, r)| (mp(m, *p), opt_ts(r.last_success))),
        )?;
        // INBOX count: IMAP's EXAMINE if the mailbox is checked over IMAP, else POP3's STAT.
        e.gauge(
            "o365_mailbox_messages",
            "Messages in the mailbox's INBOX at the last successful IMAP (else POP3) login; a growing count means the product's retriever has stalled",
            cfg.mailboxes
                .iter()
                .filter_map(|m| {
                    let pick = [Protocol::Imap, Protocol::Pop3].into_iter().find(|p| m.protocols.contains(p))?;
                    let r = checks.get(&CheckKey::Login {
                        mailbox: m.name.clone(),
                        protocol: pick,
                    })?;
                    Some((l1("mailbox", &m.name), r.latest.messages? as f64))
                })
        )?;
        graph(&mut e, &cfg, &self.state.graph.snapshot())?;
        Ok(())
    }
}

/// The Microsoft Graph checks' families (see `crate::graph`).
fn graph(e: &mut Enc<'_, '_>, cfg: &Config, g: &crate::graph::store::Snapshot) -> fmt::Result {
    let runs: Vec<_> = cfg
        .graph
        .iter()
        .flat_map(|s| s.checks.iter().map(move |c| (s, *c)))
        .filter_map(|(s, c)| g.checks.get(&(s.credential.clone(), c)).map(|r| (s, c, r)))
        .collect();
    fn cc(s: &crate::config::GraphSettings, c: crate::config::GraphCheck) -> Labels<'_> {
        Labels::of([("credential", s.credential.as_str()), ("check", c.as_str())])
    }
    e.gauge(
        "o365_graph_check_success",
        "Whether the last run of the Microsoft Graph check succeeded",
        runs.iter()
            .map(|(s, c, r)| (cc(s, *c), b(r.reason == crate::graph::GraphReason::Ok)))
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_graph_check_reason",
        "Reason of the last run of the Microsoft Graph check (ok, pending or a failure reason); one series per credential and check, value 1",
        runs.iter()
            .map(|(s, c, r)| {
                let mut l = cc(s, *c);
                l.push(("reason", r.reason.as_str()));
                (l, 1.0)
            })
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_graph_last_check_timestamp_seconds",
        "When the last run of the Microsoft Graph check finished (0 before the first)",
        runs.iter()
            .map(|(s, c, r)| (cc(s, *c), opt_ts(r.last_check)))
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_graph_last_success_timestamp_seconds",
        "When the Microsoft Graph check last succeeded (0 if never since start)",
        runs.iter()
            .map(|(s, c, r)| (cc(s, *c), opt_ts(r.last_success)))
            .collect::<Vec<_>>(),
    )?;
    e.counter(
        "o365_graph_requests",
        "Requests sent to Microsoft Graph by the check",
        runs.iter()
            .map(|(s, c, r)| (cc(s, *c), r.requests))
            .collect::<Vec<_>>(),
    )?;
    e.counter(
        "o365_graph_check_failures",
        "Failed runs of the Microsoft Graph check since start, by reason",
        runs.iter()
            .flat_map(|(s, c, r)| {
                r.failures.iter().map(move |(reason, n)| {
                    let mut l = cc(s, *c);
                    l.push(("reason", reason.as_str()));
                    (l, *n)
                })
            })
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_app_credential_expiry_timestamp_seconds",
        "When each client secret (type password) or certificate of the credential's app registration expires, as Microsoft Graph reports it; once known",
        cfg.graph
            .iter()
            .filter(|s| s.runs(crate::config::GraphCheck::AppCredentials))
            .flat_map(|s| s.app_targets.iter())
            .filter_map(|c| g.apps.get(c).map(|a| (c, a)))
            .flat_map(|(c, a)| {
                a.keys.iter().filter_map(move |k| {
                    Some((
                        Labels::of([
                            ("credential", c.as_str()),
                            ("key_id", k.key_id.as_str()),
                            ("type", k.kind.as_str()),
                        ]),
                        k.end? as f64,
                    ))
                })
            })
            .collect::<Vec<_>>(),
    )?;
    let lic: Vec<_> = cfg
        .graph
        .iter()
        .flat_map(|s| s.licence_targets.iter())
        .filter_map(|t| g.licences.get(&t.mailbox).map(|l| (&t.mailbox, l)))
        .collect();
    e.gauge(
        "o365_mailbox_exchange_licensed",
        "Whether the mailbox's user holds an Exchange plan that is Enabled or in its Warning grace period; once known",
        lic.iter()
            .map(|(m, l)| (l1("mailbox", m), b(l.status.licensed())))
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_mailbox_exchange_plan_status",
        "State of the mailbox user's Exchange plan (Enabled, Warning, Suspended, LockedOut, Deleted, none, other); one series per mailbox, value 1; once known",
        lic.iter()
            .map(|(m, l)| {
                (
                    Labels::of([("mailbox", m.as_str()), ("status", l.status.as_str())]),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    )?;
    let health: Vec<_> = cfg
        .graph
        .iter()
        .filter_map(|s| g.health.get(&s.credential).map(|h| (s, h)))
        .collect();
    e.gauge(
        "o365_service_status",
        "Status of the service as Microsoft's service health reports it (serviceOperational, serviceDegradation, ...); one series per credential and service, value 1; once known",
        health
            .iter()
            .map(|(s, h)| {
                (
                    Labels::of([
                        ("credential", s.credential.as_str()),
                        ("service", h.service.as_str()),
                        ("status", h.status),
                    ]),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    )?;
    e.gauge(
        "o365_service_issues_open",
        "Open (unresolved) service issues of the service, by classification (incident, advisory, other); once known",
        health
            .iter()
            .flat_map(|(s, h)| {
                h.open.iter().map(move |(class, n)| {
                    (
                        Labels::of([
                            ("credential", s.credential.as_str()),
                            ("service", h.service.as_str()),
                            ("classification", *class),
                        ]),
                        *n as f64,
                    )
                })
            })
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}
