//! Per-mailbox login probe: one bounded IMAP, POP3 or SMTP dialogue that authenticates with
//! XOAUTH2 (or OAUTHBEARER) the way the watched product does, and reports the result as an
//! [`Outcome`].
//!
//! The dialogues live beside their reply parsers in `imap`, `pop3` and `smtp`; this module owns
//! what they share: the entry point [`probe`], the [`Session`] that keeps the bearer token away
//! from plain-text connections and out of transcripts, mechanism choice, and the small pure
//! helpers for Exchange's diagnostics (throttling backoff, the backend server in the greeting).
//! Every dialogue runs under one deadline (`mailbox.timeout`) and stamps each phase.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::line::LineConn;
use super::tls::TlsClient;
use super::{imap, pop3, smtp, Dir, Outcome, Phase, ProbeError, Protocol, Reason, Recorder};
use crate::config::{Mailbox, Mechanism, Server};

/// Longest backoff taken from a server hint; a larger (or hostile) number is capped.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Log in to `mailbox` over `protocol` once.
///
/// `token` is the credential's current access token, or why there is none: then the probe
/// still connects and completes TLS (so reachability is measured) and fails in phase `auth`
/// with reason `token_unavailable`. The whole dialogue runs within `mailbox.timeout`.
pub async fn probe(
    mailbox: &Mailbox,
    protocol: Protocol,
    tls: &TlsClient,
    token: Result<&SecretString, String>,
) -> Outcome {
    let mut rec = Recorder::new();
    let deadline = Instant::now() + mailbox.timeout;
    let server = mailbox.server(protocol);
    let user = mailbox.sasl_user(protocol);
    let mail_from =
        (protocol == Protocol::Smtp && mailbox.smtp_mail_from).then_some(mailbox.address.as_str());
    let login = Login {
        user,
        mechanism: mailbox.mechanism,
        token: match &token {
            Ok(t) => Ok(t),
            Err(why) => Err(why.as_str()),
        },
        mail_from,
    };
    let delegate = match (&mailbox.login_as, protocol) {
        (Some(_), Protocol::Smtp) => format!(" (delegate of {})", mailbox.address),
        (Some(d), _) => format!(" (with the token of delegate {d})"),
        (None, _) => String::new(),
    };
    rec.note(
        Dir::Note,
        &format!(
            "{protocol} login to {}:{} (tls {}) as user={user}{delegate}",
            server.host,
            server.port,
            server.tls.as_str()
        ),
    );
    let result = match protocol {
        Protocol::Imap => imap::run(&mut rec, server, tls, &login, deadline).await,
        Protocol::Pop3 => pop3::run(&mut rec, server, tls, &login, deadline).await,
        Protocol::Smtp => smtp::run(&mut rec, server, tls, &login, deadline).await,
    };
    match result {
        Ok(detail) => rec.success(detail),
        Err(e) => rec.failure(e.phase, e.reason, e.detail),
    }
}

/// What a dialogue needs to know about the login it performs.
#[derive(Debug)]
pub struct Login<'a> {
    /// XOAUTH2 `user=` / OAUTHBEARER authzid ([`Mailbox::sasl_user`]).
    pub user: &'a str,
    /// The configured mechanism; OAUTHBEARER is used only when the server offers it.
    pub mechanism: Mechanism,
    pub token: Result<&'a SecretString, &'a str>,
    /// SMTP: send `MAIL FROM:<this>` + `RSET` after AUTH.
    pub mail_from: Option<&'a str>,
}

