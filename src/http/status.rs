//! The status page and the per-check transcript pages: plain HTML, no JavaScript, readable in any
//! browser and in a terminal browser. Every value is HTML-escaped; nothing here holds secrets
//! (transcripts are redacted when recorded).

use std::fmt::Write as _;
use std::time::SystemTime;

use super::Web;
use crate::probe::Outcome;
use crate::state::{CheckKey, CheckRecord};

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// `2026-11-28T22:21:35Z` or `never`.
pub fn when(t: Option<SystemTime>) -> String {
    match t {
        Some(t) if t > SystemTime::UNIX_EPOCH => humantime::format_rfc3339_seconds(t).to_string(),
        _ => "never".to_string(),
    }
}

fn when_unix(t: Option<i64>) -> String {
    when(
        t.and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)),
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#eee}\
.ok{color:#0a6b0a;font-weight:bold}.fail{color:#b00020;font-weight:bold}.pending{color:#777;font-weight:bold}\
code,pre{font-family:monospace}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}

/// `OK`, `FAIL` or `PENDING` with its class.
pub fn state_cell(o: &Outcome) -> String {
    if o.is_pending() {
        "<span class=\"pending\">PENDING</span>".to_string()
    } else if o.success {
        "<span class=\"ok\">OK</span>".to_string()
    } else {
        "<span class=\"fail\">FAIL</span>".to_string()
    }
}

fn link(key: &CheckKey) -> String {
    format!("<a href=\"/checks/{}\">transcript</a>", esc(&key.id()))
}

/// The status page.
pub fn page(web: &Web) -> String {
    let cfg = web.config.load();
    let checks = web.state.checks();
    let tokens = web.state.tokens();
    let reload = web.state.reload_status();
    let mut h = head("o365-mail-exporter");
    let _ = write!(
        h,
        "<h1>o365-mail-exporter</h1>\n<p>Version {} &middot; configuration <code>{}</code> (cloud {}) &middot; <a href=\"{}\">metrics</a></p>\n",
        esc(crate::VERSION),
        esc(&cfg.source),
        esc(cfg.cloud.name),
        esc(&web.telemetry_path)
    );
    if !reload.successful {
        let _ = writeln!(
            h,
            "<p class=\"fail\">The last configuration reload was refused; the previous configuration is still in use:</p><pre>{}</pre>",
            esc(reload.last_error.as_deref().unwrap_or(""))
        );
    }

    h.push_str("<h2>1. Network and TLS</h2>\n<table><tr><th>endpoint</th><th>target</th><th>state</th><th>reason</th><th>failed phase</th><th>TLS</th><th>certificate expires</th><th>last check</th><th>last success</th><th>detail</th><th></th></tr>\n");
    for ep in &cfg.endpoints {
        let key = CheckKey::Endpoint(ep.name.clone());
        let Some(r) = checks.get(&key) else { continue };
        let o = &r.latest;
        let tls = o
            .tls
            .as_ref()
            .map(|t| {
                if t.version.is_empty() {
                    String::new()
                } else {
                    format!("{} {}", t.version, t.cipher)
                }
            })
            .unwrap_or_default();
        let cert = o
            .tls
            .as_ref()
            .and_then(|t| t.cert_not_after)
            .map(|t| when_unix(Some(t)))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}:{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&ep.name),
            esc(&ep.host),
            ep.port,
            esc(ep.tls.as_str()),
            state_cell(o),
            esc(o.reason.as_str()),
            esc(o.failed_phase.map(|p| p.as_str()).unwrap_or("")),
            esc(&tls),
            esc(&cert),
            last_check(r),
            when(r.last_success),
            detail_with_fix(&o.detail, o.success, o.reason.as_str()),
            link(&key)
        );
    }
    h.push_str("</table>\n");

    if !cfg.credentials.is_empty() {
        h.push_str("<h2>2. Tokens</h2>\n<table><tr><th>credential</th><th>grant</th><th>state</th><th>reason</th><th>last success</th><th>expires</th><th>identity</th><th>scopes</th><th>secret expires</th><th>detail</th></tr>\n");
        for c in &cfg.credentials {
            let Some(t) = tokens.get(&c.name) else {
                continue;
            };
            // the same verdict as the `check` command (wrong identity or missing scope fail)
            let v = crate::verdict::token(c, t);
            let state = match (t.last_attempt_success, v.success) {
                (None, _) => "<span class=\"pending\">PENDING</span>",
                (Some(_), true) => "<span class=\"ok\">OK</span>",
                (Some(_), false) => "<span class=\"fail\">FAIL</span>",
            };
            let identity = match (t.identity_match, &t.identity_seen, &c.expected_identity) {
                (Some(true), Some(s), _) => format!("{s} (as expected)"),
                (Some(false), Some(s), Some(e)) => format!("{s} — expected {e}"),
                (_, Some(s), _) => s.clone(),
                _ => String::new(),
            };
            let scopes: Vec<String> = t
                .scopes
                .iter()
                .map(|(s, ok)| format!("{s}{}", if *ok { "" } else { " (missing)" }))
                .collect();
            let secret = match t.secret_expires {
                Some(s) => format!("{} (from {})", when_unix(Some(s)), t.secret_expires_source),
                None => String::new(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                esc(c.grant.as_str()),
                esc(&v.reason),
                when_unix(t.last_success),
                when_unix(t.expires),
                esc(&identity),
                esc(&scopes.join(", ")),
                esc(&secret),
                detail_with_fix(&v.detail, v.success, &v.reason)
            );
        }
        h.push_str("</table>\n");
    }

    if !cfg.mailboxes.is_empty() {
        h.push_str("<h2>3. Mailbox logins</h2>\n<table><tr><th>mailbox</th><th>protocol</th><th>server</th><th>state</th><th>reason</th><th>failed phase</th><th>messages</th><th>last check</th><th>last success</th><th>detail</th><th></th></tr>\n");
        for m in &cfg.mailboxes {
            for p in &m.protocols {
                let key = CheckKey::Login {
                    mailbox: m.name.clone(),
                    protocol: *p,
                };
                let Some(r) = checks.get(&key) else { continue };
                let o = &r.latest;
                let srv = m.server(*p);
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.name),
                    p.as_str(),
                    esc(&srv.host),
                    srv.port,
                    state_cell(o),
                    esc(o.reason.as_str()),
                    esc(o.failed_phase.map(|p| p.as_str()).unwrap_or("")),
                    o.messages.map(|n| n.to_string()).unwrap_or_default(),
                    last_check(r),
                    when(r.last_success),
                    detail_with_fix(&o.detail, o.success, o.reason.as_str()),
                    link(&key)
                );
            }
        }
        h.push_str("</table>\n");
    }
    h.push_str(&crate::graph::status::section(
        &cfg,
        &web.state.graph.snapshot(),
    ));
    h.push_str("<p>Reasons and their fixes: see docs/reasons.md and docs/tokens.md in the project.</p>\n</body></html>\n");
    h
}

