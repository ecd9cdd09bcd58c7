//! In-process scripted mail servers on 127.0.0.1:0 for the login-probe tests.
//!
//! Each server accepts one connection and answers the probe's commands with configurable
//! replies, defaulting to Exchange Online's exact wording (o365-facts.md 2.2-2.5), so one test
//! changes only the reply it is about. Replies are [`Step`]s, which also express hostile
//! behaviour: silence, an endless line, raw garbage, closing mid-reply. Every line the server
//! receives is logged with whether TLS was up at that moment, so tests can prove the token never
//! crossed a plain-text connection. TLS uses a throw-away CA and a leaf for 127.0.0.1/localhost
//! from `certs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use o365_mail_exporter::config::{Mailbox, Mechanism, Server, TlsMode};
use o365_mail_exporter::probe::tls::TlsClient;
use o365_mail_exporter::probe::Protocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::certs;

/// The token the tests hand to the probe; it must never show up in a transcript.
pub const CANARY_TOKEN: &str = "CANARY-7f3a9c21-do-not-log-this-access-token";

/// Longest line a scripted server accepts from the probe.
const SERVER_MAX_LINE: usize = 64 * 1024;
/// Most bytes an endless-line step writes before giving up on a client that keeps reading.
const ENDLESS_CAP: usize = 8 * 1024 * 1024;
/// Most commands one scripted session answers.
const MAX_COMMANDS: usize = 32;

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: TlsClient,
}

/// One CA and leaf (from `certs`) for the whole test binary; generated on first use.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let pki = certs::Pki::new();
        let leaf = pki.leaf(certs::LeafKind::Valid);
        // TlsClient reads its CA file once; the temp dir need not outlive construction.
        let client = TlsClient::new(Some(&pki.ca_file)).expect("TLS client for the test CA");
        Pki {
            server: certs::server_config(&leaf, certs::Versions::Default),
            client,
        }
    })
}

/// A TLS client trusting the scripted servers' CA.
pub fn tls_client() -> TlsClient {
    pki().client.clone()
}

/// A mailbox whose servers for every protocol point at `addr` with `tls`.
pub fn mailbox(addr: SocketAddr, tls: TlsMode) -> Mailbox {
    let server = Server {
        host: "127.0.0.1".to_string(),
        port: addr.port(),
        tls,
        server_name: "localhost".to_string(),
        ca_file: None,
    };
    Mailbox {
        name: "support".to_string(),
        address: "support@contoso.test".to_string(),
        credential: "app".to_string(),
        protocols: Protocol::ALL.to_vec(),
        login_as: None,
        mechanism: Mechanism::XOAuth2,
        smtp_mail_from: false,
        interval: Duration::from_secs(300),
        timeout: Duration::from_secs(10),
        imap: server.clone().into(),
        pop3: server.clone().into(),
        smtp: server.into(),
    }
}

/// One thing a scripted server does.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send a line (CR LF appended); `{tag}` is replaced by the current IMAP tag.
    Send(String),
    /// Send bytes as they are.
    Raw(Vec<u8>),
    /// Read one line (logged).
    Recv,
    /// Send this prefix followed by the last line received (a server echoing a command back).
    Echo(String),
    /// Upgrade to TLS (server side).
    StartTls,
    /// Write an endless line: no line end, until the client goes away (capped).
    Endless,
    /// Never answer again; keep the connection open until the client closes it.
    Silence,
    /// Like `Silence`, but first pause tokio's clock, so the client's deadline passes at once
    /// (virtual time) instead of in real time. Pausing only here, when the client is known to be
    /// waiting for this server, avoids the paused clock jumping while real loopback bytes are
    /// still in flight. Needs the current-thread runtime (`#[tokio::test]`'s default).
    Stall,
    /// Close the connection.
    Close,
}

/// Shorthand for [`Step::Send`].
pub fn send(s: impl Into<String>) -> Step {
    Step::Send(s.into())
}

/// A line the server received, and whether TLS was up when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub tls: bool,
    pub line: String,
}

