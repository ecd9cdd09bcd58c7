//! IMAP login dialogue and its pure reply parser.
//!
//! The dialogue is the minimum that proves a mailbox is usable over IMAP, and nothing more:
//! greeting (capabilities noted when it carries `[CAPABILITY ...]`), `STARTTLS` only in
//! `starttls-imap` mode, `CAPABILITY` only when not yet known, `AUTHENTICATE XOAUTH2` (initial
//! response on the same line when `SASL-IR` is advertised, else after the `+`), `EXAMINE INBOX`,
//! `LOGOUT`. EXAMINE is not optional: Exchange Online can answer `AUTHENTICATE` with `OK` and then
//! refuse the first mailbox command with `BAD User is authenticated but not connected.`
//! (o365-facts.md 2.3), and EXAMINE is read-only, so it never changes `\Seen` flags the product
//! relies on. Every read is one bounded line (`line::MAX_LINE`), every reply at most
//! `line::MAX_REPLY_LINES` lines, all under the check's deadline.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::line::{truncate, MAX_REPLY_LINES};
use super::login::{self, Login, Session, Stage};
use super::sasl::{self, Challenge};
use super::tls::TlsClient;
use super::{Dir, Phase, ProbeError, Reason, Recorder};
use crate::config::{Mechanism, Server, TlsMode};

/// Status of a tagged response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// One server line, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// `+ text` (continuation request; the text may be a base64 challenge).
    Continuation(&'a str),
    /// `* text`.
    Untagged(&'a str),
    /// `TAG OK|NO|BAD text`.
    Tagged {
        tag: &'a str,
        status: Status,
        text: &'a str,
    },
    /// Anything else.
    Unknown,
}

/// Classify one line.
pub fn parse_line(line: &str) -> Response<'_> {
    if line == "+" {
        return Response::Continuation("");
    }
    if let Some(rest) = line.strip_prefix("+ ") {
        return Response::Continuation(rest.trim());
    }
    if let Some(rest) = line.strip_prefix("* ") {
        return Response::Untagged(rest);
    }
    let mut parts = line.splitn(3, ' ');
    let (Some(tag), Some(word)) = (parts.next(), parts.next()) else {
        return Response::Unknown;
    };
    let status = if word.eq_ignore_ascii_case("OK") {
        Status::Ok
    } else if word.eq_ignore_ascii_case("NO") {
        Status::No
    } else if word.eq_ignore_ascii_case("BAD") {
        Status::Bad
    } else {
        return Response::Unknown;
    };
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return Response::Unknown;
    }
    Response::Tagged {
        tag,
        status,
        text: parts.next().unwrap_or(""),
    }
}

/// What the greeting says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GreetingKind {
    Ok,
    PreAuth,
    Bye,
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub kind: GreetingKind,
    /// The text after the status word.
    pub text: String,
    /// Capabilities from a `[CAPABILITY ...]` response code (Dovecot sends one; Exchange does not).
    pub capabilities: Option<Vec<String>>,
}

pub fn parse_greeting(line: &str) -> Greeting {
    let (kind, text) = match parse_line(line) {
        Response::Untagged(rest) => {
            let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match word.to_ascii_uppercase().as_str() {
                "OK" => GreetingKind::Ok,
                "PREAUTH" => GreetingKind::PreAuth,
                "BYE" => GreetingKind::Bye,
                _ => GreetingKind::Invalid,
            };
            (kind, text)
        }
        _ => (GreetingKind::Invalid, line),
    };
    Greeting {
        kind,
        text: text.to_string(),
        capabilities: capability_code(text),
    }
}

/// Capabilities in a leading `[CAPABILITY a b c]` response code, upper-cased.
pub fn capability_code(text: &str) -> Option<Vec<String>> {
    let rest = text.strip_prefix('[')?;
    let (inner, _) = rest.split_once(']')?;
    capability_words(inner)
}

