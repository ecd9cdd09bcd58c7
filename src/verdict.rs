//! Verdicts: one line per check, with the fix for its reason. The status page, the transcripts
//! and the `check` command all render these, built from the same [`State`] records, so the
//! command and the running exporter can never disagree.
//!
//! The Microsoft Graph checks ([`graph`]) add a third state besides pass and fail: a check that
//! read what it reads can still find something that needs attention soon (the configured secret
//! expires within [`SECRET_WARN_DAYS`] days, a licence in its grace period, an open Exchange
//! Online incident). That is a [`Verdict::warning`]: the check passes (`check` exits 0) and the
//! line says what to do. What already breaks the integration (an expired secret, a mailbox
//! without an Exchange licence) fails, with a reason of its own.

use serde::Serialize;

use crate::config::lint::SECRET_WARN_DAYS;
use crate::config::{ClientAuth, Config, Credential, Endpoint, GraphCheck, Mailbox, TlsMode};
use crate::graph::model::PlanStatus;
use crate::graph::store::Snapshot;
use crate::graph::GraphReason;
use crate::probe::{Outcome, Protocol};
use crate::state::{CheckKey, CheckRecord, State, TokenRecord};

/// The order an admin troubleshoots in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Config,
    Network,
    Tls,
    Token,
    Login,
    Graph,
}

impl Kind {
    pub fn title(self) -> &'static str {
        match self {
            Kind::Config => "0. Configuration",
            Kind::Network => "1. DNS and ports",
            Kind::Tls => "2. TLS",
            Kind::Token => "3. Tokens",
            Kind::Login => "4. Mailbox logins",
            Kind::Graph => "5. Microsoft Graph",
        }
    }
}

/// One checked thing and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub kind: Kind,
    /// Endpoint, credential or `mailbox/protocol` name.
    pub name: String,
    /// What was checked (`host:port`, token URL host, mailbox server).
    pub target: String,
    pub success: bool,
    pub reason: String,
    /// Phase durations in milliseconds, in order.
    pub phases: Vec<(String, f64)>,
    /// One sentence of facts (TLS version, identity, message count, ...).
    pub detail: String,
    /// The fix, when failed.
    pub hint: Option<String>,
    /// `/checks/{id}` of the transcript, when there is one.
    pub transcript: Option<String>,
    /// A passed check that needs attention soon (a secret about to expire, a licence in its
    /// grace period, an open Microsoft incident): what, in one sentence; `hint` has the fix.
    pub warning: Option<String>,
}