/// The detail, and for a failure the fix from [`crate::verdict::hint`] (what `check` prints).
fn detail_with_fix(detail: &str, success: bool, reason: &str) -> String {
    match crate::verdict::hint(reason) {
        Some(fix) if !success => format!("{}<br><strong>fix:</strong> {}", esc(detail), esc(fix)),
        _ => esc(detail),
    }
}

fn last_check(r: &CheckRecord) -> String {
    if r.runs == 0 {
        "never".to_string()
    } else {
        when(Some(r.latest.started + r.latest.duration))
    }
}

/// One check's transcript as HTML.
pub fn transcript_page(key: &CheckKey, r: &CheckRecord) -> String {
    let o = &r.latest;
    let mut h = head(&format!("{} — o365-mail-exporter", key.id()));
    let _ = write!(
        h,
        "<p><a href=\"/\">&larr; status</a> &middot; <a href=\"/checks/{}?format=text\">plain text</a></p>\n<h1>{}</h1>\n<table>\
<tr><th>state</th><td>{}</td></tr><tr><th>reason</th><td>{}</td></tr><tr><th>failed phase</th><td>{}</td></tr>\
<tr><th>started</th><td>{}</td></tr><tr><th>duration</th><td>{:.3} s</td></tr><tr><th>detail</th><td>{}</td></tr>",
        esc(&key.id()),
        esc(&key.id()),
        state_cell(o),
        esc(o.reason.as_str()),
        esc(o.failed_phase.map(|p| p.as_str()).unwrap_or("")),
        when(Some(o.started)),
        o.duration.as_secs_f64(),
        esc(&o.detail)
    );
    if let (false, Some(fix)) = (o.success, crate::verdict::hint(o.reason.as_str())) {
        let _ = write!(h, "<tr><th>fix</th><td>{}</td></tr>", esc(fix));
    }
    if let Some(n) = o.messages {
        let _ = write!(h, "<tr><th>INBOX messages</th><td>{n}</td></tr>");
    }
    for (k, v) in &o.facts {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    if let Some(t) = &o.tls {
        let _ = write!(
            h,
            "<tr><th>TLS</th><td>{} {}</td></tr><tr><th>certificate</th><td>subject {}<br>issuer {}<br>not after {}<br>verified: {}{}</td></tr>",
            esc(&t.version),
            esc(&t.cipher),
            esc(&t.cert_subject),
            esc(&t.cert_issuer),
            when_unix(t.cert_not_after),
            t.verified,
            t.verify_error.as_deref().map(|e| format!(" ({})", esc(e))).unwrap_or_default()
        );
    }
    h.push_str("</table>\n<h2>Phases</h2>\n<table><tr><th>phase</th><th>duration</th></tr>\n");
    for (p, d) in &o.phases {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{:.1} ms</td></tr>",
            p.as_str(),
            d.as_secs_f64() * 1000.0
        );
    }
    h.push_str("</table>\n<h2>Transcript</h2>\n<pre>");
    h.push_str(&esc(&o.transcript.render_text()));
    h.push_str("</pre>\n</body></html>\n");
    h
}

/// One check's transcript as plain text.
pub fn transcript_text(key: &CheckKey, r: &CheckRecord) -> String {
    let o = &r.latest;
    let mut t = format!(
        "check: {}\nstate: {}\nreason: {}\nfailed phase: {}\nstarted: {}\nduration: {:.3} s\ndetail: {}\n",
        key.id(),
        if o.is_pending() { "PENDING" } else if o.success { "OK" } else { "FAIL" },
        o.reason,
        o.failed_phase.map(|p| p.as_str()).unwrap_or("-"),
        when(Some(o.started)),
        o.duration.as_secs_f64(),
        o.detail
    );
    if let (false, Some(fix)) = (o.success, crate::verdict::hint(o.reason.as_str())) {
        let _ = writeln!(t, "fix: {fix}");
    }
    if let Some(n) = o.messages {
        let _ = writeln!(t, "INBOX messages: {n}");
    }
    for (k, v) in &o.facts {
        let _ = writeln!(t, "{k}: {v}");
    }
    t.push_str("phases:");
    for (p, d) in &o.phases {
        let _ = write!(t, " {}={:.1}ms", p.as_str(), d.as_secs_f64() * 1000.0);
    }
    t.push_str("\n\n");
    t.push_str(&o.transcript.render_text());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
