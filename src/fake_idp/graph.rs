//! A fake of the Microsoft Graph endpoints the exporter's Graph checks read (o365-facts.md
//! section 8), served by the same process and port as the fake identity platform, so the
//! tokens it checks are the ones the fake issued.
//!
//! # Endpoints (GET, `Authorization: Bearer <token from this fake>`)
//! - `/v1.0/applications(appId='{appId}')`: `id`, `appId`, `displayName`,
//!   `passwordCredentials[]` (`keyId`, `displayName`, `hint`, `startDateTime`, `endDateTime`,
//!   `customKeyIdentifier: null`, `secretText: null`) and `keyCredentials[]` (`keyId`,
//!   `displayName`, `type`, `usage`, `customKeyIdentifier` = base64 of the SHA-1 thumbprint,
//!   `key: null`, dates with seven fractional digits as Graph often sends). Needs the role
//!   `Application.Read.All` (or `Application.ReadWrite.All`, `Directory.Read.All`).
//! - `/v1.0/users/{upn}`: `assignedLicenses[]`, `assignedPlans[]` (`service`, `servicePlanId`,
//!   `capabilityStatus`, `assignedDateTime`). Needs `User.Read.All` (or `Directory.Read.All`).
//!   Unknown user: 404 `Request_ResourceNotFound`.
//! - `/v1.0/admin/serviceAnnouncement/healthOverviews` and `…/issues` (with
//!   `$filter=service eq '…'`): paged by `page_size` with `@odata.nextLink`
//!   (`$skiptoken`). Needs `ServiceHealth.Read.All`.
//! - Any other `/v1.0/…` path: 400 `BadRequest` "Resource not found for the segment …", as
//!   Graph answers for an API a cloud does not have.
//!
//! The token must be one this fake signed, unexpired, for the tenant, with a Graph audience
//! (`https://graph.microsoft.com`, the national ones, or `00000003-0000-0000-c000-000000000000`);
//! otherwise 401 `InvalidAuthenticationToken`. A missing role answers 403
//! `Authorization_RequestDenied`. [`GraphFailure`]s inject 4xx/5xx answers (429 with
//! `Retry-After`) or malformed JSON per API. Requests are counted in the fake's stats under
//! endpoint `graph:<api>` with the token's `appid` as client and the status as outcome.

use aws_lc_rs::{hmac, signature};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::clock::dotnet_timestamp;
use super::jwt::Signer;
use super::state::State;
use super::{ids, Reply};

/// Audiences Graph accepts (the resource of each cloud's Graph, and Graph's app id).
const GRAPH_AUDIENCES: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "00000003-0000-0000-c000-000000000000",
];

/// The Graph data the fake serves; everything optional, unknown fields refused (as in the
/// process's config file, section `graph:`). Times are Unix seconds.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeGraph {
    #[serde(default)]
    pub applications: Vec<GraphApplication>,
    #[serde(default)]
    pub users: Vec<GraphUser>,
    /// Entries of `healthOverviews`.
    #[serde(default)]
    pub services: Vec<GraphService>,
    #[serde(default)]
    pub issues: Vec<GraphIssue>,
    /// Entries per page of the paged collections. Default 100 (Graph's default).
    #[serde(default)]
    pub page_size: Option<usize>,
    /// Base of `@odata.nextLink` instead of the fake's own URL (a hostile or misrouted answer).
    #[serde(default)]
    pub next_link_base: Option<String>,
    #[serde(default)]
    pub failures: Vec<GraphFailure>,
}

impl FakeGraph {
    pub fn application(mut self, a: GraphApplication) -> Self {
        self.applications.push(a);
        self
    }

    pub fn user(mut self, u: GraphUser) -> Self {
        self.users.push(u);
        self
    }

    pub fn service(mut self, id: &str, service: &str, status: &str) -> Self {
        self.services.push(GraphService {
            id: id.into(),
            service: service.into(),
            status: status.into(),
        });
        self
    }

    pub fn issue(mut self, i: GraphIssue) -> Self {
        self.issues.push(i);
        self
    }

    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n.max(1));
        self
    }

    pub fn failure(mut self, f: GraphFailure) -> Self {
        self.failures.push(f);
        self
    }
}

/// An application object with its credentials.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphApplication {
    pub app_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub password_credentials: Vec<GraphSecret>,
    #[serde(default)]
    pub key_credentials: Vec<GraphKey>,
}

