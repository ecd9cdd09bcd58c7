//! The Microsoft Graph checks against the fake Graph of the fake identity platform (same process
//! and port, tokens it issued): a secret expiring in 10 days replaces the configured
//! `secret_expires`, an unlicensed user shows 0, an open Exchange Online incident shows in the
//! metrics and on the status page (pages followed through `@odata.nextLink`), and each failure
//! (403, 429 with Retry-After, an API a national cloud lacks, a foreign next link, garbage, no
//! network) gets its own reason without disturbing the other checks. One test runs the real
//! binary, so the scheduler wiring and a live scrape (promtool) are covered too.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use o365_mail_exporter::config::{self, Config, GraphCheck};
use o365_mail_exporter::fake_idp::{
    App, FakeGraph, FakeIdp, FakeIdpHandle, GraphApi, GraphApplication, GraphFailure, GraphIssue,
    GraphUser,
};
use o365_mail_exporter::graph::{self, GraphReason};
use o365_mail_exporter::state::State;

use crate::support::exporter::{free_port, promtool_check_metrics, sample, Exporter};

const APP: &str = "aaaaaaaa-1111-2222-3333-444444444444";
/// The configured client secret; its first three characters are Graph's `hint`.
const SECRET: &str = "CANARY-graph-s3cret-value";
const KEY_IN_USE: &str = "11111111-aaaa-bbbb-cccc-000000000001";
const KEY_OLD: &str = "11111111-aaaa-bbbb-cccc-000000000002";
const ALL_ROLES: [&str; 3] = [
    "Application.Read.All",
    "User.Read.All",
    "ServiceHealth.Read.All",
];
const DAY: i64 = 86_400;
/// What `secret_expires` says in the configuration (2030-01-01): Graph must win over it.
const CONFIGURED_EXPIRY: i64 = 1_893_456_000;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The tenant as Graph shows it: the configured secret expires in 10 days, an old one has
/// expired; alice is licensed, bob has no plan, carol is in the grace period; Exchange Online is
/// degraded with an open incident and an advisory (and a resolved incident, and another
/// service's); one entry per page, so every collection is paged.
fn tenant(now: i64) -> FakeGraph {
    FakeGraph::default()
        .application(
            GraphApplication::new(APP)
                .display_name("ECE mail")
                .secret(
                    KEY_IN_USE,
                    "ece-2026",
                    SECRET,
                    now - 355 * DAY,
                    now + 10 * DAY,
                )
                .secret(
                    KEY_OLD,
                    "ece-2025",
                    "old-secret",
                    now - 720 * DAY,
                    now - 5 * DAY,
                ),
        )
        .user(GraphUser::new("alice@contoso.test").exchange("Enabled"))
        .user(GraphUser::new("bob@contoso.test"))
        .user(
            GraphUser::new("carol@contoso.test")
                .exchange("Warning")
                .plan(
                    "SharePoint",
                    "5dbe027f-2339-4123-9542-606e4d348a72",
                    "Enabled",
                ),
        )
        .service("OSDPPlatform", "Microsoft 365 suite", "serviceOperational")
        .service("Exchange", "Exchange Online", "serviceDegradation")
        .issue(
            GraphIssue::new(
                "EX512345",
                "Exchange Online",
                "incident",
                "serviceDegradation",
                "Users can't access their mailboxes over IMAP <b>and</b> POP",
            )
            .start(now - 3600),
        )
        .issue(
            GraphIssue::new(
                "EX500001",
                "Exchange Online",
                "advisory",
                "serviceDegradation",
                "Delays in message delivery",
            )
            .start(now - 7200),
        )
        .issue(
            GraphIssue::new(
                "EX400000",
                "Exchange Online",
                "incident",
                "serviceRestored",
                "An old outage",
            )
            .resolved(),
        )
        .issue(GraphIssue::new(
            "SP100000",
            "SharePoint Online",
            "incident",
            "investigating",
            "Not Exchange",
        ))
        .page_size(1)
}

