//! Microsoft's token-endpoint error bodies, and the catalogue of AADSTS errors the fake answers.
//!
//! Shape (o365-facts.md 3.7; the sample in Microsoft's error-code reference): `error`,
//! `error_description` = `AADSTSnnnn: text` followed by `\r\nTrace ID: …\r\nCorrelation ID: …
//! \r\nTimestamp: yyyy-mm-dd hh:mm:ssZ`, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`, `error_uri`, and for MFA / Conditional Access `suberror` and `claims`.
//! HTTP status 400, except 401 for `invalid_client`, 429 when throttled, 5xx for outages.
//! The texts follow Microsoft's wording where a public sample exists (facts sections 3–4, the
//! entra-docs error reference); they are informational only, as Microsoft says clients must
//! react on `error` (and may classify on `error_codes`), never on the text.

use serde::Serialize;

/// One error answer of the token (or device-code) endpoint.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AadError {
    pub status: u16,
    pub error: &'static str,
    /// `error_codes`; the first one also prefixes the description.
    pub codes: Vec<u32>,
    /// Description text after `AADSTSnnnn: `.
    pub text: String,
    pub suberror: Option<&'static str>,
    /// Carries Conditional Access `claims` (MFA and CA answers).
    pub claims: bool,
    pub retry_after: Option<u32>,
}

/// The `claims` challenge of CA/MFA answers; the policy id is a GUID at Microsoft, any serves.
const CA_CLAIMS: &str = r#"{"access_token":{"capolids":{"essential":true,"values":["6a9a3ba8-5d0b-4a41-9e2b-0c6d3b9e4e11"]}}}"#;

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: String,
    error_codes: &'a [u32],
    timestamp: &'a str,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a str>,
}

