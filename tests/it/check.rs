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
    assert_eq!(v["version"], 1);
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
    let bad = serde_json::json!({"version": 2, "checks": [{"kind": "nope"}]});
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
