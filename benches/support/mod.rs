//! Fixtures shared by the criterion benches: the configuration of issue 8's scale (1,000
//! mailboxes x 3 protocols, 20 endpoints, 50 credentials) as a YAML file, and a [`State`] filled
//! the way a finished login cycle leaves it (every check run, with phases, transcript and TLS
//! facts), so that encoding `/metrics` is measured on realistic records, not pending ones.
//!
//! Lives in a sub-directory so cargo does not take it for a bench target of its own.

#![allow(dead_code)] // each bench uses part of it

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use o365_mail_exporter::config::Config;
use o365_mail_exporter::probe::{Dir, Outcome, Phase, Protocol, Reason, Recorder, TlsFacts};
use o365_mail_exporter::state::{CheckKey, State};

pub const MAILBOXES: usize = 1000;
pub const ENDPOINTS: usize = 20;
pub const CREDENTIALS: usize = 50;

/// A configuration file of the given size, pointing at loopback. `dir` receives the CA and
/// secret files it names (the validator checks they exist).
pub fn config_yaml(dir: &Path, mailboxes: usize, endpoints: usize, credentials: usize) -> String {
    let ca = dir.join("ca.crt");
    let secret = dir.join("client.secret");
    std::fs::write(&ca, "not read by the validator\n").expect("write ca file");
    std::fs::write(&secret, "bench-secret\n").expect("write secret file");
    let (ca, secret) = (ca.display(), secret.display());
    let mut y = String::with_capacity(200 * mailboxes);
    y.push_str(&format!(
        "state_dir: {state}\ndefaults:\n  login_interval: 5m\n  max_concurrent_checks: 16\n",
        state = dir.display()
    ));
    y.push_str("endpoints:\n");
    for i in 0..endpoints {
        let (port, tls) = match i % 3 {
            0 => (10993, "implicit"),
            1 => (10995, "implicit"),
            _ => (10587, "starttls-smtp"),
        };
        y.push_str(&format!(
            "  - {{name: ep{i:02}, host: 127.0.0.1, port: {port}, tls: {tls}, server_name: localhost, ca_file: {ca}}}\n"
        ));
    }
    y.push_str(&format!(
        "servers:\n  imap: {{host: 127.0.0.1, port: 10993, tls: implicit, server_name: localhost, ca_file: {ca}}}\n  pop3: {{host: 127.0.0.1, port: 10995, tls: implicit, server_name: localhost, ca_file: {ca}}}\n  smtp: {{host: 127.0.0.1, port: 10587, tls: starttls-smtp, server_name: localhost, ca_file: {ca}}}\n"
    ));
    y.push_str("credentials:\n");
    for i in 0..credentials {
        y.push_str(&format!(
            "  - name: app{i:02}\n    tenant: 00000000-0000-0000-0000-00000000beef\n    client_id: 11111111-2222-3333-4444-{i:012}\n    grant: client_credentials\n    client_secret_file: {secret}\n    token_url: http://127.0.0.1:18080/00000000-0000-0000-0000-00000000beef/oauth2/v2.0/token\n"
        ));
    }
    y.push_str("mailboxes:\n");
    for i in 0..mailboxes {
        y.push_str(&format!(
            "  - {{name: mb{i:04}, address: mb{i:04}@example.test, credential: app{c:02}, protocols: [imap, pop3, smtp]}}\n",
            c = i % credentials.max(1)
        ));
    }
    y
}

/// The configuration, loaded through the same path as start-up.
pub fn config(dir: &Path) -> Config {
    let path = dir.join("config.yaml");
    std::fs::write(&path, config_yaml(dir, MAILBOXES, ENDPOINTS, CREDENTIALS))
        .expect("write config");
    o365_mail_exporter::config::load_file(&path).expect("the bench configuration is valid")
}

/// A successful run of `key` as the probes record it: every phase, a transcript of the size a
/// real dialogue leaves, TLS facts, a message count for IMAP/POP3.
fn outcome(key: &CheckKey) -> Outcome {
    let mut rec = Recorder::new();
    let phases: &[Phase] = match key {
        CheckKey::Endpoint(_) => &[Phase::Dns, Phase::Connect, Phase::Tls],
        CheckKey::Login {
            protocol: Protocol::Smtp,
            ..
        } => &[
            Phase::Dns,
            Phase::Connect,
            Phase::Greeting,
            Phase::Starttls,
            Phase::Tls,
            Phase::Capability,
            Phase::Auth,
            Phase::Mailbox,
            Phase::Logout,
        ],
        CheckKey::Login { .. } => &[
            Phase::Dns,
            Phase::Connect,
            Phase::Tls,
            Phase::Greeting,
            Phase::Auth,
            Phase::Mailbox,
            Phase::Logout,
        ],
    };
    for (i, p) in phases.iter().enumerate() {
        rec.record(*p, Duration::from_micros(150 + 37 * i as u64));
    }
    for line in [
        "connecting to 127.0.0.1:10993",
        "TLS TLSv1.3 TLS13_AES_256_GCM_SHA384 certificate CN=localhost (issuer CN=mailstack test CA)",
        "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.",
        "A1 AUTHENTICATE XOAUTH2 [redacted: user=mb0001@example.test token eyJ0eX...]",
        "A1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY] Logged in",
        "A2 EXAMINE INBOX",
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* 3 EXISTS",
        "* 0 RECENT",
        "A2 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).",
        "A3 LOGOUT",
        "* BYE Logging out",
        "A3 OK Logout completed (0.001 + 0.000 secs).",
    ] {
        rec.note(Dir::Received, line);
    }
    rec.tls = Some(TlsFacts {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        cert_not_after: Some(1_900_000_000),
        cert_not_before: Some(1_700_000_000),
        cert_subject: "CN=localhost".into(),
        cert_issuer: "CN=mailstack test CA".into(),
        verified: true,
        verify_error: None,
    });
    if !matches!(
        key,
        CheckKey::Endpoint(_)
            | CheckKey::Login {
                protocol: Protocol::Smtp,
                ..
            }
    ) {
        rec.messages = Some(3);
    }
    rec.success("logged in, INBOX has 3 messages")
}

/// State after one full cycle of `cfg`: every check ran (a few twice, one failure each, so the
/// failure counters have series), every credential holds a token.
pub fn state_after_cycle(cfg: &Config) -> Arc<State> {
    let state = Arc::new(State::new());
    let keys = o365_mail_exporter::schedule::check_keys(cfg);
    state.reconcile_checks(&keys);
    for (i, key) in keys.iter().enumerate() {
        if i % 100 == 0 {
            let mut o = outcome(key);
            o.success = false;
            o.reason = Reason::AuthRejected;
            o.failed_phase = Some(Phase::Auth);
            state.publish(key, o, None);
        }
        state.publish(key, outcome(key), None);
    }
    let creds: Vec<(String, &'static str, Option<i64>)> = cfg
        .credentials
        .iter()
        .map(|c| (c.name.clone(), c.grant.as_str(), c.secret_expires))
        .collect();
    state.reconcile_tokens(&creds);
    for c in &cfg.credentials {
        state.update_token(&c.name, |t| {
            t.requests = 3;
            t.last_attempt_success = Some(true);
            t.last_reason = "ok";
            t.last_success = Some(1_750_000_000);
            t.issued = Some(1_750_000_000);
            t.expires = Some(1_750_003_599);
            t.scopes = vec![
                ("IMAP.AccessAsApp".into(), true),
                ("POP.AccessAsApp".into(), true),
                ("SMTP.SendAsApp".into(), true),
            ];
            t.request_duration.observe(0.012);
        });
    }
    state
}
