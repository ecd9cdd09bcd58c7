//! `/metrics`: the exposition of the latest results held in [`State`]; never does I/O.
//!
//! A scrape is a [`Scrape`]: it takes the configuration snapshot, the token records and the
//! Graph results once, then writes the body a chunk at a time ([`Scrape::fill`]), taking the
//! state's read lock per chunk only, so a slow scraper never holds the lock and the whole body
//! (3.6 MB at 1,000 mailboxes, docs/benchmarks.md) never exists at once. A chunk ends between
//! two items of a family (an endpoint, a login...): every series line is whole and every family
//! contiguous under its one HELP/TYPE; the view is not one instant across chunks (a check may
//! publish in between), which a scrape does not need.
//!
//! The lines are written by the hand-written writer in [`text`], byte-identical to
//! prometheus-client's encoders, which stay compiled as the reference ([`reference`]): the tests
//! below compare the two in both formats.
//!
//! Every configured check has its series from the first scrape (pending checks report
//! `reason="pending"`). Label values are bounded: configured short names, closed enums (`reason`,
//! `phase`, `protocol`, `tls`), never e-mail addresses or free text. The names and meanings are
//! the contract in `docs/metrics.md`, which a test compares with a live scrape.

mod families;
pub mod reference;
mod text;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, TlsMode};
use crate::graph::store::Snapshot;
use crate::probe::{Phase, Protocol};
use crate::state::{unix, CheckKey, CheckRecord, ReloadStatus, State, TokenRecord};
use families::{Ctx, Login, Records, Walk, FAMILIES};
use text::{Labels, LeCache, Writer};

pub use reference::{registry, registry_at, render_reference};

/// Content types of the two formats.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape of `/metrics` in progress: what it read at its start, and where it is.
#[derive(Debug)]
pub struct Scrape {
    state: Arc<State>,
    cfg: Arc<Config>,
    tokens: BTreeMap<String, TokenRecord>,
    graph: Snapshot,
    reload: ReloadStatus,
    now_s: f64,
    /// Every configured login, in configuration order: index into `cfg.mailboxes`, protocol,
    /// and where its labels are in `login_labels`.
    logins: Vec<(u32, Protocol, u32, u32)>,
    /// `mailbox="...",protocol="..."` of every login, rendered once for its ~14 series.
    login_labels: Vec<u8>,
    /// The sample name of the family being written (see `text::Writer::new`).
    series: String,
    openmetrics: bool,
    /// Index into `FAMILIES` of the family being written.
    family: usize,
    /// Next item of that family's list.
    item: usize,
    header_written: bool,
    done: bool,
    le: LeCache,
}

impl Scrape {
    /// Start a scrape of `state` under `cfg` (the snapshot the whole scrape uses), in the
    /// Prometheus text format 0.0.4, or OpenMetrics 1.0 when `openmetrics`.
    pub fn new(state: Arc<State>, cfg: Arc<Config>, openmetrics: bool) -> Scrape {
        Scrape::at(state, cfg, openmetrics, SystemTime::now())
    }

