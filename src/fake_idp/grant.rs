//! The protocol: the token endpoint's four grants, the device-code endpoint and the authorize
//! endpoint, as pure decisions on [`State`] (no I/O), each returning Microsoft's success JSON or
//! an [`AadError`].
//!
//! Faithful points (o365-facts.md section 3): client credentials need `{resource}/.default` and
//! never return a refresh token or `scope`; delegated grants return `scope`, a refresh token
//! only with `offline_access` and an id token only with `openid`; refresh tokens rotate on every
//! use and the old one stays valid (strict mode: a used one answers AADSTS70000; with the
//! grace, only once its successor has been used); authorization
//! codes are single-use (AADSTS54005) and bound to `redirect_uri` and the PKCE challenge; device
//! codes answer `authorization_pending` until approved and `expired_token` after `expires_in`.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::aad::{self, AadError};
use super::ids;
use super::jwt::{self, b64url};
use super::registry::{permission_name, App, User};
use super::state::{CodeRecord, DeviceRecord, DeviceState, RefreshRecord, State};

pub(crate) const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Exchange Online's delegated permissions: what a `.default` request gets when the app's
/// consent is "anything" (the fake's default).
const EXCHANGE_DELEGATED: [&str; 3] =
    ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"];

/// Form parameters of one request, refusing duplicates as Entra does (AADSTS9000411).
pub(crate) struct Params<'a>(pub &'a [(String, String)]);

impl Params<'_> {
    pub(crate) fn check_duplicates(&self) -> Result<(), AadError> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if self.0[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(aad::duplicated_parameter(k));
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, AadError> {
        self.get(name).ok_or_else(|| aad::missing_parameter(name))
    }
}

#[derive(Serialize)]
struct TokenResponse {
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// A delegated scope request, split.
#[derive(Clone, Debug)]
struct Scopes {
    resource: String,
    /// Permission names (after the resource), `.default` expanded later.
    perms: Vec<String>,
    default: bool,
    openid: bool,
    offline: bool,
}

fn parse_delegated(scope: &str) -> Result<Scopes, AadError> {
    let mut resource: Option<String> = None;
    let mut s = Scopes {
        resource: String::new(),
        perms: Vec::new(),
        default: false,
        openid: false,
        offline: false,
    };
    for item in scope.split_whitespace() {
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            s.openid |= lower == "openid";
            s.offline |= lower == "offline_access";
            continue;
        }
        // A bare permission name is a Microsoft Graph scope.
        let (res, perm) = item
            .rsplit_once('/')
            .map_or(("https://graph.microsoft.com", item), |(r, p)| (r, p));
        let res = res.trim_end_matches('/');
        match &resource {
            Some(r) if !r.eq_ignore_ascii_case(res) => return Err(aad::multiple_resources(scope)),
            Some(_) => {}
            None => resource = Some(res.to_string()),
        }
        if perm == ".default" {
            s.default = true;
        } else if !perm.is_empty() {
            s.perms.push(perm.to_string());
        }
    }
    s.resource = resource.unwrap_or_else(|| "https://graph.microsoft.com".to_string());
    Ok(s)
}

/// Permission names a delegated token gets, after the consent check (AADSTS65001).
fn granted_perms(app: &App, s: &Scopes) -> Result<Vec<String>, AadError> {
    if s.perms.iter().any(|p| !app.consented(p)) {
        return Err(aad::consent_required(&app.client_id, &app.name));
    }
    let mut perms = s.perms.clone();
    if s.default {
        let extra: Vec<String> = match &app.consented_scopes {
            Some(list) => list
                .iter()
                .map(|c| permission_name(c).to_string())
                .collect(),
            None => EXCHANGE_DELEGATED.iter().map(|p| p.to_string()).collect(),
        };
        for e in extra {
            if !perms.iter().any(|p| p.eq_ignore_ascii_case(&e)) {
                perms.push(e);
            }
        }
    }
    Ok(perms)
}

