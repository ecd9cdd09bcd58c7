//! The `check` command: every configured check once, now, with a verdict and the fix for each,
//! in the order an admin troubleshoots (configuration, DNS and ports, TLS, tokens, mailbox
//! logins, Microsoft Graph). It runs the very probes, token sources and Graph checks
//! ([`crate::graph::run_once`]) the exporter runs and renders the same
//! [`verdict`](crate::verdict)s as the status page, so the command and the running exporter never
//! disagree. Exit code: 0 all passed, 1 any failed, 2 configuration error.
//!
//! Warnings pass: a secret or certificate that expires within
//! [`SECRET_WARN_DAYS`](crate::config::lint::SECRET_WARN_DAYS) days (from the configuration's
//! `secret_expires` or, when the Graph check identified the key, from Graph, which then replaces
//! the configured date as it does for the exporter's metric), an Exchange licence in its grace
//! period, an open Microsoft incident. They are marked WARN with the fix and counted apart, and
//! leave the exit code 0: the integration works today, and a cron job or a post-change check must
//! not fail on a date a month ahead. An expired secret fails (exit 1).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{CheckArgs, CheckFormat, CheckGroup};
use crate::config::Config;
use crate::oauth::{TokenSource, TokenStore};
use crate::schedule::{check_keys, login_check, Plan};
use crate::state::{CheckKey, State};
use crate::verdict::{self, Kind, Verdict};

/// Version of the JSON report's schema (`docs/check-report.schema.json`). 2 added kind
/// `graph`, `warning` per check and `warnings`.
pub const REPORT_VERSION: u32 = 2;

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub exporter_version: &'static str,
    pub config: String,
    pub cloud: &'static str,
    pub generated_at: String,
    /// Passed checks, warnings included.
    pub passed: usize,
    pub failed: usize,
    /// Passed checks with a warning.
    pub warnings: usize,
    pub checks: Vec<Verdict>,
    /// The outbound proxy in use (never its password), for the text report; the JSON report
    /// shows it in each proxied check's `target` (the schema is unchanged).
    #[serde(skip)]
    pub proxy: Option<String>,
}

/// Progress lines on stderr, only when it is a terminal.
struct Progress {
    on: bool,
}

