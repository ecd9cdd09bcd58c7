//! Real Prometheus and Alertmanager (Debian packages) on loopback for end-to-end tests, and a
//! webhook sink that records what Alertmanager delivers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::exporter::{free_port, request};

fn wait_ready(addr: &str, path: &str, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "{what} exited with {s}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if request(addr, "GET", path, &[])
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Percent-encode a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub struct Prometheus {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Prometheus {
    /// Scrape `target` every second, evaluate `rule_files` every second, send alerts to
    /// `alertmanager` (host:port) if given.
    pub fn start(
        dir: &Path,
        target: &str,
        rule_files: &[PathBuf],
        alertmanager: Option<&str>,
    ) -> Prometheus {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cfg = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !rule_files.is_empty() {
            cfg.push_str("rule_files:\n");
            for r in rule_files {
                cfg.push_str(&format!("  - {}\n", r.display()));
            }
        }
        if let Some(am) = alertmanager {
            cfg.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
            ));
        }
        cfg.push_str(&format!(
            "scrape_configs:\n  - job_name: o365-mail-exporter\n    static_configs:\n      - targets: ['{target}']\n"
        ));
        let cfg_path = dir.join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("prometheus runs (scripts/install-deps.sh installs it)");
        let mut p = Prometheus { child, addr, log };
        wait_ready(
            &p.addr.clone(),
            "/-/ready",
            &mut p.child,
            "prometheus",
            &p.log.clone(),
        );
        p
    }

    /// Instant query; returns the `data.result` array.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let (s, body) = request(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={}", urlencode(q)),
            &[],
        )
        .expect("query");
        assert_eq!(s, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alerts in state `firing` or `pending`.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (_, body) = request(&self.addr, "GET", "/api/v1/alerts", &[]).expect("alerts");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    pub fn firing(&self) -> Vec<serde_json::Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Alertmanager {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Alertmanager {
    /// Start with `config` (YAML text).
    pub fn start(dir: &Path, config: &str) -> Alertmanager {
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg_path = dir.join("alertmanager.yml");
        std::fs::write(&cfg_path, config).expect("write alertmanager.yml");
        let log = dir.join("alertmanager.log");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("alertmanager runs (scripts/install-deps.sh installs it)");
        let mut a = Alertmanager { child, addr, log };
        wait_ready(
            &a.addr.clone(),
            "/-/ready",
            &mut a.child,
            "alertmanager",
            &a.log.clone(),
        );
        a
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP server on loopback that stores every POST body it receives.
pub struct WebhookSink {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(10_000) {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // read headers, then Content-Length bytes (bounded to 4 MiB)
                let body = loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 4 << 20 {
                        break None;
                    }
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if rest.len() >= len {
                            break Some(rest[..len].to_string());
                        }
                    }
                };
                if let Some(body) = body {
                    if let Ok(mut v) = b.lock() {
                        v.push(body);
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        WebhookSink { url, bodies }
    }

    pub fn received(&self) -> Vec<String> {
        self.bodies.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
