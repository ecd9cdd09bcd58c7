//! Bounded, deadlined line I/O for the text protocols (SMTP, IMAP, POP3).
//!
//! Every read has a length limit and a deadline, so a server that never answers, sends an endless
//! line or floods us costs one failed check with a reason, never a hang or unbounded memory. The
//! connection records what it sends and receives into the check's [`Recorder`]; secrets are shown
//! only in their redacted form. The stream is boxed so that a plain TCP connection can be upgraded
//! to TLS (STARTTLS) in place.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{Dir, Phase, ProbeError, Reason, Recorder};

/// Longest reply line accepted (RFC 5321 allows 512 octets for SMTP replies; IMAP lines carry
/// capability lists and base64 challenges, so allow more, but not unbounded).
pub const MAX_LINE: usize = 16 * 1024;
/// Most lines accepted in one multi-line reply (SMTP EHLO, IMAP untagged responses).
pub const MAX_REPLY_LINES: usize = 256;

/// Any byte stream a probe talks over: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// A line-oriented connection with a bounded read buffer.
pub struct LineConn {
    stream: BoxStream,
    buf: Vec<u8>,
    max_line: usize,
}

impl std::fmt::Debug for LineConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineConn")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl LineConn {
    pub fn new(stream: BoxStream) -> LineConn {
        LineConn {
            stream,
            buf: Vec::with_capacity(1024),
            max_line: MAX_LINE,
        }
    }

    pub fn with_max_line(mut self, max_line: usize) -> LineConn {
        self.max_line = max_line;
        self
    }

    /// Read one line (without CR LF) before `deadline`, recording it in the transcript.
    pub async fn recv(
        &mut self,
        rec: &mut Recorder,
        phase: Phase,
        deadline: Instant,
    ) -> Result<String, ProbeError> {
        let line = self.read_line(phase, deadline).await?;
        rec.note(Dir::Received, &line);
        Ok(line)
    }

    /// Read one line without recording it (the caller records a redacted form).
    pub async fn read_line(
        &mut self,
        phase: Phase,
        deadline: Instant,
    ) -> Result<String, ProbeError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > self.max_line {
                return Err(ProbeError::new(
                    phase,
                    Reason::ReplyTooLong,
                    format!(
                        "server sent more than {} bytes without a line end",
                        self.max_line
                    ),
                ));
            }
            let mut chunk = [0u8; 4096];
            let want = (self.max_line + 1 - self.buf.len()).min(chunk.len());
            let read =
                tokio::time::timeout_at(deadline, self.stream.read(&mut chunk[..want])).await;
            match read {
                Err(_) => {
                    return Err(ProbeError::new(
                        phase,
                        Reason::Timeout,
                        "deadline passed waiting for the server",
                    ))
                }
                Ok(Err(e)) => return Err(io_error(phase, &e)),
                Ok(Ok(0)) => {
                    return Err(ProbeError::new(
                        phase,
                        Reason::ConnectionClosed,
                        if self.buf.is_empty() {
                            "server closed the connection".to_string()
                        } else {
                            "server closed the connection in the middle of a line".to_string()
                        },
                    ))
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Send `line` + CR LF before `deadline`, recording it as is.
    pub async fn send(
        &mut self,
        rec: &mut Recorder,
        phase: Phase,
        deadline: Instant,
        line: &str,
    ) -> Result<(), ProbeError> {
        rec.note(Dir::Sent, line);
        self.write_line(phase, deadline, line).await
    }

    /// Send `line` + CR LF, recording `shown` instead (for lines that carry a token).
    pub async fn send_secret(
        &mut self,
        rec: &mut Recorder,
        phase: Phase,
        deadline: Instant,
        line: &str,
        shown: &str,
    ) -> Result<(), ProbeError> {
        rec.note(Dir::Sent, shown);
        self.write_line(phase, deadline, line).await
    }

    async fn write_line(
        &mut self,
        phase: Phase,
        deadline: Instant,
        line: &str,
    ) -> Result<(), ProbeError> {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        let write = async {
            self.stream.write_all(&data).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Err(_) => Err(ProbeError::new(
                phase,
                Reason::Timeout,
                "deadline passed while sending",
            )),
            Ok(Err(e)) => Err(io_error(phase, &e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Bytes received but not yet consumed as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Give up the stream for a TLS upgrade. Refuses when the server already sent bytes after
    /// its STARTTLS answer: those would be read as if they came over TLS (command injection,
    /// CVE-2011-0411 class), so such a server fails the check.
    pub fn into_stream(self, phase: Phase) -> Result<BoxStream, ProbeError> {
        if !self.buf.is_empty() {
            return Err(ProbeError::new(
                phase,
                Reason::ProtocolError,
                format!(
                    "server sent {} bytes after its STARTTLS answer, before the TLS handshake",
                    self.buf.len()
                ),
            ));
        }
        Ok(self.stream)
    }

    /// Best-effort close: shut down the write side, bounded by `grace`.
    pub async fn close(mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.stream.shutdown()).await;
    }
}

fn io_error(phase: Phase, e: &std::io::Error) -> ProbeError {
    use std::io::ErrorKind;
    let reason = match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Reason::ConnectionClosed,
        ErrorKind::InvalidData => Reason::TlsHandshake,
        _ => Reason::ProtocolError,
    };
    ProbeError::new(phase, reason, format!("i/o error: {e}"))
}

/// Read a multi-line SMTP reply (`250-a`, `250-b`, `250 c`): returns the code and the text of
/// each line. Bounded by [`MAX_REPLY_LINES`].
pub async fn recv_smtp_reply(
    conn: &mut LineConn,
    rec: &mut Recorder,
    phase: Phase,
    deadline: Instant,
) -> Result<SmtpReply, ProbeError> {
    let mut lines = Vec::new();
    loop {
        let line = conn.recv(rec, phase, deadline).await?;
        let parsed = parse_smtp_line(&line).ok_or_else(|| {
            ProbeError::new(
                phase,
                Reason::ProtocolError,
                format!("not an SMTP reply line: {}", truncate(&line, 80)),
            )
        })?;
        if let Some(first) = lines.first().map(|(c, _, _): &(u16, bool, String)| *c) {
            if first != parsed.0 {
                return Err(ProbeError::new(
                    phase,
                    Reason::ProtocolError,
                    "reply code changed inside a multi-line reply",
                ));
            }
        }
        let last = !parsed.1;
        lines.push(parsed);
        if last {
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
    let code = lines[0].0;
    Ok(SmtpReply {
        code,
        lines: lines.into_iter().map(|(_, _, t)| t).collect(),
    })
}

/// An SMTP reply: the three-digit code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// All lines joined with a space, for classification and messages.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Parse one SMTP reply line into (code, continues, text). `continues` is true for `250-...`.
pub fn parse_smtp_line(line: &str) -> Option<(u16, bool, String)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = line[..3].parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    match b.get(3) {
        None => Some((code, false, String::new())),
        Some(b' ') => Some((code, false, line[4..].to_string())),
        Some(b'-') => Some((code, true, line[4..].to_string())),
        _ => None,
    }
}

/// Cut `s` to at most `max` characters for messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push_str("...");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_lines_parse() {
        assert_eq!(
            parse_smtp_line("250-STARTTLS"),
            Some((250, true, "STARTTLS".into()))
        );
        assert_eq!(parse_smtp_line("250 OK"), Some((250, false, "OK".into())));
        assert_eq!(parse_smtp_line("220"), Some((220, false, String::new())));
        assert_eq!(parse_smtp_line("2x0 OK"), None);
        assert_eq!(parse_smtp_line("250_OK"), None);
        assert_eq!(parse_smtp_line("999 OK"), None);
        assert_eq!(parse_smtp_line(""), None);
    }

    #[tokio::test]
    async fn reads_lines_and_rejects_endless_line() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut conn = LineConn::new(Box::new(client)).with_max_line(100);
        let mut rec = Recorder::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        server
            .write_all(b"220 hello\r\n250-a\r\n250 b\r\n")
            .await
            .unwrap();
        assert_eq!(
            conn.recv(&mut rec, Phase::Greeting, deadline)
                .await
                .unwrap(),
            "220 hello"
        );
        let reply = recv_smtp_reply(&mut conn, &mut rec, Phase::Starttls, deadline)
            .await
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, vec!["a", "b"]);
        server.write_all(&[b'x'; 500]).await.unwrap();
        let err = conn
            .recv(&mut rec, Phase::Greeting, deadline)
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::ReplyTooLong);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_server_times_out_in_its_phase() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut conn = LineConn::new(Box::new(client));
        let mut rec = Recorder::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let err = conn
            .recv(&mut rec, Phase::Greeting, deadline)
            .await
            .unwrap_err();
        assert_eq!((err.phase, err.reason), (Phase::Greeting, Reason::Timeout));
    }

    #[tokio::test]
    async fn closed_connection_is_classified() {
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        let mut conn = LineConn::new(Box::new(client));
        let mut rec = Recorder::new();
        let err = conn
            .recv(
                &mut rec,
                Phase::Auth,
                Instant::now() + Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::ConnectionClosed);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn smtp_line_parser_never_panics_and_round_trips(code in 200u16..600, cont: bool, text in "[ -~]{0,80}") {
            let line = format!("{code}{}{text}", if cont { '-' } else { ' ' });
            prop_assert_eq!(parse_smtp_line(&line), Some((code, cont, text)));
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
            let _ = parse_smtp_line(&line);
        }
    }
}
