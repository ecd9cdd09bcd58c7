//! Probes: one network check each, measured phase by phase.
//!
//! A failed probe is a successful measurement: every probe returns an [`Outcome`] (success flag,
//! the phase that failed, one bounded [`Reason`], per-phase timings, TLS facts and a redacted
//! transcript), never an `Err`. The reasons are one closed enum shared by the endpoint probe and
//! the mailbox logins so that alerts, dashboards and runbooks key on a fixed vocabulary.

pub mod endpoint;
pub mod imap;
pub mod line;
pub mod login;
pub mod pop3;
pub mod proxy;
pub mod sasl;
pub mod smtp;
pub mod tcp;
pub mod tls;

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// Why a check failed. Rendered as the `reason` label; the set is closed and documented in
/// `docs/reasons.md`. `Ok` is the reason of a successful check, `Pending` of one not yet run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Ok,
    Pending,
    // network
    Dns,
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    // tls
    TlsHandshake,
    TlsVersion,
    CertExpired,
    CertNotYetValid,
    CertUntrusted,
    CertNameMismatch,
    // protocol
    StarttlsUnsupported,
    ProtocolError,
    ConnectionClosed,
    ReplyTooLong,
    Timeout,
    // login
    AuthMechanismUnsupported,
    AuthRejected,
    SmtpAuthDisabled,
    BasicAuthDisabled,
    SecurityDefaults,
    PolicyRejected,
    MailboxNotConnected,
    MailboxUnavailable,
    SendAsDenied,
    Throttled,
    ConcurrentLimit,
    TokenUnavailable,
    // outbound HTTP proxy (endpoint checks through `proxy:`)
    /// The proxy itself cannot be reached (its name, TCP connect).
    ProxyConnectFailed,
    /// The proxy answered CONNECT with a non-2xx status other than 407.
    ProxyRefused,
    /// The proxy answered CONNECT with 407: credentials missing or wrong.
    ProxyAuthRequired,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: &'static [Reason] = &[
        Reason::Ok,
        Reason::Pending,
        Reason::Dns,
        Reason::ConnectRefused,
        Reason::ConnectTimeout,
        Reason::ConnectError,
        Reason::TlsHandshake,
        Reason::TlsVersion,
        Reason::CertExpired,
        Reason::CertNotYetValid,
        Reason::CertUntrusted,
        Reason::CertNameMismatch,
        Reason::StarttlsUnsupported,
        Reason::ProtocolError,
        Reason::ConnectionClosed,
        Reason::ReplyTooLong,
        Reason::Timeout,
        Reason::AuthMechanismUnsupported,
        Reason::AuthRejected,
        Reason::SmtpAuthDisabled,
        Reason::BasicAuthDisabled,
        Reason::SecurityDefaults,
        Reason::PolicyRejected,
        Reason::MailboxNotConnected,
        Reason::MailboxUnavailable,
        Reason::SendAsDenied,
        Reason::Throttled,
        Reason::ConcurrentLimit,
        Reason::TokenUnavailable,
        Reason::ProxyConnectFailed,
        Reason::ProxyRefused,
        Reason::ProxyAuthRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Pending => "pending",
            Reason::Dns => "dns",
            Reason::ConnectRefused => "connect_refused",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::ConnectError => "connect_error",
            Reason::TlsHandshake => "tls_handshake",
            Reason::TlsVersion => "tls_version",
            Reason::CertExpired => "cert_expired",
            Reason::CertNotYetValid => "cert_not_yet_valid",
            Reason::CertUntrusted => "cert_untrusted",
            Reason::CertNameMismatch => "cert_name_mismatch",
            Reason::StarttlsUnsupported => "starttls_unsupported",
            Reason::ProtocolError => "protocol_error",
            Reason::ConnectionClosed => "connection_closed",
            Reason::ReplyTooLong => "reply_too_long",
            Reason::Timeout => "timeout",
            Reason::AuthMechanismUnsupported => "auth_mechanism_unsupported",
            Reason::AuthRejected => "auth_rejected",
            Reason::SmtpAuthDisabled => "smtp_auth_disabled",
            Reason::BasicAuthDisabled => "basic_auth_disabled",
            Reason::SecurityDefaults => "security_defaults",
            Reason::PolicyRejected => "policy_rejected",
            Reason::MailboxNotConnected => "mailbox_not_connected",
            Reason::MailboxUnavailable => "mailbox_unavailable",
            Reason::SendAsDenied => "send_as_denied",
            Reason::Throttled => "throttled",
            Reason::ConcurrentLimit => "concurrent_limit",
            Reason::TokenUnavailable => "token_unavailable",
            Reason::ProxyConnectFailed => "proxy_connect_failed",
            Reason::ProxyRefused => "proxy_refused",
            Reason::ProxyAuthRequired => "proxy_auth_required",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One timed step of a check. Rendered as the `phase` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Name resolution.
    Dns,
    /// TCP connect.
    Connect,
    /// Server greeting (banner) read.
    Greeting,
    /// Plain-text part before TLS in STARTTLS modes: capabilities, EHLO, STARTTLS command.
    Starttls,
    /// TLS handshake.
    Tls,
    /// Capability listing after TLS (IMAP CAPABILITY, SMTP EHLO).
    Capability,
    /// SASL authentication.
    Auth,
    /// Mailbox access after login (IMAP EXAMINE, POP3 STAT, SMTP MAIL FROM + RSET).
    Mailbox,
    /// LOGOUT / QUIT.
    Logout,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Starttls => "starttls",
            Phase::Tls => "tls",
            Phase::Capability => "capability",
            Phase::Auth => "auth",
            Phase::Mailbox => "mailbox",
            Phase::Logout => "logout",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mail protocols a mailbox can be checked over. Rendered as the `protocol` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Imap, Protocol::Pop3, Protocol::Smtp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the TLS handshake showed. Certificate facts are kept even when verification failed,
