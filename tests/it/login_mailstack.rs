//! The login probes against the REAL mail stack (Dovecot IMAPS + POP3S, Postfix submission with
//! STARTTLS; `tests/support/mailstack.rs`) with tokens from the fake identity provider: a good
//! token logs in on every protocol with phase timings and message counts; expired, wrong-user
//! and wrong-key tokens are `auth_rejected` everywhere; a shared mailbox logs in with delegate
//! semantics (IMAP/POP3 `user=` the shared address, SMTP `user=` the delegate and the shared
//! address in `MAIL FROM`). Needs root and scripts/install-deps.sh's packages.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use o365_mail_exporter::config::{Mailbox, Mechanism, Server, TlsMode};
use o365_mail_exporter::fake_idp::{App, FakeIdp, FakeIdpBuilder, FakeIdpHandle, User};
use o365_mail_exporter::probe::tls::TlsClient;
use o365_mail_exporter::probe::{login, Outcome, Phase, Protocol, Reason};
use secrecy::SecretString;

use crate::support::fake_idp::{post_form, DEVICE_GRANT};
use crate::support::mailstack::MailStack;

const PUBLIC: &str = "33333333-2222-3333-4444-555555555555";
const ALICE: &str = "alice@example.test";
const SHARED: &str = "support@example.test";
const AGENT: &str = "agent@example.test";

fn registrations(b: FakeIdpBuilder) -> FakeIdpBuilder {
    b.app(App::new(PUBLIC).public_client(true))
        .user(User::new(ALICE))
        .user(User::new("bob@example.test"))
        .user(User::new(AGENT))
}

/// A delegated token for `upn` through the device-code flow, as `o365-mail-exporter login` gets
/// one (the user signs in in a browser; the fake approves for the signed-in user).
async fn delegated_token(idp: &FakeIdpHandle, upn: &str) -> String {
    idp.set_signed_in_user(upn);
    let scope = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";
    let dc = post_form(
        &idp.device_code_url(),
        &[("client_id", PUBLIC), ("scope", scope)],
    )
    .await;
    let dc = dc.json["device_code"]
        .as_str()
        .expect("device code")
        .to_string();
    idp.approve_device_code(None).expect("pending device code");
    let t = post_form(
        &idp.token_url(),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", PUBLIC),
            ("device_code", &dc),
        ],
    )
    .await;
    t.json["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

fn server(port: u16, tls: TlsMode) -> Server {
    Server {
        host: "127.0.0.1".to_string(),
        port,
        tls,
        server_name: "localhost".to_string(),
        ca_file: None,
    }
}

/// A mailbox on the stack, configured as for Exchange Online (993 implicit, 995 implicit, 587
/// STARTTLS), ports replaced by the stack's.
fn mailbox(stack: &MailStack, address: &str) -> Mailbox {
    Mailbox {
        name: "mb".to_string(),
        address: address.to_string(),
        credential: "delegated".to_string(),
        protocols: Protocol::ALL.to_vec(),
        login_as: None,
        mechanism: Mechanism::XOAuth2,
        smtp_mail_from: true,
        interval: Duration::from_secs(300),
        timeout: Duration::from_secs(20),
        imap: server(stack.imaps_port, TlsMode::Implicit).into(),
        pop3: server(stack.pop3s_port, TlsMode::Implicit).into(),
        smtp: server(stack.submission_port, TlsMode::StarttlsSmtp).into(),
    }
}

/// The token appears nowhere in what the outcome shows, neither raw nor inside any base64 word.
fn assert_no_token(o: &Outcome, token: &str) {
    let text = format!("{}\n{}", o.transcript.render_text(), o.detail);
    assert!(!text.contains(token), "token in the transcript");
    for w in text.split_ascii_whitespace() {
        if let Ok(raw) = STANDARD.decode(w) {
            assert!(
                !String::from_utf8_lossy(&raw).contains(token),
                "token inside base64 in the transcript"
            );
        }
    }
}

fn phases(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|(p, _)| *p).collect()
}

/// Runs the probe of every protocol concurrently (a refused login costs Dovecot's fixed 0.5 s).
async fn probe_all(mb: &Mailbox, tls: &TlsClient, token: &str) -> Vec<(Protocol, Outcome)> {
    let token = SecretString::from(token.to_string());
    let (i, p, s) = tokio::join!(
        login::probe(mb, Protocol::Imap, tls, Ok(&token)),
        login::probe(mb, Protocol::Pop3, tls, Ok(&token)),
        login::probe(mb, Protocol::Smtp, tls, Ok(&token)),
    );
    vec![
        (Protocol::Imap, i),
        (Protocol::Pop3, p),
        (Protocol::Smtp, s),
    ]
}

