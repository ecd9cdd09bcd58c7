//! `/metrics` encoding at issue 8's scale: 1,000 mailboxes x 3 protocols, 20 endpoints and 50
//! credentials, every check run once (target: at most 2 ms per encode, docs/benchmarks.md).
//! The state is built directly, as `app::serve` builds it; no HTTP.
//!
//! `encode_1000_mailboxes_*` is the served path: a `Scrape` written in chunks of
//! `http::scrape::CHUNK` bytes, each a fresh buffer, as the `/metrics` body does.
//! `*_reference` is prometheus-client's encoder on the same state (what the exporter served
//! before), printed in the same run so the speed-up is visible. Before measuring, the bench
//! checks that both produce the same bytes, and prints how much one scrape adds to the peak
//! RSS (`VmHWM`, reset through `/proc/self/clear_refs`) either way.

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use o365_mail_exporter::config::Config;
use o365_mail_exporter::http::scrape::{CHUNK, CHUNK_FILL};
use o365_mail_exporter::metrics::{registry_at, render_reference, render_scrape, Scrape};
use o365_mail_exporter::state::State;

/// One scrape as `/metrics` streams it; returns the bytes written and the largest chunk.
fn stream(state: &Arc<State>, cfg: &Arc<Config>, om: bool, now: SystemTime) -> (usize, usize) {
    let mut scrape = Scrape::at(state.clone(), cfg.clone(), om, now);
    let (mut total, mut largest) = (0, 0);
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        let more = scrape.fill(&mut chunk, CHUNK_FILL);
        total += chunk.len();
        largest = largest.max(chunk.len());
        if !more {
            return (total, largest);
        }
    }
}

/// `VmHWM` in kB, after resetting it to the current RSS when `reset`.
fn peak_kb(reset: bool) -> Option<u64> {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time of this thread so far, in ms: utime + stime of `/proc/thread-self/stat` (ticks of
/// 10 ms).
fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_comm = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

/// CPU time per call of `f`, over at least 2 s of CPU (at most 30 s of wall time). On a
/// machine shared with other work this moves far less than criterion's wall-clock figure.
fn cpu_per_call(mut f: impl FnMut()) -> Option<f64> {
    let wall = std::time::Instant::now();
    let start = cpu_ms()?;
    let mut calls = 0u32;
    loop {
        f();
        calls += 1;
        let used = cpu_ms()? - start;
        if used >= 2000 || wall.elapsed() > std::time::Duration::from_secs(30) {
            return Some(used as f64 / f64::from(calls));
        }
    }
}

fn encode(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = Arc::new(support::config(dir.path()));
    let state = support::state_after_cycle(&cfg);
    let now = SystemTime::now();
    let registry = registry_at(
        state.clone(),
        Arc::new(ArcSwap::from(cfg.clone())),
        Some(now),
    );

    // Peak memory of one scrape, streamed first (so it cannot reuse the reference's pages).
    let before = peak_kb(true);
    let (streamed, largest) = stream(&state, &cfg, false, now);
    let after_stream = peak_kb(false);
    let before_ref = peak_kb(true);
    let body = render_reference(&registry, false).expect("renders");
    let after_ref = peak_kb(false);
    let grew = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{} kB", b.saturating_sub(a)),
        _ => "n/a".to_string(),
    };
    eprintln!(
        "metrics body: {} bytes, {} lines; streamed in chunks of at most {largest} bytes ({CHUNK} allocated each)",
        body.len(),
        body.lines().count()
    );
    eprintln!(
        "peak RSS added by one scrape: streamed {}, whole body (reference) {}",
        grew(before, after_stream),
        grew(before_ref, after_ref)
    );
    assert_eq!(streamed, body.len());
    drop(body);
    for om in [false, true] {
        let reference = render_reference(&registry, om).expect("renders");
        let ours = render_scrape(Scrape::at(state.clone(), cfg.clone(), om, now));
        assert!(
            reference == ours,
            "openmetrics={om}: the hand-written encoder differs from prometheus-client"
        );
    }

    let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2} ms"));
    let ours = cpu_per_call(|| {
        stream(&state, &cfg, false, now);
    });
    let theirs = cpu_per_call(|| {
        render_reference(&registry, false).expect("renders");
    });
    eprintln!(
        "CPU per encode, text (utime+stime over >= 2 s): streamed {}, reference {}",
        ms(ours),
        ms(theirs)
    );

    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Bytes(streamed as u64));
    g.bench_function("encode_1000_mailboxes_text", |b| {
        b.iter(|| stream(&state, &cfg, false, now))
    });
    g.bench_function("encode_1000_mailboxes_openmetrics", |b| {
        b.iter(|| stream(&state, &cfg, true, now))
    });
    g.bench_function("encode_1000_mailboxes_text_reference", |b| {
        b.iter(|| render_reference(&registry, false).expect("renders"))
    });
    // What a scrape read from the shared state before encoding anything, before PR #8's fixes.
    g.bench_function("state_snapshot_1000_mailboxes", |b| {
        b.iter(|| state.checks().len())
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
