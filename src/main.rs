//! o365-mail-exporter: see the library crate for the map of modules.

use clap::Parser;

fn main() -> std::process::ExitCode {
    allocator::tune();
    // One crypto provider for rustls and reqwest (aws-lc-rs); ring stays out of the tree.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = o365_mail_exporter::cli::Cli::parse();
    o365_mail_exporter::logging::init(cli.log_level, cli.log_format);
    let runtime = match o365_mail_exporter::app::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.spawn(async {
        let mut every = tokio::time::interval(allocator::TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            allocator::trim();
        }
    });
    let code = runtime.block_on(o365_mail_exporter::app::run(cli));
    std::process::ExitCode::from(code)
}

/// glibc malloc tuning for a long-running exporter (docs/benchmarks.md, "RSS with 1,000
/// mailboxes").
///
/// Each check's result is kept until its next run, and is allocated on a runtime worker in the
/// middle of that run's short-lived connection buffers (TLS records, line buffers). When the
/// buffers are freed, glibc keeps the pages between the long-lived results: measured at 1,000
/// mailboxes, 13 MB of heap for 8 MB in use. `malloc_trim(0)` hands whole free pages back to the
/// kernel (`madvise`), 2-2.7 MB of RSS there; it is run every [`TRIM_EVERY`] because checks run
/// all the time and reuse (and so bring back) freed pages (a trim walks the free lists of a
/// ~15 MB heap: well under a millisecond; every 2 s measured no better than every 10 s). And
/// glibc's mmap threshold is fixed: by default it rises to the size of the largest buffer freed
/// (a 3.6 MB `/metrics` body), after which every buffer up to that size comes from the heap and
/// its pages stay resident after the scrape; fixed, such buffers are mapped and unmapped.
/// Lowering it further (32 kB, so TLS buffers are mapped too) measured no better. A single
/// arena (`M_ARENA_MAX=1`) measured the same fragmentation, so arenas stay as they are.
///
/// The two glibc calls live in the path crate `crates/glibc-malloc` (safe wrappers, no-ops off
/// glibc), so this package keeps `unsafe_code = "forbid"`: neither std nor a maintained crate
/// offers a safe `malloc_trim`/`mallopt`, and environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`) cannot trim and would
/// have to be set by whoever starts the process. Both calls take no pointers and change only
/// the allocator's bookkeeping; this binary only, not the library (tests and the benchmarks'
/// probe loop keep glibc's defaults).
mod allocator {
    use std::time::Duration;

    /// How often freed pages are handed back.
    pub const TRIM_EVERY: Duration = Duration::from_secs(10);

    /// Buffers from this size up are mapped on their own (glibc's initial default, kept fixed).
    const MMAP_THRESHOLD: u32 = 128 * 1024;

    /// Fix the mmap threshold (before anything is allocated on other threads), unless the
    /// operator set glibc's own `MALLOC_MMAP_THRESHOLD_`.
    pub fn tune() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            glibc_malloc::set_mmap_threshold(MMAP_THRESHOLD);
        }
    }

    /// Hand whole free pages of every arena back to the kernel.
    pub fn trim() {
        glibc_malloc::trim();
    }
}
