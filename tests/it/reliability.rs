//! Reliability of the real binary (`CARGO_BIN_EXE_o365-mail-exporter`) under crashes, hostile
//! servers and load, with the figures printed (`eprintln!`) and recorded in docs/security.md:
//!
//! - the refresh-token chain survives SIGKILL at random points of hundreds of refreshes against
//!   a strictly rotating identity provider (0 tokens lost);
//! - hostile mail servers and token endpoints (silence, a trickle, endless lines and replies,
//!   garbage instead of TLS, huge SASL challenges, connections closed mid-reply, huge and HTML
//!   token answers) cost one failed check each, within the deadline, while the process's peak
//!   memory stays under a stated bound;
//! - `/metrics` scraped as fast as two clients can for 30 s while many checks run: 0 errors,
//!   latency percentiles and schedule slip printed (not asserted: the machine is shared).
//!
//! The helpers at the top are shared with `faults.rs` and `canary.rs`. Heavy tests take
//! [`heavy`] so that they do not measure each other.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use o365_mail_exporter::fake_idp::{App, FakeIdp, FakeIdpHandle, User};
use o365_mail_exporter::oauth::{StoredToken, TokenStore};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use crate::support::exporter::{bin, get, sample, write, Exporter};
use crate::support::fake_idp::{post_form, Answer, DEVICE_GRANT};

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The public client of the delegated credentials in these tests.
pub(crate) const PUBLIC: &str = "33333333-2222-3333-4444-555555555555";
pub(crate) const ALICE: &str = "alice@example.test";
pub(crate) const IMAP_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";

/// Print a measured figure so that it shows in a plain `cargo test` run too: libtest captures
/// `eprintln!` of passing tests, not a direct write to stderr.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "[figure] {}", format!($($arg)*));
    }};
}
pub(crate) use report;

static HEAVY: Mutex<()> = Mutex::new(());

/// Serialises the tests that load the machine or measure time, so they do not disturb each
/// other (the suite runs tests in parallel on two cores).
pub(crate) fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runtime for in-process servers of a synchronous test (the fake identity provider, hostile
/// servers); its worker threads serve while the test thread blocks on processes and sockets.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A delegated sign-in through the device-code flow, as `o365-mail-exporter login
/// --device-code` does it: the whole token answer (access, refresh and id token).
pub(crate) async fn device_login(idp: &FakeIdpHandle, client: &str, scope: &str) -> Answer {
    let dc = post_form(
        &idp.device_code_url(),
        &[("client_id", client), ("scope", scope)],
    )
    .await;
    let code = dc.json["device_code"]
        .as_str()
        .unwrap_or_else(|| panic!("device code: {}", dc.json))
        .to_string();
    idp.approve_device_code(None).expect("pending device code");
    let t = post_form(
        &idp.token_url(),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", client),
            ("device_code", &code),
        ],
    )
    .await;
    assert_eq!(t.status, 200, "device-code redemption: {}", t.json);
    t
}

/// Store `refresh_token` for `credential` exactly as `login` and the token source do.
pub(crate) fn store_refresh_token(state_dir: &Path, credential: &str, client: &str, rt: &str) {
    TokenStore::new(state_dir)
        .save(
            credential,
            &StoredToken {
                refresh_token: SecretString::from(rt.to_string()),
                client_id: client.to_string(),
                identity: Some(ALICE.to_string()),
                saved_at: crate::support::fake_idp::now(),
            },
        )
        .expect("seed the token store");
}

/// The YAML of a delegated credential `name` using the fake's token endpoint.
pub(crate) fn delegated_credential_yaml(name: &str, idp: &FakeIdpHandle, extra: &str) -> String {
    format!(
        "  - name: {name}\n    tenant: {}\n    client_id: {PUBLIC}\n    grant: refresh_token\n    token_url: {}\n    scopes: [{IMAP_SCOPE}, offline_access]\n    expected_identity: {ALICE}\n{extra}",
        idp.tenant(),
        idp.token_url()
    )
}