impl<'a> Login<'a> {
    /// The token, or the `token_unavailable` failure of phase `auth`.
    pub fn token(&self) -> Result<&'a SecretString, ProbeError> {
        self.token.map_err(|why| {
            ProbeError::new(
                Phase::Auth,
                Reason::TokenUnavailable,
                format!("no usable access token: {why}"),
            )
        })
    }

    /// Pick the mechanism: OAUTHBEARER when configured and offered, else XOAUTH2 when offered.
    /// `offered` answers for an upper-case mechanism name.
    pub fn choose(
        &self,
        rec: &mut Recorder,
        offered: impl Fn(&str) -> bool,
        listing: &str,
    ) -> Result<Mechanism, ProbeError> {
        if self.mechanism == Mechanism::OAuthBearer {
            if offered("OAUTHBEARER") {
                return Ok(Mechanism::OAuthBearer);
            }
            rec.note(
                Dir::Note,
                "OAUTHBEARER is configured but not offered by the server; trying XOAUTH2",
            );
        }
        if offered("XOAUTH2") {
            return Ok(Mechanism::XOAuth2);
        }
        Err(ProbeError::new(
            Phase::Capability,
            Reason::AuthMechanismUnsupported,
            format!("the server does not offer XOAUTH2 (it offers: {listing})"),
        ))
    }
}

/// A line connection that knows whether TLS is up. The token can only leave through
/// [`Session::send_credentials`], which refuses a plain-text connection; and every line read
/// after the token was sent is scrubbed of it before it reaches the transcript (a server or proxy
/// echoing a command back must not leak the token).
pub struct Session {
    conn: LineConn,
    secure: bool,
    scrub: Vec<SecretString>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("secure", &self.secure)
            .finish()
    }
}

impl Session {
    pub fn new(conn: LineConn, secure: bool) -> Session {
        Session {
            conn,
            secure,
            scrub: Vec::new(),
        }
    }

    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Fail phase `auth` unless TLS is up.
    pub fn require_tls(&self) -> Result<(), ProbeError> {
        if self.secure {
            Ok(())
        } else {
            Err(ProbeError::new(
                Phase::Auth,
                Reason::ProtocolError,
                "TLS is not up on this connection (tls: none); the token is never sent in clear text",
            ))
        }
    }

    pub async fn recv(
        &mut self,
        rec: &mut Recorder,
        phase: Phase,
        deadline: Instant,
    ) -> Result<String, ProbeError> {
        let mut line = self.conn.read_line(phase, deadline).await?;
        for s in &self.scrub {
            let s = s.expose_secret();
            if !s.is_empty() && line.contains(s) {
                line = line.replace(s, "[redacted]");
            }
        }
        rec.note(Dir::Received, &line);
        Ok(line)
    }

    pub async fn send(
        &mut self,
        rec: &mut Recorder,
        phase: Phase,
        deadline: Instant,
        line: &str,
    ) -> Result<(), ProbeError> {
        self.conn.send(rec, phase, deadline, line).await
    }

    /// Send a line carrying `token` (inside `line`), recording `shown` instead. Refuses without
    /// TLS: this is the one path a token takes to the wire.
    pub async fn send_credentials(
        &mut self,
        rec: &mut Recorder,
        deadline: Instant,
        line: &str,
        shown: &str,
        token: &SecretString,
        blob: &SecretString,
    ) -> Result<(), ProbeError> {
        self.require_tls()?;
        self.scrub.push(token.clone());
        self.scrub.push(blob.clone());
        self.conn
            .send_secret(rec, Phase::Auth, deadline, line, shown)
            .await
    }

    pub fn into_conn(self) -> LineConn {
        self.conn
    }

    /// Best-effort close after the dialogue.
    pub async fn close(self) {
        self.conn.close(super::endpoint::CLOSE_GRACE).await;
    }
}

/// Connect, and for implicit TLS complete the handshake. In STARTTLS modes (and `none`) the
/// session starts in plain text; [`upgrade`] secures it after the protocol's STARTTLS exchange.
pub async fn open(
    rec: &mut Recorder,
    server: &Server,
    tls: &TlsClient,
    deadline: Instant,
) -> Result<Session, ProbeError> {
    let tcp = super::tcp::connect(rec, &server.host, server.port, deadline).await?;
    let stream: super::line::BoxStream = Box::new(tcp);
    if server.tls == crate::config::TlsMode::Implicit {
        let stream = tls
            .handshake(rec, stream, &server.server_name, deadline)
            .await?;
        return Ok(Session::new(LineConn::new(stream), true));
    }
    Ok(Session::new(LineConn::new(stream), false))
}

