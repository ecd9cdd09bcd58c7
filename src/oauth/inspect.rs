//! Best-effort look inside an access token (or id_token): who it belongs to, which scopes or
//! roles it carries, and for which audience.
//!
//! Microsoft asks clients to treat tokens for its APIs as opaque (o365-facts.md section 5): they
//! may not be JWTs (personal accounts get `EwB…` tokens) and their signatures cannot be checked by
//! third parties. So nothing here validates anything or fails: a token that does not decode yields
//! "unknown", never an error. What it does catch is the common set-up mistakes: a token for the
//! wrong person (single sign-on signed in the admin), a Graph-audience token (wrong scope URL), a
//! missing `IMAP.AccessAsApp` role. The token itself is never logged or returned.

use base64::Engine;
use serde_json::Value;

use crate::config::{Credential, GrantKind};
use crate::probe::Protocol;

/// Longest token decoded; real ones are 1.5-4 kB.
const MAX_TOKEN: usize = 32 * 1024;

/// Audiences of Microsoft Graph: a token for these cannot log in to IMAP/POP/SMTP.
const GRAPH_AUDIENCES: &[&str] = &[
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// The claims a monitor looks at. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// `upn`, else `unique_name`, else `preferred_username`.
    pub identity: Option<String>,
    pub aud: Option<String>,
    pub tid: Option<String>,
    /// Delegated permissions (`scp`, space-separated).
    pub scp: Vec<String>,
    /// App permissions (`roles`).
    pub roles: Vec<String>,
    pub exp: Option<i64>,
}

/// Decode the payload of a JWT without checking anything; None when it is not a JWT.
pub fn claims(token: &str) -> Option<Claims> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let obj = v.as_object()?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let identity = s("upn")
        .or_else(|| s("unique_name"))
        .or_else(|| s("preferred_username"));
    let aud = match obj.get("aud") {
        Some(Value::String(a)) => Some(a.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let scp = s("scp")
        .map(|x| x.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let roles = obj
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(Claims {
        identity,
        aud,
        tid: s("tid"),
        scp,
        roles,
        exp: obj.get("exp").and_then(Value::as_i64),
    })
}

/// The permission `protocol` needs in a token of `grant` (o365-facts.md 3.1, 3.2).
pub fn needed(grant: GrantKind, protocol: Protocol) -> &'static str {
    match (grant, protocol) {
        (GrantKind::RefreshToken, Protocol::Imap) => "IMAP.AccessAsUser.All",
        (GrantKind::RefreshToken, Protocol::Pop3) => "POP.AccessAsUser.All",
        (GrantKind::RefreshToken, Protocol::Smtp) => "SMTP.Send",
        (GrantKind::ClientCredentials, Protocol::Imap) => "IMAP.AccessAsApp",
        (GrantKind::ClientCredentials, Protocol::Pop3) => "POP.AccessAsApp",
        (GrantKind::ClientCredentials, Protocol::Smtp) => "SMTP.SendAsApp",
    }
}

/// Name of the pseudo-scope entry that says whether the audience is Exchange (not Graph).
pub const AUDIENCE_ENTRY: &str = "aud:exchange";

/// What the token tells about the credential's expectations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    pub identity_seen: Option<String>,
    /// None when unknown (opaque token, no identity claim, or nothing expected).
    pub identity_match: Option<bool>,
    /// Needed permission -> present, plus [`AUDIENCE_ENTRY`] when the audience is known.
    pub scopes: Vec<(String, bool)>,
    /// Whether the token decoded at all.
    pub decoded: bool,
}

impl Inspection {
    /// Needed permissions that are missing, for the detail sentence.
    pub fn missing(&self) -> Vec<&str> {
        self.scopes
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(s, _)| s.as_str())
            .collect()
    }
}

/// Whether `seen` is `expected`: UPNs compare case-insensitively (Entra treats them so).
pub fn same_identity(seen: &str, expected: &str) -> bool {
    seen.trim().eq_ignore_ascii_case(expected.trim())
}

/// Inspect `access_token` for `cred`. `response_scopes` is the token response's `scope`, used for
/// delegated permissions when the token is opaque. `id_token`, when present, names the user
/// more reliably than a v1 access token.
pub fn inspect(
    cred: &Credential,
    access_token: &str,
    id_token: Option<&str>,
    response_scopes: &[String],
) -> Inspection {
    let at = claims(access_token);
    let id = id_token.and_then(claims);
    let identity_seen = match cred.grant {
        GrantKind::RefreshToken => id
            .as_ref()
            .and_then(|c| c.identity.clone())
            .or_else(|| at.as_ref().and_then(|c| c.identity.clone())),
        // an app-only token has no user
        GrantKind::ClientCredentials => None,
    };
    let identity_match = match (&identity_seen, &cred.expected_identity) {
        (Some(seen), Some(exp)) => Some(same_identity(seen, exp)),
        _ => None,
    };
    let mut scopes = Vec::new();
    let granted: Option<Vec<String>> = match (&at, cred.grant) {
        (Some(c), GrantKind::ClientCredentials) => Some(c.roles.clone()),
        (Some(c), GrantKind::RefreshToken) => Some(c.scp.clone()),
        // the response's `scope` lists delegated permissions as full URLs
        (None, GrantKind::RefreshToken) if !response_scopes.is_empty() => Some(
            response_scopes
                .iter()
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                .collect(),
        ),
        _ => None,
    };
    if let Some(granted) = granted {
        for p in &cred.protocols {
            let need = needed(cred.grant, *p);
            let has = granted.iter().any(|g| g.eq_ignore_ascii_case(need));
            scopes.push((need.to_string(), has));
        }
    }
    if let Some(aud) = at.as_ref().and_then(|c| c.aud.as_deref()) {
        let graph = GRAPH_AUDIENCES
            .iter()
            .any(|g| aud.trim_end_matches('/').eq_ignore_ascii_case(g));
        scopes.push((AUDIENCE_ENTRY.to_string(), !graph));
    }
    Inspection {
        identity_seen,
        identity_match,
        scopes,
        decoded: at.is_some(),
    }
}

