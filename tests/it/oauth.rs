//! The token lifecycle end to end against a scripted token endpoint on 127.0.0.1: each grant,
//! rotation with a strict server, store crash-safety, every failure reason, `Retry-After`, a
//! one-hour outage on tokio's paused clock, garbled and silent answers, the `login` command's
//! flows and its identity check, and canary secrets that must never leak.
//!
//! The scripted endpoint ([`Idp`]) is deliberately tiny: one handler closure decides each answer,
//! and every request is recorded with the (tokio) time it arrived, so tests can count requests
//! per five-minute window the way Microsoft's loop detection does.
#![allow(clippy::unwrap_used)] // scaffolding outside #[test] functions: a panic is a failed test

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use o365_mail_exporter::config::{self, ClientAuth, Credential, GrantKind, SecretBytes};
use o365_mail_exporter::oauth::inspect::unsigned_jwt;
use o365_mail_exporter::oauth::login::{self, LoginEvent, Prompt};
use o365_mail_exporter::oauth::store::{Fault, Step};
use o365_mail_exporter::oauth::{
    StoredToken, TokenReason, TokenSource, TokenStore, TokenUnavailable, Tokens, Tuning,
};
use o365_mail_exporter::probe::Protocol;
use o365_mail_exporter::state::State;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "CANARY-SECRET-7f3a";
const TENANT: &str = "contoso.example";
const CLIENT: &str = "app-id-1234";
const USER: &str = "support@contoso.example";

// ---------------------------------------------------------------------------------------------
// The scripted token endpoint

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    form: BTreeMap<String, String>,
    at: Instant,
}

impl Req {
    fn f(&self, k: &str) -> &str {
        self.form.get(k).map(String::as_str).unwrap_or("")
    }
}

enum Reply {
    Http(u16, Vec<(String, String)>, String),
    /// Accept, read the request, never answer.
    Hang,
    /// Announce and start sending 5 MiB.
    Huge,
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply::Http(
        status,
        vec![(
            "Content-Type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body.to_string(),
    )
}

fn error_reply(status: u16, error: &str, code: i64) -> Reply {
    json_reply(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: scripted.\r\nTrace ID: t-1\r\nCorrelation ID: c-1"),
            "error_codes": [code],
            "trace_id": "trace-1", "correlation_id": "corr-1",
            "timestamp": "2026-01-01 00:00:00Z"
        }),
    )
}

type Handler = Box<dyn FnMut(&Req) -> Reply + Send>;
/// A fixed answer, for tables of cases.
type Canned = Box<dyn Fn() -> Reply + Send + Sync>;

struct Idp {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    handler: Arc<Mutex<Handler>>,
}

impl Idp {
    async fn start(handler: impl FnMut(&Req) -> Reply + Send + 'static) -> Idp {
        Idp::start_with(handler, None).await
    }

    /// Over TLS with `config`'s certificate.
    async fn start_with(
        handler: impl FnMut(&Req) -> Reply + Send + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Box::new(handler)));
        let (l, h) = (log.clone(), handler.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (l, h) = (l.clone(), h.clone());
                match &tls {
                    None => {
                        tokio::spawn(serve(sock, l, h));
                    }
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                        tokio::spawn(async move {
                            if let Ok(s) = acceptor.accept(sock).await {
                                serve(s, l, h).await;
                            }
                        });
                    }
                }
            }
        });
        Idp { addr, log, handler }
    }

    fn set(&self, handler: impl FnMut(&Req) -> Reply + Send + 'static) {
        *self.handler.lock().unwrap() = Box::new(handler);
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn token_requests(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/token"))
            .collect()
    }
}

async fn serve(
    mut sock: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    log: Arc<Mutex<Vec<Req>>>,
    handler: Arc<Mutex<Handler>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("/").to_string();
    let u = url::Url::parse(&format!("http://x{target}")).unwrap();
    let req = Req {
        method,
        path: u.path().to_string(),
        query: u.query_pairs().into_owned().collect(),
        form: url::form_urlencoded::parse(&buf[head_end..head_end + len])
            .into_owned()
            .collect(),
        at: Instant::now(),
    };
    log.lock().unwrap().push(req.clone());
    let reply = (handler.lock().unwrap())(&req);
    match reply {
        Reply::Http(status, headers, body) => {
            let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
            let _ = sock.write_all(out.as_bytes()).await;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(86_400)).await;
        }
        Reply::Huge => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n")
                .await;
            let block = vec![b'{'; 64 * 1024];
            for _ in 0..80 {
                if sock.write_all(&block).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sock.shutdown().await;
}

/// A token answer: a JWT-shaped access token with `claims`, lifetime, optional refresh and id
/// tokens.
fn token_reply(claims: Value, expires_in: u64, rt: Option<&str>, id: Option<Value>) -> Reply {
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": unsigned_jwt(&claims),
    });
    if let Some(rt) = rt {
        body["refresh_token"] = json!(rt);
        body["scope"] = json!("https://outlook.office.com/IMAP.AccessAsUser.All");
    }
    if let Some(id) = id {
        body["id_token"] = json!(unsigned_jwt(&id));
    }
    json_reply(200, body)
}

fn app_claims(n: usize) -> Value {
    json!({"aud": "https://outlook.office365.com", "roles": ["IMAP.AccessAsApp"], "n": n, "canary": "CANARY-AT"})
}

fn user_claims(upn: &str) -> Value {
    json!({"aud": "https://outlook.office.com", "upn": upn, "scp": "IMAP.AccessAsUser.All"})
}

// ---------------------------------------------------------------------------------------------
// Credentials, sources, logs

fn config_for(idp: &Idp, state_dir: &std::path::Path, extra: &str) -> config::Config {
    let yaml = format!(
        "state_dir: {}\ncredentials:\n  - name: ece\n    tenant: {TENANT}\n    client_id: {CLIENT}\n    grant: refresh_token\n    authority: {}\n{extra}",
        state_dir.display(),
        idp.base()
    );
    config::load_str(&yaml, "test", std::path::Path::new(".")).expect("valid config")
}

/// An app-only credential with the canary secret against `idp`.
fn app_cred(idp: &Idp) -> Credential {
    let dir = std::env::temp_dir();
    let mut c = config_for(idp, &dir, "").credentials[0].clone();
    c.grant = GrantKind::ClientCredentials;
    c.client_auth = ClientAuth::Secret(SecretString::from(SECRET.to_string()));
    c.scopes = vec!["https://outlook.office365.com/.default".into()];
    c.protocols = vec![Protocol::Imap];
    c
}

fn user_cred(idp: &Idp) -> Credential {
    let dir = std::env::temp_dir();
    let mut c =
        config_for(idp, &dir, &format!("    expected_identity: {USER}\n")).credentials[0].clone();
    c.protocols = vec![Protocol::Imap];
    c
}

