//! The HTTP side: a hyper 1 HTTP/1.1 server on a loopback socket, the routes, bounded request
//! bodies, and the control API under `/_fake/` (loopback peers only).
//!
//! While serving, the server arms no tokio timers (no header or body timeouts; only shutdown is
//! bounded): a test that runs under `start_paused = true` would otherwise see those timers fire
//! as soon as its runtime idles. Request bodies are bounded in size instead; peers are loopback
//! test clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::failure::Injection;
use super::grant::{self, AuthorizeAnswer, Params, TokenCall};
use super::{Reply, Shared};

/// Largest request body read (a form with a client assertion is ~2 KiB).
const BODY_LIMIT: usize = 64 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Transient accept errors (EMFILE, aborted handshakes): keep serving.
                Err(e) => { tracing::warn!(error = %e, "fake idp: accept failed"); continue; }
            },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    // A client that stopped reading (say, a huge body) must not hold shutdown.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match route(&shared, peer, req).await {
        Reply::Hang => {
            // Never answer; let go only when the fake shuts down.
            shared.cancel.cancelled().await;
            Ok(simple(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down",
            ))
        }
        Reply::Http {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut b = Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header(header::CONTENT_TYPE, content_type);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            Ok(b.body(Full::new(Bytes::from(body))).unwrap_or_else(|_| {
                simple(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "bad header",
                )
            }))
        }
    }
}

