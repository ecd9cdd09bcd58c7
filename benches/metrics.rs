//! `/metrics` encoding at issue 8's scale: 1,000 mailboxes x 3 protocols, 20 endpoints and 50
//! credentials, every check run once (target: at most 2 ms per encode, docs/benchmarks.md).
//! The registry and state are built directly, as `app::serve` builds them; no HTTP.

mod support;

use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn encode(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = support::config(dir.path());
    let state = support::state_after_cycle(&cfg);
    let snapshot_state = state.clone();
    let registry =
        o365_mail_exporter::metrics::registry(state, Arc::new(ArcSwap::from_pointee(cfg)));
    let body = o365_mail_exporter::metrics::render(&registry, false).expect("renders");
    eprintln!(
        "metrics body: {} bytes, {} lines",
        body.len(),
        body.lines().count()
    );
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("encode_1000_mailboxes_text", |b| {
        b.iter(|| o365_mail_exporter::metrics::render(&registry, false).expect("renders"))
    });
    g.bench_function("encode_1000_mailboxes_openmetrics", |b| {
        b.iter(|| o365_mail_exporter::metrics::render(&registry, true).expect("renders"))
    });
    // What a scrape reads from the shared state before encoding anything.
    g.bench_function("state_snapshot_1000_mailboxes", |b| {
        b.iter(|| snapshot_state.checks().len())
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
