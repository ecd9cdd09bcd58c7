//! The endpoint probe against loopback servers: every outcome an operator must be able to tell
//! apart (good TLS, each certificate fault, STARTTLS present or missing, closed, silent, flooding
//! and confused peers, unresolvable names), each with its reason and failing phase.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use o365_mail_exporter::config::{Endpoint, TlsMode};
use o365_mail_exporter::probe::endpoint::{probe, EHLO_NAME};
use o365_mail_exporter::probe::line::MAX_LINE;
use o365_mail_exporter::probe::tls::{TlsClient, TlsSetupError};
use o365_mail_exporter::probe::{Outcome, Phase, Reason};

use crate::support::certs::{server_config, LeafKind, Pki, Versions};
use crate::support::outcome::{assert_failed, explain};
use crate::support::tls_server::{self, SmtpScript, StarttlsAt, ENDLESS_CAP};

/// Generous for loopback; the deadline tests use their own short timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(host: &str, port: u16, tls: TlsMode, server_name: &str) -> Endpoint {
    Endpoint {
        name: "test".to_string(),
        host: host.to_string(),
        port,
        tls,
        server_name: server_name.to_string(),
        ca_file: None,
        interval: Duration::from_secs(60),
        timeout: TIMEOUT,
        proxy: None,
    }
}

fn client(pki: &Pki) -> TlsClient {
    TlsClient::new(Some(&pki.ca_file)).expect("CA file loads")
}

fn phases(o: &Outcome) -> Vec<Phase> {
    o.phases.iter().map(|(p, _)| *p).collect()
}

/// Implicit-TLS server with a leaf of `kind`, probed as `localhost`.
async fn probe_leaf(kind: LeafKind, versions: Versions) -> (Outcome, i64, i64) {
    let pki = Pki::new();
    let leaf = pki.leaf(kind);
    let server = tls_server::implicit_tls(server_config(&leaf, versions)).await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "localhost");
    let out = probe(&ep, &client(&pki)).await;
    (out, leaf.not_before, leaf.not_after)
}

#[tokio::test]
async fn valid_tls_succeeds_with_version_and_the_certificates_not_after() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "localhost");
    let out = probe(&ep, &client(&pki)).await;

    assert!(out.success, "{}", explain(&out));
    assert_eq!(out.reason, Reason::Ok);
    assert_eq!(
        phases(&out),
        vec![Phase::Dns, Phase::Connect, Phase::Tls],
        "{}",
        explain(&out)
    );
    let tls = out.tls.as_ref().expect("TLS facts");
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
    assert!(tls.verified);
    assert_eq!(tls.cert_not_after, Some(leaf.not_after));
    assert_eq!(tls.cert_not_before, Some(leaf.not_before));
    assert!(
        tls.cert_subject.contains("localhost"),
        "{}",
        tls.cert_subject
    );
    assert!(
        tls.cert_issuer.contains("o365-mail-exporter test CA"),
        "{}",
        tls.cert_issuer
    );
    // The server agrees a handshake happened.
    assert!(server
        .log
        .wait_for("* tls ok TLSv1_3", Duration::from_secs(2))
        .await
        .is_some());
}

#[tokio::test]
async fn tls12_only_server_is_reported_as_tls12() {
    let (out, _, not_after) = probe_leaf(LeafKind::Valid, Versions::Tls12Only).await;
    assert!(out.success, "{}", explain(&out));
    let tls = out.tls.as_ref().expect("TLS facts");
    assert_eq!(tls.version, "TLSv1.2");
    assert!(tls.cipher.starts_with("TLS_ECDHE_"), "{}", tls.cipher);
    assert_eq!(tls.cert_not_after, Some(not_after));
}

