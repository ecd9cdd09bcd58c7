//! The three Graph checks. Each takes the credential's Graph token, sends its requests, and
//! returns a [`RunOutcome`]: a bounded reason, one sentence of detail, and the facts read. A
//! failure of one check never touches another (each has its own task and record), and within
//! `licenses` a user that does not exist is a finding about that mailbox, not a failed check.
//!
//! Endpoints and permissions: o365-facts.md section 8.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::client::{Failure, FailureKind, GraphClient};
use super::model::{self, Application, HealthOverview, Issue, KeyKind, User};
use super::store::{
    AppFacts, AppKey, Facts, HealthFacts, LicenceFacts, OpenIssue, RunOutcome, MAX_ISSUES_KEPT,
};
use super::GraphReason;
use crate::config::{ClientAuth, Credential, GraphCheck, GraphSettings};
use crate::oauth::http::HttpClient;
use crate::oauth::TokenSource;
use crate::state::State;

/// Keys read from one application (Entra allows a few dozen; the rest is ignored).
const MAX_KEYS: usize = 100;

/// Everything a check of one credential needs.
pub struct Ctx {
    pub settings: GraphSettings,
    /// The credentials whose app registrations `app_credentials` reads (`app_targets`); each
    /// one's secret or certificate tells which key it uses.
    pub targets: Vec<Arc<Credential>>,
    /// The Graph token source (scope `graph.scope`), separate from the Exchange one.
    pub source: Arc<TokenSource>,
    pub http: HttpClient,
    pub state: Arc<State>,
}

/// The Graph application permission each check needs (least privileged, facts 8).
pub fn permission(check: GraphCheck) -> &'static str {
    match check {
        GraphCheck::AppCredentials => "Application.Read.All",
        GraphCheck::Licenses => "User.Read.All",
        GraphCheck::ServiceHealth => "ServiceHealth.Read.All",
    }
}

/// The reason of a failed request; `not_found` is what a 404 means for this request.
pub fn classify(f: &Failure, not_found: GraphReason) -> GraphReason {
    match f.kind {
        FailureKind::Status(401) => GraphReason::TokenRejected,
        FailureKind::Status(403) => GraphReason::PermissionDenied,
        FailureKind::Status(404) => not_found,
        // Graph answers 400 "Resource not found for the segment …" for an API a cloud lacks
        FailureKind::Status(400) => GraphReason::NotAvailable,
        FailureKind::Status(429) => GraphReason::Throttled,
        FailureKind::Status(s) if s >= 500 => GraphReason::ServerError,
        FailureKind::Status(_) | FailureKind::BadResponse => GraphReason::BadResponse,
        FailureKind::Network => GraphReason::Network,
        FailureKind::Timeout => GraphReason::Timeout,
    }
}

/// `message` with the fix for `reason` (the permission to grant, what a 401 means).
fn explain(check: GraphCheck, reason: GraphReason, message: &str) -> String {
    match reason {
        GraphReason::PermissionDenied => format!(
            "{message}: the app registration needs the application permission {} with admin consent",
            permission(check)
        ),
        GraphReason::TokenRejected => format!(
            "{message}: Graph refused the token; graph.scope must name this cloud's Graph resource"
        ),
        GraphReason::NotAvailable => format!(
            "{message}: this Graph API is not available here (national clouds lack some APIs)"
        ),
        GraphReason::Throttled => format!("{message}: Graph is throttling this app"),
        _ => message.to_string(),
    }
}

fn outcome(reason: GraphReason, detail: String) -> RunOutcome {
    RunOutcome {
        reason,
        detail,
        requests: 0,
        duration: Duration::ZERO,
        retry_after: None,
        facts: Facts::None,
    }
}

fn failed(check: GraphCheck, f: &Failure, not_found: GraphReason) -> RunOutcome {
    let reason = classify(f, not_found);
    let mut o = outcome(reason, explain(check, reason, &f.message));
    o.retry_after = f.retry_after;
    o
}

