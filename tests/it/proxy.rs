//! The outbound HTTP proxy end to end on loopback with a real tinyproxy: tokens from the fake
//! identity platform through it (forwarded plain HTTP, and HTTPS by CONNECT through a TLS front),
//! with and without proxy credentials; the endpoint check through it (TLS facts of the real
//! server, an intercepting certificate as `cert_untrusted`); each proxy failure with its reason
//! (down, 407, CONNECT refused by policy) within the deadline; hostile "proxies" (garbage,
//! endless headers, silence, bytes after the answer) classified within the deadline and bounded
//! in memory; the Graph checks through it (and `network` naming it when it is down); and the
//! proxy as `--config.check` and `check` show it, without its password.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_mail_exporter::config::{self, Config, ProxyOrigin};
use o365_mail_exporter::fake_idp::{App, FakeIdp, FakeIdpHandle};
use o365_mail_exporter::oauth::{TokenReason, TokenSource, TokenStore, TokenUnavailable};
use o365_mail_exporter::probe::endpoint::probe;
use o365_mail_exporter::probe::tls::TlsClient;
use o365_mail_exporter::probe::{Outcome, Phase, Reason};
use o365_mail_exporter::state::{CheckKey, State};

use crate::support::certs::{server_config, LeafKind, Pki, Versions};
use crate::support::outcome::{assert_failed, explain};
use crate::support::proxy::{hostile, tls_front, Hostile, Tinyproxy, TinyproxyConf, HOSTILE_CAP};
use crate::support::tls_server;

const APP: &str = "44444444-2222-3333-4444-555555555555";
const SECRET: &str = "CANARY-proxy-client-secret-9d1e";
const USER: &str = "svc-o365";
const PASSWORD: &str = "CANARY-proxy-password-4f7a2c";

