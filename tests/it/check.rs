//! The `check` command: exit codes, the text report with fixes, the JSON report against its
//! documented schema, and no secret in any output.

use std::process::Command;

use crate::support::exporter::{bin, free_port, write};

fn schema() -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/check-report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("schema file")).expect("schema is JSON")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failures_are_named_with_reason_and_fix_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let secret = write(dir.path(), "secret.txt", "CANARY-check-client-secret\n");
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "defaults: {{timeout: 2s}}\nendpoints:\n  - {{name: closed, host: 127.0.0.1, port: {}}}\n  - {{name: nowhere, host: nothing.invalid, port: 587, tls: starttls-smtp}}\ncredentials:\n  - name: app\n    tenant: contoso.onmicrosoft.com\n    client_id: 11111111-2222-3333-4444-555555555555\n    grant: client_credentials\n    client_secret_file: {}\n    secret_expires: 2001-01-01\n",
            free_port(),
            secret.display()
        ),
    );
    let (code, out, err) = run(&[
        "check",
        "--config.file",
        cfg.to_str().expect("utf8"),
        "--only",
        "network",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAIL  closed"), "{out}");
    assert!(out.contains("reason=connect_refused"), "{out}");
    assert!(out.contains("reason=dns"), "{out}");
    assert!(
        out.contains("fix: Something answered with a refusal"),
        "{out}"
    );
    assert!(out.contains("credentials[0].secret_expires"), "{out}");
    assert!(
        out.contains("0. Configuration") && out.contains("1. DNS and ports"),
        "{out}"
    );
    assert!(
        !out.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
    assert!(
        !out.contains("CANARY") && !err.contains("CANARY"),
        "secret leaked:\n{out}{err}"
    );

    let (code, json, _) = run(&[
        "check",
        "--config.file",
        cfg.to_str().expect("utf8"),
        "--only",
        "network",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    assert!(!json.contains("CANARY"));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    if let Err(errs) = crate::support::jsonschema::validate(&schema(), &v) {
        panic!(
            "report does not match docs/check-report.schema.json:\n{}\n{json}",
            errs.join("\n")
        );
    }
    assert_eq!(v["version"], 2);
    let kinds: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["config", "network", "network"], "{json}");
    assert_eq!(v["failed"], 3);
}

#[test]
fn the_validator_rejects_a_wrong_report() {
    let bad = serde_json::json!({"version": 1, "checks": [{"kind": "nope"}]});
    let errs = crate::support::jsonschema::validate(&schema(), &bad).expect_err("must fail");
    assert!(
        errs.iter()
            .any(|e| e.contains("missing required exporter_version")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("$.version")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("$.checks[0].kind")),
        "{errs:?}"
    );
}

#[test]
fn a_broken_config_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(dir.path(), "c.yaml", "endpoints: 7\n");
    let (code, _, err) = run(&["check", "--config.file", cfg.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("c.yaml:1"), "{err}");
}

#[test]
fn all_passing_exits_0() {
    // a local TLS-less port that accepts: plain TCP reachability passes
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!("endpoints:\n  - {{name: local, host: 127.0.0.1, port: {port}, tls: none}}\n"),
    );
    let (code, out, _) = run(&["check", "--config.file", cfg.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS  local") && out.contains("1 passed, 0 failed"),
        "{out}"
    );
    drop(listener);
}

#[test]
fn a_secret_expiring_within_30_days_warns_and_exits_0() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let soon = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(12 * 86_400),
    )
    .to_string();
    let secret = write(dir.path(), "secret.txt", "CANARY-expiring-secret\n");
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "endpoints:\n  - {{name: local, host: 127.0.0.1, port: {port}, tls: none}}\ncredentials:\n  - name: app\n    tenant: contoso.onmicrosoft.com\n    client_id: 11111111-2222-3333-4444-555555555555\n    grant: client_credentials\n    client_secret_file: {}\n    secret_expires: {}\n",
            secret.display(),
            &soon[..10]
        ),
    );
    let cfg = cfg.to_str().expect("utf8");
    let (code, out, err) = run(&["check", "--config.file", cfg, "--only", "network"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("WARN  credentials[0].secret_expires")
            && out.contains("warning: the client secret expires in 1")
            && out.contains("fix: Create a new client secret")
            && out.contains("2 passed, 0 failed, 1 warning"),
        "{out}"
    );
    assert!(!out.contains("CANARY") && !err.contains("CANARY"));
    let (code, json, _) = run(&[
        "check",
        "--config.file",
        cfg,
        "--only",
        "network",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    if let Err(errs) = crate::support::jsonschema::validate(&schema(), &v) {
        panic!("{errs:?}\n{json}");
    }
    assert_eq!((&v["failed"], &v["warnings"]), (&0.into(), &1.into()));
    assert_eq!(v["checks"][0]["reason"], "ok");
    drop(listener);
}

mod against_the_stack {
    use super::*;
    use crate::support::mailstack::MailStack;
    use o365_mail_exporter::fake_idp::{App, Failure, Injection};

    const ALICE: &str = "a11ce000-0000-4000-8000-00000000c0de";
    const CAROL: &str = "ca401000-0000-4000-8000-00000000c0de";

    fn config(
        dir: &std::path::Path,
        stack: &MailStack,
        idp: &str,
        extra_endpoint: &str,
    ) -> std::path::PathBuf {
        write(dir, "alice.secret", "CANARY-alice-secret-7f3a\n");
        write(dir, "carol.secret", "CANARY-carol-secret-9b1c\n");
        let ca = stack.ca_file.display();
        write(
            dir,
            "c.yaml",
            &format!(
                "defaults: {{timeout: 5s, login_timeout: 10s}}
state_dir: {state}
endpoints:
  - {{name: imap, host: 127.0.0.1, port: {imaps}, tls: implicit, ca_file: {ca}}}
  - {{name: smtp, host: 127.0.0.1, port: {subm}, tls: starttls-smtp, ca_file: {ca}}}
{extra_endpoint}servers:
  imap: {{host: 127.0.0.1, port: {imaps}, ca_file: {ca}}}
  pop3: {{host: 127.0.0.1, port: {pop3s}, ca_file: {ca}}}
  smtp: {{host: 127.0.0.1, port: {subm}, ca_file: {ca}}}
credentials:
  - {{name: app-alice, tenant: {tenant}, client_id: {ALICE}, grant: client_credentials, authority: '{idp}', client_secret_file: alice.secret}}
  - {{name: app-carol, tenant: {tenant}, client_id: {CAROL}, grant: client_credentials, authority: '{idp}', client_secret_file: carol.secret}}
mailboxes:
  - {{name: alice, address: alice@example.test, credential: app-alice, protocols: [imap, pop3, smtp]}}
  - {{name: carol, address: carol@example.test, credential: app-carol, protocols: [imap, pop3, smtp]}}
",
                state = dir.join("state").display(),
                imaps = stack.imaps_port,
                pop3s = stack.pop3s_port,
                subm = stack.submission_port,
                tenant = stack.tenant,
            ),
        )
    }

    async fn run_async(args: Vec<String>) -> (i32, String, String) {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&a)
        })
        .await
        .expect("join")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthy_passes_then_each_failure_is_named_with_its_fix() {
        let stack = MailStack::start().await;
        stack.add_mail("alice@example.test", 2);
        stack.add_mail("carol@example.test", 1);
        let roles = ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"];
        let idp = stack
            .fake_idp()
            .app(
                App::new(ALICE)
                    .secret("CANARY-alice-secret-7f3a")
                    .roles(roles)
                    .app_token_upn("alice@example.test"),
            )
            .app(
                App::new(CAROL)
                    .secret("CANARY-carol-secret-9b1c")
                    .roles(roles)
                    .app_token_upn("carol@example.test"),
            )
            .start()
            .await
            .expect("fake idp");
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path(), &stack, idp.base_url().trim_end_matches('/'), "");
        let cfg_s = cfg.to_str().expect("utf8").to_string();

        // healthy: every check passes, exit 0
        let (code, out, err) =
            run_async(vec!["check".into(), "--config.file".into(), cfg_s.clone()]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("0 failed"), "{out}");
        for line in [
            "PASS  app-alice",
            "PASS  alice/imap",
            "PASS  alice/pop3",
            "PASS  alice/smtp",
            "PASS  carol/smtp",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        assert!(out.contains("INBOX has 2 messages"), "{out}");
        eprintln!("--- healthy report ---\n{out}");

        // break three things: the identity provider refuses alice's app, carol's mailbox is
        // unreadable, a port is closed
        idp.inject(Injection::always(Failure::InvalidClientSecret).for_client(ALICE));
        let carol_home = stack.dir.join("mail/carol@example.test");
        crate::e2e::set_mode(&carol_home, 0o000);
        let closed = format!(
            "  - {{name: closed, host: 127.0.0.1, port: {}}}\n",
            free_port()
        );
        let cfg = config(
            dir.path(),
            &stack,
            idp.base_url().trim_end_matches('/'),
            &closed,
        );
        let cfg_s = cfg.to_str().expect("utf8").to_string();
        let (code, out, err) =
            run_async(vec!["check".into(), "--config.file".into(), cfg_s.clone()]).await;
        crate::e2e::set_mode(&carol_home, 0o755);
        assert_eq!(code, 1, "{out}{err}");
        eprintln!("--- failing report ---\n{out}");
        let block = |name: &str| -> String {
            let start = out
                .find(&format!("FAIL  {name}"))
                .unwrap_or_else(|| panic!("{name} not failed:\n{out}"));
            out[start..].lines().take(5).collect::<Vec<_>>().join("\n")
        };
        let closed = block("closed");
        assert!(
            closed.contains("reason=connect_refused") && closed.contains("fix:"),
            "{closed}"
        );
        let token = block("app-alice");
        assert!(
            token.contains("reason=invalid_client_secret") && token.contains("fix:"),
            "{token}"
        );
        let imap = block("carol/imap");
        assert!(
            !imap.contains("reason=token_unavailable") && imap.contains("fix:"),
            "{imap}"
        );
        assert!(
            block("alice/imap").contains("reason=token_unavailable"),
            "{out}"
        );
        assert!(
            out.contains("PASS  carol/smtp"),
            "SMTP AUTH does not open the mailbox:\n{out}"
        );
        for s in [&out, &err] {
            assert!(!s.contains("CANARY"), "a secret reached the output:\n{s}");
        }
        let (_, json, _) = run_async(vec![
            "check".into(),
            "--config.file".into(),
            cfg_s,
            "--format".into(),
            "json".into(),
        ])
        .await;
        assert!(!json.contains("CANARY"));
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        if let Err(errs) = crate::support::jsonschema::validate(&schema(), &v) {
            panic!("{errs:?}");
        }
    }
}

