//! Wiring: load the configuration, start the scheduler and the web server, reload on SIGHUP or
//! `POST /-/reload`, shut down gracefully on SIGTERM/SIGINT.
//!
//! Start-up, `--config.check` and reload all use [`load`] + [`Plan::prepare`], so a file that
//! passes the check also starts, and a reload applies a configuration only once it is fully built
//! (an invalid one is refused and the running one stays).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::http::{ReloadRequest, Web};
use crate::schedule::{Plan, Scheduler};
use crate::state::State;

/// Exit code for a configuration error (as Prometheus' tools).
pub const EXIT_CONFIG: u8 = 2;
/// How long shutdown waits for in-flight checks and requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Most worker threads. The exporter's work is waiting on the network: at 1,000 mailboxes it
/// needs ~1% of one core (docs/benchmarks.md). Each extra worker costs memory (a stack and a
/// malloc arena that keeps what the thread freed), so a many-core host gets two, not one per core.
pub const MAX_WORKERS: usize = 2;

/// The async runtime the exporter runs on (also used by `examples/probe_loop.rs`, so the
/// benchmarks measure the same runtime).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(1, MAX_WORKERS))
        .enable_all()
        .build()
}

/// Load the configuration named on the command line, or the embedded default.
pub fn load(path: Option<&PathBuf>) -> Result<(Config, Plan), String> {
    let cfg = match path {
        Some(p) => config::load_file(p).map_err(|e| e.to_string())?,
        None => config::embedded_default(),
    };
    let plan = Plan::prepare(&cfg).map_err(|e| format!("{}: {e}", cfg.source))?;
    Ok((cfg, plan))
}

/// Run the command line; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let (cfg, plan) = match load(cli.config_file.as_ref()) {
        Ok(x) => x,
        Err(problems) => {
            eprint!("{problems}");
            if !problems.ends_with('\n') {
                eprintln!();
            }
            return EXIT_CONFIG;
        }
    };
    if let Some(Command::Check(args)) = &cli.command {
        return crate::check::run(cfg, plan, args).await;
    }
    if let Some(Command::Login(args)) = &cli.command {
        return match crate::oauth::login::run(&cfg, args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("login failed: {e:#}");
                1
            }
        };
    }
    if cli.config_check {
        println!(
            "{}: OK ({} endpoints, {} credentials, {} mailboxes)",
            cfg.source,
            cfg.endpoints.len(),
            cfg.credentials.len(),
            cfg.mailboxes.len()
        );
        if let Some(p) = cfg.proxy_summary() {
            println!("{}: {p}", cfg.source);
        }
        for f in crate::config::lint::lint(&cfg, std::time::SystemTime::now()) {
            println!(
                "{}: {}: warning: {} ({})",
                cfg.source, f.path, f.message, f.hint
            );
        }
        return 0;
    }
    serve(cli, cfg, plan).await
}

async fn serve(cli: Cli, cfg: Config, plan: Plan) -> u8 {
    let web_config = match &cli.web_config_file {
        None => crate::http::webconfig::WebConfig::default(),
        Some(p) => match crate::http::webconfig::WebConfig::load(p) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{e}");
                return EXIT_CONFIG;
            }
        },
    };
    let state = Arc::new(State::new());
    let cfg = Arc::new(cfg);
    let config = Arc::new(ArcSwap::from(cfg.clone()));
    let scheduler = Arc::new(Scheduler::new(state.clone()));
    scheduler.start(cfg.clone(), plan);
    state.set_reload(Ok(()));

    let listener = match crate::http::bind(&cli.listen_address).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %cli.listen_address, error = %e, "cannot listen");
            scheduler.shutdown(Duration::ZERO).await;
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        address = %local,
        config = %cfg.source,
        endpoints = cfg.endpoints.len(),
        credentials = cfg.credentials.len(),
        mailboxes = cfg.mailboxes.len(),
        version = crate::VERSION,
        "listening"
    );

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let web = Arc::new(Web {
        state: state.clone(),
        config: config.clone(),
        telemetry_path: cli.telemetry_path.clone(),
        reload: reload_tx.clone(),
        web_config,
    });
    let cancel = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        web,
        cancel.clone(),
        SHUTDOWN_GRACE,
    ));

    // Reloads are applied one at a time, from SIGHUP and from POST /-/reload.
    let reloader = {
        let state = state.clone();
        let scheduler = scheduler.clone();
        let path = cli.config_file.clone();
        tokio::spawn(async move {
            while let Some(reply) = reload_rx.recv().await {
                let result = match load(path.as_ref()) {
                    Ok((new, plan)) => {
                        let new = Arc::new(new);
                        scheduler.start(new.clone(), plan);
                        config.store(new);
                        tracing::info!("configuration reloaded");
                        Ok(())
                    }
                    Err(problems) => {
                        tracing::error!(problems = %problems.trim_end(), "configuration reload refused; the old configuration stays in use");
                        Err(problems)
                    }
                };
                state.set_reload(result.clone());
                let _ = reply.send(result);
            }
        })
    };

    wait_for_shutdown(reload_tx).await;
    tracing::info!("shutting down");
    cancel.cancel();
    scheduler.shutdown(SHUTDOWN_GRACE).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    reloader.abort();
    0
}

/// Wait for SIGTERM or SIGINT; forward SIGHUP as reload requests meanwhile.
#[cfg(unix)]
async fn wait_for_shutdown(reload: mpsc::Sender<ReloadRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let (tx, _rx) = tokio::sync::oneshot::channel();
                let _ = reload.send(tx).await;
            }
        }
    }
}

/// Windows: Ctrl-C stops; reload through `POST /-/reload` only (there is no SIGHUP).
#[cfg(not(unix))]
async fn wait_for_shutdown(_reload: mpsc::Sender<ReloadRequest>) {
    let _ = tokio::signal::ctrl_c().await;
}