/// A test directory with the client secret and the proxy password (right or `wrong`) in files.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(password: &str) -> Files {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("secret.txt"), format!("{SECRET}\n")).expect("secret");
        std::fs::write(dir.path().join("proxy-password"), format!("{password}\n"))
            .expect("password");
        Files { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `proxy:` YAML for `url`, with the user and the password file when `auth`.
fn proxy_yaml(url: &str, auth: bool) -> String {
    let mut s = format!("proxy:\n  url: {url}\n");
    if auth {
        s.push_str(&format!(
            "  username: {USER}\n  password_file: proxy-password\n"
        ));
    }
    s
}

fn load(yaml: &str, dir: &Path) -> Config {
    config::load_str(yaml, "proxy-test.yaml", dir).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

async fn idp() -> FakeIdpHandle {
    FakeIdp::builder()
        .app(App::new(APP).secret(SECRET).roles(["IMAP.AccessAsApp"]))
        .start()
        .await
        .expect("fake IdP starts")
}

/// The credential YAML for `token_url` (trusting `ca_file` when given).
fn credential_yaml(idp: &FakeIdpHandle, token_url: &str, ca_file: Option<&Path>) -> String {
    let ca = ca_file
        .map(|p| format!(", ca_file: {}", p.display()))
        .unwrap_or_default();
    format!(
        "credentials:\n  - {{name: app, tenant: {}, client_id: {APP}, grant: client_credentials, client_secret_file: secret.txt, token_url: {token_url}, timeout: 5s{ca}}}\n",
        idp.tenant()
    )
}

/// One token request of the configuration's first credential.
async fn fetch(cfg: &Config) -> Result<(), TokenUnavailable> {
    let cred = Arc::new(cfg.credentials[0].clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state = Arc::new(State::new());
    state.reconcile_tokens(&[(cred.name.clone(), cred.grant.as_str(), None)]);
    let source =
        TokenSource::new(cred, Arc::new(TokenStore::new(dir.path())), state).expect("token source");
    source.access_token().await.map(|_| ())
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains(&b64(&format!("{USER}:{PASSWORD}"))),
        "the proxy password leaked into {what}: {text}"
    );
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The endpoint check of a local implicit-TLS server on `port` (named `localhost` in the CA
/// `ca_file`) through the proxy at `proxy_url` (`auth`: with the configured credentials), and
/// the configuration it loaded.
async fn probe_via(
    proxy_url: &str,
    auth: bool,
    port: u16,
    ca_file: &Path,
    files: &Files,
    timeout: &str,
) -> (Outcome, Config) {
    let yaml = format!(
        "{}endpoints:\n  - {{name: e, host: 127.0.0.1, port: {port}, tls: implicit, server_name: localhost, ca_file: {}, via_proxy: true, timeout: {timeout}}}\n",
        proxy_yaml(proxy_url, auth),
        ca_file.display()
    );
    let cfg = load(&yaml, files.path());
    let ep = &cfg.endpoints[0];
    assert!(ep.proxy.is_some(), "via_proxy: true follows the proxy");
    let out = probe(ep, &TlsClient::new(ep.ca_file.as_deref()).expect("CA")).await;
    (out, cfg)
}

/// A TLS server with a leaf of `kind` and an endpoint config checking it through `proxy_url`.
async fn endpoint_through(
    proxy_url: &str,
    auth: bool,
    kind: LeafKind,
    password: &str,
    timeout: &str,
) -> (Outcome, tls_server::Server, Pki, Files) {
    let pki = Pki::new();
    let leaf = pki.leaf(kind);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let files = Files::new(password);
    let (out, _) = probe_via(
        proxy_url,
        auth,
        server.port(),
        &pki.ca_file,
        &files,
        timeout,
    )
    .await;
    (out, server, pki, files)
}

#[tokio::test]
async fn tokens_come_through_the_proxy_forwarded_and_by_connect_with_credentials() {
    let idp = idp().await;
    let pki = Pki::new();
    let front = tls_front(
        idp.addr(),
        server_config(&pki.leaf(LeafKind::Valid), Versions::Default),
    )
    .await;
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![front.port()],
        basic_auth: Some((USER.into(), PASSWORD.into())),
    })
    .await;
    let files = Files::new(PASSWORD);

    // plain HTTP (a loopback test endpoint): forwarded by the proxy
    let yaml = format!(
        "{}{}",
        proxy_yaml(&proxy.url(), true),
        credential_yaml(&idp, &idp.token_url(), None)
    );
    let cfg = load(&yaml, files.path());
    assert!(cfg.credentials[0].proxy.is_some());
    let t = Instant::now();
    fetch(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
    assert_eq!(idp.stats().token_requests(), 1, "the fake saw the request");
    let path = format!("POST {}", idp.token_url());
    assert!(
        proxy.wait_log(&path, Duration::from_secs(2)).await,
        "the proxy forwarded it: {}",
        proxy.log()
    );

    // HTTPS, as to login.microsoftonline.com: a CONNECT tunnel, TLS end to end
    let https = format!(
        "https://127.0.0.1:{}/{}/oauth2/v2.0/token",
        front.port(),
        idp.tenant()
    );
    let yaml = format!(
        "{}{}",
        proxy_yaml(&proxy.url(), true),
        credential_yaml(&idp, &https, Some(&pki.ca_file))
    );
    let cfg = load(&yaml, files.path());
    fetch(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
    assert_eq!(idp.stats().token_requests(), 2, "the fake saw the request");
    assert!(
        proxy
            .wait_log(
                &format!("CONNECT 127.0.0.1:{}", front.port()),
                Duration::from_secs(2)
            )
            .await,
        "the proxy tunnelled it: {}",
        proxy.log()
    );
    crate::reliability::report!(
        "proxy: two tokens through tinyproxy (forwarded, CONNECT) in {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_or_missing_proxy_password_is_proxy_auth_required() {
    let idp = idp().await;
    let pki = Pki::new();
    let front = tls_front(
        idp.addr(),
        server_config(&pki.leaf(LeafKind::Valid), Versions::Default),
    )
    .await;
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![front.port()],
        basic_auth: Some((USER.into(), "the-right-one".into())),
    })
    .await;
    let files = Files::new(PASSWORD);
    let https = format!(
        "https://127.0.0.1:{}/{}/oauth2/v2.0/token",
        front.port(),
        idp.tenant()
    );
    for (url, ca, auth) in [
        (https.as_str(), Some(pki.ca_file.as_path()), true),
        (https.as_str(), Some(pki.ca_file.as_path()), false),
        // forwarded plain HTTP: tinyproxy answers 407 without credentials (its 401 to wrong
        // ones cannot be told from the token endpoint's own 401 on a forwarded request)
        (idp.token_url().as_str(), None, false),
    ] {
        let yaml = format!(
            "{}{}",
            proxy_yaml(&proxy.url(), auth),
            credential_yaml(&idp, url, ca)
        );
        let e = fetch(&load(&yaml, files.path()))
            .await
            .expect_err("the proxy refuses");
        assert_eq!(
            e.reason,
            TokenReason::ProxyAuthRequired,
            "{url} auth={auth}: {e:?}"
        );
        assert_no_password("the token error", &e.message);
    }
    assert_eq!(idp.stats().token_requests(), 0, "nothing passed the proxy");
}

#[tokio::test]
async fn the_endpoint_check_through_the_proxy_reports_the_servers_tls() {
    let pki_probe = Pki::new();
    let leaf = pki_probe.leaf(LeafKind::Valid);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![server.port()],
        basic_auth: Some((USER.into(), PASSWORD.into())),
    })
    .await;
    let files = Files::new(PASSWORD);
    let (out, cfg) = probe_via(
        &proxy.url(),
        true,
        server.port(),
        &pki_probe.ca_file,
        &files,
        "10s",
    )
    .await;
    let ep = &cfg.endpoints[0];
    assert!(out.success, "{}\n{}", explain(&out), proxy.log());
    let phases: Vec<Phase> = out.phases.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, [Phase::Dns, Phase::Connect, Phase::Tls]);
    let tls = out.tls.as_ref().expect("TLS facts");
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.verified);
    assert_eq!(tls.cert_not_after, Some(leaf.not_after));
    assert!(
        out.detail
            .contains(&format!("through the proxy {}", proxy.url())),
        "{}",
        out.detail
    );
    // the server saw the handshake, the proxy the CONNECT
    assert!(server
        .log
        .wait_for("* tls ok TLSv1_3", Duration::from_secs(2))
        .await
        .is_some());
    assert!(
        proxy
            .wait_log(
                &format!("CONNECT 127.0.0.1:{}", server.port()),
                Duration::from_secs(2)
            )
            .await,
        "{}",
        proxy.log()
    );
    let text = out.transcript.render_text();
    assert!(
        text.contains(&format!("C: CONNECT 127.0.0.1:{} HTTP/1.1", server.port()))
            && text.contains("C: Proxy-Authorization: Basic [redacted]")
            && text.contains("S: HTTP/1.0 200 Connection established"),
        "{text}"
    );
    assert_no_password("the transcript", &text);
    assert!(out
        .facts
        .iter()
        .any(|(k, v)| k == "proxy" && *v == proxy.url()));
    let state = State::new();
    let key = CheckKey::Endpoint(ep.name.clone());
    state.reconcile_checks(std::slice::from_ref(&key));
    state.publish(&key, out.clone(), None);
    let verdicts =
        o365_mail_exporter::verdict::endpoint(ep, state.checks().get(&key).expect("record"));
    assert!(
        verdicts[0]
            .target
            .ends_with(&format!("via proxy {}", proxy.url())),
        "{}",
        verdicts[0].target
    );
}