/// Capabilities in an untagged `CAPABILITY a b c` response (text after `* `), upper-cased.
pub fn capability_words(untagged: &str) -> Option<Vec<String>> {
    let mut words = untagged.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("CAPABILITY") {
        return None;
    }
    Some(words.take(256).map(|w| w.to_ascii_uppercase()).collect())
}

/// Whether `caps` lists `AUTH=<mech>`.
pub fn offers_auth(caps: &[String], mech: &str) -> bool {
    caps.iter()
        .any(|c| c.strip_prefix("AUTH=").is_some_and(|m| m == mech))
}

/// `N EXISTS` (text after `* `).
pub fn parse_exists(untagged: &str) -> Option<u64> {
    let mut words = untagged.split_ascii_whitespace();
    let n = words.next()?.parse().ok()?;
    words
        .next()
        .filter(|w| w.eq_ignore_ascii_case("EXISTS"))
        .map(|_| n)
}

/// Map a failure answer to a reason (and a backoff hint).
///
/// Order matters: throttling and "authenticated but not connected" (o365-facts.md 2.3) are
/// recognised by their text wherever they appear; then the stage decides, because Exchange's
/// `NO AUTHENTICATE failed.` and Dovecot's `NO [AUTHENTICATIONFAILED]` both mean a refused
/// credential while a `NO` to EXAMINE means the mailbox cannot be opened.
pub fn classify(stage: Stage, status: Status, text: &str) -> (Reason, Option<Duration>) {
    if let Some(backoff) = login::throttled(text) {
        return (Reason::Throttled, backoff);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("user is authenticated but not connected") {
        return (Reason::MailboxNotConnected, None);
    }
    let reason = match stage {
        Stage::Greeting => Reason::ProtocolError,
        Stage::AuthCommand | Stage::Auth => {
            if lower.contains("[unavailable]") {
                Reason::MailboxUnavailable
            } else if lower.contains("mechanism")
                && (lower.contains("unsupported") || lower.contains("unknown"))
            {
                Reason::AuthMechanismUnsupported
            } else {
                Reason::AuthRejected
            }
        }
        Stage::Mailbox => match status {
            Status::Bad => Reason::ProtocolError,
            _ => Reason::MailboxUnavailable,
        },
    };
    (reason, None)
}

/// Tags `A1`, `A2`, ... for one session.
#[derive(Debug, Default)]
struct Tags(u32);

impl Tags {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("A{}", self.0)
    }
}

/// How a command ended: its tagged answer, or a continuation request.
enum Reply {
    Tagged(Status, String),
    Continuation(String),
}

fn fail(
    rec: &mut Recorder,
    stage: Stage,
    reason: Reason,
    backoff: Option<Duration>,
    detail: String,
) -> ProbeError {
    if backoff.is_some() {
        rec.backoff = backoff;
    }
    ProbeError::new(stage.phase(), reason, detail)
}