/// The fix for a reason (probe or token), in one or two sentences. The long form is in
/// `docs/reasons.md`, `docs/tokens.md` and `docs/runbooks.md`.
pub fn hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "ok" => return None,
        "pending" => "The check has not run yet; wait one interval.",
        // network
        "dns" => "The name does not resolve from this server: check its DNS resolver and any split-horizon or proxy setup (ECE needs *.office365.com and login.microsoftonline.com).",
        "connect_refused" => "Something answered with a refusal: a local firewall or proxy blocks the port. Open TCP 443, 587, 993 and 995 outbound from the services server and every application server.",
        "connect_timeout" => "No answer to the TCP connect: a firewall drops the traffic. Open TCP 443, 587, 993 and 995 outbound from this server.",
        "connect_error" => "The connection failed (no route, network unreachable): check routing and outbound firewall rules from this server.",
        "timeout" => "The server did not answer within the deadline in the named phase: check for a proxy or firewall that holds connections open, or raise the timeout (Exchange logins can take several seconds).",
        // tls
        "tls_handshake" => "The TLS handshake failed: a proxy that is not TLS, or TLS interception that breaks the handshake. Connect directly or exempt Office 365 from interception.",
        "tls_version" => "No common TLS version: Exchange Online requires TLS 1.2 or later; check a proxy or old TLS settings in the path.",
        "cert_expired" => "The server's certificate has expired. From Microsoft this means TLS interception with a stale certificate: exempt Office 365 from interception.",
        "cert_not_yet_valid" => "The certificate is not valid yet: check this server's clock (NTP) or the intercepting proxy's certificate.",
        "cert_untrusted" => "The certificate is not signed by a trusted CA: usually a TLS-intercepting proxy. Exempt Office 365 from interception, or trust the proxy's CA in the product and set ca_file here.",
        "cert_name_mismatch" => "The certificate does not name the host: a proxy or DNS answer points to the wrong server. Check DNS for the host and the proxy configuration.",
        "starttls_unsupported" => "The server did not offer STARTTLS: something in the path (an SMTP proxy or antivirus) strips it. SMTP submission must reach smtp.office365.com:587 directly.",
        "protocol_error" => "The server's answers do not follow the protocol: check that the host and port reach the right service and that no proxy rewrites the traffic.",
        "connection_closed" => "The server closed the connection: retry; if it persists, look at the transcript for the last reply before the close.",
        "reply_too_long" => "The server sent an endless line: this is not the expected mail server; check host, port and proxies.",
        // logins
        "auth_mechanism_unsupported" => "The server does not offer XOAUTH2 after TLS: check the host (smtp.office365.com / outlook.office365.com) and that no proxy strips AUTH.",
        "auth_rejected" => "Exchange refused the token: the token belongs to another user (generate it in a private browser window as the mailbox's own user), lacks the IMAP/POP/SMTP permission, or the account lacks FullAccess (IMAP/POP) or the mailbox protocol is disabled (Set-CASMailbox).",
        "smtp_auth_disabled" => "SMTP AUTH is disabled for the tenant or the mailbox: Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false.",
        "basic_auth_disabled" => "Exchange says basic authentication is disabled: the client did not use OAuth. Make sure the product is configured for OAuth2 (XOAUTH2).",
        "security_defaults" => "Entra security defaults block SMTP AUTH for this user: turn security defaults off or use Conditional Access with an exclusion.",
        "policy_rejected" => "A Conditional Access or authentication policy refused the login: check the Entra sign-in logs for this user and the policy that applied.",
        "mailbox_not_connected" => "Authenticated but Exchange refused the mailbox ('User is authenticated but not connected'): IMAP is disabled for the mailbox, the account lacks FullAccess on it, or the mailbox has no Exchange licence.",
        "mailbox_unavailable" => "The server could not open the mailbox or answered with a temporary failure (IMAP [UNAVAILABLE], POP3 [SYS/TEMP] or [IN-USE], SMTP 4xx): check the mailbox exists and is licensed and the account has FullAccess; a POP3 [IN-USE] means another session (the product's retriever) holds the mailbox.",
        "send_as_denied" => "The account may not send as this address: grant SendAs (Add-RecipientPermission <shared> -AccessRights SendAs -Trustee <account>).",
        "throttled" => "Exchange or Entra is throttling: reduce how often this and other clients connect; the exporter backs off as suggested.",
        "concurrent_limit" => "Too many concurrent SMTP connections for this mailbox (Exchange allows 3): the product's dispatcher may be saturating it.",
        "token_unavailable" => "No usable access token for this mailbox's credential: fix the token first (see the token line).",
        // outbound proxy (endpoint checks and token requests)
        "proxy_connect_failed" => "The configured HTTP proxy cannot be reached (its name does not resolve, or it refuses or drops the connection): check proxy.url (or HTTPS_PROXY with proxy.from_env), that the proxy runs, and that this server may connect to its port.",
        "proxy_refused" => "The proxy did not open a tunnel (the detail has its answer): a 403 is its policy, so ask its admin to allow CONNECT to this host on port 443 (login.microsoftonline.com, graph.microsoft.com); a 502/503/504 means the proxy itself cannot reach the host. To test the direct path instead, set via_proxy: false or add the host to proxy.no_proxy.",
        "proxy_auth_required" => "The proxy wants credentials or refused them (407): set proxy.username and proxy.password_file (or password_env) to an account the proxy accepts; a changed or expired proxy password needs the file updated and a reload.",
        // tokens
        "invalid_client_secret" => "The client secret is wrong (often the secret's ID was configured instead of its value): create a new secret in the app registration and configure its value.",
        "client_secret_expired" => "The client secret or certificate has expired: create a new one in the app registration, update the product and this exporter.",
        "client_assertion_invalid" => "The certificate assertion was refused: upload the certificate matching the configured key to the app registration.",
        "refresh_token_expired" => "The refresh token expired (unused for 90 days): sign in again with `o365-mail-exporter login` (and regenerate the product's token) in a private browser window as the mailbox user.",
        "grant_revoked" => "The grant was revoked (password change or reset, admin revoke): sign in again in a private browser window as the mailbox user.",
        "reauth_required" => "The user must sign in again: run `login` in a private browser window as the mailbox user.",
        "consent_required" => "Consent is missing: grant admin consent for the IMAP/POP/SMTP permissions in the app registration.",
        "mfa_required" => "MFA is required for this non-interactive sign-in: exclude the integration from the MFA policy, or use an app-only (client credentials) setup.",
        "conditional_access" => "Conditional Access blocked the token request: check the Entra sign-in logs and the policy (location, device, authentication flows).",
        "app_not_found" => "The application is not found in the tenant: check client_id and tenant, and that the app is consented in this tenant.",
        "app_disabled" => "The application or its enterprise app is disabled: enable it in Entra.",
        "tenant_not_found" => "The tenant is not found: check the tenant ID or domain and the cloud (worldwide, gcc-high, dod, china).",
        "invalid_scope" => "The scope is wrong: use the Outlook resource (https://outlook.office.com/IMAP.AccessAsUser.All ...) or https://outlook.office365.com/.default for app-only, never a Graph scope.",
        "config_error" => "The app registration does not fit this flow (public client, redirect type, endpoint): see docs/tokens.md for the AADSTS code in the log.",
        "user_disabled" => "The user account is disabled or locked: enable it in Entra.",
        "network" => "The token endpoint is unreachable from this server: open login.microsoftonline.com:443 (see the network lines).",
        "server_error" => "Microsoft's token service answered with an error; it is retried with backoff. If it persists, check the Microsoft 365 service health.",
        "bad_response" => "The token endpoint returned something that is not Microsoft's JSON (an HTML page from a proxy?): check the proxy between this server and login.microsoftonline.com.",
        "no_refresh_token" => "No refresh token is stored for this delegated credential: run `o365-mail-exporter login --credential NAME` once, in a private browser window, as the mailbox user.",
        "wrong_identity" => "The token belongs to another user than expected_identity: the browser signed in with the admin's own account. Sign in again in a private window as the mailbox user.",
        "scope_missing" => "The token lacks a permission a configured protocol needs: add it to the app registration and grant admin consent, then sign in again.",
        // derived from the Graph checks' facts
        "mailbox_not_licensed" => "The mailbox's user has no enabled Exchange Online plan, so Exchange refuses its logins: assign a licence that includes Exchange Online in the Microsoft 365 admin center (or renew the lapsed subscription); a shared mailbox needs none, so set `licensed: false` for it.",
        _ => "See docs/reasons.md and docs/tokens.md for this reason.",
    })
}

