//! SMTP submission login dialogue (port 587) and its pure reply classifier.
//!
//! `220` banner (multi-line allowed), `EHLO`, `STARTTLS` (shared with the endpoint probe), TLS,
//! `EHLO` again (Exchange lists `AUTH LOGIN XOAUTH2` only now, o365-facts.md 2.2), `AUTH XOAUTH2
//! <base64>` in upper case with the initial response on the same line (2.1, 2.5), optionally
//! `MAIL FROM:<mailbox>` + `RSET` to see the sender accepted, and `QUIT`. No message is ever
//! sent: Exchange allows three concurrent submissions per mailbox and counts sent mail against
//! quotas (9), and the probe shares that budget with the product.
//!
//! Exchange's 535 answers differ only in their sentence, so classification looks at the 5.7.139
//! policy sentences before any generic "credentials refused" rule (2.5, 7).

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::endpoint::{smtp_negotiate, EHLO_NAME};
use super::line::{parse_smtp_line, truncate, SmtpReply, MAX_REPLY_LINES};
use super::login::{self, Login, Session, Stage};
use super::sasl::{self, Challenge};
use super::tls::TlsClient;
use super::{Dir, Phase, ProbeError, Reason, Recorder};
use crate::config::{Server, TlsMode};

/// The enhanced status code (RFC 3463) at the start of a reply's text, e.g. `5.7.139`.
pub fn enhanced_code(text: &str) -> Option<&str> {
    let first = text.split_ascii_whitespace().next()?;
    let mut parts = first.split('.');
    let ok = matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), Some(c), None)
            if a.len() == 1
                && matches!(a, "2" | "4" | "5")
                && !b.is_empty() && b.len() <= 3 && b.bytes().all(|x| x.is_ascii_digit())
                && !c.is_empty() && c.len() <= 3 && c.bytes().all(|x| x.is_ascii_digit())
    );
    ok.then_some(first)
}

/// The mechanisms of the EHLO `AUTH` line (`AUTH LOGIN XOAUTH2`, or the old `AUTH=LOGIN`
/// form), upper-cased; `None` when EHLO lists no AUTH at all.
pub fn auth_mechanisms(ehlo: &SmtpReply) -> Option<Vec<String>> {
    ehlo.lines.iter().skip(1).find_map(|l| {
        let l = l.trim();
        let rest = l
            .get(..5)
            .filter(|h| h.eq_ignore_ascii_case("AUTH ") || h.eq_ignore_ascii_case("AUTH="))
            .map(|_| &l[5..])?;
        Some(
            rest.split_ascii_whitespace()
                .take(64)
                .map(|m| m.to_ascii_uppercase())
                .collect(),
        )
    })
}

