//! One token request, for any grant, on the `oauth2` crate: builds the client (secret, signed
//! assertion or public client), sends through [`Exchange`], and turns oauth2's result into a
//! [`Fetched`] token or a classified [`Failure`].
//!
//! oauth2's standard response and error types are replaced by Microsoft-shaped ones: the token
//! response parses `expires_in` leniently (some clouds send a string, o365-facts.md 3.3) and keeps
//! `id_token`; the error keeps `error_codes`, `trace_id` and `correlation_id` ([`MsError`]).
//! Failure messages are built from the status, the content type and the error code only: no
//! response body, no serde message (which can quote values), nothing a secret could hide in.

use std::time::Duration;

use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use super::assertion::{self, Alg};
use super::error::{classify, clean_token, MsError, TokenReason};
use super::http::{Exchange, HttpClient, Meta};
use crate::config::{ClientAuth, Credential};

/// `token_type` as sent (Microsoft: `Bearer`); kept as text so an odd case cannot fail parsing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct MsTokenType(pub String);
impl oauth2::TokenType for MsTokenType {}

fn bearer() -> MsTokenType {
    MsTokenType("Bearer".to_string())
}

/// Microsoft's token response (o365-facts.md 3.3).
#[derive(Debug, Deserialize, Serialize)]
pub struct MsTokenResponse {
    access_token: oauth2::AccessToken,
    #[serde(default = "bearer")]
    token_type: MsTokenType,
    #[serde(default, deserialize_with = "lenient_secs")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(rename = "scope", default, deserialize_with = "space_list")]
    scopes: Option<Vec<Scope>>,
    #[serde(default)]
    id_token: Option<oauth2::AccessToken>,
}

fn lenient_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

fn space_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| {
        s.split_whitespace()
            .map(|x| Scope::new(x.to_string()))
            .collect()
    }))
}

impl TokenResponse for MsTokenResponse {
    type TokenType = MsTokenType;
    fn access_token(&self) -> &oauth2::AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &MsTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

/// The oauth2 client with Microsoft's response and error types and a token URL.
pub type MsClient<HasAuthUrl = EndpointNotSet> = oauth2::Client<
    MsError,
    MsTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Lifetime assumed when a response has no `expires_in` (Microsoft always sends one).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A token obtained.
pub struct Fetched {
    pub access_token: SecretString,
    pub expires_in: Duration,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub scopes: Vec<String>,
    pub duration: Duration,
}

/// A token request that failed, classified.
#[derive(Clone, Debug)]
pub struct Failure {
    pub reason: TokenReason,
    /// One secret-free sentence.
    pub message: String,
    pub retry_after: Option<Duration>,
    /// How long the request took; None when no request was sent.
    pub duration: Option<Duration>,
}

impl Failure {
    pub fn local(reason: TokenReason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
            duration: None,
        }
    }
}

/// Which grant to redeem.
pub enum Grant<'a> {
    ClientCredentials,
    Refresh(&'a SecretString),
    Code {
        code: String,
        verifier: PkceCodeVerifier,
        redirect_uri: String,
    },
}

/// Parse a successful token response that did not come through oauth2 (the device-code poll).
pub fn parse_success(body: &[u8], duration: Duration) -> Result<Fetched, String> {
    let tr: MsTokenResponse = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the token endpoint's answer is not a token response (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    Ok(fetched(tr, duration))
}

fn fetched(tr: MsTokenResponse, duration: Duration) -> Fetched {
    Fetched {
        access_token: SecretString::from(tr.access_token.secret().to_string()),
        expires_in: tr.expires_in().unwrap_or(DEFAULT_LIFETIME),
        refresh_token: tr
            .refresh_token
            .as_ref()
            .map(|r| SecretString::from(r.secret().to_string())),
        id_token: tr
            .id_token
            .as_ref()
            .map(|t| SecretString::from(t.secret().to_string())),
        scopes: tr
            .scopes
            .as_ref()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        duration,
    }
}

/// The oauth2 client for `cred` (token URL set, client id in the body as Microsoft expects).
pub fn client(cred: &Credential) -> Result<MsClient, Failure> {
    let url = TokenUrl::new(cred.token_url.clone()).map_err(|_| {
        Failure::local(
            TokenReason::ConfigError,
            format!("the token URL {:?} is not a valid URL", cred.token_url),
        )
    })?;
    let mut c = oauth2::Client::<
        MsError,
        MsTokenResponse,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >::new(ClientId::new(cred.client_id.clone()))
    .set_token_uri(url)
    .set_auth_type(AuthType::RequestBody);
    if let ClientAuth::Secret(s) = &cred.client_auth {
        c = c.set_client_secret(ClientSecret::new(s.expose_secret().to_string()));
    }
    Ok(c)
}

/// The signed assertion for a certificate credential; None for others.
fn assertion_for(cred: &Credential, alg: Alg) -> Result<Option<String>, Failure> {
    match &cred.client_auth {
        ClientAuth::Certificate { cert_der, key_der } => assertion::build(
            alg,
            &cred.client_id,
            &cred.token_url,
            cert_der,
            &key_der.0,
            std::time::SystemTime::now(),
        )
        .map(Some)
        .map_err(|e| Failure::local(TokenReason::ConfigError, e.to_string())),
        _ => Ok(None),
    }
}

