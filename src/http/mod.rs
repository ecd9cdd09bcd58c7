//! The web side: every route the exporter serves, in one place.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/metrics` (`--web.telemetry-path`) | Prometheus text 0.0.4, or OpenMetrics 1.0 when the `Accept` header asks for it; streamed in chunks ([`scrape`]) |
//! | GET | `/` | status page: every check with its state, reason, last success; links to transcripts |
//! | GET | `/checks/{id}` | the last run's transcript of one check (HTML; `?format=text` for plain text) |
//! | GET | `/-/healthy` | 200 while the process serves |
//! | GET | `/-/ready` | 200 once every configured check has run at least once, else 503 |
//! | POST | `/-/reload` | reload the configuration file (loopback clients only); 200, or 500 with the problems |
//!
//! Nothing here does network I/O towards Microsoft: pages only read [`State`]. Connections are
//! bounded in number and in header-read time so a slow or hostile client cannot pin the server.

pub mod scrape;
pub mod status;
pub mod webconfig;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::probe::line::BoxStream;
use crate::state::{CheckKey, State};

/// Most HTTP connections served at once; further ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload request: the reply carries the problems when the new config was refused.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What the handlers need.
pub struct Web {
    pub state: Arc<State>,
    pub config: Arc<ArcSwap<Config>>,
    pub telemetry_path: String,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// TLS and basic auth from `--web.config.file` (default: neither).
    pub web_config: webconfig::WebConfig,
}

/// A page whole, or the `/metrics` exposition streamed.
type Body = Either<Full<Bytes>, scrape::ScrapeBody>;

/// Bind `addr` (`:10030` means every interface).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad port in {addr:?}"),
            )
        })?;
        // dual-stack where IPv6 exists, else IPv4 only
        match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(l) => return Ok(l),
            Err(_) => return TcpListener::bind(SocketAddr::from(([0u8; 4], port))).await,
        }
    }
    TcpListener::bind(addr).await
}

/// Serve until `cancel`, then finish in-flight requests (bounded by `grace`).
pub async fn serve(
    listener: TcpListener,
    web: Arc<Web>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let web = web.clone();
        let tls = web.web_config.tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream: BoxStream = match tls {
                None => Box::new(stream),
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake with client failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let svc = service_fn(move |req| {
                let web = web.clone();
                async move { Ok::<_, Infallible>(handle(&web, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

async fn handle(web: &Web, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let authenticated = web.web_config.requires_auth();
    if authenticated {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !web.web_config.authorized(header) {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"o365-mail-exporter\""),
            );
            return r;
        }
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, p) if p == web.telemetry_path => metrics(web, &req),
        (Method::GET | Method::HEAD, "/") => html(StatusCode::OK, status::page(web)),
        (Method::GET | Method::HEAD, "/-/healthy") => text(StatusCode::OK, "Healthy\n".into()),
        (Method::GET | Method::HEAD, "/-/ready") => {
            if web.state.all_checked() {
                text(StatusCode::OK, "Ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: checks have not all run once yet\n".into(),
                )
            }
        }
        (Method::POST | Method::PUT, "/-/reload") => reload(web, peer, authenticated).await,
        (Method::GET | Method::HEAD, p) if p.starts_with("/checks/") => {
            let id = crate::percent_decode(&p["/checks/".len()..]);
            match CheckKey::parse_id(&id).and_then(|k| web.state.check(&k).map(|r| (k, r))) {
                None => text(StatusCode::NOT_FOUND, format!("no check {id:?}\n")),
                Some((key, rec)) => {
                    if query.split('&').any(|kv| kv == "format=text") {
                        text(StatusCode::OK, status::transcript_text(&key, &rec))
                    } else {
                        html(StatusCode::OK, status::transcript_page(&key, &rec))
                    }
                }
            }
        }
        (_, "/" | "/-/healthy" | "/-/ready" | "/-/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        (_, p) if p == web.telemetry_path => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The exposition, streamed (see [`scrape`]); HEAD gets the same head, and hyper sends no body.
fn metrics(web: &Web, req: &Request<Incoming>) -> Response<Body> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let om = wants_openmetrics(accept);
    // One configuration snapshot for the whole scrape, however long the scraper takes.
    let scrape = crate::metrics::Scrape::new(web.state.clone(), web.config.load_full(), om);
    let content_type = scrape.content_type();
    with_headers(
        Response::new(Either::Right(scrape::ScrapeBody::new(scrape))),
        StatusCode::OK,
        content_type,
    )
}

/// Whether an `Accept` header prefers OpenMetrics (Prometheus sends it first, with the highest
/// q-value, when it scrapes).
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';').map(str::trim);
        let media = it.next().unwrap_or("");
        let mut q = 1.0f32;
        for p in it {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.parse().unwrap_or(0.0);
            }
        }
        let om = media == "application/openmetrics-text";
        if (om || media == "text/plain" || media == "*/*") && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, om));
        }
    }
    best.is_some_and(|(_, om)| om)
}

/// Mutating routes: loopback clients, or any client that passed basic auth.
async fn reload(web: &Web, peer: SocketAddr, authenticated: bool) -> Response<Body> {
    if !authenticated && !peer.ip().is_loopback() && !is_mapped_loopback(&peer) {
        return text(
            StatusCode::FORBIDDEN,
            "reload is only accepted from loopback clients, or with basic auth configured in --web.config.file\n".into(),
        );
    }
    let (tx, rx) = oneshot::channel();
    if web.reload.send(tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match rx.await {
        Ok(Ok(())) => text(StatusCode::OK, "configuration reloaded\n".into()),
        Ok(Err(problems)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("configuration refused, the old one stays in use:\n{problems}"),
        ),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

fn is_mapped_loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        _ => false,
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    with_headers(r, status, content_type)
}

fn with_headers(mut r: Response<Body>, status: StatusCode, content_type: &str) -> Response<Body> {
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = respond(status, "text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics(
            "text/plain;q=1,application/openmetrics-text;q=0.5"
        ));
    }

    #[test]
    fn decodes_percent() {
        assert_eq!(
            crate::percent_decode("login%3Asupport%3Aimap"),
            "login:support:imap"
        );
        assert_eq!(crate::percent_decode("a%2"), "a%2");
        assert_eq!(crate::percent_decode("%zz"), "%zz");
        assert_eq!(crate::percent_decode("%é%"), "%é%");
    }
}