/// A running scripted server.
pub struct Scripted {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log lock").clone()
    }

    /// Whether any received line contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.received().iter().any(|r| r.line.contains(needle))
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The server side of one connection.
pub struct Conn {
    stream: Option<Box<dyn Io>>,
    buf: Vec<u8>,
    tls: bool,
    log: Arc<Mutex<Vec<Received>>>,
    /// The tag of the last IMAP command, for `{tag}`.
    tag: String,
    /// The last line received, for [`Step::Echo`].
    last: String,
}

/// How a step sequence ended.
enum Flow {
    Continue,
    Stop,
}

impl Conn {
    fn io(&mut self) -> std::io::Result<&mut Box<dyn Io>> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stream gone"))
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let io = self.io()?;
        io.write_all(data).await?;
        io.flush().await
    }

    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        let line = line.replace("{tag}", &self.tag);
        self.write(format!("{line}\r\n").as_bytes()).await
    }

    async fn recv(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                self.log.lock().expect("log lock").push(Received {
                    tls: self.tls,
                    line: line.clone(),
                });
                self.last = line.clone();
                return Ok(line);
            }
            if self.buf.len() > SERVER_MAX_LINE {
                return Err(std::io::Error::other("client line too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.io()?.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn starttls(&mut self) -> std::io::Result<()> {
        let stream = self
            .stream
            .take()
            .ok_or_else(|| std::io::Error::other("stream gone"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki().server.clone());
        let tls = acceptor.accept(stream).await?;
        self.stream = Some(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    async fn run(&mut self, steps: &[Step]) -> std::io::Result<Flow> {
        for step in steps {
            match step {
                Step::Send(l) => self.send(l).await?,
                Step::Raw(b) => self.write(b).await?,
                Step::Echo(prefix) => {
                    let line = format!("{prefix}{}", self.last);
                    self.send(&line).await?
                }
                Step::Recv => {
                    self.recv().await?;
                }
                Step::StartTls => self.starttls().await?,
                Step::Endless => {
                    let chunk = vec![b'A'; 8192];
                    let mut sent = 0;
                    while sent < ENDLESS_CAP {
                        if self.write(&chunk).await.is_err() {
                            return Ok(Flow::Stop);
                        }
                        sent += chunk.len();
                    }
                    return Ok(Flow::Stop);
                }
                Step::Stall | Step::Silence => {
                    if let Step::Stall = step {
                        tokio::time::pause();
                    }
                    // Drain (and discard) until the client gives up.
                    let mut sink = [0u8; 1024];
                    while let Ok(n) = self.io()?.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return Ok(Flow::Stop);
                }
                Step::Close => {
                    if let Some(mut s) = self.stream.take() {
                        let _ = s.shutdown().await;
                    }
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }
}

async fn start<F, Fut>(implicit_tls: bool, script: F) -> Scripted
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let task = tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let mut conn = Conn {
            stream: Some(Box::new(tcp)),
            buf: Vec::new(),
            tls: false,
            log: log2,
            tag: String::new(),
            last: String::new(),
        };
        if implicit_tls && conn.starttls().await.is_err() {
            return;
        }
        let _ = script(conn).await;
    });
    Scripted { addr, log, task }
}

// ---------------------------------------------------------------------------------------------
// IMAP

/// Exchange Online's pre-auth capability line (o365-facts.md 2.2).
pub const EXCHANGE_IMAP_CAPS: &str = "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";

/// The backend server name Exchange puts in its greeting, as base64 of UTF-16LE.
pub fn exchange_bracket(host: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = host.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub const BACKEND: &str = "AMSPR04CA0042.eurprd04.prod.outlook.com";

/// An IMAP server's answers, by command. Defaults: Exchange Online, login succeeds.
#[derive(Clone, Debug)]
pub struct Imap {
    /// Sent on connect (after TLS for implicit TLS).
    pub greeting: Vec<Step>,
    /// Untagged lines answering CAPABILITY (the tagged OK follows).
    pub capability: Vec<String>,
    /// Answer to STARTTLS (the upgrade is part of it).
    pub starttls: Vec<Step>,
    /// Sent after `AUTHENTICATE XOAUTH2` without an initial response.
    pub auth_continue: Vec<Step>,
    /// Sent after the credentials arrived.
    pub auth: Vec<Step>,
    pub examine: Vec<Step>,
    pub logout: Vec<Step>,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            greeting: vec![send(format!(
                "* OK The Microsoft Exchange IMAP4 service is ready. [{}]",
                exchange_bracket(BACKEND)
            ))],
            capability: vec![EXCHANGE_IMAP_CAPS.to_string()],
            starttls: vec![send("{tag} OK Begin TLS negotiation now."), Step::StartTls],
            auth_continue: vec![send("+ ")],
            auth: vec![send("{tag} OK AUTHENTICATE completed.")],
            examine: vec![
                send("* 3 EXISTS"),
                send("* 0 RECENT"),
                send("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)"),
                send("* OK [PERMANENTFLAGS ()] Permanent flags"),
                send("* OK [UIDVALIDITY 14] UIDVALIDITY value"),
                send("* OK [UIDNEXT 105] The next unique identifier value"),
                send("{tag} OK [READ-ONLY] EXAMINE completed."),
            ],
            logout: vec![
                send("* BYE Microsoft Exchange Server IMAP4 server signing off."),
                send("{tag} OK LOGOUT completed."),
                Step::Close,
            ],
        }
    }
}

impl Imap {
    pub async fn start(self, implicit_tls: bool) -> Scripted {
        start(implicit_tls, move |mut c| async move {
            if let Flow::Stop = c.run(&self.greeting).await? {
                return Ok(());
            }
            for _ in 0..MAX_COMMANDS {
                let line = c.recv().await?;
                let mut words = line.split(' ');
                c.tag = words.next().unwrap_or("").to_string();
                let cmd = words.next().unwrap_or("").to_ascii_uppercase();
                let steps: Vec<Step> = match cmd.as_str() {
                    "CAPABILITY" => {
                        let mut s: Vec<Step> = self.capability.iter().map(send).collect();
                        s.push(send("{tag} OK CAPABILITY completed."));
                        s
                    }
                    "STARTTLS" => self.starttls.clone(),
                    "AUTHENTICATE" => {
                        if words.nth(1).is_none() {
                            if let Flow::Stop = c.run(&self.auth_continue).await? {
                                return Ok(());
                            }
                            c.recv().await?;
                        }
                        self.auth.clone()
                    }
                    "EXAMINE" | "SELECT" => self.examine.clone(),
                    "LOGOUT" => self.logout.clone(),
                    _ => vec![send("{tag} BAD Command Error. 10")],
                };
                if let Flow::Stop = c.run(&steps).await? {
                    return Ok(());
                }
            }
            Ok(())
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// POP3

/// A POP3 server's answers, by command. Defaults: Exchange Online, login succeeds.
#[derive(Clone, Debug)]
pub struct Pop3 {
    pub greeting: Vec<Step>,
    pub capa: Vec<Step>,
    pub stls: Vec<Step>,
    /// Answer to `AUTH XOAUTH2` (before the blob).
    pub auth_command: Vec<Step>,
    /// Answer to the blob.
    pub auth: Vec<Step>,
    pub stat: Vec<Step>,
    pub quit: Vec<Step>,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            greeting: vec![send(format!(
                "+OK The Microsoft Exchange POP3 service is ready. [{}]",
                exchange_bracket(BACKEND)
            ))],
            capa: vec![
                send("+OK"),
                send("TOP"),
                send("UIDL"),
                send("SASL PLAIN XOAUTH2"),
                send("USER"),
                send("."),
            ],
            stls: vec![send("+OK Begin TLS negotiation"), Step::StartTls],
            auth_command: vec![send("+")],
            auth: vec![send("+OK User successfully authenticated.")],
            stat: vec![send("+OK 2 4096")],
            quit: vec![
                send("+OK Microsoft Exchange Server POP3 server signing off."),
                Step::Close,
            ],
        }
    }
}

impl Pop3 {
    pub async fn start(self, implicit_tls: bool) -> Scripted {
        start(implicit_tls, move |mut c| async move {
            if let Flow::Stop = c.run(&self.greeting).await? {
                return Ok(());
            }
            for _ in 0..MAX_COMMANDS {
                let line = c.recv().await?;
                let cmd = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                let steps = match cmd.as_str() {
                    "CAPA" => self.capa.clone(),
                    "STLS" => self.stls.clone(),
                    "AUTH" => {
                        if let Flow::Stop = c.run(&self.auth_command).await? {
                            return Ok(());
                        }
                        c.recv().await?;
                        self.auth.clone()
                    }
                    "STAT" => self.stat.clone(),
                    "QUIT" => self.quit.clone(),
                    _ => vec![send("-ERR Command is not valid in this state.")],
                };
                if let Flow::Stop = c.run(&steps).await? {
                    return Ok(());
                }
            }
            Ok(())
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// An SMTP submission server's answers, by command. Defaults: Exchange Online, login succeeds.
#[derive(Clone, Debug)]
pub struct Smtp {
    pub banner: Vec<Step>,
    /// EHLO answer before TLS.
    pub ehlo_plain: Vec<Step>,
    pub starttls: Vec<Step>,
    /// EHLO answer after TLS.
    pub ehlo_tls: Vec<Step>,
    pub auth: Vec<Step>,
    pub mail: Vec<Step>,
    pub rset: Vec<Step>,
    pub quit: Vec<Step>,
}

pub const EXCHANGE_HOST: &str = "SN4PR0501CA0054.namprd05.prod.outlook.com";

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            banner: vec![send(format!(
                "220 {EXCHANGE_HOST} Microsoft ESMTP MAIL Service ready at Mon, 1 Jun 2026 10:00:00 +0000 08DE8B5D1A2F3C4E"
            ))],
            ehlo_plain: [
                format!("250-{EXCHANGE_HOST} Hello [203.0.113.7]"),
                "250-SIZE 157286400".into(),
                "250-PIPELINING".into(),
                "250-DSN".into(),
                "250-ENHANCEDSTATUSCODES".into(),
                "250-STARTTLS".into(),
                "250-8BITMIME".into(),
                "250-BINARYMIME".into(),
                "250-CHUNKING".into(),
                "250 SMTPUTF8".into(),
            ]
            .into_iter()
            .map(Step::Send)
            .collect(),
            starttls: vec![send("220 2.0.0 SMTP server ready"), Step::StartTls],
            ehlo_tls: [
                format!("250-{EXCHANGE_HOST} Hello [203.0.113.7]"),
                "250-SIZE 157286400".into(),
                "250-PIPELINING".into(),
                "250-DSN".into(),
                "250-ENHANCEDSTATUSCODES".into(),
                "250-AUTH LOGIN XOAUTH2".into(),
                "250-8BITMIME".into(),
                "250-BINARYMIME".into(),
                "250-CHUNKING".into(),
                "250 SMTPUTF8".into(),
            ]
            .into_iter()
            .map(Step::Send)
            .collect(),
            auth: vec![send("235 2.7.0 Authentication successful")],
            mail: vec![send("250 2.1.0 Sender OK")],
            rset: vec![send("250 2.0.0 Resetting")],
            quit: vec![
                send("221 2.0.0 Service closing transmission channel"),
                Step::Close,
            ],
        }
    }
}

impl Smtp {
    pub async fn start(self, implicit_tls: bool) -> Scripted {
        start(implicit_tls, move |mut c| async move {
            if let Flow::Stop = c.run(&self.banner).await? {
                return Ok(());
            }
            for _ in 0..MAX_COMMANDS {
                let line = c.recv().await?;
                let cmd = line
                    .split([' ', ':'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                let steps = match cmd.as_str() {
                    "EHLO" if c.tls => self.ehlo_tls.clone(),
                    "EHLO" => self.ehlo_plain.clone(),
                    "STARTTLS" => self.starttls.clone(),
                    "AUTH" => self.auth.clone(),
                    "MAIL" => self.mail.clone(),
                    "RSET" => self.rset.clone(),
                    "QUIT" => self.quit.clone(),
                    _ => vec![send("500 5.3.3 Unrecognized command")],
                };
                if let Flow::Stop = c.run(&steps).await? {
                    return Ok(());
                }
            }
            Ok(())
        })
        .await
    }
}