#[tokio::test]
async fn expired_certificate_fails_and_still_reports_its_not_after() {
    let (out, not_before, not_after) = probe_leaf(LeafKind::Expired, Versions::Default).await;
    assert_failed(&out, Phase::Tls, Reason::CertExpired);
    let tls = out.tls.as_ref().expect("TLS facts kept on failure");
    assert_eq!(tls.cert_not_after, Some(not_after));
    assert_eq!(tls.cert_not_before, Some(not_before));
    assert!(not_after < now_unix(), "the generated leaf is in the past");
    assert!(!tls.verified);
    assert!(tls.verify_error.is_some(), "{}", explain(&out));
    assert!(tls.version.is_empty(), "no version without a handshake");
}

#[tokio::test]
async fn not_yet_valid_certificate_is_its_own_reason() {
    let (out, not_before, _) = probe_leaf(LeafKind::NotYetValid, Versions::Default).await;
    assert_failed(&out, Phase::Tls, Reason::CertNotYetValid);
    let tls = out.tls.as_ref().expect("TLS facts kept on failure");
    assert_eq!(tls.cert_not_before, Some(not_before));
    assert!(not_before > now_unix());
}

#[tokio::test]
async fn wrong_name_is_a_name_mismatch() {
    let (out, _, not_after) = probe_leaf(LeafKind::WrongName, Versions::Default).await;
    assert_failed(&out, Phase::Tls, Reason::CertNameMismatch);
    let tls = out.tls.as_ref().expect("TLS facts kept on failure");
    assert_eq!(tls.cert_not_after, Some(not_after));
    assert!(
        tls.cert_subject.contains("wrong.example"),
        "{}",
        tls.cert_subject
    );
}

#[tokio::test]
async fn unknown_ca_is_untrusted() {
    let (out, _, _) = probe_leaf(LeafKind::UnknownCa, Versions::Default).await;
    assert_failed(&out, Phase::Tls, Reason::CertUntrusted);
    let tls = out.tls.as_ref().expect("TLS facts kept on failure");
    assert!(
        tls.cert_issuer.contains("some other CA"),
        "{}",
        tls.cert_issuer
    );
}

#[tokio::test]
async fn built_in_roots_do_not_trust_a_private_ca() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "localhost");
    let out = probe(&ep, &TlsClient::new(None).expect("built-in roots")).await;
    assert_failed(&out, Phase::Tls, Reason::CertUntrusted);
}

#[tokio::test]
async fn server_name_may_be_an_ip_address() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "127.0.0.1");
    let out = probe(&ep, &client(&pki)).await;
    assert!(out.success, "{}", explain(&out));
}

#[tokio::test]
async fn smtp_starttls_records_every_phase() {
    for at in [StarttlsAt::Middle, StarttlsAt::Last] {
        let pki = Pki::new();
        let leaf = pki.leaf(LeafKind::Valid);
        let server = tls_server::smtp_starttls(server_config(&leaf, Versions::Default), at).await;
        let ep = endpoint(
            "localhost",
            server.port(),
            TlsMode::StarttlsSmtp,
            "localhost",
        );
        let out = probe(&ep, &client(&pki)).await;

        assert!(out.success, "{at:?}: {}", explain(&out));
        assert_eq!(
            phases(&out),
            vec![
                Phase::Dns,
                Phase::Connect,
                Phase::Greeting,
                Phase::Starttls,
                Phase::Tls
            ],
            "{at:?}: {}",
            explain(&out)
        );
        assert_eq!(
            out.tls.as_ref().map(|t| t.version.as_str()),
            Some("TLSv1.3")
        );
        let transcript = out.transcript.render_text();
        assert!(
            transcript.contains("S: 220 multi-line greeting"),
            "the whole greeting is read before EHLO:\n{transcript}"
        );
        let log = server.log.entries();
        let client_lines: Vec<&str> = log.iter().filter_map(|e| e.strip_prefix("C: ")).collect();
        assert_eq!(
            client_lines,
            vec![format!("EHLO {EHLO_NAME}").as_str(), "STARTTLS"],
            "{at:?}: {log:?}"
        );
        assert!(
            server
                .log
                .wait_for("* tls ok", Duration::from_secs(2))
                .await
                .is_some(),
            "{at:?}: {:?}",
            server.log.entries()
        );
    }
}

