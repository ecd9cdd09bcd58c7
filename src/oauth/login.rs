//! The `login --credential NAME` command: a user signs in once for a delegated credential, and the
//! refresh token is stored for the exporter.
//!
//! Two flows (o365-facts.md 3.1, 3.6): authorization code with PKCE and a loopback redirect (we
//! bind 127.0.0.1, print the URL, the browser comes back with the code), or `--device-code` (print
//! Microsoft's message, poll at `interval`, +5 s on `slow_down`).
//!
//! The check that matters most happens after sign-in: the identity in the token must be the
//! credential's `expected_identity`. The usual failure is single sign-on: the admin opens the URL
//! in their normal browser, which silently signs in with *their* Windows/Kerberos or Microsoft 365
//! session, and the exporter would then watch the admin's mailbox rights instead of the product's.
//! So a token for anyone else is refused with an explanation, the authorize URL carries
//! `prompt=select_account` and a `login_hint`, and the instructions ask for a private window.
//!
//! Everything the person sees goes through a [`Prompt`], so tests drive the flow without a
//! browser or a terminal.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use oauth2::{AuthUrl, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::error::{classify, clean_token, MsError, TokenReason};
use super::grant::{self, Fetched, Grant};
use super::http::HttpClient;
use super::inspect;
use super::store::{StoredToken, TokenStore};
use crate::cli::LoginArgs;
use crate::config::{ClientAuth, Config, Credential, GrantKind};

/// What the person is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginEvent {
    /// Open this URL (authorization code flow).
    AuthorizeUrl(String),
    /// Device code flow: Microsoft's own sentence, and its parts.
    DeviceCode {
        message: String,
        verification_uri: String,
        user_code: String,
    },
    /// Progress and advice.
    Info(String),
}

/// Where [`run_with`] talks to the person.
pub trait Prompt: Send {
    fn show(&mut self, event: LoginEvent);
}

/// The terminal: everything to stderr, so stdout stays clean for scripts.
pub struct Terminal;

impl Prompt for Terminal {
    fn show(&mut self, event: LoginEvent) {
        match event {
            LoginEvent::AuthorizeUrl(url) => eprintln!("\n{url}\n"),
            LoginEvent::DeviceCode { message, .. } => eprintln!("\n{message}\n"),
            LoginEvent::Info(s) => eprintln!("{s}"),
        }
    }
}

const PRIVATE_WINDOW: &str = "Use a private/incognito browser window and sign in as the mailbox user (not as yourself): a normal window may sign in silently with your own Windows or Microsoft 365 session.";

/// Largest callback request read from the browser.
const MAX_CALLBACK: usize = 16 * 1024;

/// Run `login` with the terminal as the prompt.
pub async fn run(config: &Config, args: &LoginArgs) -> anyhow::Result<()> {
    run_with(config, args, &mut Terminal).await.map(|_| ())
}

