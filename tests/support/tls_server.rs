//! Small scripted servers on loopback for the endpoint probe tests: implicit TLS, SMTP with and
//! without STARTTLS, and the misbehaving peers a probe must survive (closed port, silent port,
//! endless line, plain text where TLS was expected, bytes injected after the STARTTLS answer).
//!
//! Each server listens on an ephemeral port, serves at most [`MAX_CONNECTIONS`] connections with
//! per-read deadlines, and stops together with all its connections when the [`Server`] value is
//! dropped. What clients sent and what the server saw (TLS version, write totals) goes into a
//! [`Log`] the test can assert on. Server-side reads go byte by byte on purpose: no read-ahead can
//! swallow the client's ClientHello that follows a STARTTLS command.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Most connections one test server accepts (tests make one or two; bounded all the same).
pub const MAX_CONNECTIONS: usize = 16;
/// How long a server waits for a client's next byte before giving up on the connection.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line a server reads from a client.
pub const MAX_CLIENT_LINE: usize = 1024;
/// Most bytes the endless-line server writes before giving up on the client stopping it.
pub const ENDLESS_CAP: usize = 64 * 1024 * 1024;

/// Exchange Online's SMTP banner shape (o365-facts.md 2.2), here in two lines: RFC 5321 4.2
/// allows a multi-line greeting and the probe must read all of it before sending EHLO.
const GREETING: &str = "220-BN0PR04CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready at Thu, 1 Jan 2026 00:00:00 +0000\r\n220 multi-line greeting (RFC 5321 4.2)\r\n";
/// EHLO extensions Exchange Online lists before STARTTLS (o365-facts.md 2.2; no AUTH yet).
const EHLO_HEAD: &str = "250-BN0PR04CA0001.outlook.office365.com Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n";
/// Exchange Online's answer to STARTTLS (o365-facts.md 2.5).
const STARTTLS_READY: &str = "220 2.0.0 SMTP server ready\r\n";

/// What a server saw, in order: client lines as `C: ...`, events as `* ...`.
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().expect("log lock").push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }

    /// Wait (bounded: at most `within`, polling every 10 ms) until an entry starts with `prefix`.
    pub async fn wait_for(&self, prefix: &str, within: Duration) -> Option<String> {
        let polls = (within.as_millis() / 10).max(1);
        for _ in 0..polls {
            if let Some(e) = self.entries().into_iter().find(|e| e.starts_with(prefix)) {
                return Some(e);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

/// A running test server. Dropping it stops the accept loop and every open connection.
pub struct Server {
    pub addr: SocketAddr,
    pub log: Log,
    task: JoinHandle<()>,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accept up to [`MAX_CONNECTIONS`] connections on `listener`, each handled by `handler`.
fn serve<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(TcpStream, Log) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().expect("listener address");
    let log = Log::default();
    let task_log = log.clone();
    let task = tokio::spawn(async move {
        // Owned by this task: aborting the task drops the set, which aborts every connection.
        let mut conns = JoinSet::new();
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, peer)) = listener.accept().await else {
                break;
            };
            task_log.push(format!("* accepted {peer}"));
            conns.spawn(handler(stream, task_log.clone()));
        }
        while conns.join_next().await.is_some() {}
    });
    Server { addr, log, task }
}

async fn bind_loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Implicit TLS (as on 993/995/443) on 127.0.0.1.
pub async fn implicit_tls(cfg: Arc<rustls::ServerConfig>) -> Server {
    serve(bind_loopback().await, move |s, log| {
        tls_then_drain(s, cfg.clone(), log)
    })
}

/// Implicit TLS on `bind` (e.g. `[::1]:0`); `Err` when that address cannot be bound, so a test
/// can skip on machines without it.
pub async fn implicit_tls_at(
    bind: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(bind).await?;
    Ok(serve(listener, move |s, log| {
        tls_then_drain(s, cfg.clone(), log)
    }))
}

/// Where the SMTP server lists STARTTLS in its EHLO reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StarttlsAt {
    /// `250-STARTTLS` between other extensions, as Exchange Online does.
    Middle,
    /// `250 STARTTLS` as the final line of the reply.
    Last,
}

/// How a scripted SMTP server behaves.
#[derive(Clone, Copy, Debug)]
pub struct SmtpScript {
    /// Whether and where EHLO lists STARTTLS.
    pub starttls: Option<StarttlsAt>,
    /// Sent in the same write as the `220` answer to STARTTLS.
    pub extra_after_starttls: &'static str,
    /// Wait this long before sending the greeting.
    pub greeting_delay: Duration,
}

impl Default for SmtpScript {
    fn default() -> Self {
        SmtpScript {
            starttls: Some(StarttlsAt::Middle),
            extra_after_starttls: "",
            greeting_delay: Duration::ZERO,
        }
    }
}

/// An SMTP server following `script`; `cfg` is the TLS side after STARTTLS.
pub async fn smtp_server(cfg: Option<Arc<rustls::ServerConfig>>, script: SmtpScript) -> Server {
    serve(bind_loopback().await, move |s, log| {
        smtp(s, cfg.clone(), script, log)
    })
}