/// Regression: the `starttls` phase used to be timed from the end of the TCP connect, so it
/// also counted the greeting and the phases added up to more than the whole check.
#[tokio::test]
async fn phase_durations_do_not_overlap() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let delay = Duration::from_millis(60);
    let script = SmtpScript {
        greeting_delay: delay,
        ..SmtpScript::default()
    };
    let server =
        tls_server::smtp_server(Some(server_config(&leaf, Versions::Default)), script).await;
    let ep = endpoint(
        "127.0.0.1",
        server.port(),
        TlsMode::StarttlsSmtp,
        "localhost",
    );
    let out = probe(&ep, &client(&pki)).await;
    assert!(out.success, "{}", explain(&out));
    let greeting = out.phase_duration(Phase::Greeting).expect("greeting timed");
    assert!(greeting >= delay, "{}", explain(&out));
    let sum: Duration = out.phases.iter().map(|(_, d)| *d).sum();
    assert!(
        sum <= out.duration,
        "phases add up to {sum:?}, more than the check's {:?}: {}",
        out.duration,
        explain(&out)
    );
}

#[tokio::test]
async fn smtp_without_starttls_is_unsupported() {
    let pki = Pki::new();
    let server = tls_server::smtp_without_starttls().await;
    let ep = endpoint(
        "127.0.0.1",
        server.port(),
        TlsMode::StarttlsSmtp,
        "localhost",
    );
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Starttls, Reason::StarttlsUnsupported);
    assert_eq!(
        phases(&out),
        vec![Phase::Dns, Phase::Connect, Phase::Greeting, Phase::Starttls]
    );
    assert!(out.tls.is_none(), "no handshake was attempted");
    assert!(
        !server.log.entries().iter().any(|e| e == "C: STARTTLS"),
        "STARTTLS must not be sent when not offered: {:?}",
        server.log.entries()
    );
}

#[tokio::test]
async fn refused_port_is_connect_refused() {
    let pki = Pki::new();
    let port = tls_server::refused_port();
    let ep = endpoint("127.0.0.1", port, TlsMode::Implicit, "localhost");
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Connect, Reason::ConnectRefused);
    assert_eq!(phases(&out), vec![Phase::Dns, Phase::Connect]);
}

#[tokio::test]
async fn silent_server_fails_at_the_deadline_in_the_greeting() {
    let pki = Pki::new();
    let server = tls_server::silent().await;
    let mut ep = endpoint(
        "127.0.0.1",
        server.port(),
        TlsMode::StarttlsSmtp,
        "localhost",
    );
    ep.timeout = Duration::from_millis(300);
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Greeting, Reason::Timeout);
    assert!(out.duration >= ep.timeout, "{}", explain(&out));
    assert!(out.duration < Duration::from_secs(3), "{}", explain(&out));
    // The failing phase is timed too: it is where the time went.
    let waited = out.phase_duration(Phase::Greeting).expect("greeting timed");
    assert!(waited >= Duration::from_millis(250), "{}", explain(&out));
    assert!(
        out.transcript
            .render_text()
            .contains("failed in greeting: timeout"),
        "{}",
        explain(&out)
    );
}

#[tokio::test]
async fn silent_server_fails_at_the_deadline_in_the_tls_handshake() {
    let pki = Pki::new();
    let server = tls_server::silent().await;
    let mut ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "localhost");
    ep.timeout = Duration::from_millis(300);
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Tls, Reason::Timeout);
    assert!(out.duration >= ep.timeout, "{}", explain(&out));
    assert!(out.duration < Duration::from_secs(3), "{}", explain(&out));
}

