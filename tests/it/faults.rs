//! Faults around the running exporter, each with what it must do and the figure it reports:
//!
//! - the token endpoint down for an hour while the scheduler's logins keep asking for tokens
//!   (tokio's paused clock, the fake identity provider with Microsoft's loop detection on):
//!   requests stay far below 15 per 5 minutes, logins say `token_unavailable` with the reason,
//!   and everything recovers within one backoff step of the end;
//! - the real mail servers (Dovecot, Postfix) killed and restarted while logins run: failures
//!   classified as the network faults they are, no check hangs, recovery right after;
//! - DNS failing (`.invalid` names) for endpoints, mail servers and the token endpoint;
//! - the state directory full (a 1 MiB tmpfs, filled) and then read-only: a clear
//!   `store_error`, the token file intact, metrics served, the rotated token saved once space is
//!   back and still the live one (strict rotation) after a restart;
//! - the configuration reloaded 100 times, valid and invalid in turn, while scraped flat out:
//!   0 failed scrapes and the reload metric right after each reload.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_mail_exporter::config;
use o365_mail_exporter::fake_idp::{App, Failure, FakeIdp, Injection, User};
use o365_mail_exporter::oauth::TokenStore;
use o365_mail_exporter::probe::Protocol;
use o365_mail_exporter::schedule::{Plan, Scheduler};
use o365_mail_exporter::state::{CheckKey, State};
use secrecy::ExposeSecret;

use crate::reliability::{
    delegated_credential_yaml, device_login, heavy, report, runtime, serve, store_refresh_token,
    test_pki, Behaviour, ALICE, IMAP_SCOPE, PUBLIC,
};
use crate::support::exporter::{get, request, sample, write, Exporter};
use crate::support::mailstack::MailStack;

const APP: &str = "66666666-2222-3333-4444-555555555555";
const SECRET: &str = "faults-test-secret";

// ---------------------------------------------------------------------------------------------
// The token endpoint down for an hour

/// Most requests within any `window` among cumulative `(time, count)` samples taken every
/// `step`: a window of requests is covered by samples at most `window + step` apart.
fn max_in_window(samples: &[(Duration, u64)], window: Duration, step: Duration) -> u64 {
    let mut worst = 0;
    for (i, (ti, ci)) in samples.iter().enumerate() {
        for (tj, cj) in &samples[i..] {
            if *tj - *ti > window + step {
                break;
            }
            worst = worst.max(cj - ci);
        }
    }
    worst
}

