//! Reachability probe of one configured endpoint: DNS, TCP connect, for STARTTLS modes the
//! plain-text exchange up to STARTTLS, then the TLS handshake. It never authenticates. An
//! endpoint that follows the outbound proxy (`Endpoint::proxy`, HTTPS only) is reached by HTTP
//! CONNECT through it ([`super::proxy`]); the TLS handshake is the same end to end.

use std::time::Duration;

use tokio::time::Instant;

use super::line::{recv_smtp_reply, BoxStream, LineConn};
use super::tls::TlsClient;
use super::{proxy, tcp, Outcome, Phase, ProbeError, Reason, Recorder};
use crate::config::{Endpoint, TlsMode};

/// Name sent in EHLO by every probe.
pub const EHLO_NAME: &str = "o365-mail-exporter.invalid";

/// Check `ep` once. `tls` must be the client for `ep.ca_file`.
pub async fn probe(ep: &Endpoint, tls: &TlsClient) -> Outcome {
    let mut rec = Recorder::new();
    let deadline = Instant::now() + ep.timeout;
    match run(&mut rec, ep, tls, deadline).await {
        Ok(stream) => {
            drop(stream);
            let via = match &ep.proxy {
                Some(p) => format!(" through the proxy {}", p.url.trim_end_matches('/')),
                None => String::new(),
            };
            let what = match &rec.tls {
                Some(t) if !t.version.is_empty() => {
                    format!("reachable{via}, {} handshake ok", t.version)
                }
                _ => format!("reachable{via}"),
            };
            rec.success(what)
        }
        Err(e) => rec.failure(e.phase, e.reason, e.detail),
    }
}

async fn run(
    rec: &mut Recorder,
    ep: &Endpoint,
    tls: &TlsClient,
    deadline: Instant,
) -> Result<BoxStream, ProbeError> {
    let stream: BoxStream = match &ep.proxy {
        Some(p) => proxy::connect(rec, p, &ep.host, ep.port, deadline).await?,
        None => Box::new(tcp::connect(rec, &ep.host, ep.port, deadline).await?),
    };
    if ep.tls == TlsMode::None {
        return Ok(stream);
    }
    let stream = if ep.tls.is_starttls() {
        let conn = LineConn::new(stream);
        let t = Instant::now();
        let conn = match ep.tls {
            TlsMode::StarttlsSmtp => starttls_smtp(rec, conn, deadline, t).await?,
            TlsMode::StarttlsImap => starttls_imap(rec, conn, deadline, t).await?,
            TlsMode::StarttlsPop3 => starttls_pop3(rec, conn, deadline, t).await?,
            _ => conn,
        };
        conn.into_stream(Phase::Starttls)?
    } else {
        stream
    };
    tls.handshake(rec, stream, &ep.server_name, deadline).await
}

/// `220` greeting (possibly multi-line), `EHLO`, `STARTTLS` must be offered, `220` to STARTTLS.
///
/// Records the `greeting` phase (from `started`, the end of the TCP connect, to the end of the
/// greeting) and the `starttls` phase (from there to the answer to STARTTLS), also when either
/// fails. The two do not overlap, so phase durations add up to the check's duration.
pub async fn starttls_smtp(
    rec: &mut Recorder,
    mut conn: LineConn,
    deadline: Instant,
    started: Instant,
) -> Result<LineConn, ProbeError> {
    let r = smtp_greeting(rec, &mut conn, deadline).await;
    rec.record(Phase::Greeting, started.elapsed());
    r?;
    let t = Instant::now();
    let r = smtp_negotiate(rec, &mut conn, deadline).await;
    rec.record(Phase::Starttls, t.elapsed());
    r?;
    Ok(conn)
}

async fn smtp_greeting(
    rec: &mut Recorder,
    conn: &mut LineConn,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let greeting = recv_smtp_reply(conn, rec, Phase::Greeting, deadline).await?;
    if greeting.code != 220 {
        return Err(ProbeError::new(
            Phase::Greeting,
            Reason::ProtocolError,
            format!("greeting {} instead of 220", greeting.code),
        ));
    }
    Ok(())
}