fn phases(o: &Outcome) -> Vec<(String, f64)> {
    o.phases
        .iter()
        .map(|(p, d)| {
            (
                p.as_str().to_string(),
                (d.as_secs_f64() * 10_000.0).round() / 10.0,
            )
        })
        .collect()
}

fn state_of(o: &Outcome) -> (bool, String) {
    (o.success, o.reason.as_str().to_string())
}

/// Network and TLS verdicts of one endpoint.
pub fn endpoint(ep: &Endpoint, rec: &CheckRecord) -> Vec<Verdict> {
    let o = &rec.latest;
    let target = match &ep.proxy {
        Some(p) => format!(
            "{}:{} via proxy {}",
            ep.host,
            ep.port,
            p.url.trim_end_matches('/')
        ),
        None => format!("{}:{}", ep.host, ep.port),
    };
    let transcript = Some(format!(
        "/checks/{}",
        CheckKey::Endpoint(ep.name.clone()).id()
    ));
    let tls_failed = matches!(o.failed_phase, Some(crate::probe::Phase::Tls));
    let (success, reason) = state_of(o);
    let mut out = vec![Verdict {
        kind: Kind::Network,
        name: ep.name.clone(),
        target: target.clone(),
        success: success || tls_failed,
        reason: if tls_failed {
            "ok".into()
        } else {
            reason.clone()
        },
        phases: phases(o).into_iter().filter(|(p, _)| p != "tls").collect(),
        detail: if tls_failed {
            "reachable".into()
        } else {
            o.detail.clone()
        },
        hint: if success || tls_failed {
            None
        } else {
            hint(&reason).map(str::to_string)
        },
        transcript: transcript.clone(),
        warning: None,
    }];
    if ep.tls != TlsMode::None && (success || tls_failed) {
        let t = o.tls.clone().unwrap_or_default();
        let cert = t
            .cert_not_after
            .map(|n| {
                format!(
                    ", certificate valid until {}",
                    crate::http::status::when(
                        u64::try_from(n)
                            .ok()
                            .map(|s| std::time::SystemTime::UNIX_EPOCH
                                + std::time::Duration::from_secs(s))
                    )
                )
            })
            .unwrap_or_default();
        let tls_ms = o
            .phase_duration(crate::probe::Phase::Tls)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        out.push(Verdict {
            kind: Kind::Tls,
            name: ep.name.clone(),
            target,
            success,
            reason: reason.clone(),
            phases: vec![("tls".into(), (tls_ms * 10.0).round() / 10.0)],
            detail: if success {
                format!("{} {}{cert}", t.version, t.cipher)
            } else {
                format!("{}{cert}", o.detail)
            },
            hint: if success {
                None
            } else {
                hint(&reason).map(str::to_string)
            },
            transcript,
            warning: None,
        });
    }
    out
}

