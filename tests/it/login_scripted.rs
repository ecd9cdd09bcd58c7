//! Login probes against scripted servers that replay Exchange Online's exact replies
//! (o365-facts.md 2.2-2.5, 7, 9) and behave badly on purpose. Each reply maps to its documented
//! reason; each hostile server fails the check within its deadline with the right reason; no
//! transcript ever holds the (canary) token, and the token never crosses a plain connection.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use o365_mail_exporter::config::{Mailbox, Mechanism, TlsMode};
use o365_mail_exporter::probe::{login, Outcome, Phase, Protocol, Reason, TRANSCRIPT_MAX_LINE};
use secrecy::SecretString;

use crate::support::outcome::assert_failed;
use crate::support::scripted::{
    mailbox, send, tls_client, Imap, Pop3, Scripted, Smtp, Step, BACKEND, CANARY_TOKEN,
    EXCHANGE_IMAP_CAPS,
};

const JSON_401: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";

async fn probe(mb: &Mailbox, p: Protocol) -> Outcome {
    let token = SecretString::from(CANARY_TOKEN);
    login::probe(mb, p, &tls_client(), Ok(&token)).await
}

/// Whether `line` carries the token, in clear or inside any base64 word.
fn carries_token(line: &str) -> bool {
    line.contains(CANARY_TOKEN)
        || line.split_ascii_whitespace().any(|w| {
            STANDARD
                .decode(w)
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(CANARY_TOKEN))
        })
}

/// The outcome shows no token anywhere, and the server saw it only over TLS.
fn assert_no_leak(o: &Outcome, srv: &Scripted) {
    let text = o.transcript.render_text();
    assert!(!carries_token(&text), "token in transcript:\n{text}");
    assert!(!carries_token(&o.detail), "token in detail: {}", o.detail);
    for (k, v) in &o.facts {
        assert!(!carries_token(v), "token in fact {k}");
    }
    for r in srv.received() {
        if carries_token(&r.line) {
            assert!(r.tls, "token sent without TLS: {}", r.line);
        }
    }
}

fn token_sent(srv: &Scripted) -> bool {
    srv.received().iter().any(|r| carries_token(&r.line))
}

fn phases(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|(p, _)| *p).collect()
}

fn imap_mb(srv: &Scripted) -> Mailbox {
    mailbox(srv.addr, TlsMode::Implicit)
}

// --------------------------------------------------------------------------------------------
// IMAP