/// which is exactly when an operator needs them (an expired or intercepted certificate).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`; empty when the handshake did not finish.
    pub version: String,
    /// IANA cipher suite name; empty when the handshake did not finish.
    pub cipher: String,
    /// Leaf certificate notAfter, Unix seconds.
    pub cert_not_after: Option<i64>,
    /// Leaf certificate notBefore, Unix seconds.
    pub cert_not_before: Option<i64>,
    /// Leaf subject and issuer, for the status page and transcript (never labels).
    pub cert_subject: String,
    pub cert_issuer: String,
    /// Whether chain and name verification succeeded.
    pub verified: bool,
    /// The verifier's complaint, when it had one.
    pub verify_error: Option<String>,
}

/// A line of a check's transcript: what was sent (`C:`), received (`S:`) or noted (`*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TranscriptLine<'a> {
    /// Milliseconds since the check started.
    pub at_ms: u64,
    pub dir: Dir,
    /// The line, already redacted; bounded in length.
    pub text: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
    Note,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Sent => "C:",
            Dir::Received => "S:",
            Dir::Note => "* ",
        }
    }
}

/// Most lines a transcript keeps; later lines are counted, not stored.
pub const TRANSCRIPT_MAX_LINES: usize = 200;
/// Longest transcript line kept; longer ones are cut with a marker.
pub const TRANSCRIPT_MAX_LINE: usize = 512;

/// The redacted protocol conversation of one check, bounded in lines and line length.
///
/// Kept until the check's next run, for every configured check (3,000 at 1,000 mailboxes), so
/// it is stored compactly: the text of the lines in one string plus an 8-byte index entry per
/// line, instead of a `String` (and its allocation) per line. Lines that recur across checks (a
/// server's greeting and capability list, its `OK` replies, the TLS line: most of a login's
/// bytes, the same for every mailbox of a server) are shared through [`intern`] instead of
/// copied into every transcript. Read it with [`Transcript::lines`].
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Text of the lines not shared, one after the other.
    text: String,
    index: Vec<LineIndex>,
    /// Shared lines, in order of appearance.
    shared: Vec<Arc<str>>,
    /// Lines not kept because the transcript was full.
    pub dropped: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct LineIndex {
    at_ms: u32,
    dir: Dir,
    /// Whether the line is the next entry of `shared` (else the next `len` bytes of `text`).
    shared: bool,
    /// Length in bytes of the line's text in `text`; lines are at most
    /// [`TRANSCRIPT_MAX_LINE`] chars plus a marker, so at most ~2 kB.
    len: u16,
}

/// Lines shorter than this are stored inline: sharing one costs a 16-byte pointer.
const SHARE_MIN: usize = 24;

/// Equal when the lines read back equal, however they are stored (whether a line is shared
/// depends on what other checks saw before).
impl PartialEq for Transcript {
    fn eq(&self, other: &Self) -> bool {
        self.dropped == other.dropped
            && self.len() == other.len()
            && self.lines().zip(other.lines()).all(|(a, b)| a == b)
    }
}