impl Progress {
    fn say(&self, what: &str) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K{what}");
            let _ = e.flush();
        }
    }

    fn done(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

fn wants(args: &CheckArgs, g: CheckGroup) -> bool {
    args.only.is_empty() || args.only.contains(&g)
}

/// Run the checks of `cfg` and build the report.
pub async fn collect(cfg: Arc<Config>, plan: Plan, args: &CheckArgs) -> Report {
    let progress = Progress {
        on: std::io::stderr().is_terminal(),
    };
    let state = Arc::new(State::new());
    state.reconcile_checks(&check_keys(&cfg));
    let sem = Arc::new(Semaphore::new(cfg.defaults.max_concurrent_checks));

    if wants(args, CheckGroup::Network) {
        let mut set = JoinSet::new();
        for ep in cfg.endpoints.clone() {
            let Some(tls) = plan.tls_for(&ep.ca_file).cloned() else {
                continue;
            };
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let o = crate::probe::endpoint::probe(&ep, &tls).await;
                (CheckKey::Endpoint(ep.name.clone()), o)
            });
        }
        let total = set.len();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            if let Ok((key, o)) = r {
                done += 1;
                progress.say(&format!("network: {done}/{total} checked ({})", key.id()));
                state.publish(&key, o, None);
            }
        }
    }
    progress.done();

    // Tokens: one acquisition per credential (the same token source as the exporter's).
    let need_tokens = wants(args, CheckGroup::Tokens) || wants(args, CheckGroup::Mailboxes);
    let mut sources: HashMap<String, Arc<TokenSource>> = HashMap::new();
    if need_tokens && !cfg.credentials.is_empty() {
        let store = Arc::new(TokenStore::new(&cfg.state_dir));
        let records: Vec<(String, &'static str, Option<i64>)> = cfg
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.grant.as_str(), c.secret_expires))
            .collect();
        state.reconcile_tokens(&records);
        let mut set = JoinSet::new();
        for c in &cfg.credentials {
            match TokenSource::new(Arc::new(c.clone()), store.clone(), state.clone()) {
                Ok(src) => {
                    let src = Arc::new(src);
                    sources.insert(c.name.clone(), src.clone());
                    let name = c.name.clone();
                    set.spawn(async move {
                        let _ = src.access_token().await;
                        name
                    });
                }
                Err(e) => {
                    let msg = e.to_string();
                    state.update_token(&c.name, |r| {
                        r.last_attempt_success = Some(false);
                        r.last_reason = "config_error";
                        r.detail = msg;
                    });
                }
            }
        }
        let total = set.len();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            done += 1;
            progress.say(&format!(
                "tokens: {done}/{total} ({})",
                r.unwrap_or_default()
            ));
        }
        progress.done();
    }

    // Mailbox logins, concurrently within the limit; one SMTP session per mailbox.
    if wants(args, CheckGroup::Mailboxes) {
        let mut set = JoinSet::new();
        for m in &cfg.mailboxes {
            for p in &m.protocols {
                let Some(tls) = plan.tls_for(&m.server(*p).ca_file).cloned() else {
                    continue;
                };
                let (mailbox, protocol, sem) = (Arc::new(m.clone()), *p, sem.clone());
                let source = sources.get(&m.credential).cloned();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let key = CheckKey::Login {
                        mailbox: mailbox.name.clone(),
                        protocol,
                    };
                    (key, login_check(&mailbox, protocol, tls, source).await)
                });
            }
        }
        let total = set.len();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            if let Ok((key, o)) = r {
                done += 1;
                progress.say(&format!("logins: {done}/{total} ({})", key.id()));
                state.publish(&key, o, None);
            }
        }
        progress.done();
    }

    // Graph: after the tokens (a Graph token failing as the credential's token did is then
    // explained by the token line above it); one run of each check, as the exporter's
    if wants(args, CheckGroup::Graph) && !cfg.graph.is_empty() {
        let n: usize = cfg.graph.iter().map(|g| g.checks.len()).sum();
        progress.say(&format!("graph: {n} checks"));
        crate::graph::run_once(&cfg, &state).await;
        progress.done();
    }
    let graph = state.graph.snapshot();
    let now = crate::state::unix(SystemTime::now()) as i64;

    let mut checks: Vec<Verdict> = Vec::new();
    for f in crate::config::lint::lint(&cfg, SystemTime::now()) {
        // a finding about `secret_expires`: Graph's date replaces it; a date ahead only warns
        let expires = cfg
            .credentials
            .iter()
            .enumerate()
            .find(|(i, _)| f.path == format!("credentials[{i}].secret_expires"))
            .map(|(_, c)| (c.name.as_str(), c.secret_expires));
        let mut warning = None;
        if let Some((name, at)) = expires {
            if graph_expiry(&graph, name).is_some() {
                continue;
            }
            if at.is_some_and(|t| t > now) {
                warning = Some(f.message.clone());
            }
        }
        checks.push(Verdict {
            kind: Kind::Config,
            name: f.path,
            target: cfg.source.clone(),
            success: warning.is_some(),
            reason: if warning.is_some() {
                "ok".into()
            } else {
                "config_inconsistent".into()
            },
            phases: Vec::new(),
            detail: f.message,
            hint: Some(f.hint),
            transcript: None,
            warning,
        });
    }
    checks.extend(
        verdict::all(&cfg, &state)
            .into_iter()
            .filter(|v| match v.kind {
                Kind::Config => true,
                Kind::Network | Kind::Tls => wants(args, CheckGroup::Network),
                Kind::Token => wants(args, CheckGroup::Tokens),
                Kind::Login => wants(args, CheckGroup::Mailboxes),
                Kind::Graph => wants(args, CheckGroup::Graph),
            }),
    );
    if wants(args, CheckGroup::Graph) {
        checks.extend(verdict::graph(&cfg, &graph, now));
    }
    let failed = checks.iter().filter(|v| !v.success).count();
    let warnings = checks
        .iter()
        .filter(|v| v.success && v.warning.is_some())
        .count();
    Report {
        version: REPORT_VERSION,
        exporter_version: crate::VERSION,
        config: cfg.source.clone(),
        cloud: cfg.cloud.name,
        generated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        passed: checks.len() - failed,
        failed,
        warnings,
        checks,
        proxy: cfg.proxy_summary(),
    }
}