/// Run `login`; returns where the token was stored.
pub async fn run_with(
    config: &Config,
    args: &LoginArgs,
    prompt: &mut dyn Prompt,
) -> anyhow::Result<PathBuf> {
    let cred = config.credential(&args.credential).ok_or_else(|| {
        let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
        anyhow!(
            "no credential is named {:?} (configured: {})",
            args.credential,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    })?;
    if cred.grant != GrantKind::RefreshToken {
        bail!(
            "credential {} uses the {} grant, which needs no sign-in (login is for grant: refresh_token)",
            cred.name,
            cred.grant.as_str()
        );
    }
    let http = HttpClient::new(cred.ca_file.as_deref(), cred.timeout, cred.proxy.as_ref())?;
    let deadline = Instant::now() + Duration::from(args.timeout);
    let fetched = if args.device_code {
        device_code(&http, cred, deadline, prompt).await?
    } else {
        auth_code(&http, cred, args, deadline, prompt).await?
    };
    finish(config, cred, fetched, prompt)
}

/// The scopes asked for at sign-in: the credential's plus OpenID, for an id_token that names
/// the user (OIDC scopes may accompany one resource, o365-facts.md 3.1).
fn login_scopes(cred: &Credential) -> Vec<String> {
    let mut s = cred.scopes.clone();
    for extra in ["openid", "profile", "offline_access"] {
        if !s.iter().any(|x| x == extra) {
            s.push(extra.to_string());
        }
    }
    s
}

/// Check who signed in, then store the refresh token.
fn finish(
    config: &Config,
    cred: &Credential,
    fetched: Fetched,
    prompt: &mut dyn Prompt,
) -> anyhow::Result<PathBuf> {
    let seen = inspect::inspect(
        cred,
        fetched.access_token.expose_secret(),
        fetched.id_token.as_ref().map(|t| t.expose_secret()),
        &fetched.scopes,
    )
    .identity_seen;
    match (&cred.expected_identity, &seen) {
        (Some(expected), Some(seen)) if !inspect::same_identity(seen, expected) => bail!(
            "refusing to store the token: it belongs to {seen}, but credential {} expects {expected}. \
             This is the single-sign-on pitfall: the browser signed in silently with the identity it \
             already had (your own Windows/Kerberos or Microsoft 365 session) instead of asking. \
             Run login again, open the URL in a private/incognito window, and sign in as {expected}.",
            cred.name
        ),
        (Some(expected), None) => bail!(
            "refusing to store the token: the answer does not say who signed in, so it cannot be \
             checked against {expected}. Make sure the app may request the openid and profile scopes."
        ),
        (None, Some(seen)) => prompt.show(LoginEvent::Info(format!(
            "Signed in as {seen}. Tip: set expected_identity: {seen} on credential {} so the \
             exporter notices if a token of someone else is ever used.",
            cred.name
        ))),
        _ => {}
    }
    let Some(rt) = fetched.refresh_token else {
        bail!(
            "the sign-in returned no refresh token: add offline_access to the scopes of credential {}",
            cred.name
        );
    };
    let store = TokenStore::new(&config.state_dir);
    let path = store.path(&cred.name)?;
    store
        .save(
            &cred.name,
            &StoredToken {
                refresh_token: rt,
                client_id: cred.client_id.clone(),
                identity: seen.clone(),
                saved_at: crate::state::unix(std::time::SystemTime::now()) as i64,
            },
        )
        .context("the sign-in worked but the refresh token could not be stored")?;
    prompt.show(LoginEvent::Info(format!(
        "Stored the refresh token of credential {}{} in {}. A running exporter picks it up at its next refresh.",
        cred.name,
        seen.map(|s| format!(" (signed in as {s})")).unwrap_or_default(),
        path.display()
    )));
    Ok(path)
}

/// Host, port and path of the redirect URI: the configured one (any loopback `http://`), else
/// `http://localhost:PORT/`. Entra accepts any port on a loopback redirect.
fn redirect_target(cred: &Credential, args: &LoginArgs) -> anyhow::Result<(url::Url, u16)> {
    let mut u = match &cred.redirect_uri {
        Some(r) => url::Url::parse(r).with_context(|| format!("redirect_uri {r:?}"))?,
        None => url::Url::parse("http://localhost/").context("invariant: a valid URL")?,
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    if u.scheme() != "http" || !loopback {
        bail!(
            "redirect_uri {u} is not a loopback http:// address, so this machine cannot receive the \
             browser's redirect; use --device-code, or register http://localhost as a \
             mobile-and-desktop redirect URI"
        );
    }
    let port = args.redirect_port.or(u.port()).unwrap_or(0);
    let _ = u.set_port(None);
    Ok((u, port))
}

/// The redirect URI as sent: Entra compares it with the registered one character by character
/// apart from the loopback port, and a trailing slash is a classic AADSTS50011 mismatch. So the
/// root path gets no slash unless the configured URI has one (the portal's default is
/// `http://localhost`).
fn redirect_string(u: &url::Url, configured: Option<&str>) -> String {
    let s = u.to_string();
    let wants_slash = configured.is_some_and(|c| c.ends_with('/'));
    if u.path() == "/" && u.query().is_none() && !wants_slash {
        s.trim_end_matches('/').to_string()
    } else {
        s
    }
}

async fn auth_code(
    http: &HttpClient,
    cred: &Credential,
    args: &LoginArgs,
    deadline: Instant,
    prompt: &mut dyn Prompt,
) -> anyhow::Result<Fetched> {
    let (mut redirect, port) = redirect_target(cred, args)?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the redirect"))?;
    let port = listener.local_addr()?.port();
    let _ = redirect.set_port(Some(port));
    let redirect_s = redirect_string(&redirect, cred.redirect_uri.as_deref());
    let scopes = login_scopes(cred);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let auth = AuthUrl::new(cred.authorize_url.clone())
        .map_err(|_| anyhow!("authorize URL {:?} is not valid", cred.authorize_url))?;
    let client = grant::client(cred)
        .map_err(|f| anyhow!(f.message))?
        .set_auth_uri(auth);
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge)
        .set_redirect_uri(Cow::Owned(
            RedirectUrl::new(redirect_s.clone()).context("redirect URI")?,
        ))
        .add_extra_param("prompt", "select_account");
    if let Some(hint) = &cred.expected_identity {
        req = req.add_extra_param("login_hint", hint.clone());
    }
    let (url, state) = req.url();
    prompt.show(LoginEvent::Info(format!(
        "Open this URL to sign in for credential {}. {PRIVATE_WINDOW}",
        cred.name
    )));
    prompt.show(LoginEvent::AuthorizeUrl(url.to_string()));
    prompt.show(LoginEvent::Info(format!(
        "Waiting for the browser to come back to {redirect_s} ..."
    )));
    let params = tokio::time::timeout_at(deadline, callback(&listener, redirect.path()))
        .await
        .map_err(|_| anyhow!("gave up waiting for the browser's redirect"))??;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(err) = get("error") {
        bail!(
            "the sign-in failed: {err}: {}",
            get("error_description")
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    if get("state").as_deref() != Some(state.secret().as_str()) {
        bail!("the redirect's state does not match this sign-in (a stale or forged redirect); run login again");
    }
    let code = get("code").ok_or_else(|| anyhow!("the redirect carries no code"))?;
    grant::request(
        http,
        cred,
        Grant::Code {
            code,
            verifier,
            redirect_uri: redirect_s,
        },
        &scopes,
        Default::default(),
    )
    .await
    .map_err(|f| anyhow!("redeeming the sign-in failed ({}): {}", f.reason, f.message))
}

/// Serve the loopback redirect until a request for `path` arrives; its query parameters.
async fn callback(listener: &TcpListener, path: &str) -> anyhow::Result<Vec<(String, String)>> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = Vec::new();
        let head = tokio::time::timeout(Duration::from_secs(10), async {
            let mut chunk = [0u8; 2048];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_CALLBACK {
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        if !matches!(head, Ok(Ok(()))) {
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let target = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Ok(u) = url::Url::parse(&format!("http://localhost{target}")) else {
            continue;
        };
        if u.path() != path || u.query().is_none() {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let params: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        let ok = params.iter().any(|(k, _)| k == "code");
        let page = if ok {
            "<!doctype html><title>Signed in</title><p>Signed in. You can close this window and return to the terminal.</p>"
        } else {
            "<!doctype html><title>Sign-in failed</title><p>The sign-in failed; the terminal says why.</p>"
        };
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            )
            .await;
        return Ok(params);
    }
}

#[derive(Deserialize)]
struct DeviceAuth {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    interval: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

fn secs(v: &Option<serde_json::Value>, default: u64) -> u64 {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(default),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(default),
        _ => default,
    }
}

fn refused(status: u16, body: &[u8], what: &str) -> anyhow::Error {
    match MsError::parse(body) {
        Some(e) => {
            let reason = classify(status, Some(&e), false);
            tracing::warn!(
                trace_id = %clean_token(e.trace_id.as_deref().unwrap_or("")),
                correlation_id = %clean_token(e.correlation_id.as_deref().unwrap_or("")),
                "{what} refused: {e}"
            );
            anyhow!("{what} refused: {e} ({reason}): {}", reason.fix())
        }
        None => anyhow!("{what} failed: HTTP {status}, not an OAuth answer"),
    }
}

async fn device_code(
    http: &HttpClient,
    cred: &Credential,
    deadline: Instant,
    prompt: &mut dyn Prompt,
) -> anyhow::Result<Fetched> {
    if !matches!(cred.client_auth, ClientAuth::None) {
        prompt.show(LoginEvent::Info(
            "Note: the device code flow runs as a public client; the configured client secret or certificate is not sent (AADSTS700025).".into(),
        ));
    }
    let scope = login_scopes(cred).join(" ");
    let resp = http
        .post_form(
            &cred.device_code_url,
            &[("client_id", cred.client_id.as_str()), ("scope", &scope)],
        )
        .await
        .map_err(|e| anyhow!("device code request failed: {e}"))?;
    if resp.status() != 200 {
        return Err(refused(
            resp.status().as_u16(),
            resp.body(),
            "the device code request",
        ));
    }
    let auth: DeviceAuth = serde_json::from_slice(resp.body())
        .map_err(|_| anyhow!("the device code answer is not valid JSON"))?;
    let mut interval = Duration::from_secs(secs(&auth.interval, 5).clamp(1, 60));
    let expires = Instant::now() + Duration::from_secs(secs(&auth.expires_in, 900));
    let deadline = deadline.min(expires);
    prompt.show(LoginEvent::Info(PRIVATE_WINDOW.to_string()));
    prompt.show(LoginEvent::DeviceCode {
        message: auth.message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, open {} and enter the code {}.",
                auth.verification_uri, auth.user_code
            )
        }),
        verification_uri: auth.verification_uri.clone(),
        user_code: auth.user_code.clone(),
    });
    let grant_type = "urn:ietf:params:oauth:grant-type:device_code";
    loop {
        if Instant::now() + interval > deadline {
            bail!("the device code expired before the sign-in finished; run login again");
        }
        tokio::time::sleep(interval).await;
        let started = Instant::now();
        let resp = match http
            .post_form(
                &cred.token_url,
                &[
                    ("grant_type", grant_type),
                    ("client_id", cred.client_id.as_str()),
                    ("device_code", auth.device_code.as_str()),
                ],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                prompt.show(LoginEvent::Info(format!("polling failed ({e}); retrying")));
                continue;
            }
        };
        let status = resp.status().as_u16();
        if status == 200 {
            return grant::parse_success(resp.body(), started.elapsed()).map_err(|e| anyhow!(e));
        }
        let err = MsError::parse(resp.body());
        match err.as_ref().map(|e| e.error.as_str()) {
            Some("authorization_pending") => {}
            // RFC 8628 3.5: +5 s for this and all later polls
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("expired_token") | Some("code_expired") => {
                bail!("the device code expired before the sign-in finished; run login again")
            }
            Some("authorization_declined") | Some("access_denied") => {
                bail!("the sign-in was declined in the browser")
            }
            Some("bad_verification_code") => {
                bail!("Microsoft does not know this device code; run login again")
            }
            _ if status == 429 || status >= 500 => {
                let reason = classify(status, err.as_ref(), false);
                debug_assert!(reason.is_transient() || reason == TokenReason::Other);
                prompt.show(LoginEvent::Info(format!(
                    "the token endpoint answered HTTP {status}; retrying"
                )));
            }
            _ => return Err(refused(status, resp.body(), "the sign-in")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        crate::config::load_str(
            &format!(
                "credentials:\n  - name: user\n    tenant: contoso.example\n    client_id: app\n    grant: refresh_token\n{extra}"
            ),
            "t",
            std::path::Path::new("."),
        )
        .expect("valid")
    }

    fn args() -> LoginArgs {
        LoginArgs {
            credential: "user".into(),
            device_code: false,
            redirect_port: None,
            timeout: Duration::from_secs(5).into(),
        }
    }

    #[test]
    fn redirect_defaults_to_localhost_and_refuses_non_loopback() {
        let c = cfg("");
        let (u, port) = redirect_target(&c.credentials[0], &args()).unwrap();
        assert_eq!((u.as_str(), port), ("http://localhost/", 0));
        let c = cfg("    redirect_uri: http://127.0.0.1:8400/cb\n");
        let (u, port) = redirect_target(&c.credentials[0], &args()).unwrap();
        assert_eq!((u.path(), port), ("/cb", 8400));
        let c = cfg("    redirect_uri: https://ece.example.com/cb\n");
        let e = redirect_target(&c.credentials[0], &args()).unwrap_err();
        assert!(e.to_string().contains("--device-code"), "{e}");
    }

    #[test]
    fn redirect_string_keeps_the_registered_shape() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            redirect_string(&u("http://localhost:8400/"), None),
            "http://localhost:8400"
        );
        assert_eq!(
            redirect_string(&u("http://localhost:8400/"), Some("http://localhost/")),
            "http://localhost:8400/"
        );
        assert_eq!(
            redirect_string(&u("http://127.0.0.1:8400/cb"), Some("http://127.0.0.1/cb")),
            "http://127.0.0.1:8400/cb"
        );
    }

    #[test]
    fn login_scopes_add_openid_once() {
        let c = cfg("    scopes: [\"https://outlook.office.com/IMAP.AccessAsUser.All\", openid]\n");
        let s = login_scopes(&c.credentials[0]);
        assert_eq!(s.iter().filter(|x| *x == "openid").count(), 1);
        assert!(s.contains(&"offline_access".to_string()) && s.contains(&"profile".to_string()));
    }

    #[tokio::test]
    async fn unknown_and_app_only_credentials_are_refused() {
        let c = cfg("");
        let mut a = args();
        a.credential = "nope".into();
        let e = run_with(&c, &a, &mut Terminal).await.unwrap_err();
        assert!(e.to_string().contains("configured: user"), "{e}");
    }
}