/// Map a negative reply to a reason (and a backoff hint).
pub fn classify(stage: Stage, reply: &SmtpReply) -> (Reason, Option<Duration>) {
    let text = reply.text();
    let lower = text.to_ascii_lowercase();
    let enhanced = enhanced_code(&text);
    // The 5.7.139 sentences first: they name the switch to flip (o365-facts.md 2.5, 7).
    if lower.contains("smtpclientauthentication is disabled") {
        return (Reason::SmtpAuthDisabled, None);
    }
    if lower.contains("security defaults") {
        return (Reason::SecurityDefaults, None);
    }
    if lower.contains("basic authentication is disabled")
        || lower.contains("basic authentication is not supported")
    {
        return (Reason::BasicAuthDisabled, None);
    }
    if enhanced == Some("5.7.139") {
        return (Reason::PolicyRejected, None);
    }
    if enhanced == Some("5.2.252")
        || lower.contains("sendasdenied")
        || lower.contains("not allowed to send as")
        || lower.contains("permissions to send as")
    {
        return (Reason::SendAsDenied, None);
    }
    if let Some(backoff) = login::throttled(&text) {
        return (Reason::Throttled, backoff);
    }
    if reply.code == 432
        || lower.contains("concurrent connections limit")
        || lower.contains("thread limit exceeded")
    {
        return (Reason::ConcurrentLimit, None);
    }
    if reply.code == 504
        || enhanced == Some("5.7.4")
        || lower.contains("unrecognized authentication type")
    {
        return (Reason::AuthMechanismUnsupported, None);
    }
    if enhanced == Some("5.2.2") || lower.contains("quotaexceeded") {
        return (Reason::MailboxUnavailable, None);
    }
    // 4xx: the server cannot serve the session right now (e.g. Postfix's `454 4.7.0 Temporary
    // authentication failure`); not a verdict on the credentials.
    if (400..500).contains(&reply.code) {
        return (Reason::MailboxUnavailable, None);
    }
    let reason = match stage {
        Stage::Greeting => Reason::ProtocolError,
        // 535 5.7.3 (Exchange), 535 5.7.8 (Postfix), 501 5.5.124 (bad user=), 530 ...
        Stage::AuthCommand | Stage::Auth => Reason::AuthRejected,
        Stage::Mailbox if enhanced == Some("5.7.57") || reply.code == 530 => Reason::AuthRejected,
        Stage::Mailbox => Reason::MailboxUnavailable,
    };
    (reason, None)
}

/// Read one (multi-line) reply through the session, so that lines are scrubbed of the token.
async fn recv_reply(
    s: &mut Session,
    rec: &mut Recorder,
    phase: Phase,
    deadline: Instant,
) -> Result<SmtpReply, ProbeError> {
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let line = s.recv(rec, phase, deadline).await?;
        let (c, more, text) = parse_smtp_line(&line).ok_or_else(|| {
            ProbeError::new(
                phase,
                Reason::ProtocolError,
                format!("not an SMTP reply line: {}", truncate(&line, 80)),
            )
        })?;
        if *code.get_or_insert(c) != c {
            return Err(ProbeError::new(
                phase,
                Reason::ProtocolError,
                "reply code changed inside a multi-line reply",
            ));
        }
        lines.push(text);
        if !more {
            break;
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ProbeError::new(
                phase,
                Reason::ReplyTooLong,
                "multi-line reply has too many lines",
            ));
        }
    }
    Ok(SmtpReply {
        code: code.unwrap_or(0),
        lines,
    })
}

fn fail(
    rec: &mut Recorder,
    stage: Stage,
    what: &str,
    reply: &SmtpReply,
    challenge: &Option<Challenge>,
) -> ProbeError {
    let (reason, backoff) = classify(stage, reply);
    if backoff.is_some() {
        rec.backoff = backoff;
    }
    ProbeError::new(
        stage.phase(),
        reason,
        login::with_challenge(
            format!(
                "{what} answered {} {}",
                reply.code,
                truncate(&reply.text(), 200)
            ),
            challenge,
        ),
    )
}

/// A command whose only good answer is `want`.
async fn expect(
    s: &mut Session,
    rec: &mut Recorder,
    stage: Stage,
    phase: Phase,
    deadline: Instant,
    command: &str,
    want: u16,
) -> Result<SmtpReply, ProbeError> {
    s.send(rec, phase, deadline, command).await?;
    let reply = recv_reply(s, rec, phase, deadline).await?;
    if reply.code != want {
        let mut e = fail(rec, stage, command, &reply, &None);
        e.phase = phase;
        return Err(e);
    }
    Ok(reply)
}

