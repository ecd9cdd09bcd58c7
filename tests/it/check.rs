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