#[tokio::test]
async fn a_proxy_intercepting_tls_shows_as_cert_untrusted_with_the_interception_hint() {
    // what the client sees from an intercepting proxy: a certificate for the right name, signed
    // by a CA it does not trust
    let server_pki_is_unknown = LeafKind::UnknownCa;
    let pki = Pki::new();
    let leaf = pki.leaf(server_pki_is_unknown);
    let server = tls_server::implicit_tls(server_config(&leaf, Versions::Default)).await;
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![server.port()],
        basic_auth: None,
    })
    .await;
    let files = Files::new(PASSWORD);
    let (out, _) = probe_via(
        &proxy.url(),
        false,
        server.port(),
        &pki.ca_file,
        &files,
        "10s",
    )
    .await;
    assert_failed(&out, Phase::Tls, Reason::CertUntrusted);
    let tls = out.tls.as_ref().expect("certificate facts kept");
    assert!(tls.cert_issuer.contains("some other CA"), "{tls:?}");
    let hint = o365_mail_exporter::verdict::hint(out.reason.as_str()).expect("a hint");
    assert!(hint.contains("interception"), "{hint}");
}

#[tokio::test]
async fn a_proxy_that_is_down_is_proxy_connect_failed_within_the_deadline() {
    let port = tls_server::refused_port();
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let (out, _server, _pki, _files) =
        endpoint_through(&url, true, LeafKind::Valid, PASSWORD, "2s").await;
    assert_failed(&out, Phase::Connect, Reason::ProxyConnectFailed);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(out.detail.contains(&url), "{}", out.detail);

    // a proxy name that does not resolve: phase dns, same reason
    let (out, _server, _pki, _files) = endpoint_through(
        "http://proxy.test.invalid:3128",
        false,
        LeafKind::Valid,
        PASSWORD,
        "2s",
    )
    .await;
    assert_failed(&out, Phase::Dns, Reason::ProxyConnectFailed);

    // the token requests: HTTPS (CONNECT) and plain HTTP (forwarded)
    let idp = idp().await;
    let files = Files::new(PASSWORD);
    for token_url in [
        format!("https://127.0.0.1:9/{}/oauth2/v2.0/token", idp.tenant()),
        idp.token_url(),
    ] {
        let yaml = format!(
            "{}{}",
            proxy_yaml(&url, true),
            credential_yaml(&idp, &token_url, None)
        );
        let t = Instant::now();
        let e = fetch(&load(&yaml, files.path()))
            .await
            .expect_err("no proxy");
        assert_eq!(
            e.reason,
            TokenReason::ProxyConnectFailed,
            "{token_url}: {e:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_no_password("the token error", &e.message);
    }
    assert_eq!(idp.stats().token_requests(), 0);
}

#[tokio::test]
async fn connect_refused_by_the_proxys_policy_is_proxy_refused() {
    let pki = Pki::new();
    let server =
        tls_server::implicit_tls(server_config(&pki.leaf(LeafKind::Valid), Versions::Default))
            .await;
    // CONNECT only to 443: the server's port is not allowed
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![443],
        basic_auth: None,
    })
    .await;
    let files = Files::new(PASSWORD);
    let (out, _) = probe_via(
        &proxy.url(),
        false,
        server.port(),
        &pki.ca_file,
        &files,
        "10s",
    )
    .await;
    assert_failed(&out, Phase::Connect, Reason::ProxyRefused);
    assert!(
        out.detail.contains("answered 403") && out.detail.contains("policy"),
        "{}",
        out.detail
    );
    assert!(
        server.log.entries().iter().all(|e| !e.starts_with("* tls")),
        "nothing reached the server"
    );

    // the token request to a refused port
    let idp = idp().await;
    let front = tls_front(
        idp.addr(),
        server_config(&pki.leaf(LeafKind::Valid), Versions::Default),
    )
    .await;
    let https = format!(
        "https://127.0.0.1:{}/{}/oauth2/v2.0/token",
        front.port(),
        idp.tenant()
    );
    let yaml = format!(
        "{}{}",
        proxy_yaml(&proxy.url(), false),
        credential_yaml(&idp, &https, Some(&pki.ca_file))
    );
    let e = fetch(&load(&yaml, files.path()))
        .await
        .expect_err("refused");
    assert_eq!(e.reason, TokenReason::ProxyRefused, "{e:?}");
    // the proxy's status, learnt by a second CONNECT of our own
    assert!(e.message.contains("answered 403"), "{e:?}");
    assert_eq!(idp.stats().token_requests(), 0);

    // the endpoint check without credentials against a proxy that wants them
    let auth_proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![server.port()],
        basic_auth: Some((USER.into(), "other".into())),
    })
    .await;
    for auth in [false, true] {
        let (out, _) = probe_via(
            &auth_proxy.url(),
            auth,
            server.port(),
            &pki.ca_file,
            &files,
            "10s",
        )
        .await;
        assert_failed(&out, Phase::Connect, Reason::ProxyAuthRequired);
        // 407 without credentials, 401 (tinyproxy) to wrong ones
        let want = if auth { "answered 401" } else { "answered 407" };
        assert!(out.detail.contains(want), "{}", out.detail);
        assert_no_password("the outcome", &explain(&out));
    }
}