/// Read until the answer tagged `tag` (or a continuation), passing untagged lines to `untagged`.
/// A connection closed after `* BYE` is classified by the BYE text (Exchange throttling ends
/// with a disconnect, o365-facts.md 2.3).
async fn read_reply(
    s: &mut Session,
    rec: &mut Recorder,
    stage: Stage,
    deadline: Instant,
    tag: &str,
    untagged: &mut (dyn FnMut(&str) + Send),
) -> Result<Reply, ProbeError> {
    let phase = stage.phase();
    let mut bye: Option<String> = None;
    for _ in 0..MAX_REPLY_LINES {
        let line = match s.recv(rec, phase, deadline).await {
            Ok(l) => l,
            Err(e) if e.reason == Reason::ConnectionClosed => {
                let Some(text) = bye else { return Err(e) };
                let (reason, backoff) = match login::throttled(&text) {
                    Some(b) => (Reason::Throttled, b),
                    None => (Reason::ConnectionClosed, None),
                };
                return Err(fail(
                    rec,
                    stage,
                    reason,
                    backoff,
                    format!("server said BYE {} and closed", truncate(&text, 200)),
                ));
            }
            Err(e) => return Err(e),
        };
        match parse_line(&line) {
            Response::Continuation(t) => return Ok(Reply::Continuation(t.to_string())),
            Response::Untagged(t) => {
                let (word, rest) = t.split_once(' ').unwrap_or((t, ""));
                if word.eq_ignore_ascii_case("BYE") {
                    bye = Some(rest.trim().to_string());
                }
                untagged(t);
            }
            Response::Tagged {
                tag: got,
                status,
                text,
            } if got == tag => return Ok(Reply::Tagged(status, text.to_string())),
            Response::Tagged { tag: got, .. } => {
                return Err(ProbeError::new(
                    phase,
                    Reason::ProtocolError,
                    format!("answer tagged {got} while waiting for {tag}"),
                ))
            }
            Response::Unknown => {
                return Err(ProbeError::new(
                    phase,
                    Reason::ProtocolError,
                    format!("not an IMAP response: {}", truncate(&line, 80)),
                ))
            }
        }
    }
    Err(ProbeError::new(
        phase,
        Reason::ReplyTooLong,
        format!("more than {MAX_REPLY_LINES} lines without the answer to {tag}"),
    ))
}

/// A command that must end with a tagged answer (no continuation allowed).
async fn command(
    s: &mut Session,
    rec: &mut Recorder,
    stage: Stage,
    deadline: Instant,
    tag: &str,
    untagged: &mut (dyn FnMut(&str) + Send),
) -> Result<(Status, String), ProbeError> {
    match read_reply(s, rec, stage, deadline, tag, untagged).await? {
        Reply::Tagged(status, text) => Ok((status, text)),
        Reply::Continuation(_) => Err(ProbeError::new(
            stage.phase(),
            Reason::ProtocolError,
            format!("unexpected continuation request in answer to {tag}"),
        )),
    }
}

/// Run the IMAP login dialogue. Returns the success sentence.
pub(crate) async fn run(
    rec: &mut Recorder,
    server: &Server,
    tls: &TlsClient,
    login: &Login<'_>,
    deadline: Instant,
) -> Result<String, ProbeError> {
    let mut s = login::open(rec, server, tls, deadline).await?;
    let mut tags = Tags::default();

    let t = Instant::now();
    let greeting = s.recv(rec, Phase::Greeting, deadline).await;
    rec.record(Phase::Greeting, t.elapsed());
    let greeting = parse_greeting(&greeting?);
    match greeting.kind {
        GreetingKind::Ok => {}
        GreetingKind::Bye => {
            let (reason, backoff) = classify(Stage::Greeting, Status::No, &greeting.text);
            return Err(fail(
                rec,
                Stage::Greeting,
                reason,
                backoff,
                format!(
                    "server refused the session: BYE {}",
                    truncate(&greeting.text, 200)
                ),
            ));
        }
        GreetingKind::PreAuth | GreetingKind::Invalid => {
            return Err(ProbeError::new(
                Phase::Greeting,
                Reason::ProtocolError,
                format!(
                    "not an IMAP * OK greeting: {}",
                    truncate(&greeting.text, 80)
                ),
            ))
        }
    }
    if let Some(backend) = login::exchange_backend(&greeting.text) {
        rec.fact("exchange_backend", backend);
    }
    let mut caps = greeting.capabilities;

    if server.tls == TlsMode::StarttlsImap {
        let t = Instant::now();
        let r = starttls(&mut s, rec, &mut tags, &mut caps, deadline).await;
        rec.record(Phase::Starttls, t.elapsed());
        r?;
        s = login::upgrade(rec, s, server, tls, deadline).await?;
        // RFC 3501 6.2.1: capabilities learned before STARTTLS must be discarded.
        caps = None;
    }

    // The capability phase is timed only when the CAPABILITY command runs (Exchange's greeting
    // lists none; Dovecot's does).
    let t = Instant::now();
    let asked = caps.is_none();
    let r = match caps {
        Some(c) => Ok(c),
        None => {
            capability(
                &mut s,
                rec,
                &mut tags,
                Stage::Greeting,
                Phase::Capability,
                deadline,
            )
            .await
        }
    };
    let chosen = r.and_then(|caps| {
        let mech = login.choose(rec, |m| offers_auth(&caps, m), &auth_listing(&caps))?;
        Ok((mech, caps.iter().any(|c| c == "SASL-IR")))
    });
    if asked {
        rec.record(Phase::Capability, t.elapsed());
    }
    let (mech, sasl_ir) = chosen?;

    let t = Instant::now();
    let r = authenticate(
        &mut s, rec, &mut tags, login, server, mech, sasl_ir, deadline,
    )
    .await;
    rec.record(Phase::Auth, t.elapsed());
    r?;

    let t = Instant::now();
    let r = examine(&mut s, rec, &mut tags, deadline).await;
    rec.record(Phase::Mailbox, t.elapsed());
    let messages = r?;
    rec.messages = messages;

    let t = Instant::now();
    let tag = tags.next();
    let r = async {
        s.send(rec, Phase::Logout, deadline, &format!("{tag} LOGOUT"))
            .await?;
        command(&mut s, rec, Stage::Mailbox, deadline, &tag, &mut |_| {})
            .await
            .map(|_| ())
            .map_err(|mut e| {
                e.phase = Phase::Logout;
                e
            })
    }
    .await;
    login::logout_result(rec, t, r);
    s.close().await;

    Ok(format!(
        "logged in as {} with {}; INBOX has {} messages",
        login.user,
        sasl::mechanism_name(mech),
        messages.map_or("an unknown number of".to_string(), |n| n.to_string())
    ))
}