#[tokio::test]
async fn endless_line_is_cut_off_at_max_line() {
    let pki = Pki::new();
    let server = tls_server::endless_line().await;
    let ep = endpoint(
        "127.0.0.1",
        server.port(),
        TlsMode::StarttlsSmtp,
        "localhost",
    );
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Greeting, Reason::ReplyTooLong);
    assert!(out.detail.contains(&MAX_LINE.to_string()), "{}", out.detail);
    // The probe stopped reading and hung up long before the server's cap: it did not keep
    // consuming (and buffering) the flood.
    let end = server
        .log
        .wait_for("* wrote ", Duration::from_secs(5))
        .await
        .expect("the server noticed the client leaving");
    assert!(end.contains("client went away"), "{end}");
    let written: usize = end
        .split_ascii_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("byte count");
    assert!(written >= MAX_LINE, "{end}");
    assert!(written < ENDLESS_CAP, "{end}");
    // Nothing of the flood is kept in the transcript.
    let kept: usize = out.transcript.lines().map(|l| l.text.len()).sum();
    assert!(kept < 4096, "transcript holds {kept} bytes");
}

#[tokio::test]
async fn plain_text_where_tls_was_expected_is_a_tls_failure() {
    let pki = Pki::new();
    let server = tls_server::garbage().await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::Implicit, "localhost");
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Tls, Reason::TlsHandshake);
    let tls = out.tls.as_ref().expect("TLS facts, empty");
    assert_eq!(tls.cert_not_after, None, "no certificate was seen");
}

#[tokio::test]
async fn unresolvable_name_is_dns() {
    let pki = Pki::new();
    let ep = endpoint("nothing.invalid", 993, TlsMode::Implicit, "nothing.invalid");
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Dns, Reason::Dns);
    assert_eq!(phases(&out), vec![Phase::Dns]);
}

#[tokio::test]
async fn bytes_after_the_starttls_answer_are_refused() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let server =
        tls_server::smtp_extra_after_starttls(server_config(&leaf, Versions::Default)).await;
    let ep = endpoint(
        "127.0.0.1",
        server.port(),
        TlsMode::StarttlsSmtp,
        "localhost",
    );
    let out = probe(&ep, &client(&pki)).await;
    assert_failed(&out, Phase::Starttls, Reason::ProtocolError);
    assert!(
        out.detail.contains("after its STARTTLS answer"),
        "{}",
        out.detail
    );
    assert!(out.tls.is_none(), "no handshake over a tainted stream");
}

#[tokio::test]
async fn plain_tcp_endpoint_needs_no_tls() {
    let server = tls_server::silent().await;
    let ep = endpoint("127.0.0.1", server.port(), TlsMode::None, "localhost");
    let out = probe(&ep, &TlsClient::new(None).expect("built-in roots")).await;
    assert!(out.success, "{}", explain(&out));
    assert_eq!(phases(&out), vec![Phase::Dns, Phase::Connect]);
    assert!(out.tls.is_none());
}

#[tokio::test]
async fn ipv6_loopback_when_available() {
    let pki = Pki::new();
    let leaf = pki.leaf(LeafKind::Valid);
    let bind: SocketAddr = "[::1]:0".parse().expect("address");
    let server =
        match tls_server::implicit_tls_at(bind, server_config(&leaf, Versions::Default)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: cannot bind [::1]: {e}");
                return;
            }
        };
    let ep = endpoint("::1", server.port(), TlsMode::Implicit, "::1");
    let out = probe(&ep, &client(&pki)).await;
    assert!(out.success, "{}", explain(&out));
    assert!(
        out.transcript
            .render_text()
            .contains("connecting to [::1]:"),
        "{}",
        explain(&out)
    );
    assert_eq!(
        out.tls.as_ref().and_then(|t| t.cert_not_after),
        Some(leaf.not_after)
    );
}

#[test]
fn ca_file_problems_are_setup_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        TlsClient::new(Some(&missing)),
        Err(TlsSetupError::Read { .. })
    ));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    assert!(matches!(
        TlsClient::new(Some(Path::new(&empty))),
        Err(TlsSetupError::Empty { .. })
    ));
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}
