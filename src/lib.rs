//! o365-mail-exporter: a Prometheus exporter that tells an on-call engineer, before customers
//! notice, that an application's Office 365 (Exchange Online) OAuth2 mail integration is
//! breaking, and why.
//!
//! Map of the crate:
//! - [`config`]: YAML -> validated [`config::Config`] (every problem with its line).
//! - [`probe`]: one network check each, returning an [`probe::Outcome`]: the endpoint probe
//!   (DNS, TCP, STARTTLS, TLS) and the mailbox logins (IMAP, POP3, SMTP with XOAUTH2).
//! - [`oauth`]: token sources per credential (cache, refresh-ahead, backoff), the crash-safe
//!   refresh-token store, Microsoft error classification, the `login` command.
//! - [`graph`]: Microsoft Graph checks with an app-only token: client-secret and certificate
//!   expiry, mailbox licences, Exchange Online service health.
//! - [`state`]: the latest outcome of every check; written by the scheduler, read by scrapes.
//! - [`schedule`]: runs checks in the background on their intervals, with jitter and bounded
//!   concurrency; a scrape never does network I/O.
//! - [`metrics`]: the `/metrics` collector, reading [`state`].
//! - [`http`]: `/metrics`, the status page, transcripts, health, readiness and reload.
//! - [`app`]: wiring, reload and shutdown; [`cli`]: flags in Prometheus' conventions.
//! - [`fake_idp`]: a faithful fake of Microsoft's identity platform for tests and the demo.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod fake_idp;
pub mod graph;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod probe;
pub mod schedule;
pub mod state;
pub mod verdict;

/// The exporter's version, for `o365_exporter_build_info` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `%XX` escapes decoded (a proxy URL's userinfo, a Graph request path in the fake); invalid
/// escapes stay as they are and invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