struct Rig {
    state: Arc<State>,
    store: Arc<TokenStore>,
    source: Arc<TokenSource>,
    _dir: Option<tempfile::TempDir>,
}

fn rig(cred: Credential, store: Option<TokenStore>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store.unwrap_or_else(|| TokenStore::new(dir.path())));
    rig_with(cred, store, Some(dir))
}

fn rig_with(cred: Credential, store: Arc<TokenStore>, dir: Option<tempfile::TempDir>) -> Rig {
    let state = Arc::new(State::new());
    state.reconcile_tokens(&[(cred.name.clone(), cred.grant.as_str(), None)]);
    let source = Arc::new(
        TokenSource::with_tuning(
            Arc::new(cred),
            store.clone(),
            state.clone(),
            Tuning::default(),
        )
        .expect("source"),
    );
    Rig {
        state,
        store,
        source,
        _dir: dir,
    }
}

impl Rig {
    fn record(&self) -> o365_mail_exporter::state::TokenRecord {
        self.state.token("ece").expect("record")
    }

    fn spawn_run(&self) -> Running {
        let cancel = CancellationToken::new();
        let (s, c) = (self.source.clone(), cancel.clone());
        let task = tokio::spawn(async move { s.run(c).await });
        Running { cancel, task }
    }
}

/// A source's background loop.
struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Cancel and wait: a request in flight finishes first (its rotated token must be saved).
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("the loop does not panic");
    }
}

fn seed(store: &TokenStore, rt: &str) {
    store
        .save(
            "ece",
            &StoredToken {
                refresh_token: SecretString::from(rt.to_string()),
                client_id: CLIENT.into(),
                identity: Some(USER.into()),
                saved_at: 0,
            },
        )
        .unwrap();
}

fn stored(store: &TokenStore) -> Option<String> {
    store
        .load("ece")
        .unwrap()
        .map(|t| t.refresh_token.expose_secret().to_string())
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

/// Capture every log line of this thread (tests run on a current-thread runtime).
fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

fn assert_no_canary(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} leaks {s:?}:\n{text}");
    }
    assert!(!text.contains("CANARY"), "{what} leaks a canary:\n{text}");
}

/// Most requests in any 5-minute window (Microsoft's loop detection window).
fn max_in_five_minutes(reqs: &[Req]) -> usize {
    let mut best = 0;
    for (i, r) in reqs.iter().enumerate() {
        let n = reqs[i..]
            .iter()
            .take_while(|x| x.at.duration_since(r.at) < Duration::from_secs(300))
            .count();
        best = best.max(n);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Grants

#[tokio::test]
async fn client_credentials_with_secret() {
    let idp = Idp::start(|r: &Req| {
        if r.f("grant_type") == "client_credentials"
            && r.f("client_secret") == SECRET
            && r.f("client_id") == CLIENT
            && r.f("scope") == "https://outlook.office365.com/.default"
        {
            token_reply(app_claims(1), 3599, None, None)
        } else {
            error_reply(401, "invalid_client", 7000215)
        }
    })
    .await;
    let rig = rig(app_cred(&idp), None);
    let t = rig.source.access_token().await.expect("token");
    assert!(t.secret.expose_secret().starts_with("eyJ"));
    // cached: a second call sends nothing
    rig.source.access_token().await.expect("token");
    assert_eq!(idp.token_requests().len(), 1);
    let rec = rig.record();
    assert_eq!(rec.requests, 1);
    assert_eq!(rec.last_reason, "ok");
    assert_eq!(rec.last_attempt_success, Some(true));
    assert!(rec.expires.unwrap() - rec.issued.unwrap() == 3599);
    assert_eq!(
        rec.scopes,
        vec![
            ("IMAP.AccessAsApp".to_string(), true),
            ("aud:exchange".to_string(), true)
        ]
    );
    assert_eq!(rec.request_duration.count, 1);
}

#[tokio::test]
async fn tls_to_the_token_endpoint_trusts_the_ca_file_or_the_mozilla_roots() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let idp = Idp::start_with(
        |_: &Req| token_reply(app_claims(1), 3599, None, None),
        Some(Arc::new(server)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut cred = app_cred(&idp);
    cred.token_url = format!("https://{}/{TENANT}/oauth2/v2.0/token", idp.addr);
    // the Mozilla roots do not know this CA: a classified failure naming the certificate
    let rig1 = rig(cred.clone(), None);
    let e = rig1.source.access_token().await.unwrap_err();
    assert_eq!(e.reason, TokenReason::Network, "{}", e.message);
    assert!(
        e.message.to_lowercase().contains("certificate"),
        "{}",
        e.message
    );
    // with the CA file: a token
    cred.ca_file = Some(ca_file);
    let rig2 = rig(cred, None);
    rig2.source.access_token().await.expect("token over TLS");
    assert_eq!(idp.token_requests().len(), 1);
}

fn verify_assertion(r: &Req, token_url: &str, public_key: &[u8]) -> Result<(), String> {
    use aws_lc_rs::signature::{
        UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };
    if r.f("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return Err("assertion type".into());
    }
    if r.form.contains_key("client_secret") {
        return Err("secret sent with a certificate".into());
    }
    let a = r.f("client_assertion");
    let (input, sig) = a.rsplit_once('.').ok_or("shape")?;
    let d = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| e.to_string())
    };
    let mut parts = input.split('.');
    let header: Value =
        serde_json::from_slice(&d(parts.next().ok_or("h")?)?).map_err(|e| e.to_string())?;
    let claims: Value =
        serde_json::from_slice(&d(parts.next().ok_or("c")?)?).map_err(|e| e.to_string())?;
    let alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match header["alg"].as_str()
    {
        Some("PS256") if header["x5t#S256"].is_string() => &RSA_PSS_2048_8192_SHA256,
        Some("RS256") if header["x5t"].is_string() => &RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(format!("header {header}")),
    };
    UnparsedPublicKey::new(alg, public_key)
        .verify(input.as_bytes(), &d(sig)?)
        .map_err(|_| "signature".to_string())?;
    let exp = claims["exp"].as_i64().unwrap_or(0) - claims["nbf"].as_i64().unwrap_or(0);
    if claims["aud"] != token_url
        || claims["iss"] != CLIENT
        || claims["sub"] != CLIENT
        || !claims["jti"].is_string()
        || !(1..=600).contains(&exp)
    {
        return Err(format!("claims {claims}"));
    }
    Ok(())
}

#[tokio::test]
async fn client_credentials_with_certificate() {
    use aws_lc_rs::signature::KeyPair as _;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ece-monitor".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let key_der = kp.serialize_der();
    let public = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&key_der)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let idp = Idp::start(|_: &Req| error_reply(500, "x", 1)).await;
    let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", idp.base());
    let v = verdicts.clone();
    let tu = token_url.clone();
    idp.set(move |r: &Req| match verify_assertion(r, &tu, &public) {
        Ok(()) => {
            v.lock().unwrap().push(Ok(()));
            token_reply(app_claims(1), 3599, None, None)
        }
        Err(e) => {
            v.lock().unwrap().push(Err(e));
            error_reply(401, "invalid_client", 700027)
        }
    });
    let mut cred = app_cred(&idp);
    cred.client_auth = ClientAuth::Certificate {
        cert_der: cert.der().to_vec(),
        key_der: SecretBytes(key_der),
    };
    for alg in [
        o365_mail_exporter::oauth::assertion::Alg::Ps256,
        o365_mail_exporter::oauth::assertion::Alg::Rs256,
    ] {
        let state = Arc::new(State::new());
        state.reconcile_tokens(&[("ece".into(), "client_credentials", None)]);
        let dir = tempfile::tempdir().unwrap();
        let src = TokenSource::with_tuning(
            Arc::new(cred.clone()),
            Arc::new(TokenStore::new(dir.path())),
            state.clone(),
            Tuning {
                assertion_alg: alg,
                ..Tuning::default()
            },
        )
        .unwrap();
        src.access_token()
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}; server saw {:?}", verdicts.lock().unwrap()));
    }
    assert_eq!(*verdicts.lock().unwrap(), vec![Ok(()), Ok(())]);
}