impl GraphApplication {
    pub fn new(app_id: &str) -> Self {
        GraphApplication {
            app_id: app_id.into(),
            ..Default::default()
        }
    }

    pub fn display_name(mut self, n: &str) -> Self {
        self.display_name = Some(n.into());
        self
    }

    /// A client secret whose value is `value` (only its first three characters are kept, as
    /// Graph's `hint`), valid from `start` to `end`.
    pub fn secret(mut self, key_id: &str, name: &str, value: &str, start: i64, end: i64) -> Self {
        self.password_credentials.push(GraphSecret {
            key_id: key_id.into(),
            display_name: name.into(),
            hint: value.chars().take(3).collect(),
            start,
            end: Some(end),
        });
        self
    }

    /// A certificate (DER) as uploaded to the app registration: `customKeyIdentifier` is its
    /// SHA-1 thumbprint.
    pub fn certificate(
        mut self,
        key_id: &str,
        name: &str,
        der: &[u8],
        start: i64,
        end: i64,
    ) -> Self {
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        self.key_credentials.push(GraphKey {
            key_id: key_id.into(),
            display_name: name.into(),
            kind: "AsymmetricX509Cert".into(),
            custom_key_identifier: Some(STANDARD.encode(sha1.as_ref())),
            start,
            end: Some(end),
        });
        self
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSecret {
    pub key_id: String,
    #[serde(default)]
    pub display_name: String,
    /// The first three characters of the secret.
    #[serde(default)]
    pub hint: String,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphKey {
    pub key_id: String,
    #[serde(default)]
    pub display_name: String,
    /// `AsymmetricX509Cert` unless said otherwise.
    #[serde(rename = "type", default = "x509")]
    pub kind: String,
    #[serde(default)]
    pub custom_key_identifier: Option<String>,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: Option<i64>,
}

fn x509() -> String {
    "AsymmetricX509Cert".into()
}

/// A user with assigned service plans.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphUser {
    pub upn: String,
    #[serde(default)]
    pub sku_ids: Vec<String>,
    #[serde(default)]
    pub assigned_plans: Vec<GraphPlan>,
}

impl GraphUser {
    pub fn new(upn: &str) -> Self {
        GraphUser {
            upn: upn.into(),
            ..Default::default()
        }
    }

    /// An Exchange Online plan (`service: exchange`) in `capability_status`, with the SKU
    /// that brought it.
    pub fn exchange(mut self, capability_status: &str) -> Self {
        // Exchange Online (Plan 2) in Office 365 E3, ids as in Microsoft's licensing list
        self.sku_ids
            .push("6fd2c87f-b296-42f0-b197-1e91e994b900".into());
        self.plan(
            "exchange",
            "efb87545-963c-4e0d-99df-69c6916d9eb0",
            capability_status,
        )
    }

    pub fn plan(mut self, service: &str, service_plan_id: &str, capability_status: &str) -> Self {
        self.assigned_plans.push(GraphPlan {
            service: service.into(),
            service_plan_id: service_plan_id.into(),
            capability_status: capability_status.into(),
        });
        self
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphPlan {
    pub service: String,
    pub service_plan_id: String,
    pub capability_status: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphService {
    pub id: String,
    pub service: String,
    pub status: String,
}

/// A service health issue.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphIssue {
    pub id: String,
    pub service: String,
    pub title: String,
    /// `incident` or `advisory`.
    pub classification: String,
    pub status: String,
    #[serde(default)]
    pub is_resolved: bool,
    #[serde(default)]
    pub feature_group: String,
    #[serde(default)]
    pub start: i64,
}

impl GraphIssue {
    pub fn new(id: &str, service: &str, classification: &str, status: &str, title: &str) -> Self {
        GraphIssue {
            id: id.into(),
            service: service.into(),
            title: title.into(),
            classification: classification.into(),
            status: status.into(),
            is_resolved: false,
            feature_group: "E-Mail and calendar access".into(),
            start: 0,
        }
    }

    pub fn resolved(mut self) -> Self {
        self.is_resolved = true;
        self
    }

    pub fn start(mut self, unix: i64) -> Self {
        self.start = unix;
        self
    }
}

/// Which API a [`GraphFailure`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphApi {
    Applications,
    Users,
    HealthOverviews,
    Issues,
    Any,
}

impl GraphApi {
    fn as_str(self) -> &'static str {
        match self {
            GraphApi::Applications => "applications",
            GraphApi::Users => "users",
            GraphApi::HealthOverviews => "health_overviews",
            GraphApi::Issues => "issues",
            GraphApi::Any => "any",
        }
    }
}

/// An injected answer for requests to `api`: an HTTP `status` with Graph's error body for it
/// (`Retry-After` with 429/503 when given), or `status: 0` for a 200 with malformed JSON.
/// `times` counts down (absent: until cleared).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFailure {
    pub api: GraphApi,
    pub status: u16,
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    #[serde(default)]
    pub times: Option<u32>,
}

impl GraphFailure {
    pub fn always(api: GraphApi, status: u16) -> Self {
        GraphFailure {
            api,
            status,
            retry_after_secs: None,
            times: None,
        }
    }