#[tokio::test]
async fn hostile_proxies_fail_classified_within_the_deadline_and_bounded() {
    let pki = Pki::new();
    let files = Files::new(PASSWORD);
    let idp = idp().await;
    for (kind, reason) in [
        (Hostile::Garbage, Reason::ProtocolError),
        (Hostile::EndlessHeaders, Reason::ReplyTooLong),
        (Hostile::EndlessLine, Reason::ReplyTooLong),
        (Hostile::Silent, Reason::Timeout),
        (Hostile::ExtraBytes, Reason::ProtocolError),
    ] {
        let bad = hostile(kind).await;
        let url = format!("http://127.0.0.1:{}", bad.port());
        let yaml = format!(
            "{}endpoints:\n  - {{name: e, host: login.test.invalid, port: 443, tls: implicit, ca_file: {}, timeout: 1s}}\n",
            proxy_yaml(&url, true),
            pki.ca_file.display()
        );
        let cfg = load(&yaml, files.path());
        let ep = &cfg.endpoints[0];
        assert!(
            ep.proxy.is_some(),
            "port 443 implicit TLS follows the proxy"
        );
        let t = Instant::now();
        let out = probe(ep, &TlsClient::new(ep.ca_file.as_deref()).expect("CA")).await;
        let took = t.elapsed();
        assert_failed(&out, Phase::Connect, reason);
        assert!(took < Duration::from_millis(1500), "{kind:?}: {took:?}");
        assert!(out.detail.contains(&url), "{kind:?}: {}", out.detail);
        let kept: usize = out.transcript.lines().map(|l| l.text.len()).sum();
        assert!(kept < 64 * 1024, "{kind:?}: transcript holds {kept} bytes");

        // the token request through the same proxy
        let https = format!(
            "https://login.test.invalid/{}/oauth2/v2.0/token",
            idp.tenant()
        );
        let yaml = format!(
            "{}{}",
            proxy_yaml(&url, true),
            credential_yaml(&idp, &https, None).replace("timeout: 5s", "timeout: 1s")
        );
        let t = Instant::now();
        let e = fetch(&load(&yaml, files.path()))
            .await
            .expect_err("hostile proxy");
        let took = t.elapsed();
        // after a 200 hyper-util drops what it read beyond the answer, so the extra bytes end
        // the TLS handshake instead (the endpoint check, reading line by line, names them)
        let want = match kind {
            Hostile::Silent => TokenReason::Timeout,
            Hostile::ExtraBytes => TokenReason::Network,
            _ => TokenReason::ProxyRefused,
        };
        assert_eq!(e.reason, want, "{kind:?}: {e:?}");
        assert!(took < Duration::from_millis(1500), "{kind:?}: {took:?}");
        assert_no_password("the token error", &e.message);

        // the flood stopped long before its cap: the clients hung up instead of buffering it
        drop(cfg);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written: Vec<usize> = bad.written.lock().expect("lock").clone();
        assert!(
            written.iter().all(|w| *w < HOSTILE_CAP / 4),
            "{kind:?}: {written:?}"
        );
        crate::reliability::report!(
            "proxy: hostile {kind:?}: endpoint {} in {took:?}, token {}, the proxy wrote {written:?} bytes",
            out.reason,
            e.reason
        );
    }
}