/// Peak and current resident memory of a process in KiB (`VmHWM`, `VmRSS`).
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Spawn the exporter on an ephemeral loopback port without waiting for it (the crash test kills
/// it at random instants, start-up included).
fn spawn_raw(cfg: &Path, stderr: &Path) -> Child {
    Command::new(bin())
        .args([
            "--config.file",
            cfg.to_str().expect("utf8 path"),
            "--web.listen-address=127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("exporter starts")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// Test servers that serve every connection: a well-behaved IMAP server that accepts any token
// (and records it), and the hostile behaviours a probe must survive.

/// What a [`TestServer`] does with each connection (after the TLS handshake when it has TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// IMAP that accepts any XOAUTH2 token (recorded), with an INBOX of 3 messages.
    Imap,
    /// Accept, never write.
    Silence,
    /// One byte every 100 ms, never a line end.
    Trickle,
    /// Bytes without a line end until the client goes away.
    EndlessLine,
    /// An SMTP banner of endless `220-` lines.
    EndlessBanner,
    /// IMAP greeting without capabilities, then endless untagged lines after the client's
    /// first command.
    EndlessUntagged,
    /// Binary junk ending in a line end (where TLS, or a greeting, was expected).
    Garbage,
    /// IMAP greeting without SASL-IR; `AUTHENTICATE` answered by a challenge that never ends.
    EndlessChallenge,
    /// Half a line, then the connection closed.
    ClosedMidReply,
    /// HTTP 200 with a chunked JSON body that never ends.
    HttpEndless,
    /// HTTP 200 `text/html`: a proxy's sign-in page instead of a token.
    HttpHtml,
    /// HTTP: read the request, never answer.
    HttpHang,
    /// IMAP that refuses `AUTHENTICATE` by echoing the whole command line (with the token).
    ImapEcho,
    /// HTTP 401 `invalid_client` whose description, trace and correlation ids echo the request
    /// body (with the client secret or refresh token in it), as a broken proxy might.
    HttpEcho,
}

/// A loopback server for many connections; stops (with its connections) when dropped.
pub(crate) struct TestServer {
    pub addr: std::net::SocketAddr,
    /// Bearer tokens received in XOAUTH2 initial responses ([`Behaviour::Imap`]).
    pub tokens: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub sessions: Arc<AtomicU64>,
    /// Bytes written to clients.
    pub written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Most bytes one connection of a hostile server writes (the exporter stops reading far
/// earlier; this only bounds the server).
const SERVER_WRITE_CAP: u64 = 32 * 1024 * 1024;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A CA and a server configuration for `localhost`/`127.0.0.1`, shared by the servers of one
/// test; the CA's PEM is `pki.ca_file` (the exporter's `ca_file`).
pub(crate) fn test_pki() -> (crate::support::certs::Pki, Arc<rustls::ServerConfig>) {
    use crate::support::certs::{server_config, LeafKind, Pki, Versions};
    let pki = Pki::new();
    let cfg = server_config(&pki.leaf(LeafKind::Valid), Versions::Default);
    (pki, cfg)
}

/// Start a server on 127.0.0.1:0 on the current runtime.
pub(crate) async fn serve(b: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (t, s, w) = (tokens.clone(), sessions.clone(), written.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            s.fetch_add(1, Ordering::Relaxed);
            // Nagle would hold a reply behind the client's delayed ACK (40 ms): slow in real
            // time, and fatal under a paused clock, which jumps while nothing is readable
            let _ = tcp.set_nodelay(true);
            while conns.try_join_next().is_some() {}
            let (tls, t, w) = (tls.clone(), t.clone(), w.clone());
            conns.spawn(async move {
                let stream: Box<dyn Io> = match tls {
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => Box::new(s),
                            _ => return,
                        }
                    }
                    None => Box::new(tcp),
                };
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), behave(b, stream, t, w)).await;
            });
        }
    });
    TestServer {
        addr,
        tokens,
        sessions,
        written,
        task,
    }
}