/// Upgrade a session after the server agreed to STARTTLS / STLS (phase `tls`).
pub async fn upgrade(
    rec: &mut Recorder,
    session: Session,
    server: &Server,
    tls: &TlsClient,
    deadline: Instant,
) -> Result<Session, ProbeError> {
    let stream = session.into_conn().into_stream(Phase::Starttls)?;
    let stream = tls
        .handshake(rec, stream, &server.server_name, deadline)
        .await?;
    Ok(Session::new(LineConn::new(stream), true))
}

/// Run a logout step without letting its failure fail the check: the login and mailbox access
/// already succeeded, which is what the product needs. The phase is still timed.
pub fn logout_result(rec: &mut Recorder, started: Instant, result: Result<(), ProbeError>) {
    rec.record(Phase::Logout, started.elapsed());
    if let Err(e) = result {
        rec.note(
            Dir::Note,
            &format!("logout not clean ({}): {}", e.reason, e.detail),
        );
    }
}

/// Where a reply arrived in the dialogue; the same text means different things in different
/// places (a `NO` to EXAMINE is not a credential problem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Server greeting / banner.
    Greeting,
    /// The AUTH command itself, before credentials were sent (POP3 two-line form).
    AuthCommand,
    /// The answer to the credentials.
    Auth,
    /// Mailbox access after login (EXAMINE, STAT, MAIL FROM / RSET).
    Mailbox,
}

impl Stage {
    pub fn phase(self) -> Phase {
        match self {
            Stage::Greeting => Phase::Greeting,
            Stage::AuthCommand | Stage::Auth => Phase::Auth,
            Stage::Mailbox => Phase::Mailbox,
        }
    }
}

/// Exchange's IMAP/POP throttling answer: `Request is throttled. Suggested Backoff Time: N
/// milliseconds` (o365-facts.md 2.3, 9). `Some` when the text is a throttling answer, with the
/// hinted backoff when one was given (capped at [`MAX_BACKOFF`]).
pub fn throttled(text: &str) -> Option<Option<Duration>> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("request is throttled") {
        return None;
    }
    let backoff = lower
        .split_once("suggested backoff time:")
        .and_then(|(_, rest)| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: u64 = digits.parse().ok()?;
            let unit = rest.trim_start()[digits.len()..].trim_start();
            let d = if unit.starts_with("second") {
                Duration::from_secs(n)
            } else {
                Duration::from_millis(n)
            };
            Some(d.min(MAX_BACKOFF))
        });
    Some(backoff)
}

/// The Exchange backend server named in an IMAP/POP greeting's trailing bracket: base64 of the
/// UTF-16LE FQDN (o365-facts.md 2.2), e.g. `AMSPR04CA0042.eurprd04.prod.outlook.com`. `None` for
/// any other bracket (Dovecot's `[CAPABILITY ...]`) or anything that does not decode to a host
/// name. A diagnostic fact only: unbounded, so never a label.
pub fn exchange_backend(greeting: &str) -> Option<String> {
    let line = greeting.trim_end();
    let inner = line.strip_suffix(']')?;
    let start = inner.rfind('[')?;
    let b64 = &inner[start + 1..];
    if b64.is_empty() || b64.len() > 1024 {
        return None;
    }
    let bytes = STANDARD.decode(b64).ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let name = String::from_utf16(&units).ok()?;
    let hostlike = !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    hostlike.then_some(name)
}