fn date(t: Option<i64>) -> String {
    match t.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        }
        None => "no end date".to_string(),
    }
}

/// Run `check` once.
pub async fn run(ctx: &Ctx, check: GraphCheck) -> RunOutcome {
    let started = Instant::now();
    let client = match GraphClient::new(&ctx.settings.url, ctx.http.clone()) {
        Ok(c) => c,
        Err(e) => return outcome(GraphReason::ConfigError, e),
    };
    let mut out = if check == GraphCheck::Licenses && ctx.settings.licence_targets.is_empty() {
        outcome(
            GraphReason::Ok,
            "no mailbox to check: every mailbox is `licensed: false` or checked by another credential"
                .to_string(),
        )
    } else {
        match ctx.source.access_token().await {
            Err(e) => outcome(GraphReason::TokenUnavailable, e.message),
            Ok(t) => match check {
                GraphCheck::AppCredentials => app_credentials(ctx, &client, &t.secret).await,
                GraphCheck::Licenses => licenses(ctx, &client, &t.secret).await,
                GraphCheck::ServiceHealth => service_health(ctx, &client, &t.secret).await,
            },
        }
    };
    out.requests = client.requests();
    out.duration = started.elapsed();
    out
}

async fn app_credentials(ctx: &Ctx, client: &GraphClient, token: &SecretString) -> RunOutcome {
    let check = GraphCheck::AppCredentials;
    let mut apps: BTreeMap<String, Application> = BTreeMap::new();
    let mut absent: Vec<String> = Vec::new();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut details = Vec::new();
    for target in &ctx.targets {
        let id = &target.client_id;
        if !apps.contains_key(id) && !absent.contains(id) {
            // OData string literal: a quote is doubled
            let url = client.url(
                &[
                    "v1.0",
                    &format!("applications(appId='{}')", id.replace('\'', "''")),
                ],
                &[(
                    "$select",
                    "id,appId,displayName,passwordCredentials,keyCredentials",
                )],
            );
            match client.get::<Application>(&url, token).await {
                Ok(a) => {
                    apps.insert(id.clone(), a);
                }
                Err(f) if f.status() == Some(404) => {
                    details.push(format!(
                        "credential {}: {}: no application with appId {} in this tenant (a multi-tenant app's credentials sit on the application object in its home tenant)",
                        target.name,
                        f.message,
                        model::token_chars(id, 64)
                    ));
                    absent.push(id.clone());
                }
                Err(f) => {
                    // denied, throttled or unreachable: the next application would fail alike
                    let mut o = failed(check, &f, GraphReason::NotFound);
                    details.insert(0, o.detail.clone());
                    o.detail = details.join("; ");
                    o.facts = Facts::Apps { found, missing };
                    return o;
                }
            }
        }
        let Some(app) = apps.get(id) else {
            missing.push(target.name.clone());
            continue;
        };
        let (facts, detail) = read_app(ctx, target, app);
        details.push(format!("credential {}: {detail}", target.name));
        found.push((target.name.clone(), facts));
    }
    RunOutcome {
        facts: Facts::Apps {
            found,
            missing: missing.clone(),
        },
        ..outcome(
            if missing.is_empty() {
                GraphReason::Ok
            } else {
                GraphReason::NotFound
            },
            details.join("; "),
        )
    }
}