/// The table of shared transcript lines.
///
/// A line is shared from the second time any transcript holds it: the first time only its hash
/// is noted, so a line that never recurs (one carrying a mailbox's address, a timestamp) costs
/// nothing beyond its inline copy. Lines no transcript holds any more are purged whenever the
/// table has doubled since the last purge, so it stays within twice the lines in use.
struct Interner {
    lines: HashSet<Arc<str>>,
    /// Hashes of lines seen once and not shared yet; cleared when it reaches [`SEEN_MAX`].
    seen: HashSet<u64>,
    hasher: RandomState,
    purge_at: usize,
}

/// Most hashes of once-seen lines remembered (~70 kB); lines that recur across the mailboxes
/// of a server recur within a few checks, far sooner than this many new lines.
const SEEN_MAX: usize = 4096;
/// The table is never purged below this many lines.
const PURGE_MIN: usize = 1024;

impl Interner {
    fn new() -> Interner {
        Interner {
            lines: HashSet::new(),
            seen: HashSet::new(),
            hasher: RandomState::new(),
            purge_at: PURGE_MIN,
        }
    }

    /// The shared copy of `line`, when it is (or is now, being seen the second time) shared.
    fn intern(&mut self, line: &str) -> Option<Arc<str>> {
        if let Some(shared) = self.lines.get(line) {
            return Some(shared.clone());
        }
        let h = self.hasher.hash_one(line);
        if self.seen.insert(h) {
            if self.seen.len() > SEEN_MAX {
                self.seen.clear();
            }
            return None;
        }
        self.seen.remove(&h);
        if self.lines.len() >= self.purge_at {
            self.lines.retain(|l| Arc::strong_count(l) > 1);
            self.purge_at = (2 * self.lines.len()).max(PURGE_MIN);
        }
        let shared: Arc<str> = Arc::from(line);
        self.lines.insert(shared.clone());
        Some(shared)
    }
}

static INTERNER: LazyLock<Mutex<Interner>> = LazyLock::new(|| Mutex::new(Interner::new()));

/// The process-wide shared copy of `line`, if it is shared ([`Interner`]).
fn intern(line: &str) -> Option<Arc<str>> {
    INTERNER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .intern(line)
}

impl Transcript {
    pub fn push(&mut self, at: Duration, dir: Dir, text: &str) {
        if self.index.len() >= TRANSCRIPT_MAX_LINES {
            self.dropped += 1;
            return;
        }
        let at_ms = u32::try_from(at.as_millis()).unwrap_or(u32::MAX);
        let start = self.text.len();
        self.text.extend(
            text.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .take(TRANSCRIPT_MAX_LINE),
        );
        if self.text.len() - start >= TRANSCRIPT_MAX_LINE {
            self.text.push_str(" [...]");
        }
        if self.text.len() - start >= SHARE_MIN {
            if let Some(line) = intern(&self.text[start..]) {
                self.text.truncate(start);
                self.shared.push(line);
                self.index.push(LineIndex {
                    at_ms,
                    dir,
                    shared: true,
                    len: 0,
                });
                return;
            }
        }
        self.index.push(LineIndex {
            at_ms,
            dir,
            shared: false,
            // at most TRANSCRIPT_MAX_LINE chars of at most 4 bytes plus the marker
            len: u16::try_from(self.text.len() - start).unwrap_or(u16::MAX),
        });
    }

    /// The kept lines, in order.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = TranscriptLine<'_>> + '_ {
        let mut start = 0usize;
        let mut shared = self.shared.iter();
        self.index.iter().map(move |l| {
            let text = if l.shared {
                shared.next().map_or("", |s| &**s)
            } else {
                let end = (start + usize::from(l.len)).min(self.text.len());
                let t = self.text.get(start..end).unwrap_or("");
                start = end;
                t
            };
            TranscriptLine {
                at_ms: u64::from(l.at_ms),
                dir: l.dir,
                text,
            }
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Give back growth slack once the transcript is complete.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.index.shrink_to_fit();
        self.shared.shrink_to_fit();
    }

    /// Plain-text rendering, one line each: `+12ms C: EHLO probe`.
    pub fn render_text(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 16 * self.index.len());
        for l in self.lines() {
            out.push_str(&format!("+{}ms {} {}\n", l.at_ms, l.dir.as_str(), l.text));
        }
        if self.dropped > 0 {
            out.push_str(&format!("[{} more lines not kept]\n", self.dropped));
        }
        out
    }
}

