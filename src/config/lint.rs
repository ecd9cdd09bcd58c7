//! Offline consistency checks of a valid configuration: mistakes that are legal YAML and pass
//! validation but will break the integration (the checklist items that need no network).
//! `--config.check` prints them as warnings; the `check` command reports them as failures.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Config, GrantKind};
use crate::probe::Protocol;

/// A secret expiring within this many days is reported.
pub const SECRET_WARN_DAYS: i64 = 30;

/// One finding: where, what, and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub message: String,
    pub hint: String,
}

fn f(path: String, message: String, hint: &str) -> Finding {
    Finding {
        path,
        message,
        hint: hint.to_string(),
    }
}

/// Every finding for `cfg` at time `now`.
pub fn lint(cfg: &Config, now: SystemTime) -> Vec<Finding> {
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut out = Vec::new();
    let product_host = cfg
        .product
        .as_ref()
        .and_then(|p| url::Url::parse(&p.external_url).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    for (i, c) in cfg.credentials.iter().enumerate() {
        let p = |field: &str| format!("credentials[{i}].{field}");
        if let (Some(ph), Some(r)) = (&product_host, &c.redirect_uri) {
            let rh = url::Url::parse(r)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
            if rh.as_deref() != Some(ph.as_str()) {
                out.push(f(
                    p("redirect_uri"),
                    format!("redirect URI host {} differs from the product's external URL host {ph}", rh.unwrap_or_default()),
                    "The app registration's redirect URI must use the host of ECE's \"External URL of Application\" (the FQDN used to open the admin console).",
                ));
            }
        }
        if c.grant == GrantKind::RefreshToken && c.expected_identity.is_none() {
            out.push(f(
                p("expected_identity"),
                "a delegated credential without expected_identity: a token issued to the wrong user goes unnoticed".into(),
                "Set expected_identity to the mailbox user the token must belong to.",
            ));
        }
        for proto in &c.protocols {
            if !scope_covers(&c.scopes, c.grant, *proto) {
                out.push(f(
                    p("scopes"),
                    format!("no scope covers {proto}, which a mailbox of this credential uses"),
                    match c.grant {
                        GrantKind::RefreshToken => "Add the Outlook scope for it (IMAP.AccessAsUser.All, POP.AccessAsUser.All or SMTP.Send under https://outlook.office.com/), or leave scopes unset for the defaults.",
                        GrantKind::ClientCredentials => "App-only tokens need https://outlook.office365.com/.default (or the cloud's equivalent); leave scopes unset for the default.",
                    },
                ));
            }
        }
        if let Some(exp) = c.secret_expires {
            let days = (exp - now_s) / 86_400;
            if exp <= now_s {
                out.push(f(
                    p("secret_expires"),
                    "the client secret has expired".into(),
                    "Create a new client secret or certificate in the app registration and update the product and this exporter.",
                ));
            } else if days < SECRET_WARN_DAYS {
                out.push(f(
                    p("secret_expires"),
                    format!("the client secret expires in {days} days"),
                    "Create a new client secret or certificate now and roll it out before the old one expires.",
                ));
            }
        }
    }
    for (i, m) in cfg.mailboxes.iter().enumerate() {
        let p = |field: &str| format!("mailboxes[{i}].{field}");
        let Some(c) = cfg.credential(&m.credential) else {
            continue;
        };
        if let Some(d) = &m.login_as {
            if d.eq_ignore_ascii_case(&m.address) {
                out.push(f(p("login_as"), "login_as equals the mailbox address".into(), "Remove login_as, or set it to the delegate account that holds FullAccess/SendAs."));
            }
            if c.grant == GrantKind::ClientCredentials {
                out.push(f(
                    p("login_as"),
                    "login_as has no effect with an app-only credential".into(),
                    "App-only tokens act for the app: user= is the shared mailbox itself, and the app's service principal needs FullAccess (and SendAs for SMTP).",
                ));
            }
            if m.protocols.contains(&Protocol::Smtp) && !m.smtp_mail_from {
                out.push(f(
                    p("smtp_mail_from"),
                    "a shared mailbox sends as its own address, but the SMTP check does not try MAIL FROM".into(),
                    "Set smtp_mail_from: true so the check also proves the sender address is accepted.",
                ));
            }
        }
        if c.grant == GrantKind::RefreshToken {
            if let Some(e) = &c.expected_identity {
                let who = m.login_as.as_deref().unwrap_or(&m.address);
                if !e.eq_ignore_ascii_case(who) {
                    out.push(f(
                        p("credential"),
                        format!("the mailbox logs in as {who} but the credential's token belongs to {e}"),
                        "Use a credential signed in as the mailbox user, or set login_as to the delegate that owns the token (shared mailbox with FullAccess).",
                    ));
                }
            }
        }
    }
    out
}

fn scope_covers(scopes: &[String], grant: GrantKind, p: Protocol) -> bool {
    match grant {
        GrantKind::ClientCredentials => scopes.iter().any(|s| s.ends_with("/.default")),
        GrantKind::RefreshToken => {
            let perm = match p {
                Protocol::Imap => "IMAP.AccessAsUser.All",
                Protocol::Pop3 => "POP.AccessAsUser.All",
                Protocol::Smtp => "SMTP.Send",
            };
            scopes
                .iter()
                .any(|s| s.ends_with(&format!("/{perm}")) || s.ends_with("/.default"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        crate::config::load_str(yaml, "t.yaml", std::path::Path::new(".")).expect("valid")
    }

    #[test]
    fn finds_the_checklist_mistakes() {
        let c = cfg("\
product:
  external_url: https://ece.example.com/system
credentials:
  - name: user
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    redirect_uri: https://ece-internal.example.com/system/oauth
    scopes: [https://outlook.office.com/IMAP.AccessAsUser.All, offline_access]
    secret_expires: 2000-01-01
mailboxes:
  - name: support
    address: support@example.com
    credential: user
    protocols: [imap, smtp]
    login_as: admin@example.com
    smtp_mail_from: false
");
        let paths: Vec<String> = lint(&c, SystemTime::now())
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "credentials[0].redirect_uri",
                "credentials[0].expected_identity",
                "credentials[0].scopes",
                "credentials[0].secret_expires",
                "mailboxes[0].smtp_mail_from",
            ]
        );
    }

    #[test]
    fn a_coherent_config_has_no_findings() {
        let c = cfg("\
credentials:
  - name: user
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    expected_identity: Support@Example.com
mailboxes:
  - name: support
    address: support@example.com
    credential: user
    protocols: [imap, pop3, smtp]
");
        assert_eq!(lint(&c, SystemTime::now()), vec![]);
    }

    #[test]
    fn wrong_identity_for_a_mailbox_is_found() {
        let c = cfg("\
credentials:
  - name: user
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    expected_identity: admin@example.com
mailboxes:
  - name: support
    address: support@example.com
    credential: user
    protocols: [imap]
");
        let found = lint(&c, SystemTime::now());
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("logs in as support@example.com"));
    }
}
