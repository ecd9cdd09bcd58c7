//! Microsoft Graph's JSON as the checks read it (o365-facts.md section 8), and the pure rules
//! that turn it into bounded facts: which Exchange plan state a user is in, which service status
//! and issue classification a string is, which of the app's credentials is the one configured.
//!
//! Every field is optional and unknown fields are ignored: Graph adds properties over time and a
//! monitor must not break on them. Enum-like strings from Microsoft are mapped onto closed sets
//! here (unknown values to a catch-all), so they can become metric labels.

use serde::Deserialize;

/// One page of a collection: `value` plus `@odata.nextLink` when more pages follow.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
}

/// `GET /v1.0/applications(appId='{appId}')?$select=id,appId,displayName,passwordCredentials,keyCredentials`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub password_credentials: Option<Vec<PasswordCredential>>,
    #[serde(default)]
    pub key_credentials: Option<Vec<KeyCredential>>,
}

/// A client secret. `hint` is the secret's first three characters; `secretText` is never
/// returned after creation (facts 8).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredential {
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub hint: Option<String>,
    #[serde(default)]
    pub start_date_time: Option<String>,
    #[serde(default)]
    pub end_date_time: Option<String>,
}

/// A certificate (or other key). `customKeyIdentifier` defaults to the certificate's
/// thumbprint (Graph keyCredential resource type).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCredential {
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub usage: Option<String>,
    #[serde(default)]
    pub custom_key_identifier: Option<String>,
    #[serde(default)]
    pub start_date_time: Option<String>,
    #[serde(default)]
    pub end_date_time: Option<String>,
}

/// `GET /v1.0/users/{upn}?$select=assignedLicenses,assignedPlans`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub assigned_licenses: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub assigned_plans: Option<Vec<AssignedPlan>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedPlan {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub service_plan_id: Option<String>,
    #[serde(default)]
    pub capability_status: Option<String>,
}

/// An entry of `GET /v1.0/admin/serviceAnnouncement/healthOverviews`.
#[derive(Debug, Default, Deserialize)]
pub struct HealthOverview {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// An entry of `GET /v1.0/admin/serviceAnnouncement/issues`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub is_resolved: Option<bool>,
    #[serde(default)]
    pub feature_group: Option<String>,
    #[serde(default)]
    pub start_date_time: Option<String>,
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {"request-id", ...}}}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(rename = "innerError", default)]
    pub inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InnerError {
    #[serde(rename = "request-id", default)]
    pub request_id: Option<String>,
}

/// `s` reduced to characters safe in a label or a log line (`[A-Za-z0-9._-]`), at most `max`.
pub fn token_chars(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(max)
        .collect()
}

/// Free text from Microsoft (titles, display names) for the status page and logs: control
/// characters dropped, at most `max` characters.
pub fn display_text(s: &str, max: usize) -> String {
    let t: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    t.trim().to_string()
}

/// Graph's `DateTimeOffset` (`2027-01-31T12:00:00Z`, often with up to 7 fractional digits) to
/// Unix seconds. Offsets other than `Z`/`+00:00` are not used by Graph and give None.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let base = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    // humantime takes at most 9 fractional digits and no offset
    let (main, frac) = match base.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (base, None),
    };
    if frac.is_some_and(|f| f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(main).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// What the app-credentials check labels a key with: `password` (client secret), `certificate`
/// (`AsymmetricX509Cert`) or `key` (any other keyCredential type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyKind {
    Password,
    Certificate,
    Key,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Password => "password",
            KeyKind::Certificate => "certificate",
            KeyKind::Key => "key",
        }
    }

    pub fn of_key_type(t: Option<&str>) -> KeyKind {
        match t {
            Some(t) if t.eq_ignore_ascii_case("AsymmetricX509Cert") => KeyKind::Certificate,
            _ => KeyKind::Key,
        }
    }
}

/// Whether a password credential's `hint` (first three characters) fits the configured secret.
/// A secret shorter than three characters cannot be matched.
pub fn hint_matches(hint: Option<&str>, secret: &str) -> bool {
    let Some(h) = hint else { return false };
    let prefix: String = secret.chars().take(3).collect();
    prefix.chars().count() == 3 && h == prefix
}