/// The end date of credential `name`'s configured secret or certificate as Graph reported it.
fn graph_expiry(snap: &crate::graph::store::Snapshot, name: &str) -> Option<i64> {
    snap.apps
        .get(name)?
        .keys
        .iter()
        .filter(|k| k.in_use)
        .filter_map(|k| k.end)
        .min()
}

/// Render the report as text; `color` adds ANSI colours.
pub fn render_text(r: &Report, color: bool) -> String {
    let paint = |s: &str, code: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = format!(
        "o365-mail-exporter check: {} (cloud {}), {}\n",
        r.config, r.cloud, r.generated_at
    );
    if let Some(p) = &r.proxy {
        out.push_str(&format!("{p}\n"));
    }
    let name_w = r
        .checks
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(4)
        .min(40);
    let mut last: Option<Kind> = None;
    for v in &r.checks {
        if last != Some(v.kind) {
            out.push_str(&format!("\n{}\n", v.kind.title()));
            last = Some(v.kind);
        }
        let mark = match (v.success, &v.warning) {
            (true, None) => paint("PASS", "32"),
            (true, Some(_)) => paint("WARN", "1;33"),
            (false, _) => paint("FAIL", "1;31"),
        };
        let phases: Vec<String> = v
            .phases
            .iter()
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(p, ms)| format!("{p} {ms:.1}ms"))
            .collect();
        out.push_str(&format!("  {mark}  {:<name_w$}  {}", v.name, v.target));
        if !v.success {
            out.push_str(&format!("  reason={}", v.reason));
        }
        out.push('\n');
        if let Some(w) = &v.warning {
            out.push_str(&format!("        {} {w}\n", paint("warning:", "1;33")));
        }
        if !v.detail.is_empty() && v.warning.as_deref() != Some(v.detail.as_str()) {
            out.push_str(&format!("        {}\n", v.detail));
        }
        if !phases.is_empty() {
            out.push_str(&format!("        {}\n", phases.join(", ")));
        }
        if let Some(h) = &v.hint {
            out.push_str(&format!("        {} {h}\n", paint("fix:", "1")));
        }
    }
    if r.checks.is_empty() {
        out.push_str("\nnothing to check\n");
    }
    let mut summary = format!("{} passed, {} failed", r.passed, r.failed);
    if r.warnings > 0 {
        summary.push_str(&format!(
            ", {} warning{}",
            r.warnings,
            if r.warnings == 1 { "" } else { "s" }
        ));
    }
    out.push_str(&format!(
        "\n{}\n",
        match (r.failed, r.warnings) {
            (0, 0) => paint(&summary, "32"),
            (0, _) => paint(&summary, "1;33"),
            _ => paint(&summary, "1;31"),
        }
    ));
    out
}

/// The `check` subcommand.
pub async fn run(cfg: Config, plan: Plan, args: &CheckArgs) -> u8 {
    let report = collect(Arc::new(cfg), plan, args).await;
    let text = match args.format {
        CheckFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("cannot encode the report: {e}");
                return 1;
            }
        },
        CheckFormat::Text => render_text(&report, std::io::stdout().is_terminal()),
    };
    print!("{text}");
    if report.failed == 0 {
        0
    } else {
        1
    }
}
