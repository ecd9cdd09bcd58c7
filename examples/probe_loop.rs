//! Benchmark driver for `scripts/bench.sh`: runs N checks against one target, P at a time, and
//! prints what they cost this process, measured exactly as the script measures
//! prometheus-blackbox-exporter (utime + stime from `/proc/self/stat`, read before and after the
//! loop; VmRSS and VmHWM from `/proc/self/status`).
//!
//! Modes:
//! - `endpoint`: the exporter's own endpoint probe (`probe::endpoint::probe`), with the TLS
//!   mode given by `--tls` (`implicit` or `starttls-smtp`), on the runtime the exporter uses.
//! - `floor`: the cost a TLS check cannot go below: TCP connect plus a bare rustls handshake
//!   (same crypto provider, same trust store, full certificate verification, no session
//!   resumption, as every probe does a full handshake), nothing else. Implicit TLS only.
//!
//! ```sh
//! cargo run --release --example probe_loop -- --mode endpoint --tls implicit \
//!     --target 127.0.0.1:10993 --server-name localhost --ca-file DIR/tls/ca.crt -n 2000 -p 8
//! ```
//!
//! Output: one line of `key=value` pairs (`mode n parallel ok failed wall_ms cpu_ms
//! cpu_ms_per_check checks_per_s vm_rss_kb vm_hwm_kb`), and the first failure's reason, if any,
//! on stderr. Loopback targets only: this is a load generator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use o365_mail_exporter::config::{Endpoint, TlsMode};
use o365_mail_exporter::probe::tls::TlsClient;
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Endpoint,
    Floor,
}

#[derive(Debug, Parser)]
#[command(about = "Run N checks, P in parallel, and report their CPU cost")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// `implicit` or `starttls-smtp` (endpoint mode).
    #[arg(long, default_value = "implicit")]
    tls: String,
    /// Loopback address and port.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long = "server-name", default_value = "localhost")]
    server_name: String,
    #[arg(long = "ca-file")]
    ca_file: PathBuf,
    #[arg(short = 'n', default_value_t = 2000)]
    n: usize,
    #[arg(short = 'p', default_value_t = 8)]
    parallel: usize,
    /// Per-check deadline.
    #[arg(long, default_value = "10s")]
    timeout: humantime::Duration,
}

/// utime + stime of this process, in milliseconds.
fn cpu_ms(ticks_per_s: u64) -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name (which may contain spaces): state is field 3,
    // so utime (14) and stime (15) are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 1000 / ticks_per_s.max(1)
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// One bare handshake: connect, full TLS handshake with verification, drop.
async fn floor_once(
    connector: &tokio_rustls::TlsConnector,
    target: SocketAddr,
    name: &ServerName<'static>,
    timeout: Duration,
) -> Result<(), String> {
    let go = async {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(name.clone(), tcp)
            .await
            .map(drop)
            .map_err(|e| format!("tls: {e}"))
    };
    tokio::time::timeout(timeout, go)
        .await
        .map_err(|_| "timeout".to_string())?
}

fn floor_connector(ca_file: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    let data = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&data).flatten() {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn run(args: Args) -> Result<(), String> {
    let timeout: Duration = args.timeout.into();
    if !args.target.ip().is_loopback() {
        return Err("the target must be a loopback address".into());
    }
    let tls = TlsMode::parse(&args.tls).ok_or_else(|| format!("unknown tls mode {}", args.tls))?;
    if args.mode == Mode::Floor && tls != TlsMode::Implicit {
        return Err("floor mode measures implicit TLS only".into());
    }
    let endpoint = Arc::new(Endpoint {
        name: "bench".into(),
        host: args.target.ip().to_string(),
        port: args.target.port(),
        tls,
        server_name: args.server_name.clone(),
        ca_file: Some(args.ca_file.clone()),
        interval: Duration::from_secs(60),
        timeout,
        proxy: None,
    });
    let client = TlsClient::new(Some(&args.ca_file)).map_err(|e| e.to_string())?;
    let connector = floor_connector(&args.ca_file)?;
    let name = ServerName::try_from(args.server_name.clone()).map_err(|e| e.to_string())?;

    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let hz = clock_ticks();
    let c0 = cpu_ms(hz);
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.parallel.max(1) {
        let (next, ok, first_failure) = (next.clone(), ok.clone(), first_failure.clone());
        let (endpoint, client, connector, name) = (
            endpoint.clone(),
            client.clone(),
            connector.clone(),
            name.clone(),
        );
        let (mode, n, target) = (args.mode, args.n, args.target);
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let result = match mode {
                    Mode::Endpoint => {
                        let o =
                            o365_mail_exporter::probe::endpoint::probe(&endpoint, &client).await;
                        if o.success {
                            Ok(())
                        } else {
                            Err(format!("{}: {}", o.reason, o.detail))
                        }
                    }
                    Mode::Floor => floor_once(&connector, target, &name, timeout).await,
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut f) = first_failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let wall = t0.elapsed();
    let cpu = cpu_ms(hz).saturating_sub(c0);
    let ok = ok.load(Ordering::Relaxed);
    if let Ok(f) = first_failure.lock() {
        if let Some(e) = f.as_ref() {
            eprintln!("probe_loop: first failure: {e}");
        }
    }
    println!(
        "mode={mode} tls={tls} n={n} parallel={p} ok={ok} failed={failed} wall_ms={wall_ms} cpu_ms={cpu} cpu_ms_per_check={per:.3} checks_per_s={rate:.0} vm_rss_kb={rss} vm_hwm_kb={hwm}",
        mode = format!("{:?}", args.mode).to_lowercase(),
        tls = tls.as_str(),
        n = args.n,
        p = args.parallel,
        failed = args.n - ok,
        wall_ms = wall.as_millis(),
        per = cpu as f64 / args.n.max(1) as f64,
        rate = args.n as f64 / wall.as_secs_f64().max(1e-9),
        rss = status_kb("VmRSS"),
        hwm = status_kb("VmHWM"),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let runtime = match o365_mail_exporter::app::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("probe_loop: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe_loop: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