fn auth_listing(caps: &[String]) -> String {
    let auths: Vec<&str> = caps
        .iter()
        .filter(|c| c.starts_with("AUTH="))
        .map(String::as_str)
        .collect();
    if auths.is_empty() {
        "no AUTH= capability".to_string()
    } else {
        auths.join(" ")
    }
}

/// `CAPABILITY` and its untagged answer.
async fn capability(
    s: &mut Session,
    rec: &mut Recorder,
    tags: &mut Tags,
    stage: Stage,
    phase: Phase,
    deadline: Instant,
) -> Result<Vec<String>, ProbeError> {
    let tag = tags.next();
    s.send(rec, phase, deadline, &format!("{tag} CAPABILITY"))
        .await?;
    let mut caps: Option<Vec<String>> = None;
    let (status, text) = command(s, rec, stage, deadline, &tag, &mut |u| {
        if let Some(c) = capability_words(u) {
            caps = Some(c);
        }
    })
    .await
    .map_err(|mut e| {
        e.phase = phase;
        e
    })?;
    if status != Status::Ok {
        return Err(ProbeError::new(
            phase,
            Reason::ProtocolError,
            format!(
                "CAPABILITY answered {} {}",
                status.as_str(),
                truncate(&text, 120)
            ),
        ));
    }
    caps.or_else(|| capability_code(&text))
        .ok_or_else(|| ProbeError::new(phase, Reason::ProtocolError, "CAPABILITY listed nothing"))
}