/// The keys of `target`'s application, which of them `target` is configured with, and the
/// resulting `secret_expires` in its token record.
fn read_app(ctx: &Ctx, target: &Credential, app: &Application) -> (AppFacts, String) {
    let now = crate::state::unix(SystemTime::now()) as i64;
    let thumbprint = match &target.client_auth {
        ClientAuth::Certificate { cert_der, .. } => Some(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der)
                .as_ref()
                .to_vec(),
        ),
        _ => None,
    };
    let mut keys = Vec::new();
    for p in app.password_credentials.iter().flatten() {
        let in_use = match &target.client_auth {
            ClientAuth::Secret(s) => model::hint_matches(p.hint.as_deref(), s.expose_secret()),
            _ => false,
        };
        keys.push(AppKey {
            key_id: model::token_chars(p.key_id.as_deref().unwrap_or(""), 64),
            kind: KeyKind::Password,
            name: model::display_text(p.display_name.as_deref().unwrap_or(""), 90),
            start: p.start_date_time.as_deref().and_then(model::parse_time),
            end: p.end_date_time.as_deref().and_then(model::parse_time),
            in_use,
        });
    }
    for k in app.key_credentials.iter().flatten() {
        let in_use = thumbprint
            .as_deref()
            .is_some_and(|t| model::thumbprint_matches(k.custom_key_identifier.as_deref(), t));
        keys.push(AppKey {
            key_id: model::token_chars(k.key_id.as_deref().unwrap_or(""), 64),
            kind: KeyKind::of_key_type(k.kind.as_deref()),
            name: model::display_text(k.display_name.as_deref().unwrap_or(""), 90),
            start: k.start_date_time.as_deref().and_then(model::parse_time),
            end: k.end_date_time.as_deref().and_then(model::parse_time),
            in_use,
        });
    }
    keys.retain(|k| !k.key_id.is_empty());
    keys.truncate(MAX_KEYS);
    let secrets = keys.iter().filter(|k| k.kind == KeyKind::Password).count();
    let certs = keys.len() - secrets;
    let expired = keys
        .iter()
        .filter(|k| k.end.is_some_and(|e| e <= now))
        .count();
    let app_name = model::display_text(app.display_name.as_deref().unwrap_or(""), 90);
    let mut detail = format!(
        "app registration {:?}: {secrets} client secret{}, {certs} certificate{}",
        app_name,
        if secrets == 1 { "" } else { "s" },
        if certs == 1 { "" } else { "s" }
    );
    if expired > 0 {
        detail.push_str(&format!(" ({expired} expired)"));
    }
    // the earliest end among the matching keys: two secrets can share a hint
    let in_use_end = keys.iter().filter(|k| k.in_use).filter_map(|k| k.end).min();
    let what = match (&target.client_auth, thumbprint.is_some()) {
        (_, true) => "certificate",
        (ClientAuth::Secret(_), _) => "client secret",
        _ => "key (a public client has none)",
    };
    match (keys.iter().find(|k| k.in_use), in_use_end) {
        (Some(k), Some(end)) => detail.push_str(&format!(
            ", the configured {what} is key {} ({:?}), {} {}",
            k.key_id,
            k.name,
            if end <= now { "expired" } else { "expires" },
            date(Some(end))
        )),
        (Some(k), None) => detail.push_str(&format!(
            ", the configured {what} is key {} ({:?}), without an end date",
            k.key_id, k.name
        )),
        (None, _) => detail.push_str(&format!(
            ", none of them is the configured {what}, so secret_expires from the configuration stays in use"
        )),
    }
    let configured = target.secret_expires;
    ctx.state.update_token(&target.name, |r| match in_use_end {
        Some(end) => {
            r.secret_expires = Some(end);
            r.secret_expires_source = "graph";
        }
        None if r.secret_expires_source == "graph" => {
            r.secret_expires = configured;
            r.secret_expires_source = if configured.is_some() { "config" } else { "" };
        }
        None => {}
    });
    (
        AppFacts {
            reader: ctx.settings.credential.clone(),
            app_name,
            keys,
            as_of: SystemTime::now(),
        },
        detail,
    )
}