/// Run the SMTP login dialogue. Returns the success sentence.
pub(crate) async fn run(
    rec: &mut Recorder,
    server: &Server,
    tls: &TlsClient,
    login: &Login<'_>,
    deadline: Instant,
) -> Result<String, ProbeError> {
    let mut s = login::open(rec, server, tls, deadline).await?;

    let t = Instant::now();
    let greeting = recv_reply(&mut s, rec, Phase::Greeting, deadline).await;
    rec.record(Phase::Greeting, t.elapsed());
    let greeting = greeting?;
    if greeting.code != 220 {
        return Err(fail(rec, Stage::Greeting, "the banner", &greeting, &None));
    }

    if server.tls == TlsMode::StarttlsSmtp {
        let t = Instant::now();
        let mut conn = s.into_conn();
        let r = smtp_negotiate(rec, &mut conn, deadline).await;
        rec.record(Phase::Starttls, t.elapsed());
        r?;
        s = login::upgrade(rec, Session::new(conn, false), server, tls, deadline).await?;
    }

    let t = Instant::now();
    let r = expect(
        &mut s,
        rec,
        Stage::Greeting,
        Phase::Capability,
        deadline,
        &format!("EHLO {EHLO_NAME}"),
        250,
    )
    .await;
    let chosen = r.and_then(|ehlo| match auth_mechanisms(&ehlo) {
        Some(m) => login.choose(
            rec,
            |x| m.iter().any(|o| o == x),
            &format!("AUTH {}", m.join(" ")),
        ),
        None => Err(ProbeError::new(
            Phase::Capability,
            Reason::AuthMechanismUnsupported,
            if s.is_secure() {
                "EHLO lists no AUTH after TLS (SMTP AUTH not offered)"
            } else {
                "EHLO lists no AUTH"
            },
        )),
    });
    rec.record(Phase::Capability, t.elapsed());
    let mech = chosen?;

    let t = Instant::now();
    let r = authenticate(&mut s, rec, login, server, mech, deadline).await;
    rec.record(Phase::Auth, t.elapsed());
    r?;

    let mut accepted = String::new();
    if let Some(from) = login.mail_from {
        let t = Instant::now();
        let r = async {
            expect(
                &mut s,
                rec,
                Stage::Mailbox,
                Phase::Mailbox,
                deadline,
                &format!("MAIL FROM:<{from}>"),
                250,
            )
            .await?;
            expect(
                &mut s,
                rec,
                Stage::Mailbox,
                Phase::Mailbox,
                deadline,
                "RSET",
                250,
            )
            .await
        }
        .await;
        rec.record(Phase::Mailbox, t.elapsed());
        r?;
        accepted = format!("; MAIL FROM:<{from}> accepted");
    }

    let t = Instant::now();
    let r = async {
        s.send(rec, Phase::Logout, deadline, "QUIT").await?;
        let reply = recv_reply(&mut s, rec, Phase::Logout, deadline).await?;
        if reply.code / 100 == 2 {
            Ok(())
        } else {
            Err(ProbeError::new(
                Phase::Logout,
                Reason::ProtocolError,
                format!("QUIT answered {}", reply.code),
            ))
        }
    }
    .await;
    login::logout_result(rec, t, r);
    s.close().await;

    Ok(format!(
        "authenticated as {} with {}{accepted}",
        login.user,
        sasl::mechanism_name(mech)
    ))
}