    /// [`Scrape::new`] with the scrape's clock (`o365_token_age_seconds`) at `now`.
    pub fn at(state: Arc<State>, cfg: Arc<Config>, openmetrics: bool, now: SystemTime) -> Scrape {
        let mut login_labels = Vec::new();
        let mut logins = Vec::new();
        // u32 offsets: a configuration is far below 4 GB of labels (and a login past it is
        // skipped by the bounds checks where it is read, not mislabelled).
        let at = |v: &Vec<u8>| u32::try_from(v.len()).unwrap_or(u32::MAX);
        for (i, m) in cfg.mailboxes.iter().enumerate() {
            for p in &m.protocols {
                let start = at(&login_labels);
                text::render_labels(
                    &mut login_labels,
                    &[("mailbox", m.name.as_str()), ("protocol", p.as_str())],
                );
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                logins.push((i, *p, start, at(&login_labels)));
            }
        }
        Scrape {
            tokens: state.tokens(),
            graph: state.graph.snapshot(),
            reload: state.reload_status(),
            now_s: unix(now),
            state,
            cfg,
            logins,
            login_labels,
            series: String::new(),
            openmetrics,
            family: 0,
            item: 0,
            header_written: false,
            done: false,
            le: LeCache::default(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        if self.openmetrics {
            CONTENT_TYPE_OPENMETRICS
        } else {
            CONTENT_TYPE_TEXT
        }
    }

    /// Append the next part of the body to `out`: items until `out` holds at least `limit`
    /// bytes (the item that crosses it is written whole), or the end. Returns whether more
    /// follows; once it returned false, it appends nothing.
    pub fn fill(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        if self.done {
            return false;
        }
        let state = Arc::clone(&self.state);
        let more = state.with_checks(|checks| self.fill_locked(checks, out, limit));
        if !more {
            if self.openmetrics {
                out.extend_from_slice(b"# EOF\n");
            }
            self.done = true;
        }
        more
    }

    fn fill_locked(
        &mut self,
        checks: &BTreeMap<CheckKey, CheckRecord>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> bool {
        let ctx = Ctx {
            cfg: &self.cfg,
            tokens: &self.tokens,
            graph: &self.graph,
            reload: &self.reload,
            started: self.state.started,
            now_s: self.now_s,
        };
        let cfg = ctx.cfg;
        let (item, le, series) = (&mut self.item, &mut self.le, &mut self.series);
        let mut records = Records::new(checks);
        while let Some(f) = FAMILIES.get(self.family) {
            let mut w = Writer::new(out, self.openmetrics, f.name, f.kind, series, le);
            if !self.header_written {
                w.header(f.help);
                self.header_written = true;
            }
            let more = match f.walk {
                Walk::Once(emit) => {
                    emit(&mut w, &ctx);
                    false
                }
                Walk::Endpoints(emit) => walk(&mut w, item, cfg.endpoints.len(), limit, |w, i| {
                    let Some(ep) = cfg.endpoints.get(i) else {
                        return;
                    };
                    if let Some(r) = records.endpoint(&ep.name) {
                        emit(w, ep, r);
                    }
                }),
                Walk::Credentials(emit) => {
                    walk(&mut w, item, cfg.credentials.len(), limit, |w, i| {
                        let Some(c) = cfg.credentials.get(i) else {
                            return;
                        };
                        if let Some(t) = ctx.tokens.get(&c.name) {
                            emit(w, &ctx, c, t);
                        }
                    })
                }
                Walk::Logins(emit) => walk(&mut w, item, self.logins.len(), limit, |w, i| {
                    let Some(&(mi, p, start, end)) = self.logins.get(i) else {
                        return;
                    };
                    let (Some(m), Some(labels)) = (
                        cfg.mailboxes.get(mi as usize),
                        self.login_labels.get(start as usize..end as usize),
                    ) else {
                        return;
                    };
                    if let Some(r) = records.login(&m.name, p) {
                        emit(w, &Login { m, p, labels }, r);
                    }
                }),
                Walk::Mailboxes(emit) => walk(&mut w, item, cfg.mailboxes.len(), limit, |w, i| {
                    if let Some(m) = cfg.mailboxes.get(i) {
                        emit(w, m, &mut records);
                    }
                }),
            };
            if more {
                return true;
            }
            self.family += 1;
            *item = 0;
            self.header_written = false;
            if out.len() >= limit && self.family < FAMILIES.len() {
                return true;
            }
        }
        false
    }
}

/// Write items `*item..len` with `one`, stopping after the one that fills the buffer to
/// `limit`. Returns whether items are left.
fn walk(
    w: &mut Writer<'_>,
    item: &mut usize,
    len: usize,
    limit: usize,
    mut one: impl FnMut(&mut Writer<'_>, usize),
) -> bool {
    while *item < len {
        one(w, *item);
        *item += 1;
        if w.out.len() >= limit && *item < len {
            return true;
        }
    }
    false
}

/// The whole body of one scrape at once (tests, benches, tools; `/metrics` streams it).
pub fn render(state: Arc<State>, cfg: Arc<Config>, openmetrics: bool) -> String {
    render_scrape(Scrape::new(state, cfg, openmetrics))
}

/// The whole body of `scrape`.
pub fn render_scrape(mut scrape: Scrape) -> String {
    let mut out = Vec::new();
    while scrape.fill(&mut out, usize::MAX) {}
    // The writer appends only `&str` pieces and ASCII, so this is UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Phases reported for an endpoint of each TLS mode (pre-created so series exist at once).
fn endpoint_phases(tls: TlsMode) -> &'static [Phase] {
    match tls {
        TlsMode::None => &[Phase::Dns, Phase::Connect],
        TlsMode::Implicit => &[Phase::Dns, Phase::Connect, Phase::Tls],
        _ => &[
            Phase::Dns,
            Phase::Connect,
            Phase::Greeting,
            Phase::Starttls,
            Phase::Tls,
        ],
    }
}

/// Phases of a login dialogue per protocol.
pub fn login_phases(p: Protocol, tls: TlsMode) -> &'static [Phase] {
    use Phase::*;
    match (
        tls.is_starttls() || p == Protocol::Smtp,
        p == Protocol::Pop3,
    ) {
        (true, false) => &[
            Dns, Connect, Greeting, Starttls, Tls, Capability, Auth, Mailbox, Logout,
        ],
        (true, true) => &[Dns, Connect, Greeting, Starttls, Tls, Auth, Mailbox, Logout],
        (false, false) => &[
            Dns, Connect, Tls, Greeting, Capability, Auth, Mailbox, Logout,
        ],
        (false, true) => &[Dns, Connect, Tls, Greeting, Auth, Mailbox, Logout],
    }
}

fn l1<'a>(k: &'static str, v: &'a str) -> Labels<'a> {
    Labels::of([(k, v)])
}

fn opt_ts(t: Option<SystemTime>) -> f64 {
    t.map(unix).unwrap_or(0.0)
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// Metric family names as exposed (with `_total`/`_info`), for the documentation test.
pub fn exposed_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Outcome, Protocol};
    use std::collections::BTreeMap;

    const DOC: &str = include_str!("../../docs/metrics.md");

    /// `name -> (type, labels)` from the tables in docs/metrics.md.
    fn documented() -> BTreeMap<String, (String, Vec<String>)> {
        let mut out = BTreeMap::new();
        for line in DOC.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 5 || !cells[1].starts_with("`o365_") {
                continue;
            }
            let name = cells[1].trim_matches('`').to_string();
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .filter(|l| !l.is_empty())
                .collect();
            out.insert(name, (cells[2].to_string(), labels));
        }
        out
    }

    fn full_config() -> Config {
        let yaml = "\
endpoints:
  - {name: smtp, service: smtp}
credentials:
  - name: app
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    secret_expires: 2027-01-31
  - name: reader
    tenant: contoso.onmicrosoft.com
    client_id: 22222222-2222-3333-4444-555555555555
    grant: client_credentials
    client_secret_file: config/secrets/example-client-secret.txt
    graph: {}
mailboxes:
  - name: support
    address: support@contoso.com
    credential: app
    protocols: [imap, pop3, smtp]
";
        crate::config::load_str(yaml, "t.yaml", std::path::Path::new(".")).expect("valid")
    }

    /// Families, types and label names of a full scrape.
    fn exposed(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
        let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (n, t) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                out.insert(n.to_string(), (t.to_string(), Vec::new()));
            }
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.contains_key(*f)))
                .unwrap_or(name);
            let Some((_, labels)) = out.get_mut(family) else {
                continue;
            };
            if let Some(inner) = l
                .split_once('{')
                .and_then(|(_, r)| r.split_once('}'))
                .map(|(i, _)| i)
            {
                for kv in inner.split(',') {
                    let k = kv.split('=').next().unwrap_or("").to_string();
                    if k != "le" && !k.is_empty() && !labels.contains(&k) {
                        labels.push(k);
                    }
                }
            }
        }
        out
    }

    /// One result of each Graph check, with facts, so every Graph family has a series.
    fn graph_facts(state: &State, cfg: &Config) {
        use crate::config::GraphCheck;
        use crate::graph::model::{KeyKind, PlanStatus};
        use crate::graph::store::*;
        use crate::graph::GraphReason;
        state.graph.reconcile(&cfg.graph);
        let hour = std::time::Duration::from_secs(3600);
        let run = |reason, facts| RunOutcome {
            reason,
            detail: String::new(),
            requests: 1,
            duration: std::time::Duration::ZERO,
            retry_after: None,
            facts,
        };
        let now = SystemTime::now();
        let app = Facts::Apps {
            found: vec![(
                "reader".into(),
                AppFacts {
                    reader: "reader".into(),
                    app_name: "ECE".into(),
                    keys: vec![AppKey {
                        key_id: "11111111-2222-3333-4444-555555555555".into(),
                        kind: KeyKind::Password,
                        name: "prod".into(),
                        start: None,
                        end: Some(1_800_000_000),
                        in_use: true,
                    }],
                    as_of: now,
                },
            )],
            missing: Vec::new(),
        };
        state.graph.publish(
            "reader",
            GraphCheck::AppCredentials,
            hour,
            run(GraphReason::Ok, app),
            None,
        );
        state.graph.publish(
            "reader",
            GraphCheck::AppCredentials,
            hour,
            run(GraphReason::Throttled, Facts::None),
            None,
        );
        let lic = Facts::Licences {
            found: vec![(
                "support".into(),
                LicenceFacts {
                    credential: "reader".into(),
                    status: PlanStatus::Enabled,
                    plans: Vec::new(),
                    licences: 1,
                    as_of: now,
                },
            )],
            missing: Vec::new(),
        };
        state.graph.publish(
            "reader",
            GraphCheck::Licenses,
            hour,
            run(GraphReason::Ok, lic),
            None,
        );
        let health = Facts::Health(HealthFacts {
            service: "Exchange Online".into(),
            status: "serviceDegradation",
            open: [("incident", 1), ("advisory", 0)].into_iter().collect(),
            issues: Vec::new(),
            as_of: now,
        });
        state.graph.publish(
            "reader",
            GraphCheck::ServiceHealth,
            hour,
            run(GraphReason::Ok, health),
            None,
        );
    }

    #[test]
    fn exposition_matches_docs_metrics_md() {
        let cfg = Arc::new(full_config());
        let state = Arc::new(State::new());
        state.reconcile_checks(&crate::schedule::check_keys(&cfg));
        state.reconcile_tokens(&[("app".into(), "refresh_token", Some(1_800_000_000))]);
        state.update_token("app", |t| {
            t.identity_match = Some(true);
            t.scopes = vec![("IMAP.AccessAsUser.All".into(), true)];
            *t.failures.entry("network").or_insert(0) += 1;
        });
        let mut o = Outcome::pending();
        o.reason = crate::probe::Reason::Dns;
        o.tls = Some(crate::probe::TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            cert_not_after: Some(1_800_000_000),
            ..Default::default()
        });
        o.messages = Some(3);
        state.publish(&CheckKey::Endpoint("smtp".into()), o.clone(), None);
        state.publish(
            &CheckKey::Login {
                mailbox: "support".into(),
                protocol: Protocol::Imap,
            },
            o,
            None,
        );
        graph_facts(&state, &cfg);
        let text = render(state, cfg, false);
        let got = exposed(&text);
        let doc = documented();
        assert!(
            doc.len() >= 35,
            "docs/metrics.md tables not found ({} rows)",
            doc.len()
        );
        let got_names: Vec<&String> = got.keys().collect();
        let doc_names: Vec<&String> = doc.keys().collect();
        assert_eq!(got_names, doc_names, "families exposed vs documented");
        for (name, (ty, labels)) in &doc {
            let (gty, glabels) = &got[name];
            assert_eq!(ty, gty, "type of {name}");
            let mut a = labels.clone();
            let mut b = glabels.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "labels of {name}");
        }
        // OpenMetrics renders too, and ends with # EOF
        let reg_text = text.lines().count();
        assert!(reg_text > 50);
    }

    #[test]
    fn openmetrics_when_asked() {
        let cfg = Arc::new(full_config());
        let state = Arc::new(State::new());
        let om = render(state.clone(), cfg.clone(), true);
        assert!(om.ends_with("\n# EOF\n"));
        assert_eq!(om.matches("# EOF").count(), 1);
        let text = render(state, cfg, false);
        assert!(!text.contains("# EOF"));
    }

    /// A configuration with every shape of family: TLS modes none/implicit/STARTTLS, both
    /// grants, a shared mailbox, a POP3-only mailbox, mailboxes listed out of the state's order,
    /// and a Graph section.
    fn odd_config() -> Config {
        let yaml = "\
endpoints:
  - {name: smtp, service: smtp}
  - {name: plain, host: 127.0.0.1, port: 25, tls: none}
  - {name: imaps, host: 127.0.0.1, port: 993, tls: implicit}
  - {name: gone, host: 127.0.0.1, port: 995, tls: implicit}
credentials:
  - name: app
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    secret_expires: 2027-01-31
  - name: reader
    tenant: contoso.onmicrosoft.com
    client_id: 22222222-2222-3333-4444-555555555555
    grant: client_credentials
    client_secret_file: config/secrets/example-client-secret.txt
    graph: {}
mailboxes:
  - name: zulu
    address: zulu@contoso.com
    credential: app
    protocols: [smtp, imap]
  - name: support
    address: support@contoso.com
    credential: app
    protocols: [imap, pop3, smtp]
  - name: popper
    address: popper@contoso.com
    credential: reader
    protocols: [pop3]
  - name: shared
    address: shared@contoso.com
    credential: app
    login_as: agent@contoso.com
    protocols: [imap]
  - name: alpha
    address: alpha@contoso.com
    credential: app
    protocols: [imap, smtp]
";
        crate::config::load_str(yaml, "t.yaml", std::path::Path::new(".")).expect("valid")
    }

    /// State with pending checks, failures by several reasons, histograms with observations
    /// in and above the buckets (and a NaN and an infinite sum), label values that need
    /// escaping, Graph results, and one configured check without a record (as right after a
    /// reload).
    fn odd_state(cfg: &Config) -> Arc<State> {
        use crate::probe::{Phase, Reason, TlsFacts};
        let state = Arc::new(State::new());
        let keys: Vec<CheckKey> = crate::schedule::check_keys(cfg)
            .into_iter()
            .filter(|k| *k != CheckKey::Endpoint("gone".into()))
            .collect();
        state.reconcile_checks(&keys);
        let tls = TlsFacts {
            version: "TLSv1.3 \"quoted\"".into(),
            cipher: "back\\slash\nnewline".into(),
            cert_not_after: Some(1_800_000_000),
            verified: false,
            ..Default::default()
        };
        let mut n = 0u64;
        for key in keys
            .iter()
            .filter(|k| **k != CheckKey::Endpoint("plain".into()))
        {
            n += 1;
            for reason in [Reason::Dns, Reason::AuthRejected, Reason::Dns] {
                let mut o = Outcome::pending();
                o.reason = reason;
                o.started = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_millis(1_750_000_000_123 + n);
                o.duration = std::time::Duration::from_micros(1234 + n);
                o.phases = vec![
                    (Phase::Dns, std::time::Duration::from_nanos(1500 * n)),
                    (Phase::Tls, std::time::Duration::from_micros(31_000_000)),
                    (Phase::Auth, std::time::Duration::from_millis(7)),
                ];
                o.tls = Some(tls.clone());
                o.messages = Some(n);
                state.publish(key, o, None);
            }
            if n % 2 == 0 {
                let mut o = Outcome::pending();
                o.success = true;
                o.reason = Reason::Ok;
                o.started = SystemTime::now();
                o.messages = Some(n);
                state.publish(key, o, None);
            }
        }
        state.reconcile_tokens(&[
            ("app".into(), "refresh_token", Some(1_800_000_000)),
            ("reader".into(), "client_credentials", None),
        ]);
        state.update_token("app", |t| {
            t.identity_match = Some(false);
            t.scopes = vec![
                ("IMAP.AccessAsUser.All".into(), true),
                ("odd \"scope\" \\ with\nnewline λ".into(), false),
            ];
            *t.failures.entry("network").or_insert(0) += 2;
            *t.failures.entry("invalid_client").or_insert(0) += 1;
            t.issued = Some(1_750_000_000);
            t.refresh_token_rotated = Some(1_750_000_001);
            for v in [0.001, 0.03, 0.7, 12.0, 99.0] {
                t.request_duration.observe(v);
            }
        });
        state.update_token("reader", |t| {
            t.request_duration.observe(f64::NAN);
            t.last_attempt_success = Some(false);
            t.last_reason = "network";
        });
        state.update_token("app", |t| t.request_duration.observe(f64::INFINITY));
        graph_facts(&state, cfg);
        state
    }

    /// Both encoders' output on `state` under `cfg` in one format, at the same clock; the new
    /// one also written in chunks of every item (limit 1), which must join to the same body.
    fn both(state: &Arc<State>, cfg: &Arc<Config>, om: bool) -> (String, String, String) {
        use arc_swap::ArcSwap;
        let now = SystemTime::now();
        let reg = registry_at(
            state.clone(),
            Arc::new(ArcSwap::from(cfg.clone())),
            Some(now),
        );
        let reference = render_reference(&reg, om).expect("reference renders");
        let ours = render_scrape(Scrape::at(state.clone(), cfg.clone(), om, now));
        let mut scrape = Scrape::at(state.clone(), cfg.clone(), om, now);
        let mut chunked = Vec::new();
        let mut chunk = Vec::new();
        let mut chunks = 0;
        loop {
            chunk.clear();
            let more = scrape.fill(&mut chunk, 1);
            assert!(chunk.is_empty() || chunk.ends_with(b"\n"), "whole lines");
            chunked.extend_from_slice(&chunk);
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(chunks > 40, "one chunk per item: {chunks}");
        let mut after = Vec::new();
        assert!(
            !scrape.fill(&mut after, 1) && after.is_empty(),
            "nothing after the end"
        );
        (reference, ours, String::from_utf8(chunked).expect("utf-8"))
    }

    /// Line-by-line first, so a difference shows where it is; then the bytes.
    fn assert_same(reference: &str, ours: &str, what: &str) {
        for (i, (a, b)) in reference.lines().zip(ours.lines()).enumerate() {
            assert_eq!(a, b, "{what}: line {}", i + 1);
        }
        assert_eq!(reference.len(), ours.len(), "{what}: length");
        assert!(reference == ours, "{what}: bytes");
    }

    #[test]
    fn same_bytes_as_prometheus_client_on_odd_state() {
        let cfg = Arc::new(odd_config());
        let state = odd_state(&cfg);
        for om in [false, true] {
            let (reference, ours, chunked) = both(&state, &cfg, om);
            let what = if om { "openmetrics" } else { "text" };
            assert_same(&reference, &ours, what);
            assert_same(&reference, &chunked, what);
            // the fixture reaches what it is for
            for needle in [
                "\\\"quoted\\\"",
                "back\\\\slash\\nnewline",
                "reason=\"pending\"",
                "reason=\"auth_rejected\"",
                "le=\"+Inf\"",
                "o365_tls_handshake_duration_seconds_bucket",
                "o365_graph_check_failures_total",
                "o365_token_identity_match{credential=\"app\"} 0.0",
                "o365_mailbox_messages{mailbox=\"popper\"}",
                "shared=\"true\"",
            ] {
                assert!(ours.contains(needle), "{what}: no {needle:?}");
            }
            assert!(
                !ours.contains("endpoint=\"gone\""),
                "{what}: a check without record"
            );
            let nonfinite = if om {
                [" NaN\n", " inf\n"]
            } else {
                [" NaN\n", " +Inf\n"]
            };
            for v in nonfinite {
                assert!(ours.contains(v), "{what}: no {v:?}");
            }
        }
    }

    #[test]
    fn same_bytes_as_prometheus_client_when_nothing_ran() {
        let cfg = Arc::new(odd_config());
        let state = Arc::new(State::new());
        state.reconcile_checks(&crate::schedule::check_keys(&cfg));
        for om in [false, true] {
            let (reference, ours, chunked) = both(&state, &cfg, om);
            assert_same(&reference, &ours, "pending");
            assert_same(&reference, &chunked, "pending, chunked");
        }
    }

    /// A reload between two chunks: the scrape keeps its configuration, and items whose check
    /// is gone from the state are skipped; every family still appears once, whole.
    #[test]
    fn checks_removed_between_chunks_are_skipped() {
        let cfg = Arc::new(odd_config());
        let state = odd_state(&cfg);
        let mut scrape = Scrape::new(state.clone(), cfg.clone(), false);
        let mut out = Vec::new();
        assert!(scrape.fill(&mut out, 1));
        state.reconcile_checks(&[CheckKey::Endpoint("smtp".into())]);
        while scrape.fill(&mut out, 1) {}
        let text = String::from_utf8(out).expect("utf-8");
        let families = exposed_names(&text);
        assert_eq!(
            families.len(),
            text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            "each family once"
        );
        assert!(text.contains("o365_endpoint_up{endpoint=\"smtp\"}"));
        assert!(!text.contains("o365_login_success{"));
        assert!(text.contains("# TYPE o365_login_success gauge\n"));
    }
}