    pub fn times(api: GraphApi, status: u16, n: u32) -> Self {
        GraphFailure {
            times: Some(n),
            ..GraphFailure::always(api, status)
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

fn iso(unix: i64) -> String {
    dotnet_timestamp(unix).replace(".0000000Z", "Z")
}

/// Graph's error body and status.
fn error(status: u16, code: &str, message: &str, now: i64) -> Reply {
    let body = json!({"error": {
        "code": code,
        "message": message,
        "innerError": {
            "date": iso(now).trim_end_matches('Z'),
            "request-id": ids::uuid(),
            "client-request-id": ids::uuid(),
        }
    }});
    Reply::Http {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

fn injected(f: &GraphFailure, now: i64) -> Reply {
    let mut r = match f.status {
        0 => Reply::ok("application/json", br#"{"value": [{"id": "#.to_vec()),
        401 => error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
            now,
        ),
        403 => error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            now,
        ),
        404 => error(
            404,
            "Request_ResourceNotFound",
            "Resource does not exist.",
            now,
        ),
        400 => error(
            400,
            "BadRequest",
            "Resource not found for the segment 'serviceAnnouncement'.",
            now,
        ),
        429 => error(429, "TooManyRequests", "Too many requests.", now),
        s if s >= 500 => error(s, "ServiceUnavailable", "Service unavailable.", now),
        s => error(s, "UnknownError", "", now),
    };
    if let (Some(secs), Reply::Http { headers, .. }) = (f.retry_after_secs, &mut r) {
        headers.push(("retry-after", secs.to_string()));
    }
    r
}

/// The claims of `token` if this fake signed it.
fn verified_claims(signer: &Signer, token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    let input = format!("{h}.{c}");
    let ok = match signer {
        Signer::Hs256(key) => hmac::verify(key, input.as_bytes(), &sig).is_ok(),
        Signer::Rs256 { key, .. } => {
            use signature::KeyPair as _;
            signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                key.public_key().as_ref(),
            )
            .verify(input.as_bytes(), &sig)
            .is_ok()
        }
    };
    if !ok {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
}

fn has_role(claims: &Value, any_of: &[&str]) -> bool {
    claims["roles"].as_array().is_some_and(|r| {
        r.iter()
            .any(|x| x.as_str().is_some_and(|x| any_of.contains(&x)))
    })
}

/// The percent-decoded query parameters.
fn query(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// One page of `items` starting at `$skiptoken`, with a next link when more follow.
fn page(st: &State, path: &str, q: &[(String, String)], items: Vec<Value>) -> Reply {
    let size = st.graph.page_size.unwrap_or(100).max(1);
    let skip: usize = param(q, "$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#admin/serviceAnnouncement"),
    );
    let end = (skip + size).min(items.len());
    body.insert(
        "value".into(),
        Value::Array(
            items
                .get(skip..end)
                .map(<[Value]>::to_vec)
                .unwrap_or_default(),
        ),
    );
    if end < items.len() {
        let base = st
            .graph
            .next_link_base
            .clone()
            .unwrap_or_else(|| st.base_url.clone());
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k != "$skiptoken") {
            ser.append_pair(k, v);
        }
        ser.append_pair("$skiptoken", &end.to_string());
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{base}{path}?{}", ser.finish())),
        );
    }
    Reply::json(200, Value::Object(body))
}

/// Answers a request under `/v1.0/`.
pub(crate) fn route(
    st: &mut State,
    method: &http::Method,
    path: &str,
    raw_query: Option<&str>,
    authorization: Option<&str>,
) -> Reply {
    let now = st.clock.unix();
    let decoded = crate::percent_decode(path);
    let rest = decoded.strip_prefix("/v1.0/").unwrap_or("");
    let segs: Vec<&str> = rest.split('/').collect();
    let api = match segs.as_slice() {
        [a] if a.starts_with("applications(") => Some(GraphApi::Applications),
        ["users", _] => Some(GraphApi::Users),
        ["admin", "serviceAnnouncement", "healthOverviews"] => Some(GraphApi::HealthOverviews),
        ["admin", "serviceAnnouncement", "issues"] => Some(GraphApi::Issues),
        _ => None,
    };
    let name = api.map_or("unknown", GraphApi::as_str);
    let token = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let claims = verified_claims(&st.signer, token);
    let client = claims
        .as_ref()
        .and_then(|c| c["appid"].as_str())
        .unwrap_or("")
        .to_string();
    let reply = answer(
        st,
        api,
        &segs,
        path,
        raw_query,
        method,
        claims.as_ref(),
        now,
    );
    let outcome = match &reply {
        Reply::Http { status, .. } => status.to_string(),
        Reply::Hang => "hang".to_string(),
    };
    st.counters
        .record(&format!("graph:{name}"), "", &client, &outcome, None);
    tracing::info!(api = name, client_id = %client, outcome = %outcome, "fake graph: request");
    reply
}

#[allow(clippy::too_many_arguments)]
fn answer(
    st: &mut State,
    api: Option<GraphApi>,
    segs: &[&str],
    path: &str,
    raw_query: Option<&str>,
    method: &http::Method,
    claims: Option<&Value>,
    now: i64,
) -> Reply {
    let Some(claims) = claims else {
        return error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
            now,
        );
    };
    let aud_ok = claims["aud"]
        .as_str()
        .is_some_and(|a| GRAPH_AUDIENCES.contains(&a.trim_end_matches('/')));
    let live = claims["exp"].as_i64().is_some_and(|e| e > now);
    let tenant_ok = claims["tid"].as_str() == Some(st.settings.tenant_id.as_str());
    if !(aud_ok && live && tenant_ok) {
        return error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
            now,
        );
    }
    if method != http::Method::GET {
        return error(
            405,
            "Request_BadRequest",
            "The HTTP method is not supported.",
            now,
        );
    }
    let Some(api) = api else {
        let seg = segs.get(1).or(segs.first()).copied().unwrap_or("");
        return error(
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{seg}'."),
            now,
        );
    };
    if let Some(pos) = st
        .graph
        .failures
        .iter()
        .position(|f| f.api == api || f.api == GraphApi::Any)
    {
        let f = st.graph.failures[pos].clone();
        if let Some(n) = st.graph.failures[pos].times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.graph.failures.remove(pos);
            }
        }
        return injected(&f, now);
    }
    let denied = || {
        error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            now,
        )
    };
    let q = query(raw_query);
    match api {
        GraphApi::Applications => {
            if !has_role(
                claims,
                &[
                    "Application.Read.All",
                    "Application.ReadWrite.All",
                    "Directory.Read.All",
                ],
            ) {
                return denied();
            }
            let want = segs[0]
                .strip_prefix("applications(appId='")
                .and_then(|s| s.strip_suffix("')"))
                .unwrap_or("")
                .replace("''", "'");
            let Some(a) = st.graph.applications.iter().find(|a| a.app_id == want) else {
                return error(
                    404,
                    "Request_ResourceNotFound",
                    &format!("Resource '{want}' does not exist or one of its queried reference-property objects are not present."),
                    now,
                );
            };
            let secrets: Vec<Value> = a
                .password_credentials
                .iter()
                .map(|p| {
                    json!({
                        "customKeyIdentifier": null,
                        "displayName": p.display_name,
                        "endDateTime": p.end.map(iso),
                        "hint": p.hint,
                        "keyId": p.key_id,
                        "secretText": null,
                        "startDateTime": iso(p.start),
                    })
                })
                .collect();
            let keys: Vec<Value> = a
                .key_credentials
                .iter()
                .map(|k| {
                    json!({
                        "customKeyIdentifier": k.custom_key_identifier,
                        "displayName": k.display_name,
                        "endDateTime": k.end.map(dotnet_timestamp),
                        "key": null,
                        "keyId": k.key_id,
                        "startDateTime": dotnet_timestamp(k.start),
                        "type": k.kind,
                        "usage": "Verify",
                    })
                })
                .collect();
            Reply::json(
                200,
                json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications(id,appId,displayName,passwordCredentials,keyCredentials)/$entity",
                    "id": ids::derived_uuid(&format!("app-object:{}", a.app_id)),
                    "appId": a.app_id,
                    "displayName": a.display_name.clone().unwrap_or_else(|| format!("fake app {}", a.app_id)),
                    "passwordCredentials": secrets,
                    "keyCredentials": keys,
                }),
            )
        }
        GraphApi::Users => {
            if !has_role(
                claims,
                &["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"],
            ) {
                return denied();
            }
            let upn = segs[1];
            let Some(u) = st
                .graph
                .users
                .iter()
                .find(|u| u.upn.eq_ignore_ascii_case(upn))
            else {
                return error(
                    404,
                    "Request_ResourceNotFound",
                    &format!("Resource '{upn}' does not exist or one of its queried reference-property objects are not present."),
                    now,
                );
            };
            let licenses: Vec<Value> = u
                .sku_ids
                .iter()
                .map(|s| json!({"disabledPlans": [], "skuId": s}))
                .collect();
            let plans: Vec<Value> = u
                .assigned_plans
                .iter()
                .map(|p| {
                    json!({
                        "assignedDateTime": iso(now - 86_400 * 30),
                        "capabilityStatus": p.capability_status,
                        "service": p.service,
                        "servicePlanId": p.service_plan_id,
                    })
                })
                .collect();
            Reply::json(
                200,
                json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(assignedLicenses,assignedPlans)/$entity",
                    "assignedLicenses": licenses,
                    "assignedPlans": plans,
                }),
            )
        }
        GraphApi::HealthOverviews | GraphApi::Issues => {
            if !has_role(claims, &["ServiceHealth.Read.All"]) {
                return denied();
            }
            let items: Vec<Value> = if api == GraphApi::HealthOverviews {
                st.graph
                    .services
                    .iter()
                    .map(|s| json!({"service": s.service, "status": s.status, "id": s.id}))
                    .collect()
            } else {
                let filter = param(&q, "$filter").map(str::to_string);
                let want = filter
                    .as_deref()
                    .and_then(|f| f.strip_prefix("service eq '"))
                    .and_then(|f| f.strip_suffix('\''))
                    .map(|s| s.replace("''", "'"));
                if filter.is_some() && want.is_none() {
                    return error(400, "BadRequest", "Invalid filter clause.", now);
                }
                st.graph
                    .issues
                    .iter()
                    .filter(|i| want.as_ref().is_none_or(|w| &i.service == w))
                    .map(|i| {
                        json!({
                            "startDateTime": iso(i.start),
                            "endDateTime": if i.is_resolved { Some(iso(i.start + 3600)) } else { None },
                            "lastModifiedDateTime": iso(i.start + 600),
                            "title": i.title,
                            "id": i.id,
                            "impactDescription": "Users may be unable to access their mailboxes.",
                            "classification": i.classification,
                            "origin": "microsoft",
                            "status": i.status,
                            "service": i.service,
                            "feature": "E-Mail access",
                            "featureGroup": i.feature_group,
                            "isResolved": i.is_resolved,
                            "highImpact": null,
                            "details": [],
                        })
                    })
                    .collect()
            };
            page(st, path, &q, items)
        }
        GraphApi::Any => denied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded_literally() {
        assert_eq!(
            crate::percent_decode("/v1.0/users/a%40b.test"),
            "/v1.0/users/a@b.test"
        );
        assert_eq!(
            crate::percent_decode("/v1.0/applications(appId=%27x%27)"),
            "/v1.0/applications(appId='x')"
        );
        assert_eq!(
            crate::percent_decode("/v1.0/users/a+b@x"),
            "/v1.0/users/a+b@x"
        );
    }

    #[test]
    fn process_config_shape_parses() {
        let yaml = r#"
applications:
  - app_id: 11111111-2222-3333-4444-555555555555
    password_credentials: [{ key_id: k1, hint: abc, start: 0, end: 1900000000 }]
users: [{ upn: alice@example.test, assigned_plans: [{ service: exchange, service_plan_id: p, capability_status: Enabled }] }]
services: [{ id: Exchange, service: Exchange Online, status: serviceOperational }]
issues: [{ id: EX1, service: Exchange Online, title: t, classification: incident, status: investigating }]
page_size: 1
failures: [{ api: users, status: 429, retry_after_secs: 30, times: 1 }]
"#;
        let g: FakeGraph = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(g.users[0].assigned_plans.len(), 1);
        assert_eq!(g.failures[0].api, GraphApi::Users);
        assert!(serde_yaml::from_str::<FakeGraph>("bogus: 1").is_err());
    }
}