/// The verdict of one credential's token.
pub fn token(c: &Credential, t: &TokenRecord) -> Verdict {
    let host = url::Url::parse(&c.token_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let host = match &c.proxy {
        Some(p) if !p.bypasses(&host) => {
            format!("{host} via proxy {}", p.url.trim_end_matches('/'))
        }
        _ => host,
    };
    let mut success = t.last_attempt_success == Some(true);
    let mut reason = t.last_reason.to_string();
    let mut detail = t.detail.clone();
    if success && t.identity_match == Some(false) {
        success = false;
        reason = "wrong_identity".into();
        detail = format!(
            "token belongs to {}, expected {}",
            t.identity_seen.as_deref().unwrap_or("someone else"),
            c.expected_identity.as_deref().unwrap_or("?")
        );
    } else if success && t.scopes.iter().any(|(_, ok)| !ok) {
        success = false;
        reason = "scope_missing".into();
        let missing: Vec<&str> = t
            .scopes
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(s, _)| s.as_str())
            .collect();
        detail = format!("token lacks {}", missing.join(", "));
    }
    let ms = if t.request_duration.count > 0 {
        t.request_duration.sum / t.request_duration.count as f64 * 1000.0
    } else {
        0.0
    };
    Verdict {
        kind: Kind::Token,
        name: c.name.clone(),
        target: host,
        success,
        hint: if success {
            None
        } else {
            hint(&reason).map(str::to_string)
        },
        reason,
        phases: vec![("token".into(), (ms * 10.0).round() / 10.0)],
        detail,
        transcript: None,
        warning: None,
    }
}

/// The verdict of one mailbox login.
pub fn login(m: &Mailbox, p: Protocol, rec: &CheckRecord) -> Verdict {
    let o = &rec.latest;
    let srv = m.server(p);
    let (success, reason) = state_of(o);
    let detail = o.detail.clone();
    Verdict {
        kind: Kind::Login,
        name: format!("{}/{}", m.name, p.as_str()),
        target: format!("{}:{}", srv.host, srv.port),
        success,
        hint: if success {
            None
        } else {
            hint(&reason).map(str::to_string)
        },
        reason,
        phases: phases(o),
        detail,
        transcript: Some(format!(
            "/checks/{}",
            CheckKey::Login {
                mailbox: m.name.clone(),
                protocol: p
            }
            .id()
        )),
        warning: None,
    }
}