/// Build an unsigned JWT-shaped token carrying `claims` (tests and the fake identity platform).
pub fn unsigned_jwt(claims: &Value) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2ln",
        e.encode(br#"{"typ":"JWT","alg":"RS256"}"#),
        e.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cred(grant: GrantKind, expected: Option<&str>, protocols: &[Protocol]) -> Credential {
        let cfg = crate::config::load_str(
            "credentials:\n  - name: c\n    tenant: contoso.example\n    client_id: app\n    grant: refresh_token\n",
            "t",
            std::path::Path::new("."),
        )
        .expect("valid");
        let mut c = cfg.credentials[0].clone();
        c.grant = grant;
        c.expected_identity = expected.map(str::to_string);
        c.protocols = protocols.to_vec();
        c
    }

    #[test]
    fn delegated_token_identity_and_scopes() {
        let c = cred(
            GrantKind::RefreshToken,
            Some("Support@Contoso.example"),
            &[Protocol::Imap, Protocol::Smtp],
        );
        let at = unsigned_jwt(&json!({
            "aud": "https://outlook.office.com", "upn": "support@contoso.example",
            "scp": "IMAP.AccessAsUser.All POP.AccessAsUser.All"
        }));
        let i = inspect(&c, &at, None, &[]);
        assert_eq!(i.identity_match, Some(true));
        assert_eq!(
            i.scopes,
            vec![
                ("IMAP.AccessAsUser.All".to_string(), true),
                ("SMTP.Send".to_string(), false),
                (AUDIENCE_ENTRY.to_string(), true),
            ]
        );
        assert_eq!(i.missing(), vec!["SMTP.Send"]);
        // the id_token's preferred_username wins over the access token
        let id = unsigned_jwt(&json!({"preferred_username": "admin@contoso.example"}));
        let i = inspect(&c, &at, Some(&id), &[]);
        assert_eq!(i.identity_seen.as_deref(), Some("admin@contoso.example"));
        assert_eq!(i.identity_match, Some(false));
    }

    #[test]
    fn app_token_roles_and_graph_audience() {
        let c = cred(GrantKind::ClientCredentials, None, &[Protocol::Pop3]);
        let at = unsigned_jwt(&json!({
            "aud": "00000003-0000-0000-c000-000000000000", "roles": ["IMAP.AccessAsApp"],
            "upn": "ignored@x"
        }));
        let i = inspect(&c, &at, None, &[]);
        assert_eq!(i.identity_seen, None);
        assert_eq!(i.identity_match, None);
        assert_eq!(
            i.scopes,
            vec![
                ("POP.AccessAsApp".to_string(), false),
                (AUDIENCE_ENTRY.to_string(), false)
            ]
        );
    }

    #[test]
    fn opaque_tokens_are_unknown_not_errors() {
        let c = cred(GrantKind::RefreshToken, Some("a@b"), &[Protocol::Imap]);
        for t in ["EwBopaque", "a.b", "a.!!!.c", "x.eyJhIjoxfQ", "", "...."] {
            let i = inspect(&c, t, None, &[]);
            assert!(!i.decoded, "{t}");
            assert_eq!(i.identity_match, None);
            assert!(i.scopes.is_empty());
        }
        // delegated: the response's scope list still tells
        let i = inspect(
            &c,
            "EwBopaque",
            None,
            &["https://outlook.office.com/IMAP.AccessAsUser.All".to_string()],
        );
        assert_eq!(i.scopes, vec![("IMAP.AccessAsUser.All".to_string(), true)]);
        assert!(claims(&"a".repeat(MAX_TOKEN + 1)).is_none());
    }

    #[test]
    fn unique_name_and_array_audience() {
        let t = unsigned_jwt(
            &json!({"unique_name": "u@x", "aud": ["https://outlook.office365.com"], "exp": 5}),
        );
        let c = claims(&t).unwrap();
        assert_eq!(c.identity.as_deref(), Some("u@x"));
        assert_eq!(c.aud.as_deref(), Some("https://outlook.office365.com"));
        assert_eq!(c.exp, Some(5));
    }
}