#[tokio::test(start_paused = true)]
async fn an_hour_long_token_outage_under_the_running_scheduler_stays_under_loop_detection() {
    const MAILBOXES: usize = 8;
    // The test wakes every TICK of virtual time and samples every STEP. The ticks bound how far
    // the paused clock can jump while loopback bytes (TLS records) are still in flight between
    // the probe and the in-process server: tokio advances to the next timer whenever its driver
    // sees no ready I/O, so without a timer close by, one in-flight record can cost a login its
    // 30 s deadline. With a timer every 500 ms that would take sixty idle polls in a row.
    const TICK: Duration = Duration::from_millis(500);
    const STEP: Duration = Duration::from_secs(2);
    const PER_STEP: usize = 4;
    let (pki, tls) = test_pki();
    let imap = serve(Behaviour::Imap, Some(tls)).await;
    let idp = FakeIdp::builder()
        .app(App::new(APP).secret(SECRET).roles(["IMAP.AccessAsApp"]))
        .access_token_lifetime(Duration::from_secs(600))
        .loop_detection(true)
        .start()
        .await
        .expect("fake IdP");
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", SECRET);
    let mut yaml = format!(
        "defaults: {{login_interval: 60s, login_timeout: 30s, jitter: 5s}}\nendpoints: []\ncredentials:\n  - name: app\n    tenant: {}\n    client_id: {APP}\n    grant: client_credentials\n    client_secret_file: {}\n    token_url: {}\nmailboxes:\n",
        idp.tenant(),
        secret.display(),
        idp.token_url()
    );
    for i in 0..MAILBOXES {
        yaml.push_str(&format!(
            "  - {{name: mb{i}, address: user{i}@example.test, credential: app, protocols: [imap], servers: {{imap: {{host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {}}}}}}}\n",
            imap.addr.port(),
            pki.ca_file.display()
        ));
    }
    let cfg = Arc::new(config::load_str(&yaml, "outage.yaml", dir.path()).expect("valid config"));
    let state = Arc::new(State::new());
    let scheduler = Scheduler::new(state.clone());
    scheduler.start(cfg.clone(), Plan::prepare(&cfg).expect("plan"));
    let keys: Vec<CheckKey> = (0..MAILBOXES)
        .map(|i| CheckKey::Login {
            mailbox: format!("mb{i}"),
            protocol: Protocol::Imap,
        })
        .collect();
    let reasons = || -> Vec<String> {
        keys.iter()
            .map(|k| {
                state
                    .check(k)
                    .map(|r| r.latest.reason.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect()
    };
    let token = || state.token("app").expect("token record");

    let t0 = tokio::time::Instant::now();
    let mut samples = vec![(Duration::ZERO, idp.stats().token_requests())];
    let mut ticks = 0usize;
    let mut tick = || {
        ticks += 1;
        if ticks % PER_STEP == 0 {
            let s = (t0.elapsed(), idp.stats().token_requests());
            samples.push(s);
        }
    };
    // healthy for three minutes: one token, every login succeeds
    for _ in 0..90 * PER_STEP {
        tokio::time::sleep(TICK).await;
        tick();
    }
    assert_eq!(token().last_reason, "ok", "{}", token().detail);
    assert!(
        reasons().iter().all(|r| r == "ok"),
        "{:?}",
        keys.iter()
            .filter_map(|k| state.check(k))
            .map(|r| format!(
                "{:?} {:?} {}\n{}",
                r.latest.reason,
                r.latest.failed_phase,
                r.latest.detail,
                r.latest.transcript.render_text()
            ))
            .collect::<Vec<_>>()
    );

    idp.inject(Injection::always(Failure::ServerError { status: 503 }));
    let outage = t0.elapsed();
    let mut during = None;
    for i in 0..1800 * PER_STEP {
        tokio::time::sleep(TICK).await;
        tick();
        if i == 900 * PER_STEP {
            // half an hour in: the cached token expired long ago
            during = Some((token(), reasons(), state.check(&keys[0]).expect("record")));
        }
    }
    idp.clear_injections();
    let outage_end = t0.elapsed();
    let mut recovered = None;
    for _ in 0..600 * PER_STEP {
        tokio::time::sleep(TICK).await;
        tick();
        if recovered.is_none() && token().last_reason == "ok" && reasons().iter().all(|r| r == "ok")
        {
            recovered = Some(t0.elapsed() - outage_end);
        }
    }
    scheduler.shutdown(Duration::from_secs(1)).await;

    let in_outage = |t: Duration| t > outage && t <= outage_end;
    let requests_in_outage = samples
        .windows(2)
        .filter(|w| in_outage(w[1].0))
        .map(|w| w[1].1 - w[0].1)
        .sum::<u64>();
    let worst = max_in_window(&samples, Duration::from_secs(300), STEP);
    let loop_detected = idp.stats().aadsts(50196);
    let (tok, login_reasons, login) = during.expect("sampled during the outage");
    report!(
        "outage: token endpoint down for 60 min under {MAILBOXES} logins a minute: {requests_in_outage} \
         token requests in the hour, at most {worst} in any 5 minutes (Microsoft's loop detection: \
         15), loop detection tripped {loop_detected} times; token and logins recovered {} after \
         the end; during it the token said `{}` and logins `{}`",
        recovered.map_or("never".to_string(), |d| format!("{} s", d.as_secs())),
        tok.last_reason,
        login_reasons[0]
    );
    assert!(worst <= 15, "{worst} requests within 5 minutes");
    assert!(worst <= 5, "backoff should keep bursts tiny, got {worst}");
    assert!(
        (5..=12).contains(&requests_in_outage),
        "{requests_in_outage} requests in the hour"
    );
    assert_eq!(loop_detected, 0);
    assert_eq!(tok.last_reason, "server_error", "{}", tok.detail);
    assert!(
        login_reasons.iter().all(|r| r == "token_unavailable"),
        "{login_reasons:?}"
    );
    assert!(
        login.latest.detail.contains("server_error") || login.latest.detail.contains("AADSTS"),
        "the login names why there is no token: {}",
        login.latest.detail
    );
    let recovered = recovered.expect("recovered within 20 minutes of the end");
    // the backoff is capped at 15 minutes; then one login interval plus jitter
    assert!(
        recovered <= Duration::from_secs(15 * 60 + 70),
        "recovery took {recovered:?}"
    );
    drop(imap);
}

// ---------------------------------------------------------------------------------------------
// The mail servers restarted mid-dialogue

/// Login failure counts by reason, summed over checks; the refusals of mailbox `refused` (whose
/// every login is refused on purpose) are left out.
fn login_failures(metrics: &str, refused: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let skip = format!("mailbox=\"{refused}\"");
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("o365_login_failures_total{"))
        .filter(|l| !(l.contains(&skip) && l.contains("reason=\"auth_rejected\"")))
    {
        let reason = l
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string();
        let n: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(reason).or_insert(0.0) += n;
    }
    out
}

fn all_logins(metrics: &str, checks: &[(String, &str)], pred: impl Fn(f64) -> bool) -> bool {
    checks.iter().all(|(mb, p)| {
        sample(
            metrics,
            &format!("o365_login_success{{mailbox=\"{mb}\",protocol=\"{p}\"}}"),
        )
        .is_some_and(&pred)
    })
}

/// The daemons of the mail stack in `dir` (Dovecot's and Postfix's masters and everything
/// below them), from their PID files and /proc.
fn stack_processes(dir: &Path) -> Vec<u32> {
    let read_pid = |p: &str| {
        std::fs::read_to_string(dir.join(p))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    let mut pids: Vec<u32> = [
        read_pid("run/dovecot.pid"),
        read_pid("postfix/spool/pid/master.pid"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let ppid = stat
                        .rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        pids.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    pids
}

/// Whether a TCP connection to one of `ports` on 127.0.0.1 is established (the kernel's table:
/// cheaper than `ss`, so the poll is tight).
fn dialogue_open(ports: &[u16]) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        state == "01"
            && local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .is_some_and(|p| ports.contains(&p))
    })
}

#[test]
fn mail_servers_killed_and_restarted_while_logins_run() {
    const RESTARTS: usize = 3;
    let users = ["alice", "bob", "carol"];
    let _heavy = heavy();
    let rt = runtime();
    let stack = rt.block_on(MailStack::start());
    let mut b = stack.fake_idp();
    for (i, u) in users.iter().enumerate() {
        b = b.app(
            App::new(&format!("7777777{i}-2222-3333-4444-555555555555"))
                .secret(SECRET)
                .roles(["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"])
                .app_token_upn(&format!("{u}@example.test")),
        );
    }
    let idp = rt.block_on(b.start()).expect("fake IdP");
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", SECRET);
    let ca = stack.ca_file.display().to_string();
    let mut yaml = format!(
        "defaults: {{login_interval: 2s, login_timeout: 2s, jitter: 1s}}\nendpoints: []\nservers:\n  imap: {{host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {ca}}}\n  pop3: {{host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {ca}}}\n  smtp: {{host: 127.0.0.1, port: {}, tls: starttls-smtp, server_name: localhost, ca_file: {ca}}}\ncredentials:\n",
        stack.imaps_port, stack.pop3s_port, stack.submission_port
    );
    for (i, u) in users.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{name: app-{u}, tenant: {}, client_id: 7777777{i}-2222-3333-4444-555555555555, grant: client_credentials, client_secret_file: {}, token_url: {}}}\n",
            idp.tenant(),
            secret.display(),
            idp.token_url()
        ));
    }
    yaml.push_str("mailboxes:\n");
    let mut checks = Vec::new();
    for u in users {
        yaml.push_str(&format!(
            "  - {{name: {u}, address: {u}@example.test, credential: app-{u}, protocols: [imap, pop3, smtp]}}\n"
        ));
        for p in ["imap", "pop3", "smtp"] {
            checks.push((u.to_string(), p));
        }
    }
    // alice's token for dave: refused every time, after Dovecot's fixed half second, which keeps
    // a dialogue open a quarter of the time for the kills to land in
    yaml.push_str("  - {name: dave, address: dave@example.test, credential: app-alice, protocols: [imap, pop3, smtp]}\n");
    let cfg = write(dir.path(), "c.yaml", &yaml);
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let wait_all_ok = |since: f64, within: Duration| -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            let m = e.get("/metrics").1;
            let fresh = checks.iter().all(|(mb, p)| {
                sample(
                    &m,
                    &format!(
                        "o365_login_last_success_timestamp_seconds{{mailbox=\"{mb}\",protocol=\"{p}\"}}"
                    ),
                )
                .is_some_and(|ts| ts > since)
            });
            if fresh && all_logins(&m, &checks, |v| v == 1.0) {
                return Ok(t.elapsed());
            }
            if t.elapsed() > within {
                return Err(m);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    if let Err(m) = wait_all_ok(0.0, Duration::from_secs(30)) {
        panic!("logins never all succeeded:\n{m}\n{}", stack.dovecot_log());
    }
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack");
    let ports = [stack.imaps_port, stack.pop3s_port, stack.submission_port];
    let mut recoveries = Vec::new();
    let mut slowest = Duration::ZERO;
    let before = login_failures(&e.get("/metrics").1, "dave");
    let mut open_at_kill = 0;
    for round in 0..RESTARTS {
        // kill every daemon at once while a login dialogue is open (or after 5 s regardless)
        let t = Instant::now();
        while !dialogue_open(&ports) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if dialogue_open(&ports) {
            open_at_kill += 1;
        }
        // SIGKILL to the whole stack in one go (stop.sh takes ~100 ms to find the processes,
        // longer than a login dialogue), then stop.sh to check that nothing is left
        let pids = stack_processes(&stack.dir);
        assert!(!pids.is_empty(), "no stack processes found");
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .status();
        let out = Command::new(scripts.join("stop.sh"))
            .arg("--fast")
            .arg(&stack.dir)
            .output()
            .expect("stop.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // every login runs (and fails) while the servers are down
        e.wait_metrics(Duration::from_secs(10), |m| {
            all_logins(m, &checks, |v| v == 0.0)
        });
        let restarted = now();
        let out = Command::new(scripts.join("start.sh"))
            .arg(&stack.dir)
            .args([
                stack.imaps_port.to_string(),
                stack.pop3s_port.to_string(),
                stack.submission_port.to_string(),
            ])
            .env("MAILSTACK_KEY_CACHE", "/tmp/o365-mailstack-key-cache")
            .output()
            .expect("start.sh");
        assert!(
            out.status.success(),
            "restart {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match wait_all_ok(restarted, Duration::from_secs(30)) {
            Ok(d) => recoveries.push(d),
            Err(m) => panic!(
                "no recovery after restart {round}:\n{m}\n{}",
                stack.dovecot_log()
            ),
        }
        for (mb, p) in &checks {
            if let Some((_, _, d)) =
                crate::reliability::transcript_facts(&e.addr, &format!("login:{mb}:{p}"))
            {
                slowest = slowest.max(d);
            }
        }
    }
    let metrics = e.get("/metrics").1;
    let after = login_failures(&metrics, "dave");
    let new: std::collections::BTreeMap<&String, f64> = after
        .iter()
        .map(|(r, n)| (r, n - before.get(r).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    report!(
        "mail servers: {RESTARTS} kill-and-restart rounds under {} logins every 2 s ({open_at_kill} kills with a dialogue open): failures by reason {new:?}; \
         recovery after each restart {recoveries:?}; slowest login seen {slowest:?} (deadline 2 s)",
        checks.len() + 3
    );
    let allowed = [
        "connection_closed",
        "connect_refused",
        "connect_error",
        "timeout",
        "tls_handshake",
        "mailbox_unavailable",
    ];
    for r in new.keys() {
        assert!(
            allowed.contains(&r.as_str()),
            "a server crash was classified as {r}: {new:?}"
        );
    }
    assert!(new.contains_key(&"connect_refused".to_string()), "{new:?}");
    assert!(slowest <= Duration::from_millis(2500), "{slowest:?}");
}

// ---------------------------------------------------------------------------------------------
// DNS failing

#[test]
fn unresolvable_names_fail_fast_with_their_reason_everywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", SECRET);
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "defaults: {{interval: 2s, timeout: 2s, login_interval: 2s, login_timeout: 2s, jitter: 0s}}\nendpoints:\n  - {{name: imap, host: outlook.office365.invalid, port: 993}}\n  - {{name: smtp, host: smtp.office365.invalid, port: 587, tls: starttls-smtp}}\nservers:\n  imap: {{host: outlook.office365.invalid}}\n  smtp: {{host: smtp.office365.invalid}}\ncredentials:\n  - name: app\n    tenant: contoso.onmicrosoft.com\n    client_id: {APP}\n    grant: client_credentials\n    client_secret_file: {}\n    authority: https://login.microsoftonline.invalid\n    timeout: 2s\nmailboxes:\n  - {{name: support, address: support@contoso.com, credential: app, protocols: [imap, smtp]}}\n",
            secret.display()
        ),
    );
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let m = e.wait_metrics(Duration::from_secs(20), |m| {
        ["imap", "smtp"].iter().all(|n| {
            sample(
                m,
                &format!("o365_endpoint_checks_total{{endpoint=\"{n}\"}}"),
            )
            .unwrap_or(0.0)
                >= 3.0
        }) && ["imap", "smtp"].iter().all(|p| {
            sample(
                m,
                &format!("o365_login_attempts_total{{mailbox=\"support\",protocol=\"{p}\"}}"),
            )
            .unwrap_or(0.0)
                >= 2.0
        })
    });
    for n in ["imap", "smtp"] {
        assert!(
            m.contains(&format!(
                "o365_endpoint_reason{{endpoint=\"{n}\",reason=\"dns\"}} 1"
            )),
            "{m}"
        );
        let (_, phase, d) = crate::reliability::transcript_facts(&e.addr, &format!("endpoint:{n}"))
            .expect("transcript");
        assert_eq!(phase, "dns");
        assert!(d < Duration::from_millis(2500), "{d:?}");
    }
    for p in ["imap", "smtp"] {
        assert!(
            m.contains(&format!(
                "o365_login_reason{{mailbox=\"support\",protocol=\"{p}\",reason=\"dns\"}} 1"
            )),
            "{m}"
        );
    }
    assert!(
        m.contains("o365_token_reason{credential=\"app\",reason=\"network\"} 1"),
        "{m}"
    );
    let (_, page) = e.get("/");
    assert!(page.contains("dns"), "{page}");
    report!("dns: endpoints, logins and the token endpoint on .invalid names: dns / dns / network, each within its deadline");
}

