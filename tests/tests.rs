//! The one integration-test binary (one link step). Each area is a module under `tests/it/`;
//! shared fakes and helpers are under `tests/support/`.

/// The criterion benches' fixtures (issue 8's 1,000-mailbox state), for `metrics_encoder`.
#[path = "../benches/support/mod.rs"]
mod bench_support;
#[path = "support/mod.rs"]
mod support;

#[path = "it/browser.rs"]
mod browser;
#[path = "it/canary.rs"]
mod canary;
#[path = "it/check.rs"]
mod check;
#[path = "it/config_files.rs"]
mod config_files;
#[path = "it/e2e.rs"]
mod e2e;
#[path = "it/endpoint.rs"]
mod endpoint;
#[path = "it/exporter.rs"]
mod exporter;
#[path = "it/fake_idp.rs"]
mod fake_idp;
#[path = "it/faults.rs"]
mod faults;
#[path = "it/graph.rs"]
mod graph;
#[path = "it/login_mailstack.rs"]
mod login_mailstack;
#[path = "it/login_scripted.rs"]
mod login_scripted;
#[path = "it/mailstack.rs"]
mod mailstack;
#[path = "it/metrics_encoder.rs"]
mod metrics_encoder;
#[path = "it/oauth.rs"]
mod oauth;
#[path = "it/proxy.rs"]
mod proxy;
#[path = "it/reliability.rs"]
mod reliability;
#[path = "it/rules.rs"]
mod rules;
#[path = "it/webconfig.rs"]
mod webconfig;
