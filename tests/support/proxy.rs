//! Outbound-proxy helpers: a private, real tinyproxy (Debian's 1.11, installed by
//! `scripts/install-deps.sh`) on 127.0.0.1 with its configuration, log and pid file in a temp
//! directory; a TLS front that puts HTTPS in front of a plain-HTTP server (the fake identity
//! platform only speaks HTTP, a real token endpoint only HTTPS, and a proxy treats the two
//! differently: CONNECT versus forwarding); and hostile "proxies" that answer CONNECT with garbage,
//! endless headers or nothing at all.
//!
//! tinyproxy runs in the foreground (`-d`) as a child killed on drop; it never becomes a system
//! service. A free port is found by binding and releasing one; if another test takes it in
//! between, tinyproxy exits and the start is retried (bounded).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How a private tinyproxy is set up.
#[derive(Clone, Debug, Default)]
pub struct TinyproxyConf {
    /// Ports CONNECT may reach (tinyproxy answers `403 Access violation` to any other).
    pub connect_ports: Vec<u16>,
    /// `BasicAuth user password`: every request needs these credentials (else 407).
    pub basic_auth: Option<(String, String)>,
}

/// A running tinyproxy. Dropping it kills the process.
pub struct Tinyproxy {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Tinyproxy {
    pub async fn start(conf: TinyproxyConf) -> Tinyproxy {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&conf).await {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("tinyproxy did not start (scripts/install-deps.sh installs it): {last}");
    }

    async fn try_start(conf: &TinyproxyConf) -> Result<Tinyproxy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = crate::support::tls_server::refused_port();
        let log = dir.path().join("tinyproxy.log");
        let mut text = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 10\nMaxClients 32\nAllow 127.0.0.1\n\
             LogFile \"{}\"\nLogLevel Info\nPidFile \"{}\"\nDisableViaHeader Yes\n",
            log.display(),
            dir.path().join("tinyproxy.pid").display()
        );
        for p in &conf.connect_ports {
            text.push_str(&format!("ConnectPort {p}\n"));
        }
        if let Some((u, p)) = &conf.basic_auth {
            text.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let cfg = dir.path().join("tinyproxy.conf");
        std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn tinyproxy: {e}"))?;
        // ready when it accepts a connection; bounded: 100 polls of 20 ms
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "tinyproxy exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Tinyproxy { port, dir, child });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill().await;
        Err("tinyproxy did not listen within 2 s".into())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait (bounded: `within`, polling every 20 ms) until the log has a line containing
    /// `needle` (tinyproxy writes its log lines as it handles requests).
    pub async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let polls = (within.as_millis() / 20).max(1);
        for _ in 0..polls {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Most connections a helper server here accepts.
const MAX_CONNECTIONS: usize = 32;
/// Per-read deadline of the helper servers.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A helper server on 127.0.0.1; dropping it stops it and its connections.
pub struct Helper {
    pub addr: SocketAddr,
    /// Bytes the server wrote, per connection, once each connection ended.
    pub written: Arc<std::sync::Mutex<Vec<usize>>>,
    task: JoinHandle<()>,
}

impl Helper {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(handler: F) -> Helper
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let w = written.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        for _ in 0..MAX_CONNECTIONS {
            let Ok((s, _)) = listener.accept().await else {
                break;
            };
            let fut = handler(s);
            let w = w.clone();
            conns.spawn(async move {
                let n = fut.await;
                w.lock().expect("lock").push(n);
            });
        }
        while conns.join_next().await.is_some() {}
    });
    Helper {
        addr,
        written,
        task,
    }
}

/// HTTPS on 127.0.0.1 (with `tls`'s certificate) relaying each connection's plain bytes to
/// `backend`: the fake identity platform as a real token endpoint is reached, by CONNECT.
pub async fn tls_front(backend: SocketAddr, tls: Arc<rustls::ServerConfig>) -> Helper {
    serve(move |s| {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
        async move {
            let Ok(Ok(mut front)) = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(s)).await
            else {
                return 0;
            };
            let Ok(mut back) = TcpStream::connect(backend).await else {
                return 0;
            };
            let copied = tokio::time::timeout(
                READ_TIMEOUT,
                tokio::io::copy_bidirectional(&mut front, &mut back),
            )
            .await;
            match copied {
                Ok(Ok((_, to_client))) => usize::try_from(to_client).unwrap_or(usize::MAX),
                _ => 0,
            }
        }
    })
    .await
}

/// How a hostile "proxy" answers a CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// Not HTTP at all (an SMTP banner), then keeps the connection open.
    Garbage,
    /// `HTTP/1.1 200` and then header lines without end.
    EndlessHeaders,
    /// `HTTP/1.1 200 ` and then one header line that never ends.
    EndlessLine,
    /// Reads the request and never answers.
    Silent,
    /// `200 Connection established` followed at once by bytes the server never sent.
    ExtraBytes,
}

/// Most bytes a hostile proxy writes before giving up on the client stopping it.
pub const HOSTILE_CAP: usize = 64 * 1024 * 1024;

/// A hostile proxy on 127.0.0.1. It reads the client's request head (bounded) first.
pub async fn hostile(kind: Hostile) -> Helper {
    serve(move |mut s| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return 0,
            }
        }
        let mut written = 0usize;
        match kind {
            Hostile::Garbage => {
                put(&mut s, b"220 mx.test.invalid ESMTP ready\r\n", &mut written).await;
                let _ = tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await;
            }
            Hostile::Silent => {
                let _ = tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await;
            }
            Hostile::ExtraBytes => {
                put(
                    &mut s,
                    b"HTTP/1.1 200 Connection established\r\n\r\n* OK injected\r\n",
                    &mut written,
                )
                .await;
                let _ = tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await;
            }
            Hostile::EndlessHeaders | Hostile::EndlessLine => {
                let (first, chunk): (&[u8], Vec<u8>) = if kind == Hostile::EndlessLine {
                    (b"HTTP/1.1 200 OK\r\nX-Pad: ", vec![b'x'; 4096])
                } else {
                    (
                        b"HTTP/1.1 200 OK\r\n",
                        b"X-Pad: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".repeat(64),
                    )
                };
                let mut ok = put(&mut s, first, &mut written).await;
                while ok && written < HOSTILE_CAP {
                    ok = put(&mut s, &chunk, &mut written).await;
                }
            }
        }
        written
    })
    .await
}

/// Write `data` within the read deadline; false when the client went away or stopped reading.
async fn put(s: &mut TcpStream, data: &[u8], written: &mut usize) -> bool {
    match tokio::time::timeout(READ_TIMEOUT, s.write_all(data)).await {
        Ok(Ok(())) => {
            *written += data.len();
            true
        }
        _ => false,
    }
}
