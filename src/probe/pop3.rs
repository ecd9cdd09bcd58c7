//! POP3 login dialogue and its pure reply parser.
//!
//! Kept as short as a POP3 session can be, because RFC 1939 servers lock the maildrop for the
//! session and the product's retriever may be polling the same mailbox (o365-facts.md 2.4):
//! greeting, `STLS` only in `starttls-pop3` mode, `CAPA` only when OAUTHBEARER is configured (to
//! see whether it is offered), `AUTH XOAUTH2`, the `+`, the base64 blob on its own line
//! (Microsoft's documented two-line form), `STAT` for the message count, `QUIT`. Never `RETR`,
//! `DELE` or anything else that reads or changes mail.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::line::{truncate, MAX_REPLY_LINES};
use super::login::{self, Login, Session, Stage};
use super::sasl::{self, Challenge};
use super::tls::TlsClient;
use super::{Dir, Phase, ProbeError, Reason, Recorder};
use crate::config::{Mechanism, Server, TlsMode};

/// One POP3 server line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK text`.
    Ok(&'a str),
    /// `-ERR text`.
    Err(&'a str),
    /// `+ text` or a bare `+` (SASL continuation; Dovecot sends `+ `, Exchange `+`).
    Continuation(&'a str),
    Unknown,
}

pub fn parse_reply(line: &str) -> Reply<'_> {
    if let Some(rest) = strip_word(line, "+OK") {
        return Reply::Ok(rest);
    }
    if let Some(rest) = strip_word(line, "-ERR") {
        return Reply::Err(rest);
    }
    if line == "+" {
        return Reply::Continuation("");
    }
    if let Some(rest) = line.strip_prefix("+ ") {
        return Reply::Continuation(rest.trim());
    }
    Reply::Unknown
}

/// `word` at the start of `line` (case-insensitive), followed by a space or the end.
fn strip_word<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let head = line.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &line[word.len()..];
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix(' ')
    }
}

/// `STAT` answer text (after `+OK `): message count and size.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let mut w = text.split_ascii_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// The mechanisms of a `CAPA` line `SASL PLAIN XOAUTH2`, upper-cased.
pub fn capa_sasl(line: &str) -> Option<Vec<String>> {
    let mut w = line.split_ascii_whitespace();
    if !w.next()?.eq_ignore_ascii_case("SASL") {
        return None;
    }
    Some(w.take(64).map(|m| m.to_ascii_uppercase()).collect())
}

/// Map a `-ERR` text to a reason (and a backoff hint).
///
/// Exchange's `-ERR Authentication failure: unknown user name or bad password.` is the same for a
/// bad token, a wrong audience, missing permissions and POP disabled for the mailbox
/// (o365-facts.md 2.4, 7), so after the credentials every other `-ERR` is `auth_rejected`; only
/// throttling and the RFC 3206 temporary codes (`[SYS/TEMP]`, `[IN-USE]`) are told apart.
pub fn classify(stage: Stage, text: &str) -> (Reason, Option<Duration>) {
    if let Some(backoff) = login::throttled(text) {
        return (Reason::Throttled, backoff);
    }
    let lower = text.to_ascii_lowercase();
    if stage != Stage::Greeting && (lower.contains("[sys/temp]") || lower.contains("[in-use]")) {
        return (Reason::MailboxUnavailable, None);
    }
    let reason = match stage {
        Stage::Greeting => Reason::ProtocolError,
        // Refused before any credential was seen: the mechanism itself.
        Stage::AuthCommand => Reason::AuthMechanismUnsupported,
        Stage::Auth => Reason::AuthRejected,
        Stage::Mailbox => Reason::MailboxUnavailable,
    };
    (reason, None)
}

async fn recv_reply(
    s: &mut Session,
    rec: &mut Recorder,
    phase: Phase,
    deadline: Instant,
) -> Result<String, ProbeError> {
    s.recv(rec, phase, deadline).await
}

