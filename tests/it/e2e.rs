//! The whole chain, every part a real process on loopback: the real mail stack (Dovecot,
//! Postfix), the fake identity provider as its own process, the exporter, Prometheus loading the
//! shipped rules (a copy with minutes scaled to seconds: the only change) and Alertmanager with the
//! shipped example configuration (receivers pointed at a webhook sink, waits shortened).
//!
//! Healthy first: logins, tokens and endpoints are green in Prometheus and nothing fires. Then the
//! identity provider answers AADSTS700082 and one mailbox breaks: the token alert fires and its
//! page reaches the webhook sink through Alertmanager; the mailbox alert fires.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::exporter::{promtool_check_metrics, sample, write, Exporter};
use crate::support::mailstack::MailStack;
use crate::support::promstack::{Alertmanager, Prometheus, WebhookSink};

const APP_ALICE: &str = "a11ce000-0000-4000-8000-000000000001";
const APP_CAROL: &str = "ca401000-0000-4000-8000-000000000002";

struct Idp {
    child: Child,
    url: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp(dir: &Path, stack: &MailStack) -> Idp {
    let cfg = write(
        dir,
        "idp.yaml",
        &format!(
            "tenant: {tenant}\naudience: {aud}\naccess_token_lifetime: 150s\napps:\n  - client_id: {APP_ALICE}\n    secrets: [{{ value: \"e2e-secret-alice\" }}]\n    roles: [IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp]\n    app_token_upn: alice@example.test\n  - client_id: {APP_CAROL}\n    secrets: [{{ value: \"e2e-secret-carol\" }}]\n    roles: [IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp]\n    app_token_upn: carol@example.test\n",
            tenant = stack.tenant,
            aud = stack.audience
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_o365-fake-idp"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--hs256-secret-file")
        .arg(&stack.hs256_secret_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("o365-fake-idp starts");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout");
        let mut r = std::io::BufReader::new(out);
        r.read_line(&mut line).expect("fake idp prints its URL");
    }
    Idp {
        child,
        url: line.trim().to_string(),
    }
}

/// The shipped rules with minutes scaled to seconds (windows, `for:`, `N * 60`).
fn fast_rules(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/o365-mail-exporter.rules.yml");
    let out = Command::new("sed")
        .args([
            "-E",
            r"s/\[([0-9]+)m\]/[\1s]/g; s/for: ([0-9]+)m/for: \1s/; s/offset ([0-9]+)m/offset \1s/g; s/([0-9]+) \* 60\b/\1/g",
        ])
        .arg(&src)
        .output()
        .expect("sed");
    assert!(out.status.success());
    let p = dir.join("rules.yml");
    std::fs::write(&p, out.stdout).expect("write rules");
    p
}

fn alertmanager_config(sink: &str) -> String {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/alertmanager.example.yml"),
    )
    .expect("example");
    src.replace(
        "http://127.0.0.1:9097/o365-mail-exporter/page",
        &format!("{sink}/page"),
    )
    .replace(
        "http://127.0.0.1:9098/o365-mail-exporter/warning",
        &format!("{sink}/warning"),
    )
    .replace("group_wait: 30s", "group_wait: 1s")
    .replace("group_interval: 5m", "group_interval: 1s")
}

fn values(p: &Prometheus, q: &str) -> Vec<(serde_json::Value, f64)> {
    p.query(q)
        .into_iter()
        .map(|r| {
            let v = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), v)
        })
        .collect()
}

fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match cond() {
            Ok(()) => return,
            Err(why) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: {why}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_then_token_page_and_mailbox_alert_end_to_end() {
    let stack = MailStack::start().await;
    stack.add_mail("alice@example.test", 3);
    stack.add_mail("carol@example.test", 1);
    let dir = tempfile::tempdir().expect("tmp");
    let idp = start_idp(dir.path(), &stack);
    let idp_port = idp
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .expect("port");
    write(dir.path(), "alice.secret", "e2e-secret-alice\n");
    write(dir.path(), "carol.secret", "e2e-secret-carol\n");
    let ca = stack.ca_file.display().to_string();
    let cfg = write(
        dir.path(),
        "exporter.yaml",
        &format!(
            "defaults:
  interval: 3s
  timeout: 3s
  jitter: 0s
  login_interval: 3s
  login_timeout: 3s
  token_interval: 1s
state_dir: {state}
endpoints:
  - {{name: login, host: 127.0.0.1, port: {idp_port}, tls: none}}
  - {{name: imap, host: 127.0.0.1, port: {imaps}, tls: implicit, ca_file: {ca}}}
  - {{name: pop3, host: 127.0.0.1, port: {pop3s}, tls: implicit, ca_file: {ca}}}
  - {{name: smtp, host: 127.0.0.1, port: {subm}, tls: starttls-smtp, ca_file: {ca}}}
servers:
  imap: {{host: 127.0.0.1, port: {imaps}, ca_file: {ca}}}
  pop3: {{host: 127.0.0.1, port: {pop3s}, ca_file: {ca}}}
  smtp: {{host: 127.0.0.1, port: {subm}, ca_file: {ca}}}
credentials:
  - name: app-alice
    tenant: {tenant}
    client_id: {APP_ALICE}
    grant: client_credentials
    authority: {idp}
    client_secret_file: alice.secret
    refresh_ahead: 130s
  - name: app-carol
    tenant: {tenant}
    client_id: {APP_CAROL}
    grant: client_credentials
    authority: {idp}
    client_secret_file: carol.secret
    refresh_ahead: 130s
mailboxes:
  - {{name: alice, address: alice@example.test, credential: app-alice, protocols: [imap, pop3, smtp]}}
  - {{name: carol, address: carol@example.test, credential: app-carol, protocols: [imap, pop3, smtp]}}
",
            state = dir.path().join("state").display(),
            imaps = stack.imaps_port,
            pop3s = stack.pop3s_port,
            subm = stack.submission_port,
            tenant = stack.tenant,
            idp = idp.url.trim_end_matches('/'),
        ),
    );
    let exporter = Exporter::start(&[
        "--config.file",
        cfg.to_str().expect("utf8"),
        "--log.level",
        "debug",
    ]);
    let sink = WebhookSink::start();
    let sink_base = sink.url.trim_end_matches("/hook").to_string();
    let am = Alertmanager::start(dir.path(), &alertmanager_config(&sink_base));
    let rules = fast_rules(dir.path());
    let prom = Prometheus::start(dir.path(), &exporter.addr, &[rules], Some(&am.addr));

    // --- healthy ---
    wait_for(
        Duration::from_secs(90),
        "all logins, tokens and endpoints healthy in Prometheus",
        || {
            let logins = values(&prom, "o365_login_success");
            let tokens = values(&prom, "o365_token_refresh_success");
            let eps = values(&prom, "o365_endpoint_up");
            let ok = |v: &Vec<(serde_json::Value, f64)>, n: usize| {
                v.len() == n && v.iter().all(|(_, x)| *x == 1.0)
            };
            if ok(&logins, 6) && ok(&tokens, 2) && ok(&eps, 4) {
                Ok(())
            } else {
                Err(format!(
                    "logins {logins:?}\ntokens {tokens:?}\nendpoints {eps:?}\nexporter log:\n{}",
                    exporter.stderr()
                ))
            }
        },
    );
    let (_, body) = exporter.get("/metrics");
    assert_eq!(
        sample(&body, "o365_mailbox_messages{mailbox=\"alice\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "o365_mailbox_messages{mailbox=\"carol\"}"),
        Some(1.0),
        "{body}"
    );
    for proto in ["imap", "pop3", "smtp"] {
        let auth = sample(&body, &format!("o365_login_phase_duration_seconds{{mailbox=\"alice\",protocol=\"{proto}\",phase=\"auth\"}}"));
        assert!(
            auth.unwrap_or(0.0) > 0.0,
            "{proto} auth phase timed:\n{body}"
        );
        let tls = sample(&body, &format!("o365_login_phase_duration_seconds{{mailbox=\"alice\",protocol=\"{proto}\",phase=\"tls\"}}"));
        assert!(tls.unwrap_or(0.0) > 0.0, "{proto} tls phase timed");
    }
    if let Err(c) = promtool_check_metrics(&body) {
        panic!("promtool check metrics with logins and tokens:\n{c}");
    }
    // stays quiet while healthy
    std::thread::sleep(Duration::from_secs(8));
    let firing = prom.firing();
    assert!(firing.is_empty(), "alerts fire while healthy: {firing:#?}");
    assert!(
        sink.received().is_empty(),
        "pages while healthy: {:?}",
        sink.received()
    );

    // --- break: AADSTS700082 from the identity provider, one mailbox unusable ---
    inject(idp_port, r#"{"failure":"refresh_token_expired"}"#);
    let carol_home = stack.dir.join("mail/carol@example.test");
    set_mode(&carol_home, 0o000);

    wait_for(
        Duration::from_secs(150),
        "the token alert and the carol mailbox alert firing",
        || {
            let firing = prom.firing();
            let names: Vec<String> = firing
                .iter()
                .map(|a| {
                    format!(
                        "{}{{credential={},mailbox={},protocol={},reason={}}}",
                        a["labels"]["alertname"],
                        a["labels"]["credential"],
                        a["labels"]["mailbox"],
                        a["labels"]["protocol"],
                        a["labels"]["reason"]
                    )
                })
                .collect();
            let token = firing.iter().any(|a| {
                a["labels"]["alertname"] == "O365TokenRefreshFailing"
                    && a["labels"]["reason"] == "refresh_token_expired"
            });
            let mailbox = firing.iter().any(|a| {
                a["labels"]["alertname"] == "O365MailboxLoginFailing"
                    && a["labels"]["mailbox"] == "carol"
            });
            if token && mailbox {
                Ok(())
            } else {
                Err(format!("firing: {names:?}"))
            }
        },
    );
    let alice_ok = values(&prom, "o365_login_success{mailbox=\"alice\"}");
    assert!(
        alice_ok.iter().all(|(_, v)| *v == 1.0),
        "alice keeps working: {alice_ok:?}"
    );
    wait_for(
        Duration::from_secs(60),
        "the token page at the webhook sink",
        || {
            let got = sink.received();
            if got.iter().any(|b| {
                b.contains("O365TokenRefreshFailing") && b.contains("\"receiver\":\"pager\"")
            }) {
                Ok(())
            } else {
                Err(format!("received: {got:?}"))
            }
        },
    );
    let page = sink
        .received()
        .into_iter()
        .find(|b| b.contains("O365TokenRefreshFailing"))
        .unwrap_or_default();
    assert!(page.contains("refresh_token_expired"), "{page}");
    assert!(
        page.contains("runbooks.md#o365tokenrefreshfailing"),
        "{page}"
    );
    assert!(!page.contains("e2e-secret"), "secret in a page: {page}");
    set_mode(&carol_home, 0o755);
    drop(prom);
    drop(am);
}

fn inject(port: u16, json: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = format!(
        "POST /_fake/inject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "inject answered: {out}");
}

#[cfg(unix)]
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