/// Whether a key credential's `customKeyIdentifier` names the certificate with SHA-1
/// thumbprint `sha1`. Graph sends Binary as base64; depending on how the certificate was
/// uploaded it holds the 20 thumbprint bytes or the 40 hex characters, so both are accepted,
/// as is plain hex.
pub fn thumbprint_matches(custom_key_identifier: Option<&str>, sha1: &[u8]) -> bool {
    use base64::Engine;
    let Some(id) = custom_key_identifier.map(str::trim) else {
        return false;
    };
    let hex: String = sha1.iter().map(|b| format!("{b:02x}")).collect();
    if id.eq_ignore_ascii_case(&hex) {
        return true;
    }
    match base64::engine::general_purpose::STANDARD.decode(id) {
        Ok(raw) if raw == sha1 => true,
        Ok(raw) => std::str::from_utf8(&raw).is_ok_and(|t| t.trim().eq_ignore_ascii_case(&hex)),
        Err(_) => false,
    }
}

/// State of the Exchange plan among a user's assigned plans: Microsoft's `capabilityStatus`
/// (facts 8), `none` when no plan has service `exchange`, `other` for a value Microsoft adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlanStatus {
    Enabled,
    Warning,
    Suspended,
    LockedOut,
    Deleted,
    None,
    Other,
}

impl PlanStatus {
    pub const ALL: [PlanStatus; 7] = [
        PlanStatus::Enabled,
        PlanStatus::Warning,
        PlanStatus::Suspended,
        PlanStatus::LockedOut,
        PlanStatus::Deleted,
        PlanStatus::None,
        PlanStatus::Other,
    ];

    /// Label value: Microsoft's spelling, and `none`/`other` for the two added states.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Enabled => "Enabled",
            PlanStatus::Warning => "Warning",
            PlanStatus::Suspended => "Suspended",
            PlanStatus::LockedOut => "LockedOut",
            PlanStatus::Deleted => "Deleted",
            PlanStatus::None => "none",
            PlanStatus::Other => "other",
        }
    }

    fn parse(s: &str) -> PlanStatus {
        PlanStatus::ALL[..5]
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .unwrap_or(PlanStatus::Other)
    }

    /// Enabled, or Warning (the grace period after a subscription lapsed: mail still works).
    pub fn licensed(self) -> bool {
        matches!(self, PlanStatus::Enabled | PlanStatus::Warning)
    }
}

/// The best state among the user's Exchange plans (a user can hold several, e.g. a removed old
/// one `Deleted` next to the current `Enabled` one), and the plan ids seen.
pub fn exchange_plan(plans: &[AssignedPlan]) -> (PlanStatus, Vec<String>) {
    let mut best = PlanStatus::None;
    let mut ids = Vec::new();
    for p in plans {
        if !p
            .service
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("exchange"))
        {
            continue;
        }
        let st = PlanStatus::parse(p.capability_status.as_deref().unwrap_or(""));
        if let Some(id) = &p.service_plan_id {
            if ids.len() < 16 {
                ids.push(format!("{} ({})", token_chars(id, 40), st.as_str()));
            }
        }
        // Enabled < Warning < ... in declaration order: lower is better; None is worst
        if best == PlanStatus::None || st < best {
            best = st;
        }
    }
    (best, ids)
}

/// Service health status values (facts 8); unknown ones map to `unknownFutureValue`.
pub const SERVICE_STATUSES: &[&str] = &[
    "serviceOperational",
    "investigating",
    "restoringService",
    "verifyingService",
    "serviceRestored",
    "postIncidentReviewPublished",
    "serviceDegradation",
    "serviceInterruption",
    "extendedRecovery",
    "falsePositive",
    "investigationSuspended",
    "resolved",
    "mitigatedExternal",
    "mitigated",
    "resolvedExternal",
    "confirmed",
    "reported",
    "unknownFutureValue",
];

/// The label value of a service status string.
pub fn service_status(s: &str) -> &'static str {
    SERVICE_STATUSES
        .iter()
        .copied()
        .find(|x| x.eq_ignore_ascii_case(s.trim()))
        .unwrap_or("unknownFutureValue")
}

/// Issue classifications as labels: Graph's enum is `advisory`, `incident`,
/// `unknownFutureValue`; anything else is `other`.
pub const CLASSIFICATIONS: [&str; 2] = ["incident", "advisory"];