/// The result of one check run.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub success: bool,
    pub reason: Reason,
    /// The phase that failed, if any.
    pub failed_phase: Option<Phase>,
    /// Time spent in each phase that ran, in order.
    pub phases: Vec<(Phase, Duration)>,
    /// Wall-clock start of the check.
    pub started: SystemTime,
    /// Total duration of the check.
    pub duration: Duration,
    pub tls: Option<TlsFacts>,
    /// One human sentence about the result (no secrets), for the status page and logs.
    pub detail: String,
    pub transcript: Transcript,
    /// INBOX message count (IMAP EXAMINE, POP3 STAT).
    pub messages: Option<u64>,
    /// Exchange's "Suggested Backoff Time" or a similar hint; the scheduler waits at least this.
    pub backoff: Option<Duration>,
    /// Free-form diagnostic facts for the status page (for example the Exchange backend server
    /// decoded from the IMAP greeting). Never labels.
    pub facts: Vec<(String, String)>,
}

impl Outcome {
    /// The placeholder published for a configured check before its first run.
    pub fn pending() -> Outcome {
        Outcome {
            success: false,
            reason: Reason::Pending,
            failed_phase: None,
            phases: Vec::new(),
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            tls: None,
            detail: "not checked yet".to_string(),
            transcript: Transcript::default(),
            messages: None,
            backoff: None,
            facts: Vec::new(),
        }
    }

    pub fn is_pending(&self) -> bool {
        self.reason == Reason::Pending
    }

    pub fn phase_duration(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }
}

/// Builds an [`Outcome`] while a check runs: stamps phases against one start instant and keeps
/// the transcript. Probes call [`Recorder::phase`] around each step.
#[derive(Debug)]
pub struct Recorder {
    start: tokio::time::Instant,
    started: SystemTime,
    phases: Vec<(Phase, Duration)>,
    pub transcript: Transcript,
    pub tls: Option<TlsFacts>,
    pub messages: Option<u64>,
    pub backoff: Option<Duration>,
    pub facts: Vec<(String, String)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: tokio::time::Instant::now(),
            started: SystemTime::now(),
            phases: Vec::new(),
            transcript: Transcript::default(),
            tls: None,
            messages: None,
            backoff: None,
            facts: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Record that `phase` took `took`.
    pub fn record(&mut self, phase: Phase, took: Duration) {
        self.phases.push((phase, took));
    }

    pub fn note(&mut self, dir: Dir, text: &str) {
        let at = self.elapsed();
        self.transcript.push(at, dir, text);
    }

    pub fn fact(&mut self, key: &str, value: impl Into<String>) {
        self.facts.push((key.to_string(), value.into()));
    }

    /// Finish as a success.
    pub fn success(self, detail: impl Into<String>) -> Outcome {
        self.finish(true, Reason::Ok, None, detail.into())
    }

    /// Finish as a failure in `phase` with `reason`.
    pub fn failure(self, phase: Phase, reason: Reason, detail: impl Into<String>) -> Outcome {
        self.finish(false, reason, Some(phase), detail.into())
    }

    fn finish(
        mut self,
        success: bool,
        reason: Reason,
        failed_phase: Option<Phase>,
        detail: String,
    ) -> Outcome {
        let duration = self.elapsed();
        if !success {
            self.note(
                Dir::Note,
                &format!("failed in {}: {reason}: {detail}", phase_str(failed_phase)),
            );
        }
        // The outcome is kept until the next run: give back the growth slack.
        self.transcript.shrink_to_fit();
        self.phases.shrink_to_fit();
        Outcome {
            success,
            reason,
            failed_phase,
            phases: self.phases,
            started: self.started,
            duration,
            tls: self.tls,
            detail,
            transcript: self.transcript,
            messages: self.messages,
            backoff: self.backoff,
            facts: self.facts,
        }
    }
}

fn phase_str(p: Option<Phase>) -> &'static str {
    p.map(Phase::as_str).unwrap_or("-")
}

/// A probe failure on the way: the phase, the reason and a sentence. Probes use `?` on steps
/// returning this and convert it into a failed [`Outcome`] at the end.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{phase}: {reason}: {detail}")]
pub struct ProbeError {
    pub phase: Phase,
    pub reason: Reason,
    pub detail: String,
}