#[tokio::test]
async fn one_mailbox_logs_in_over_imap_pop3_and_smtp() {
    let stack = MailStack::start().await;
    assert_eq!(stack.add_mail(ALICE, 3), 3);
    let idp = registrations(stack.fake_idp())
        .start()
        .await
        .expect("fake idp");
    let token = delegated_token(&idp, ALICE).await;
    let tls = TlsClient::new(Some(&stack.ca_file)).expect("stack CA");
    let mut mb = mailbox(&stack, ALICE);

    for mechanism in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
        mb.mechanism = mechanism;
        for (p, o) in probe_all(&mb, &tls, &token).await {
            let ctx = format!(
                "{p} {mechanism:?}: {}\n{}\n{}",
                o.detail,
                o.transcript.render_text(),
                stack.dovecot_log()
            );
            assert!(o.success, "{ctx}");
            assert_eq!((o.reason, o.failed_phase), (Reason::Ok, None), "{ctx}");
            let want: &[Phase] = match p {
                // Dovecot lists its capabilities in the greeting: no CAPABILITY command.
                Protocol::Imap => &[
                    Phase::Dns,
                    Phase::Connect,
                    Phase::Tls,
                    Phase::Greeting,
                    Phase::Auth,
                    Phase::Mailbox,
                    Phase::Logout,
                ],
                Protocol::Pop3 if mechanism == Mechanism::OAuthBearer => &[
                    Phase::Dns,
                    Phase::Connect,
                    Phase::Tls,
                    Phase::Greeting,
                    Phase::Capability,
                    Phase::Auth,
                    Phase::Mailbox,
                    Phase::Logout,
                ],
                Protocol::Pop3 => &[
                    Phase::Dns,
                    Phase::Connect,
                    Phase::Tls,
                    Phase::Greeting,
                    Phase::Auth,
                    Phase::Mailbox,
                    Phase::Logout,
                ],
                Protocol::Smtp => &[
                    Phase::Dns,
                    Phase::Connect,
                    Phase::Greeting,
                    Phase::Starttls,
                    Phase::Tls,
                    Phase::Capability,
                    Phase::Auth,
                    Phase::Mailbox,
                    Phase::Logout,
                ],
            };
            assert_eq!(phases(&o), want, "{ctx}");
            assert!(
                o.phase_duration(Phase::Auth)
                    .is_some_and(|d| d > Duration::ZERO),
                "{ctx}"
            );
            let sum: Duration = o.phases.iter().map(|(_, d)| *d).sum();
            assert!(
                sum <= o.duration,
                "phases do not overlap: {sum:?} > {:?}",
                o.duration
            );
            let tls_facts = o.tls.as_ref().expect("TLS facts");
            assert!(
                tls_facts.verified && tls_facts.version.starts_with("TLSv1."),
                "{ctx}"
            );
            let name = match mechanism {
                Mechanism::XOAuth2 => "XOAUTH2",
                Mechanism::OAuthBearer => "OAUTHBEARER",
            };
            assert!(o.detail.contains(name), "{ctx}");
            match p {
                Protocol::Imap | Protocol::Pop3 => assert_eq!(o.messages, Some(3), "{ctx}"),
                Protocol::Smtp => {
                    assert_eq!(o.messages, None);
                    assert!(
                        o.detail.contains("MAIL FROM:<alice@example.test> accepted"),
                        "{ctx}"
                    );
                }
            }
            assert_no_token(&o, &token);
        }
    }
}