/// How the client proved itself: `appidacr` 0 (public), 1 (secret), 2 (certificate).
fn authenticate(
    st: &State,
    app: &App,
    p: &Params,
    audiences: &[String],
    public_ok: bool,
) -> Result<u8, AadError> {
    let secret = p.get("client_secret");
    let assertion = p.get("client_assertion");
    if (secret.is_some() || assertion.is_some()) && app.public_client && !app.is_confidential() {
        return Err(aad::public_client_with_credential());
    }
    if let Some(secret) = secret {
        return match app.match_secret(secret) {
            Some(false) => Ok(1),
            Some(true) => Err(aad::client_secret_expired(&app.client_id)),
            None => Err(aad::invalid_client_secret(&app.client_id)),
        };
    }
    if let Some(assertion) = assertion {
        if p.get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(aad::assertion_malformed(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        jwt::verify_assertion(
            assertion,
            &app.client_id,
            audiences,
            &app.certificates,
            st.clock.unix(),
        )?;
        return Ok(2);
    }
    if public_ok && app.public_client {
        return Ok(0);
    }
    Err(aad::credential_required())
}

/// The request, as the token endpoint sees it.
pub(crate) struct TokenCall<'a> {
    pub tenant_seg: &'a str,
    pub params: Params<'a>,
    /// `aud` values a client assertion may carry: this request's token URL.
    pub audiences: Vec<String>,
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn token(st: &mut State, call: &TokenCall) -> Result<Vec<u8>, AadError> {
    let p = &call.params;
    p.check_duplicates()?;
    let tenant = st
        .resolve_tenant(call.tenant_seg)
        .ok_or_else(|| aad::tenant_not_found(call.tenant_seg))?
        .to_string();
    let grant = p.require("grant_type")?;
    if ![
        "client_credentials",
        "refresh_token",
        "authorization_code",
        GRANT_DEVICE_CODE,
    ]
    .contains(&grant)
    {
        return Err(aad::unsupported_grant_type(grant));
    }
    let client_id = p.require("client_id")?;
    let app = st
        .apps
        .get(client_id)
        .cloned()
        .ok_or_else(|| aad::app_not_found(client_id, call.tenant_seg))?;

    if matches!(grant, "client_credentials" | "refresh_token") {
        // "Identical" = same client, grant, scope and user (facts section 9). For a refresh the
        // user is the token's, so a client rotating tokens properly still counts as one loop.
        let who = match p.get("refresh_token") {
            Some(rt) => st
                .refresh_tokens
                .get(rt)
                .map(|r| r.user.oid.clone())
                .unwrap_or_else(|| {
                    b64url(
                        &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rt.as_bytes())
                            .as_ref()[..12],
                    )
                }),
            None => String::new(),
        };
        let mut scope: Vec<String> = p
            .get("scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        scope.sort();
        let key = format!("{tenant}|{client_id}|{grant}|{}|{who}", scope.join(" "));
        if st.loop_detected(key) {
            return Err(aad::loop_detected());
        }
    }

    match grant {
        "client_credentials" => client_credentials(st, &app, call),
        "refresh_token" => refresh(st, &app, call),
        "authorization_code" => authorization_code(st, &app, call),
        _ => device_code_poll(st, &app, call),
    }
}

fn client_credentials(st: &mut State, app: &App, call: &TokenCall) -> Result<Vec<u8>, AadError> {
    let p = &call.params;
    if ["common", "consumers"].contains(&call.tenant_seg) {
        return Err(aad::grant_not_over_common());
    }
    let acr = authenticate(st, app, p, &call.audiences, false)?;
    let scope = p.require("scope")?;
    let mut items = scope.split_whitespace();
    let resource = match (items.next(), items.next()) {
        (Some(one), None) => one
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| aad::client_credentials_scope(scope))?,
        _ => return Err(aad::client_credentials_scope(scope)),
    };
    let now = st.clock.unix();
    let lifetime = st.settings.access_token_lifetime.as_secs();
    let aud = st
        .settings
        .audience
        .clone()
        .unwrap_or_else(|| resource.trim_end_matches('/').to_string());
    let tid = st.settings.tenant_id.clone();
    let mut c = Map::new();
    c.insert("aud".into(), json!(aud));
    c.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{tid}/")),
    );
    // Microsoft backdates iat/nbf by five minutes (clock-skew allowance).
    c.insert("iat".into(), json!(now - 300));
    c.insert("nbf".into(), json!(now - 300));
    c.insert("exp".into(), json!(now + lifetime as i64));
    c.insert("app_displayname".into(), json!(app.name));
    c.insert("appid".into(), json!(app.client_id));
    c.insert("appidacr".into(), json!(acr.to_string()));
    c.insert(
        "idp".into(),
        json!(format!("https://sts.windows.net/{tid}/")),
    );
    c.insert("idtyp".into(), json!("app"));
    c.insert("oid".into(), json!(app.service_principal_oid));
    if !app.roles.is_empty() {
        c.insert("roles".into(), json!(app.roles));
    }
    c.insert("sub".into(), json!(app.service_principal_oid));
    c.insert("tid".into(), json!(tid));
    if let Some(upn) = &app.app_token_upn {
        // The test stack's kindness (module docs): Microsoft sends no upn in app-only tokens.
        c.insert("upn".into(), json!(upn));
    }
    c.insert("uti".into(), json!(ids::opaque("", 16)));
    c.insert("ver".into(), json!("1.0"));
    let resp = TokenResponse {
        token_type: "Bearer",
        scope: None,
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: st.signer.sign(&Value::Object(c)),
        refresh_token: None,
        id_token: None,
    };
    Ok(serde_json::to_vec(&resp).unwrap_or_default())
}