// ---------------------------------------------------------------------------------------------
// The state directory full, then read-only

/// A 1 MiB tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Fill the filesystem of `dir` up to the last byte.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.write_all(&[0u8]);
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_then_read_only_state_directory_is_a_clear_error_and_loses_nothing() {
    const CRED: &str = "delegated";
    let _heavy = heavy();
    let tmpfs = match Tmpfs::mount() {
        Ok(t) => t,
        Err(e) => panic!(
            "this test mounts a 1 MiB tmpfs (root with CAP_SYS_ADMIN, as scripts/test.sh runs): {e}"
        ),
    };
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
    let first = rt.block_on(device_login(
        &idp,
        PUBLIC,
        &format!("{IMAP_SCOPE} offline_access"),
    ));
    let state_dir = tmpfs.path().join("state");
    store_refresh_token(
        &state_dir,
        CRED,
        PUBLIC,
        first.json["refresh_token"].as_str().expect("refresh token"),
    );
    let store = TokenStore::new(&state_dir);
    let stored = || {
        store
            .load(CRED)
            .expect("the token file stays readable")
            .expect("a token")
            .refresh_token
            .expose_secret()
            .to_string()
    };
    let entries = || {
        std::fs::read_dir(store.dir())
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "state_dir: {}\nendpoints: []\ncredentials:\n{}",
            state_dir.display(),
            delegated_credential_yaml(CRED, &idp, "    interval: 1s\n")
        ),
    );
    let reason_is = |m: &str, r: &str| {
        m.contains(&format!(
            "o365_token_reason{{credential=\"{CRED}\",reason=\"{r}\"}} 1"
        ))
    };

    for mode in ["full", "read-only"] {
        let old = stored();
        let filler = if mode == "full" {
            Some(fill(tmpfs.path()))
        } else {
            tmpfs.remount("ro");
            None
        };
        let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
        let m = e.wait_metrics(Duration::from_secs(15), |m| reason_is(m, "store_error"));
        // served, with the reason and a detail that says what and where
        assert_eq!(e.get("/-/healthy").0, 200);
        let (_, page) = e.get("/");
        let why = if mode == "full" {
            "No space left on device"
        } else {
            "Read-only file system"
        };
        assert!(
            page.contains(why) && page.contains("kept in memory"),
            "{mode}: the status page explains: {page}"
        );
        assert!(e.stderr().contains(why), "{mode}: {}", e.stderr());
        // nothing torn, nothing left over: the old token is still there, alone
        assert_eq!(stored(), old, "{mode}: the token file is untouched");
        assert_eq!(entries(), 1, "{mode}: no temporary files");
        assert!(
            sample(
                &m,
                &format!("o365_token_refresh_success{{credential=\"{CRED}\"}}")
            ) == Some(0.0)
        );
        // room again: the rotated token is saved within a tick or two
        match &filler {
            Some(f) => std::fs::remove_file(f).expect("free the space"),
            None => tmpfs.remount("rw"),
        }
        let t = Instant::now();
        e.wait_metrics(Duration::from_secs(10), |m| reason_is(m, "ok"));
        let saved_after = t.elapsed();
        assert_ne!(stored(), old, "{mode}: the rotated token is saved");
        assert_eq!(entries(), 1);
        report!(
            "state dir {mode}: store_error with \"{why}\", token file intact, metrics served; saved {saved_after:?} after the directory was writable again"
        );
        drop(e);
    }
    // the saved token is the live one (strict rotation): a new process refreshes with it
    let before = idp
        .stats()
        .count(|r| r.grant == "refresh_token" && r.outcome == "ok");
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    e.wait_metrics(Duration::from_secs(10), |m| reason_is(m, "ok"));
    assert_eq!(
        idp.stats()
            .count(|r| r.grant == "refresh_token" && r.outcome != "ok"),
        0
    );
    assert!(
        idp.stats()
            .count(|r| r.grant == "refresh_token" && r.outcome == "ok")
            > before
    );
}