async fn licenses(ctx: &Ctx, client: &GraphClient, token: &SecretString) -> RunOutcome {
    let check = GraphCheck::Licenses;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut unlicensed = Vec::new();
    let mut failure: Option<RunOutcome> = None;
    for t in &ctx.settings.licence_targets {
        let url = client.url(
            &["v1.0", "users", &t.address],
            &[("$select", "assignedLicenses,assignedPlans")],
        );
        match client.get::<User>(&url, token).await {
            Ok(u) => {
                let (status, plans) =
                    model::exchange_plan(u.assigned_plans.as_deref().unwrap_or(&[]));
                if !status.licensed() {
                    unlicensed.push(format!("{} ({})", t.mailbox, status.as_str()));
                }
                found.push((
                    t.mailbox.clone(),
                    LicenceFacts {
                        credential: ctx.settings.credential.clone(),
                        status,
                        plans,
                        licences: u.assigned_licenses.as_ref().map_or(0, Vec::len),
                        as_of: SystemTime::now(),
                    },
                ));
            }
            Err(f) if f.status() == Some(404) => missing.push(t.mailbox.clone()),
            Err(f) => {
                // denied, throttled or unreachable: the next users would fail alike
                failure = Some(failed(check, &f, GraphReason::NotFound));
                break;
            }
        }
    }
    let n = ctx.settings.licence_targets.len();
    let mut detail = format!(
        "{} of {n} mailbox user{} read: {} with an enabled Exchange plan",
        found.len(),
        if n == 1 { "" } else { "s" },
        found.iter().filter(|(_, f)| f.status.licensed()).count()
    );
    if !unlicensed.is_empty() {
        detail.push_str(&format!("; without one: {}", unlicensed.join(", ")));
    }
    if !missing.is_empty() {
        detail.push_str(&format!(
            "; no user with the address as userPrincipalName: {}",
            missing.join(", ")
        ));
    }
    let facts = Facts::Licences {
        found,
        missing: missing.clone(),
    };
    match failure {
        Some(mut f) => {
            f.detail = format!("{}; {detail}", f.detail);
            f.facts = facts;
            f
        }
        None => RunOutcome {
            facts,
            ..outcome(
                if missing.is_empty() {
                    GraphReason::Ok
                } else {
                    GraphReason::NotFound
                },
                detail,
            )
        },
    }
}