/// Access token (and refresh and id tokens as the scopes ask) for a user: the shared end of
/// the three delegated grants.
fn issue_delegated(
    st: &mut State,
    app: &App,
    user: &User,
    scope_str: &str,
    acr: u8,
) -> Result<Vec<u8>, AadError> {
    let scopes = parse_delegated(scope_str)?;
    let perms = granted_perms(app, &scopes)?;
    let now = st.clock.unix();
    let lifetime = st.settings.access_token_lifetime.as_secs();
    let tid = st.settings.tenant_id.clone();
    let aud = st
        .settings
        .audience
        .clone()
        .unwrap_or_else(|| scopes.resource.clone());
    let scp = if perms.is_empty() {
        "openid".to_string()
    } else {
        perms.join(" ")
    };
    let at = json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now - 300,
        "nbf": now - 300,
        "exp": now + lifetime as i64,
        "acr": "1",
        "amr": ["pwd"],
        "app_displayname": app.name,
        "appid": app.client_id,
        "appidacr": acr.to_string(),
        "name": user.name,
        "oid": user.oid,
        "scp": scp,
        "sub": b64url(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{}|{}", app.client_id, user.oid).as_bytes()).as_ref()[..32]),
        "tid": tid,
        "unique_name": user.upn,
        "upn": user.upn,
        "uti": ids::opaque("", 16),
        "ver": "1.0",
    });
    let id_token = scopes.openid.then(|| {
        st.signer.sign(&json!({
            "aud": app.client_id,
            "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.upn,
            "sub": b64url(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("id|{}|{}", app.client_id, user.oid).as_bytes()).as_ref()[..32]),
            "tid": tid,
            "ver": "2.0",
        }))
    });
    let refresh_token = scopes.offline.then(|| {
        let rt = ids::opaque("0.AXfakeidp.", 96);
        st.remember_refresh(
            rt.clone(),
            RefreshRecord {
                client_id: app.client_id.clone(),
                user: user.clone(),
                scope: scope_str.to_string(),
                issued_at: now,
                last_used_at: now,
                used: false,
                successor: None,
            },
        );
        rt
    });
    let resp = TokenResponse {
        token_type: "Bearer",
        scope: Some(
            perms
                .iter()
                .map(|p| format!("{}/{p}", scopes.resource))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: st.signer.sign(&at),
        refresh_token,
        id_token,
    };
    Ok(serde_json::to_vec(&resp).unwrap_or_default())
}