// ---------------------------------------------------------------------------------------------
// A reload storm under scrapes

#[test]
fn a_hundred_reloads_valid_and_invalid_in_turn_while_scraped() {
    const RELOADS: usize = 100;
    let _heavy = heavy();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.yaml");
    let valid = |n: usize| {
        let mut s = String::from("defaults: {interval: 1s, timeout: 1s, jitter: 0s}\nendpoints:\n");
        for i in 0..(1 + n % 4) {
            s.push_str(&format!(
                "  - {{name: e{i}, host: 127.0.0.1, port: 9, tls: none}}\n"
            ));
        }
        s
    };
    let invalid =
        "defaults: {interval: soon}\nendpoints:\n  - {name: e0, host: 127.0.0.1, port: 99999}\n";
    let put = |text: &str| {
        let tmp = dir.path().join("c.yaml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &cfg).expect("rename");
    };
    put(&valid(0));
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (e.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match get(&addr, "/metrics") {
                        Ok((200, b))
                            if b.contains("o365_exporter_config_last_reload_successful") =>
                        {
                            ok += 1
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut wrong = Vec::new();
    for i in 0..RELOADS {
        let good = i % 2 == 0;
        put(if good { valid(i) } else { invalid.to_string() }.as_str());
        let (status, body) =
            request(&e.addr, "POST", "/-/reload", &[]).expect("reload request answered");
        let (_, m) = get(&e.addr, "/metrics").expect("scrape after reload");
        let flag = sample(&m, "o365_exporter_config_last_reload_successful");
        let want = if good {
            (200, Some(1.0))
        } else {
            (500, Some(0.0))
        };
        if (status, flag) != want {
            wrong.push(format!(
                "reload {i}: HTTP {status}, metric {flag:?}: {body:.200}"
            ));
        }
        if good {
            // the new configuration is the one served
            let n = 1 + i % 4;
            let has = |k: usize| m.contains(&format!("o365_endpoint_info{{endpoint=\"e{k}\""));
            if !has(n - 1) || has(n) {
                wrong.push(format!("reload {i}: not {n} endpoints"));
            }
        } else if !body.contains("defaults.interval") || !body.contains("port") {
            wrong.push(format!("reload {i}: problems not named: {body:.300}"));
        }
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut scrapes, mut failed) = (0, Vec::new());
    for s in scrapers {
        let (ok, f) = s.join().expect("scraper");
        scrapes += ok;
        failed.extend(f);
    }
    report!(
        "reload storm: {RELOADS} reloads (valid and invalid in turn) in {:.1} s under {} scrapes: \
         failed scrapes {}, wrong reload answers or metrics {}",
        took.as_secs_f64(),
        scrapes,
        failed.len(),
        wrong.len()
    );
    assert!(failed.is_empty(), "failed scrapes: {failed:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(scrapes >= RELOADS, "only {scrapes} scrapes");
    assert_eq!(e.get("/-/healthy").0, 200);
}