/// The fix for a failed Graph check; `permission_denied` names the application permission the
/// check needs. The long form is in `docs/graph.md` and the runbook O365GraphCheckFailing.
pub fn graph_hint(check: GraphCheck, reason: GraphReason) -> Option<String> {
    Some(match reason {
        GraphReason::Ok => return None,
        GraphReason::Pending => "The check has not run yet; wait one interval.".to_string(),
        GraphReason::PermissionDenied => format!(
            "Grant the app registration the Microsoft Graph application permission {} (API permissions > Add a permission > Microsoft Graph > Application permissions, not Delegated), then Grant admin consent for the tenant; or remove {} from graph.checks.",
            crate::graph::check::permission(check),
            check.as_str()
        ),
        GraphReason::Throttled => "Graph is throttling this app (HTTP 429), often because another application of the tenant uses Graph heavily: try again after the Retry-After in the detail; raise graph.interval if the running exporter is throttled too.".to_string(),
        GraphReason::NotAvailable => "This Graph API does not exist in this cloud (national clouds lack some): remove the check from graph.checks.".to_string(),
        GraphReason::NotFound => match check {
            GraphCheck::AppCredentials => "No application with this client_id in the tenant: check client_id and tenant; a multi-tenant app's keys live on the application object in its home tenant, so read them with a credential of that tenant.",
            GraphCheck::Licenses => "A mailbox's address is not a user's userPrincipalName (or the user was deleted): fix the mailbox's address, or set `licensed: false` for a mailbox that is not a licensed user.",
            GraphCheck::ServiceHealth => "graph.service names no service that Graph lists: set it to one of the names in the detail (Exchange Online by default).",
        }
        .to_string(),
        GraphReason::TokenUnavailable => "No Graph token: the detail has the token request's reason (AADSTS code); fix it as for the credential's own token (see docs/tokens.md). The Graph token uses grant: client_credentials and graph.scope.".to_string(),
        GraphReason::TokenRejected => "Graph refused the token (HTTP 401), usually one for another cloud: set graph.scope and graph_url to this cloud's Graph (e.g. https://graph.microsoft.us/.default for gcc-high).".to_string(),
        GraphReason::Network => "Graph is not reachable from this server: open TCP 443 to the Graph host (graph.microsoft.com in the worldwide cloud) or configure the proxy; an endpoint with `service: graph` shows the path step by step.".to_string(),
        GraphReason::Timeout => "Graph did not answer within graph.timeout: look for a proxy or firewall that holds the connection, or raise graph.timeout.".to_string(),
        GraphReason::ServerError => "Microsoft Graph answered with a server error (5xx): Microsoft's side, retried by the running exporter within 5 minutes; if it persists, check the Microsoft 365 service health.".to_string(),
        GraphReason::BadResponse => "The answer was not Graph's JSON (an HTML page from a proxy?), too large, or a next link to another host: check the proxy between this server and the Graph host.".to_string(),
        GraphReason::ConfigError => "The Graph check could not be set up (the detail says why, e.g. an unreadable ca_file): fix the credential's configuration.".to_string(),
    })
}

/// The fix for a secret or certificate that expires soon (the same words as the configuration
/// lint's for `secret_expires`).
pub const SECRET_EXPIRING_HINT: &str = "Create a new client secret or certificate in the app registration now and roll it out (the product and this exporter) before the old one expires.";
/// The fix for an Exchange licence in its grace period.
pub const LICENCE_GRACE_HINT: &str = "The Exchange licence is in its grace period (the subscription lapsed; mail still works): renew the subscription or assign another licence with Exchange Online before the mailbox is suspended.";
/// What to do about an open Microsoft incident.
pub const SERVICE_INCIDENT_HINT: &str = "Microsoft reports a problem with the service: follow the issue IDs in the Microsoft 365 admin center (Health > Service health); login failures meanwhile may be Microsoft's, not this server's.";

/// Service statuses that mean Microsoft is working on a problem right now (Graph's
/// `serviceHealthStatus`); the others are operational, restored or closed.
const SERVICE_TROUBLE: &[&str] = &[
    "investigating",
    "restoringService",
    "verifyingService",
    "serviceDegradation",
    "serviceInterruption",
    "extendedRecovery",
    "confirmed",
    "reported",
];