/// The Microsoft Graph checks in the report, against the fake Graph of the fake identity
/// platform: facts in the detail, a 403 failing only its own item with the permission to
/// grant, warnings that keep exit 0, an expired secret and an unlicensed mailbox that fail.
mod graph_checks {
    use super::*;
    use o365_mail_exporter::fake_idp::{
        App, FakeGraph, FakeIdp, FakeIdpHandle, GraphApplication, GraphIssue, GraphUser,
    };

    const APP: &str = "bbbbbbbb-1111-2222-3333-444444444444";
    /// The configured client secret; Graph's `hint` is its first three characters.
    const SECRET: &str = "CANARY-check-graph-s3cret";
    const KEY: &str = "22222222-aaaa-bbbb-cccc-000000000001";
    /// The Graph permissions, and IMAP's for the credential's own token.
    const ALL_ROLES: [&str; 4] = [
        "IMAP.AccessAsApp",
        "Application.Read.All",
        "User.Read.All",
        "ServiceHealth.Read.All",
    ];
    const DAY: i64 = 86_400;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64
    }

    /// The configured secret ends in `days`; alice is licensed, carol in `carol` state;
    /// Exchange Online in `status`, with an advisory and a resolved incident.
    fn tenant(days: i64, carol: &str, status: &str) -> FakeGraph {
        let t = now();
        FakeGraph::default()
            .application(
                GraphApplication::new(APP)
                    .display_name("ECE mail")
                    .secret(KEY, "ece-2026", SECRET, t - 300 * DAY, t + days * DAY)
                    .secret(
                        "22222222-aaaa-bbbb-cccc-000000000002",
                        "ece-2025",
                        "old-value",
                        t - 700 * DAY,
                        t - 5 * DAY,
                    ),
            )
            .user(GraphUser::new("alice@contoso.test").exchange("Enabled"))
            .user(GraphUser::new("carol@contoso.test").exchange(carol))
            .service("Exchange", "Exchange Online", status)
            .issue(
                GraphIssue::new(
                    "EX500001",
                    "Exchange Online",
                    "advisory",
                    "serviceDegradation",
                    "Delays in message delivery",
                )
                .start(t - 7200),
            )
            .issue(
                GraphIssue::new(
                    "EX400000",
                    "Exchange Online",
                    "incident",
                    "serviceRestored",
                    "An old outage",
                )
                .resolved(),
            )
    }

    fn incident() -> GraphIssue {
        GraphIssue::new(
            "EX512345",
            "Exchange Online",
            "incident",
            "serviceDegradation",
            "Users can't access their mailboxes over IMAP",
        )
        .start(now() - 3600)
    }

    async fn idp(graph: FakeGraph, roles: &[&str]) -> FakeIdpHandle {
        FakeIdp::builder()
            .app(App::new(APP).secret(SECRET).roles(roles.iter().copied()))
            .graph(graph)
            .start()
            .await
            .expect("fake starts")
    }

    /// Credential `app` (secret in a file, the configured `secret_expires`) with all three Graph
    /// checks; mailboxes alice and carol (logins to a closed port: the tests run
    /// `--only tokens,graph`).
    fn config(dir: &std::path::Path, idp: &FakeIdpHandle, secret_expires: &str) -> String {
        write(dir, "secret.txt", &format!("{SECRET}\n"));
        let cfg = write(
            dir,
            "c.yaml",
            &format!(
                "state_dir: {state}
servers:
  imap: {{host: 127.0.0.1, port: {port}}}
credentials:
  - name: app
    tenant: {tenant}
    client_id: {APP}
    grant: client_credentials
    authority: {base}
    client_secret_file: secret.txt
    secret_expires: {secret_expires}
    graph:
      graph_url: {base}
      timeout: 5s
mailboxes:
  - {{name: alice, address: alice@contoso.test, credential: app, protocols: [imap]}}
  - {{name: carol, address: carol@contoso.test, credential: app, protocols: [imap]}}
",
                state = dir.join("state").display(),
                port = free_port(),
                tenant = idp.tenant(),
                base = idp.base_url(),
            ),
        );
        cfg.to_str().expect("utf8").to_string()
    }

    /// `check --only tokens,graph` in text and JSON: (exit code, text, JSON report). Both
    /// outputs are searched for the secret, and the JSON is validated against the schema.
    async fn check(cfg: &str) -> (i32, String, serde_json::Value) {
        let cfg = cfg.to_string();
        tokio::task::spawn_blocking(move || {
            let base = ["check", "--config.file", &cfg, "--only", "tokens,graph"];
            let (code, out, err) = run(&base);
            let mut json_args = base.to_vec();
            json_args.extend(["--format", "json"]);
            let (jcode, json, jerr) = run(&json_args);
            assert_eq!(
                code, jcode,
                "text and JSON disagree:\n{out}{err}\n{json}{jerr}"
            );
            for s in [&out, &err, &json, &jerr] {
                assert!(!s.contains("CANARY"), "the secret reached the output:\n{s}");
            }
            let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
            if let Err(errs) = crate::support::jsonschema::validate(&schema(), &v) {
                panic!(
                    "report does not match docs/check-report.schema.json:\n{}\n{json}",
                    errs.join("\n")
                );
            }
            (code, out, v)
        })
        .await
        .expect("join")
    }

    /// The item `name` of the JSON report.
    fn item<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no item {name}:\n{v:#}"))
    }

    /// The text report's lines of item `name` (its status line and what follows, up to the
    /// next item).
    fn block(out: &str, name: &str) -> String {
        let lines: Vec<&str> = out.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                l.len() > 8 && l[8..].starts_with(&format!("{name} ")) && l.starts_with("  ")
            })
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"));
        let mut b = vec![lines[start]];
        b.extend(
            lines[start + 1..]
                .iter()
                .take_while(|l| l.starts_with("        ")),
        );
        b.join("\n")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_tenant_passes_with_the_facts() {
        let idp = idp(tenant(200, "Enabled", "serviceOperational"), &ALL_ROLES).await;
        let dir = tempfile::tempdir().expect("tmp");
        // a configured secret_expires long past: Graph's date must replace it
        let cfg = config(dir.path(), &idp, "2001-01-01");
        let (code, out, v) = check(&cfg).await;
        eprintln!("--- healthy report ---\n{out}");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("5. Microsoft Graph"), "{out}");
        assert!(
            out.contains("0 failed") && !out.contains("warning"),
            "{out}"
        );

        let app = block(&out, "app/app_credentials");
        assert!(app.starts_with("  PASS"), "{app}");
        for want in [
            "the configured client secret \"ece-2026\"",
            KEY,
            "in 200 days, from Graph",
            "app registration \"ECE mail\": 2 client secrets, 0 certificates (1 expired)",
        ] {
            assert!(app.contains(want), "{want} missing:\n{app}");
        }
        let lic = block(&out, "app/licenses");
        assert!(
            lic.starts_with("  PASS") && lic.contains("alice Enabled, carol Enabled"),
            "{lic}"
        );
        let health = block(&out, "app/service_health");
        assert!(
            health.starts_with("  PASS")
                && health.contains("Exchange Online: serviceOperational")
                && health.contains("open issues: 0 incidents, 1 advisory")
                && health.contains("EX500001")
                && !health.contains("EX400000"),
            "{health}"
        );
        // Graph's date replaces the configured secret_expires (2001, long past): no config
        // finding about it
        assert!(!out.contains("secret_expires"), "{out}");

        assert_eq!(v["version"], 2);
        assert_eq!((&v["failed"], &v["warnings"]), (&0.into(), &0.into()));
        let kinds: Vec<&str> = v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter_map(|c| c["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["token", "graph", "graph", "graph"], "{v:#}");
        let a = item(&v, "app/app_credentials");
        assert_eq!(a["reason"], "ok");
        assert!(a["warning"].is_null() && a["hint"].is_null(), "{a}");
        assert!(a["target"]
            .as_str()
            .expect("target")
            .starts_with("127.0.0.1:"));
        assert_eq!(a["phases"][0][0], "graph");

        // --only graph: the Graph items alone (and a token request of its own)
        let (code, json, _) = tokio::task::spawn_blocking(move || {
            run(&[
                "check",
                "--config.file",
                &cfg,
                "--only",
                "graph",
                "--format",
                "json",
            ])
        })
        .await
        .expect("join");
        assert_eq!(code, 0, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let kinds: Vec<&str> = v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter_map(|c| c["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["graph", "graph", "graph"], "{json}");
        idp.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_403_fails_its_own_item_with_the_permission_and_an_incident_warns() {
        // no Application.Read.All: the app-credentials check is refused; carol's licence is
        // in its grace period; an Exchange Online incident is open
        let graph = tenant(200, "Warning", "serviceDegradation").issue(incident());
        let idp = idp(
            graph,
            &[
                "IMAP.AccessAsApp",
                "User.Read.All",
                "ServiceHealth.Read.All",
            ],
        )
        .await;
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path(), &idp, "2099-01-01");
        let (code, out, v) = check(&cfg).await;
        eprintln!("--- 403 and incident ---\n{out}");
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("1 failed, 2 warnings"), "{out}");

        let app = block(&out, "app/app_credentials");
        assert!(
            app.starts_with("  FAIL") && app.contains("reason=permission_denied"),
            "{app}"
        );
        assert!(
            app.contains("403")
                && app.contains("fix: Grant the app registration the Microsoft Graph application permission Application.Read.All")
                && app.contains("admin consent"),
            "{app}"
        );
        let a = item(&v, "app/app_credentials");
        assert_eq!(
            (&a["success"], &a["reason"]),
            (&false.into(), &"permission_denied".into())
        );
        assert!(a["hint"]
            .as_str()
            .expect("hint")
            .contains("Application.Read.All"));
        assert!(!out.contains("secret_expires"), "{out}");

        let lic = block(&out, "app/licenses");
        assert!(
            lic.starts_with("  WARN")
                && lic.contains("warning: Exchange licence in its grace period: carol")
                && lic.contains("carol Warning (grace period)")
                && lic.contains("fix: The Exchange licence is in its grace period"),
            "{lic}"
        );
        let health = block(&out, "app/service_health");
        assert!(
            health.starts_with("  WARN")
                && health.contains("warning: Exchange Online: serviceDegradation, 1 incident open")
                && health.contains("EX512345 incident serviceDegradation: \"Users can't access their mailboxes over IMAP\""),
            "{health}"
        );
        let h = item(&v, "app/service_health");
        assert_eq!((&h["success"], &h["reason"]), (&true.into(), &"ok".into()));
        assert!(h["warning"]
            .as_str()
            .expect("warning")
            .contains("1 incident open"));
        assert!(h["detail"]
            .as_str()
            .expect("detail")
            .contains("open issues: 1 incident, 1 advisory"));
        assert_eq!(item(&v, "app")["success"], true, "the token is fine");
        assert_eq!((&v["failed"], &v["warnings"]), (&1.into(), &2.into()));
        idp.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expiring_secret_warns_and_an_expired_one_or_an_unlicensed_mailbox_fails() {
        let idp = idp(tenant(12, "Enabled", "serviceOperational"), &ALL_ROLES).await;
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path(), &idp, "2099-01-01");
        let (code, out, v) = check(&cfg).await;
        eprintln!("--- expiring ---\n{out}");
        assert_eq!(code, 0, "a warning keeps exit 0:\n{out}");
        let app = block(&out, "app/app_credentials");
        assert!(
            app.starts_with("  WARN")
                && app.contains(
                    "warning: the configured client secret of credential app expires in 12 days"
                )
                && app.contains("fix: Create a new client secret or certificate"),
            "{app}"
        );
        assert!(out.contains("0 failed, 1 warning"), "{out}");
        assert_eq!(v["warnings"], 1);

        // the secret expired 3 days ago; carol lost her licence
        idp.update_graph(|g| {
            *g = tenant(-3, "Enabled", "serviceOperational");
            g.users.retain(|u| u.upn != "carol@contoso.test");
            g.users.push(GraphUser::new("carol@contoso.test"));
        });
        let (code, out, v) = check(&cfg).await;
        eprintln!("--- expired, unlicensed ---\n{out}");
        assert_eq!(code, 1, "{out}");
        let app = block(&out, "app/app_credentials");
        assert!(
            app.starts_with("  FAIL")
                && app.contains("reason=client_secret_expired")
                && app.contains("3 days ago, from Graph")
                && app.contains("fix: The client secret or certificate has expired"),
            "{app}"
        );
        let lic = block(&out, "app/licenses");
        assert!(
            lic.starts_with("  FAIL")
                && lic.contains("reason=mailbox_not_licensed")
                && lic.contains("no enabled Exchange licence: carol (none)")
                && lic.contains("alice Enabled")
                && lic.contains("fix: The mailbox's user has no enabled Exchange Online plan"),
            "{lic}"
        );
        assert_eq!(item(&v, "app/licenses")["reason"], "mailbox_not_licensed");
        assert_eq!((&v["failed"], &v["warnings"]), (&2.into(), &0.into()));
        idp.shutdown().await;
    }
}