fn simple(status: StatusCode, ct: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
    r
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

fn form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

async fn route(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/_fake/") {
        if !peer.ip().is_loopback() {
            return Reply::text(403, "the control API answers loopback clients only\n");
        }
        let rest = rest.to_string();
        return control(shared, req, &rest).await;
    }
    if path.starts_with("/v1.0/") {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut st = shared.lock();
        return super::graph::route(
            &mut st,
            req.method(),
            &path,
            req.uri().query(),
            auth.as_deref(),
        );
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [tenant, "oauth2", "v2.0", endpoint] = segs.as_slice() else {
        return Reply::text(404, "not found\n");
    };
    let tenant = tenant.to_string();
    match (*endpoint, req.method()) {
        ("token", &Method::POST) => token(shared, &tenant, &path, req).await,
        ("devicecode", &Method::POST) => device_code(shared, &tenant, req).await,
        ("authorize", &Method::GET) => authorize(shared, &tenant, &req),
        ("token" | "devicecode", m) => {
            let st = shared.lock();
            let e = super::aad::method_not_allowed(m.as_str());
            Reply::aad(&e, st.clock.unix(), None)
        }
        _ => Reply::text(404, "not found\n"),
    }
}

/// The client's `client-request-id` header, echoed as the correlation id when it is GUID-like.
fn correlation(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get("client-request-id")?.to_str().ok()?;
    (v.len() <= 64 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then(|| v.to_string())
}

async fn token(shared: &Shared, tenant: &str, path: &str, req: Request<Incoming>) -> Reply {
    let corr = correlation(&req);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(body) = read_body(req.into_body()).await else {
        let st = shared.lock();
        return Reply::aad(
            &super::aad::malformed_request(),
            st.clock.unix(),
            corr.as_deref(),
        );
    };
    let params = form(&body);
    let p = Params(&params);
    let grant = p.get("grant_type").unwrap_or("").to_string();
    let client = p.get("client_id").unwrap_or("").to_string();

    let mut st = shared.lock();
    let now = st.clock.unix();
    if let Some(f) = st.take_injection(&client, &grant) {
        if let Some(reply) = f.hostile_reply() {
            st.counters.record("token", &grant, &client, f.name(), None);
            tracing::info!(grant = %grant, client_id = %client, injected = f.name(), "fake idp: token request");
            return reply;
        }
        if let Some(e) = f.aad_error(&client, tenant, now) {
            st.counters
                .record("token", &grant, &client, e.error, Some(e.code()));
            tracing::info!(grant = %grant, client_id = %client, injected = f.name(), "fake idp: token request");
            return Reply::aad(&e, now, corr.as_deref());
        }
    }
    let mut audiences = vec![format!("{}{path}", st.base_url)];
    if !host.is_empty() {
        audiences.push(format!("http://{host}{path}"));
    }
    let call = TokenCall {
        tenant_seg: tenant,
        params: p,
        audiences,
    };
    let result = grant::token(&mut st, &call);
    match result {
        Ok(json) => {
            st.counters.record("token", &grant, &client, "ok", None);
            tracing::info!(grant = %grant, client_id = %client, outcome = "ok", "fake idp: token request");
            Reply::json_no_store(200, json)
        }
        Err(e) => {
            st.counters
                .record("token", &grant, &client, e.error, Some(e.code()));
            tracing::info!(grant = %grant, client_id = %client, outcome = e.error, aadsts = e.code(), "fake idp: token request");
            Reply::aad(&e, now, corr.as_deref())
        }
    }
}

async fn device_code(shared: &Shared, tenant: &str, req: Request<Incoming>) -> Reply {
    let corr = correlation(&req);
    let body = read_body(req.into_body()).await.unwrap_or_default();
    let params = form(&body);
    let p = Params(&params);
    let client = p.get("client_id").unwrap_or("").to_string();
    let mut st = shared.lock();
    let now = st.clock.unix();
    match grant::device_code_start(&mut st, tenant, &p) {
        Ok(json) => {
            st.counters.record("devicecode", "", &client, "ok", None);
            Reply::json_no_store(200, json)
        }
        Err(e) => {
            st.counters
                .record("devicecode", "", &client, e.error, Some(e.code()));
            Reply::aad(&e, now, corr.as_deref())
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn authorize(shared: &Shared, tenant: &str, req: &Request<Incoming>) -> Reply {
    let params = form(req.uri().query().unwrap_or("").as_bytes());
    let p = Params(&params);
    let mut st = shared.lock();
    let (client, answer) = grant::authorize(&mut st, tenant, &p);
    match answer {
        AuthorizeAnswer::ErrorPage(e) => {
            st.counters
                .record("authorize", "", &client, e.error, Some(e.code()));
            let body = format!(
                "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
                 <div id=\"errorMessage\">AADSTS{}: {}</div></body></html>\n",
                e.code(),
                html_escape(&e.text)
            );
            Reply::Http {
                status: 400,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: body.into_bytes(),
            }
        }
        AuthorizeAnswer::Redirect {
            redirect_uri,
            form_post,
            params,
        } => {
            let outcome = params
                .iter()
                .find(|(k, _)| k == "error")
                .map_or("ok".to_string(), |(_, v)| v.clone());
            st.counters.record("authorize", "", &client, &outcome, None);
            if form_post {
                let inputs: String = params
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "<input type=\"hidden\" name=\"{}\" value=\"{}\" />",
                            html_escape(k),
                            html_escape(v)
                        )
                    })
                    .collect();
                let body = format!(
                    "<html><head><title>Working...</title></head><body><form method=\"POST\" name=\"hiddenform\" action=\"{}\">{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\" /></noscript></form><script language=\"javascript\">document.forms[0].submit();</script></body></html>\n",
                    html_escape(&redirect_uri)
                );
                return Reply::ok("text/html; charset=utf-8", body.into_bytes());
            }
            let location = match url::Url::parse(&redirect_uri) {
                Ok(mut u) => {
                    u.query_pairs_mut().extend_pairs(params.iter());
                    u.to_string()
                }
                // The redirect URI was matched against the registration; an unparsable one
                // can only be a registered oddity: append the query by hand.
                Err(_) => {
                    let q: String = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(params.iter())
                        .finish();
                    format!("{redirect_uri}?{q}")
                }
            };
            Reply::Http {
                status: 302,
                content_type: "text/html; charset=utf-8",
                headers: vec![("location", location)],
                body: Vec::new(),
            }
        }
    }
}

// ---- control API --------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OnOff {
    on: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Upn {
    upn: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserCode {
    #[serde(default)]
    user_code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Offset {
    offset_secs: i64,
}

fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8], empty_ok: bool) -> Result<T, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Reply::json(
            400,
            serde_json::json!({"error": format!("bad request body: {e}")}),
        )
    })
}