/// SMTP on 587 as Exchange Online speaks it: greeting, EHLO offering STARTTLS, `220 2.0.0 SMTP
/// server ready`, TLS handshake.
pub async fn smtp_starttls(cfg: Arc<rustls::ServerConfig>, at: StarttlsAt) -> Server {
    let script = SmtpScript {
        starttls: Some(at),
        ..SmtpScript::default()
    };
    smtp_server(Some(cfg), script).await
}

/// SMTP whose EHLO reply does not offer STARTTLS.
pub async fn smtp_without_starttls() -> Server {
    let script = SmtpScript {
        starttls: None,
        ..SmtpScript::default()
    };
    smtp_server(None, script).await
}

/// SMTP that sends a second reply in the same write as its STARTTLS `220`: bytes a client must
/// not carry over into the TLS session (command-injection class, CVE-2011-0411).
pub async fn smtp_extra_after_starttls(cfg: Arc<rustls::ServerConfig>) -> Server {
    let script = SmtpScript {
        extra_after_starttls: "250 2.0.0 injected before TLS\r\n",
        ..SmtpScript::default()
    };
    smtp_server(Some(cfg), script).await
}

/// A port on 127.0.0.1 where nothing listens (bound once to get a free number, then closed).
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("listener address").port()
}

/// Accepts connections and never writes a byte.
pub async fn silent() -> Server {
    serve(bind_loopback().await, |mut s, log| async move {
        drain(&mut s, &log).await;
    })
}

/// Streams `x` without ever sending a line end, until the client goes away or
/// [`ENDLESS_CAP`] bytes are written; logs `* wrote N bytes, ...` at the end.
pub async fn endless_line() -> Server {
    serve(bind_loopback().await, |mut s, log| async move {
        let chunk = [b'x'; 4096];
        let mut written = 0usize;
        let how = loop {
            if written >= ENDLESS_CAP {
                break "cap reached".to_string();
            }
            match tokio::time::timeout(READ_TIMEOUT, s.write_all(&chunk)).await {
                Ok(Ok(())) => written += chunk.len(),
                Ok(Err(e)) => break format!("client went away: {}", e.kind()),
                Err(_) => break "client stopped reading".to_string(),
            }
        };
        log.push(format!("* wrote {written} bytes, {how}"));
    })
}

/// Answers a TLS ClientHello with a plain-text SMTP banner (a port configured as implicit TLS
/// that actually speaks plain SMTP), then keeps the connection open.
pub async fn garbage() -> Server {
    serve(bind_loopback().await, |mut s, log| async move {
        let _ = s
            .write_all(b"220 mx.test.invalid ESMTP plain text, not TLS\r\n")
            .await;
        drain(&mut s, &log).await;
    })
}

async fn tls_then_drain(s: TcpStream, cfg: Arc<rustls::ServerConfig>, log: Log) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(s)).await {
        Ok(Ok(mut tls)) => {
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            log.push(format!("* tls ok {version}"));
            drain(&mut tls, &log).await;
        }
        Ok(Err(e)) => log.push(format!("* tls failed: {e}")),
        Err(_) => log.push("* tls timed out"),
    }
}

async fn smtp(
    mut s: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    script: SmtpScript,
    log: Log,
) {
    tokio::time::sleep(script.greeting_delay).await;
    if s.write_all(GREETING.as_bytes()).await.is_err() {
        return;
    }
    for _ in 0..8 {
        let Some(line) = read_line(&mut s).await else {
            return;
        };
        log.push(format!("C: {line}"));
        let verb = line
            .split_ascii_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match (verb.as_str(), script.starttls) {
            ("EHLO", Some(StarttlsAt::Middle)) => {
                format!("{EHLO_HEAD}250-STARTTLS\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            }
            ("EHLO", Some(StarttlsAt::Last)) => format!("{EHLO_HEAD}250 STARTTLS\r\n"),
            ("EHLO", None) => format!("{EHLO_HEAD}250-8BITMIME\r\n250 SMTPUTF8\r\n"),
            ("STARTTLS", Some(_)) => {
                // One write, so the extra bytes (if any) arrive together with the 220.
                let out = format!("{STARTTLS_READY}{}", script.extra_after_starttls);
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                if let Some(cfg) = tls {
                    tls_then_drain(s, cfg, log).await;
                }
                return;
            }
            ("QUIT", _) => {
                let _ = s.write_all(b"221 2.0.0 Service closing\r\n").await;
                return;
            }
            _ => "502 5.3.3 Command not implemented\r\n".to_string(),
        };
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One line from the client (without CR LF), at most [`MAX_CLIENT_LINE`] bytes, within
/// [`READ_TIMEOUT`]; `None` on end of stream, timeout or an over-long line.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_CLIENT_LINE {
        match tokio::time::timeout(READ_TIMEOUT, s.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(Ok(1)) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// Read and discard until the client closes, [`READ_TIMEOUT`] of silence or 1 MiB; logs a
/// close.
async fn drain<S: AsyncRead + Unpin>(s: &mut S, log: &Log) {
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while total < 1024 * 1024 {
        match tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                log.push("* client closed");
                return;
            }
            Ok(Ok(n)) => total += n,
            Err(_) => return,
        }
    }
}
