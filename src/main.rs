//! o365-mail-exporter: see the library crate for the map of modules.

use clap::Parser;

fn main() -> std::process::ExitCode {
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
    let code = runtime.block_on(o365_mail_exporter::app::run(cli));
    std::process::ExitCode::from(code)
}