/// Redeem `grant` for `scopes` at `cred`'s token endpoint.
pub async fn request(
    http: &HttpClient,
    cred: &Credential,
    grant: Grant<'_>,
    scopes: &[String],
    alg: Alg,
) -> Result<Fetched, Failure> {
    let client = client(cred)?;
    let assertion = assertion_for(cred, alg)?;
    let extra: Vec<(&str, String)> = match &assertion {
        Some(a) => vec![
            (
                "client_assertion_type",
                assertion::ASSERTION_TYPE.to_string(),
            ),
            ("client_assertion", a.clone()),
        ],
        None => Vec::new(),
    };
    // what this request sends that must never come back out (a proxy may echo the body)
    let mut sent: Vec<String> = assertion.iter().cloned().collect();
    if let ClientAuth::Secret(s) = &cred.client_auth {
        sent.push(s.expose_secret().to_string());
    }
    match &grant {
        Grant::Refresh(rt) => sent.push(rt.expose_secret().to_string()),
        Grant::Code { code, .. } => sent.push(code.clone()),
        Grant::ClientCredentials => {}
    }
    let scopes: Vec<Scope> = scopes.iter().map(|s| Scope::new(s.clone())).collect();
    let ex = Exchange::new(http);
    let started = Instant::now();
    let result = match grant {
        Grant::ClientCredentials => {
            let mut r = client.exchange_client_credentials().add_scopes(scopes);
            for (k, v) in extra {
                r = r.add_extra_param(k, v);
            }
            r.request_async(&ex).await
        }
        Grant::Refresh(rt) => {
            let rt = RefreshToken::new(rt.expose_secret().to_string());
            let mut r = client.exchange_refresh_token(&rt).add_scopes(scopes);
            for (k, v) in extra {
                r = r.add_extra_param(k, v);
            }
            r.request_async(&ex).await
        }
        Grant::Code {
            code,
            verifier,
            redirect_uri,
        } => {
            let redirect = RedirectUrl::new(redirect_uri.clone()).map_err(|_| {
                Failure::local(
                    TokenReason::ConfigError,
                    format!("the redirect URI {redirect_uri:?} is not a valid URL"),
                )
            })?;
            let mut r = client
                .exchange_code(AuthorizationCode::new(code))
                .set_pkce_verifier(verifier)
                .set_redirect_uri(std::borrow::Cow::Owned(redirect));
            for (k, v) in extra {
                r = r.add_extra_param(k, v);
            }
            r.request_async(&ex).await
        }
    };
    let duration = started.elapsed();
    let meta = ex.meta();
    let uses_cert = matches!(cred.client_auth, ClientAuth::Certificate { .. });
    match result {
        Ok(tr) => Ok(fetched(tr, duration)),
        Err(e) => {
            let mut f = failure(&cred.name, e, meta, duration, uses_cert, &sent);
            f.message = scrub(&f.message, &sent);
            Err(f)
        }
    }
}

/// `text` with every occurrence of a `secrets` value replaced.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "[REDACTED]");
    }
    out
}

fn failure(
    credential: &str,
    e: RequestTokenError<super::http::HttpError, MsError>,
    meta: Option<Meta>,
    duration: Duration,
    uses_cert: bool,
    sent: &[String],
) -> Failure {
    let m = meta.clone().unwrap_or_default();
    let retry_after = m.retry_after;
    let what = |m: &Meta| {
        format!(
            "HTTP {} with {} ({} bytes)",
            m.status,
            m.content_type.as_deref().unwrap_or("no content type"),
            m.body_len
        )
    };
    let (reason, message) = match e {
        RequestTokenError::ServerResponse(mut err) => {
            let reason = classify(m.status, Some(&err), uses_cert);
            // after classifying: server text is scrubbed of what we sent before any other use
            for field in [
                Some(&mut err.error),
                err.error_description.as_mut(),
                err.trace_id.as_mut(),
                err.correlation_id.as_mut(),
                err.timestamp.as_mut(),
                err.suberror.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                *field = scrub(field, sent);
            }
            let first_line: String = err
                .error_description
                .as_deref()
                .and_then(|d| d.lines().next())
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            let description = first_line;
            let id = |v: &Option<String>| clean_token(v.as_deref().unwrap_or(""));
            tracing::warn!(
                credential,
                reason = reason.as_str(),
                status = m.status,
                error = %clean_token(&err.error),
                error_codes = ?err.error_codes,
                suberror = %id(&err.suberror),
                trace_id = %id(&err.trace_id),
                correlation_id = %id(&err.correlation_id),
                timestamp = %id(&err.timestamp),
                description = %description,
                "token request refused"
            );
            (
                reason,
                format!(
                    "the token endpoint answered HTTP {}: {err}; {}",
                    m.status,
                    reason.fix()
                ),
            )
        }
        RequestTokenError::Request(h) => (h.reason(), format!("token request failed: {h}")),
        RequestTokenError::Parse(err, _) => {
            let reason = classify(m.status, None, uses_cert);
            let message = if m.status == 200 {
                format!(
                    "the token endpoint answered {} that is not a token response (at `{}`)",
                    what(&m),
                    err.path()
                )
            } else {
                format!(
                    "the token endpoint answered {} that is not an OAuth error",
                    what(&m)
                )
            };
            (reason, message)
        }
        RequestTokenError::Other(_) => {
            let reason = match meta {
                Some(_) => classify(m.status, None, uses_cert),
                None => TokenReason::Other,
            };
            (
                reason,
                format!(
                    "the token endpoint answered {}, not a JSON token response",
                    what(&m)
                ),
            )
        }
    };
    Failure {
        reason,
        message,
        retry_after,
        duration: Some(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_is_lenient() {
        let r: MsTokenResponse = serde_json::from_str(
            r#"{"access_token":"a","token_type":"bearer","expires_in":"3599","ext_expires_in":3599,"scope":"x y"}"#,
        )
        .unwrap();
        assert_eq!(r.expires_in(), Some(Duration::from_secs(3599)));
        assert_eq!(r.scopes().map(Vec::len), Some(2));
        let r: MsTokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.token_type(), &bearer());
        assert_eq!(r.expires_in(), None);
        assert!(format!("{r:?}").contains("redacted"));
    }
}
