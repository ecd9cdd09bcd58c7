//! The fake identity provider end to end over plain HTTP, as a client sees it: every grant,
//! strict refresh rotation, PKCE, device-code polling states, each injected failure's exact
//! JSON and status, loop detection, the control API, and the `o365-fake-idp` process.

use std::time::Duration;

use o365_mail_exporter::fake_idp::{App, Failure, FakeIdp, FakeIdpHandle, Injection, User};
use serde_json::{json, Value};

use crate::support::fake_idp::*;

const APP: &str = "11111111-2222-3333-4444-555555555555";
const PUBLIC: &str = "22222222-2222-3333-4444-555555555555";
const CERT_APP: &str = "33333333-2222-3333-4444-555555555555";
const SECRET: &str = "canary-secret-Zq8~value";
const IMAP: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
const SMTP: &str = "https://outlook.office.com/SMTP.Send";

async fn idp() -> FakeIdpHandle {
    FakeIdp::builder()
        .tenant_alias("contoso.onmicrosoft.com")
        .app(
            App::new(APP)
                .name("Probe app")
                .secret(SECRET)
                .expired_secret("old-secret")
                .roles(["IMAP.AccessAsApp", "SMTP.SendAsApp"])
                .app_token_upn("alice@example.test"),
        )
        .app(
            App::new(PUBLIC)
                .public_client(true)
                .consented_scopes([IMAP, SMTP])
                .redirect_uri("http://localhost/callback"),
        )
        .user(User::new("alice@example.test"))
        .user(User::new("bob@example.test"))
        .start()
        .await
        .expect("fake idp starts")
}

/// Checks Microsoft's error shape (o365-facts.md 3.7) and returns the body.
fn assert_aad(a: &Answer, status: u16, error: &str, code: u64) -> Value {
    assert_eq!(a.status, status, "status of {}", a.json);
    assert_eq!(a.error(), error, "{}", a.json);
    assert_eq!(a.json["error_codes"][0], json!(code), "{}", a.json);
    let trace = a.json["trace_id"].as_str().expect("trace_id");
    let corr = a.json["correlation_id"].as_str().expect("correlation_id");
    let ts = a.json["timestamp"].as_str().expect("timestamp");
    assert_eq!(ts.len(), 20, "timestamp {ts}");
    assert!(ts.ends_with('Z') && &ts[10..11] == " ", "timestamp {ts}");
    let d = a.json["error_description"].as_str().expect("description");
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    assert!(
        d.ends_with(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
        )),
        "{d}"
    );
    assert_eq!(
        a.json["error_uri"],
        json!(format!(
            "https://login.microsoftonline.com/error?code={code}"
        ))
    );
    assert!(a
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    a.json.clone()
}

async fn client_credentials(idp: &FakeIdpHandle, secret: &str) -> Answer {
    post_form(
        &idp.token_url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", secret),
            ("scope", "https://outlook.office365.com/.default"),
        ],
    )
    .await
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

#[tokio::test]
async fn client_credentials_with_secret_returns_microsoft_shaped_app_token() {
    let idp = idp().await;
    let a = client_credentials(&idp, SECRET).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let mut k = keys(&a.json);
    k.sort();
    // No refresh token and no scope for client credentials (facts 3.2/3.3).
    assert_eq!(
        k,
        ["access_token", "expires_in", "ext_expires_in", "token_type"]
    );
    assert_eq!(a.json["token_type"], "Bearer");
    assert_eq!(a.json["expires_in"], 3599);
    assert_eq!(
        a.header("cache-control").as_deref(),
        Some("no-store, no-cache")
    );
    let token = a.json["access_token"].as_str().expect("token");
    let (h, c) = jwt_parts(token);
    // Exactly this header: Dovecot wants typ "JWT" and HS256 tokens carry no kid.
    assert_eq!(h, json!({"typ": "JWT", "alg": "HS256"}));
    assert_eq!(c["aud"], "https://outlook.office365.com");
    assert_eq!(c["iss"], json!(idp.issuer()));
    assert_eq!(c["tid"], json!(idp.tenant()));
    assert_eq!(c["appid"], APP);
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["roles"], json!(["IMAP.AccessAsApp", "SMTP.SendAsApp"]));
    assert_eq!(c["upn"], "alice@example.test", "the documented kindness");
    assert_eq!(c["sub"], c["oid"]);
    assert!(c.get("scp").is_none());
    let (iat, exp) = (
        c["iat"].as_i64().expect("iat"),
        c["exp"].as_i64().expect("exp"),
    );
    assert!((exp - now() - 3599).abs() <= 5, "exp {exp}");
    assert!(iat <= now() - 290, "iat backdated five minutes");
    // The alias and the tenant id are the same tenant.
    let a = post_form(
        &idp.token_url_for("contoso.onmicrosoft.com"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://ps.outlook.com/.default"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        jwt_parts(a.json["access_token"].as_str().expect("t")).1["aud"],
        "https://ps.outlook.com"
    );
}

