//! The exporter binary end to end on loopback: flags, the embedded default, `/metrics` checked by
//! promtool, the status page, readiness, reload (HTTP and SIGHUP) and graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::exporter::{bin, free_port, promtool_check_metrics, sample, write, Exporter};

/// A config whose endpoints fail fast and deterministically on loopback: a closed port and an
/// unresolvable name.
fn quick_config(port: u16) -> String {
    format!(
        "defaults:\n  interval: 1s\n  timeout: 1s\n  jitter: 0s\nendpoints:\n  - name: closed\n    host: 127.0.0.1\n    port: {port}\n    tls: implicit\n  - name: nowhere\n    host: nothing.invalid\n    port: 993\n"
    )
}

fn closed_port() -> u16 {
    // bound and released: nothing listens there afterwards
    free_port()
}

#[test]
fn no_arguments_serves_the_four_public_endpoints_on_10030() {
    // Exactly the README's command: no arguments. Offline, the endpoints report their failure.
    let e = Exporter::start_without_arguments();
    let body = e.wait_metrics(Duration::from_secs(30), |b| {
        ["login", "imap", "pop3", "smtp"].iter().all(|n| {
            sample(
                b,
                &format!("o365_endpoint_checks_total{{endpoint=\"{n}\"}}"),
            )
            .unwrap_or(0.0)
                >= 1.0
        })
    });
    for n in ["login", "imap", "pop3", "smtp"] {
        assert!(
            body.contains(&format!("o365_endpoint_up{{endpoint=\"{n}\"}}")),
            "{n} missing:\n{body}"
        );
        // whatever this machine's network does, the reason is a real one, not "pending"
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("o365_endpoint_reason{{endpoint=\"{n}\"")))
            .expect("reason series");
        assert!(!line.contains("reason=\"pending\""), "{line}");
    }
    assert!(body.contains("host=\"login.microsoftonline.com\",port=\"443\",tls=\"implicit\""));
    assert!(body.contains("host=\"smtp.office365.com\",port=\"587\",tls=\"starttls-smtp\""));
}

#[test]
fn default_listen_address_is_10030() {
    let help = Command::new(bin()).arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("[default: :10030]"), "{text}");
    assert!(text.contains("--config.file"), "{text}");
    assert!(text.contains("--web.telemetry-path"), "{text}");
}

#[test]
fn live_metrics_pass_promtool_and_every_series_exists_from_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = closed_port();
    let cfg = write(dir.path(), "c.yaml", &quick_config(port));
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    // first scrape: the configured series are there already
    let (status, first) = e.get("/metrics");
    assert_eq!(status, 200);
    for n in ["closed", "nowhere"] {
        assert!(
            first.contains(&format!("o365_endpoint_up{{endpoint=\"{n}\"}}")),
            "{first}"
        );
        assert!(
            first.contains(&format!("o365_endpoint_checks_total{{endpoint=\"{n}\"}}")),
            "{first}"
        );
    }
    let body = e.wait_metrics(Duration::from_secs(10), |b| {
        b.contains("o365_endpoint_reason{endpoint=\"closed\",reason=\"connect_refused\"} 1")
            && b.contains("o365_endpoint_reason{endpoint=\"nowhere\",reason=\"dns\"} 1")
    });
    if let Err(complaints) = promtool_check_metrics(&body) {
        panic!("promtool check metrics complained:\n{complaints}\n---\n{body}");
    }
    // OpenMetrics when asked
    let (s, om) = crate::support::exporter::request(
        &e.addr,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .expect("scrape");
    assert_eq!(s, 200);
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
}

