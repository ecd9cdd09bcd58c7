//! The one HTTP client of the token work, and the `oauth2::AsyncHttpClient` adapter over it.
//!
//! Every token-endpoint call goes through [`HttpClient::send`]: redirects off (a token endpoint
//! never redirects; a redirect means a proxy or captive portal, and following it could carry a
//! secret elsewhere), a deadline over the whole exchange including the body, and a body cap read
//! chunk by chunk so a runaway answer cannot grow memory. TLS is rustls with the aws-lc-rs
//! provider and either the Mozilla roots or the credential's `ca_file`, so `ring` stays out of
//! the tree and only one reqwest is built (oauth2's own reqwest feature is off).
//!
//! The adapter [`Exchange`] also keeps what oauth2 throws away but classification needs: the
//! HTTP status, `Retry-After`, the content type and the body length.
//!
//! With a configured proxy (`proxy:`) every request whose host `no_proxy` does not name goes
//! through it: HTTPS by CONNECT (TLS end to end, the certificate checked as without a proxy),
//! plain `http://` (loopback test endpoints) as a forwarded request. The credentials go in a
//! `Proxy-Authorization` header marked sensitive, never in the proxy URL, so no `Debug` or error
//! of reqwest can show them. hyper-util does not export its tunnel error type, so the proxy's
//! failures are recognised by their fixed texts (`tunnel error: ...`); the proxy tests pin them
//! against a real tinyproxy.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;

use secrecy::ExposeSecret;

use super::error::TokenReason;
use super::OauthError;
use crate::config::ProxySettings;

/// Largest response body read from the identity platform; real answers are a few kB.
pub const MAX_BODY: usize = 1 << 20;
/// Longest `Retry-After` honoured; a larger value is treated as this (a broken proxy must not
/// silence the exporter for a day).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why an HTTP exchange produced no response. Messages carry no request data (bodies hold
/// secrets) and no response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("the response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid request: {0}")]
    Request(String),
    /// The proxy could not be reached (name, connect, or the connection to it broke).
    #[error("cannot reach the proxy {proxy}: {detail}")]
    ProxyConnect { proxy: String, detail: String },
    /// The proxy answered 407 (or 401 to a CONNECT): credentials missing or refused.
    #[error("the proxy {proxy} asked for credentials or refused them (HTTP 407 or 401)")]
    ProxyAuth { proxy: String },
    /// The proxy did not open the tunnel: a non-2xx answer to CONNECT (policy, or it could not
    /// reach the server), or an answer that is not HTTP.
    #[error("the proxy {proxy} did not open a tunnel: {detail}")]
    ProxyRefused { proxy: String, detail: String },
}

impl HttpError {
    pub fn reason(&self) -> TokenReason {
        match self {
            HttpError::Timeout(_) => TokenReason::Timeout,
            HttpError::Network(_) => TokenReason::Network,
            HttpError::TooLarge(_) => TokenReason::BadResponse,
            HttpError::Request(_) => TokenReason::ConfigError,
            HttpError::ProxyConnect { .. } => TokenReason::ProxyConnectFailed,
            HttpError::ProxyAuth { .. } => TokenReason::ProxyAuthRequired,
            HttpError::ProxyRefused { .. } => TokenReason::ProxyRefused,
        }
    }
}

/// A reusable HTTP client for one trust setting, deadline and proxy.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeout: Duration,
    proxy: Option<Arc<ProxySettings>>,
}

/// Only what is safe to show: the deadline and the proxy's address.
impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy.as_ref().map(|p| p.url.as_str()))
            .finish()
    }
}