async fn authenticate(
    s: &mut Session,
    rec: &mut Recorder,
    login: &Login<'_>,
    server: &Server,
    mech: crate::config::Mechanism,
    deadline: Instant,
) -> Result<(), ProbeError> {
    s.require_tls()?;
    let token = login.token()?;
    let name = sasl::mechanism_name(mech);
    let target = sasl::Target {
        host: &server.host,
        port: server.port,
    };
    let blob = sasl::initial_response(mech, login.user, target, token);
    let line = secrecy::zeroize::Zeroizing::new(format!("AUTH {name} {}", blob.expose_secret()));
    let shown = format!("AUTH {name} {}", sasl::redacted(login.user, token));
    s.send_credentials(rec, deadline, &line, &shown, token, &blob)
        .await?;
    let mut challenge: Option<Challenge> = None;
    loop {
        let reply = recv_reply(s, rec, Phase::Auth, deadline).await?;
        match reply.code {
            235 => return Ok(()),
            334 if challenge.is_none() => {
                let c = sasl::decode_challenge(&reply.text());
                rec.note(Dir::Note, &format!("error challenge: {}", c.text));
                challenge = Some(c);
                s.send(rec, Phase::Auth, deadline, sasl::challenge_answer(mech))
                    .await?;
            }
            334 => {
                return Err(ProbeError::new(
                    Phase::Auth,
                    Reason::ProtocolError,
                    "server sent a second challenge after the error challenge",
                ))
            }
            _ => {
                return Err(fail(
                    rec,
                    Stage::Auth,
                    &format!("AUTH {name}"),
                    &reply,
                    &challenge,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> SmtpReply {
        let (code, _, text) = parse_smtp_line(line).unwrap();
        SmtpReply {
            code,
            lines: vec![text],
        }
    }

    fn c(stage: Stage, line: &str) -> Reason {
        classify(stage, &reply(line)).0
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            enhanced_code("5.7.139 Authentication unsuccessful"),
            Some("5.7.139")
        );
        assert_eq!(enhanced_code("4.3.2 Concurrent"), Some("4.3.2"));
        assert_eq!(enhanced_code("Authentication unsuccessful"), None);
        assert_eq!(enhanced_code("1.2.3 x"), None);
        assert_eq!(enhanced_code(""), None);
    }

    #[test]
    fn exchange_5_7_139_sentences_come_before_the_generic_rule() {
        use Reason::*;
        let s = Stage::Auth;
        assert_eq!(c(s, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR02CA0001.eurprd02.prod.outlook.com 2026-01-01T00:00:00.000Z 08DC]"), SmtpAuthDisabled);
        assert_eq!(c(s, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information."), SmtpAuthDisabled);
        assert_eq!(c(s, "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [AM0PR]"), BasicAuthDisabled);
        assert_eq!(c(s, "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator."), SecurityDefaults);
        assert_eq!(c(s, "535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator."), PolicyRejected);
        assert_eq!(
            c(s, "535 5.7.139 Authentication unsuccessful, something new."),
            PolicyRejected
        );
        assert_eq!(c(s, "535 5.7.3 Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com 2026-01-01T00:00:00.000Z 08DC]"), AuthRejected);
        assert_eq!(
            c(
                s,
                "535 5.7.8 Error: authentication failed: (reason unavailable)"
            ),
            AuthRejected
        );
        assert_eq!(
            c(
                s,
                "501 5.5.124 Invalid XOAUTH2 auth data - User address provided is not valid."
            ),
            AuthRejected
        );
        assert_eq!(
            c(
                s,
                "550 5.7.30 Basic authentication is not supported for Client Submission."
            ),
            BasicAuthDisabled
        );
        assert_eq!(
            c(s, "504 5.7.4 Unrecognized authentication type"),
            AuthMechanismUnsupported
        );
        assert_eq!(c(s, "454 4.7.0 Temporary authentication failure: Connection lost to authentication server"), MailboxUnavailable);
    }

    #[test]
    fn limits_and_submission_answers() {
        use Reason::*;
        assert_eq!(c(Stage::Greeting, "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information."), ConcurrentLimit);
        assert_eq!(
            c(
                Stage::Auth,
                "432 4.3.2 Concurrent connections limit exceeded."
            ),
            ConcurrentLimit
        );
        assert_eq!(
            c(
                Stage::Mailbox,
                "452 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
            ),
            ConcurrentLimit
        );
        assert_eq!(c(Stage::Mailbox, "554 5.2.252 SendAsDenied; support@contoso.com not allowed to send as shared@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied"), SendAsDenied);
        assert_eq!(c(Stage::Mailbox, "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message"), SendAsDenied);
        assert_eq!(
            c(
                Stage::Mailbox,
                "530 5.7.57 Client not authenticated to send mail."
            ),
            AuthRejected
        );
        assert_eq!(
            c(
                Stage::Mailbox,
                "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException"
            ),
            MailboxUnavailable
        );
        assert_eq!(
            c(
                Stage::Mailbox,
                "550 5.1.8 Access denied, bad outbound sender"
            ),
            MailboxUnavailable
        );
        assert_eq!(c(Stage::Greeting, "554 5.7.1 go away"), ProtocolError);
        assert_eq!(
            classify(
                Stage::Auth,
                &reply(
                    "421 4.7.0 Request is throttled. Suggested Backoff Time: 60000 milliseconds"
                )
            ),
            (Throttled, Some(Duration::from_secs(60)))
        );
    }

    #[test]
    fn ehlo_auth_lines_parse() {
        let ehlo = SmtpReply {
            code: 250,
            lines: [
                "SN4PR0501CA0054.outlook.office365.com Hello [203.0.113.7]",
                "SIZE 157286400",
                "PIPELINING",
                "AUTH LOGIN XOAUTH2",
                "8BITMIME",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(
            auth_mechanisms(&ehlo),
            Some(vec!["LOGIN".to_string(), "XOAUTH2".to_string()])
        );
        let old = SmtpReply {
            code: 250,
            lines: ["x", "AUTH=login xoauth2"].map(String::from).to_vec(),
        };
        assert_eq!(
            auth_mechanisms(&old),
            Some(vec!["LOGIN".to_string(), "XOAUTH2".to_string()])
        );
        let none = SmtpReply {
            code: 250,
            lines: ["AUTH is the host name", "STARTTLS"]
                .map(String::from)
                .to_vec(),
        };
        assert_eq!(auth_mechanisms(&none), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const STAGES: [Stage; 4] = [
        Stage::Greeting,
        Stage::AuthCommand,
        Stage::Auth,
        Stage::Mailbox,
    ];

    fn reply(code: u16, lines: &[String]) -> SmtpReply {
        SmtpReply {
            code,
            lines: lines.to_vec(),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_replies_never_panic(code in 0u16..1000, lines in prop::collection::vec("\\PC{0,120}", 0..8)) {
            let r = reply(code, &lines);
            if let Some(m) = auth_mechanisms(&r) {
                prop_assert!(m.len() <= 64);
            }
            if let Some(e) = enhanced_code(&r.text()) {
                prop_assert!(r.text().trim_start_matches(|c: char| c.is_ascii_whitespace()).starts_with(e));
            }
            for stage in STAGES {
                let (_, b) = classify(stage, &r);
                prop_assert!(b.is_none_or(|b| b <= login::MAX_BACKOFF));
            }
        }

        #[test]
        fn enhanced_codes_are_recognised(class in prop::sample::select(vec!['2', '4', '5']), a in 0u16..1000, b in 0u16..1000, rest in "[ -~]{0,40}") {
            let code = format!("{class}.{a}.{b}");
            let text = format!("{code} {rest}");
            prop_assert_eq!(enhanced_code(&text), Some(code.as_str()));
        }

        /// The EHLO AUTH line, in either form, lists its mechanisms upper-cased.
        #[test]
        fn auth_line_lists_mechanisms(eq: bool, mechs in prop::collection::vec("[a-zA-Z0-9-]{1,12}", 1..10)) {
            let line = format!("AUTH{}{}", if eq { '=' } else { ' ' }, mechs.join(" "));
            let r = reply(250, &["smtp.example.test Hello".to_string(), "SIZE 1000".to_string(), line]);
            let want: Vec<String> = mechs.iter().map(|m| m.to_ascii_uppercase()).collect();
            prop_assert_eq!(auth_mechanisms(&r), Some(want));
        }

        /// A 4xx without a more specific sentence is the server's temporary state, never a
        /// verdict on the credentials.
        #[test]
        fn plain_4xx_is_never_auth_rejected(code in 400u16..500, text in "[a-z ]{0,60}") {
            let r = reply(code, &[text]);
            for stage in STAGES {
                prop_assert_ne!(classify(stage, &r).0, Reason::AuthRejected);
            }
        }
    }
}