async fn idp(graph: FakeGraph, roles: &[&str]) -> FakeIdpHandle {
    FakeIdp::builder()
        .app(App::new(APP).secret(SECRET).roles(roles.iter().copied()))
        .graph(graph)
        .start()
        .await
        .expect("fake starts")
}

/// Mailboxes alice, bob, carol (licensed by default) and a shared mailbox (skipped by default),
/// logging in to a closed port so the logins fail fast and stay out of the way.
fn mailboxes(extra: &str) -> String {
    let mut s = String::from("mailboxes:\n");
    for m in ["alice", "bob", "carol"] {
        s.push_str(&format!(
            "  - {{name: {m}, address: {m}@contoso.test, credential: app, protocols: [imap]}}\n"
        ));
    }
    s.push_str("  - {name: shared, address: support@contoso.test, login_as: alice@contoso.test, credential: app, protocols: [imap]}\n");
    s.push_str(extra);
    s
}

/// A configuration whose credential `app` (its secret in a file) runs the Graph checks against
/// the fake. `graph_extra` is appended to the `graph:` section (6 spaces deep).
fn yaml(idp: &FakeIdpHandle, dir: &std::path::Path, graph_extra: &str, mbx: &str) -> String {
    std::fs::write(dir.join("secret.txt"), SECRET).expect("write secret");
    format!(
        "defaults: {{jitter: 0s, login_interval: 1h}}\nstate_dir: {dir}\nendpoints: []\nservers:\n  imap: {{host: 127.0.0.1, port: {port}}}\ncredentials:\n  - name: app\n    tenant: {tenant}\n    client_id: {APP}\n    grant: client_credentials\n    authority: {base}\n    client_secret_file: secret.txt\n    secret_expires: 2030-01-01\n    graph:\n      graph_url: {base}\n      timeout: 5s\n{graph_extra}{mbx}",
        dir = dir.display(),
        port = free_port(),
        tenant = idp.tenant(),
        base = idp.base_url(),
    )
}

fn load(idp: &FakeIdpHandle, dir: &std::path::Path, graph_extra: &str, mbx: &str) -> Config {
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml(idp, dir, graph_extra, mbx)).expect("write config");
    config::load_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A state with the credential's token record, as the scheduler's token sources set it up.
