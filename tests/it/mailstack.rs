//! The fake IdP's tokens against the project's real mail stack: Dovecot (IMAPS, POP3S) and
//! Postfix (submission + STARTTLS) accept them for the right user, and refuse an expired token,
//! a token for another user and a token signed with another key. Raw protocol over TLS, the way
//! the exporter's probes talk (o365-facts.md 2.3–2.5).

use std::time::Duration;

use base64::Engine as _;
use o365_mail_exporter::fake_idp::{App, FakeIdp, FakeIdpHandle, User};
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::support::fake_idp::{jwt_parts, post_form, DEVICE_GRANT};
use crate::support::mailstack::{xoauth2, Lines, MailStack};

const APP: &str = "11111111-2222-3333-4444-555555555555";
const PUBLIC: &str = "22222222-2222-3333-4444-555555555555";
const SECRET: &str = "stack-test-secret";
const ALICE: &str = "alice@example.test";

fn registrations(
    b: o365_mail_exporter::fake_idp::FakeIdpBuilder,
) -> o365_mail_exporter::fake_idp::FakeIdpBuilder {
    b.app(
        App::new(APP)
            .secret(SECRET)
            .roles(["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"])
            .app_token_upn(ALICE),
    )
    .app(App::new(PUBLIC).public_client(true))
    .user(User::new(ALICE))
    .user(User::new("bob@example.test"))
}

/// A delegated token for the signed-in user, through the device-code flow.
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

async fn app_token(idp: &FakeIdpHandle) -> String {
    let t = post_form(
        &idp.token_url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://outlook.office365.com/.default"),
        ],
    )
    .await;
    t.json["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

/// `a1 AUTHENTICATE XOAUTH2 <b64>` (SASL-IR, as Office 365 documents it). Returns the tagged
/// answer and the decoded error challenge, if the server sent one (answered with an empty line).
async fn imap_auth(stack: &MailStack, user: &str, token: &str) -> (Lines, String, Option<Value>) {
    let mut c = Lines::new(stack.connect_tls(stack.imaps_port).await);
    let greeting = c.recv().await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(greeting.contains("AUTH=XOAUTH2"), "{greeting}");
    c.send(&format!("a1 AUTHENTICATE XOAUTH2 {}", xoauth2(user, token)))
        .await;
    let mut line = c.recv().await;
    let mut challenge = None;
    if let Some(b64) = line.strip_prefix("+ ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 challenge");
        challenge = Some(serde_json::from_slice(&raw).expect("JSON challenge"));
        c.send("").await;
        line = c.recv().await;
    }
    while line.starts_with("* ") {
        line = c.recv().await;
    }
    (c, line, challenge)
}

async fn read(r: &mut BufReader<tokio::net::TcpStream>) -> String {
    let mut s = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut s))
        .await
        .expect("a line within 10 s")
        .expect("read");
    s
}

async fn imap_refused(stack: &MailStack, user: &str, token: &str) {
    let (_, line, challenge) = imap_auth(stack, user, token).await;
    assert!(line.starts_with("a1 NO [AUTHENTICATIONFAILED]"), "{line}");
    assert_eq!(challenge.expect("an error challenge")["status"], "401");
}