async fn service_health(ctx: &Ctx, client: &GraphClient, token: &SecretString) -> RunOutcome {
    let check = GraphCheck::ServiceHealth;
    let want = &ctx.settings.service;
    let url = client.url(
        &["v1.0", "admin", "serviceAnnouncement", "healthOverviews"],
        &[],
    );
    let overviews: Vec<HealthOverview> = match client.get_all(url, token).await {
        Ok((v, _)) => v,
        Err(f) => return failed(check, &f, GraphReason::NotAvailable),
    };
    let matches = |o: &HealthOverview| {
        o.service
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(want))
            || o.id
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(want))
    };
    let Some(ov) = overviews.iter().find(|o| matches(o)) else {
        let names: Vec<String> = overviews
            .iter()
            .filter_map(|o| o.service.as_deref())
            .take(40)
            .map(|s| model::display_text(s, 64))
            .collect();
        return outcome(
            GraphReason::NotFound,
            format!(
                "Graph's service health lists no service {want:?} (graph.service); it lists: {}",
                names.join(", ")
            ),
        );
    };
    let service_name = ov.service.clone().unwrap_or_else(|| want.clone());
    let status = model::service_status(ov.status.as_deref().unwrap_or(""));
    let url = client.url(
        &["v1.0", "admin", "serviceAnnouncement", "issues"],
        &[
            (
                "$filter",
                &format!("service eq '{}'", service_name.replace('\'', "''")),
            ),
            (
                "$select",
                "id,title,service,classification,status,isResolved,featureGroup,startDateTime,lastModifiedDateTime",
            ),
        ],
    );
    let issues: Vec<Issue> = match client.get_all(url, token).await {
        Ok((v, _)) => v,
        Err(f) => return failed(check, &f, GraphReason::NotAvailable),
    };
    let mut open: BTreeMap<&'static str, u64> =
        model::CLASSIFICATIONS.iter().map(|c| (*c, 0)).collect();
    let mut kept: Vec<OpenIssue> = Vec::new();
    for i in issues.iter().filter(|i| i.is_resolved != Some(true)) {
        let class = model::classification(i.classification.as_deref());
        *open.entry(class).or_insert(0) += 1;
        kept.push(OpenIssue {
            id: model::token_chars(i.id.as_deref().unwrap_or(""), 32),
            title: model::display_text(i.title.as_deref().unwrap_or(""), 200),
            classification: class,
            status: model::service_status(i.status.as_deref().unwrap_or("")),
            feature_group: model::display_text(i.feature_group.as_deref().unwrap_or(""), 80),
            start: i.start_date_time.as_deref().and_then(model::parse_time),
            last_modified: i
                .last_modified_date_time
                .as_deref()
                .and_then(model::parse_time),
        });
    }
    // incidents first, newest first
    kept.sort_by(|a, b| {
        (a.classification != "incident", std::cmp::Reverse(a.start))
            .cmp(&(b.classification != "incident", std::cmp::Reverse(b.start)))
    });
    for i in &kept {
        if i.classification == "incident" {
            tracing::warn!(service = %service_name, id = %i.id, status = i.status, title = %i.title, "Microsoft reports an open incident");
        } else {
            tracing::info!(service = %service_name, id = %i.id, classification = i.classification, title = %i.title, "Microsoft reports an open issue");
        }
    }
    let mut detail = format!("{service_name}: {status}");
    let incidents = open.get("incident").copied().unwrap_or(0);
    let advisories = open.get("advisory").copied().unwrap_or(0);
    detail.push_str(&format!(
        "; {incidents} open incident{}, {advisories} open advisor{}",
        if incidents == 1 { "" } else { "s" },
        if advisories == 1 { "y" } else { "ies" }
    ));
    let ids: Vec<String> = kept
        .iter()
        .filter(|i| i.classification == "incident")
        .take(5)
        .map(|i| format!("{} {:?}", i.id, i.title))
        .collect();
    if !ids.is_empty() {
        detail.push_str(&format!(" ({})", ids.join("; ")));
    }
    kept.truncate(MAX_ISSUES_KEPT);
    RunOutcome {
        facts: Facts::Health(HealthFacts {
            service: want.clone(),
            status,
            open,
            issues: kept,
            as_of: SystemTime::now(),
        }),
        ..outcome(GraphReason::Ok, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: FailureKind) -> Failure {
        Failure {
            kind,
            message: "m".into(),
            code: None,
            retry_after: None,
        }
    }

    #[test]
    fn statuses_map_to_bounded_reasons() {
        use GraphReason as R;
        let nf = R::NotFound;
        assert_eq!(
            classify(&f(FailureKind::Status(403)), nf),
            R::PermissionDenied
        );
        assert_eq!(classify(&f(FailureKind::Status(401)), nf), R::TokenRejected);
        assert_eq!(classify(&f(FailureKind::Status(429)), nf), R::Throttled);
        assert_eq!(classify(&f(FailureKind::Status(404)), nf), R::NotFound);
        assert_eq!(
            classify(&f(FailureKind::Status(404)), R::NotAvailable),
            R::NotAvailable
        );
        assert_eq!(classify(&f(FailureKind::Status(400)), nf), R::NotAvailable);
        assert_eq!(classify(&f(FailureKind::Status(503)), nf), R::ServerError);
        assert_eq!(classify(&f(FailureKind::Status(302)), nf), R::BadResponse);
        assert_eq!(classify(&f(FailureKind::Network), nf), R::Network);
        assert_eq!(classify(&f(FailureKind::Timeout), nf), R::Timeout);
        assert_eq!(classify(&f(FailureKind::BadResponse), nf), R::BadResponse);
    }

    #[test]
    fn a_denied_check_names_the_permission_to_grant() {
        let d = explain(
            GraphCheck::ServiceHealth,
            GraphReason::PermissionDenied,
            "Graph answered HTTP 403",
        );
        assert!(d.contains("ServiceHealth.Read.All"), "{d}");
    }
}