/// After a `220` greeting: `EHLO`, `STARTTLS` must be offered, `220` to STARTTLS. Shared with the
/// SMTP login, which reads (and classifies) the greeting itself.
pub async fn smtp_negotiate(
    rec: &mut Recorder,
    conn: &mut LineConn,
    deadline: Instant,
) -> Result<(), ProbeError> {
    conn.send(rec, Phase::Starttls, deadline, &format!("EHLO {EHLO_NAME}"))
        .await?;
    let ehlo = recv_smtp_reply(conn, rec, Phase::Starttls, deadline).await?;
    if ehlo.code != 250 {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::ProtocolError,
            format!("EHLO answered {}", ehlo.code),
        ));
    }
    // The first line of an EHLO reply is the server's name, not an extension.
    if !ehlo
        .lines
        .iter()
        .skip(1)
        .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS"))
    {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            "server does not offer STARTTLS in its EHLO reply",
        ));
    }
    conn.send(rec, Phase::Starttls, deadline, "STARTTLS")
        .await?;
    let r = recv_smtp_reply(conn, rec, Phase::Starttls, deadline).await?;
    if r.code != 220 {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            format!("STARTTLS answered {} {}", r.code, r.text()),
        ));
    }
    Ok(())
}

/// `* OK` greeting, `CAPABILITY` must list `STARTTLS`, `STARTTLS` must be answered `OK`.
/// Records `greeting` and `starttls` like [`starttls_smtp`].
async fn starttls_imap(
    rec: &mut Recorder,
    mut conn: LineConn,
    deadline: Instant,
    started: Instant,
) -> Result<LineConn, ProbeError> {
    let r = conn.recv(rec, Phase::Greeting, deadline).await;
    rec.record(Phase::Greeting, started.elapsed());
    if !r?.starts_with("* OK") {
        return Err(ProbeError::new(
            Phase::Greeting,
            Reason::ProtocolError,
            "IMAP greeting is not * OK",
        ));
    }
    let t = Instant::now();
    let r = imap_negotiate(rec, &mut conn, deadline).await;
    rec.record(Phase::Starttls, t.elapsed());
    r?;
    Ok(conn)
}

async fn imap_negotiate(
    rec: &mut Recorder,
    conn: &mut LineConn,
    deadline: Instant,
) -> Result<(), ProbeError> {
    conn.send(rec, Phase::Starttls, deadline, "A1 CAPABILITY")
        .await?;
    let mut offered = false;
    let mut tagged = false;
    for _ in 0..super::line::MAX_REPLY_LINES {
        let l = conn.recv(rec, Phase::Starttls, deadline).await?;
        if l.starts_with("* CAPABILITY") {
            offered |= l
                .split_ascii_whitespace()
                .any(|w| w.eq_ignore_ascii_case("STARTTLS"));
        } else if l.starts_with("A1 ") {
            tagged = true;
            break;
        }
    }
    if !tagged {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::ReplyTooLong,
            "no tagged answer to CAPABILITY",
        ));
    }
    if !offered {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            "server does not list STARTTLS",
        ));
    }
    conn.send(rec, Phase::Starttls, deadline, "A2 STARTTLS")
        .await?;
    for _ in 0..super::line::MAX_REPLY_LINES {
        let l = conn.recv(rec, Phase::Starttls, deadline).await?;
        if let Some(rest) = l.strip_prefix("A2 ") {
            if rest.starts_with("OK") {
                return Ok(());
            }
            return Err(ProbeError::new(
                Phase::Starttls,
                Reason::StarttlsUnsupported,
                format!("STARTTLS answered {rest}"),
            ));
        }
    }
    Err(ProbeError::new(
        Phase::Starttls,
        Reason::ReplyTooLong,
        "no tagged answer to STARTTLS",
    ))
}

/// `+OK` greeting, `STLS` answered `+OK` (RFC 2595). Records `greeting` and `starttls` like
/// [`starttls_smtp`].
async fn starttls_pop3(
    rec: &mut Recorder,
    mut conn: LineConn,
    deadline: Instant,
    started: Instant,
) -> Result<LineConn, ProbeError> {
    let r = conn.recv(rec, Phase::Greeting, deadline).await;
    rec.record(Phase::Greeting, started.elapsed());
    if !r?.starts_with("+OK") {
        return Err(ProbeError::new(
            Phase::Greeting,
            Reason::ProtocolError,
            "POP3 greeting is not +OK",
        ));
    }
    let t = Instant::now();
    let r = async {
        conn.send(rec, Phase::Starttls, deadline, "STLS").await?;
        conn.recv(rec, Phase::Starttls, deadline).await
    }
    .await;
    rec.record(Phase::Starttls, t.elapsed());
    if !r?.starts_with("+OK") {
        return Err(ProbeError::new(
            Phase::Starttls,
            Reason::StarttlsUnsupported,
            "STLS refused",
        ));
    }
    Ok(conn)
}

/// How long a probe waits for a polite close after it is done.
pub const CLOSE_GRACE: Duration = Duration::from_millis(200);