fn fail(
    rec: &mut Recorder,
    stage: Stage,
    what: &str,
    text: &str,
    challenge: &Option<Challenge>,
) -> ProbeError {
    let (reason, backoff) = classify(stage, text);
    if backoff.is_some() {
        rec.backoff = backoff;
    }
    ProbeError::new(
        stage.phase(),
        reason,
        login::with_challenge(
            format!("{what} answered -ERR {}", truncate(text, 200)),
            challenge,
        ),
    )
}

fn unexpected(phase: Phase, what: &str, line: &str) -> ProbeError {
    ProbeError::new(
        phase,
        Reason::ProtocolError,
        format!("unexpected answer to {what}: {}", truncate(line, 80)),
    )
}

/// Run the POP3 login dialogue. Returns the success sentence.
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
    match parse_reply(&greeting) {
        Reply::Ok(text) => {
            if let Some(backend) = login::exchange_backend(text) {
                rec.fact("exchange_backend", backend);
            }
        }
        Reply::Err(text) => return Err(fail(rec, Stage::Greeting, "the greeting", text, &None)),
        _ => return Err(unexpected(Phase::Greeting, "the connection", &greeting)),
    }

    if server.tls == TlsMode::StarttlsPop3 {
        let t = Instant::now();
        let r = async {
            s.send(rec, Phase::Starttls, deadline, "STLS").await?;
            let l = recv_reply(&mut s, rec, Phase::Starttls, deadline).await?;
            match parse_reply(&l) {
                Reply::Ok(_) => Ok(()),
                _ => Err(ProbeError::new(
                    Phase::Starttls,
                    Reason::StarttlsUnsupported,
                    format!("STLS answered {}", truncate(&l, 120)),
                )),
            }
        }
        .await;
        rec.record(Phase::Starttls, t.elapsed());
        r?;
        s = login::upgrade(rec, s, server, tls, deadline).await?;
    }

    let mech = if login.mechanism == Mechanism::OAuthBearer {
        let t = Instant::now();
        let r = capa(&mut s, rec, deadline).await;
        let chosen = r.and_then(|mechs| match mechs {
            Some(m) => login.choose(rec, |x| m.iter().any(|o| o == x), &m.join(" ")),
            None => {
                rec.note(Dir::Note, "no SASL list in CAPA; trying XOAUTH2");
                Ok(Mechanism::XOAuth2)
            }
        });
        rec.record(Phase::Capability, t.elapsed());
        chosen?
    } else {
        // Microsoft's documented POP3 exchange has no CAPA; an unsupported mechanism shows as
        // the -ERR to AUTH.
        Mechanism::XOAuth2
    };

    let t = Instant::now();
    let r = authenticate(&mut s, rec, login, server, mech, deadline).await;
    rec.record(Phase::Auth, t.elapsed());
    r?;

    let t = Instant::now();
    let r = async {
        s.send(rec, Phase::Mailbox, deadline, "STAT").await?;
        let l = recv_reply(&mut s, rec, Phase::Mailbox, deadline).await?;
        match parse_reply(&l) {
            Reply::Ok(text) => parse_stat(text)
                .map(|(n, _)| n)
                .ok_or_else(|| unexpected(Phase::Mailbox, "STAT", &l)),
            Reply::Err(text) => Err(fail(rec, Stage::Mailbox, "STAT", text, &None)),
            _ => Err(unexpected(Phase::Mailbox, "STAT", &l)),
        }
    }
    .await;
    rec.record(Phase::Mailbox, t.elapsed());
    let messages = r?;
    rec.messages = Some(messages);

    let t = Instant::now();
    let r = async {
        s.send(rec, Phase::Logout, deadline, "QUIT").await?;
        let l = recv_reply(&mut s, rec, Phase::Logout, deadline).await?;
        match parse_reply(&l) {
            Reply::Ok(_) => Ok(()),
            _ => Err(unexpected(Phase::Logout, "QUIT", &l)),
        }
    }
    .await;
    login::logout_result(rec, t, r);
    s.close().await;

    Ok(format!(
        "logged in as {} with {}; the maildrop has {messages} messages",
        login.user,
        sasl::mechanism_name(mech)
    ))
}