fn state_for(cfg: &Config) -> Arc<State> {
    let state = Arc::new(State::new());
    let recs: Vec<(String, &'static str, Option<i64>)> = cfg
        .credentials
        .iter()
        .map(|c| (c.name.clone(), c.grant.as_str(), c.secret_expires))
        .collect();
    state.reconcile_tokens(&recs);
    state
}

fn scrape(state: &Arc<State>, cfg: &Config) -> String {
    o365_mail_exporter::metrics::render(state.clone(), Arc::new(cfg.clone()), false)
}

fn page(state: &Arc<State>, cfg: &Config) -> String {
    let web = o365_mail_exporter::http::Web {
        state: state.clone(),
        config: Arc::new(ArcSwap::from(Arc::new(cfg.clone()))),
        telemetry_path: "/metrics".into(),
        reload: tokio::sync::mpsc::channel(1).0,
        web_config: Default::default(),
    };
    o365_mail_exporter::http::status::page(&web)
}

fn reason(state: &State, check: GraphCheck) -> GraphReason {
    state.graph.snapshot().checks[&("app".to_string(), check)].reason
}

fn detail(state: &State, check: GraphCheck) -> String {
    state.graph.snapshot().checks[&("app".to_string(), check)]
        .detail
        .clone()
}

fn graph_requests(idp: &FakeIdpHandle, api: &str) -> u64 {
    let ep = format!("graph:{api}");
    idp.stats().count(|r| r.endpoint == ep)
}

#[tokio::test]
async fn expiry_licences_and_an_open_incident_reach_metrics_and_the_status_page() {
    let t = now();
    let idp = idp(tenant(t), &ALL_ROLES).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = load(&idp, dir.path(), "", &mailboxes(""));
    // alice, bob, carol are checked; the shared mailbox is `licensed: false` by default
    let targets: Vec<&str> = cfg.graph[0]
        .licence_targets
        .iter()
        .map(|t| t.mailbox.as_str())
        .collect();
    assert_eq!(targets, ["alice", "bob", "carol"]);
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;

    for c in GraphCheck::ALL {
        assert_eq!(
            reason(&state, c),
            GraphReason::Ok,
            "{c:?}: {}",
            detail(&state, c)
        );
    }
    // the configured secret (hint "CAN") expires in 10 days and replaces secret_expires
    let rec = state.token("app").expect("token record");
    assert_eq!(rec.secret_expires, Some(t + 10 * DAY));
    assert_eq!(rec.secret_expires_source, "graph");
    assert!(
        detail(&state, GraphCheck::AppCredentials).contains(KEY_IN_USE),
        "{}",
        detail(&state, GraphCheck::AppCredentials)
    );

    let text = scrape(&state, &cfg);
    let v = |prefix: &str| sample(&text, prefix).unwrap_or_else(|| panic!("{prefix}\n{text}"));
    assert_eq!(
        v(&format!("o365_app_credential_expiry_timestamp_seconds{{credential=\"app\",key_id=\"{KEY_IN_USE}\",type=\"password\"}}")),
        (t + 10 * DAY) as f64
    );
    assert_eq!(
        v(&format!("o365_app_credential_expiry_timestamp_seconds{{credential=\"app\",key_id=\"{KEY_OLD}\",type=\"password\"}}")),
        (t - 5 * DAY) as f64
    );
    assert_eq!(
        v("o365_client_secret_expiry_timestamp_seconds{credential=\"app\"}"),
        (t + 10 * DAY) as f64
    );
    assert_eq!(v("o365_mailbox_exchange_licensed{mailbox=\"alice\"}"), 1.0);
    assert_eq!(v("o365_mailbox_exchange_licensed{mailbox=\"bob\"}"), 0.0);
    assert_eq!(v("o365_mailbox_exchange_licensed{mailbox=\"carol\"}"), 1.0);
    assert_eq!(
        v("o365_mailbox_exchange_plan_status{mailbox=\"bob\",status=\"none\"}"),
        1.0
    );
    assert_eq!(
        v("o365_mailbox_exchange_plan_status{mailbox=\"carol\",status=\"Warning\"}"),
        1.0
    );
    assert!(!text.contains("mailbox=\"shared\",status"), "{text}");
    assert_eq!(
        v("o365_service_status{credential=\"app\",service=\"Exchange Online\",status=\"serviceDegradation\"}"),
        1.0
    );
    assert_eq!(
        v("o365_service_issues_open{credential=\"app\",service=\"Exchange Online\",classification=\"incident\"}"),
        1.0
    );
    assert_eq!(
        v("o365_service_issues_open{credential=\"app\",service=\"Exchange Online\",classification=\"advisory\"}"),
        1.0
    );
    for c in GraphCheck::ALL {
        assert_eq!(
            v(&format!(
                "o365_graph_check_reason{{credential=\"app\",check=\"{}\",reason=\"ok\"}}",
                c.as_str()
            )),
            1.0
        );
    }
    // issue titles and IDs are never labels
    assert!(
        !text.contains("EX512345") && !text.contains("access their mailboxes"),
        "{text}"
    );
    if let Err(complaints) = promtool_check_metrics(&text) {
        panic!("promtool check metrics:\n{complaints}\n---\n{text}");
    }

    // every collection was paged: 2 services and 3 Exchange issues, one per page
    assert_eq!(graph_requests(&idp, "health_overviews"), 2);
    assert_eq!(graph_requests(&idp, "issues"), 3);
    assert_eq!(graph_requests(&idp, "users"), 3);
    assert_eq!(
        v("o365_graph_requests_total{credential=\"app\",check=\"service_health\"}"),
        5.0
    );
    // one token request for Graph, with the Graph scope
    assert_eq!(idp.stats().grant("client_credentials"), 1);

    let html = page(&state, &cfg);
    for want in [
        "4. Microsoft Graph",
        "EX512345",
        "Users can&#39;t access their mailboxes over IMAP &lt;b&gt;and&lt;/b&gt; POP",
        "EX500001",
        "serviceDegradation",
        "(from graph)",
        KEY_IN_USE,
        "ece-2026",
    ] {
        assert!(html.contains(want), "{want} missing from the page:\n{html}");
    }
    // a resolved incident and another service's are not listed
    assert!(!html.contains("EX400000") && !html.contains("SP100000"));
    for text in [&html, &text] {
        assert!(!text.contains("CANARY"), "the secret leaked");
    }
    idp.shutdown().await;
}

#[tokio::test]
async fn a_403_on_one_check_leaves_the_others_working() {
    let t = now();
    // no Application.Read.All: the app-credentials check is refused
    let idp = idp(tenant(t), &["User.Read.All", "ServiceHealth.Read.All"]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = load(&idp, dir.path(), "", &mailboxes(""));
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;
    assert_eq!(
        reason(&state, GraphCheck::AppCredentials),
        GraphReason::PermissionDenied
    );
    let d = detail(&state, GraphCheck::AppCredentials);
    assert!(
        d.contains("403")
            && d.contains("Authorization_RequestDenied")
            && d.contains("Application.Read.All"),
        "{d}"
    );
    assert_eq!(reason(&state, GraphCheck::Licenses), GraphReason::Ok);
    assert_eq!(reason(&state, GraphCheck::ServiceHealth), GraphReason::Ok);
    // the status page gives the fix for the refused check only: the permission and the consent
    let html = page(&state, &cfg);
    let section = html
        .split_once("<h2>4. Microsoft Graph")
        .map(|(_, g)| g)
        .expect("Graph section");
    assert_eq!(
        section.matches("<strong>fix:</strong>").count(),
        1,
        "{section}"
    );
    assert!(
        section.contains("<strong>fix:</strong> Grant the app registration the Microsoft Graph application permission Application.Read.All")
            && section.contains("Grant admin consent"),
        "{section}"
    );
    let text = scrape(&state, &cfg);
    assert_eq!(
        sample(&text, "o365_graph_check_reason{credential=\"app\",check=\"app_credentials\",reason=\"permission_denied\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "o365_graph_check_success{credential=\"app\",check=\"app_credentials\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "o365_graph_check_success{credential=\"app\",check=\"licenses\"}"
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("o365_app_credential_expiry_timestamp_seconds{"),
        "{text}"
    );
    // without Graph's answer the configured secret_expires stays in use
    let rec = state.token("app").expect("record");
    assert_eq!(
        (rec.secret_expires, rec.secret_expires_source),
        (Some(CONFIGURED_EXPIRY), "config")
    );
    assert_eq!(
        sample(&text, "o365_mailbox_exchange_licensed{mailbox=\"bob\"}"),
        Some(0.0)
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn apis_a_national_cloud_lacks_a_missing_user_and_an_unknown_service() {
    let t = now();
    let graph = tenant(t)
        .failure(GraphFailure::times(GraphApi::HealthOverviews, 400, 1))
        .failure(GraphFailure::times(GraphApi::HealthOverviews, 404, 1));
    let idp = idp(graph, &ALL_ROLES).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = load(
        &idp,
        dir.path(),
        "",
        &mailboxes(
            "  - {name: ghost, address: ghost@contoso.test, credential: app, protocols: [imap]}\n",
        ),
    );
    let state = state_for(&cfg);
    for _ in 0..2 {
        graph::run_once(&cfg, &state).await;
        assert_eq!(
            reason(&state, GraphCheck::ServiceHealth),
            GraphReason::NotAvailable
        );
        let d = detail(&state, GraphCheck::ServiceHealth);
        assert!(d.contains("not available"), "{d}");
    }
    // the missing user is a finding about that mailbox; the others are read
    assert_eq!(reason(&state, GraphCheck::Licenses), GraphReason::NotFound);
    assert!(detail(&state, GraphCheck::Licenses).contains("ghost"));
    let snap = state.graph.snapshot();
    assert!(snap.licences.contains_key("alice") && !snap.licences.contains_key("ghost"));
    assert_eq!(reason(&state, GraphCheck::AppCredentials), GraphReason::Ok);

    // a service name Microsoft does not list
    let cfg = load(
        &idp,
        dir.path(),
        "      service: Exchange Onlien\n",
        &mailboxes(""),
    );
    graph::run_once(&cfg, &state).await;
    assert_eq!(
        reason(&state, GraphCheck::ServiceHealth),
        GraphReason::NotFound
    );
    let d = detail(&state, GraphCheck::ServiceHealth);
    assert!(
        d.contains("Exchange Online") && d.contains("Exchange Onlien"),
        "{d}"
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn hostile_answers_are_bad_responses_and_the_token_stays_home() {
    let t = now();
    let mut graph = tenant(t).failure(GraphFailure::times(GraphApi::Applications, 0, 1));
    // next links to another origin (same server, other host name): never followed
    let idp = idp(graph.clone(), &ALL_ROLES).await;
    graph.next_link_base = Some(idp.base_url().replace("127.0.0.1", "localhost"));
    idp.update_graph(|g| *g = graph.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = load(&idp, dir.path(), "", &mailboxes(""));
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;
    assert_eq!(
        reason(&state, GraphCheck::AppCredentials),
        GraphReason::BadResponse
    );
    assert_eq!(
        reason(&state, GraphCheck::ServiceHealth),
        GraphReason::BadResponse
    );
    let d = detail(&state, GraphCheck::ServiceHealth);
    assert!(d.contains("nextLink") && d.contains("localhost"), "{d}");
    assert_eq!(
        graph_requests(&idp, "health_overviews"),
        1,
        "next link followed"
    );
    assert_eq!(reason(&state, GraphCheck::Licenses), GraphReason::Ok);

    idp.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_graph_is_a_network_failure_of_each_check() {
    let idp = idp(tenant(now()), &ALL_ROLES).await;
    let dir = tempfile::tempdir().expect("tmp");
    let text = yaml(&idp, dir.path(), "", &mailboxes("")).replace(
        &format!("graph_url: {}", idp.base_url()),
        &format!("graph_url: http://127.0.0.1:{}", free_port()),
    );
    std::fs::write(dir.path().join("c.yaml"), text).expect("write");
    let cfg = config::load_file(&dir.path().join("c.yaml")).expect("valid");
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;
    for c in GraphCheck::ALL {
        assert_eq!(reason(&state, c), GraphReason::Network, "{c:?}");
    }
    assert!(detail(&state, GraphCheck::Licenses).contains("cannot reach Graph"));
    idp.shutdown().await;
}

#[tokio::test]
async fn a_certificate_credential_is_matched_by_thumbprint() {
    let t = now();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["ece-monitor".into()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    let other = rcgen::CertificateParams::new(vec!["other".into()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    let graph = FakeGraph::default().application(
        GraphApplication::new(APP)
            .secret(KEY_OLD, "a secret", "xyz-secret", t - DAY, t + 400 * DAY)
            .certificate(
                "cccccccc-0000-0000-0000-000000000001",
                "CN=other",
                other.der(),
                t - DAY,
                t + 3 * DAY,
            )
            .certificate(
                KEY_IN_USE,
                "CN=ece-monitor",
                cert.der(),
                t - DAY,
                t + 20 * DAY,
            ),
    );
    let idp = FakeIdp::builder()
        .app(
            App::new(APP)
                .certificate_der(cert.der())
                .expect("cert")
                .roles(ALL_ROLES),
        )
        .graph(graph)
        .start()
        .await
        .expect("fake starts");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("app.crt"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("app.key"), kp.serialize_pem()).expect("write");
    let text = yaml(&idp, dir.path(), "      checks: [app_credentials]\n", "").replace(
        "client_secret_file: secret.txt",
        "client_certificate: {cert_file: app.crt, key_file: app.key}",
    );
    std::fs::write(dir.path().join("c.yaml"), text).expect("write");
    let cfg = config::load_file(&dir.path().join("c.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.graph[0].checks, [GraphCheck::AppCredentials]);
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;
    assert_eq!(
        reason(&state, GraphCheck::AppCredentials),
        GraphReason::Ok,
        "{}",
        detail(&state, GraphCheck::AppCredentials)
    );
    let rec = state.token("app").expect("record");
    assert_eq!(
        (rec.secret_expires, rec.secret_expires_source),
        (Some(t + 20 * DAY), "graph")
    );
    let text = scrape(&state, &cfg);
    assert_eq!(
        sample(
            &text,
            &format!("o365_app_credential_expiry_timestamp_seconds{{credential=\"app\",key_id=\"{KEY_IN_USE}\",type=\"certificate\"}}")
        ),
        Some((t + 20 * DAY) as f64)
    );
    // only the configured checks have series
    assert!(!text.contains("check=\"licenses\""), "{text}");
    idp.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn throttling_honours_retry_after_and_a_reload_keeps_the_schedule_and_the_token() {
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    let graph =
        tenant(now()).failure(GraphFailure::times(GraphApi::Users, 429, 1).retry_after(600));
    let idp = idp(graph, &ALL_ROLES).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = load(&idp, dir.path(), "", &mailboxes(""));
    let state = state_for(&cfg);
    let runner = graph::Runner::new(state.clone());
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    runner.start(&cfg, &tasks, &cancel, &sem);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(reason(&state, GraphCheck::Licenses), GraphReason::Throttled);
    assert_eq!(reason(&state, GraphCheck::AppCredentials), GraphReason::Ok);
    assert_eq!(reason(&state, GraphCheck::ServiceHealth), GraphReason::Ok);
    // throttled at the first user: the others are not asked
    assert_eq!(graph_requests(&idp, "users"), 1);
    // not at the 5-minute transient retry: Retry-After says 10 minutes
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(graph_requests(&idp, "users"), 1);
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(reason(&state, GraphCheck::Licenses), GraphReason::Ok);
    assert_eq!(graph_requests(&idp, "users"), 4);
    // the other checks keep their hourly schedule
    assert_eq!(graph_requests(&idp, "applications"), 1);
    let tokens = idp.stats().grant("client_credentials");
    assert_eq!(tokens, 1);

    // a reload with the same configuration: no burst of requests, no new token
    cancel.cancel();
    let (tasks2, cancel2) = (TaskTracker::new(), CancellationToken::new());
    runner.start(&cfg, &tasks2, &cancel2, &sem);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(graph_requests(&idp, "applications"), 1);
    assert_eq!(graph_requests(&idp, "users"), 4);
    // an hour after the first run the checks run again, on the cached Graph token... which
    // expired (3599 s lifetime): exactly one more token request
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(graph_requests(&idp, "applications"), 2);
    assert_eq!(idp.stats().grant("client_credentials"), 2);
    let snap = state.graph.snapshot();
    let rec = &snap.checks[&("app".to_string(), GraphCheck::Licenses)];
    assert_eq!(rec.failures.get(&GraphReason::Throttled), Some(&1));
    assert!(rec.runs >= 3, "{}", rec.runs);
    cancel2.cancel();
    tasks.close();
    tasks2.close();
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_runs_the_graph_checks_and_shows_them() {
    let t = now();
    let idp = idp(
        tenant(t),
        &[
            "User.Read.All",
            "ServiceHealth.Read.All",
            "Application.Read.All",
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml(&idp, dir.path(), "", &mailboxes(""))).expect("write");
    let p = path.to_str().expect("utf8").to_string();
    let (body, html, stderr) = tokio::task::spawn_blocking(move || {
        let e = Exporter::start(&["--config.file", &p]);
        let body = e.wait_metrics(Duration::from_secs(30), |b| {
            GraphCheck::ALL.iter().all(|c| {
                sample(
                    b,
                    &format!(
                        "o365_graph_check_success{{credential=\"app\",check=\"{}\"}}",
                        c.as_str()
                    ),
                ) == Some(1.0)
            })
        });
        let (_, html) = e.get("/");
        (body, html, e.stderr())
    })
    .await
    .expect("exporter thread");
    assert_eq!(
        sample(
            &body,
            "o365_client_secret_expiry_timestamp_seconds{credential=\"app\"}"
        ),
        Some((t + 10 * DAY) as f64)
    );
    assert_eq!(
        sample(&body, "o365_service_issues_open{credential=\"app\",service=\"Exchange Online\",classification=\"incident\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "o365_mailbox_exchange_licensed{mailbox=\"bob\"}"),
        Some(0.0)
    );
    if let Err(complaints) = promtool_check_metrics(&body) {
        panic!("promtool check metrics:\n{complaints}\n---\n{body}");
    }
    assert!(
        html.contains("EX512345") && html.contains("(from graph)"),
        "{html}"
    );
    // the incident is in the log too, the secret nowhere
    assert!(stderr.contains("EX512345"), "{stderr}");
    for text in [&body, &html, &stderr] {
        assert!(!text.contains("CANARY"), "secret leaked");
    }
    idp.shutdown().await;
}

/// `amtool` against `url`; its stdout, or a panic with what it said.
fn amtool(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("amtool")
        .args(args)
        .arg(format!("--alertmanager.url={url}"))
        .output()
        .expect("amtool runs (scripts/install-deps.sh installs prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "amtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_alertmanager_example_inhibits_microsoft_side_login_failures_during_an_incident() {
    use crate::support::promstack::{Alertmanager, WebhookSink};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("alerts/alertmanager.example.yml"))
        .expect("example exists");
    // the shipped file as it is, only its receivers pointed at a local sink
    let sink = WebhookSink::start();
    let cfg = example
        .replace("http://127.0.0.1:9097/o365-mail-exporter/page", &sink.url)
        .replace(
            "http://127.0.0.1:9098/o365-mail-exporter/warning",
            &sink.url,
        );
    assert_ne!(cfg, example, "receiver URLs not found in the example");
    let dir = tempfile::tempdir().expect("tmp");
    let am = Alertmanager::start(dir.path(), &cfg);
    let url = format!("http://{}", am.addr);
    let svc = "instance=ece-svc:10030";
    let login = |mailbox: &str, reason: &str, instance: &str| {
        amtool(
            &url,
            &[
                "alert",
                "add",
                "alertname=O365MailboxLoginFailing",
                "severity=page",
                "job=o365-mail-exporter",
                instance,
                &format!("mailbox={mailbox}"),
                "protocol=imap",
                &format!("reason={reason}"),
                "credential=ece",
                "shared=false",
            ],
        );
    };
    login("support", "connection_closed", svc);
    login("sales", "auth_rejected", svc);
    login("support", "timeout", "instance=ece-app1:10030");
    // before the incident nothing is inhibited
    let query = |flags: &[&str]| {
        let mut args = vec!["alert", "query", "-o", "json"];
        args.extend_from_slice(flags);
        args.push("alertname=O365MailboxLoginFailing");
        let v: serde_json::Value =
            serde_json::from_str(&amtool(&url, &args)).expect("amtool prints JSON");
        let mut got: Vec<(String, String, String)> = v
            .as_array()
            .expect("a list")
            .iter()
            .map(|a| {
                let l = &a["labels"];
                (
                    l["instance"].as_str().unwrap_or("").to_string(),
                    l["mailbox"].as_str().unwrap_or("").to_string(),
                    a["status"]["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        got
    };
    assert_eq!(query(&["--active"]).len(), 3);
    amtool(
        &url,
        &[
            "alert",
            "add",
            "alertname=O365ExchangeOnlineIncident",
            "severity=warning",
            "job=o365-mail-exporter",
            svc,
            "credential=graph",
            "service=\"Exchange Online\"",
            "classification=incident",
            "status=serviceDegradation",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want_inhibited = vec![(
        "ece-svc:10030".to_string(),
        "support".to_string(),
        "suppressed".to_string(),
    )];
    loop {
        if query(&["--inhibited"]) == want_inhibited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not inhibited: {:?}",
            query(&["--inhibited", "--active"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // an admin-side reason and another server's failure still page
    let active: Vec<(String, String)> = query(&["--active"])
        .into_iter()
        .map(|(i, m, _)| (i, m))
        .collect();
    assert_eq!(
        active,
        vec![
            ("ece-app1:10030".to_string(), "support".to_string()),
            ("ece-svc:10030".to_string(), "sales".to_string()),
        ]
    );
    drop(am);
}

#[tokio::test]
async fn a_dedicated_app_only_reader_watches_the_products_delegated_credential() {
    const ECE: &str = "eeeeeeee-1111-2222-3333-444444444444";
    const ECE_SECRET: &str = "ece-web-app-secret";
    let t = now();
    let graph = tenant(t).application(
        GraphApplication::new(ECE)
            .display_name("ECE web app")
            .secret(
                "22222222-aaaa-bbbb-cccc-000000000001",
                "web",
                ECE_SECRET,
                t - DAY,
                t + 45 * DAY,
            ),
    );
    let idp = idp(graph, &ALL_ROLES).await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("ece.txt"), ECE_SECRET).expect("write");
    // the product's credential is delegated (a confidential web app with its own secret); the
    // mailboxes use it; the app-only credential `app` runs Graph for both
    let product = format!(
        "  - name: ece\n    tenant: {}\n    client_id: {ECE}\n    grant: refresh_token\n    authority: {}\n    client_secret_file: ece.txt\n",
        idp.tenant(),
        idp.base_url()
    );
    let text = yaml(&idp, dir.path(), "", &mailboxes(""))
        .replace("credential: app,", "credential: ece,")
        .replace("mailboxes:\n", &format!("{product}mailboxes:\n"));
    std::fs::write(dir.path().join("c.yaml"), text).expect("write");
    let cfg = config::load_file(&dir.path().join("c.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.graph[0].app_targets, ["app", "ece"]);
    assert_eq!(cfg.graph[0].licence_targets.len(), 3);
    let state = state_for(&cfg);
    graph::run_once(&cfg, &state).await;
    assert_eq!(reason(&state, GraphCheck::AppCredentials), GraphReason::Ok);
    for (cred, end) in [("app", t + 10 * DAY), ("ece", t + 45 * DAY)] {
        let rec = state.token(cred).expect("record");
        assert_eq!(
            (rec.secret_expires, rec.secret_expires_source),
            (Some(end), "graph"),
            "{cred}"
        );
    }
    let text = scrape(&state, &cfg);
    assert_eq!(
        sample(
            &text,
            "o365_client_secret_expiry_timestamp_seconds{credential=\"ece\"}"
        ),
        Some((t + 45 * DAY) as f64)
    );
    assert!(
        text.contains("o365_app_credential_expiry_timestamp_seconds{credential=\"ece\",key_id=\"22222222-aaaa-bbbb-cccc-000000000001\",type=\"password\"}"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "o365_mailbox_exchange_licensed{mailbox=\"bob\"}"),
        Some(0.0)
    );
    assert_eq!(graph_requests(&idp, "applications"), 2);
    idp.shutdown().await;
}