impl HttpClient {
    /// Trust the Mozilla roots (webpki-root-certs), or only the certificates in `ca_file`; send
    /// through `proxy` (except to its `no_proxy` hosts) when one is given.
    pub fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        proxy: Option<&Arc<ProxySettings>>,
    ) -> Result<HttpClient, OauthError> {
        let roots = roots(ca_file)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| OauthError::Http(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // reqwest is built without HTTP/2
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // One client talks to one token host: a few resumable sessions are plenty, and rustls'
        // default (256) allocates its table up front, per credential.
        tls.resumption = rustls::client::Resumption::in_memory_sessions(4);
        let mut builder = reqwest::Client::builder();
        if let Some(p) = proxy {
            let mut rp = reqwest::Proxy::all(p.url.as_str())
                .map_err(|e| OauthError::Http(format!("proxy {}: {e}", p.url)))?
                .no_proxy(reqwest::NoProxy::from_string(&p.no_proxy_string()));
            if let Some(auth) = p.basic_auth() {
                let mut v = http::HeaderValue::from_str(auth.expose_secret()).map_err(|_| {
                    OauthError::Http("the proxy credentials are not a valid header value".into())
                })?;
                v.set_sensitive(true);
                rp = rp.custom_http_auth(v);
            }
            builder = builder.proxy(rp);
        }
        let inner = builder
            .redirect(reqwest::redirect::Policy::none())
            // No idle keep-alive connections: a credential asks for a token about once an hour,
            // long after an idle connection would have been dropped, so a pooled one only held
            // ~25 kB of buffers per credential between requests.
            .pool_max_idle_per_host(0)
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("o365-mail-exporter/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| OauthError::Http(e.to_string()))?;
        Ok(HttpClient {
            inner,
            timeout,
            proxy: proxy.cloned(),
        })
    }

    /// The proxy a request to `host` goes through, if any.
    fn proxy_for(&self, host: Option<&str>) -> Option<&ProxySettings> {
        let p = self.proxy.as_deref()?;
        match host {
            Some(h) if !p.bypasses(h) => Some(p),
            _ => None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `req` and read at most [`MAX_BODY`] bytes of the answer, all before the deadline.
    pub async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let target = req.uri().host().map(|h| {
            let port = req.uri().port_u16().unwrap_or(443);
            (h.to_string(), port, req.uri().scheme_str() == Some("https"))
        });
        match tokio::time::timeout_at(deadline, self.send_inner(req)).await {
            Ok(Err(e @ HttpError::ProxyRefused { .. })) => match (&target, &self.proxy) {
                (Some((host, port, true)), Some(p)) => {
                    Err(diagnose(p, host, *port, deadline).await.unwrap_or(e))
                }
                _ => Err(e),
            },
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn send_inner(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let req = reqwest::Request::try_from(req).map_err(|e| HttpError::Request(e.to_string()))?;
        let proxy = self.proxy_for(req.url().host_str());
        let tunnel = req.url().scheme() == "https";
        let mut resp = self
            .inner
            .execute(req)
            .await
            .map_err(|e| self.map(e, proxy, tunnel))?;
        if let (Some(p), http::StatusCode::PROXY_AUTHENTICATION_REQUIRED) = (proxy, resp.status()) {
            // a forwarded request's proxy wants credentials; it may not wait for the body
            return Err(HttpError::ProxyAuth {
                proxy: p.url.trim_end_matches('/').to_string(),
            });
        }
        let mut builder = http::Response::builder().status(resp.status());
        if let Some(h) = builder.headers_mut() {
            *h = resp.headers().clone();
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(HttpError::TooLarge(MAX_BODY));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map(e, None, false))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError::TooLarge(MAX_BODY));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError::Request(e.to_string()))
    }

    /// POST a form and return the raw answer (device code flow, which oauth2 would parse with
    /// an error type that drops Microsoft's fields).
    pub async fn post_form(
        &self,
        url: &str,
        params: &[(&str, &str)],
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
            .into_bytes();
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .map_err(|e| HttpError::Request(e.to_string()))?;
        self.send(req).await
    }

    /// Classify a reqwest error. `proxy`: the request went through this proxy; `tunnel`: by
    /// CONNECT (HTTPS), else forwarded (plain HTTP).
    fn map(&self, e: reqwest::Error, proxy: Option<&ProxySettings>, tunnel: bool) -> HttpError {
        if e.is_timeout() {
            return HttpError::Timeout(self.timeout);
        }
        let connect = e.is_connect();
        let chain = error_chain(&e.without_url());
        if let Some(p) = proxy {
            if let Some(err) = proxy_error(p, &chain, tunnel && connect, !tunnel && connect) {
                return err;
            }
        }
        HttpError::Network(chain)
    }
}

/// hyper-util keeps only "unsuccessful" of a refused tunnel: ask the proxy once more with the
/// endpoint probe's CONNECT, which reads its status, to tell 407/401 from 403 or 502 and quote
/// it. Bounded by the request's deadline; None (keep the first error) when the second answer
/// says nothing more.
async fn diagnose(
    p: &ProxySettings,
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
) -> Option<HttpError> {
    use crate::probe::Reason;
    let mut rec = crate::probe::Recorder::new();
    let e = crate::probe::proxy::connect(&mut rec, p, host, port, deadline)
        .await
        .err()?;
    let proxy = p.url.trim_end_matches('/').to_string();
    let detail = e
        .detail
        .strip_prefix(&format!("proxy {proxy}: "))
        .unwrap_or(&e.detail)
        .to_string();
    match e.reason {
        Reason::ProxyAuthRequired => Some(HttpError::ProxyAuth { proxy }),
        Reason::ProxyRefused
        | Reason::ProtocolError
        | Reason::ReplyTooLong
        | Reason::ConnectionClosed => Some(HttpError::ProxyRefused { proxy, detail }),
        _ => None,
    }
}

/// hyper-util's tunnel errors (`TunnelError`'s Display; the type is not exported).
const TUNNEL_CONNECT: &str = "tunnel error: failed to create underlying connection";
const TUNNEL_IO: &str = "tunnel error: io error establishing tunnel";
const TUNNEL_AUTH: &str = "tunnel error: proxy authorization required";
const TUNNEL: &str = "tunnel error: ";

/// The proxy failure in a reqwest error chain, if it is one. `connect_failed_forward`: a
/// connect error of a forwarded (plain HTTP) request, whose only connection is to the proxy.
fn proxy_error(
    p: &ProxySettings,
    chain: &str,
    tunnelled: bool,
    connect_failed_forward: bool,
) -> Option<HttpError> {
    let proxy = p.url.trim_end_matches('/').to_string();
    let after = |marker: &str| {
        chain
            .split_once(marker)
            .map(|(_, rest)| rest.trim_start_matches(": ").to_string())
            .unwrap_or_default()
    };
    if tunnelled && chain.contains(TUNNEL_AUTH) {
        return Some(HttpError::ProxyAuth { proxy });
    }
    if tunnelled && (chain.contains(TUNNEL_CONNECT) || chain.contains(TUNNEL_IO)) {
        let marker = if chain.contains(TUNNEL_CONNECT) {
            TUNNEL_CONNECT
        } else {
            TUNNEL_IO
        };
        return Some(HttpError::ProxyConnect {
            proxy,
            detail: after(marker),
        });
    }
    if tunnelled && chain.contains(TUNNEL) {
        let what = after(TUNNEL);
        let detail = match what.as_str() {
            "unsuccessful" => "it answered CONNECT with an error status (for example 403 by policy, or 502 when it cannot reach the server) or with something that is not HTTP".to_string(),
            "unexpected end of file" => "it closed the connection without answering CONNECT".to_string(),
            "proxy response headers too long" => "its answer to CONNECT was too long".to_string(),
            other => other.to_string(),
        };
        return Some(HttpError::ProxyRefused { proxy, detail });
    }
    if connect_failed_forward {
        return Some(HttpError::ProxyConnect {
            proxy,
            detail: chain.to_string(),
        });
    }
    None
}

/// `outer: inner: innermost`, so "connection refused" is visible (reqwest's own Display only
/// says "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

fn roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, OauthError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => return Ok(crate::probe::tls::builtin_roots()),
        Some(path) => {
            let data = std::fs::read(path).map_err(|e| {
                OauthError::Http(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(OauthError::Http(format!(
                    "CA file {} holds no usable certificate",
                    path.display()
                )));
            }
        }
    }
    Ok(Arc::new(roots))
}

/// What the last exchange answered, beyond what oauth2 reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub content_type: Option<String>,
    pub body_len: usize,
}

/// `Retry-After` as delay-seconds (what Microsoft sends, o365-facts.md 9); HTTP dates are
/// ignored (the backoff applies instead).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

impl Meta {
    pub fn of(resp: &http::Response<Vec<u8>>) -> Meta {
        Meta {
            status: resp.status().as_u16(),
            retry_after: retry_after(resp.headers()),
            content_type: resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| {
                    // chosen by whoever answers: keep it a media type
                    s.chars()
                        .filter(|c| c.is_ascii_alphanumeric() || "/+.-;= ".contains(*c))
                        .take(80)
                        .collect()
                }),
            body_len: resp.body().len(),
        }
    }
}

