//! The hand-written `/metrics` writer against prometheus-client's encoder (the reference) on
//! the bench fixture of issue 8: 1,000 mailboxes x 3 protocols, 20 endpoints, 50 credentials,
//! a finished cycle (~43,000 series). Byte-identical in both formats, whole and as streamed in
//! chunks of the size `/metrics` serves.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use o365_mail_exporter::http::scrape::{CHUNK, CHUNK_FILL};
use o365_mail_exporter::metrics::{registry_at, render_reference, render_scrape, Scrape};

use crate::bench_support as fixture;

#[test]
fn bench_fixture_same_bytes_as_prometheus_client_whole_and_chunked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = Arc::new(fixture::config(dir.path()));
    let state = fixture::state_after_cycle(&cfg);
    let now = SystemTime::now();
    let reg = registry_at(
        state.clone(),
        Arc::new(ArcSwap::from(cfg.clone())),
        Some(now),
    );
    for om in [false, true] {
        let reference = render_reference(&reg, om).expect("reference renders");
        let ours = render_scrape(Scrape::at(state.clone(), cfg.clone(), om, now));
        assert!(reference.lines().count() > 42_000, "fixture too small");
        if let Some((i, (a, b))) = reference
            .lines()
            .zip(ours.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!("openmetrics={om}: line {} differs:\n{a}\n{b}", i + 1);
        }
        assert!(reference == ours, "openmetrics={om}: bytes differ");

        // As served: chunks of at most CHUNK bytes, each ending with a whole line.
        let mut scrape = Scrape::at(state.clone(), cfg.clone(), om, now);
        let mut joined = Vec::with_capacity(ours.len());
        let (mut chunks, mut largest) = (0, 0);
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            let more = scrape.fill(&mut chunk, CHUNK_FILL);
            assert!(
                chunk.len() <= CHUNK && chunk.capacity() == CHUNK,
                "chunk grew"
            );
            assert!(chunk.ends_with(b"\n"));
            largest = largest.max(chunk.len());
            joined.extend_from_slice(&chunk);
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(
            joined == ours.as_bytes(),
            "openmetrics={om}: chunks join to the body"
        );
        eprintln!(
            "openmetrics={om}: {} bytes in {chunks} chunks, largest {largest}",
            ours.len()
        );
    }
}