#[tokio::test]
async fn expired_wrong_user_and_bad_signature_tokens_are_auth_rejected() {
    let stack = MailStack::start().await;
    let idp = registrations(stack.fake_idp())
        .start()
        .await
        .expect("fake idp");
    // Expired: the fake's clock two hours back, so exp is an hour past for Dovecot.
    idp.set_clock_offset(-7200);
    let expired = delegated_token(&idp, ALICE).await;
    idp.set_clock_offset(0);
    // The admin's browser signed in as bob: valid, for the wrong mailbox.
    let bobs = delegated_token(&idp, "bob@example.test").await;
    // Same tenant and audience, signed with a secret Dovecot does not know.
    let stranger = registrations(
        FakeIdp::builder()
            .tenant(&stack.tenant)
            .audience(&stack.audience),
    )
    .start()
    .await
    .expect("second fake idp");
    let bad_signature = delegated_token(&stranger, ALICE).await;
    let tls = TlsClient::new(Some(&stack.ca_file)).expect("stack CA");
    let mb = mailbox(&stack, ALICE);

    let (a, b, c) = tokio::join!(
        probe_all(&mb, &tls, &expired),
        probe_all(&mb, &tls, &bobs),
        probe_all(&mb, &tls, &bad_signature),
    );
    for (case, token, outcomes) in [
        ("expired", &expired, a),
        ("wrong user", &bobs, b),
        ("bad signature", &bad_signature, c),
    ] {
        for (p, o) in outcomes {
            let ctx = format!("{case} {p}: {}\n{}", o.detail, o.transcript.render_text());
            assert_eq!(
                (o.reason, o.failed_phase),
                (Reason::AuthRejected, Some(Phase::Auth)),
                "{ctx}"
            );
            // Dovecot answers with a base64 JSON error challenge first; the probe decoded it,
            // answered with the empty line and read the final refusal.
            assert!(o.detail.contains(r#""status":"401""#), "{ctx}");
            assert!(o.phases.iter().any(|(ph, _)| *ph == Phase::Tls), "{ctx}");
            assert_eq!(o.messages, None);
            assert_no_token(&o, token);
        }
    }
}

/// Dovecot matches the login name against the token's `upn`, so it cannot model Exchange's
/// delegation (a delegate's token opening a shared mailbox it has FullAccess on). The stack's
/// oauth2 passdb is switched to the recipe's app-only variant (compare a constant instead of the
/// upn, /work/shared/mailstack NOTES.md), so that which `user=` each protocol sends is decided
/// by the probe alone and read back from the servers' logs and maildirs.
async fn accept_any_login_name(stack: &MailStack) {
    let path = stack.dir.join("etc/dovecot-oauth2.conf.ext");
    let conf = std::fs::read_to_string(&path).expect("oauth2 passdb config");
    assert!(
        conf.contains("\nusername_attribute = upn\n"),
        "template changed"
    );
    let conf = conf.replace(
        "\nusername_attribute = upn\n",
        "\nusername_attribute = appid\nusername_format = app-only\n",
    );
    std::fs::write(&path, conf).expect("write oauth2 passdb config");
    let pid = stack
        .env
        .get("DOVECOT_PID")
        .expect("DOVECOT_PID in stack.env");
    let status = std::process::Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .expect("kill -HUP");
    assert!(status.success(), "SIGHUP to Dovecot");
}

#[tokio::test]
async fn shared_mailbox_logs_in_with_delegate_semantics() {
    let stack = MailStack::start().await;
    // Different counts, so the message count says whose INBOX was opened.
    assert_eq!(stack.add_mail(SHARED, 4), 4);
    assert_eq!(stack.add_mail(AGENT, 1), 1);
    let idp = registrations(stack.fake_idp())
        .start()
        .await
        .expect("fake idp");
    // The delegate signs in (the account with FullAccess and SendAs on the shared mailbox).
    let token = delegated_token(&idp, AGENT).await;
    accept_any_login_name(&stack).await;
    let tls = TlsClient::new(Some(&stack.ca_file)).expect("stack CA");
    let mut mb = mailbox(&stack, SHARED);
    mb.login_as = Some(AGENT.to_string());
    let secret = SecretString::from(token.clone());

    // Dovecot reloads its auth process after SIGHUP; the first login may still meet the old one
    // (which refuses user=shared for the agent's token). Bounded: 20 tries, ~0.5 s each at most.
    let mut imap = None;
    for _ in 0..20 {
        let o = login::probe(&mb, Protocol::Imap, &tls, Ok(&secret)).await;
        if o.success {
            imap = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let imap = imap.unwrap_or_else(|| panic!("IMAP never succeeded\n{}", stack.dovecot_log()));
    assert_eq!(imap.messages, Some(4), "IMAP opened the shared INBOX");
    let pop = login::probe(&mb, Protocol::Pop3, &tls, Ok(&secret)).await;
    assert!(
        pop.success,
        "{}\n{}",
        pop.detail,
        pop.transcript.render_text()
    );
    assert_eq!(pop.messages, Some(4), "POP3 opened the shared maildrop");
    let smtp = login::probe(&mb, Protocol::Smtp, &tls, Ok(&secret)).await;
    assert!(
        smtp.success,
        "{}\n{}",
        smtp.detail,
        smtp.transcript.render_text()
    );
    assert!(
        smtp.detail.contains("authenticated as agent@example.test"),
        "{}",
        smtp.detail
    );
    assert!(
        smtp.detail
            .contains("MAIL FROM:<support@example.test> accepted"),
        "{}",
        smtp.detail
    );
    for o in [&imap, &pop, &smtp] {
        assert_no_token(o, &token);
    }

    // What the servers saw: Dovecot logged IMAP and POP3 in as the shared address; Postfix
    // accepted AUTH and MAIL (it logs the SASL name only once a message is queued, and none
    // is), with the delegate as user= as the transcript shows.
    let dovecot = stack.dovecot_log();
    for service in ["imap-login", "pop3-login"] {
        assert!(
            dovecot.lines().any(|l| l.contains(service)
                && l.contains("Login: user=<support@example.test>")
                && l.contains("method=XOAUTH2")),
            "{service} login as the shared address:\n{dovecot}"
        );
    }
    // Postfix logs the session summary through postlogd after the QUIT: wait for it (bounded).
    let summary = "ehlo=2 starttls=1 auth=1 mail=1 rset=1 quit=1";
    let log = stack.dir.join("log/postfix.log");
    let mut postfix = String::new();
    for _ in 0..60 {
        postfix = std::fs::read_to_string(&log).unwrap_or_default();
        if postfix.contains(summary) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(postfix.contains(summary), "Postfix session:\n{postfix}");
    assert!(
        smtp.transcript
            .render_text()
            .contains("C: AUTH XOAUTH2 [redacted: user=agent@example.test token "),
        "{}",
        smtp.transcript.render_text()
    );
}
