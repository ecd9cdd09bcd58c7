//! Verdicts: one line per check, with the fix for its reason. The status page, the transcripts
//! and the `check` command all render these, built from the same [`State`] records, so the
//! command and the running exporter can never disagree.

use serde::Serialize;

use crate::config::{Config, Credential, Endpoint, Mailbox, TlsMode};
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
}

impl Kind {
    pub fn title(self) -> &'static str {
        match self {
            Kind::Config => "0. Configuration",
            Kind::Network => "1. DNS and ports",
            Kind::Tls => "2. TLS",
            Kind::Token => "3. Tokens",
            Kind::Login => "4. Mailbox logins",
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
    }
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