impl AadError {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        text: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            codes: vec![code],
            text: text.into(),
            suberror: None,
            claims: false,
            retry_after: None,
        }
    }

    pub(crate) fn code(&self) -> u32 {
        self.codes.first().copied().unwrap_or(0)
    }

    fn with_suberror(mut self, s: &'static str) -> Self {
        self.suberror = Some(s);
        self
    }

    fn with_claims(mut self) -> Self {
        self.claims = true;
        self
    }

    /// The JSON body, with fresh trace/correlation ids (the correlation id echoes the client's
    /// `client-request-id` header when it sent one, as Entra does).
    pub(crate) fn to_json(&self, now_unix: i64, correlation_id: Option<&str>) -> Vec<u8> {
        let trace_id = super::ids::uuid();
        let correlation_id = correlation_id
            .map(str::to_string)
            .unwrap_or_else(super::ids::uuid);
        let ts = super::clock::error_timestamp(now_unix);
        let body = Body {
            error: self.error,
            error_description: format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {ts}",
                self.code(),
                self.text
            ),
            error_codes: &self.codes,
            timestamp: &ts,
            trace_id: &trace_id,
            correlation_id: &correlation_id,
            error_uri: format!("https://login.microsoftonline.com/error?code={}", self.code()),
            suberror: self.suberror,
            claims: self.claims.then_some(CA_CLAIMS),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

// ---- request shape -------------------------------------------------------------------------

pub(crate) fn missing_parameter(name: &str) -> AadError {
    AadError::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

pub(crate) fn duplicated_parameter(name: &str) -> AadError {
    AadError::new(
        400,
        "invalid_request",
        9000411,
        format!("The request is not properly formatted. The parameter '{name}' is duplicated."),
    )
}

pub(crate) fn malformed_request() -> AadError {
    AadError::new(
        400,
        "invalid_request",
        9002313,
        "Invalid request. Request is malformed or invalid.",
    )
}

pub(crate) fn method_not_allowed(method: &str) -> AadError {
    AadError::new(
        400,
        "invalid_request",
        900561,
        format!("The endpoint only accepts POST, OPTIONS requests. Received a {method} request."),
    )
}

pub(crate) fn unsupported_grant_type(grant: &str) -> AadError {
    AadError::new(
        400,
        "unsupported_grant_type",
        70003,
        format!("The app requested an unsupported grant type '{grant}'."),
    )
}

pub(crate) fn grant_not_over_common() -> AadError {
    AadError::new(
        400,
        "invalid_request",
        9001023,
        "The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
    )
}

// ---- tenant and application ----------------------------------------------------------------

pub(crate) fn tenant_not_found(tenant: &str) -> AadError {
    AadError::new(
        400,
        "invalid_request",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

pub(crate) fn app_not_found(client_id: &str, tenant: &str) -> AadError {
    AadError::new(
        400,
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

// ---- client authentication -----------------------------------------------------------------

pub(crate) fn invalid_client_secret(client_id: &str) -> AadError {
    AadError::new(
        401,
        "invalid_client",
        7000215,
        format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
        ),
    )
}

pub(crate) fn client_secret_expired(client_id: &str) -> AadError {
    AadError::new(
        401,
        "invalid_client",
        7000222,
        format!(
            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
        ),
    )
}

pub(crate) fn credential_required() -> AadError {
    AadError::new(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

pub(crate) fn public_client_with_credential() -> AadError {
    AadError::new(
        401,
        "invalid_client",
        700025,
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    )
}

pub(crate) fn assertion_malformed(why: &str) -> AadError {
    AadError::new(
        401,
        "invalid_client",
        50027,
        format!("JWT token is invalid or malformed. {why}"),
    )
}

pub(crate) fn assertion_bad_signature(thumbprint: &str, client_id: &str) -> AadError {
    AadError::new(
        401,
        "invalid_client",
        700027,
        format!(
            "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
    )
}

pub(crate) fn assertion_signature_invalid(client_id: &str) -> AadError {
    AadError::new(
        401,
        "invalid_client",
        700027,
        format!("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., app Id '{client_id}']"),
    )
}

/// A real 2017 answer carried two codes: `AADSTS70002: Error validating credentials.
/// AADSTS50012: Client assertion audience claim does not match Realm issuer.` (401).
pub(crate) fn assertion_wrong_audience() -> AadError {
    let mut e = AadError::new(
        401,
        "invalid_client",
        70002,
        "Error validating credentials. AADSTS50012: Client assertion audience claim does not match Realm issuer.",
    );
    e.codes.push(50012);
    e
}

pub(crate) fn assertion_wrong_issuer() -> AadError {
    AadError::new(
        401,
        "invalid_client",
        700021,
        "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    )
}

pub(crate) fn assertion_subject_mismatch() -> AadError {
    AadError::new(
        401,
        "invalid_client",
        50048,
        "Subject mismatches Issuer claim in the client assertion.",
    )
}

pub(crate) fn assertion_time_range(now: i64, nbf: Option<i64>, exp: Option<i64>) -> AadError {
    let f = |t: Option<i64>| {
        t.map(super::clock::error_timestamp)
            .unwrap_or_else(|| "-".into())
    };
    AadError::new(
        401,
        "invalid_client",
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
            super::clock::error_timestamp(now),
            f(nbf),
            f(exp)
        ),
    )
}

// ---- scopes and consent --------------------------------------------------------------------

pub(crate) fn client_credentials_scope(scope: &str) -> AadError {
    AadError::new(
        400,
        "invalid_scope",
        1002012,
        format!(
            "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
        ),
    )
}

pub(crate) fn multiple_resources(scope: &str) -> AadError {
    AadError::new(
        400,
        "invalid_scope",
        700022,
        format!(
            "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
        ),
    )
}

pub(crate) fn consent_required(client_id: &str, app_name: &str) -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{client_id}' named '{app_name}'. Send an interactive authorization request for this user and resource."
        ),
    )
    .with_suberror("consent_required")
}

// ---- grants --------------------------------------------------------------------------------

pub(crate) fn refresh_token_expired(issued_unix: i64, inactive: std::time::Duration) -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        700082,
        format!(
            "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for {}.",
            super::clock::dotnet_timestamp(issued_unix),
            super::clock::timespan(inactive)
        ),
    )
}

pub(crate) fn grant_revoked(issued_unix: i64, valid_from_unix: i64) -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        50173,
        format!(
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
            super::clock::dotnet_timestamp(issued_unix),
            super::clock::dotnet_timestamp(valid_from_unix)
        ),
    )
}

/// Strict mode's answer to a refresh token that was already used. Microsoft does not revoke
/// used refresh tokens (facts 3.5), so there is no dedicated code; AADSTS70000 (InvalidGrant,
/// "the refresh token isn't valid") is the one a client classifies as "sign in again".
pub(crate) fn refresh_token_reused() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        70000,
        "The provided value for the 'refresh_token' is not valid. The refresh token was already redeemed (the fake IdP's strict rotation mode).",
    )
}

pub(crate) fn unknown_refresh_token() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        9002313,
        "Invalid request. Request is malformed or invalid.",
    )
}