#[tokio::test]
async fn imap_exchange_login_succeeds_with_every_phase_and_the_backend() {
    let srv = Imap::default().start(true).await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert!(o.success, "{}\n{}", o.detail, o.transcript.render_text());
    assert_eq!(o.reason, Reason::Ok);
    assert_eq!(o.messages, Some(3));
    assert_eq!(
        phases(&o),
        vec![
            Phase::Dns,
            Phase::Connect,
            Phase::Tls,
            Phase::Greeting,
            Phase::Capability,
            Phase::Auth,
            Phase::Mailbox,
            Phase::Logout
        ]
    );
    assert!(o
        .facts
        .contains(&("exchange_backend".to_string(), BACKEND.to_string())));
    let text = o.transcript.render_text();
    for needle in [
        "S: * OK The Microsoft Exchange IMAP4 service is ready.",
        "C: A1 CAPABILITY",
        "C: A2 AUTHENTICATE XOAUTH2 [redacted: user=support@contoso.test token 44 bytes]",
        "S: A2 OK AUTHENTICATE completed.",
        "C: A3 EXAMINE INBOX",
        "S: * 3 EXISTS",
        "C: A4 LOGOUT",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // SASL-IR advertised: the initial response rides on the AUTHENTICATE line, over TLS.
    let got = srv.received();
    let auth = got
        .iter()
        .find(|r| r.line.starts_with("A2 AUTHENTICATE XOAUTH2 "))
        .expect("AUTHENTICATE line");
    assert!(auth.tls && carries_token(&auth.line));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_without_sasl_ir_waits_for_the_continuation() {
    let srv = Imap {
        capability: vec!["* CAPABILITY IMAP4rev1 AUTH=XOAUTH2".into()],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert!(o.success, "{}", o.detail);
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    let i = lines
        .iter()
        .position(|l| l == "A2 AUTHENTICATE XOAUTH2")
        .expect("bare AUTHENTICATE");
    assert!(carries_token(&lines[i + 1]), "blob must follow the +");
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_capabilities_in_the_greeting_skip_the_capability_command() {
    let srv = Imap {
        greeting: vec![send("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.")],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert!(o.success, "{}", o.detail);
    assert!(
        !srv.saw("CAPABILITY"),
        "CAPABILITY sent although the greeting listed them"
    );
    assert!(srv.saw("A1 AUTHENTICATE XOAUTH2 "));
    assert!(
        o.facts.is_empty(),
        "no Exchange backend in a Dovecot greeting"
    );
}

#[tokio::test]
async fn imap_authenticate_failed_is_auth_rejected() {
    let srv = Imap {
        auth: vec![send("{tag} NO AUTHENTICATE failed.")],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    assert!(o.detail.contains("NO AUTHENTICATE failed."), "{}", o.detail);
    assert!(!srv.saw("EXAMINE"));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn a_server_echoing_the_credentials_does_not_leak_them() {
    let srv = Imap {
        auth: vec![Step::Echo("{tag} BAD Command Argument Error. ".into())],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    assert!(o.transcript.render_text().contains("[redacted]"));
    assert_no_leak(&o, &srv);
    let srv = Pop3 {
        auth: vec![Step::Echo("-ERR unknown command: ".into())],
        ..Pop3::default()
    }
    .start(true)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_authenticated_but_not_connected_is_caught_by_examine() {
    let srv = Imap {
        examine: vec![
            send("{tag} BAD User is authenticated but not connected."),
            send("* BYE Connection closed. 14"),
            Step::Close,
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Mailbox, Reason::MailboxNotConnected);
    assert_eq!(o.messages, None);
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_throttling_sets_the_suggested_backoff() {
    let srv = Imap {
        auth: vec![
            send("{tag} NO Request is throttled. Suggested Backoff Time: 299609 milliseconds"),
            Step::Close,
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::Throttled);
    assert_eq!(o.backoff, Some(Duration::from_millis(299_609)));
}

#[tokio::test]
async fn imap_throttling_in_bye_before_disconnect() {
    let srv = Imap {
        examine: vec![
            send("* BYE Request is throttled. Suggested Backoff Time: 1500 milliseconds"),
            Step::Close,
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Mailbox, Reason::Throttled);
    assert_eq!(o.backoff, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn imap_base64_json_error_challenge_is_answered_and_decoded() {
    let srv = Imap {
        auth: vec![
            send(format!("+ {JSON_401}")),
            Step::Recv,
            send("{tag} NO [AUTHENTICATIONFAILED] Authentication failed."),
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    let i = lines.iter().position(|l| carries_token(l)).expect("blob");
    assert_eq!(
        lines[i + 1],
        "",
        "XOAUTH2 answers an error challenge with an empty line"
    );
    let text = o.transcript.render_text();
    assert!(
        text.contains(r#"error challenge: {"status":"401","schemes":"bearer","scope":"mail"}"#),
        "{text}"
    );
    assert!(o.detail.contains("401"), "{}", o.detail);
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_oauthbearer_when_configured_and_offered() {
    let srv = Imap {
        capability: vec!["* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER".into()],
        auth: vec![
            send(format!(
                "+ {}",
                STANDARD.encode(r#"{"status":"invalid_token"}"#)
            )),
            Step::Recv,
            send("{tag} NO [AUTHENTICATIONFAILED] Authentication failed."),
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let mut mb = imap_mb(&srv);
    mb.mechanism = Mechanism::OAuthBearer;
    let o = probe(&mb, Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("A2 AUTHENTICATE OAUTHBEARER "))
        .expect("OAUTHBEARER used");
    let blob = lines[i].rsplit(' ').next().expect("blob");
    let raw = STANDARD.decode(blob).expect("base64");
    assert!(raw.starts_with(b"n,a=support@contoso.test,\x01host=127.0.0.1\x01port="));
    assert_eq!(
        lines[i + 1],
        "AQ==",
        "OAUTHBEARER answers an error challenge with 0x01"
    );
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_oauthbearer_configured_but_not_offered_falls_back_to_xoauth2() {
    let srv = Imap::default().start(true).await;
    let mut mb = imap_mb(&srv);
    mb.mechanism = Mechanism::OAuthBearer;
    let o = probe(&mb, Protocol::Imap).await;
    assert!(o.success, "{}", o.detail);
    assert!(srv.saw("AUTHENTICATE XOAUTH2 "));
    assert!(o
        .transcript
        .render_text()
        .contains("OAUTHBEARER is configured but not offered"));
}

#[tokio::test]
async fn imap_without_xoauth2_is_mechanism_unsupported() {
    let srv = Imap {
        capability: vec!["* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR".into()],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Capability, Reason::AuthMechanismUnsupported);
    assert!(!srv.saw("AUTHENTICATE"));
}

#[tokio::test]
async fn imap_starttls_mode_upgrades_before_authenticating() {
    let srv = Imap {
        greeting: vec![send("* OK IMAP4rev1 ready")],
        capability: vec![format!("{EXCHANGE_IMAP_CAPS} STARTTLS")],
        ..Imap::default()
    }
    .start(false)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::StarttlsImap), Protocol::Imap).await;
    assert!(o.success, "{}\n{}", o.detail, o.transcript.render_text());
    let p = phases(&o);
    assert!(p.contains(&Phase::Starttls) && p.contains(&Phase::Tls));
    let got = srv.received();
    // CAPABILITY before and after the upgrade (RFC 3501 6.2.1), the token only after.
    assert_eq!(
        got.iter()
            .filter(|r| r.line.ends_with("CAPABILITY"))
            .map(|r| r.tls)
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    assert!(token_sent(&srv));
    assert_no_leak(&o, &srv);
}

// --------------------------------------------------------------------------------------------
// POP3

#[tokio::test]
async fn pop3_exchange_login_succeeds_with_stat_count_and_never_reads_mail() {
    let srv = Pop3::default().start(true).await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert!(o.success, "{}\n{}", o.detail, o.transcript.render_text());
    assert_eq!(o.messages, Some(2));
    assert_eq!(
        phases(&o),
        vec![
            Phase::Dns,
            Phase::Connect,
            Phase::Tls,
            Phase::Greeting,
            Phase::Auth,
            Phase::Mailbox,
            Phase::Logout
        ]
    );
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    assert_eq!(lines[0], "AUTH XOAUTH2");
    assert!(carries_token(&lines[1]), "blob on its own line after the +");
    assert_eq!(&lines[2..], ["STAT", "QUIT"]);
    assert!(o
        .facts
        .contains(&("exchange_backend".to_string(), BACKEND.to_string())));
    let text = o.transcript.render_text();
    assert!(
        text.contains("C: [redacted: user=support@contoso.test token 44 bytes]"),
        "{text}"
    );
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn pop3_exchange_failure_is_auth_rejected() {
    let srv = Pop3 {
        auth: vec![send(
            "-ERR Authentication failure: unknown user name or bad password.",
        )],
        ..Pop3::default()
    }
    .start(true)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    assert!(!srv.saw("STAT"));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn pop3_error_challenge_then_dovecot_err() {
    let srv = Pop3 {
        auth: vec![
            send(format!("+ {JSON_401}")),
            Step::Recv,
            send("-ERR [AUTH] Authentication failed."),
        ],
        ..Pop3::default()
    }
    .start(true)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    assert_eq!(lines.get(2).map(String::as_str), Some(""));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn pop3_refused_mechanism_is_unsupported() {
    let srv = Pop3 {
        auth_command: vec![send("-ERR Unrecognized authentication type.")],
        ..Pop3::default()
    }
    .start(true)
    .await;
    // The scripted server reads a blob line after AUTH regardless; the probe must not send one.
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Auth, Reason::AuthMechanismUnsupported);
    assert!(!token_sent(&srv));
}

// --------------------------------------------------------------------------------------------
// SMTP

fn smtp_mb(srv: &Scripted) -> Mailbox {
    mailbox(srv.addr, TlsMode::StarttlsSmtp)
}

#[tokio::test]
async fn smtp_exchange_login_with_multiline_banner_and_mail_from() {
    let srv = Smtp {
        banner: vec![
            send("220-SN4PR0501CA0054.namprd05.prod.outlook.com Microsoft ESMTP MAIL Service"),
            send("220-ready at Mon, 1 Jun 2026 10:00:00 +0000"),
            send("220 08DE8B5D1A2F3C4E"),
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let mut mb = smtp_mb(&srv);
    mb.smtp_mail_from = true;
    let o = probe(&mb, Protocol::Smtp).await;
    assert!(o.success, "{}\n{}", o.detail, o.transcript.render_text());
    assert_eq!(
        phases(&o),
        vec![
            Phase::Dns,
            Phase::Connect,
            Phase::Greeting,
            Phase::Starttls,
            Phase::Tls,
            Phase::Capability,
            Phase::Auth,
            Phase::Mailbox,
            Phase::Logout
        ]
    );
    let got = srv.received();
    let lines: Vec<(bool, &str)> = got.iter().map(|r| (r.tls, r.line.as_str())).collect();
    assert_eq!(lines[0], (false, "EHLO o365-mail-exporter.invalid"));
    assert_eq!(lines[1], (false, "STARTTLS"));
    assert_eq!(lines[2], (true, "EHLO o365-mail-exporter.invalid"));
    assert!(
        lines[3].0 && lines[3].1.starts_with("AUTH XOAUTH2 "),
        "{:?}",
        lines[3]
    );
    assert_eq!(
        &lines[4..],
        [
            (true, "MAIL FROM:<support@contoso.test>"),
            (true, "RSET"),
            (true, "QUIT")
        ]
    );
    assert!(
        !srv.saw("DATA") && !srv.saw("RCPT"),
        "no message is ever sent"
    );
    let text = o.transcript.render_text();
    assert!(
        text.contains("C: AUTH XOAUTH2 [redacted: user=support@contoso.test token 44 bytes]"),
        "{text}"
    );
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn smtp_exchange_535_replies_map_to_their_reasons() {
    let cases = [
        ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com 2026-06-01T10:00:00.000Z 08DE8B5D1A2F3C4E]", Reason::SmtpAuthDisabled),
        ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.", Reason::SmtpAuthDisabled),
        ("535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [SN4PR0501CA0054.namprd05.prod.outlook.com 2026-06-01T10:00:00.000Z 08DE8B5D1A2F3C4E]", Reason::BasicAuthDisabled),
        ("535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.", Reason::SecurityDefaults),
        ("535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.", Reason::PolicyRejected),
        ("535 5.7.3 Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com 2026-06-01T10:00:00.000Z 08DE8B5D1A2F3C4E]", Reason::AuthRejected),
        ("432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=SN4PR0501MB1234.namprd05.prod.outlook.com]", Reason::ConcurrentLimit),
        ("504 5.7.4 Unrecognized authentication type [SN4PR0501CA0054.namprd05.prod.outlook.com]", Reason::AuthMechanismUnsupported),
        ("501 5.5.124 Invalid XOAUTH2 auth data - User address provided is not valid.", Reason::AuthRejected),
    ];
    for (reply, reason) in cases {
        let srv = Smtp {
            auth: vec![send(reply)],
            ..Smtp::default()
        }
        .start(false)
        .await;
        let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
        assert_failed(&o, Phase::Auth, reason);
        assert!(o.detail.contains(&reply[..20]), "{}", o.detail);
        assert_no_leak(&o, &srv);
    }
}

#[tokio::test]
async fn smtp_concurrent_limit_at_the_banner() {
    let srv = Smtp {
        banner: vec![
            send("432 4.3.2 Concurrent connections limit exceeded."),
            Step::Close,
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Greeting, Reason::ConcurrentLimit);
}

#[tokio::test]
async fn smtp_starttls_as_the_last_ehlo_line() {
    let srv = Smtp {
        ehlo_plain: vec![
            send("250-SN4PR0501CA0054.namprd05.prod.outlook.com Hello [203.0.113.7]"),
            send("250-SIZE 157286400"),
            send("250 STARTTLS"),
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert!(o.success, "{}", o.detail);
}

#[tokio::test]
async fn smtp_without_xoauth2_after_tls_is_mechanism_unsupported() {
    let srv = Smtp {
        ehlo_tls: vec![
            send("250-SN4PR0501CA0054.namprd05.prod.outlook.com Hello [203.0.113.7]"),
            send("250-AUTH LOGIN"),
            send("250 8BITMIME"),
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Capability, Reason::AuthMechanismUnsupported);
    assert!(o.detail.contains("AUTH LOGIN"), "{}", o.detail);
    assert!(!srv.saw("AUTH "));
}

#[tokio::test]
async fn smtp_334_json_error_challenge_is_answered() {
    let srv = Smtp {
        auth: vec![
            send(format!("334 {JSON_401}")),
            Step::Recv,
            send("535 5.7.8 Error: authentication failed: (reason unavailable)"),
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    let lines: Vec<String> = srv.received().into_iter().map(|r| r.line).collect();
    let i = lines.iter().position(|l| carries_token(l)).expect("AUTH");
    assert_eq!(lines[i + 1], "");
    assert!(o.transcript.render_text().contains(r#"{"status":"401""#));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn smtp_shared_mailbox_authenticates_as_delegate_and_send_as_is_checked() {
    let srv = Smtp {
        mail: vec![send("554 5.2.252 SendAsDenied; agent@contoso.test not allowed to send as support@contoso.test; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied")],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let mut mb = smtp_mb(&srv);
    mb.login_as = Some("agent@contoso.test".into());
    mb.smtp_mail_from = true;
    let o = probe(&mb, Protocol::Smtp).await;
    assert_failed(&o, Phase::Mailbox, Reason::SendAsDenied);
    let got = srv.received();
    let auth = got
        .iter()
        .find(|r| r.line.starts_with("AUTH XOAUTH2 "))
        .expect("AUTH");
    let raw = STANDARD
        .decode(auth.line.rsplit(' ').next().expect("blob"))
        .expect("base64");
    assert!(
        raw.starts_with(b"user=agent@contoso.test\x01"),
        "SMTP user= is the delegate"
    );
    assert!(srv.saw("MAIL FROM:<support@contoso.test>"));
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn imap_shared_mailbox_uses_the_shared_address_as_user() {
    let srv = Imap::default().start(true).await;
    let mut mb = imap_mb(&srv);
    mb.login_as = Some("agent@contoso.test".into());
    let o = probe(&mb, Protocol::Imap).await;
    assert!(o.success, "{}", o.detail);
    let got = srv.received();
    let auth = got
        .iter()
        .find(|r| r.line.contains("AUTHENTICATE"))
        .expect("AUTH");
    let raw = STANDARD
        .decode(auth.line.rsplit(' ').next().expect("blob"))
        .expect("base64");
    assert!(raw.starts_with(b"user=support@contoso.test\x01"));
}

#[tokio::test]
async fn smtp_without_starttls_never_sends_the_token() {
    let srv = Smtp {
        ehlo_plain: vec![
            send("250-mail.example.test"),
            send("250-AUTH LOGIN XOAUTH2"),
            send("250 8BITMIME"),
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Starttls, Reason::StarttlsUnsupported);
    assert!(!token_sent(&srv) && !srv.saw("AUTH"));
}

#[tokio::test]
async fn smtp_refused_starttls_never_sends_the_token() {
    let srv = Smtp {
        starttls: vec![send("454 4.7.0 TLS not available due to local problem")],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Starttls, Reason::StarttlsUnsupported);
    assert!(!token_sent(&srv));
}

#[tokio::test]
async fn tls_none_never_sends_the_token() {
    let srv = Smtp {
        ehlo_plain: vec![send("250-mail.example.test"), send("250 AUTH XOAUTH2")],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::None), Protocol::Smtp).await;
    assert_failed(&o, Phase::Auth, Reason::ProtocolError);
    assert!(!token_sent(&srv) && !srv.saw("AUTH"));
    let srv = Imap::default().start(false).await;
    let o = probe(&mailbox(srv.addr, TlsMode::None), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::ProtocolError);
    assert!(!token_sent(&srv) && !srv.saw("AUTHENTICATE"));
}

// --------------------------------------------------------------------------------------------
// No token

#[tokio::test]
async fn token_unavailable_still_measures_reachability_and_tls() {
    let why = "refresh token expired: AADSTS700082";
    let imap = Imap::default().start(true).await;
    let pop = Pop3::default().start(true).await;
    let smtp = Smtp::default().start(false).await;
    for (srv, p, tls) in [
        (&imap, Protocol::Imap, TlsMode::Implicit),
        (&pop, Protocol::Pop3, TlsMode::Implicit),
        (&smtp, Protocol::Smtp, TlsMode::StarttlsSmtp),
    ] {
        let o = login::probe(
            &mailbox(srv.addr, tls),
            p,
            &tls_client(),
            Err(why.to_string()),
        )
        .await;
        assert_failed(&o, Phase::Auth, Reason::TokenUnavailable);
        assert!(o.detail.contains(why), "{}", o.detail);
        assert!(phases(&o).contains(&Phase::Tls), "{p}: TLS measured");
        assert!(o.tls.as_ref().is_some_and(|t| t.verified), "{p}");
        assert!(!srv.saw("AUTH"), "{p}: no AUTH without a token");
    }
}

// --------------------------------------------------------------------------------------------
// Hostile servers

fn assert_within(o: &Outcome, mb: &Mailbox) {
    assert!(
        o.duration <= mb.timeout + Duration::from_millis(500),
        "took {:?} with a {:?} deadline",
        o.duration,
        mb.timeout
    );
}

#[tokio::test]
async fn silent_server_times_out_in_the_greeting() {
    let srv = Imap {
        greeting: vec![Step::Stall],
        ..Imap::default()
    }
    .start(true)
    .await;
    let mut mb = imap_mb(&srv);
    mb.timeout = Duration::from_secs(30);
    let o = probe(&mb, Protocol::Imap).await;
    assert_failed(&o, Phase::Greeting, Reason::Timeout);
    assert!(o.duration >= Duration::from_secs(29), "{:?}", o.duration);
    assert_within(&o, &mb);
}

#[tokio::test]
async fn silence_after_the_credentials_times_out_in_auth() {
    let srv = Smtp {
        auth: vec![Step::Stall],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let mut mb = smtp_mb(&srv);
    mb.timeout = Duration::from_secs(20);
    let o = probe(&mb, Protocol::Smtp).await;
    assert_failed(&o, Phase::Auth, Reason::Timeout);
    assert_within(&o, &mb);
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn endless_line_is_cut_off() {
    let srv = Imap {
        greeting: vec![Step::Endless],
        ..Imap::default()
    }
    .start(true)
    .await;
    let mb = imap_mb(&srv);
    let o = probe(&mb, Protocol::Imap).await;
    assert_failed(&o, Phase::Greeting, Reason::ReplyTooLong);
    assert_within(&o, &mb);
    let srv = Smtp {
        ehlo_tls: vec![send("250-hello"), Step::Endless],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Capability, Reason::ReplyTooLong);
}

#[tokio::test]
async fn garbage_after_tls_is_a_protocol_error() {
    let mut junk: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    junk.extend_from_slice(b"\r\n");
    let srv = Imap {
        greeting: vec![Step::Raw(junk.clone()), Step::Silence],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Greeting, Reason::ProtocolError);
    for l in o.transcript.lines() {
        assert!(l.text.len() <= TRANSCRIPT_MAX_LINE * 4 + 8);
    }
    let srv = Pop3 {
        greeting: vec![Step::Raw(junk), Step::Silence],
        ..Pop3::default()
    }
    .start(true)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Greeting, Reason::ProtocolError);
}

#[tokio::test]
async fn plain_text_on_a_tls_port_fails_the_handshake() {
    let srv = Imap::default().start(false).await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Tls, Reason::TlsHandshake);
    assert!(!token_sent(&srv));
}

#[tokio::test]
async fn huge_sasl_challenge_is_bounded() {
    // Under the line limit: decoded with a cap, answered, final NO classified.
    let big = STANDARD.encode(format!(
        r#"{{"status":"401","pad":"{}"}}"#,
        "x".repeat(11_000)
    ));
    assert!(big.len() < 16 * 1024);
    let srv = Imap {
        auth: vec![
            send(format!("+ {big}")),
            Step::Recv,
            send("{tag} NO AUTHENTICATE failed."),
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Auth, Reason::AuthRejected);
    assert!(
        o.detail.len() < 1024,
        "detail stays short: {}",
        o.detail.len()
    );
    for l in o.transcript.lines() {
        assert!(l.text.len() <= TRANSCRIPT_MAX_LINE * 4 + 8);
    }
    // Over the line limit: refused as too long, within the deadline.
    let huge = "A".repeat(200_000);
    let srv = Smtp {
        auth: vec![send(format!("334 {huge}"))],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let mb = smtp_mb(&srv);
    let o = probe(&mb, Protocol::Smtp).await;
    assert_failed(&o, Phase::Auth, Reason::ReplyTooLong);
    assert_within(&o, &mb);
    assert_no_leak(&o, &srv);
}

#[tokio::test]
async fn connection_closed_mid_reply() {
    let srv = Smtp {
        ehlo_tls: vec![
            send("250-SN4PR0501CA0054.namprd05.prod.outlook.com Hello [203.0.113.7]"),
            send("250-SIZE 157286400"),
            Step::Raw(b"250-PIPEL".to_vec()),
            Step::Close,
        ],
        ..Smtp::default()
    }
    .start(false)
    .await;
    let o = probe(&smtp_mb(&srv), Protocol::Smtp).await;
    assert_failed(&o, Phase::Capability, Reason::ConnectionClosed);
    let srv = Imap {
        examine: vec![
            send("* 3 EXISTS"),
            Step::Raw(b"* 0 REC".to_vec()),
            Step::Close,
        ],
        ..Imap::default()
    }
    .start(true)
    .await;
    let o = probe(&imap_mb(&srv), Protocol::Imap).await;
    assert_failed(&o, Phase::Mailbox, Reason::ConnectionClosed);
    let srv = Pop3 {
        auth: vec![Step::Close],
        ..Pop3::default()
    }
    .start(true)
    .await;
    let o = probe(&mailbox(srv.addr, TlsMode::Implicit), Protocol::Pop3).await;
    assert_failed(&o, Phase::Auth, Reason::ConnectionClosed);
    assert_no_leak(&o, &srv);
}
