//! Injected failures: Microsoft's error answers by reason (o365-facts.md section 4) and hostile
//! answers no real identity provider should give (broken JSON, an HTML sign-in page with status
//! 200, a huge body, no answer at all), to prove a client bounds and classifies what it reads.
//!
//! An [`Injection`] applies to the token endpoint only, optionally only for one client id
//! and/or grant type, for the next `times` matching requests or until cleared. Injections are
//! checked before anything else in a request (even before the tenant), in the order added.

use serde::{Deserialize, Serialize};

use super::aad::{self, AadError};
use super::Reply;

fn twenty_mib() -> usize {
    20 * 1024 * 1024
}

/// A failure preset. In JSON (control API) the snake_case name and its parameter:
/// `{"failure": "throttled", "retry_after_secs": 60}`, `{"failure": "server_error", "status": 500}`,
/// `{"failure": "huge_body", "bytes": 1048576}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `invalid_client` AADSTS7000215, HTTP 401.
    InvalidClientSecret,
    /// `invalid_client` AADSTS7000222, HTTP 401.
    ClientSecretExpired,
    /// `invalid_grant` AADSTS700082 ("… inactive for 90.00:00:00.").
    RefreshTokenExpired,
    /// `invalid_grant` AADSTS50173.
    GrantRevoked,
    /// `invalid_grant` AADSTS65001, `suberror` `consent_required`.
    ConsentRequired,
    /// `interaction_required` AADSTS50076, `suberror` `basic_action`, `claims`.
    MfaRequired,
    /// `invalid_grant` AADSTS53003, `suberror` `message_only`, `claims`.
    ConditionalAccess,
    /// `unauthorized_client` AADSTS700016.
    AppNotFound,
    /// `invalid_request` AADSTS90002.
    TenantNotFound,
    /// HTTP 429 with `Retry-After`, `temporarily_unavailable` AADSTS90055.
    Throttled { retry_after_secs: u32 },
    /// `invalid_grant` AADSTS50196 (Microsoft's loop detection).
    LoopDetected,
    /// HTTP 500 `server_error` AADSTS50000, or 503 (and other 5xx) `temporarily_unavailable`
    /// AADSTS90033.
    ServerError { status: u16 },
    /// Status 200, `application/json`, a body cut off in the middle of the access token.
    MalformedJson,
    /// Status 200, `text/html`: a sign-in page, as a captive proxy or a wrong URL gives.
    HtmlLoginPage,
    /// Status 200, valid JSON of `bytes` bytes (default 20 MiB) with a huge `access_token`.
    HugeBody { bytes: usize },
    /// Accept the request and never answer (until the fake shuts down).
    Hang,
}

impl Failure {
    /// Every preset once, with default parameters (for tests that walk all of them).
    pub fn all() -> Vec<Failure> {
        vec![
            Failure::InvalidClientSecret,
            Failure::ClientSecretExpired,
            Failure::RefreshTokenExpired,
            Failure::GrantRevoked,
            Failure::ConsentRequired,
            Failure::MfaRequired,
            Failure::ConditionalAccess,
            Failure::AppNotFound,
            Failure::TenantNotFound,
            Failure::Throttled {
                retry_after_secs: 60,
            },
            Failure::LoopDetected,
            Failure::ServerError { status: 503 },
            Failure::MalformedJson,
            Failure::HtmlLoginPage,
            Failure::HugeBody {
                bytes: twenty_mib(),
            },
            Failure::Hang,
        ]
    }

