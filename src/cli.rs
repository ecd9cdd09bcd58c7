//! Command-line flags, in Prometheus' conventions (`--config.file`, `--web.listen-address`, ...).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default listen address: 9100-9999 is fully allocated among exporters.
pub const DEFAULT_LISTEN: &str = ":10030";

#[derive(Debug, Parser)]
#[command(
    name = "o365-mail-exporter",
    version,
    about = "Prometheus exporter for Office 365 (Exchange Online) OAuth2 mail integrations: reachability, TLS, tokens and per-mailbox IMAP/POP3/SMTP logins.",
    long_about = None
)]
pub struct Cli {
    /// Configuration file (YAML). Without it the embedded default is used: the four public
    /// Office 365 endpoints of the worldwide cloud, no credentials, no mailboxes.
    #[arg(long = "config.file", global = true, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Validate the configuration, print every problem, exit 0 (valid) or 2 (invalid).
    #[arg(long = "config.check")]
    pub config_check: bool,

    /// Address to listen on for the web interface and telemetry.
    #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen_address: String,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        default_value = "/metrics",
        value_name = "PATH"
    )]
    pub telemetry_path: String,

    /// Web configuration file (exporter-toolkit format: TLS and basic auth).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", global = true, default_value = "info", value_enum)]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(
        long = "log.format",
        global = true,
        default_value = "logfmt",
        value_enum
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in once for a delegated (refresh_token) credential and store its refresh token.
    Login(LoginArgs),
    /// Run every configured check once, now, and print a report.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Name of the credential (from `credentials:` in the config).
    #[arg(long)]
    pub credential: String,
    /// Use the device code flow instead of a browser redirect to this machine.
    #[arg(long = "device-code")]
    pub device_code: bool,
    /// Loopback port for the redirect (default: from the credential's redirect_uri, else any).
    #[arg(long = "redirect-port")]
    pub redirect_port: Option<u16>,
    /// Give up waiting for the sign-in after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, default_value = "text", value_enum)]
    pub format: CheckFormat,
    /// Only these groups of checks (comma-separated): network, tokens, mailboxes, graph.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<CheckGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckGroup {
    Network,
    Tokens,
    Mailboxes,
    /// The Microsoft Graph checks of credentials with a `graph:` section.
    Graph,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_in_prometheus_style() {
        Cli::command().debug_assert();
        let c = Cli::parse_from([
            "x",
            "--config.file",
            "a.yaml",
            "--web.listen-address=127.0.0.1:1",
            "--log.format=json",
        ]);
        assert_eq!(c.config_file, Some(PathBuf::from("a.yaml")));
        assert_eq!(c.listen_address, "127.0.0.1:1");
        assert_eq!(c.log_format, LogFormat::Json);
        let c = Cli::parse_from(["x", "login", "--credential", "ece", "--device-code"]);
        assert!(matches!(
            c.command,
            Some(Command::Login(LoginArgs {
                device_code: true,
                ..
            }))
        ));
    }
}
