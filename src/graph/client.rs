//! GET requests to Microsoft Graph with a bearer token, over the token work's [`HttpClient`]
//! (no redirects, one deadline per request, 1 MiB body cap).
//!
//! Collections are followed through `@odata.nextLink` for at most [`MAX_PAGES`] pages, and a
//! next link must point at the configured Graph origin: the bearer token is never sent anywhere
//! else, whatever a (possibly intercepted) answer says. Failures keep what classification needs
//! (HTTP status, Graph's error `code`, `request-id`, `Retry-After`) and nothing of the body
//! text, so no echoed header or token can reach a log or the status page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::model::{token_chars, ErrorBody, Page};
use crate::oauth::http::{retry_after, HttpClient, HttpError};

/// Most pages read from one collection (each holds up to 100 entries by default).
pub const MAX_PAGES: usize = 20;

/// Why a Graph request gave no usable answer.
#[derive(Clone, Debug, PartialEq)]
pub enum FailureKind {
    /// An HTTP error status (with Graph's error code when the body had one).
    Status(u16),
    Network,
    Timeout,
    /// Unparsable JSON, an oversized body, a foreign next link, too many pages.
    BadResponse,
}

/// A failed request, classified by the caller (a 404 means different things per check).
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// One secret-free sentence: status, Graph error code, request id.
    pub message: String,
    pub code: Option<String>,
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::BadResponse,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.kind {
            FailureKind::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// A Graph endpoint (`https://graph.microsoft.com` or the configured `graph_url`).
#[derive(Debug)]
pub struct GraphClient {
    http: HttpClient,
    base: url::Url,
    requests: AtomicU64,
}

impl GraphClient {
    pub fn new(base: &str, http: HttpClient) -> Result<GraphClient, String> {
        let base = url::Url::parse(base).map_err(|e| format!("graph URL {base:?}: {e}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("graph URL {base} cannot hold a path"));
        }
        Ok(GraphClient {
            http,
            base,
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `{base}/{segments…}?{query}`; each segment is percent-encoded as a path segment.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        if !query.is_empty() {
            // Graph wants `$select`/`$filter` literally; spaces as %20 (not `+`); the url crate
            // escapes `'` as %27 in queries of http(s) URLs, which Graph decodes alike
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query(v)))
                .collect();
            u.set_query(Some(&q.join("&")));
        }
        u
    }

    fn same_origin(&self, u: &url::Url) -> bool {
        u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default()
    }

    /// GET `url` and parse the JSON answer as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        url: &url::Url,
        token: &SecretString,
    ) -> Result<T, Failure> {
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| Failure::bad("the access token is not a valid header value"))?;
        auth.set_sensitive(true);
        let req = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, auth)
            .body(Vec::new())
            .map_err(|e| Failure::bad(format!("cannot build the request: {e}")))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.http.send(req).await.map_err(|e| match e {
            HttpError::Timeout(d) => Failure {
                kind: FailureKind::Timeout,
                message: format!("Graph did not answer within {}", human(d)),
                code: None,
                retry_after: None,
            },
            HttpError::Network(m) => Failure {
                kind: FailureKind::Network,
                message: format!("cannot reach Graph: {m}"),
                code: None,
                retry_after: None,
            },
            HttpError::TooLarge(n) => {
                Failure::bad(format!("Graph's answer is larger than {n} bytes"))
            }
            HttpError::Request(m) => Failure::bad(format!("invalid request: {m}")),
            // the proxy's own failures keep the Graph reasons stable (`network`); the message
            // names the proxy and what it did
            e @ (HttpError::ProxyConnect { .. }
            | HttpError::ProxyAuth { .. }
            | HttpError::ProxyRefused { .. }) => Failure {
                kind: FailureKind::Network,
                message: format!("cannot reach Graph: {e}"),
                code: None,
                retry_after: None,
            },
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let err: ErrorBody = serde_json::from_slice(resp.body()).unwrap_or_default();
            let code = err
                .error
                .as_ref()
                .and_then(|e| e.code.as_deref())
                .map(|c| token_chars(c, 64))
                .filter(|c| !c.is_empty());
            let request_id = err
                .error
                .as_ref()
                .and_then(|e| e.inner_error.as_ref())
                .and_then(|i| i.request_id.as_deref())
                .map(|r| token_chars(r, 64))
                .filter(|r| !r.is_empty());
            let mut message = format!("Graph answered HTTP {status}");
            if let Some(c) = &code {
                message.push_str(&format!(" {c}"));
            }
            if let Some(r) = &request_id {
                message.push_str(&format!(" (request-id {r})"));
            }
            return Err(Failure {
                kind: FailureKind::Status(status),
                message,
                code,
                retry_after: retry_after(resp.headers()),
            });
        }
        serde_json::from_slice(resp.body()).map_err(|e| {
            // line and column only: a serde message can quote values
            Failure::bad(format!(
                "Graph's answer is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// Every entry of a collection, following `@odata.nextLink` (same origin only, at most
    /// [`MAX_PAGES`] pages). Returns the entries and the number of pages read.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        first: url::Url,
        token: &SecretString,
    ) -> Result<(Vec<T>, usize), Failure> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            if pages == MAX_PAGES {
                return Err(Failure::bad(format!(
                    "Graph's collection has more than {MAX_PAGES} pages; the rest was not read"
                )));
            }
            let page: Page<T> = self.get(&url, token).await?;
            pages += 1;
            out.extend(page.value);
            if let Some(link) = page.next_link {
                let u = url::Url::parse(&link)
                    .map_err(|_| Failure::bad("Graph's @odata.nextLink is not a URL"))?;
                if !self.same_origin(&u) {
                    return Err(Failure::bad(format!(
                        "Graph's @odata.nextLink points at {}, not at the configured Graph URL; not followed (the token is only sent to {})",
                        u.host_str().unwrap_or("?"),
                        self.base.host_str().unwrap_or("?")
                    )));
                }
                next = Some(u);
            }
        }
        Ok((out, pages))
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Percent-encode a query value, keeping what OData expressions use literally.
fn encode_query(v: &str) -> String {
    let mut o = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,$()'=".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> GraphClient {
        GraphClient::new(
            base,
            HttpClient::new(None, Duration::from_secs(1), None).expect("client"),
        )
        .expect("valid base")
    }

    #[test]
    fn urls_encode_segments_and_odata_queries() {
        let c = client("https://graph.microsoft.com");
        let u = c.url(
            &["v1.0", "applications(appId='1-2')"],
            &[("$select", "id,appId")],
        );
        assert_eq!(
            u.as_str(),
            "https://graph.microsoft.com/v1.0/applications(appId='1-2')?$select=id,appId"
        );
        let u = c.url(
            &["v1.0", "users", "a b#c@x.test"],
            &[("$filter", "service eq 'Exchange Online'")],
        );
        assert_eq!(
            u.as_str(),
            "https://graph.microsoft.com/v1.0/users/a%20b%23c@x.test?$filter=service%20eq%20%27Exchange%20Online%27"
        );
        // a base with a path (a proxy) keeps it
        let c = client("http://127.0.0.1:8080/graph/");
        assert_eq!(
            c.url(&["v1.0", "x"], &[]).as_str(),
            "http://127.0.0.1:8080/graph/v1.0/x"
        );
    }

    #[test]
    fn next_links_must_stay_on_the_configured_origin() {
        let c = client("https://graph.microsoft.com");
        let ok = url::Url::parse("https://graph.microsoft.com:443/v1.0/x?$skiptoken=2").unwrap();
        assert!(c.same_origin(&ok));
        for bad in [
            "https://evil.invalid/v1.0/x",
            "http://graph.microsoft.com/v1.0/x",
            "https://graph.microsoft.com:8443/v1.0/x",
        ] {
            assert!(!c.same_origin(&url::Url::parse(bad).unwrap()), "{bad}");
        }
    }
}
