//! The fake Microsoft identity platform as its own process, for end-to-end tests and the demo.
//! `o365-fake-idp --listen 127.0.0.1:PORT --config FILE [--hs256-secret-file F]` prints its base
//! URL on stdout once it accepts connections, logs one line per request on stderr (grant,
//! client id, outcome; never a secret or token) and stops on SIGTERM or SIGINT. It listens on
//! loopback only: it mints tokens for anyone who asks. Configuration: see
//! `o365_mail_exporter::fake_idp::FileConfig`; control API: `/_fake/...` (module docs of
//! `o365_mail_exporter::fake_idp`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Parser;
use o365_mail_exporter::fake_idp::FileConfig;

#[derive(Parser, Debug)]
#[command(
    name = "o365-fake-idp",
    version,
    about = "A fake of Microsoft's identity platform (token, authorize and device-code endpoints) for tests"
)]
struct Args {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Registration and settings (YAML, or JSON when the name ends in .json).
    #[arg(long)]
    config: PathBuf,
    /// HS256 signing secret in base64, e.g. the mail stack's DIR/idp/hs256.secret
    /// (overrides hs256_secret_file in the config).
    #[arg(long)]
    hs256_secret_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: the fake IdP serves loopback only",
            args.listen
        );
    }
    let mut builder = FileConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if let Some(f) = &args.hs256_secret_file {
        builder = builder.hs256_secret_file(f)?;
    }
    let idp = builder.listen(args.listen).start().await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", idp.base_url())?;
        out.flush()?;
    }
    tracing::info!(url = %idp.base_url(), tenant = %idp.tenant(), "fake idp ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("fake idp stopping");
    idp.shutdown().await;
    Ok(())
}