/// One sentence about a failure reply, with the decoded error challenge when there was one.
pub fn with_challenge(what: String, challenge: &Option<super::sasl::Challenge>) -> String {
    match challenge {
        Some(c) => format!("{what} (after error challenge {})", c.text),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16_b64(s: &str) -> String {
        let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        STANDARD.encode(bytes)
    }

    #[test]
    fn backend_name_is_decoded_from_the_greeting() {
        let g = format!(
            "* OK The Microsoft Exchange IMAP4 service is ready. [{}]",
            utf16_b64("AMSPR04CA0042.eurprd04.prod.outlook.com")
        );
        assert_eq!(
            exchange_backend(&g).as_deref(),
            Some("AMSPR04CA0042.eurprd04.prod.outlook.com")
        );
        let pop = format!(
            "+OK The Microsoft Exchange POP3 service is ready. [{}]",
            utf16_b64("DB9PR01CA0001.eurprd01.prod.exchangelabs.com")
        );
        assert!(exchange_backend(&pop).is_some());
    }

    #[test]
    fn other_brackets_are_not_backends() {
        assert_eq!(
            exchange_backend("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] Dovecot ready."),
            None
        );
        assert_eq!(exchange_backend("* OK ready"), None);
        assert_eq!(exchange_backend("* OK ready []"), None);
        // ASCII base64 (not UTF-16) and odd lengths are refused, not guessed.
        assert_eq!(
            exchange_backend(&format!("* OK x [{}]", STANDARD.encode("host.example.com"))),
            None
        );
        assert_eq!(
            exchange_backend(&format!("* OK x [{}]", utf16_b64("bad name; rm -rf"))),
            None
        );
    }

    #[test]
    fn throttling_hint_is_parsed() {
        assert_eq!(
            throttled("NO Request is throttled. Suggested Backoff Time: 299609 milliseconds"),
            Some(Some(Duration::from_millis(299_609)))
        );
        assert_eq!(
            throttled("BAD Request is throttled. Suggested Backoff Time: 12 seconds"),
            Some(Some(Duration::from_secs(12)))
        );
        assert_eq!(throttled("NO Request is throttled."), Some(None));
        assert_eq!(
            throttled("NO Request is throttled. Suggested Backoff Time: 99999999999999999999999 milliseconds"),
            Some(None)
        );
        assert_eq!(
            throttled("NO Request is throttled. Suggested Backoff Time: 999999999999 milliseconds"),
            Some(Some(MAX_BACKOFF))
        );
        assert_eq!(throttled("NO AUTHENTICATE failed."), None);
    }

    #[tokio::test]
    async fn credentials_never_leave_a_plain_connection() {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(4096);
        let mut s = Session::new(LineConn::new(Box::new(client)), false);
        let mut rec = Recorder::new();
        let token = SecretString::from("CANARY-token");
        let blob = SecretString::from("Q0FOQVJZ");
        let deadline = Instant::now() + Duration::from_secs(1);
        let e = s
            .send_credentials(
                &mut rec,
                deadline,
                "A1 AUTHENTICATE XOAUTH2 Q0FOQVJZ",
                "shown",
                &token,
                &blob,
            )
            .await
            .unwrap_err();
        assert_eq!((e.phase, e.reason), (Phase::Auth, Reason::ProtocolError));
        drop(s);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "nothing was written");
        assert!(rec.transcript.is_empty());
    }

    #[tokio::test]
    async fn echoed_secrets_are_scrubbed_from_received_lines() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(4096);
        let mut s = Session::new(LineConn::new(Box::new(client)), true);
        let mut rec = Recorder::new();
        let token = SecretString::from("CANARY-token");
        let blob = SecretString::from("Q0FOQVJZ");
        let deadline = Instant::now() + Duration::from_secs(1);
        s.send_credentials(
            &mut rec,
            deadline,
            "A1 AUTHENTICATE XOAUTH2 Q0FOQVJZ",
            "A1 AUTHENTICATE XOAUTH2 [redacted]",
            &token,
            &blob,
        )
        .await
        .unwrap();
        server
            .write_all(b"A1 BAD echo Q0FOQVJZ and CANARY-token\r\n")
            .await
            .unwrap();
        let line = s.recv(&mut rec, Phase::Auth, deadline).await.unwrap();
        assert_eq!(line, "A1 BAD echo [redacted] and [redacted]");
        let text = rec.transcript.render_text();
        assert!(
            !text.contains("CANARY") && !text.contains("Q0FOQVJZ"),
            "{text}"
        );
    }

    #[test]
    fn every_reason_is_documented() {
        let doc = include_str!("../../docs/reasons.md");
        for r in Reason::ALL {
            let heading = format!("### `{}`", r.as_str());
            assert!(doc.contains(&heading), "docs/reasons.md lacks {heading}");
        }
        let documented = doc.lines().filter(|l| l.starts_with("### `")).count();
        assert_eq!(
            documented,
            Reason::ALL.len(),
            "stale entries in docs/reasons.md"
        );
    }

    #[test]
    fn token_unavailable_fails_phase_auth() {
        let login = Login {
            user: "a@b.test",
            mechanism: Mechanism::XOAuth2,
            token: Err("refresh token expired (AADSTS700082)"),
            mail_from: None,
        };
        let e = login.token().unwrap_err();
        assert_eq!((e.phase, e.reason), (Phase::Auth, Reason::TokenUnavailable));
        assert!(e.detail.contains("AADSTS700082"));
    }

    #[test]
    fn mechanism_choice_prefers_configured_oauthbearer_only_when_offered() {
        let mut rec = Recorder::new();
        let login = |m| Login {
            user: "a@b.test",
            mechanism: m,
            token: Err("x"),
            mail_from: None,
        };
        let both = |m: &str| m == "XOAUTH2" || m == "OAUTHBEARER";
        let xo = |m: &str| m == "XOAUTH2";
        assert_eq!(
            login(Mechanism::OAuthBearer)
                .choose(&mut rec, both, "")
                .unwrap(),
            Mechanism::OAuthBearer
        );
        assert_eq!(
            login(Mechanism::OAuthBearer)
                .choose(&mut rec, xo, "")
                .unwrap(),
            Mechanism::XOAuth2
        );
        assert_eq!(
            login(Mechanism::XOAuth2)
                .choose(&mut rec, both, "")
                .unwrap(),
            Mechanism::XOAuth2
        );
        let e = login(Mechanism::XOAuth2)
            .choose(&mut rec, |m| m == "PLAIN", "PLAIN")
            .unwrap_err();
        assert_eq!(e.reason, Reason::AuthMechanismUnsupported);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn utf16_b64(s: &str) -> String {
        let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        STANDARD.encode(bytes)
    }

    proptest! {
        /// Any greeting: None, or a host-like name of at most 253 characters.
        #[test]
        fn arbitrary_greetings_yield_nothing_or_a_host_name(line in "\\PC{0,300}", inner in "\\PC{0,60}") {
            for g in [line.clone(), format!("* OK ready [{}]", utf16_b64(&inner))] {
                if let Some(name) = exchange_backend(&g) {
                    prop_assert!(!name.is_empty() && name.len() <= 253);
                    prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
                }
            }
            prop_assert!(throttled(&line).flatten().is_none_or(|d| d <= MAX_BACKOFF));
        }

        /// A backend FQDN in the greeting's bracket round-trips (IMAP and POP3 greetings).
        #[test]
        fn backend_names_round_trip(labels in prop::collection::vec("[A-Za-z0-9-]{1,20}", 2..6)) {
            let host = labels.join(".");
            for g in [
                format!("* OK The Microsoft Exchange IMAP4 service is ready. [{}]", utf16_b64(&host)),
                format!("+OK The Microsoft Exchange POP3 service is ready. [{}]  ", utf16_b64(&host)),
            ] {
                prop_assert_eq!(exchange_backend(&g), Some(host.clone()));
            }
        }

        #[test]
        fn throttling_hints_round_trip(n: u64, secs: bool) {
            let unit = if secs { "seconds" } else { "milliseconds" };
            let d = if secs { Duration::from_secs(n) } else { Duration::from_millis(n) };
            prop_assert_eq!(
                throttled(&format!("NO Request is throttled. Suggested Backoff Time: {n} {unit}")),
                Some(Some(d.min(MAX_BACKOFF)))
            );
        }
    }
}