async fn read_line(s: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            return Some(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn put(s: &mut Box<dyn Io>, w: &AtomicU64, data: &[u8]) -> bool {
    use tokio::io::AsyncWriteExt;
    if w.load(Ordering::Relaxed) > SERVER_WRITE_CAP * 64 {
        return false;
    }
    w.fetch_add(data.len() as u64, Ordering::Relaxed);
    s.write_all(data).await.is_ok() && s.flush().await.is_ok()
}

/// Write `chunk` until the client goes away (or the per-connection cap).
async fn flood(s: &mut Box<dyn Io>, w: &AtomicU64, chunk: &[u8], pause: Duration) {
    let mut sent = 0u64;
    while sent < SERVER_WRITE_CAP && put(s, w, chunk).await {
        sent += chunk.len() as u64;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The bearer token inside a base64 XOAUTH2 initial response.
fn xoauth2_token(blob: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let auth = text
        .split('\x01')
        .find_map(|p| p.strip_prefix("auth=Bearer "))?;
    Some(auth.to_string())
}

async fn behave(
    b: Behaviour,
    mut s: Box<dyn Io>,
    tokens: Arc<Mutex<Vec<String>>>,
    w: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let w = &*w;
    match b {
        Behaviour::Imap => {
            if !put(
                &mut s,
                w,
                b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] test server ready\r\n",
            )
            .await
            {
                return;
            }
            for _ in 0..32 {
                let Some(line) = read_line(&mut s, &mut buf).await else {
                    return;
                };
                let (tag, cmd) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let upper = cmd.to_ascii_uppercase();
                let answer = if upper.starts_with("AUTHENTICATE XOAUTH2 ") {
                    if let Some(t) = xoauth2_token(&cmd[21..]) {
                        tokens.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                    }
                    format!("{tag} OK AUTHENTICATE completed.\r\n")
                } else if upper.starts_with("CAPABILITY") {
                    format!("* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\r\n{tag} OK CAPABILITY completed.\r\n")
                } else if upper.starts_with("EXAMINE") {
                    format!(
                        "* 3 EXISTS\r\n* 0 RECENT\r\n{tag} OK [READ-ONLY] EXAMINE completed.\r\n"
                    )
                } else if upper.starts_with("LOGOUT") {
                    let _ = put(
                        &mut s,
                        w,
                        format!("* BYE\r\n{tag} OK LOGOUT completed.\r\n").as_bytes(),
                    )
                    .await;
                    return;
                } else {
                    format!("{tag} BAD Command Error. 12\r\n")
                };
                if !put(&mut s, w, answer.as_bytes()).await {
                    return;
                }
            }
        }
        Behaviour::Silence | Behaviour::HttpHang => {
            // read (and drop) until the client goes away
            while read_line(&mut s, &mut buf).await.is_some() {
                buf.clear();
            }
        }
        Behaviour::Trickle => flood(&mut s, w, b"2", Duration::from_millis(100)).await,
        Behaviour::EndlessLine => flood(&mut s, w, &[b'A'; 16 * 1024], Duration::ZERO).await,
        Behaviour::EndlessBanner => {
            flood(&mut s, w, &b"220-flood\r\n".repeat(512), Duration::ZERO).await
        }
        Behaviour::EndlessUntagged => {
            if put(&mut s, w, b"* OK test server ready\r\n").await
                && read_line(&mut s, &mut buf).await.is_some()
            {
                flood(&mut s, w, &b"* flood\r\n".repeat(512), Duration::ZERO).await;
            }
        }
        Behaviour::Garbage => {
            let mut junk: Vec<u8> = (0u8..=255).cycle().skip(7).take(3000).collect();
            junk.extend_from_slice(b"\r\n");
            if put(&mut s, w, &junk).await {
                while read_line(&mut s, &mut buf).await.is_some() {
                    buf.clear();
                }
            }
        }
        Behaviour::EndlessChallenge => {
            if !put(
                &mut s,
                w,
                b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] test server ready\r\n",
            )
            .await
            {
                return;
            }
            if read_line(&mut s, &mut buf).await.is_some() && put(&mut s, w, b"+ ").await {
                flood(&mut s, w, &b"QUFB".repeat(4096), Duration::ZERO).await;
            }
        }
        Behaviour::ClosedMidReply => {
            let _ = put(&mut s, w, b"* OK [CAPABILITY IMAP4rev1 SAS").await;
        }
        Behaviour::ImapEcho => {
            if !put(
                &mut s,
                w,
                b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] echo ready\r\n",
            )
            .await
            {
                return;
            }
            for _ in 0..8 {
                let Some(line) = read_line(&mut s, &mut buf).await else {
                    return;
                };
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                let answer = format!("{tag} NO [AUTHENTICATIONFAILED] you sent: {line}\r\n");
                if !put(&mut s, w, answer.as_bytes()).await {
                    return;
                }
            }
        }
        Behaviour::HttpEcho => {
            use tokio::io::AsyncReadExt;
            let mut length = 0usize;
            while let Some(l) = read_line(&mut s, &mut buf).await {
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0).min(64 * 1024);
                    }
                }
            }
            while buf.len() < length {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf).into_owned();
            let json = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided. You sent: {body}\r\nTrace ID: {body}\r\nCorrelation ID: x\r\nTimestamp: 2026-01-01 00:00:00Z"),
                "error_codes": [7000215],
                "timestamp": body,
                "trace_id": body,
                "correlation_id": body,
                "error_uri": format!("https://login.microsoftonline.com/error?code=7000215&{body}"),
            })
            .to_string();
            let _ = put(&mut s, w, format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len()).as_bytes()).await;
        }
        Behaviour::HttpEndless | Behaviour::HttpHtml => {
            // the request head, and a body of at most a few kB
            let mut head = Vec::new();
            while let Some(l) = read_line(&mut s, &mut buf).await {
                if l.is_empty() {
                    break;
                }
                head.push(l);
            }
            if b == Behaviour::HttpHtml {
                let page = "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>portal</body></html>";
                let _ = put(&mut s, w, format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len()).as_bytes()).await;
                return;
            }
            if put(&mut s, w, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n").await {
                let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "\"a\":1,".repeat(16 * 1024 / 6) + &" ".repeat(16 * 1024 % 6));
                flood(&mut s, w, chunk.as_bytes(), Duration::ZERO).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The adversary of the crash test

