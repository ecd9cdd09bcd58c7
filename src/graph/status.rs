//! The status page's "Microsoft Graph" section: each check's state (with the fix for a failure),
//! the app's keys with their
//! end dates, the mailbox licences, and the open service issues with their IDs and titles
//! (which are never metric labels). Everything is HTML-escaped; nothing here holds a secret or
//! a secret's hint.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::store::Snapshot;
use super::GraphReason;
use crate::config::Config;
use crate::http::status::{esc, when};

fn when_unix(t: Option<i64>) -> String {
    when(
        t.and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
    )
}

fn state(reason: GraphReason) -> &'static str {
    match reason {
        GraphReason::Pending => "<span class=\"pending\">PENDING</span>",
        GraphReason::Ok => "<span class=\"ok\">OK</span>",
        _ => "<span class=\"fail\">FAIL</span>",
    }
}

/// The section, or nothing when no credential has a `graph:` section.
pub fn section(cfg: &Config, snap: &Snapshot) -> String {
    if cfg.graph.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2>4. Microsoft Graph</h2>\n<table><tr><th>credential</th><th>check</th><th>state</th><th>reason</th><th>last check</th><th>last success</th><th>next run</th><th>detail</th></tr>\n");
    for g in &cfg.graph {
        for c in &g.checks {
            let Some(r) = snap.checks.get(&(g.credential.clone(), *c)) else {
                continue;
            };
            // the same fix text `check` prints (verdict.rs), so the page says what to do too
            // (not for a check that has not run yet: its state says PENDING already)
            let fix = (r.reason != GraphReason::Pending)
                .then(|| crate::verdict::graph_hint(*c, r.reason))
                .flatten()
                .map(|f| format!("<br><strong>fix:</strong> {}", esc(&f)))
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(&g.credential),
                c.as_str(),
                state(r.reason),
                r.reason.as_str(),
                when(r.last_check),
                when(r.last_success),
                when(r.next_run),
                esc(&r.detail),
                fix
            );
        }
    }
    h.push_str("</table>\n");

    if !snap.apps.is_empty() {
        h.push_str("<h3>App registration credentials</h3>\n<table><tr><th>credential</th><th>app</th><th>key id</th><th>type</th><th>name</th><th>valid from</th><th>expires</th><th>configured here</th></tr>\n");
        for (cred, a) in &snap.apps {
            let mut keys = a.keys.clone();
            keys.sort_by_key(|k| (k.end.unwrap_or(i64::MAX), k.key_id.clone()));
            for k in &keys {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(cred),
                    esc(&a.app_name),
                    esc(&k.key_id),
                    k.kind.as_str(),
                    esc(&k.name),
                    when_unix(k.start),
                    when_unix(k.end),
                    if k.in_use { "yes" } else { "" }
                );
            }
        }
        h.push_str("</table>\n");
    }

    if !snap.licences.is_empty() {
        h.push_str("<h3>Mailbox licences</h3>\n<table><tr><th>mailbox</th><th>credential</th><th>Exchange licensed</th><th>Exchange plan</th><th>licences</th><th>Exchange service plans</th><th>as of</th></tr>\n");
        for (m, l) in &snap.licences {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(m),
                esc(&l.credential),
                if l.status.licensed() {
                    "<span class=\"ok\">yes</span>"
                } else {
                    "<span class=\"fail\">no</span>"
                },
                l.status.as_str(),
                l.licences,
                esc(&l.plans.join(", ")),
                when(Some(l.as_of))
            );
        }
        h.push_str("</table>\n");
    }

    for (cred, s) in &snap.health {
        let n = |c: &str| s.open.get(c).copied().unwrap_or(0);
        let _ = writeln!(
            h,
            "<h3>Service health: {} (credential {})</h3>\n<p>Status <strong>{}</strong>; {} open incident(s), {} open advisory(ies); as of {}.</p>",
            esc(&s.service),
            esc(cred),
            s.status,
            n("incident"),
            n("advisory"),
            when(Some(s.as_of))
        );
        if !s.issues.is_empty() {
            h.push_str("<table><tr><th>id</th><th>classification</th><th>status</th><th>feature</th><th>since</th><th>last update</th><th>title</th></tr>\n");
            for i in &s.issues {
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&i.id),
                    i.classification,
                    i.status,
                    esc(&i.feature_group),
                    when_unix(i.start),
                    when_unix(i.last_modified),
                    esc(&i.title)
                );
            }
            h.push_str("</table>\n");
        }
    }
    h
}