/// One oauth2 request's HTTP client: forwards to [`HttpClient`] and records [`Meta`].
pub struct Exchange {
    http: HttpClient,
    meta: Mutex<Option<Meta>>,
}

impl Exchange {
    /// `http` is cloned (cheap: reqwest's client is shared), which keeps the adapter free of
    /// lifetimes; a borrowed one trips rustc's higher-ranked `Send` check in spawned tasks.
    pub fn new(http: &HttpClient) -> Exchange {
        Exchange {
            http: http.clone(),
            meta: Mutex::new(None),
        }
    }

    /// What the server answered; None when no answer came (network error, timeout).
    pub fn meta(&self) -> Option<Meta> {
        self.meta.lock().map(|m| m.clone()).unwrap_or(None)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Exchange {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = self.http.send(request).await?;
            if let Ok(mut m) = self.meta.lock() {
                *m = Some(Meta::of(&resp));
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_capped_and_dates_ignored() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "60".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
        h.insert(http::header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn client_builds_with_builtin_roots_and_rejects_an_empty_ca_file() {
        assert!(HttpClient::new(None, Duration::from_secs(1), None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = HttpClient::new(Some(&f), Duration::from_secs(1), None).unwrap_err();
        assert!(e.to_string().contains("no usable certificate"), "{e}");
    }

    #[tokio::test]
    async fn oversized_and_unreachable_answers_are_classified() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..40 {
                let head = format!("{:x}\r\n", chunk.len());
                if s.write_all(head.as_bytes()).await.is_err()
                    || s.write_all(&chunk).await.is_err()
                    || s.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
            }
        });
        let c = HttpClient::new(None, Duration::from_secs(5), None).unwrap();
        let e = c
            .post_form(&format!("http://{addr}/token"), &[("a", "b")])
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge(_)), "{e}");
        assert_eq!(e.reason(), TokenReason::BadResponse);

        // nothing listens on a port we just released
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = c
            .post_form(&format!("http://{addr}/token"), &[])
            .await
            .unwrap_err();
        assert_eq!(e.reason(), TokenReason::Network, "{e}");
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    }
}