#[tokio::test]
async fn fake_idp_tokens_log_in_to_real_dovecot_and_postfix() {
    let stack = MailStack::start().await;
    assert_eq!(stack.add_mail(ALICE, 2), 2);
    let idp = registrations(stack.fake_idp())
        .start()
        .await
        .expect("fake idp");

    // Delegated token: IMAP login, then a mailbox command sees the delivered messages.
    let token = delegated_token(&idp, ALICE).await;
    let (_, c) = jwt_parts(&token);
    assert_eq!(
        (c["iss"].as_str(), c["upn"].as_str()),
        (Some(stack.issuer.as_str()), Some(ALICE))
    );
    let (mut conn, line, _) = imap_auth(&stack, ALICE, &token).await;
    assert!(line.starts_with("a1 OK"), "{line}\n{}", stack.dovecot_log());
    conn.send("a2 STATUS INBOX (MESSAGES)").await;
    assert_eq!(conn.recv().await, "* STATUS INBOX (MESSAGES 2)");
    assert!(conn.recv().await.starts_with("a2 OK"));

    // App-only token with the test stack's upn kindness.
    let (_, line, _) = imap_auth(&stack, ALICE, &app_token(&idp).await).await;
    assert!(line.starts_with("a1 OK"), "{line}\n{}", stack.dovecot_log());

    // POP3: AUTH XOAUTH2, the blob on its own line (Microsoft's documented form), then STAT.
    let mut pop = Lines::new(stack.connect_tls(stack.pop3s_port).await);
    assert!(pop.recv().await.starts_with("+OK"));
    pop.send("AUTH XOAUTH2").await;
    assert_eq!(pop.recv().await, "+");
    pop.send(&xoauth2(ALICE, &token)).await;
    assert_eq!(pop.recv().await, "+OK Logged in.");
    pop.send("STAT").await;
    assert!(pop.recv().await.starts_with("+OK 2 "));

    // SMTP submission: EHLO, STARTTLS, EHLO, AUTH XOAUTH2 (o365-facts.md 2.5).
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.submission_port))
        .await
        .expect("connect");
    let mut plain = BufReader::new(tcp);
    assert!(read(&mut plain).await.starts_with("220 "));
    plain
        .get_mut()
        .write_all(b"EHLO probe.example.test\r\n")
        .await
        .expect("write");
    let mut ehlo = Vec::new();
    loop {
        let l = read(&mut plain).await;
        let last = l.starts_with("250 ");
        ehlo.push(l);
        if last {
            break;
        }
    }
    assert!(ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.contains("AUTH")),
        "no AUTH before STARTTLS: {ehlo:?}"
    );
    plain
        .get_mut()
        .write_all(b"STARTTLS\r\n")
        .await
        .expect("write");
    assert!(read(&mut plain).await.starts_with("220 "));
    let tls = stack
        .tls_connector()
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            plain.into_inner(),
        )
        .await
        .expect("STARTTLS handshake");
    let mut smtp = Lines::new(tls);
    smtp.send("EHLO probe.example.test").await;
    let mut saw_auth = false;
    loop {
        let l = smtp.recv().await;
        saw_auth |= l.contains("AUTH") && l.contains("XOAUTH2");
        if l.starts_with("250 ") {
            break;
        }
    }
    assert!(saw_auth, "AUTH XOAUTH2 offered after STARTTLS");
    smtp.send(&format!("AUTH XOAUTH2 {}", xoauth2(ALICE, &token)))
        .await;
    assert_eq!(smtp.recv().await, "235 2.7.0 Authentication successful");

    // RS256 with the stack's RSA key and kid.
    let pem = std::fs::read(&stack.rs256_key_file).expect("rs256 key");
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem).expect("pkcs8");
    let rs = registrations(
        FakeIdp::builder()
            .tenant(&stack.tenant)
            .audience(&stack.audience)
            .rs256_key(der.secret_pkcs8_der(), &stack.rs256_kid),
    )
    .start()
    .await
    .expect("rs256 fake");
    let token = delegated_token(&rs, ALICE).await;
    assert_eq!(jwt_parts(&token).0["kid"], stack.rs256_kid.as_str());
    let (_, line, _) = imap_auth(&stack, ALICE, &token).await;
    assert!(line.starts_with("a1 OK"), "{line}\n{}", stack.dovecot_log());
}

#[tokio::test]
async fn expired_wrong_user_and_wrong_key_tokens_are_refused() {
    let stack = MailStack::start().await;
    let idp = registrations(stack.fake_idp())
        .start()
        .await
        .expect("fake idp");

    // Expired: the fake's clock two hours back, so exp is an hour in the past for Dovecot.
    idp.set_clock_offset(-7200);
    let expired = delegated_token(&idp, ALICE).await;
    idp.set_clock_offset(0);
    // The admin's browser signed in as bob: a valid token, for the wrong mailbox.
    let bobs = delegated_token(&idp, "bob@example.test").await;
    // Same tenant and audience, but a signing secret Dovecot does not know.
    let stranger = registrations(
        FakeIdp::builder()
            .tenant(&stack.tenant)
            .audience(&stack.audience),
    )
    .start()
    .await
    .expect("second fake");
    let wrong_key = delegated_token(&stranger, ALICE).await;
    // Control: a good token still works, so the refusals are about the tokens.
    let good = delegated_token(&idp, ALICE).await;

    let (ok, (), (), ()) = tokio::join!(
        imap_auth(&stack, ALICE, &good),
        imap_refused(&stack, ALICE, &expired),
        imap_refused(&stack, ALICE, &bobs),
        imap_refused(&stack, ALICE, &wrong_key),
    );
    assert!(ok.1.starts_with("a1 OK"), "{}", ok.1);
    let log = stack.dovecot_log();
    for reason in [
        "Token has expired",
        "did not match",
        "Incorrect JWT signature",
    ] {
        assert!(
            log.contains(reason),
            "Dovecot's log names '{reason}':\n{log}"
        );
    }
}