fn refresh(st: &mut State, app: &App, call: &TokenCall) -> Result<Vec<u8>, AadError> {
    let p = &call.params;
    let acr = authenticate(st, app, p, &call.audiences, true)?;
    let rt = p.require("refresh_token")?;
    let rec = st
        .refresh_tokens
        .get(rt)
        .cloned()
        .ok_or_else(aad::unknown_refresh_token)?;
    if rec.client_id != app.client_id {
        return Err(aad::token_of_other_client());
    }
    let now = st.clock.unix();
    if let Some(from) = st.tokens_valid_from.get(&rec.user.oid) {
        if rec.issued_at < *from {
            return Err(aad::grant_revoked(rec.issued_at, *from));
        }
    }
    let max_idle = st.settings.refresh_token_max_inactive;
    if now - rec.last_used_at > max_idle.as_secs() as i64 {
        return Err(aad::refresh_token_expired(rec.issued_at, max_idle));
    }
    // The grace: the answer that carried the successor may never have arrived (a crash, a
    // dropped connection), so the used token still works while its successor is unused.
    let successor_unused = || {
        rec.successor
            .as_ref()
            .and_then(|s| st.refresh_tokens.get(s))
            .is_some_and(|s| !s.used)
    };
    if rec.used && st.strict_refresh && !(st.refresh_grace && successor_unused()) {
        return Err(aad::refresh_token_reused());
    }
    // The scope of a refresh may differ from the original (any consented resource, facts 3.5);
    // without one, the original request's scope applies. The rotated token always comes back.
    let mut scope = p.get("scope").unwrap_or(&rec.scope).to_string();
    if !scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case("offline_access"))
    {
        scope.push_str(" offline_access");
    }
    let out = issue_delegated(st, app, &rec.user, &scope, acr)?;
    // redeemed again within the grace: the successor nobody received is retired, so one chain
    // never has two live heads
    if let Some(old) = rec.successor.as_ref().filter(|_| st.refresh_grace) {
        st.refresh_tokens.remove(old);
    }
    let successor = serde_json::from_slice::<Value>(&out)
        .ok()
        .and_then(|v| v["refresh_token"].as_str().map(str::to_string));
    if let Some(r) = st.refresh_tokens.get_mut(rt) {
        r.used = true;
        r.last_used_at = now;
        r.successor = successor;
    }
    Ok(out)
}

fn authorization_code(st: &mut State, app: &App, call: &TokenCall) -> Result<Vec<u8>, AadError> {
    let p = &call.params;
    let acr = authenticate(st, app, p, &call.audiences, true)?;
    let code = p.require("code")?;
    let rec = st.codes.get(code).cloned().ok_or_else(aad::unknown_code)?;
    if rec.client_id != app.client_id {
        return Err(aad::token_of_other_client());
    }
    if rec.redeemed {
        return Err(aad::code_redeemed());
    }
    let now = st.clock.unix();
    if now - rec.issued_at > st.settings.auth_code_lifetime.as_secs() as i64 {
        return Err(aad::code_expired());
    }
    let given = p.get("redirect_uri").unwrap_or("");
    if given != rec.redirect_uri {
        return Err(aad::redirect_mismatch(given, &rec.redirect_uri));
    }
    if let Some((challenge, method)) = &rec.challenge {
        let verifier = p.get("code_verifier").ok_or_else(aad::pkce_mismatch)?;
        let computed = if method.eq_ignore_ascii_case("S256") {
            b64url(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
            )
        } else {
            verifier.to_string()
        };
        if &computed != challenge {
            return Err(aad::pkce_mismatch());
        }
    }
    // Single use, even when issuing fails below.
    if let Some(r) = st.codes.get_mut(code) {
        r.redeemed = true;
    }
    issue_delegated(st, app, &rec.user, &rec.scope, acr)
}