#[tokio::test]
async fn client_authentication_and_request_errors_have_microsoft_codes() {
    let idp = idp().await;
    let url = idp.token_url();
    let a = client_credentials(&idp, "wrong").await;
    let body = assert_aad(&a, 401, "invalid_client", 7000215);
    assert!(!a.body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    assert!(body["error_description"]
        .as_str()
        .unwrap_or("")
        .contains(APP));
    assert_aad(
        &client_credentials(&idp, "old-secret").await,
        401,
        "invalid_client",
        7000222,
    );

    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (
            url.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "00000000-dead-beef-0000-000000000000"),
                ("client_secret", "x"),
                ("scope", "a/.default"),
            ],
            400,
            "unauthorized_client",
            700016,
        ),
        (
            idp.token_url_for("nosuchtenant.invalid"),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", "a/.default"),
            ],
            400,
            "invalid_request",
            90002,
        ),
        (
            url.clone(),
            vec![("client_id", APP)],
            400,
            "invalid_request",
            900144,
        ),
        (
            url.clone(),
            vec![("grant_type", "password"), ("client_id", APP)],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            url.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", IMAP),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            url.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("scope", "a/.default"),
            ],
            401,
            "invalid_client",
            7000218,
        ),
        (
            url.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_id", APP),
            ],
            400,
            "invalid_request",
            9000411,
        ),
        (
            idp.token_url_for("common"),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", "a/.default"),
            ],
            400,
            "invalid_request",
            9001023,
        ),
        (
            url.clone(),
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", PUBLIC),
                ("client_secret", "x"),
                ("refresh_token", "r"),
            ],
            401,
            "invalid_client",
            700025,
        ),
    ];
    for (u, params, status, error, code) in cases {
        let a = post_form(&u, &params).await;
        assert_aad(&a, status, error, code);
    }
    // Microsoft only accepts POST.
    let a = get(&url).await;
    assert_aad(&a, 400, "invalid_request", 900561);
}