fn ok_json() -> Reply {
    Reply::json(200, serde_json::json!({"ok": true}))
}

async fn control(shared: &Shared, req: Request<Incoming>, rest: &str) -> Reply {
    let method = req.method().clone();
    let Some(body) = read_body(req.into_body()).await else {
        return Reply::json(413, serde_json::json!({"error": "body too large"}));
    };
    let result: Result<Reply, Reply> = (|| {
        let mut st = shared.lock();
        Ok(match (&method, rest) {
            (&Method::GET, "health") => Reply::text(200, "ok\n"),
            (&Method::GET, "stats") => Reply::json(
                200,
                serde_json::to_value(st.counters.snapshot()).unwrap_or_default(),
            ),
            (&Method::POST, "stats/reset") => {
                st.counters.reset();
                ok_json()
            }
            (&Method::POST, "inject") => {
                let i: Injection = serde_json::from_slice(&body).map_err(|e| {
                    Reply::json(
                        400,
                        serde_json::json!({"error": format!("bad injection: {e}")}),
                    )
                })?;
                st.inject(i);
                ok_json()
            }
            (&Method::GET, "injections") => Reply::json(
                200,
                serde_json::to_value(&st.injections).unwrap_or_default(),
            ),
            (&Method::POST, "clear") => {
                st.clear_injections();
                ok_json()
            }
            (&Method::POST, "user") => {
                let u: Upn = parse(&body, false)?;
                let user = st.set_signed_in_user(&u.upn);
                Reply::json(200, serde_json::json!({"upn": user.upn, "oid": user.oid}))
            }
            (&Method::GET, "device") => {
                let now = st.clock.now();
                let pending: Vec<_> = st
                    .devices
                    .iter()
                    .filter(|d| d.state == super::state::DeviceState::Pending && d.expires_at > now)
                    .map(
                        |d| serde_json::json!({"user_code": d.user_code, "client_id": d.client_id}),
                    )
                    .collect();
                Reply::json(200, serde_json::json!({"pending": pending}))
            }
            (&Method::POST, "device/approve") | (&Method::POST, "device/decline") => {
                let c: UserCode = parse(&body, true)?;
                let r = if rest == "device/approve" {
                    st.approve_device(c.user_code.as_deref())
                } else {
                    st.decline_device(c.user_code.as_deref())
                };
                match r {
                    Ok(code) => Reply::json(200, serde_json::json!({"user_code": code})),
                    Err(e) => Reply::json(409, serde_json::json!({"error": e.to_string()})),
                }
            }
            (&Method::POST, "strict") => {
                st.strict_refresh = parse::<OnOff>(&body, false)?.on;
                ok_json()
            }
            (&Method::POST, "loop_detection") => {
                st.loop_detection = parse::<OnOff>(&body, false)?.on;
                ok_json()
            }
            (&Method::POST, "clock") => {
                st.clock
                    .set_offset(parse::<Offset>(&body, false)?.offset_secs);
                ok_json()
            }
            (&Method::POST, "revoke") => {
                let u: Upn = parse(&body, false)?;
                match st.revoke_user(&u.upn) {
                    Ok(()) => ok_json(),
                    Err(e) => Reply::json(404, serde_json::json!({"error": e.to_string()})),
                }
            }
            _ => Reply::json(
                404,
                serde_json::json!({"error": "no such control endpoint"}),
            ),
        })
    })();
    result.unwrap_or_else(|r| r)
}