#[test]
fn status_page_transcripts_and_readiness() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(dir.path(), "c.yaml", &quick_config(closed_port()));
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    e.wait_metrics(Duration::from_secs(10), |b| {
        sample(b, "o365_endpoint_checks_total{endpoint=\"nowhere\"}").unwrap_or(0.0) >= 1.0
            && sample(b, "o365_endpoint_checks_total{endpoint=\"closed\"}").unwrap_or(0.0) >= 1.0
    });
    assert_eq!(e.get("/-/ready").0, 200);
    assert_eq!(e.get("/-/healthy").0, 200);
    let (s, page) = e.get("/");
    assert_eq!(s, 200);
    assert!(
        page.contains("connect_refused") && page.contains("dns"),
        "{page}"
    );
    assert!(page.contains("href=\"/checks/endpoint:closed\""), "{page}");
    let (s, t) = e.get("/checks/endpoint:closed?format=text");
    assert_eq!(s, 200);
    assert!(
        t.contains("reason: connect_refused") && t.contains("connecting to 127.0.0.1"),
        "{t}"
    );
    let (s, html) = e.get("/checks/endpoint:closed");
    assert_eq!(s, 200);
    assert!(html.contains("<pre>"), "{html}");
    assert_eq!(e.get("/checks/endpoint:unknown").0, 404);
    assert_eq!(e.get("/nothing-here").0, 404);
}

#[test]
fn reload_refuses_a_broken_file_and_keeps_the_old_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = closed_port();
    let cfg = write(dir.path(), "c.yaml", &quick_config(port));
    let path = cfg.to_str().expect("utf8").to_string();
    let e = Exporter::start(&["--config.file", &path]);
    let before = e.get("/metrics").1;
    assert_eq!(
        sample(&before, "o365_exporter_config_last_reload_successful"),
        Some(1.0)
    );

    // broken file: POST /-/reload is refused with the problems, old endpoints keep running
    write(
        dir.path(),
        "c.yaml",
        "endpoints:\n  - name: x\n    port: 99999\n",
    );
    let (s, body) = e.post("/-/reload");
    assert_eq!(s, 500, "{body}");
    assert!(
        body.contains("endpoints[0].port: 99999 is not a port"),
        "{body}"
    );
    let m = e.get("/metrics").1;
    assert_eq!(
        sample(&m, "o365_exporter_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(
        m.contains("o365_endpoint_up{endpoint=\"closed\"}"),
        "old config must stay:\n{m}"
    );
    assert!(!m.contains("endpoint=\"x\""));
    let (_, page) = e.get("/");
    assert!(page.contains("reload was refused"), "{page}");

    // fixed file, reloaded by SIGHUP: the new endpoint appears, the metric returns to 1
    let fixed = quick_config(port).replace("name: nowhere", "name: elsewhere");
    write(dir.path(), "c.yaml", &fixed);
    e.signal("HUP");
    let m = e.wait_metrics(Duration::from_secs(10), |b| {
        sample(b, "o365_exporter_config_last_reload_successful") == Some(1.0)
    });
    assert!(
        m.contains("o365_endpoint_up{endpoint=\"elsewhere\"}"),
        "{m}"
    );
    assert!(!m.contains("endpoint=\"nowhere\""), "{m}");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(dir.path(), "c.yaml", &quick_config(closed_port()));
    let mut e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    e.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = e.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}: {}", e.stderr());
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        e.stderr().contains("msg=\"shutting down\""),
        "{}",
        e.stderr()
    );
}

#[test]
fn config_check_reports_every_mistake_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "defaults:\n  interval: soon\nendpoints:\n  - name: a\n    host: example.com\n    port: 99999\n    tlss: implicit\n",
    );
    let out = Command::new(bin())
        .args([
            "--config.file",
            bad.to_str().expect("utf8"),
            "--config.check",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:13: defaults.interval"), "{err}");
    assert!(
        err.contains("bad.yaml:6:11: endpoints[0].port: 99999 is not a port"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:7:5: endpoints[0].tlss: unknown field"),
        "{err}"
    );
    assert!(err.contains("3 problems"), "{err}");

    let good = write(dir.path(), "good.yaml", "cloud: gcc-high\n");
    let out = Command::new(bin())
        .args([
            "--config.file",
            good.to_str().expect("utf8"),
            "--config.check",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (4 endpoints"));

    // a broken config also refuses to start the server, with exit code 2
    let out = Command::new(bin())
        .args([
            "--config.file",
            bad.to_str().expect("utf8"),
            "--web.listen-address=127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}