#[tokio::test]
async fn login_follows_the_proxy_by_default_and_mail_endpoints_never_do() {
    let files = Files::new(PASSWORD);
    let yaml = format!(
        "{}  no_proxy: [internal.example]\nendpoints:\n\
         \x20 - {{name: login, service: login}}\n\
         \x20 - {{name: imap, service: imap}}\n\
         \x20 - {{name: smtp, service: smtp}}\n\
         \x20 - {{name: direct, service: login, via_proxy: false}}\n\
         \x20 - {{name: inside, host: sso.internal.example, port: 443}}\n\
         \x20 - {{name: alt, host: 127.0.0.1, port: 8443, via_proxy: true}}\n",
        proxy_yaml("http://proxy.corp.example:3128", true)
    );
    let cfg = load(&yaml, files.path());
    let via: Vec<(&str, bool)> = cfg
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.proxy.is_some()))
        .collect();
    assert_eq!(
        via,
        [
            ("login", true),
            ("imap", false),
            ("smtp", false),
            ("direct", false),
            ("inside", false),
            ("alt", true)
        ]
    );
    let p = cfg.proxy.as_deref().expect("proxy");
    assert_eq!(p.origin, ProxyOrigin::Config);
    assert_eq!((p.host.as_str(), p.port), ("proxy.corp.example", 3128));
    assert_no_password("Debug", &format!("{p:?}"));
    // without endpoints: the cloud's four, login through the proxy
    let cfg = load(
        &proxy_yaml("http://proxy.corp.example:3128", false),
        files.path(),
    );
    let via: Vec<(&str, bool)> = cfg
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.proxy.is_some()))
        .collect();
    assert_eq!(
        via,
        [
            ("login", true),
            ("imap", false),
            ("pop3", false),
            ("smtp", false)
        ]
    );
}