pub fn classification(s: Option<&str>) -> &'static str {
    match s.map(str::trim) {
        Some(c) if c.eq_ignore_ascii_case("incident") => "incident",
        Some(c) if c.eq_ignore_ascii_case("advisory") => "advisory",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_fractions_and_offsets() {
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86400));
        assert_eq!(parse_time("1970-01-02T00:00:00.1234567Z"), Some(86400));
        assert_eq!(parse_time("1970-01-02T00:00:00+00:00"), Some(86400));
        assert_eq!(parse_time("1970-01-02T00:00:00+02:00"), None);
        assert_eq!(parse_time("1970-01-02T00:00:00.Z"), None);
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn exchange_plan_prefers_the_best_state_and_ignores_other_services() {
        let plan = |svc: &str, st: &str| AssignedPlan {
            service: Some(svc.into()),
            service_plan_id: Some("9aaf7827-d63c-4b61-89c3-182f06f82e5c".into()),
            capability_status: Some(st.into()),
        };
        assert_eq!(exchange_plan(&[]).0, PlanStatus::None);
        assert_eq!(
            exchange_plan(&[plan("SharePoint", "Enabled")]).0,
            PlanStatus::None
        );
        let (st, ids) = exchange_plan(&[plan("exchange", "Deleted"), plan("exchange", "Enabled")]);
        assert_eq!(st, PlanStatus::Enabled);
        assert_eq!(ids.len(), 2);
        assert_eq!(
            exchange_plan(&[plan("exchange", "Suspended"), plan("exchange", "Warning")]).0,
            PlanStatus::Warning
        );
        assert_eq!(
            exchange_plan(&[plan("Exchange", "SomethingNew")]).0,
            PlanStatus::Other
        );
        assert!(PlanStatus::Warning.licensed());
        assert!(!PlanStatus::LockedOut.licensed() && !PlanStatus::None.licensed());
    }

    #[test]
    fn statuses_and_classifications_are_closed_sets() {
        assert_eq!(service_status("ServiceDegradation"), "serviceDegradation");
        assert_eq!(service_status("brandNew"), "unknownFutureValue");
        assert_eq!(classification(Some("Incident")), "incident");
        assert_eq!(classification(Some("advisory")), "advisory");
        assert_eq!(classification(None), "other");
    }

    #[test]
    fn hints_and_thumbprints_match_only_the_configured_credential() {
        assert!(hint_matches(Some("abc"), "abcdef"));
        assert!(!hint_matches(Some("abd"), "abcdef"));
        assert!(!hint_matches(Some("ab"), "ab"));
        assert!(!hint_matches(None, "abcdef"));
        use base64::Engine;
        let sha1: Vec<u8> = (0u8..20).collect();
        let hex: String = sha1.iter().map(|b| format!("{b:02X}")).collect();
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        assert!(thumbprint_matches(Some(&b64(&sha1)), &sha1));
        assert!(thumbprint_matches(Some(&b64(hex.as_bytes())), &sha1));
        assert!(thumbprint_matches(Some(&hex), &sha1));
        assert!(!thumbprint_matches(Some(&b64(&[1u8; 20])), &sha1));
        assert!(!thumbprint_matches(None, &sha1));
    }

    #[test]
    fn documented_shapes_parse() {
        let app: Application = serde_json::from_str(
            r#"{"@odata.context":"x","id":"o","appId":"a","displayName":"ECE",
            "passwordCredentials":[{"customKeyIdentifier":null,"displayName":"prod","endDateTime":"2027-01-31T12:00:00Z",
              "hint":"abc","keyId":"11111111-2222-3333-4444-555555555555","secretText":null,"startDateTime":"2025-01-31T12:00:00Z"}],
            "keyCredentials":[{"customKeyIdentifier":"AAEC","displayName":"CN=ece","endDateTime":"2027-01-31T12:00:00Z",
              "key":null,"keyId":"k","startDateTime":"2025-01-31T12:00:00Z","type":"AsymmetricX509Cert","usage":"Verify"}]}"#,
        )
        .expect("parses");
        assert_eq!(app.password_credentials.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            KeyKind::of_key_type(app.key_credentials.as_ref().unwrap()[0].kind.as_deref()),
            KeyKind::Certificate
        );
        let page: Page<Issue> = serde_json::from_str(
            r#"{"value":[{"id":"EX1","title":"t","classification":"incident","status":"serviceDegradation","isResolved":false,"posts":[]}],
               "@odata.nextLink":"https://graph.microsoft.com/v1.0/admin/serviceAnnouncement/issues?$skiptoken=1"}"#,
        )
        .expect("parses");
        assert_eq!(page.value[0].is_resolved, Some(false));
        assert!(page.next_link.is_some());
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2026-01-01T00:00:00","request-id":"r-1","client-request-id":"c"}}}"#,
        )
        .expect("parses");
        let d = e.error.unwrap();
        assert_eq!(d.code.as_deref(), Some("Authorization_RequestDenied"));
        assert_eq!(d.inner_error.unwrap().request_id.as_deref(), Some("r-1"));
    }
}