#[tokio::test]
async fn correlation_id_echoes_client_request_id() {
    let idp = idp().await;
    let resp = http()
        .post(idp.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("client-request-id", "0a1b2c3d-0000-4000-8000-1234567890ab")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("request");
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(v["correlation_id"], "0a1b2c3d-0000-4000-8000-1234567890ab");
}

#[tokio::test]
async fn certificate_assertions_rs256_x5t_and_ps256_x5t_s256() {
    let cert = TestCert::generate();
    let other = TestCert::generate();
    let idp = FakeIdp::builder()
        .app(
            App::new(CERT_APP)
                .certificate_der(&cert.der)
                .expect("cert")
                .roles(["POP.AccessAsApp"]),
        )
        .start()
        .await
        .expect("start");
    let url = idp.token_url();
    let post = |assertion: String| {
        let url = url.clone();
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", CERT_APP),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                    ("scope", "https://outlook.office365.com/.default"),
                ],
            )
            .await
        }
    };
    let n = now();
    let claims = |aud: &str, iss: &str, sub: &str, exp: i64| json!({"aud": aud, "iss": iss, "sub": sub, "jti": "j", "nbf": n - 10, "iat": n - 10, "exp": exp});

    let a = post(cert.assertion(CERT_APP, &url)).await;
    assert_eq!(a.status, 200, "PS256 + x5t#S256: {}", a.json);
    assert!(a.json.get("refresh_token").is_none());
    let c = jwt_parts(a.json["access_token"].as_str().expect("t")).1;
    assert_eq!(c["appidacr"], "2", "certificate credential");
    assert!(
        c.get("upn").is_none(),
        "no upn unless the kindness is configured"
    );

    let rs = cert.sign(
        "RS256",
        json!({"x5t": cert.x5t()}),
        &claims(&url, CERT_APP, CERT_APP, n + 300),
    );
    assert_eq!(post(rs).await.status, 200, "RS256 + x5t");

    let bad = [
        // the token URL of another tenant is not this endpoint
        (
            cert.sign(
                "PS256",
                json!({"x5t#S256": cert.x5t_s256()}),
                &claims(&idp.token_url_for("common"), CERT_APP, CERT_APP, n + 300),
            ),
            70002,
        ),
        (
            cert.sign(
                "PS256",
                json!({"x5t#S256": cert.x5t_s256()}),
                &claims(&url, CERT_APP, CERT_APP, n - 60),
            ),
            700024,
        ),
        (
            cert.sign(
                "PS256",
                json!({"x5t#S256": cert.x5t_s256()}),
                &claims(&url, "someone-else", CERT_APP, n + 300),
            ),
            700021,
        ),
        (
            cert.sign(
                "PS256",
                json!({"x5t#S256": cert.x5t_s256()}),
                &claims(&url, CERT_APP, "someone-else", n + 300),
            ),
            50048,
        ),
        // signed by a key whose certificate is not registered
        (
            other.sign(
                "PS256",
                json!({"x5t#S256": other.x5t_s256()}),
                &claims(&url, CERT_APP, CERT_APP, n + 300),
            ),
            700027,
        ),
        // registered thumbprint, wrong key
        (
            other.sign(
                "PS256",
                json!({"x5t#S256": cert.x5t_s256()}),
                &claims(&url, CERT_APP, CERT_APP, n + 300),
            ),
            700027,
        ),
        (
            cert.sign(
                "ES256",
                json!({"x5t": cert.x5t()}),
                &claims(&url, CERT_APP, CERT_APP, n + 300),
            ),
            50027,
        ),
    ];
    for (assertion, code) in bad {
        assert_aad(&post(assertion).await, 401, "invalid_client", code);
    }
}