/// The fake's strict rotation with the lost-answer grace, checked on the wire: a used token
/// works again only while its successor is unused, which retires that successor; once the
/// successor is used, the old token is dead.
#[tokio::test]
async fn strict_rotation_with_grace_kills_a_token_once_its_successor_is_used() {
    let idp = FakeIdp::builder()
        .app(App::new(PUBLIC).public_client(true))
        .user(User::new(ALICE))
        .strict_refresh(true)
        .refresh_grace(true)
        .start()
        .await
        .expect("fake IdP");
    let refresh = |rt: String| {
        let url = idp.token_url();
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", PUBLIC),
                    ("refresh_token", &rt),
                ],
            )
            .await
        }
    };
    let rt = |a: &Answer| {
        a.json["refresh_token"]
            .as_str()
            .expect("rotated")
            .to_string()
    };
    let t0 = rt(&device_login(&idp, PUBLIC, &format!("{IMAP_SCOPE} offline_access")).await);
    let a1 = refresh(t0.clone()).await;
    assert_eq!(a1.status, 200, "{}", a1.json);
    // the answer carrying t1 was "lost": t0 still works, and retires t1
    let a1b = refresh(t0.clone()).await;
    assert_eq!(a1b.status, 200, "grace: {}", a1b.json);
    let retired = refresh(rt(&a1)).await;
    assert_eq!((retired.status, retired.code()), (400, Some(9002313)));
    // t1' is used: t0 is dead from now on, with strict mode's AADSTS70000
    let a2 = refresh(rt(&a1b)).await;
    assert_eq!(a2.status, 200, "{}", a2.json);
    let dead = refresh(t0).await;
    assert_eq!((dead.status, dead.code()), (400, Some(70000)));
    assert_eq!(refresh(rt(&a2)).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Crash safety of the token store, as a process

/// How a kill fell relative to the refresh its process was doing.
#[derive(Default, Debug)]
struct KillPoints {
    /// No answer from the identity provider yet (start-up, or the request in flight).
    before_answer: usize,
    /// The provider rotated the token, the new one was not saved yet: with a provider that kills
    /// a used token at once, no client could keep its chain here; the grace keeps it alive, and
    /// the next start must redeem the old token.
    after_rotation_before_save: usize,
    /// The rotated token was saved.
    after_save: usize,
}

/// The exporter refreshes a delegated credential as soon as it starts (no access token yet),
/// so a restart loop makes it refresh constantly without a test-only knob: the token source's 30
/// s minimum spacing stays as in production, and the refresh at start-up runs the same code as
/// any later one (read the store, redeem, save the rotated token, then use it). Each cycle
/// starts the process and SIGKILLs it after a random delay; the delays follow the measured
/// exec-to-save time so that kills land before, during and after the save. A lost chain shows
/// as a refused refresh at a later start (the fake's strict rotation with grace), a torn file as
/// an unreadable store.
#[test]
fn the_refresh_token_chain_survives_sigkill_at_random_points() {
    const KILLS: usize = 300;
    const CRED: &str = "delegated";
    let _heavy = heavy();
    let rt = runtime();
    let idp = rt
        .block_on(
            FakeIdp::builder()
                .app(App::new(PUBLIC).public_client(true))
                .user(User::new(ALICE))
                .strict_refresh(true)
                .refresh_grace(true)
                .start(),
        )
        .expect("fake IdP");
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let store = TokenStore::new(&state_dir);
    let scope = format!("{IMAP_SCOPE} offline_access");
    let sign_in = || {
        let a = rt.block_on(device_login(&idp, PUBLIC, &scope));
        let t = a.json["refresh_token"].as_str().expect("refresh token");
        store_refresh_token(&state_dir, CRED, PUBLIC, t);
    };
    sign_in();
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "state_dir: {}\ndefaults: {{jitter: 0s}}\nendpoints:\n  - {{name: closed, host: 127.0.0.1, port: 9, tls: none, interval: 1h}}\ncredentials:\n{}",
            state_dir.display(),
            delegated_credential_yaml(CRED, &idp, "    interval: 1s\n")
        ),
    );
    let stored = || -> Result<Option<String>, String> {
        store
            .load(CRED)
            .map(|t| t.map(|t| t.refresh_token.expose_secret().to_string()))
            .map_err(|e| e.to_string())
    };
    let refreshes = || {
        let s = idp.stats();
        (
            s.count(|r| r.grant == "refresh_token" && r.outcome == "ok"),
            s.count(|r| r.grant == "refresh_token" && r.outcome != "ok"),
        )
    };
    let logs = [
        dir.path().join("stderr-a.log"),
        dir.path().join("stderr-b.log"),
    ];
    let started = Instant::now();

    // Calibrate: how long from exec to the rotated token on disk, on this machine now.
    let mut to_save = Vec::new();
    for _ in 0..5 {
        let before = stored().expect("readable").expect("a token");
        let t0 = Instant::now();
        let mut child = spawn_raw(&cfg, &logs[0]);
        loop {
            if stored().ok().flatten().is_some_and(|t| t != before) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no refresh within 20 s: {}",
                std::fs::read_to_string(&logs[0]).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        to_save.push(t0.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    to_save.sort();
    // the estimate then follows the machine's current speed: a kill before the answer moves it
    // later, one after the save earlier, so the kills keep landing around the save
    let mut t_save = to_save[to_save.len() / 2];
    let calibrated = t_save;

    let mut points = KillPoints::default();
    let mut lost = Vec::new();
    let mut corrupt = Vec::new();
    let mut rng = rand::rng();
    for i in 0..KILLS {
        let before = match stored() {
            Ok(Some(t)) => t,
            other => panic!("kill {i}: the token store before the start: {other:?}"),
        };
        let (ok0, bad0) = refreshes();
        let log = &logs[i % 2];
        let mut child = spawn_raw(&cfg, log);
        // half anywhere from exec to well after the save, half around the save itself
        let delay = if rng.random_bool(0.5) {
            t_save.mul_f64(rng.random_range(0.0..1.6))
        } else {
            t_save.mul_f64(rng.random_range(0.7..1.3))
        };
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // a request the process sent before dying is still answered: let the fake finish it
        std::thread::sleep(Duration::from_millis(5));
        let after = match stored() {
            Ok(Some(t)) => t,
            other => {
                corrupt.push(format!("kill {i}: {other:?}"));
                sign_in();
                continue;
            }
        };
        let (ok1, bad1) = refreshes();
        if bad1 > bad0 {
            let s = idp.stats();
            let codes: Vec<String> = s
                .rows
                .iter()
                .filter(|r| r.grant == "refresh_token" && r.outcome != "ok")
                .map(|r| format!("{} AADSTS{:?} x{}", r.outcome, r.aadsts, r.count))
                .collect();
            lost.push(format!(
                "kill {i}: the refresh after restart failed ({codes:?}); log of the previous start:\n{}",
                std::fs::read_to_string(&logs[(i + 1) % 2]).unwrap_or_default()
            ));
            idp.reset_stats();
            sign_in();
            continue;
        }
        match (ok1 > ok0, after != before) {
            (false, _) => {
                points.before_answer += 1;
                t_save = t_save.mul_f64(1.05);
            }
            (true, false) => points.after_rotation_before_save += 1,
            (true, true) => {
                points.after_save += 1;
                t_save = t_save.mul_f64(0.95);
            }
        }
    }

    // The last kill's token must be the live one: one more start, left to refresh.
    let (ok0, bad0) = refreshes();
    let mut child = spawn_raw(&cfg, &logs[0]);
    let t0 = Instant::now();
    while refreshes() == (ok0, bad0) && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (ok1, bad1) = refreshes();
    if bad1 > bad0 || ok1 == ok0 {
        lost.push(format!(
            "final start: refresh ok {} -> {ok1}, failed {} -> {bad1}:\n{}",
            ok0,
            bad0,
            std::fs::read_to_string(&logs[0]).unwrap_or_default()
        ));
    }
    let strays = std::fs::read_dir(store.dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        })
        .unwrap_or(0);
    let total = idp.stats().count(|r| r.grant == "refresh_token");
    report!(
        "crash safety: {KILLS} SIGKILLs at random points ({:.1} s, exec-to-save {:?} calibrated, {:?} at the end); \
         {total} refresh requests answered; kills before the answer {}, after the rotation but \
         before the save {}, after the save {}; refresh tokens lost: {}; corrupt token files: {}; \
         stray temporary files left: {strays}",
        started.elapsed().as_secs_f64(),
        calibrated,
        t_save,
        points.before_answer,
        points.after_rotation_before_save,
        points.after_save,
        lost.len(),
        corrupt.len()
    );
    assert!(lost.is_empty(), "refresh tokens lost:\n{}", lost.join("\n"));
    assert!(corrupt.is_empty(), "unreadable token files: {corrupt:?}");
    // the kills really spread over the refresh: some before the answer, some after the save
    assert!(
        points.before_answer >= 10 && points.after_save >= 10,
        "{points:?}"
    );
    drop(idp);
}

// ---------------------------------------------------------------------------------------------
// Hostile servers against the running process: deadlines and bounded memory

/// Scrape the plain-text transcript of `id`: (reason, failed phase, duration).
pub(crate) fn transcript_facts(addr: &str, id: &str) -> Option<(String, String, Duration)> {
    let (status, text) = get(addr, &format!("/checks/{id}?format=text")).ok()?;
    if status != 200 {
        return None;
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let secs: f64 = field("duration:")?
        .trim_end_matches(" s")
        .trim()
        .parse()
        .ok()?;
    Some((
        field("reason:")?,
        field("failed phase:").unwrap_or_default(),
        Duration::from_secs_f64(secs),
    ))
}

/// Peak memory the hostile servers may cost on top of the exporter's resident size once it
/// is up. Every read is bounded (16 KiB lines, 256-line replies, 1 MiB token bodies, 16
/// concurrent checks), so the real figure is a few MiB; an unbounded reader would take the 32
/// MiB a single hostile connection streams.
const HOSTILE_MEMORY_BOUND_MIB: u64 = 24;

#[test]
fn hostile_servers_cost_one_failed_check_each_within_the_deadline_and_bounded_memory() {
    const SECRET: &str = "hostile-test-secret";
    const APP: &str = "44444444-2222-3333-4444-555555555555";
    let _heavy = heavy();
    let rt = runtime();
    let (pki, tls) = test_pki();
    let plain = |b| rt.block_on(serve(b, None));
    let secure = |b| rt.block_on(serve(b, Some(tls.clone())));
    let idp = rt
        .block_on(
            FakeIdp::builder()
                .app(App::new(APP).secret(SECRET).roles(["IMAP.AccessAsApp"]))
                .start(),
        )
        .expect("fake IdP");
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", SECRET);
    let ca = pki.ca_file.display().to_string();

    // (check id, server, expected failed phase, expected reason)
    let mut servers = Vec::new();
    let mut expect: Vec<(String, &str, &str)> = Vec::new();
    let mut yaml = String::from(
        "defaults: {interval: 2s, timeout: 2s, login_interval: 2s, login_timeout: 2s, jitter: 0s}\nendpoints:\n",
    );
    let endpoints = [
        (
            "ep-silent",
            Behaviour::Silence,
            "starttls-smtp",
            "greeting",
            "timeout",
        ),
        (
            "ep-trickle",
            Behaviour::Trickle,
            "starttls-smtp",
            "greeting",
            "timeout",
        ),
        (
            "ep-endless-line",
            Behaviour::EndlessLine,
            "starttls-smtp",
            "greeting",
            "reply_too_long",
        ),
        (
            "ep-endless-banner",
            Behaviour::EndlessBanner,
            "starttls-smtp",
            "greeting",
            "reply_too_long",
        ),
        (
            "ep-closed-mid-reply",
            Behaviour::ClosedMidReply,
            "starttls-smtp",
            "greeting",
            "connection_closed",
        ),
        (
            "ep-garbage-not-tls",
            Behaviour::Garbage,
            "implicit",
            "tls",
            "tls_handshake",
        ),
        (
            "ep-silent-tls",
            Behaviour::Silence,
            "implicit",
            "tls",
            "timeout",
        ),
    ];
    for (name, b, mode, phase, reason) in endpoints {
        let s = plain(b);
        yaml.push_str(&format!(
            "  - {{name: {name}, host: 127.0.0.1, port: {}, tls: {mode}, server_name: localhost, ca_file: {ca}}}\n",
            s.addr.port()
        ));
        expect.push((format!("endpoint:{name}"), phase, reason));
        servers.push(s);
    }
    yaml.push_str(&format!(
        "credentials:\n  - name: good\n    tenant: {}\n    client_id: {APP}\n    grant: client_credentials\n    client_secret_file: {}\n    token_url: {}\n    timeout: 2s\n",
        idp.tenant(),
        secret.display(),
        idp.token_url()
    ));
    let token_endpoints = [
        ("tok-endless-body", Behaviour::HttpEndless, "bad_response"),
        ("tok-html-page", Behaviour::HttpHtml, "bad_response"),
        ("tok-hang", Behaviour::HttpHang, "timeout"),
    ];
    for (name, b, _) in token_endpoints {
        let s = plain(b);
        yaml.push_str(&format!(
            "  - name: {name}\n    tenant: {}\n    client_id: {APP}\n    grant: client_credentials\n    client_secret_file: {}\n    token_url: http://127.0.0.1:{}/{}/oauth2/v2.0/token\n    timeout: 2s\n",
            idp.tenant(),
            secret.display(),
            s.addr.port(),
            idp.tenant()
        ));
        servers.push(s);
    }
    yaml.push_str("mailboxes:\n");
    let mailboxes = [
        ("mb-ok", Behaviour::Imap, "-", "ok"),
        ("mb-silent", Behaviour::Silence, "greeting", "timeout"),
        ("mb-trickle", Behaviour::Trickle, "greeting", "timeout"),
        (
            "mb-endless-line",
            Behaviour::EndlessLine,
            "greeting",
            "reply_too_long",
        ),
        (
            "mb-endless-untagged",
            Behaviour::EndlessUntagged,
            "capability",
            "reply_too_long",
        ),
        (
            "mb-garbage-after-tls",
            Behaviour::Garbage,
            "greeting",
            "protocol_error",
        ),
        (
            "mb-endless-challenge",
            Behaviour::EndlessChallenge,
            "auth",
            "reply_too_long",
        ),
        (
            "mb-closed-mid-reply",
            Behaviour::ClosedMidReply,
            "greeting",
            "connection_closed",
        ),
    ];
    for (name, b, phase, reason) in mailboxes {
        let s = secure(b);
        yaml.push_str(&format!(
            "  - name: {name}\n    address: {ALICE}\n    credential: good\n    protocols: [imap]\n    servers: {{imap: {{host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {ca}}}}}\n",
            s.addr.port()
        ));
        expect.push((format!("login:{name}:imap"), phase, reason));
        servers.push(s);
    }
    let cfg = write(dir.path(), "c.yaml", &yaml);
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let pid = e.child.id();
    let (_, rss_at_start) = memory_kib(pid);

    // ~6 rounds of every check
    let started = Instant::now();
    let mut worst: std::collections::BTreeMap<String, (Duration, Vec<(String, String)>)> =
        Default::default();
    let mut peak_rss = rss_at_start;
    while started.elapsed() < Duration::from_secs(13) {
        for (id, _, _) in &expect {
            if let Some((reason, phase, d)) =
                transcript_facts(&e.addr, id).filter(|(r, _, _)| r != "pending")
            {
                let w = worst.entry(id.clone()).or_default();
                w.0 = w.0.max(d);
                if !w.1.contains(&(phase.clone(), reason.clone())) {
                    w.1.push((phase, reason));
                }
            }
        }
        peak_rss = peak_rss.max(memory_kib(pid).1);
        std::thread::sleep(Duration::from_millis(250));
    }
    let (hwm, rss_end) = memory_kib(pid);
    let metrics = e.get("/metrics").1;
    let streamed: u64 = servers
        .iter()
        .map(|s| s.written.load(Ordering::Relaxed))
        .sum();
    let sessions: u64 = servers
        .iter()
        .map(|s| s.sessions.load(Ordering::Relaxed))
        .sum();

    let mut problems = Vec::new();
    for (id, phase, reason) in &expect {
        let Some((d, seen)) = worst.get(id) else {
            problems.push(format!("{id}: never ran"));
            continue;
        };
        let want = (phase.to_string(), reason.to_string());
        if seen.iter().any(|s| *s != want) || !seen.contains(&want) {
            problems.push(format!("{id}: expected {phase}/{reason}, saw {seen:?}"));
        }
        if *d > Duration::from_millis(2500) {
            problems.push(format!("{id}: took {d:?} with a 2 s deadline"));
        }
        eprintln!("hostile: {id:<32} {phase:>10}/{reason:<18} slowest {d:?}");
    }
    // no check stalled: each ran several times
    for (id, _, _) in &expect {
        let runs = if let Some(ep) = id.strip_prefix("endpoint:") {
            sample(
                &metrics,
                &format!("o365_endpoint_checks_total{{endpoint=\"{ep}\"}}"),
            )
        } else {
            let mb = id.split(':').nth(1).unwrap_or_default();
            sample(
                &metrics,
                &format!("o365_login_attempts_total{{mailbox=\"{mb}\",protocol=\"imap\"}}"),
            )
        }
        .unwrap_or(0.0);
        if runs < 4.0 {
            problems.push(format!("{id}: only {runs} runs in 13 s at a 2 s interval"));
        }
    }
    for (name, _, reason) in token_endpoints {
        let line = format!("o365_token_reason{{credential=\"{name}\",reason=\"{reason}\"}} 1");
        if !metrics.contains(&line) {
            problems.push(format!("credential {name}: no `{line}`"));
        }
    }
    if !metrics.contains("o365_token_reason{credential=\"good\",reason=\"ok\"} 1") {
        problems.push("credential good: no token".into());
    }
    let grown_mib = hwm.saturating_sub(rss_at_start) / 1024;
    let slowest = worst.values().map(|(d, _)| *d).max().unwrap_or_default();
    let failed_fast = worst
        .iter()
        .filter(|(id, (d, seen))| {
            !id.contains("silent")
                && !id.contains("trickle")
                && seen.iter().all(|(_, r)| r != "ok")
                && *d < Duration::from_secs(1)
        })
        .count();
    report!(
        "hostile: {} checks ({failed_fast} refusing fast, the silent and trickling ones at their 2 s \
         deadline, slowest {slowest:?}, each with its reason) and 3 token endpoints (endless body, \
         HTML page: bad_response; hang: timeout) for 13 s; {sessions} hostile sessions streamed {} MiB \
         at the exporter; resident at start {:.1} MiB, peak (VmHWM) {:.1} MiB, at the end {:.1} MiB: \
         the hostile servers cost at most {grown_mib} MiB (bound {HOSTILE_MEMORY_BOUND_MIB} MiB)",
        expect.len(),
        streamed / (1024 * 1024),
        rss_at_start as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        streamed > 64 * 1024 * 1024 / 4,
        "the hostile servers streamed only {streamed} bytes: the memory bound proves nothing"
    );
    assert!(
        grown_mib <= HOSTILE_MEMORY_BOUND_MIB,
        "peak memory grew by {grown_mib} MiB under hostile servers"
    );
    assert!(e.get("/-/healthy").0 == 200);
    drop(servers);
}

// ---------------------------------------------------------------------------------------------
// Load

#[test]
fn metrics_scraped_flat_out_for_30_seconds_while_many_checks_run() {
    const SECRET: &str = "load-test-secret";
    const APP: &str = "55555555-2222-3333-4444-555555555555";
    const ENDPOINTS: usize = 20;
    const MAILBOXES: usize = 40;
    const SCRAPERS: usize = 2;
    const WINDOW: Duration = Duration::from_secs(30);
    let _heavy = heavy();
    let rt = runtime();
    let (pki, tls) = test_pki();
    let imap = rt.block_on(serve(Behaviour::Imap, Some(tls)));
    let idp = rt
        .block_on(
            FakeIdp::builder()
                .app(App::new(APP).secret(SECRET).roles(["IMAP.AccessAsApp"]))
                .start(),
        )
        .expect("fake IdP");
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", SECRET);
    let server = format!(
        "{{host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {}}}",
        imap.addr.port(),
        pki.ca_file.display()
    );
    let mut yaml = String::from(
        "defaults: {interval: 1s, timeout: 1s, login_interval: 1s, login_timeout: 1s, jitter: 0s}\nendpoints:\n",
    );
    for i in 0..ENDPOINTS {
        yaml.push_str(&format!(
            "  - {{name: ep{i}, host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {}}}\n",
            imap.addr.port(),
            pki.ca_file.display()
        ));
    }
    yaml.push_str(&format!(
        "credentials:\n  - name: app\n    tenant: {}\n    client_id: {APP}\n    grant: client_credentials\n    client_secret_file: {}\n    token_url: {}\nmailboxes:\n",
        idp.tenant(),
        secret.display(),
        idp.token_url()
    ));
    for i in 0..MAILBOXES {
        yaml.push_str(&format!(
            "  - {{name: mb{i}, address: user{i}@example.test, credential: app, protocols: [imap], servers: {{imap: {server}}}}}\n"
        ));
    }
    let cfg = write(dir.path(), "c.yaml", &yaml);
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let t_ready = Instant::now();
    while e.get("/-/ready").0 != 200 {
        assert!(t_ready.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = |body: &str| -> Vec<f64> {
        let mut v: Vec<f64> = (0..ENDPOINTS)
            .map(|i| {
                sample(
                    body,
                    &format!("o365_endpoint_checks_total{{endpoint=\"ep{i}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .collect();
        v.extend((0..MAILBOXES).map(|i| {
            sample(
                body,
                &format!("o365_login_attempts_total{{mailbox=\"mb{i}\",protocol=\"imap\"}}"),
            )
            .unwrap_or(0.0)
        }));
        v
    };
    let before = runs(&e.get("/metrics").1);
    let t0 = Instant::now();
    let addr = e.addr.clone();
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                let mut bytes = 0usize;
                while t0.elapsed() < WINDOW {
                    let t = Instant::now();
                    match get(&addr, "/metrics") {
                        Ok((200, body)) if body.contains("o365_exporter_build_info") => {
                            bytes = body.len();
                            lat.push(t.elapsed());
                        }
                        Ok((s, body)) => errors.push(format!("HTTP {s}: {:.100}", body)),
                        Err(err) => errors.push(err.to_string()),
                    }
                }
                (lat, errors, bytes)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let mut size = 0;
    for s in scrapers {
        let (l, e, b) = s.join().expect("scraper thread");
        lat.extend(l);
        errors.extend(e);
        size = size.max(b);
    }
    let elapsed = t0.elapsed();
    let body = e.get("/metrics").1;
    let after = runs(&body);
    lat.sort();
    let per_check: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    let periods: Vec<f64> = per_check
        .iter()
        .map(|n| elapsed.as_secs_f64() / n.max(1.0))
        .collect();
    let mean_period = periods.iter().sum::<f64>() / periods.len() as f64;
    let worst_period = periods.iter().cloned().fold(0.0, f64::max);
    let failed_logins: u64 = body
        .lines()
        .filter(|l| l.starts_with("o365_login_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    let (hwm, _) = memory_kib(e.child.id());
    report!(
        "load: {} checks at a 1 s interval ({ENDPOINTS} TLS endpoints, {MAILBOXES} IMAP logins), \
         {SCRAPERS} scrapers for {:.1} s: {} scrapes ({:.0}/s) of {} kB, errors {}; latency p50 {:?} \
         p90 {:?} p99 {:?} max {:?}; schedule: mean period {:.3} s (slip {:+.0} ms), worst check \
         {:.3} s (slip {:+.0} ms); failed logins {failed_logins}; token requests {}; \
         peak memory {} MiB",
        ENDPOINTS + MAILBOXES,
        elapsed.as_secs_f64(),
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        size / 1000,
        errors.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        mean_period,
        (mean_period - 1.0) * 1000.0,
        worst_period,
        (worst_period - 1.0) * 1000.0,
        idp.stats().token_requests(),
        hwm / 1024,
    );
    assert!(errors.is_empty(), "failed scrapes: {errors:?}");
    assert!(lat.len() > 100, "only {} scrapes", lat.len());
    // every check kept running (no starvation), whatever the slip
    assert!(
        per_check.iter().all(|n| *n >= 5.0),
        "a check nearly stopped under load: {per_check:?}"
    );
    assert_eq!(
        idp.stats().token_requests(),
        1,
        "one cached token for all logins"
    );
    drop(imap);
}