/// `CAPA`; returns the SASL mechanisms when listed. A `-ERR` (CAPA is optional, RFC 2449) is
/// `None`, not a failure.
async fn capa(
    s: &mut Session,
    rec: &mut Recorder,
    deadline: Instant,
) -> Result<Option<Vec<String>>, ProbeError> {
    s.send(rec, Phase::Capability, deadline, "CAPA").await?;
    let first = recv_reply(s, rec, Phase::Capability, deadline).await?;
    match parse_reply(&first) {
        Reply::Ok(_) => {}
        Reply::Err(_) => return Ok(None),
        _ => return Err(unexpected(Phase::Capability, "CAPA", &first)),
    }
    let mut mechs = None;
    for _ in 0..MAX_REPLY_LINES {
        let l = recv_reply(s, rec, Phase::Capability, deadline).await?;
        if l == "." {
            return Ok(mechs);
        }
        if let Some(m) = capa_sasl(&l) {
            mechs = Some(m);
        }
    }
    Err(ProbeError::new(
        Phase::Capability,
        Reason::ReplyTooLong,
        format!("CAPA listed more than {MAX_REPLY_LINES} lines"),
    ))
}

async fn authenticate(
    s: &mut Session,
    rec: &mut Recorder,
    login: &Login<'_>,
    server: &Server,
    mech: Mechanism,
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
    let shown = sasl::redacted(login.user, token);
    let what = format!("AUTH {name}");
    s.send(rec, Phase::Auth, deadline, &what).await?;
    let l = recv_reply(s, rec, Phase::Auth, deadline).await?;
    match parse_reply(&l) {
        Reply::Continuation(_) => {}
        Reply::Err(text) => return Err(fail(rec, Stage::AuthCommand, &what, text, &None)),
        _ => return Err(unexpected(Phase::Auth, &what, &l)),
    }
    s.send_credentials(rec, deadline, blob.expose_secret(), &shown, token, &blob)
        .await?;
    let mut challenge: Option<Challenge> = None;
    loop {
        let l = recv_reply(s, rec, Phase::Auth, deadline).await?;
        match parse_reply(&l) {
            Reply::Ok(_) => return Ok(()),
            Reply::Err(text) => {
                return Err(fail(rec, Stage::Auth, "the credentials", text, &challenge))
            }
            Reply::Continuation(b64) if challenge.is_none() => {
                let c = sasl::decode_challenge(b64);
                rec.note(Dir::Note, &format!("error challenge: {}", c.text));
                challenge = Some(c);
                s.send(rec, Phase::Auth, deadline, sasl::challenge_answer(mech))
                    .await?;
            }
            Reply::Continuation(_) => {
                return Err(ProbeError::new(
                    Phase::Auth,
                    Reason::ProtocolError,
                    "server sent a second challenge after the error challenge",
                ))
            }
            Reply::Unknown => return Err(unexpected(Phase::Auth, "the credentials", &l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_reply("+OK The Microsoft Exchange POP3 service is ready."),
            Reply::Ok("The Microsoft Exchange POP3 service is ready.")
        );
        assert_eq!(parse_reply("+OK"), Reply::Ok(""));
        assert_eq!(parse_reply("+ok 2 320"), Reply::Ok("2 320"));
        assert_eq!(
            parse_reply("-ERR [AUTH] Authentication failed."),
            Reply::Err("[AUTH] Authentication failed.")
        );
        assert_eq!(parse_reply("+"), Reply::Continuation(""));
        assert_eq!(parse_reply("+ "), Reply::Continuation(""));
        assert_eq!(parse_reply("+ eyJ="), Reply::Continuation("eyJ="));
        assert_eq!(parse_reply("+OKAY"), Reply::Unknown);
        assert_eq!(parse_reply("* OK imap"), Reply::Unknown);
        assert_eq!(parse_reply(""), Reply::Unknown);
    }

    #[test]
    fn stat_and_capa_parse() {
        assert_eq!(parse_stat("2 320"), Some((2, 320)));
        assert_eq!(parse_stat("0 0"), Some((0, 0)));
        assert_eq!(parse_stat("x 0"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(
            capa_sasl("SASL PLAIN XOAUTH2"),
            Some(vec!["PLAIN".to_string(), "XOAUTH2".to_string()])
        );
        assert_eq!(capa_sasl("UIDL"), None);
    }

    #[test]
    fn exchange_and_dovecot_errors_classify() {
        use Reason::*;
        let c = |stage, t| classify(stage, t).0;
        assert_eq!(
            c(
                Stage::Auth,
                "Authentication failure: unknown user name or bad password."
            ),
            AuthRejected
        );
        assert_eq!(
            c(Stage::Auth, "[AUTH] Authentication failed."),
            AuthRejected
        );
        assert_eq!(
            c(
                Stage::Auth,
                "[SYS/TEMP] Temporary authentication failure. [vm:2026]"
            ),
            MailboxUnavailable
        );
        assert_eq!(
            c(Stage::Auth, "[IN-USE] Mailbox is locked"),
            MailboxUnavailable
        );
        assert_eq!(
            c(Stage::AuthCommand, "Unsupported authentication mechanism."),
            AuthMechanismUnsupported
        );
        assert_eq!(c(Stage::Mailbox, "Mailbox unavailable"), MailboxUnavailable);
        assert_eq!(c(Stage::Greeting, "busy"), ProtocolError);
        assert_eq!(
            classify(
                Stage::Auth,
                "Request is throttled. Suggested Backoff Time: 5000 milliseconds"
            ),
            (Throttled, Some(Duration::from_secs(5)))
        );
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

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,300}") {
            match parse_reply(&line) {
                Reply::Ok(t) => { let _ = parse_stat(t); }
                Reply::Err(t) | Reply::Continuation(t) => prop_assert!(t.len() < line.len().max(1)),
                Reply::Unknown => {}
            }
            prop_assert!(capa_sasl(&line).map_or(0, |m| m.len()) <= 64);
            for stage in STAGES {
                let (_, b) = classify(stage, &line);
                prop_assert!(b.is_none_or(|b| b <= login::MAX_BACKOFF));
            }
        }

        /// `+OK` / `-ERR` in any case, with or without text, round-trip the text.
        #[test]
        fn status_words_round_trip(ok: bool, upper: bool, text in "[ -~]{0,100}") {
            let word = match (ok, upper) {
                (true, true) => "+OK",
                (true, false) => "+ok",
                (false, true) => "-ERR",
                (false, false) => "-err",
            };
            let line = if text.is_empty() { word.to_string() } else { format!("{word} {text}") };
            let want = if ok { Reply::Ok(text.as_str()) } else { Reply::Err(text.as_str()) };
            prop_assert_eq!(parse_reply(&line), want);
            // a word glued to the status is not a status
            let glued = format!("{word}X");
            prop_assert_eq!(parse_reply(&glued), Reply::Unknown);
        }

        #[test]
        fn stat_round_trips(n: u64, size: u64) {
            prop_assert_eq!(parse_stat(&format!("{n} {size}")), Some((n, size)));
        }

        /// After the credentials, every `-ERR` that is neither throttling nor a temporary RFC 3206
        /// code is a refused credential (Exchange says the same for every cause).
        #[test]
        fn auth_errors_are_auth_rejected(text in "[a-z .:]{0,80}") {
            prop_assume!(!text.contains("request is throttled"));
            prop_assert_eq!(classify(Stage::Auth, &text).0, Reason::AuthRejected);
        }
    }
}