/// Runs the authorization-code flow with PKCE for the signed-in user; returns the redirect's
/// query parameters.
async fn authorize(idp: &FakeIdpHandle, scope: &str, challenge: &str) -> Vec<(String, String)> {
    let q = form_body(&[
        ("client_id", PUBLIC),
        ("response_type", "code"),
        ("redirect_uri", "http://localhost:53123/callback"),
        ("scope", scope),
        ("state", "st-42"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    let a = get(&format!("{}?{q}", idp.authorize_url())).await;
    assert_eq!(a.status, 302);
    let loc = url::Url::parse(&a.header("location").expect("location")).expect("url");
    assert_eq!(
        format!(
            "{}://{}{}",
            loc.scheme(),
            loc.host_str().unwrap_or(""),
            loc.path()
        ),
        "http://localhost/callback"
    );
    assert_eq!(loc.port(), Some(53123));
    loc.query_pairs().into_owned().collect()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn redeem(idp: &FakeIdpHandle, code: &str, verifier: &str, redirect: &str) -> Answer {
    post_form(
        &idp.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn authorization_code_with_pkce_is_single_use_and_bound() {
    let idp = idp().await;
    let verifier = "verifier-0123456789-0123456789-0123456789-abcdef";
    let scope = format!("{IMAP} {SMTP} offline_access openid profile");
    let q = authorize(&idp, &scope, &pkce_challenge(verifier)).await;
    assert_eq!(param(&q, "state"), Some("st-42"));
    let code = param(&q, "code").expect("code").to_string();
    let redirect = "http://localhost:53123/callback";

    assert_aad(
        &redeem(&idp, &code, "wrong-verifier", redirect).await,
        400,
        "invalid_grant",
        501481,
    );
    assert_aad(
        &redeem(&idp, &code, verifier, "http://localhost:53123/other").await,
        400,
        "invalid_grant",
        500112,
    );
    let a = redeem(&idp, &code, verifier, redirect).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let mut k = keys(&a.json);
    k.sort();
    assert_eq!(
        k,
        [
            "access_token",
            "expires_in",
            "ext_expires_in",
            "id_token",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(a.json["scope"], json!(format!("{IMAP} {SMTP}")));
    let (_, c) = jwt_parts(a.json["access_token"].as_str().expect("at"));
    assert_eq!(c["scp"], "IMAP.AccessAsUser.All SMTP.Send");
    assert_eq!(c["upn"], "alice@example.test");
    assert_eq!(c["unique_name"], "alice@example.test");
    assert_eq!(c["aud"], "https://outlook.office.com");
    assert_eq!(c["appidacr"], "0");
    assert!(c.get("roles").is_none() && c.get("idtyp").is_none());
    let (_, id) = jwt_parts(a.json["id_token"].as_str().expect("id token"));
    assert_eq!(id["aud"], PUBLIC);
    assert_eq!(id["preferred_username"], "alice@example.test");

    // Single use: AADSTS54005 on reuse.
    assert_aad(
        &redeem(&idp, &code, verifier, redirect).await,
        400,
        "invalid_grant",
        54005,
    );

    // Without offline_access/openid: neither refresh token nor id token.
    let q = authorize(&idp, IMAP, &pkce_challenge(verifier)).await;
    let a = redeem(&idp, param(&q, "code").expect("code"), verifier, redirect).await;
    assert_eq!(a.status, 200);
    assert!(a.json.get("refresh_token").is_none() && a.json.get("id_token").is_none());

    // The admin's browser signed in as the wrong user: the token is bob's.
    idp.set_signed_in_user("bob@example.test");
    let q = authorize(&idp, IMAP, &pkce_challenge(verifier)).await;
    let a = redeem(&idp, param(&q, "code").expect("code"), verifier, redirect).await;
    assert_eq!(
        jwt_parts(a.json["access_token"].as_str().expect("at")).1["upn"],
        "bob@example.test"
    );

    // Not consented: the redirect carries the error and the state.
    let q = authorize(
        &idp,
        "https://outlook.office.com/POP.AccessAsUser.All",
        &pkce_challenge(verifier),
    )
    .await;
    assert_eq!(param(&q, "error"), Some("consent_required"));
    assert!(param(&q, "error_description")
        .unwrap_or("")
        .starts_with("AADSTS65001: "));
    assert_eq!(param(&q, "state"), Some("st-42"));

    // Unknown client / unregistered redirect: an error page, no redirect.
    let a = get(&format!(
        "{}?client_id=nope&redirect_uri=http://localhost/callback&response_type=code&scope=x",
        idp.authorize_url()
    ))
    .await;
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body).contains("AADSTS700016"));
    let a = get(&format!(
        "{}?client_id={PUBLIC}&redirect_uri=https://evil.invalid/cb&response_type=code&scope=x",
        idp.authorize_url()
    ))
    .await;
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body).contains("AADSTS50011"));
}

async fn refresh(idp: &FakeIdpHandle, rt: &str) -> Answer {
    post_form(
        &idp.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC),
            ("refresh_token", rt),
            ("scope", &format!("{IMAP} offline_access")),
        ],
    )
    .await
}

async fn first_refresh_token(idp: &FakeIdpHandle) -> String {
    let verifier = "v".repeat(50);
    let q = authorize(
        idp,
        &format!("{IMAP} offline_access"),
        &pkce_challenge(&verifier),
    )
    .await;
    let a = redeem(
        idp,
        param(&q, "code").expect("code"),
        &verifier,
        "http://localhost:53123/callback",
    )
    .await;
    a.json["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_strict_mode_kills_used_ones() {
    let idp = idp().await;
    let rt1 = first_refresh_token(&idp).await;
    let a = refresh(&idp, &rt1).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let rt2 = a.json["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(rt1, rt2, "a new refresh token on every use");
    assert_eq!(a.json["scope"], IMAP);
    // Normal mode: the used token stays valid (facts 3.5).
    assert_eq!(refresh(&idp, &rt1).await.status, 200);

    idp.set_strict_refresh(true);
    let a = refresh(&idp, &rt2).await;
    assert_eq!(a.status, 200);
    let rt3 = a.json["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_aad(&refresh(&idp, &rt2).await, 400, "invalid_grant", 70000);
    assert_aad(&refresh(&idp, &rt1).await, 400, "invalid_grant", 70000);
    assert_eq!(refresh(&idp, &rt3).await.status, 200);

    assert_aad(
        &refresh(&idp, "0.A-never-issued").await,
        400,
        "invalid_grant",
        9002313,
    );
}

#[tokio::test]
async fn refresh_tokens_expire_by_inactivity_and_revocation() {
    let idp = idp().await;
    let rt = first_refresh_token(&idp).await;
    let rt_b = first_refresh_token(&idp).await;
    idp.set_clock_offset(91 * 86_400);
    let body = assert_aad(&refresh(&idp, &rt).await, 400, "invalid_grant", 700082);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or("")
        .contains("90.00:00:00"));
    idp.set_clock_offset(0);
    idp.revoke_user_tokens("alice@example.test")
        .expect("known user");
    assert_aad(&refresh(&idp, &rt_b).await, 400, "invalid_grant", 50173);
    // A new sign-in after the revocation works again.
    idp.set_clock_offset(5);
    let rt_new = first_refresh_token(&idp).await;
    assert_eq!(refresh(&idp, &rt_new).await.status, 200);
}

async fn start_device(idp: &FakeIdpHandle, client: &str) -> Answer {
    post_form(
        &idp.device_code_url(),
        &[
            ("client_id", client),
            ("scope", &format!("{IMAP} offline_access")),
        ],
    )
    .await
}

async fn poll(idp: &FakeIdpHandle, client: &str, device_code: &str) -> Answer {
    post_form(
        &idp.token_url(),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", client),
            ("device_code", device_code),
        ],
    )
    .await
}

#[tokio::test]
async fn device_code_polling_states() {
    let idp = idp().await;
    let a = start_device(&idp, PUBLIC).await;
    assert_eq!(a.status, 200);
    let mut k = keys(&a.json);
    k.sort();
    assert_eq!(
        k,
        [
            "device_code",
            "expires_in",
            "interval",
            "message",
            "user_code",
            "verification_uri"
        ]
    );
    assert_eq!(a.json["expires_in"], 900);
    assert_eq!(a.json["interval"], 5);
    assert_eq!(
        a.json["verification_uri"],
        "https://microsoft.com/devicelogin"
    );
    let user_code = a.json["user_code"].as_str().expect("user code").to_string();
    assert!(a.json["message"]
        .as_str()
        .unwrap_or("")
        .contains(&user_code));
    let dc = a.json["device_code"]
        .as_str()
        .expect("device code")
        .to_string();

    assert_aad(
        &poll(&idp, PUBLIC, &dc).await,
        400,
        "authorization_pending",
        70016,
    );
    // Polled again at once: slow_down, and the interval grows by 5 s (RFC 8628 3.5).
    assert_aad(&poll(&idp, PUBLIC, &dc).await, 400, "slow_down", 70016);
    idp.set_clock_offset(6);
    assert_aad(&poll(&idp, PUBLIC, &dc).await, 400, "slow_down", 70016);
    idp.set_clock_offset(6 + 16);
    assert_aad(
        &poll(&idp, PUBLIC, &dc).await,
        400,
        "authorization_pending",
        70016,
    );

    assert_eq!(
        idp.approve_device_code(None).expect("pending code"),
        user_code
    );
    let a = poll(&idp, PUBLIC, &dc).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(a.json["refresh_token"].is_string());
    assert_eq!(
        jwt_parts(a.json["access_token"].as_str().expect("at")).1["upn"],
        "alice@example.test"
    );
    assert_aad(
        &poll(&idp, PUBLIC, &dc).await,
        400,
        "bad_verification_code",
        70018,
    );

    // Expiry.
    let dc2 = start_device(&idp, PUBLIC).await.json["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    idp.set_clock_offset(6 + 16 + 901);
    assert_aad(&poll(&idp, PUBLIC, &dc2).await, 400, "expired_token", 70019);
    assert!(
        idp.approve_device_code(None).is_err(),
        "nothing pending any more"
    );

    // Declined.
    let dc3 = start_device(&idp, PUBLIC).await.json["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    idp.decline_device_code(None).expect("pending");
    assert_aad(
        &poll(&idp, PUBLIC, &dc3).await,
        400,
        "authorization_declined",
        70000,
    );

    // An app without "allow public client flows" gets its device code, then 7000218 (facts 3.1).
    let dc4 = start_device(&idp, APP).await.json["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    assert_aad(&poll(&idp, APP, &dc4).await, 401, "invalid_client", 7000218);
    assert_aad(
        &start_device(&idp, "nope").await,
        400,
        "unauthorized_client",
        700016,
    );
}

#[tokio::test(start_paused = true)]
async fn device_code_intervals_follow_a_paused_tokio_clock() {
    let idp = idp().await;
    let dc = start_device(&idp, PUBLIC).await.json["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    assert_eq!(
        poll(&idp, PUBLIC, &dc).await.error(),
        "authorization_pending"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        poll(&idp, PUBLIC, &dc).await.error(),
        "authorization_pending"
    );
    tokio::time::advance(Duration::from_secs(900)).await;
    assert_eq!(poll(&idp, PUBLIC, &dc).await.error(), "expired_token");
}

#[tokio::test]
async fn every_injected_failure_has_its_exact_shape() {
    let idp = idp().await;
    for failure in Failure::all() {
        if matches!(failure, Failure::Hang | Failure::HugeBody { .. }) {
            continue; // own tests below
        }
        idp.inject(Injection::once(failure.clone()));
        let a = client_credentials(&idp, SECRET).await;
        let expect: Option<(u16, &str, u64)> = match failure {
            Failure::InvalidClientSecret => Some((401, "invalid_client", 7000215)),
            Failure::ClientSecretExpired => Some((401, "invalid_client", 7000222)),
            Failure::RefreshTokenExpired => Some((400, "invalid_grant", 700082)),
            Failure::GrantRevoked => Some((400, "invalid_grant", 50173)),
            Failure::ConsentRequired => Some((400, "invalid_grant", 65001)),
            Failure::MfaRequired => Some((400, "interaction_required", 50076)),
            Failure::ConditionalAccess => Some((400, "invalid_grant", 53003)),
            Failure::AppNotFound => Some((400, "unauthorized_client", 700016)),
            Failure::TenantNotFound => Some((400, "invalid_request", 90002)),
            Failure::Throttled { .. } => Some((429, "temporarily_unavailable", 90055)),
            Failure::LoopDetected => Some((400, "invalid_grant", 50196)),
            Failure::ServerError { .. } => Some((503, "temporarily_unavailable", 90033)),
            _ => None,
        };
        match expect {
            Some((status, error, code)) => {
                let body = assert_aad(&a, status, error, code);
                match failure {
                    Failure::MfaRequired => {
                        assert_eq!(body["suberror"], "basic_action");
                        assert!(body["claims"].is_string());
                    }
                    Failure::ConditionalAccess => assert_eq!(body["suberror"], "message_only"),
                    Failure::ConsentRequired => assert_eq!(body["suberror"], "consent_required"),
                    Failure::RefreshTokenExpired => assert!(body["error_description"]
                        .as_str()
                        .unwrap_or("")
                        .contains("was inactive for 90.00:00:00.")),
                    Failure::Throttled { .. } => {
                        assert_eq!(a.header("retry-after").as_deref(), Some("60"))
                    }
                    _ => assert!(body.get("suberror").is_none(), "{}", failure.name()),
                }
            }
            None => {
                assert_eq!(a.status, 200, "{}", failure.name());
                assert!(
                    a.json.is_null(),
                    "{} must not parse as JSON",
                    failure.name()
                );
                let ct = a.header("content-type").unwrap_or_default();
                if failure == Failure::HtmlLoginPage {
                    assert!(ct.starts_with("text/html"));
                    assert!(String::from_utf8_lossy(&a.body).contains("Sign in to your account"));
                } else {
                    assert!(ct.starts_with("application/json"));
                }
            }
        }
        // One-shot: the next request is normal again.
        assert_eq!(
            client_credentials(&idp, SECRET).await.status,
            200,
            "{}",
            failure.name()
        );
    }
    idp.inject(Injection::once(Failure::ServerError { status: 500 }));
    assert_aad(
        &client_credentials(&idp, SECRET).await,
        500,
        "server_error",
        50000,
    );
}

#[tokio::test]
async fn injections_count_filter_and_clear() {
    let idp = idp().await;
    idp.inject(Injection::times(Failure::GrantRevoked, 2).for_grant("refresh_token"));
    idp.inject(Injection::always(Failure::MfaRequired).for_client("someone-else"));
    // Neither matches a client-credentials request of APP.
    assert_eq!(client_credentials(&idp, SECRET).await.status, 200);
    let rt = first_refresh_token(&idp).await;
    assert_eq!(refresh(&idp, &rt).await.code(), Some(50173));
    assert_eq!(refresh(&idp, &rt).await.code(), Some(50173));
    assert_eq!(refresh(&idp, &rt).await.status, 200, "only two");
    idp.inject(Injection::always(Failure::ConditionalAccess));
    for _ in 0..3 {
        assert_eq!(client_credentials(&idp, SECRET).await.code(), Some(53003));
    }
    idp.clear_injections();
    assert_eq!(client_credentials(&idp, SECRET).await.status, 200);
}

#[tokio::test]
async fn huge_body_and_hang() {
    let idp = idp().await;
    idp.inject(Injection::once(Failure::HugeBody {
        bytes: 20 * 1024 * 1024,
    }));
    let resp = http()
        .post(idp.token_url())
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.content_length(), Some(20 * 1024 * 1024));
    drop(resp);

    idp.inject(Injection::once(Failure::Hang));
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        http()
            .post(idp.token_url())
            .body("grant_type=client_credentials")
            .send(),
    )
    .await;
    assert!(r.is_err(), "a hang never answers");
    assert_eq!(idp.stats().outcome("hang"), 1);
    // The fake still serves others while one request hangs, and shuts down with it pending.
    assert_eq!(client_credentials(&idp, SECRET).await.status, 200);
    tokio::time::timeout(Duration::from_secs(5), idp.shutdown())
        .await
        .expect("shutdown ends hanging answers");
}

#[tokio::test]
async fn loop_detection_refuses_the_fifteenth_identical_request() {
    let idp = idp().await;
    idp.set_loop_detection(true);
    for i in 1..=14 {
        assert_eq!(
            client_credentials(&idp, SECRET).await.status,
            200,
            "request {i}"
        );
    }
    assert_aad(
        &client_credentials(&idp, SECRET).await,
        400,
        "invalid_grant",
        50196,
    );
    // A different scope is a different request.
    let a = post_form(
        &idp.token_url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://ps.outlook.com/.default"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    // Five minutes later the window is empty again.
    idp.set_clock_offset(301);
    assert_eq!(client_credentials(&idp, SECRET).await.status, 200);
    let s = idp.stats();
    assert_eq!(s.grant("client_credentials"), 17);
    assert_eq!(s.aadsts(50196), 1);
    assert_eq!(s.outcome("ok"), 16);
}

#[tokio::test]
async fn control_api_mirrors_the_handle() {
    let idp = idp().await;
    let base = idp.base_url();
    let a = post_json(
        &format!("{base}/_fake/inject"),
        json!({"failure": "throttled", "retry_after_secs": 7, "client_id": APP, "times": 1}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let t = client_credentials(&idp, SECRET).await;
    assert_eq!(
        (t.status, t.header("retry-after").as_deref()),
        (429, Some("7"))
    );
    let a = post_json(
        &format!("{base}/_fake/inject"),
        json!({"failure": "no_such_thing"}),
    )
    .await;
    assert_eq!(a.status, 400);

    let a = post_json(
        &format!("{base}/_fake/user"),
        json!({"upn": "carol@example.test"}),
    )
    .await;
    assert_eq!(a.json["upn"], "carol@example.test");
    let dc = start_device(&idp, PUBLIC).await.json["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    let pending = get(&format!("{base}/_fake/device")).await;
    let code = pending.json["pending"][0]["user_code"]
        .as_str()
        .expect("pending")
        .to_string();
    let a = post_json(
        &format!("{base}/_fake/device/approve"),
        json!({"user_code": code}),
    )
    .await;
    assert_eq!(a.status, 200);
    let t = poll(&idp, PUBLIC, &dc).await;
    assert_eq!(
        jwt_parts(t.json["access_token"].as_str().expect("at")).1["upn"],
        "carol@example.test"
    );
    let a = post_json(&format!("{base}/_fake/device/approve"), json!({})).await;
    assert_eq!(a.status, 409, "nothing pending");

    assert_eq!(
        post_json(&format!("{base}/_fake/strict"), json!({"on": true}))
            .await
            .status,
        200
    );
    let rt = t.json["refresh_token"].as_str().expect("rt").to_string();
    assert_eq!(refresh(&idp, &rt).await.status, 200);
    assert_eq!(refresh(&idp, &rt).await.code(), Some(70000));

    let stats = get(&format!("{base}/_fake/stats")).await;
    let rows = stats.json["rows"].as_array().expect("rows");
    let n = |grant: &str, outcome: &str| -> u64 {
        rows.iter()
            .filter(|r| r["endpoint"] == "token" && r["grant"] == grant && r["outcome"] == outcome)
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(n("client_credentials", "temporarily_unavailable"), 1);
    assert_eq!(n(DEVICE_GRANT, "ok"), 1);
    assert_eq!(n("refresh_token", "invalid_grant"), 1);
    assert_eq!(
        post_json(&format!("{base}/_fake/stats/reset"), json!({}))
            .await
            .status,
        200
    );
    assert_eq!(idp.stats().token_requests(), 0);
    assert_eq!(get(&format!("{base}/_fake/health")).await.status, 200);
}

#[tokio::test]
async fn the_process_serves_from_a_config_file_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hs256.secret"),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("idp.yaml"),
        format!(
            "tenant: 00000000-0000-0000-0000-0000000000aa\napps:\n  - client_id: {APP}\n    secrets: [{{ value: \"{SECRET}\" }}]\n    roles: [IMAP.AccessAsApp]\nusers: [{{ upn: alice@example.test }}]\n"
        ),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_o365-fake-idp"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("idp.yaml"))
        .arg("--hs256-secret-file")
        .arg(dir.path().join("hs256.secret"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn o365-fake-idp");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("prints its URL in time")
        .expect("read")
        .expect("a line");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let a = post_form(
        &format!("{url}/00000000-0000-0000-0000-0000000000aa/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", "https://outlook.office.com/.default"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let token = a.json["access_token"].as_str().expect("token");
    // Signed with the secret from the file.
    let (h, p) = token.rsplit_once('.').expect("jwt");
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        b"0123456789abcdef0123456789abcdef",
    );
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .expect("b64");
    aws_lc_rs::hmac::verify(&key, h.as_bytes(), &sig).expect("HS256 with the file's secret");

    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let mut err = String::new();
    use tokio::io::AsyncReadExt as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .await
        .expect("stderr");
    assert!(err.contains("client_credentials"), "request log: {err}");
    assert!(
        !err.contains(SECRET) && !err.contains(token),
        "secrets never logged"
    );
}
