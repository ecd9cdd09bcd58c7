//! The exporter as a child process, for tests that need the real binary (flags, signals, HTTP).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_o365-mail-exporter")
}

/// A running exporter; killed on drop.
pub struct Exporter {
    pub child: Child,
    pub addr: String,
    pub stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Exporter {
    /// Start with `args` (plus `--web.listen-address` on a free loopback port unless given) and
    /// wait until `/-/healthy` answers.
    pub fn start(args: &[&str]) -> Exporter {
        Self::spawn(args, false)
    }

    /// Start with no arguments at all (the README's command): it listens on `:10030`.
    pub fn start_without_arguments() -> Exporter {
        Self::spawn(&[], true)
    }

    fn spawn(args: &[&str], exact: bool) -> Exporter {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(bin());
        cmd.args(args).stdout(Stdio::null()).stderr(stderr);
        let addr = if exact {
            "127.0.0.1:10030".to_string()
        } else if args.iter().any(|a| a.starts_with("--web.listen-address")) {
            let i = args
                .iter()
                .position(|a| a.starts_with("--web.listen-address"))
                .unwrap_or(0);
            let a = args[i];
            let v = a
                .split_once('=')
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| args[i + 1].to_string());
            v.replace("0.0.0.0", "127.0.0.1")
                .trim_start_matches(':')
                .to_string()
        } else {
            let a = format!("127.0.0.1:{}", free_port());
            cmd.arg(format!("--web.listen-address={a}"));
            a
        };
        let addr = if addr.contains(':') {
            addr
        } else {
            format!("127.0.0.1:{addr}")
        };
        let child = cmd.spawn().expect("exporter starts");
        let mut e = Exporter {
            child,
            addr,
            stderr_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("exporter exited early with {status}: {}", e.stderr());
            }
            if get(&e.addr, "/-/healthy")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not become healthy: {}",
                e.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        get(&self.addr, path).unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        request(&self.addr, "POST", path, &[]).unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Poll `/metrics` until `pred` holds (bounded by `within`); returns the last body.
    pub fn wait_metrics(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get("/metrics");
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {within:?}; last scrape:\n{body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 GET over a raw socket (bounded in time), returning status and body.
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, &[])
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.take(16 * 1024 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:.200}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Value of the first sample line starting with `prefix` (name + labels).
pub fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Run `promtool check metrics` on `text`; Err with its output when it complains.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool not runnable ({e}); run scripts/install-deps.sh"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}