fn utc(t: i64) -> String {
    match u64::try_from(t) {
        Ok(s) => humantime::format_rfc3339_seconds(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        Err(_) => "before 1970".to_string(),
    }
}

/// "in 12 days", "in 5 hours", "3 days ago": rounded to whole days beyond two days.
fn from_now(secs: i64) -> String {
    let abs = secs.unsigned_abs();
    let span = if abs >= 2 * 86_400 {
        format!("{} days", (abs + 43_200) / 86_400)
    } else if abs >= 2 * 3_600 {
        format!("{} hours", (abs + 1_800) / 3_600)
    } else {
        format!("{} minutes", abs.div_ceil(60))
    };
    if secs >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The Graph host checked, and the proxy on the way (never its password).
fn graph_target(cred: Option<&Credential>, url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let host = u.host_str().unwrap_or_default().to_string();
    let shown = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    match cred.and_then(|c| c.proxy.as_ref()) {
        Some(p) if !p.bypasses(&host) => {
            format!("{shown} via proxy {}", p.url.trim_end_matches('/'))
        }
        _ => shown,
    }
}

/// What an `ok` Graph check found: (success, reason, detail, warning, hint).
struct Finding {
    success: bool,
    reason: String,
    detail: String,
    warning: Option<String>,
    hint: Option<String>,
}

impl Finding {
    fn ok(detail: String) -> Finding {
        Finding {
            success: true,
            reason: "ok".into(),
            detail,
            warning: None,
            hint: None,
        }
    }
}

/// The keys of the app registrations `reader` read: for each credential, the end date of the
/// configured secret or certificate (from Graph) decides: expired fails, within
/// [`SECRET_WARN_DAYS`] warns.
fn app_finding(
    cfg: &Config,
    reader: &str,
    targets: &[String],
    snap: &Snapshot,
    now: i64,
) -> Finding {
    let mut parts = Vec::new();
    let mut expired = Vec::new();
    let mut expiring = Vec::new();
    for name in targets {
        let Some(a) = snap.apps.get(name).filter(|a| a.reader == reader) else {
            parts.push(format!(
                "credential {name}: its app registration was not read"
            ));
            continue;
        };
        let what = match cfg.credential(name).map(|c| &c.client_auth) {
            Some(ClientAuth::Certificate { .. }) => "certificate",
            Some(ClientAuth::Secret(_)) => "client secret",
            _ => "key",
        };
        let secrets = a
            .keys
            .iter()
            .filter(|k| k.kind == crate::graph::model::KeyKind::Password)
            .count();
        let certs = a.keys.len() - secrets;
        let old = a
            .keys
            .iter()
            .filter(|k| k.end.is_some_and(|e| e <= now))
            .count();
        let app = format!(
            "app registration {:?}: {secrets} client secret{}, {certs} certificate{}{}",
            a.app_name,
            if secrets == 1 { "" } else { "s" },
            if certs == 1 { "" } else { "s" },
            if old > 0 {
                format!(" ({old} expired)")
            } else {
                String::new()
            }
        );
        // the earliest end among the matching keys, as the exporter's metric (two secrets can
        // share a hint)
        let in_use = a
            .keys
            .iter()
            .filter(|k| k.in_use)
            .min_by_key(|k| k.end.unwrap_or(i64::MAX));
        let line = match in_use {
            Some(k) => {
                let key = format!("the configured {what} {:?} (key {})", k.name, k.key_id);
                match k.end {
                    Some(end) if end <= now => {
                        expired.push(name.clone());
                        format!("{key} expired {} ({}, from Graph)", utc(end), from_now(end - now))
                    }
                    Some(end) => {
                        if end - now < SECRET_WARN_DAYS * 86_400 {
                            expiring.push(format!(
                                "the configured {what} of credential {name} expires {} ({}, from Graph)",
                                from_now(end - now),
                                utc(end)
                            ));
                        }
                        format!("{key} expires {} ({}, from Graph)", utc(end), from_now(end - now))
                    }
                    None => format!("{key} has no end date (from Graph)"),
                }
            }
            None if what == "key" => "a public client: no secret or certificate to watch".to_string(),
            None => format!(
                "none of its keys is the configured {what}, so secret_expires from the configuration stays in use"
            ),
        };
        parts.push(format!("credential {name}: {line}; {app}"));
    }
    let detail = parts.join("; ");
    if !expired.is_empty() {
        return Finding {
            success: false,
            reason: "client_secret_expired".into(),
            detail,
            warning: None,
            hint: hint("client_secret_expired").map(str::to_string),
        };
    }
    let mut f = Finding::ok(detail);
    if !expiring.is_empty() {
        f.warning = Some(expiring.join("; "));
        f.hint = Some(SECRET_EXPIRING_HINT.to_string());
    }
    f
}

/// Each mailbox's Exchange plan state: one without an enabled plan fails (its logins will),
/// the grace period warns.
fn licence_finding(g: &crate::config::GraphSettings, snap: &Snapshot, record: &str) -> Finding {
    if g.licence_targets.is_empty() {
        return Finding::ok(record.to_string());
    }
    let mut parts = Vec::new();
    let mut unlicensed = Vec::new();
    let mut grace = Vec::new();
    for t in &g.licence_targets {
        let Some(l) = snap
            .licences
            .get(&t.mailbox)
            .filter(|l| l.credential == g.credential)
        else {
            parts.push(format!("{} unknown", t.mailbox));
            continue;
        };
        let state = l.status.as_str();
        match l.status {
            PlanStatus::Enabled => parts.push(format!("{} {state}", t.mailbox)),
            PlanStatus::Warning => {
                grace.push(t.mailbox.clone());
                parts.push(format!("{} {state} (grace period)", t.mailbox));
            }
            _ => {
                unlicensed.push(format!("{} ({state})", t.mailbox));
                parts.push(format!("{} {state} (no Exchange licence)", t.mailbox));
            }
        }
    }
    let n = g.licence_targets.len();
    let detail = format!(
        "Exchange plan of {n} mailbox user{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    );
    if !unlicensed.is_empty() {
        return Finding {
            success: false,
            reason: "mailbox_not_licensed".into(),
            detail: format!(
                "no enabled Exchange licence: {}; {detail}",
                unlicensed.join(", ")
            ),
            warning: None,
            hint: hint("mailbox_not_licensed").map(str::to_string),
        };
    }
    let mut f = Finding::ok(detail);
    if !grace.is_empty() {
        f.warning = Some(format!(
            "Exchange licence in its grace period: {}",
            grace.join(", ")
        ));
        f.hint = Some(LICENCE_GRACE_HINT.to_string());
    }
    f
}

/// The service's status and open issues; an open incident or a status of trouble warns (it is
/// Microsoft's to fix, not a failure of this server).
fn health_finding(reader: &str, snap: &Snapshot, record: &str) -> Finding {
    let Some(h) = snap.health.get(reader) else {
        return Finding::ok(record.to_string());
    };
    let n = |c: &str| h.open.get(c).copied().unwrap_or(0);
    let (incidents, advisories) = (n("incident"), n("advisory"));
    let mut detail = format!(
        "{}: {}; open issues: {incidents} incident{}, {advisories} advisor{}",
        h.service,
        h.status,
        if incidents == 1 { "" } else { "s" },
        if advisories == 1 { "y" } else { "ies" }
    );
    let other = n("other");
    if other > 0 {
        detail.push_str(&format!(", {other} other"));
    }
    // titles are Microsoft's free text, sanitised and bounded by the check; never labels
    let listed: Vec<String> = h
        .issues
        .iter()
        .take(5)
        .map(|i| format!("{} {} {}: {:?}", i.id, i.classification, i.status, i.title))
        .collect();
    if !listed.is_empty() {
        detail.push_str(&format!(" ({})", listed.join("; ")));
    }
    let mut f = Finding::ok(detail);
    if incidents > 0 || SERVICE_TROUBLE.contains(&h.status) {
        f.warning = Some(format!(
            "{}: {}, {incidents} incident{} open",
            h.service,
            h.status,
            if incidents == 1 { "" } else { "s" }
        ));
        f.hint = Some(SERVICE_INCIDENT_HINT.to_string());
    }
    f
}

/// The verdicts of the Graph checks of `cfg` from the store, one per (credential, check), named
/// `credential/check`. A check that failed shows Graph's reason (and for a 403 the permission
/// to grant); one that read its facts shows them, failing or warning by what they say.
pub fn graph(cfg: &Config, snap: &Snapshot, now: i64) -> Vec<Verdict> {
    let mut out = Vec::new();
    for g in &cfg.graph {
        let cred = cfg.credential(&g.credential);
        let target = graph_target(cred, &g.url);
        for check in &g.checks {
            let Some(rec) = snap.checks.get(&(g.credential.clone(), *check)) else {
                continue;
            };
            let f = if rec.reason != GraphReason::Ok {
                Finding {
                    success: false,
                    reason: rec.reason.as_str().to_string(),
                    detail: rec.detail.clone(),
                    warning: None,
                    hint: graph_hint(*check, rec.reason),
                }
            } else {
                match check {
                    GraphCheck::AppCredentials => {
                        app_finding(cfg, &g.credential, &g.app_targets, snap, now)
                    }
                    GraphCheck::Licenses => licence_finding(g, snap, &rec.detail),
                    GraphCheck::ServiceHealth => health_finding(&g.credential, snap, &rec.detail),
                }
            };
            let ms = rec.duration.as_secs_f64() * 1000.0;
            out.push(Verdict {
                kind: Kind::Graph,
                name: format!("{}/{}", g.credential, check.as_str()),
                target: target.clone(),
                success: f.success,
                reason: f.reason,
                phases: vec![("graph".into(), (ms * 10.0).round() / 10.0)],
                detail: f.detail,
                hint: f.hint,
                transcript: None,
                warning: f.warning,
            });
        }
    }
    out
}

/// Every verdict of a configuration from the state, in troubleshooting order.
pub fn all(cfg: &Config, state: &State) -> Vec<Verdict> {
    let checks = state.checks();
    let tokens = state.tokens();
    let mut out = Vec::new();
    for ep in &cfg.endpoints {
        if let Some(r) = checks.get(&CheckKey::Endpoint(ep.name.clone())) {
            out.extend(endpoint(ep, r));
        }
    }
    for c in &cfg.credentials {
        if let Some(t) = tokens.get(&c.name) {
            out.push(token(c, t));
        }
    }
    for m in &cfg.mailboxes {
        for p in &m.protocols {
            let key = CheckKey::Login {
                mailbox: m.name.clone(),
                protocol: *p,
            };
            if let Some(r) = checks.get(&key) {
                out.push(login(m, *p, r));
            }
        }
    }
    out.sort_by_key(|v| v.kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_graph_failure_has_a_hint_and_a_403_names_the_permission() {
        for check in GraphCheck::ALL {
            for r in GraphReason::ALL {
                let h = graph_hint(check, r);
                assert_eq!(h.is_none(), r == GraphReason::Ok, "{check:?} {r}");
            }
            let h = graph_hint(check, GraphReason::PermissionDenied).unwrap_or_default();
            assert!(
                h.contains(crate::graph::check::permission(check)) && h.contains("admin consent"),
                "{h}"
            );
        }
        for derived in ["client_secret_expired", "mailbox_not_licensed"] {
            assert!(
                !hint(derived).unwrap_or("").starts_with("See docs"),
                "{derived}"
            );
        }
    }

    #[test]
    fn time_left_reads_in_days_hours_or_minutes() {
        assert_eq!(from_now(12 * 86_400 - 5), "in 12 days");
        assert_eq!(from_now(-3 * 86_400), "3 days ago");
        assert_eq!(from_now(30 * 3_600), "in 30 hours");
        assert_eq!(from_now(61), "in 2 minutes");
    }

    #[test]
    fn a_service_in_trouble_warns_even_without_an_incident() {
        let health = |status: &'static str, incidents: u64| {
            let mut snap = Snapshot::default();
            snap.health.insert(
                "app".into(),
                crate::graph::store::HealthFacts {
                    service: "Exchange Online".into(),
                    status,
                    open: [("incident", incidents), ("advisory", 2)]
                        .into_iter()
                        .collect(),
                    issues: Vec::new(),
                    as_of: std::time::SystemTime::now(),
                },
            );
            health_finding("app", &snap, "")
        };
        let f = health("serviceOperational", 0);
        assert!(f.success && f.warning.is_none(), "{}", f.detail);
        assert!(
            f.detail.contains("0 incidents, 2 advisories"),
            "{}",
            f.detail
        );
        assert!(health("serviceRestored", 0).warning.is_none());
        let f = health("serviceInterruption", 0);
        assert!(f.success && f.warning.is_some() && f.hint.is_some());
        let f = health("serviceOperational", 1);
        assert_eq!(
            f.warning.as_deref(),
            Some("Exchange Online: serviceOperational, 1 incident open")
        );
    }

    #[test]
    fn every_probe_reason_has_a_specific_hint() {
        for r in crate::probe::Reason::ALL {
            let h = hint(r.as_str());
            if *r == crate::probe::Reason::Ok {
                assert!(h.is_none());
            } else {
                assert!(
                    !h.unwrap_or("").starts_with("See docs"),
                    "no specific hint for {r}"
                );
            }
        }
    }
}