#[test]
fn config_check_and_check_show_the_proxy_without_its_password() {
    use crate::support::exporter::{bin, write};
    let files = Files::new(PASSWORD);
    let closed = tls_server::refused_port();
    let cfg = write(
        files.path(),
        "c.yaml",
        &format!(
            "{}  no_proxy: [localhost]\nendpoints:\n  - {{name: login, host: login.test.invalid, port: 443, timeout: 1s}}\n",
            proxy_yaml(&format!("http://127.0.0.1:{closed}"), true)
        ),
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("runs");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let c = cfg.to_str().expect("utf8");
    let (code, text) = run(&["--config.file", c, "--config.check"], &[]);
    assert_eq!(code, Some(0), "{text}");
    let want = format!(
        "proxy http://127.0.0.1:{closed}, user {USER} with a password, no_proxy localhost for token and Graph requests and endpoint checks login"
    );
    assert!(text.contains(&want), "{text}");
    assert_no_password("--config.check", &text);

    let (code, text) = run(&["check", "--config.file", c], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&want), "{text}");
    assert!(
        text.contains(&format!(
            "login.test.invalid:443 via proxy http://127.0.0.1:{closed}  reason=proxy_connect_failed"
        )),
        "{text}"
    );
    assert_no_password("check", &text);
    let (_, json) = run(&["check", "--config.file", c, "--format", "json"], &[]);
    assert!(
        json.contains("\"reason\": \"proxy_connect_failed\""),
        "{json}"
    );
    assert_no_password("check --format json", &json);

    // from the environment: credentials inside HTTPS_PROXY stay secret, NO_PROXY is read
    let env_cfg = write(
        files.path(),
        "env.yaml",
        "proxy:\n  from_env: true\nendpoints:\n  - {name: login, host: login.test.invalid, port: 443}\n",
    );
    let e = env_cfg.to_str().expect("utf8");
    let proxy_env = format!("http://{USER}:{PASSWORD}@127.0.0.1:{closed}");
    let (code, text) = run(
        &["--config.file", e, "--config.check"],
        &[
            ("HTTPS_PROXY", &proxy_env),
            ("NO_PROXY", "localhost,.internal"),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("proxy http://127.0.0.1:{closed}, user {USER} with a password, no_proxy localhost,.internal (from HTTPS_PROXY)")),
        "{text}"
    );
    assert_no_password("--config.check (from_env)", &text);
    let (code, text) = run(
        &["--config.file", e, "--config.check"],
        &[("HTTPS_PROXY", ""), ("https_proxy", "")],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no proxy: proxy.from_env is set"), "{text}");
    // a broken HTTPS_PROXY with a password in it: the error does not quote it
    let bad = format!("http://{USER}:{PASSWORD}@127.0.0.1");
    let (code, text) = run(
        &["--config.file", e, "--config.check"],
        &[("HTTPS_PROXY", &bad)],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("needs a port"), "{text}");
    assert_no_password("--config.check error", &text);
}

#[tokio::test]
async fn graph_checks_go_through_the_proxy_and_name_it_when_it_is_down() {
    use o365_mail_exporter::config::GraphCheck;
    use o365_mail_exporter::fake_idp::{FakeGraph, GraphApplication, GraphUser};
    use o365_mail_exporter::graph::{self, GraphReason};

    let now = crate::support::fake_idp::now();
    let graph = FakeGraph::default()
        .application(GraphApplication::new(APP).secret(
            "11111111-aaaa-bbbb-cccc-000000000001",
            "ece",
            SECRET,
            now - 86_400,
            now + 90 * 86_400,
        ))
        .user(GraphUser::new("alice@contoso.test").exchange("Enabled"))
        .service("Exchange", "Exchange Online", "serviceOperational");
    let idp = FakeIdp::builder()
        .app(App::new(APP).secret(SECRET).roles([
            "Application.Read.All",
            "User.Read.All",
            "ServiceHealth.Read.All",
        ]))
        .graph(graph)
        .start()
        .await
        .expect("fake starts");
    let proxy = Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![],
        basic_auth: Some((USER.into(), PASSWORD.into())),
    })
    .await;
    let files = Files::new(PASSWORD);
    let yaml = |proxy_url: &str| {
        format!(
            "{}state_dir: {dir}\nendpoints: []\nservers:\n  imap: {{host: 127.0.0.1, port: {port}}}\n\
             credentials:\n  - {{name: app, tenant: {tenant}, client_id: {APP}, grant: client_credentials, authority: {base}, client_secret_file: secret.txt, graph: {{graph_url: {base}, timeout: 5s}}}}\n\
             mailboxes:\n  - {{name: alice, address: alice@contoso.test, credential: app, protocols: [imap]}}\n",
            proxy_yaml(proxy_url, true),
            dir = files.path().display(),
            port = tls_server::refused_port(),
            tenant = idp.tenant(),
            base = idp.base_url(),
        )
    };
    let cfg = load(&yaml(&proxy.url()), files.path());
    let state = Arc::new(State::new());
    state.reconcile_tokens(&[("app".to_string(), "client_credentials", None)]);
    graph::run_once(&cfg, &state).await;
    let snap = state.graph.snapshot();
    for c in GraphCheck::ALL {
        let r = &snap.checks[&("app".to_string(), c)];
        assert_eq!(
            r.reason,
            GraphReason::Ok,
            "{c:?}: {}\n{}",
            r.detail,
            proxy.log()
        );
    }
    assert!(
        proxy
            .wait_log(
                &format!("GET {}/v1.0/", idp.base_url()),
                Duration::from_secs(2)
            )
            .await,
        "Graph went through the proxy: {}",
        proxy.log()
    );

    // the proxy down while the token endpoint is reached directly (`localhost` in no_proxy):
    // each check is `network`, and the detail names the proxy
    let down = format!("http://127.0.0.1:{}", tls_server::refused_port());
    let text = yaml(&down)
        .replace(
            "  password_file: proxy-password\n",
            "  password_file: proxy-password\n  no_proxy: [localhost]\n",
        )
        .replace(
            &format!("authority: {}", idp.base_url()),
            &format!("authority: http://localhost:{}", idp.addr().port()),
        );
    let cfg = load(&text, files.path());
    let state = Arc::new(State::new());
    state.reconcile_tokens(&[("app".to_string(), "client_credentials", None)]);
    graph::run_once(&cfg, &state).await;
    let snap = state.graph.snapshot();
    for c in GraphCheck::ALL {
        let r = &snap.checks[&("app".to_string(), c)];
        assert_eq!(r.reason, GraphReason::Network, "{c:?}: {}", r.detail);
        assert!(
            r.detail.contains(&format!("cannot reach the proxy {down}")),
            "{c:?}: {}",
            r.detail
        );
        assert_no_password("the Graph detail", &r.detail);
    }
}