impl ProbeError {
    pub fn new(phase: Phase, reason: Reason, detail: impl Into<String>) -> ProbeError {
        ProbeError {
            phase,
            reason,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(seen.insert(s), "duplicate {s}");
        }
    }

    #[test]
    fn transcript_lines_read_back_as_pushed() {
        let mut t = Transcript::default();
        t.push(Duration::from_millis(3), Dir::Sent, "EHLO x");
        t.push(Duration::from_millis(7), Dir::Received, "bad\r\nbyte");
        t.push(Duration::from_millis(9), Dir::Note, "");
        t.push(Duration::from_millis(9), Dir::Received, "ünïcode");
        t.shrink_to_fit();
        let got: Vec<(u64, Dir, &str)> = t.lines().map(|l| (l.at_ms, l.dir, l.text)).collect();
        assert_eq!(
            got,
            vec![
                (3, Dir::Sent, "EHLO x"),
                (7, Dir::Received, "bad\u{fffd}\u{fffd}byte"),
                (9, Dir::Note, ""),
                (9, Dir::Received, "ünïcode"),
            ]
        );
        assert_eq!(
            t.render_text(),
            "+3ms C: EHLO x\n+7ms S: bad\u{fffd}\u{fffd}byte\n+9ms *  \n+9ms S: ünïcode\n"
        );
    }

    /// A line seen a second time is shared (same allocation) and reads back the same; a
    /// transcript with shared lines renders exactly as one without.
    #[test]
    fn recurring_lines_are_shared_and_read_back_unchanged() {
        let long = format!(
            "* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready {:x}",
            rand::random::<u64>()
        );
        let mut ts: Vec<Transcript> = (0..3)
            .map(|i| {
                let mut t = Transcript::default();
                t.push(Duration::from_millis(1), Dir::Note, "short");
                t.push(Duration::from_millis(2), Dir::Received, &long);
                t.push(
                    Duration::from_millis(3),
                    Dir::Sent,
                    &format!("A1 LOGIN user{i}@example.test"),
                );
                t.shrink_to_fit();
                t
            })
            .collect();
        assert!(ts[0].shared.is_empty(), "first sighting stays inline");
        assert_eq!(ts[1].shared.len(), 1);
        assert!(Arc::ptr_eq(&ts[1].shared[0], &ts[2].shared[0]));
        for (i, t) in ts.iter().enumerate() {
            assert_eq!(
                t.render_text(),
                format!("+1ms *  short\n+2ms S: {long}\n+3ms C: A1 LOGIN user{i}@example.test\n")
            );
        }
        let mut inline = Transcript::default();
        inline.push(Duration::from_millis(1), Dir::Note, "short");
        inline.text.push_str(&long);
        inline.index.push(LineIndex {
            at_ms: 2,
            dir: Dir::Received,
            shared: false,
            len: long.len() as u16,
        });
        inline.push(
            Duration::from_millis(3),
            Dir::Sent,
            "A1 LOGIN user2@example.test",
        );
        assert_eq!(inline, ts[2]);
        ts.clear();
    }

    /// Lines no transcript holds any more leave the table once it has doubled.
    #[test]
    fn unused_shared_lines_are_purged() {
        let mut table = Interner::new();
        let mut kept = Vec::new();
        for i in 0..(3 * PURGE_MIN) {
            let line = format!("line number {i} of the purge test");
            assert!(table.intern(&line).is_none());
            let shared = table.intern(&line).expect("shared the second time");
            if i % 10 == 0 {
                kept.push(shared);
            }
        }
        assert!(table.lines.len() < 2 * PURGE_MIN, "{}", table.lines.len());
        for s in &kept {
            assert!(table.lines.contains(&**s), "a line in use was purged");
        }
    }

    #[test]
    fn transcript_is_bounded() {
        let mut t = Transcript::default();
        let long = "x".repeat(10_000);
        for _ in 0..(TRANSCRIPT_MAX_LINES + 5) {
            t.push(Duration::ZERO, Dir::Received, &long);
        }
        assert_eq!(t.len(), TRANSCRIPT_MAX_LINES);
        assert_eq!(t.dropped, 5);
        let first = t.lines().next().expect("a line");
        assert!(first.text.len() < TRANSCRIPT_MAX_LINE + 10);
    }
}