pub(crate) fn token_of_other_client() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        70000,
        "The provided value for the input parameter is not valid: the grant was issued to a different client.",
    )
}

pub(crate) fn unknown_code() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        70000,
        "The provided value for the 'code' parameter is not valid.",
    )
}

pub(crate) fn code_redeemed() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
    )
}

pub(crate) fn code_expired() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
    )
}

pub(crate) fn redirect_mismatch(given: &str, expected: &str) -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        500112,
        format!(
            "The reply address '{given}' does not match the reply address '{expected}' provided when requesting Authorization code."
        ),
    )
}

pub(crate) fn pkce_mismatch() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        501481,
        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
    )
}

// ---- device code (o365-facts.md 3.6) -------------------------------------------------------

pub(crate) fn authorization_pending() -> AadError {
    AadError::new(
        400,
        "authorization_pending",
        70016,
        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    )
}

/// RFC 8628 3.5. Entra's device-code page does not list `slow_down`; the fake sends it with
/// the pending code so the body keeps Microsoft's shape.
pub(crate) fn slow_down() -> AadError {
    AadError::new(
        400,
        "slow_down",
        70016,
        "OAuth 2.0 device flow error. Polling too frequently: wait the interval plus 5 seconds before polling again (RFC 8628 section 3.5).",
    )
}

pub(crate) fn device_code_expired() -> AadError {
    AadError::new(400, "expired_token", 70019, "Verification code expired.")
}

pub(crate) fn device_code_declined() -> AadError {
    AadError::new(
        400,
        "authorization_declined",
        70000,
        "The user declined the authorization request.",
    )
}

pub(crate) fn bad_device_code() -> AadError {
    AadError::new(
        400,
        "bad_verification_code",
        70018,
        "Invalid verification code. The device code is unknown or was already redeemed.",
    )
}

// ---- injected failures (o365-facts.md section 4) --------------------------------------------

pub(crate) fn mfa_required() -> AadError {
    AadError::new(
        400,
        "interaction_required",
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'.",
    )
    .with_suberror("basic_action")
    .with_claims()
}

pub(crate) fn conditional_access() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
    )
    .with_suberror("message_only")
    .with_claims()
}

pub(crate) fn loop_detected() -> AadError {
    AadError::new(
        400,
        "invalid_grant",
        50196,
        "The server terminated an operation because it encountered a client request loop. Please contact your app vendor.",
    )
}

pub(crate) fn throttled(retry_after: u32) -> AadError {
    let mut e = AadError::new(
        429,
        "temporarily_unavailable",
        90055,
        "There are too many incoming requests. Please try again later.",
    );
    e.retry_after = Some(retry_after);
    e
}

pub(crate) fn server_error(status: u16) -> AadError {
    if status == 500 {
        AadError::new(
            500,
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        )
    } else {
        AadError::new(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_microsoft_shape() {
        let e = invalid_client_secret("abc");
        let v: serde_json::Value =
            serde_json::from_slice(&e.to_json(1_452_304_932, Some("corr-1"))).expect("json");
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(v["error_codes"], serde_json::json!([7000215]));
        assert_eq!(v["timestamp"], "2016-01-09 02:02:12Z");
        assert_eq!(v["correlation_id"], "corr-1");
        let d = v["error_description"].as_str().expect("description");
        assert!(d.starts_with("AADSTS7000215: Invalid client secret provided."));
        let trace = v["trace_id"].as_str().expect("trace id");
        assert!(d.contains(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: corr-1\r\nTimestamp: 2016-01-09 02:02:12Z"
        )));
        assert_eq!(
            v["error_uri"],
            "https://login.microsoftonline.com/error?code=7000215"
        );
        assert!(v.get("suberror").is_none() && v.get("claims").is_none());
    }

    #[test]
    fn mfa_carries_suberror_and_claims() {
        let v: serde_json::Value =
            serde_json::from_slice(&mfa_required().to_json(0, None)).expect("json");
        assert_eq!(v["error"], "interaction_required");
        assert_eq!(v["suberror"], "basic_action");
        assert!(v["claims"]
            .as_str()
            .expect("claims string")
            .contains("capolids"));
    }

    #[test]
    fn refresh_expiry_text_names_ninety_days() {
        let e = refresh_token_expired(0, std::time::Duration::from_secs(90 * 86_400));
        assert!(
            e.text.ends_with("was inactive for 90.00:00:00."),
            "{}",
            e.text
        );
    }
}