    /// The snake_case name (the `failure` tag), used as the stats outcome of hostile answers.
    pub fn name(&self) -> &'static str {
        match self {
            Failure::InvalidClientSecret => "invalid_client_secret",
            Failure::ClientSecretExpired => "client_secret_expired",
            Failure::RefreshTokenExpired => "refresh_token_expired",
            Failure::GrantRevoked => "grant_revoked",
            Failure::ConsentRequired => "consent_required",
            Failure::MfaRequired => "mfa_required",
            Failure::ConditionalAccess => "conditional_access",
            Failure::AppNotFound => "app_not_found",
            Failure::TenantNotFound => "tenant_not_found",
            Failure::Throttled { .. } => "throttled",
            Failure::LoopDetected => "loop_detected",
            Failure::ServerError { .. } => "server_error",
            Failure::MalformedJson => "malformed_json",
            Failure::HtmlLoginPage => "html_login_page",
            Failure::HugeBody { .. } => "huge_body",
            Failure::Hang => "hang",
        }
    }

    /// The Microsoft error this preset answers, or `None` for the hostile ones.
    pub(crate) fn aad_error(&self, client_id: &str, tenant: &str, now: i64) -> Option<AadError> {
        Some(match self {
            Failure::InvalidClientSecret => aad::invalid_client_secret(client_id),
            Failure::ClientSecretExpired => aad::client_secret_expired(client_id),
            Failure::RefreshTokenExpired => aad::refresh_token_expired(
                now - 91 * 86_400,
                std::time::Duration::from_secs(90 * 86_400),
            ),
            Failure::GrantRevoked => aad::grant_revoked(now - 86_400, now - 3600),
            Failure::ConsentRequired => aad::consent_required(client_id, "the application"),
            Failure::MfaRequired => aad::mfa_required(),
            Failure::ConditionalAccess => aad::conditional_access(),
            Failure::AppNotFound => aad::app_not_found(client_id, tenant),
            Failure::TenantNotFound => aad::tenant_not_found(tenant),
            Failure::Throttled { retry_after_secs } => aad::throttled(*retry_after_secs),
            Failure::LoopDetected => aad::loop_detected(),
            Failure::ServerError { status } => aad::server_error(if (500..=599).contains(status) {
                *status
            } else {
                503
            }),
            Failure::MalformedJson
            | Failure::HtmlLoginPage
            | Failure::HugeBody { .. }
            | Failure::Hang => return None,
        })
    }

    /// The reply of a hostile preset (`None` for the Microsoft-shaped ones).
    pub(crate) fn hostile_reply(&self) -> Option<Reply> {
        Some(match self {
            Failure::MalformedJson => Reply::ok(
                "application/json; charset=utf-8",
                br#"{"token_type":"Bearer","scope":"https://outlook.office.com/IMAP.AccessAsUser.All","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJhdWQi"#.to_vec(),
            ),
            Failure::HtmlLoginPage => Reply::ok("text/html; charset=utf-8", LOGIN_PAGE.as_bytes().to_vec()),
            Failure::HugeBody { bytes } => Reply::ok("application/json; charset=utf-8", huge_body(*bytes)),
            Failure::Hang => Reply::Hang,
            _ => return None,
        })
    }
}

fn huge_body(bytes: usize) -> Vec<u8> {
    let head =
        br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":""#;
    let tail = br#""}"#;
    let fill = bytes.saturating_sub(head.len() + tail.len());
    let mut v = Vec::with_capacity(head.len() + fill + tail.len());
    v.extend_from_slice(head);
    v.resize(head.len() + fill, b'A');
    v.extend_from_slice(tail);
    v
}

const LOGIN_PAGE: &str = r#"<!DOCTYPE html>
<html dir="ltr" class="" lang="en">
<head>
    <title>Sign in to your account</title>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
    <meta name="viewport" content="width=device-width, initial-scale=1.0, maximum-scale=2.0, user-scalable=yes">
</head>
<body class="cb">
    <form name="f1" id="i0281" novalidate="novalidate" spellcheck="false" method="post" target="_top" autocomplete="off" action="/common/login">
        <div id="loginHeader" class="row title ext-title" role="heading" aria-level="1">Sign in</div>
        <input type="email" name="loginfmt" id="i0116" maxlength="113" class="form-control ltr_override input ext-input text-box ext-text-box" aria-required="true" placeholder="Email, phone, or Skype">
        <input type="submit" id="idSIButton9" class="win-button button_primary button ext-button primary ext-primary" value="Next">
    </form>
</body>
</html>
"#;

/// A failure to inject, with its filters and count. JSON (control API `POST /_fake/inject`):
/// `{"failure": "throttled", "retry_after_secs": 60, "client_id": "…", "grant_type":
/// "refresh_token", "times": 2}`; every field but `failure` is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawInjection", into = "RawInjection")]
pub struct Injection {
    pub failure: Failure,
    /// Only requests with this `client_id`.
    pub client_id: Option<String>,
    /// Only requests with this `grant_type` (e.g. `refresh_token`).
    pub grant_type: Option<String>,
    /// The next `times` matching requests; `None` = until cleared.
    pub times: Option<u32>,
}

/// The flat wire form of [`Injection`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInjection {
    failure: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u32>,
}

impl TryFrom<RawInjection> for Injection {
    type Error = String;