/// `CAPABILITY` (unless known), `STARTTLS` must be listed and answered `OK`.
async fn starttls(
    s: &mut Session,
    rec: &mut Recorder,
    tags: &mut Tags,
    caps: &mut Option<Vec<String>>,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let known = match caps.take() {
        Some(c) => c,
        None => capability(s, rec, tags, Stage::Greeting, Phase::Starttls, deadline).await?,
    };
    if !known.iter().any(|c| c == "STARTTLS") {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            "server does not list STARTTLS",
        ));
    }
    let tag = tags.next();
    s.send(rec, Phase::Starttls, deadline, &format!("{tag} STARTTLS"))
        .await?;
    let (status, text) = command(s, rec, Stage::Greeting, deadline, &tag, &mut |_| {})
        .await
        .map_err(|mut e| {
            e.phase = Phase::Starttls;
            e
        })?;
    if status != Status::Ok {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            format!(
                "STARTTLS answered {} {}",
                status.as_str(),
                truncate(&text, 120)
            ),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn authenticate(
    s: &mut Session,
    rec: &mut Recorder,
    tags: &mut Tags,
    login: &Login<'_>,
    server: &Server,
    mech: Mechanism,
    sasl_ir: bool,
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
    let tag = tags.next();
    if sasl_ir {
        let line = secrecy::zeroize::Zeroizing::new(format!(
            "{tag} AUTHENTICATE {name} {}",
            blob.expose_secret()
        ));
        s.send_credentials(
            rec,
            deadline,
            &line,
            &format!("{tag} AUTHENTICATE {name} {shown}"),
            token,
            &blob,
        )
        .await?;
    } else {
        s.send(
            rec,
            Phase::Auth,
            deadline,
            &format!("{tag} AUTHENTICATE {name}"),
        )
        .await?;
        match read_reply(s, rec, Stage::AuthCommand, deadline, &tag, &mut |_| {}).await? {
            Reply::Continuation(_) => {}
            Reply::Tagged(status, text) => {
                let (reason, backoff) = classify(Stage::AuthCommand, status, &text);
                return Err(fail(
                    rec,
                    Stage::AuthCommand,
                    reason,
                    backoff,
                    format!(
                        "AUTHENTICATE {name} answered {} {}",
                        status.as_str(),
                        truncate(&text, 200)
                    ),
                ));
            }
        }
        s.send_credentials(rec, deadline, blob.expose_secret(), &shown, token, &blob)
            .await?;
    }
    let mut challenge: Option<Challenge> = None;
    loop {
        match read_reply(s, rec, Stage::Auth, deadline, &tag, &mut |_| {}).await? {
            Reply::Continuation(b64) => {
                if challenge.is_some() {
                    return Err(ProbeError::new(
                        Phase::Auth,
                        Reason::ProtocolError,
                        "server sent a second challenge after the error challenge",
                    ));
                }
                let c = sasl::decode_challenge(&b64);
                rec.note(Dir::Note, &format!("error challenge: {}", c.text));
                challenge = Some(c);
                s.send(rec, Phase::Auth, deadline, sasl::challenge_answer(mech))
                    .await?;
            }
            Reply::Tagged(Status::Ok, _) => return Ok(()),
            Reply::Tagged(status, text) => {
                let (reason, backoff) = classify(Stage::Auth, status, &text);
                return Err(fail(
                    rec,
                    Stage::Auth,
                    reason,
                    backoff,
                    login::with_challenge(
                        format!(
                            "AUTHENTICATE answered {} {}",
                            status.as_str(),
                            truncate(&text, 200)
                        ),
                        &challenge,
                    ),
                ));
            }
        }
    }
}

/// `EXAMINE INBOX`: read-only open; returns the `EXISTS` count.
async fn examine(
    s: &mut Session,
    rec: &mut Recorder,
    tags: &mut Tags,
    deadline: Instant,
) -> Result<Option<u64>, ProbeError> {
    let tag = tags.next();
    s.send(
        rec,
        Phase::Mailbox,
        deadline,
        &format!("{tag} EXAMINE INBOX"),
    )
    .await?;
    let mut exists = None;
    let (status, text) = command(s, rec, Stage::Mailbox, deadline, &tag, &mut |u| {
        if let Some(n) = parse_exists(u) {
            exists = Some(n);
        }
    })
    .await?;
    if status == Status::Ok {
        return Ok(exists);
    }
    let (reason, backoff) = classify(Stage::Mailbox, status, &text);
    Err(fail(
        rec,
        Stage::Mailbox,
        reason,
        backoff,
        format!(
            "EXAMINE INBOX answered {} {}",
            status.as_str(),
            truncate(&text, 200)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(parse_line("+ "), Response::Continuation(""));
        assert_eq!(parse_line("+"), Response::Continuation(""));
        assert_eq!(parse_line("+ eyJz"), Response::Continuation("eyJz"));
        assert_eq!(parse_line("* 3 EXISTS"), Response::Untagged("3 EXISTS"));
        assert_eq!(
            parse_line("A1 OK AUTHENTICATE completed."),
            Response::Tagged {
                tag: "A1",
                status: Status::Ok,
                text: "AUTHENTICATE completed."
            }
        );
        assert_eq!(
            parse_line("a1 no [AUTHENTICATIONFAILED] Authentication failed."),
            Response::Tagged {
                tag: "a1",
                status: Status::No,
                text: "[AUTHENTICATIONFAILED] Authentication failed."
            }
        );
        assert_eq!(
            parse_line("A5 BAD"),
            Response::Tagged {
                tag: "A5",
                status: Status::Bad,
                text: ""
            }
        );
        assert_eq!(parse_line("A1 MAYBE x"), Response::Unknown);
        assert_eq!(parse_line("\u{1}\u{2}garbage"), Response::Unknown);
        assert_eq!(parse_line(""), Response::Unknown);
    }

    #[test]
    fn exchange_greeting_has_no_capabilities() {
        let g = parse_greeting(
            "* OK The Microsoft Exchange IMAP4 service is ready. [QQBNAFMAUABSAA==]",
        );
        assert_eq!(g.kind, GreetingKind::Ok);
        assert_eq!(g.capabilities, None);
    }

    #[test]
    fn dovecot_greeting_carries_capabilities() {
        let g = parse_greeting("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ LOGINDISABLED AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.");
        let caps = g.capabilities.unwrap();
        assert!(caps.contains(&"SASL-IR".to_string()));
        assert!(offers_auth(&caps, "XOAUTH2"));
        assert!(offers_auth(&caps, "OAUTHBEARER"));
        assert!(!offers_auth(&caps, "PLAIN"));
    }

    #[test]
    fn greetings_other_than_ok() {
        assert_eq!(parse_greeting("* BYE busy").kind, GreetingKind::Bye);
        assert_eq!(parse_greeting("* PREAUTH hi").kind, GreetingKind::PreAuth);
        assert_eq!(parse_greeting("+OK pop3").kind, GreetingKind::Invalid);
        assert_eq!(parse_greeting("220 smtp").kind, GreetingKind::Invalid);
    }

    #[test]
    fn exchange_capability_line_parses() {
        let caps = capability_words("CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+").unwrap();
        assert!(offers_auth(&caps, "XOAUTH2"));
        assert!(caps.contains(&"SASL-IR".to_string()));
        assert_eq!(capability_words("3 EXISTS"), None);
        assert!(offers_auth(
            &capability_words("capability auth=xoauth2").unwrap(),
            "XOAUTH2"
        ));
    }

    #[test]
    fn exists_parses() {
        assert_eq!(parse_exists("12 EXISTS"), Some(12));
        assert_eq!(parse_exists("0 exists"), Some(0));
        assert_eq!(parse_exists("3 RECENT"), None);
        assert_eq!(parse_exists("FLAGS (\\Seen)"), None);
        assert_eq!(parse_exists("99999999999999999999999 EXISTS"), None);
    }

    #[test]
    fn exchange_and_dovecot_failures_classify() {
        use Reason::*;
        let c = |stage, status, text| classify(stage, status, text).0;
        assert_eq!(
            c(Stage::Auth, Status::No, "AUTHENTICATE failed."),
            AuthRejected
        );
        assert_eq!(
            c(
                Stage::Auth,
                Status::No,
                "[AUTHENTICATIONFAILED] Authentication failed."
            ),
            AuthRejected
        );
        assert_eq!(
            c(
                Stage::Auth,
                Status::No,
                "[UNAVAILABLE] Temporary authentication failure. [vm:2026]"
            ),
            MailboxUnavailable
        );
        assert_eq!(
            c(
                Stage::AuthCommand,
                Status::Bad,
                "Unsupported authentication mechanism."
            ),
            AuthMechanismUnsupported
        );
        assert_eq!(
            c(
                Stage::Mailbox,
                Status::Bad,
                "User is authenticated but not connected."
            ),
            MailboxNotConnected
        );
        assert_eq!(
            c(Stage::Mailbox, Status::No, "Mailbox doesn't exist: INBOX"),
            MailboxUnavailable
        );
        assert_eq!(
            c(Stage::Mailbox, Status::Bad, "Command Argument Error. 11"),
            ProtocolError
        );
        assert_eq!(
            classify(
                Stage::Auth,
                Status::No,
                "Request is throttled. Suggested Backoff Time: 299609 milliseconds"
            ),
            (Throttled, Some(Duration::from_millis(299_609)))
        );
        assert_eq!(
            classify(
                Stage::Mailbox,
                Status::Bad,
                "Request is throttled. Suggested Backoff Time: 1000 milliseconds"
            ),
            (Throttled, Some(Duration::from_secs(1)))
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
        /// Any line (lossy UTF-8 from the wire) parses or is `Unknown`; nothing panics.
        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,300}") {
            let _ = parse_line(&line);
            let g = parse_greeting(&line);
            prop_assert!(g.capabilities.map_or(0, |c| c.len()) <= 256);
            let _ = capability_code(&line);
            let _ = parse_exists(&line);
            for stage in STAGES {
                for status in [Status::Ok, Status::No, Status::Bad] {
                    let (_, backoff) = classify(stage, status, &line);
                    prop_assert!(backoff.is_none_or(|b| b <= login::MAX_BACKOFF));
                }
            }
        }

        /// A tagged answer round-trips: tag, status (any case) and text.
        #[test]
        fn tagged_answers_round_trip(
            tag in "[A-Za-z0-9.]{1,8}",
            word in prop::sample::select(vec!["OK", "ok", "No", "NO", "BAD", "bad"]),
            text in "[ -~]{0,120}",
        ) {
            let line = format!("{tag} {word} {text}");
            let status = match word.to_ascii_uppercase().as_str() {
                "OK" => Status::Ok,
                "NO" => Status::No,
                _ => Status::Bad,
            };
            prop_assert_eq!(parse_line(&line), Response::Tagged { tag: tag.as_str(), status, text: text.as_str() });
        }

        /// Capability lists are upper-cased, in order, and capped at 256 words.
        #[test]
        fn capabilities_are_upper_cased_and_bounded(words in prop::collection::vec("[A-Za-z0-9=+-]{1,12}", 0..400)) {
            let caps = capability_words(&format!("CAPABILITY {}", words.join(" "))).expect("a CAPABILITY line");
            let want: Vec<String> = words.iter().take(256).map(|w| w.to_ascii_uppercase()).collect();
            prop_assert_eq!(&caps, &want);
            let g = parse_greeting(&format!("* OK [CAPABILITY {}] ready", words.join(" ")));
            prop_assert_eq!(g.capabilities, if words.is_empty() { Some(vec![]) } else { Some(want) });
        }

        #[test]
        fn exists_counts_round_trip(n: u64) {
            prop_assert_eq!(parse_exists(&format!("{n} EXISTS")), Some(n));
        }

        /// Exchange's throttling text wins wherever it appears, with its hint capped.
        #[test]
        fn throttling_is_recognised_at_every_stage(ms: u64, pre in "[a-z ]{0,20}") {
            let text = format!("{pre}Request is throttled. Suggested Backoff Time: {ms} milliseconds");
            for stage in STAGES {
                let (r, b) = classify(stage, Status::No, &text);
                prop_assert_eq!(r, Reason::Throttled);
                prop_assert_eq!(b, Some(Duration::from_millis(ms).min(login::MAX_BACKOFF)));
            }
        }
    }
}