fn device_code_poll(st: &mut State, app: &App, call: &TokenCall) -> Result<Vec<u8>, AadError> {
    let p = &call.params;
    // A non-public app without a credential fails here with AADSTS7000218 (facts 3.1).
    let acr = authenticate(st, app, p, &call.audiences, true)?;
    let dc = p.require("device_code")?;
    let now = st.clock.now();
    let Some(idx) = st
        .devices
        .iter()
        .position(|d| d.device_code == dc && d.client_id == app.client_id)
    else {
        return Err(aad::bad_device_code());
    };
    let d = &mut st.devices[idx];
    match d.state.clone() {
        DeviceState::Redeemed => Err(aad::bad_device_code()),
        _ if now >= d.expires_at => Err(aad::device_code_expired()),
        DeviceState::Declined => Err(aad::device_code_declined()),
        DeviceState::Pending => {
            let too_fast = d
                .last_poll
                .is_some_and(|last| now.saturating_sub(last) < d.interval);
            d.last_poll = Some(now);
            if too_fast {
                // RFC 8628 3.5: this and all later polls must wait 5 s more.
                d.interval += std::time::Duration::from_secs(5);
                Err(aad::slow_down())
            } else {
                Err(aad::authorization_pending())
            }
        }
        DeviceState::Approved(user) => {
            d.state = DeviceState::Redeemed;
            let scope = d.scope.clone();
            issue_delegated(st, app, &user, &scope, acr)
        }
    }
}

#[derive(Serialize)]
struct DeviceCodeResponse {
    user_code: String,
    device_code: String,
    verification_uri: String,
    expires_in: u64,
    interval: u64,
    message: String,
}

/// `POST /{tenant}/oauth2/v2.0/devicecode` (facts 3.6: no `verification_uri_complete`).
pub(crate) fn device_code_start(
    st: &mut State,
    tenant_seg: &str,
    p: &Params,
) -> Result<Vec<u8>, AadError> {
    p.check_duplicates()?;
    st.resolve_tenant(tenant_seg)
        .ok_or_else(|| aad::tenant_not_found(tenant_seg))?;
    let client_id = p.require("client_id")?;
    let app = st
        .apps
        .get(client_id)
        .cloned()
        .ok_or_else(|| aad::app_not_found(client_id, tenant_seg))?;
    let scope = p.require("scope")?;
    parse_delegated(scope)?;
    let user_code = ids::user_code();
    let device_code = ids::opaque("DAQABAAEAAAD", 96);
    let s = &st.settings;
    let resp = DeviceCodeResponse {
        message: format!(
            "To sign in, use a web browser to open the page {} and enter the code {user_code} to authenticate.",
            s.verification_uri
        ),
        user_code: user_code.clone(),
        device_code: device_code.clone(),
        verification_uri: s.verification_uri.clone(),
        expires_in: s.device_code_lifetime.as_secs(),
        interval: s.device_code_interval.as_secs(),
    };
    let rec = DeviceRecord {
        device_code,
        user_code,
        client_id: app.client_id.clone(),
        scope: scope.to_string(),
        expires_at: st.clock.now() + s.device_code_lifetime,
        interval: s.device_code_interval,
        last_poll: None,
        state: DeviceState::Pending,
    };
    st.remember_device(rec);
    Ok(serde_json::to_vec(&resp).unwrap_or_default())
}