    fn try_from(r: RawInjection) -> Result<Self, String> {
        let param_ok = match r.failure.as_str() {
            "throttled" => r.status.is_none() && r.bytes.is_none(),
            "server_error" => r.retry_after_secs.is_none() && r.bytes.is_none(),
            "huge_body" => r.retry_after_secs.is_none() && r.status.is_none(),
            _ => r.retry_after_secs.is_none() && r.status.is_none() && r.bytes.is_none(),
        };
        if !param_ok {
            return Err(format!(
                "a parameter does not belong to failure '{}'",
                r.failure
            ));
        }
        let failure = match r.failure.as_str() {
            "throttled" => Failure::Throttled {
                retry_after_secs: r.retry_after_secs.unwrap_or(60),
            },
            "server_error" => {
                let status = r.status.unwrap_or(503);
                if !(500..=599).contains(&status) {
                    return Err(format!("server_error status {status} is not 5xx"));
                }
                Failure::ServerError { status }
            }
            "huge_body" => Failure::HugeBody {
                bytes: r.bytes.unwrap_or_else(twenty_mib),
            },
            name => Failure::all()
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| format!("unknown failure '{name}'"))?,
        };
        Ok(Injection {
            failure,
            client_id: r.client_id,
            grant_type: r.grant_type,
            times: r.times,
        })
    }
}

impl From<Injection> for RawInjection {
    fn from(i: Injection) -> Self {
        let (mut retry_after_secs, mut status, mut bytes) = (None, None, None);
        match i.failure {
            Failure::Throttled {
                retry_after_secs: s,
            } => retry_after_secs = Some(s),
            Failure::ServerError { status: s } => status = Some(s),
            Failure::HugeBody { bytes: b } => bytes = Some(b),
            _ => {}
        }
        RawInjection {
            failure: i.failure.name().to_string(),
            retry_after_secs,
            status,
            bytes,
            client_id: i.client_id,
            grant_type: i.grant_type,
            times: i.times,
        }
    }
}

impl Injection {
    /// One matching request fails, then the fake behaves normally again.
    pub fn once(failure: Failure) -> Self {
        Injection::times(failure, 1)
    }

    /// The next `n` matching requests fail.
    pub fn times(failure: Failure, n: u32) -> Self {
        Injection {
            failure,
            client_id: None,
            grant_type: None,
            times: Some(n),
        }
    }

    /// Every matching request fails until [`super::FakeIdpHandle::clear_injections`].
    pub fn always(failure: Failure) -> Self {
        Injection {
            failure,
            client_id: None,
            grant_type: None,
            times: None,
        }
    }

    pub fn for_client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_string());
        self
    }

    pub fn for_grant(mut self, grant_type: &str) -> Self {
        self.grant_type = Some(grant_type.to_string());
        self
    }

    pub(crate) fn matches(&self, client_id: &str, grant_type: &str) -> bool {
        self.times != Some(0)
            && self.client_id.as_deref().is_none_or(|c| c == client_id)
            && self.grant_type.as_deref().is_none_or(|g| g == grant_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_json_round_trips() {
        let j = r#"{"failure":"throttled","retry_after_secs":7,"client_id":"c","times":2}"#;
        let i: Injection = serde_json::from_str(j).expect("parse");
        assert_eq!(
            i,
            Injection::times(
                Failure::Throttled {
                    retry_after_secs: 7
                },
                2
            )
            .for_client("c")
        );
        let i: Injection = serde_json::from_str(r#"{"failure":"hang"}"#).expect("parse");
        assert_eq!(i, Injection::always(Failure::Hang));
        let i: Injection = serde_json::from_str(r#"{"failure":"server_error"}"#).expect("parse");
        assert_eq!(i.failure, Failure::ServerError { status: 503 });
        assert!(serde_json::from_str::<Injection>(r#"{"failure":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Injection>(r#"{"failure":"hang","status":500}"#).is_err());
        assert!(serde_json::from_str::<Injection>(r#"{"failure":"hang","x":1}"#).is_err());
        let back = serde_json::to_string(&Injection::once(Failure::ServerError { status: 500 }))
            .expect("serialize");
        assert_eq!(back, r#"{"failure":"server_error","status":500,"times":1}"#);
    }

    #[test]
    fn every_preset_is_either_microsoft_or_hostile() {
        for f in Failure::all() {
            let aad = f.aad_error("c", "t", 0).is_some();
            let hostile = f.hostile_reply().is_some();
            assert!(aad ^ hostile, "{}", f.name());
        }
    }

    #[test]
    fn huge_body_is_valid_json_of_the_requested_size() {
        let b = huge_body(4096);
        assert_eq!(b.len(), 4096);
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["token_type"], "Bearer");
    }
}
