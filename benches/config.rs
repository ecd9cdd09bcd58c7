//! Loading a 1,000-mailbox configuration file (20 endpoints, 50 credentials): parse and
//! validate ([`config::load_file`]), and everything start-up and a reload do before a
//! configuration is swapped in ([`app::load`]: the above plus the TLS trust stores of the plan).

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use o365_mail_exporter::config;

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    let yaml = support::config_yaml(
        dir.path(),
        support::MAILBOXES,
        support::ENDPOINTS,
        support::CREDENTIALS,
    );
    std::fs::write(&path, &yaml).expect("write config");
    // A plan needs a real CA file: the bench's placeholder is replaced by a self-signed one.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("ca.crt"), cert.cert.pem()).expect("write ca");
    eprintln!("config file: {} bytes", yaml.len());

    let mut g = c.benchmark_group("config");
    g.bench_function("load_file_1000_mailboxes", |b| {
        b.iter(|| config::load_file(&path).expect("valid"))
    });
    g.bench_function("load_and_plan_1000_mailboxes", |b| {
        b.iter(|| o365_mail_exporter::app::load(Some(&path)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