/// What the authorize endpoint does.
pub(crate) enum AuthorizeAnswer {
    /// Redirect to the client with these query parameters (code+state, or error+state).
    Redirect {
        redirect_uri: String,
        form_post: bool,
        params: Vec<(String, String)>,
    },
    /// Entra shows an error page instead of redirecting (unknown client, bad redirect URI).
    ErrorPage(AadError),
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: approves at once as the signed-in user.
pub(crate) fn authorize(st: &mut State, tenant_seg: &str, p: &Params) -> (String, AuthorizeAnswer) {
    let client_id = p.get("client_id").unwrap_or("").to_string();
    let page = |e| (client_id.clone(), AuthorizeAnswer::ErrorPage(e));
    if st.resolve_tenant(tenant_seg).is_none() {
        return page(aad::tenant_not_found(tenant_seg));
    }
    let Some(app) = st.apps.get(&client_id).cloned() else {
        return page(aad::app_not_found(&client_id, tenant_seg));
    };
    let redirect_uri = p.get("redirect_uri").unwrap_or("").to_string();
    if redirect_uri.is_empty() || !app.redirect_allowed(&redirect_uri) {
        return page(AadError::new(
            400,
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            ),
        ));
    }
    let form_post = p.get("response_mode") == Some("form_post");
    let mut params = Vec::new();
    let now = st.clock.unix();
    let result: Result<String, AadError> = (|| {
        if p.get("response_type") != Some("code") {
            return Err(AadError::new(
                400,
                "unsupported_response_type",
                70005,
                "response_type must be 'code' (the fake implements the authorization code flow only).",
            ));
        }
        let scope = p.require("scope")?;
        let scopes = parse_delegated(scope)?;
        granted_perms(&app, &scopes)?;
        let challenge = match p.get("code_challenge") {
            None => None,
            Some(c) => {
                let m = p.get("code_challenge_method").unwrap_or("plain");
                if !(m == "S256" || m == "plain") {
                    return Err(AadError::new(
                        400,
                        "invalid_request",
                        501491,
                        "Invalid code_challenge_method.",
                    ));
                }
                Some((c.to_string(), m.to_string()))
            }
        };
        let user = st.signed_in_user().ok_or_else(|| {
            AadError::new(
                400,
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
            )
        })?;
        let code = ids::opaque("0.AXfakecode.", 64);
        st.remember_code(
            code.clone(),
            CodeRecord {
                client_id: app.client_id.clone(),
                redirect_uri: redirect_uri.clone(),
                scope: scope.to_string(),
                user,
                challenge,
                issued_at: now,
                redeemed: false,
            },
        );
        Ok(code)
    })();
    match result {
        Ok(code) => {
            params.push(("code".to_string(), code));
        }
        Err(e) => {
            // In a redirect, missing consent is OpenID Connect's `consent_required` (the token
            // endpoint says `invalid_grant` with that suberror).
            let error = if e.suberror == Some("consent_required") {
                "consent_required"
            } else {
                e.error
            };
            params.push(("error".to_string(), error.to_string()));
            params.push((
                "error_description".to_string(),
                format!("AADSTS{}: {}", e.code(), e.text),
            ));
            params.push((
                "error_uri".to_string(),
                format!("https://login.microsoftonline.com/error?code={}", e.code()),
            ));
        }
    }
    if let Some(state) = p.get("state") {
        params.push(("state".to_string(), state.to_string()));
    }
    params.push(("session_state".to_string(), ids::uuid()));
    (
        client_id,
        AuthorizeAnswer::Redirect {
            redirect_uri,
            form_post,
            params,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegated_scopes_split_by_resource() {
        let s = parse_delegated(
            "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access openid",
        )
        .expect("valid");
        assert_eq!(s.resource, "https://outlook.office.com");
        assert_eq!(s.perms, ["IMAP.AccessAsUser.All", "SMTP.Send"]);
        assert!(s.offline && s.openid && !s.default);
        let e = parse_delegated(
            "https://outlook.office.com/SMTP.Send https://graph.microsoft.com/User.Read",
        )
        .expect_err("two resources");
        assert_eq!(e.code(), 700022);
        assert_eq!(
            parse_delegated("User.Read").expect("graph").resource,
            "https://graph.microsoft.com"
        );
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        let v = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        assert_eq!(
            Params(&v).check_duplicates().expect_err("dup").code(),
            9000411
        );
    }
}
