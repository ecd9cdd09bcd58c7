//! `GET /metrics`: the exposition streamed as a chunked body, one part at a time.
//!
//! At 1,000 mailboxes the body is 3.6 MB (docs/benchmarks.md); rendered whole it was the
//! largest allocation of the process and the RSS peak of every scrape. Here the body is a
//! [`crate::metrics::Scrape`] that writes the next [`CHUNK`] bytes only when hyper asks for
//! them, i.e. when the connection has taken the previous ones, so a scrape holds a few chunks
//! at most and a slow scraper holds no lock (the state's read lock is taken per chunk). A
//! scraper that goes away mid-body drops the connection, and with it the body: nothing else
//! refers to a scrape.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::Scrape;

/// Size of a body chunk. A chunk ends after the item (one login's series, say) that reaches
/// [`CHUNK_FILL`], so it stays within its allocation.
pub const CHUNK: usize = 64 * 1024;
/// Fill level at which a chunk is closed; the rest is room for the item that crosses it.
pub const CHUNK_FILL: usize = CHUNK - 4 * 1024;

/// The `/metrics` body: the scrape's next chunk on each poll, until it is complete.
#[derive(Debug)]
pub struct ScrapeBody {
    scrape: Option<Scrape>,
}

impl ScrapeBody {
    pub fn new(scrape: Scrape) -> ScrapeBody {
        ScrapeBody {
            scrape: Some(scrape),
        }
    }
}

impl Body for ScrapeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(scrape) = this.scrape.as_mut() else {
            return Poll::Ready(None);
        };
        // Encoding a chunk is CPU only (tens of microseconds), no I/O: done in the poll.
        let mut chunk = Vec::with_capacity(CHUNK);
        if !scrape.fill(&mut chunk, CHUNK_FILL) {
            this.scrape = None;
        }
        if chunk.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.scrape.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown until written: chunked transfer encoding.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    fn config(mailboxes: usize) -> crate::config::Config {
        let mut y = String::from("endpoints:\n  - {name: smtp, service: smtp}\ncredentials:\n  - name: app\n    tenant: contoso.onmicrosoft.com\n    client_id: 11111111-2222-3333-4444-555555555555\n    grant: refresh_token\nmailboxes:\n");
        for i in 0..mailboxes {
            y.push_str(&format!(
                "  - {{name: mb{i:04}, address: mb{i:04}@contoso.com, credential: app, protocols: [imap, pop3, smtp]}}\n"
            ));
        }
        crate::config::load_str(&y, "t.yaml", std::path::Path::new(".")).expect("valid")
    }

    /// The chunks are bounded, whole lines, and together the same body as one render.
    #[tokio::test]
    async fn chunks_are_bounded_whole_lines_of_the_same_body() {
        let cfg = Arc::new(config(300));
        let state = Arc::new(crate::state::State::new());
        state.reconcile_checks(&crate::schedule::check_keys(&cfg));
        let now = std::time::SystemTime::now();
        for om in [false, true] {
            let whole =
                crate::metrics::render_scrape(Scrape::at(state.clone(), cfg.clone(), om, now));
            let mut body = ScrapeBody::new(Scrape::at(state.clone(), cfg.clone(), om, now));
            let mut joined = Vec::new();
            let mut chunks = 0;
            while let Some(frame) = body.frame().await {
                let data = frame.expect("infallible").into_data().expect("data frame");
                assert!(data.len() <= CHUNK, "chunk of {} bytes", data.len());
                assert!(data.ends_with(b"\n"), "a chunk ends with a whole line");
                joined.extend_from_slice(&data);
                chunks += 1;
            }
            assert!(body.is_end_stream());
            assert!(chunks > 3, "{chunks} chunks for {} bytes", whole.len());
            assert_eq!(String::from_utf8(joined).expect("utf-8"), whole);
        }
    }

    /// A scraper that stops reading mid-body holds no lock (a reload goes through meanwhile),
    /// and when it goes away its scrape is dropped: the state is referenced again only by
    /// its owners.
    #[tokio::test]
    async fn a_stalled_then_abandoned_scrape_holds_no_lock_and_leaves_nothing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cfg = Arc::new(config(3000));
        let state = Arc::new(crate::state::State::new());
        let keys = crate::schedule::check_keys(&cfg);
        state.reconcile_checks(&keys);
        let web = Arc::new(crate::http::Web {
            state: state.clone(),
            config: Arc::new(arc_swap::ArcSwap::from(cfg)),
            telemetry_path: "/metrics".into(),
            reload: tokio::sync::mpsc::channel(1).0,
            web_config: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(crate::http::serve(
            listener,
            web,
            cancel.clone(),
            std::time::Duration::from_secs(1),
        ));
        let owners = Arc::strong_count(&state);

        // A client with a small receive window, that reads the head and a little, then stalls.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut client = socket.connect(addr).await.expect("connect");
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = vec![0u8; 8192];
        let n = client.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let stalled = async {
            while Arc::strong_count(&state) == owners {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), stalled)
            .await
            .expect("the scrape is in progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            Arc::strong_count(&state) > owners,
            "the scrape is stalled mid-body, not finished"
        );

        // A writer gets the lock while the scrape is stalled.
        let writer = state.clone();
        let keep: Vec<_> = keys.into_iter().take(10).collect();
        let reload = tokio::task::spawn_blocking(move || writer.reconcile_checks(&keep));
        tokio::time::timeout(std::time::Duration::from_secs(5), reload)
            .await
            .expect("no lock held by a stalled scrape")
            .expect("reconcile ran");

        drop(client);
        let released = async {
            while Arc::strong_count(&state) != owners {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), released)
            .await
            .expect("the abandoned scrape was dropped");
        cancel.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    }
}