/// A strict rotating server: only the newest refresh token works; each use issues the next and
/// revokes the one used.
fn strict_rotation(
    current: Arc<Mutex<String>>,
    counter: Arc<AtomicUsize>,
) -> impl FnMut(&Req) -> Reply + Send {
    move |r: &Req| {
        let mut cur = current.lock().unwrap();
        if r.f("grant_type") != "refresh_token" || r.f("client_id") != CLIENT {
            return error_reply(400, "unsupported_grant_type", 70003);
        }
        if r.f("refresh_token") != *cur {
            return error_reply(400, "invalid_grant", 70000);
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        *cur = format!("CANARY-RT-{n}");
        token_reply(user_claims(USER), 3600, Some(&cur), None)
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_token_rotation_in_strict_mode_survives_restarts() {
    let current = Arc::new(Mutex::new("CANARY-RT-0".to_string()));
    let counter = Arc::new(AtomicUsize::new(0));
    let idp = Idp::start(strict_rotation(current.clone(), counter.clone())).await;
    let rig = rig(user_cred(&idp), None);
    seed(&rig.store, "CANARY-RT-0");
    let running = rig.spawn_run();
    // off the refresh instants, so a check never races a refresh in flight
    tokio::time::sleep(Duration::from_secs(1)).await;
    // five hours: refreshed ahead of each expiry (10 min before), every time with rotation
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(rig.source.access_token().await.is_ok());
        // the store always holds the server's newest token (persisted before use)
        assert_eq!(
            stored(&rig.store).as_deref(),
            Some(current.lock().unwrap().as_str())
        );
    }
    running.stop().await;
    let n = counter.load(Ordering::SeqCst);
    // one request per 50 minutes: 5 h / 50 min + the first
    assert!((6..=8).contains(&n), "{n} refreshes");
    assert_eq!(idp.token_requests().len(), n, "no failed requests");
    let rec = rig.record();
    assert_eq!(rec.last_reason, "ok");
    assert!(rec.refresh_token_rotated.is_some());
    assert_eq!(rec.identity_match, Some(true));
    // a restart reads the newest token from disk and works with the strict server
    let again = rig_with(user_cred(&idp), rig.store.clone(), None);
    again
        .source
        .access_token()
        .await
        .expect("restart picks up the rotated token");
}

#[tokio::test]
async fn no_refresh_token_sends_nothing_and_says_run_login() {
    let idp = Idp::start(|_: &Req| error_reply(500, "x", 1)).await;
    let rig = rig(user_cred(&idp), None);
    let e = rig.source.access_token().await.unwrap_err();
    assert_eq!(e.reason, TokenReason::NoRefreshToken);
    assert!(
        e.message.contains("login --credential ece"),
        "{}",
        e.message
    );
    assert!(idp.requests().is_empty());
    let rec = rig.record();
    assert_eq!(rec.requests, 0);
    assert_eq!(rec.failures.get("no_refresh_token"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_login_while_running_is_picked_up_within_one_interval() {
    let current = Arc::new(Mutex::new("CANARY-RT-0".to_string()));
    let idp = Idp::start(strict_rotation(current, Arc::new(AtomicUsize::new(0)))).await;
    let rig = rig(user_cred(&idp), None);
    let running = rig.spawn_run();
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(rig.record().last_reason, "no_refresh_token");
    // `login` stores a token (as the command does, from another process)
    seed(&rig.store, "CANARY-RT-0");
    let stored_at = Instant::now();
    // the credential's interval is 60 s: well before the 15-minute slow retry
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(rig.record().last_reason, "ok", "{}", rig.record().detail);
    let reqs = idp.token_requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].at.duration_since(stored_at) <= Duration::from_secs(60));
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Store crash-safety through the source

#[tokio::test]
async fn a_failed_save_at_every_step_keeps_a_usable_refresh_token() {
    for step in Step::ALL {
        for fault in [Fault::Fail(std::io::ErrorKind::StorageFull), Fault::Crash] {
            // Microsoft's own semantics: the old refresh token stays valid after use
            let issued = Arc::new(Mutex::new(vec!["RT-0".to_string()]));
            let i2 = issued.clone();
            let idp = Idp::start(move |r: &Req| {
                let mut all = i2.lock().unwrap();
                if !all.iter().any(|t| t == r.f("refresh_token")) {
                    return error_reply(400, "invalid_grant", 70000);
                }
                let next = format!("RT-{}", all.len());
                all.push(next.clone());
                token_reply(user_claims(USER), 3600, Some(&next), None)
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            let plain = TokenStore::new(dir.path());
            seed(&plain, "RT-0");
            let failing = plain
                .clone()
                .with_failpoint(Arc::new(move |s| (s == step).then_some(fault)));
            let rig = rig_with(user_cred(&idp), Arc::new(failing), None);
            // the token is obtained and used although the save failed
            rig.source
                .access_token()
                .await
                .expect("token despite the failed save");
            let rec = rig.record();
            assert_eq!(rec.last_reason, "store_error", "{step:?}");
            assert!(rec.detail.contains(step.as_str()), "{}", rec.detail);
            // after a "restart" the file holds a usable token: the old one, or the new one once
            // the rename happened
            let on_disk = stored(&plain).expect("a token survives");
            let want = if step == Step::SyncDir {
                "RT-1"
            } else {
                "RT-0"
            };
            assert_eq!(on_disk, want, "{step:?} {fault:?}");
            let restarted = rig_with(user_cred(&idp), Arc::new(plain.clone()), None);
            restarted
                .source
                .access_token()
                .await
                .unwrap_or_else(|e| panic!("{step:?} {fault:?}: restart failed: {e}"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_read_only_state_dir_keeps_the_new_token_in_memory_until_it_can_be_saved() {
    let current = Arc::new(Mutex::new("CANARY-RT-0".to_string()));
    let idp = Idp::start(strict_rotation(
        current.clone(),
        Arc::new(AtomicUsize::new(0)),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plain = TokenStore::new(dir.path());
    seed(&plain, "CANARY-RT-0");
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let store = plain.clone().with_failpoint(Arc::new(move |s| {
        (b.load(Ordering::SeqCst) && s == Step::CreateTemp)
            .then_some(Fault::Fail(std::io::ErrorKind::ReadOnlyFilesystem))
    }));
    let rig = rig_with(user_cred(&idp), Arc::new(store), None);
    let running = rig.spawn_run();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rec = rig.record();
    assert_eq!(rec.last_reason, "store_error");
    assert!(rec.detail.contains("kept in memory"), "{}", rec.detail);
    assert_eq!(
        stored(&plain).as_deref(),
        Some("CANARY-RT-0"),
        "old file untouched"
    );
    // the next refresh (strict server: the old token is dead) uses the in-memory one
    tokio::time::sleep(Duration::from_secs(3100)).await;
    assert_eq!(rig.record().requests, 2);
    assert!(!rig.record().failures.contains_key("reauth_required"));
    // the directory is writable again: the pending token is saved within one tick
    broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(
        stored(&plain).as_deref(),
        Some(current.lock().unwrap().as_str())
    );
    assert_eq!(rig.record().last_reason, "ok");
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test(start_paused = true)]
async fn every_reason_comes_from_its_injected_failure() {
    let (logs, _g) = capture_logs();
    let html = |status| {
        Reply::Http(
            status,
            vec![("Content-Type".into(), "text/html".into())],
            "<html><body>Proxy error CANARY-PAGE</body></html>".into(),
        )
    };
    let cases: Vec<(TokenReason, Canned)> = vec![
        (
            TokenReason::InvalidClientSecret,
            Box::new(|| error_reply(401, "invalid_client", 7000215)),
        ),
        (
            TokenReason::ClientSecretExpired,
            Box::new(|| error_reply(401, "invalid_client", 7000222)),
        ),
        (
            TokenReason::ClientAssertionInvalid,
            Box::new(|| error_reply(401, "invalid_client", 700027)),
        ),
        (
            TokenReason::RefreshTokenExpired,
            Box::new(|| error_reply(400, "invalid_grant", 700082)),
        ),
        (
            TokenReason::GrantRevoked,
            Box::new(|| error_reply(400, "invalid_grant", 50173)),
        ),
        (
            TokenReason::ReauthRequired,
            Box::new(|| error_reply(400, "invalid_grant", 70043)),
        ),
        (
            TokenReason::ConsentRequired,
            Box::new(|| error_reply(400, "invalid_grant", 65001)),
        ),
        (
            TokenReason::MfaRequired,
            Box::new(|| error_reply(400, "interaction_required", 50076)),
        ),
        (
            TokenReason::ConditionalAccess,
            Box::new(|| error_reply(400, "invalid_grant", 53003)),
        ),
        (
            TokenReason::AppNotFound,
            Box::new(|| error_reply(400, "unauthorized_client", 700016)),
        ),
        (
            TokenReason::AppDisabled,
            Box::new(|| error_reply(400, "unauthorized_client", 7000112)),
        ),
        (
            TokenReason::TenantNotFound,
            Box::new(|| error_reply(400, "invalid_request", 90002)),
        ),
        (
            TokenReason::ResourceNotFound,
            Box::new(|| error_reply(400, "invalid_resource", 500011)),
        ),
        (
            TokenReason::InvalidScope,
            Box::new(|| error_reply(400, "invalid_scope", 70011)),
        ),
        (
            TokenReason::ConfigError,
            Box::new(|| error_reply(400, "invalid_request", 50194)),
        ),
        (
            TokenReason::UserDisabled,
            Box::new(|| error_reply(400, "invalid_grant", 50057)),
        ),
        (
            TokenReason::UserNotFound,
            Box::new(|| error_reply(400, "invalid_grant", 50034)),
        ),
        (
            TokenReason::AccountLocked,
            Box::new(|| error_reply(400, "invalid_grant", 50053)),
        ),
        (
            TokenReason::PasswordExpired,
            Box::new(|| error_reply(400, "invalid_grant", 50055)),
        ),
        (
            TokenReason::Throttled,
            Box::new(|| {
                Reply::Http(
                    429,
                    vec![("Retry-After".into(), "60".into())],
                    String::new(),
                )
            }),
        ),
        (
            TokenReason::Throttled,
            Box::new(|| error_reply(400, "invalid_grant", 50196)),
        ),
        (TokenReason::Timeout, Box::new(|| Reply::Hang)),
        (TokenReason::ServerError, Box::new(move || html(503))),
        (
            TokenReason::ServerError,
            Box::new(|| error_reply(503, "temporarily_unavailable", 50033)),
        ),
        (TokenReason::BadResponse, Box::new(move || html(200))),
        (
            TokenReason::BadResponse,
            Box::new(|| {
                Reply::Http(
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    r#"{"access_token": "CANARY-HALF"#.into(),
                )
            }),
        ),
        (
            TokenReason::BadResponse,
            Box::new(|| {
                Reply::Http(
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    r#"{"token_type":"Bearer"}"#.into(),
                )
            }),
        ),
        (TokenReason::BadResponse, Box::new(|| Reply::Huge)),
        (
            TokenReason::Other,
            Box::new(|| error_reply(400, "something_new", 1)),
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (want, reply) in cases {
        let reply = Arc::new(reply);
        let r2 = reply.clone();
        let idp = Idp::start(move |_: &Req| r2()).await;
        let rig = rig(app_cred(&idp), None);
        let started = Instant::now();
        let e: TokenUnavailable = rig.source.access_token().await.unwrap_err();
        // classified within the deadline (10 s default timeout)
        assert!(
            started.elapsed() <= Duration::from_secs(11),
            "{want}: {:?}",
            started.elapsed()
        );
        assert_eq!(e.reason, want, "{}", e.message);
        let rec = rig.record();
        assert_eq!(rec.last_reason, want.as_str());
        assert_eq!(rec.failures.get(want.as_str()), Some(&1));
        assert_eq!(rec.requests, 1);
        assert_no_canary("error", &e.message, &[SECRET]);
        assert_no_canary("detail", &rec.detail, &[SECRET]);
        // in backoff: an immediate second call sends nothing
        let _ = rig.source.access_token().await;
        assert_eq!(idp.token_requests().len(), 1, "{want}");
        seen.insert(want);
    }
    // network: nothing listens
    let idp = Idp::start(|_: &Req| error_reply(500, "x", 1)).await;
    let mut cred = app_cred(&idp);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cred.token_url = format!(
        "http://{}/t/oauth2/v2.0/token",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let rig = rig(cred, None);
    assert_eq!(
        rig.source.access_token().await.unwrap_err().reason,
        TokenReason::Network
    );
    seen.insert(TokenReason::Network);
    // the remaining reasons have their own tests: ok, no_refresh_token, store_error, and the
    // proxy's three against a real tinyproxy (tests/it/proxy.rs)
    for r in TokenReason::ALL {
        if !matches!(
            r,
            TokenReason::Ok
                | TokenReason::NoRefreshToken
                | TokenReason::StoreError
                | TokenReason::ProxyConnectFailed
                | TokenReason::ProxyAuthRequired
                | TokenReason::ProxyRefused
        ) {
            assert!(seen.contains(&r), "no case for {r}");
        }
    }
    let text = logs.text();
    assert!(
        text.contains("trace-1") && text.contains("corr-1"),
        "trace ids are logged"
    );
    assert_no_canary("logs", &text, &[SECRET]);
}

#[tokio::test]
async fn an_endpoint_echoing_the_request_into_its_error_leaks_nothing() {
    let (logs, _g) = capture_logs();
    let echo = |r: &Req| {
        let sent = format!("{}{}", r.f("client_secret"), r.f("refresh_token"));
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(r.form.iter())
            .finish();
        json_reply(
            400,
            json!({
                "error": format!("invalid_request {sent}"),
                "error_description": format!("AADSTS900144: you sent {body}"),
                "error_codes": [900144],
                "trace_id": sent, "correlation_id": sent, "timestamp": sent, "suberror": sent,
            }),
        )
    };
    let idp = Idp::start(echo).await;
    let app = rig(app_cred(&idp), None);
    let e1 = app.source.access_token().await.unwrap_err();
    let user = rig(user_cred(&idp), None);
    seed(&user.store, "CANARY-RT-ECHO");
    let e2 = user.source.access_token().await.unwrap_err();
    assert_eq!(idp.token_requests().len(), 2);
    for (what, text) in [
        ("logs", logs.text()),
        ("error", format!("{} {}", e1.message, e2.message)),
        (
            "detail",
            format!("{} {}", app.record().detail, user.record().detail),
        ),
    ] {
        assert_no_canary(what, &text, &[SECRET, "CANARY-RT-ECHO"]);
    }
    assert!(
        logs.text().contains("token request refused"),
        "the refusal is logged"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let idp = Idp::start(move |_: &Req| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Http(
                429,
                vec![("Retry-After".into(), "120".into())],
                String::new(),
            )
        } else {
            token_reply(app_claims(1), 3599, None, None)
        }
    })
    .await;
    let rig = rig(app_cred(&idp), None);
    let running = rig.spawn_run();
    tokio::time::sleep(Duration::from_secs(300)).await;
    running.stop().await;
    let reqs = idp.token_requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_secs(120) && gap < Duration::from_secs(122),
        "second request after {gap:?}"
    );
    assert_eq!(rig.record().failures.get("throttled"), Some(&1));
    assert_eq!(rig.record().last_reason, "ok");
}

#[tokio::test(start_paused = true)]
async fn an_hour_long_outage_stays_under_loop_detection_and_recovers_within_one_interval() {
    let t0 = Instant::now();
    // the token endpoint is down from 49 minutes (just before the first refresh) for an hour
    let down_from = t0 + Duration::from_secs(49 * 60);
    let down_until = down_from + Duration::from_secs(3600);
    let idp = Idp::start(move |r: &Req| {
        if r.at >= down_from && r.at < down_until {
            error_reply(503, "temporarily_unavailable", 90033)
        } else {
            token_reply(app_claims(1), 3600, None, None)
        }
    })
    .await;
    let rig = rig(app_cred(&idp), None);
    let running = rig.spawn_run();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = rig.source.access_token().await.expect("first token");
    // during the outage the last good token stays in use until (shortly before) it expires
    tokio::time::sleep_until(down_from + Duration::from_secs(120)).await;
    let during = rig
        .source
        .access_token()
        .await
        .expect("old token still in use");
    assert_eq!(during.secret.expose_secret(), first.secret.expose_secret());
    assert_eq!(rig.record().last_reason, "server_error");
    assert!(
        rig.record().detail.contains("stays in use"),
        "{}",
        rig.record().detail
    );
    // after it expired: unavailable, with the reason
    tokio::time::sleep_until(t0 + Duration::from_secs(3600)).await;
    let e = rig.source.access_token().await.unwrap_err();
    assert_eq!(e.reason, TokenReason::ServerError);
    tokio::time::sleep_until(down_until + Duration::from_secs(16 * 60)).await;
    running.stop().await;

    let reqs = idp.token_requests();
    let during: Vec<Req> = reqs
        .iter()
        .filter(|r| r.at >= down_from && r.at < down_until)
        .cloned()
        .collect();
    // 30 s doubling to the 15 min cap: 9 attempts in the hour (measured), jitter aside
    assert!(
        (7..=10).contains(&during.len()),
        "{} requests during the outage",
        during.len()
    );
    let burst = max_in_five_minutes(&reqs);
    assert!(
        burst <= 5,
        "{burst} requests in 5 minutes: loop detection trips at 15"
    );
    // recovery: the first request after the outage succeeds, within one backoff interval
    // (at most the 15 min cap) of its end
    let after: Vec<&Req> = reqs.iter().filter(|r| r.at >= down_until).collect();
    assert!(!after.is_empty(), "no attempt after the outage");
    let waited = after[0].at.duration_since(down_until);
    let last_gap = after[0].at.duration_since(during.last().unwrap().at);
    assert!(
        waited <= last_gap && last_gap <= Duration::from_secs(15 * 60),
        "{waited:?} {last_gap:?}"
    );
    assert_eq!(
        after.len(),
        1,
        "healthy again: one request per token lifetime"
    );
    assert!(rig.source.access_token().await.is_ok());
    assert_eq!(rig.record().last_reason, "ok");
}

#[tokio::test(start_paused = true)]
async fn garbled_and_silent_answers_fail_within_the_deadline_while_the_last_token_stays() {
    let bad: Vec<(&str, Canned)> = vec![
        (
            "malformed",
            Box::new(|| {
                Reply::Http(
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    "{\"access_tok".into(),
                )
            }),
        ),
        (
            "html",
            Box::new(|| {
                Reply::Http(
                    200,
                    vec![("Content-Type".into(), "text/html".into())],
                    "<html>portal</html>".into(),
                )
            }),
        ),
        ("huge", Box::new(|| Reply::Huge)),
        ("silent", Box::new(|| Reply::Hang)),
    ];
    for (name, reply) in bad {
        let good = Arc::new(AtomicBool::new(true));
        let g = good.clone();
        let reply = Arc::new(reply);
        let idp = Idp::start(move |_: &Req| {
            if g.load(Ordering::SeqCst) {
                token_reply(app_claims(1), 3600, None, None)
            } else {
                reply()
            }
        })
        .await;
        let rig = rig(app_cred(&idp), None);
        let running = rig.spawn_run();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = rig.source.access_token().await.unwrap();
        good.store(false, Ordering::SeqCst);
        // refresh is due at 50 min; give it the deadline and a little more
        tokio::time::sleep(Duration::from_secs(50 * 60 + 12)).await;
        let rec = rig.record();
        assert_eq!(rec.requests, 2, "{name}");
        let want = if name == "silent" {
            "timeout"
        } else {
            "bad_response"
        };
        assert_eq!(rec.last_reason, want, "{name}: {}", rec.detail);
        let now = rig
            .source
            .access_token()
            .await
            .expect("last good token in use");
        assert_eq!(
            now.secret.expose_secret(),
            first.secret.expose_secret(),
            "{name}"
        );
        let slow = rec.request_duration.sum;
        assert!(slow <= 10.5, "{name}: the attempt took {slow} s");
        running.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Reload

#[tokio::test(start_paused = true)]
async fn reloads_keep_unchanged_sources_and_their_tokens() {
    let idp = Idp::start(|_: &Req| token_reply(app_claims(1), 3600, None, None)).await;
    let state = Arc::new(State::new());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TokenStore::new(dir.path()));
    let mut tokens = Tokens::new(state.clone(), CancellationToken::new());
    let cred = app_cred(&idp);
    for _ in 0..100 {
        // a fresh, equal credential each time, as a reload builds it
        let fresh = cred.clone();
        let errors = tokens.reconcile(std::slice::from_ref(&fresh), &store);
        assert!(errors.is_empty());
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokens.get("ece").unwrap().access_token().await.unwrap();
    }
    assert_eq!(
        idp.token_requests().len(),
        1,
        "100 reloads, one token request"
    );
    // a changed secret is a new source, which fetches again
    let mut changed = cred.clone();
    changed.client_auth = ClientAuth::Secret(SecretString::from("CANARY-OTHER".to_string()));
    let before = tokens.get("ece").unwrap();
    tokens.reconcile(&[changed], &store);
    assert!(!Arc::ptr_eq(&before, &tokens.get("ece").unwrap()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(idp.token_requests().len(), 2);
    // removed: gone from the set and the state
    tokens.reconcile(&[], &store);
    assert!(tokens.get("ece").is_none());
    assert!(state.token("ece").is_none());
}

// ---------------------------------------------------------------------------------------------
// login

struct Browser {
    events: Arc<Mutex<Vec<LoginEvent>>>,
}

impl Prompt for Browser {
    fn show(&mut self, event: LoginEvent) {
        if let LoginEvent::AuthorizeUrl(url) = &event {
            // the "browser": follows the authorize redirect back to the loopback listener
            let url = url.clone();
            tokio::spawn(async move {
                let _ = reqwest::Client::new().get(url).send().await;
            });
        }
        self.events.lock().unwrap().push(event);
    }
}

fn s256(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// An authorize + token endpoint pair that signs in `who` and checks PKCE.
async fn auth_code_idp(who: &'static str) -> Idp {
    let challenges = Arc::new(Mutex::new(BTreeMap::<String, (String, String)>::new()));
    Idp::start(move |r: &Req| {
        if r.method == "GET" && r.path.ends_with("/authorize") {
            let q = |k: &str| r.query.get(k).cloned().unwrap_or_default();
            if q("response_type") != "code"
                || q("code_challenge_method") != "S256"
                || q("client_id") != CLIENT
            {
                return Reply::Http(400, vec![], "bad authorize".into());
            }
            challenges
                .lock()
                .unwrap()
                .insert("CODE-1".into(), (q("code_challenge"), q("redirect_uri")));
            let loc = format!("{}?code=CODE-1&state={}", q("redirect_uri"), q("state"));
            return Reply::Http(302, vec![("Location".into(), loc)], String::new());
        }
        if r.f("grant_type") == "authorization_code" {
            let Some((challenge, redirect)) = challenges.lock().unwrap().remove(r.f("code")) else {
                return error_reply(400, "invalid_grant", 54005);
            };
            if s256(r.f("code_verifier")) != challenge || r.f("redirect_uri") != redirect {
                return error_reply(400, "invalid_grant", 501481);
            }
            return token_reply(
                user_claims(who),
                3600,
                Some("CANARY-RT-LOGIN"),
                Some(json!({"preferred_username": who})),
            );
        }
        error_reply(400, "unsupported_grant_type", 70003)
    })
    .await
}

fn login_args(device: bool) -> o365_mail_exporter::cli::LoginArgs {
    o365_mail_exporter::cli::LoginArgs {
        credential: "ece".into(),
        device_code: device,
        redirect_port: None,
        timeout: Duration::from_secs(60).into(),
    }
}

#[tokio::test]
async fn login_with_authorization_code_and_pkce_stores_the_refresh_token() {
    let idp = auth_code_idp(USER).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(
        &idp,
        dir.path(),
        &format!("    expected_identity: {}\n", USER.to_uppercase()),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let path = login::run_with(
        &cfg,
        &login_args(false),
        &mut Browser {
            events: events.clone(),
        },
    )
    .await
    .expect("login");
    let store = TokenStore::new(dir.path());
    assert_eq!(store.path("ece").unwrap(), path);
    assert_eq!(stored(&store).as_deref(), Some("CANARY-RT-LOGIN"));
    let ev = events.lock().unwrap().clone();
    let url = ev
        .iter()
        .find_map(|e| match e {
            LoginEvent::AuthorizeUrl(u) => Some(u.clone()),
            _ => None,
        })
        .expect("a URL was shown");
    assert!(
        url.contains("prompt=select_account") && url.contains("login_hint="),
        "{url}"
    );
    let text = format!("{ev:?}");
    assert!(text.contains("private/incognito"), "{text}");
    assert_no_canary("login output", &text, &[]);
}

#[tokio::test]
async fn login_refuses_a_token_of_the_wrong_user_and_says_why() {
    let idp = auth_code_idp("admin@contoso.example").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(
        &idp,
        dir.path(),
        &format!("    expected_identity: {USER}\n"),
    );
    let e = login::run_with(
        &cfg,
        &login_args(false),
        &mut Browser {
            events: Arc::default(),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("admin@contoso.example") && e.contains(USER),
        "{e}"
    );
    assert!(
        e.contains("single-sign-on") && e.contains("private/incognito"),
        "{e}"
    );
    assert_no_canary("error", &e, &[]);
    assert!(
        stored(&TokenStore::new(dir.path())).is_none(),
        "nothing stored"
    );
}

#[tokio::test(start_paused = true)]
async fn login_with_device_code_polls_at_the_interval_and_slows_down() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let idp = Idp::start(move |r: &Req| {
        if r.path.ends_with("/devicecode") {
            return json_reply(200, json!({
                "user_code": "ABCD-EFGH", "device_code": "CANARY-DC",
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 900, "interval": 5,
                "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate."
            }));
        }
        if r.f("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" || r.f("device_code") != "CANARY-DC" {
            return error_reply(400, "invalid_request", 900144);
        }
        match p.fetch_add(1, Ordering::SeqCst) {
            0 => error_reply(400, "authorization_pending", 70016),
            1 => error_reply(400, "slow_down", 70016),
            2 => error_reply(400, "authorization_pending", 70016),
            _ => token_reply(user_claims(USER), 3600, Some("CANARY-RT-DEVICE"), Some(json!({"preferred_username": USER}))),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(
        &idp,
        dir.path(),
        &format!("    expected_identity: {USER}\n"),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    login::run_with(
        &cfg,
        &login_args(true),
        &mut Browser {
            events: events.clone(),
        },
    )
    .await
    .expect("device login");
    assert_eq!(
        stored(&TokenStore::new(dir.path())).as_deref(),
        Some("CANARY-RT-DEVICE")
    );
    let reqs = idp.requests();
    let gaps: Vec<u64> = reqs
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs())
        .collect();
    // devicecode, then polls every 5 s, +5 s after slow_down
    assert_eq!(gaps, vec![5, 5, 10, 10]);
    assert!(events.lock().unwrap().iter().any(
        |e| matches!(e, LoginEvent::DeviceCode { user_code, .. } if user_code == "ABCD-EFGH")
    ));
}

#[tokio::test(start_paused = true)]
async fn device_code_expiry_and_refusal_end_the_login() {
    for (error, code, says) in [
        ("expired_token", 70019, "expired"),
        ("authorization_declined", 0, "declined"),
    ] {
        let idp = Idp::start(move |r: &Req| {
            if r.path.ends_with("/devicecode") {
                return json_reply(200, json!({"user_code": "U", "device_code": "D", "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 5}));
            }
            error_reply(400, error, code)
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_for(&idp, dir.path(), "");
        let e = login::run_with(
            &cfg,
            &login_args(true),
            &mut Browser {
                events: Arc::default(),
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains(says), "{error}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[tokio::test(start_paused = true)]
async fn canaries_never_reach_logs_errors_or_details() {
    let (logs, _g) = capture_logs();
    let current = Arc::new(Mutex::new("CANARY-RT-0".to_string()));
    let counter = Arc::new(AtomicUsize::new(0));
    let idp = Idp::start(strict_rotation(current.clone(), counter)).await;
    let rig = rig(user_cred(&idp), None);
    seed(&rig.store, "CANARY-RT-0");
    let running = rig.spawn_run();
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let at = rig.source.access_token().await.unwrap();
    // then the grant is revoked: failures are logged and described
    idp.set(|_: &Req| error_reply(400, "invalid_grant", 50173));
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    running.stop().await;
    let rec = rig.record();
    assert_eq!(rec.last_reason, "grant_revoked");
    let e = rig.source.access_token().await.unwrap_err();
    assert_eq!(e.reason, TokenReason::GrantRevoked);
    let text = logs.text();
    assert!(text.contains("grant_revoked"), "failures are logged");
    let secrets = [
        at.secret.expose_secret().to_string(),
        current.lock().unwrap().clone(),
        SECRET.to_string(),
    ];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    for (what, s) in [
        ("logs", text),
        ("error", e.message.clone()),
        ("detail", rec.detail.clone()),
        ("record", format!("{rec:?}")),
        ("source", format!("{:?}", rig.source)),
        ("token", format!("{at:?}")),
    ] {
        assert_no_canary(what, &s, &secrets);
    }
    let _ = std::io::stderr().flush();
}

// ---------------------------------------------------------------------------------------------
// Against the project's fake Microsoft identity platform (src/fake_idp)

mod with_fake {
    use super::*;
    use o365_mail_exporter::fake_idp::{App, Failure, FakeIdp, FakeIdpHandle, Injection, User};

    const ADMIN: &str = "admin@contoso.example";

    fn fake_config(idp: &FakeIdpHandle, dir: &std::path::Path, extra: &str) -> config::Config {
        let yaml = format!(
            "state_dir: {}\ncredentials:\n  - name: ece\n    tenant: {}\n    client_id: {CLIENT}\n    grant: refresh_token\n    authority: {}\n    expected_identity: {USER}\n{extra}",
            dir.display(),
            idp.tenant(),
            idp.base_url()
        );
        config::load_str(&yaml, "test", std::path::Path::new(".")).expect("valid config")
    }

    fn fake_user_cred(idp: &FakeIdpHandle) -> Credential {
        let mut c = fake_config(idp, &std::env::temp_dir(), "").credentials[0].clone();
        c.protocols = vec![Protocol::Imap, Protocol::Smtp];
        c
    }

    fn fake_app_cred(idp: &FakeIdpHandle) -> Credential {
        let mut c = fake_user_cred(idp);
        c.grant = GrantKind::ClientCredentials;
        c.client_auth = ClientAuth::Secret(SecretString::from(SECRET.to_string()));
        c.scopes = vec!["https://outlook.office365.com/.default".into()];
        c.expected_identity = None;
        c.protocols = vec![Protocol::Imap];
        c
    }

    async fn start(app: App, strict: bool) -> Arc<FakeIdpHandle> {
        Arc::new(
            FakeIdp::builder()
                .app(app)
                .user(User::new(USER))
                .user(User::new(ADMIN))
                .signed_in_user(USER)
                .strict_refresh(strict)
                .loop_detection(true)
                .access_token_lifetime(Duration::from_secs(3600))
                .start()
                .await
                .expect("fake starts"),
        )
    }

    fn public_app() -> App {
        App::new(CLIENT)
            .public_client(true)
            .redirect_uri("http://localhost")
    }

    /// The "person": opens the authorize URL (the fake signs in and redirects to the loopback
    /// listener), or approves the device code.
    struct Person {
        idp: Arc<FakeIdpHandle>,
        events: Arc<Mutex<Vec<LoginEvent>>>,
    }

    impl Prompt for Person {
        fn show(&mut self, event: LoginEvent) {
            match &event {
                LoginEvent::AuthorizeUrl(url) => {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let _ = reqwest::Client::new().get(url).send().await;
                    });
                }
                LoginEvent::DeviceCode { user_code, .. } => {
                    self.idp
                        .approve_device_code(Some(user_code))
                        .expect("pending device code");
                }
                LoginEvent::Info(_) => {}
            }
            self.events.lock().unwrap().push(event);
        }
    }

    #[tokio::test]
    async fn client_credentials_with_secret_and_both_certificate_headers() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ece-monitor".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let app = App::new(CLIENT)
            .secret(SECRET)
            .certificate_der(cert.der())
            .unwrap()
            .roles(["IMAP.AccessAsApp"]);
        let idp = start(app, false).await;
        let rig1 = rig(fake_app_cred(&idp), None);
        rig1.source.access_token().await.expect("secret");
        assert_eq!(
            rig1.record().scopes,
            vec![
                ("IMAP.AccessAsApp".to_string(), true),
                ("aud:exchange".to_string(), true)
            ]
        );
        let mut cred = fake_app_cred(&idp);
        cred.client_auth = ClientAuth::Certificate {
            cert_der: cert.der().to_vec(),
            key_der: SecretBytes(kp.serialize_der()),
        };
        for alg in [
            o365_mail_exporter::oauth::assertion::Alg::Ps256,
            o365_mail_exporter::oauth::assertion::Alg::Rs256,
        ] {
            let state = Arc::new(State::new());
            state.reconcile_tokens(&[("ece".into(), "client_credentials", None)]);
            let dir = tempfile::tempdir().unwrap();
            let src = TokenSource::with_tuning(
                Arc::new(cred.clone()),
                Arc::new(TokenStore::new(dir.path())),
                state,
                Tuning {
                    assertion_alg: alg,
                    ..Tuning::default()
                },
            )
            .unwrap();
            src.access_token()
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
        let stats = idp.stats();
        assert_eq!(stats.grant("client_credentials"), 3);
        assert_eq!(stats.outcome("ok"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn login_then_a_day_of_strict_rotation_without_tripping_loop_detection() {
        let idp = start(public_app(), true).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake_config(&idp, dir.path(), "");
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut person = Person {
            idp: idp.clone(),
            events: events.clone(),
        };
        login::run_with(&cfg, &login_args(false), &mut person)
            .await
            .expect("login with authorization code + PKCE");
        let store = Arc::new(TokenStore::new(dir.path()));
        let first = stored(&store).expect("stored");
        let mut cred = cfg.credentials[0].clone();
        cred.protocols = vec![Protocol::Imap];
        let rig = rig_with(cred.clone(), store.clone(), None);
        let running = rig.spawn_run();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..24 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            rig.source.access_token().await.expect("token all day");
        }
        running.stop().await;
        let stats = idp.stats();
        let refreshes = stats.grant("refresh_token");
        // one refresh per token lifetime minus refresh_ahead: every 50 minutes
        assert!(
            (27..=30).contains(&refreshes),
            "{refreshes} refreshes in 24 h"
        );
        assert_eq!(
            stats.outcome("ok"),
            refreshes + 1,
            "every request succeeded"
        );
        assert_eq!(stats.aadsts(50196), 0, "loop detection never tripped");
        assert_eq!(stats.aadsts(70000), 0, "never used a rotated-away token");
        let rec = rig.record();
        assert_eq!(rec.identity_match, Some(true));
        assert_eq!(rec.identity_seen.as_deref(), Some(USER));
        assert_ne!(stored(&store).unwrap(), first, "rotated");
        // a restart continues the chain from the file
        let again = rig_with(cred, store, None);
        again.source.access_token().await.expect("restart");
        assert_eq!(idp.stats().aadsts(70000), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn login_with_device_code_against_the_fake() {
        let idp = start(public_app(), false).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake_config(&idp, dir.path(), "");
        let mut person = Person {
            idp: idp.clone(),
            events: Arc::default(),
        };
        login::run_with(&cfg, &login_args(true), &mut person)
            .await
            .expect("device code login");
        let store = Arc::new(TokenStore::new(dir.path()));
        assert!(stored(&store).is_some());
        let rig = rig_with(cfg.credentials[0].clone(), store, None);
        rig.source.access_token().await.expect("refresh works");
        let stats = idp.stats();
        assert_eq!(stats.outcome("slow_down"), 0, "polled at the interval");
        assert!(stats.outcome("authorization_pending") <= 1);
    }

    #[tokio::test]
    async fn login_refuses_the_admins_single_sign_on_identity() {
        let idp = start(public_app(), false).await;
        idp.set_signed_in_user(ADMIN);
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake_config(&idp, dir.path(), "");
        let mut person = Person {
            idp: idp.clone(),
            events: Arc::default(),
        };
        let e = login::run_with(&cfg, &login_args(false), &mut person)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(ADMIN) && e.contains("single-sign-on"), "{e}");
        assert!(stored(&TokenStore::new(dir.path())).is_none());
    }

    /// The reason each of the fake's failure presets must give.
    fn expected(f: &Failure) -> TokenReason {
        match f.name() {
            "loop_detected" => TokenReason::Throttled,
            "malformed_json" | "html_login_page" | "huge_body" => TokenReason::BadResponse,
            "hang" => TokenReason::Timeout,
            name => TokenReason::parse(name).unwrap_or_else(|| panic!("unmapped preset {name}")),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_preset_of_the_fake_is_classified_without_leaks() {
        let (logs, _g) = capture_logs();
        let idp = start(App::new(CLIENT).secret(SECRET), false).await;
        // 32 fresh sources in a row are 32 identical requests: that would trip loop detection,
        // which is not what this test is about (the long-running tests keep it on)
        idp.set_loop_detection(false);
        for f in Failure::all() {
            idp.inject(Injection::once(f.clone()));
            let rig = rig(fake_app_cred(&idp), None);
            let started = Instant::now();
            let e = rig.source.access_token().await.unwrap_err();
            assert!(started.elapsed() <= Duration::from_secs(11), "{}", f.name());
            assert_eq!(e.reason, expected(&f), "{}: {}", f.name(), e.message);
            assert_no_canary("error", &e.message, &[SECRET]);
            assert_no_canary("detail", &rig.record().detail, &[SECRET]);
            // the injection is used up: the next token comes, and the old error is gone
            let rig = rig_with(
                fake_app_cred(&idp),
                Arc::new(TokenStore::new(&std::env::temp_dir())),
                None,
            );
            rig.source.access_token().await.expect("recovers");
        }
        assert_no_canary("logs", &logs.text(), &[SECRET]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_and_an_outage_against_the_fake() {
        let idp = start(App::new(CLIENT).secret(SECRET), false).await;
        idp.inject(Injection::once(Failure::Throttled {
            retry_after_secs: 120,
        }));
        let rig = rig(fake_app_cred(&idp), None);
        let running = rig.spawn_run();
        tokio::time::sleep(Duration::from_secs(119)).await;
        assert_eq!(rig.record().requests, 1, "nothing before Retry-After");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(rig.record().requests, 2);
        assert_eq!(rig.record().last_reason, "ok");
        // an hour of 503 from just before the next refresh (50 min after the token) on
        tokio::time::sleep(Duration::from_secs(49 * 60)).await;
        idp.reset_stats();
        idp.inject(Injection::always(Failure::ServerError { status: 503 }));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let during = idp.stats().token_requests();
        assert!(
            (7..=10).contains(&during),
            "{during} requests in the outage hour"
        );
        assert_eq!(idp.stats().aadsts(50196), 0);
        idp.clear_injections();
        tokio::time::sleep(Duration::from_secs(15 * 60 + 1)).await;
        assert_eq!(rig.record().last_reason, "ok", "{}", rig.record().detail);
        running.stop().await;
    }
}
