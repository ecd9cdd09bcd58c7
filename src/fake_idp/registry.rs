//! What is registered in the fake tenant: applications (client ids with their credentials,
//! permissions and consent) and users. Built by the Rust builders here or from the process's
//! config file (`config.rs`); read-only once the fake runs, except the signed-in user.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret as _, SecretString};

use super::ids;
use super::jwt::RegisteredCert;

/// A client secret registered on an app. `expired` secrets still match, and then answer
/// AADSTS7000222 as Entra does for a secret past its end date.
#[derive(Clone, Debug)]
pub struct AppSecret {
    pub value: SecretString,
    pub expired: bool,
}

/// An app registration (plus its service principal) in the fake tenant.
#[derive(Clone, Debug)]
pub struct App {
    pub client_id: String,
    /// Display name (appears in AADSTS65001 texts and `app_displayname`).
    pub name: String,
    pub secrets: Vec<AppSecret>,
    pub(crate) certificates: Vec<RegisteredCert>,
    /// "Allow public client flows": device code and auth code without a client credential.
    pub public_client: bool,
    /// Application permissions granted with admin consent: the `roles` of app-only tokens,
    /// e.g. `IMAP.AccessAsApp`.
    pub roles: Vec<String>,
    /// Delegated permissions consented, by name (`IMAP.AccessAsUser.All`) or full scope URI
    /// (only the part after the last `/` counts). `None` = every delegated scope is consented.
    pub consented_scopes: Option<Vec<String>>,
    /// Registered redirect URIs. Empty = any. `http://localhost`/`http://127.0.0.1` entries
    /// match any port, as Entra does for native-client loopback redirects.
    pub redirect_uris: Vec<String>,
    /// The test stack's kindness: Microsoft app-only tokens carry no `upn`, but the test
    /// Dovecot needs one equal to the login name; when set, app-only tokens carry this `upn`.
    pub app_token_upn: Option<String>,
    /// Object id of the service principal (`oid`/`sub` of app-only tokens).
    pub service_principal_oid: String,
}

impl App {
    pub fn new(client_id: &str) -> Self {
        App {
            client_id: client_id.to_string(),
            name: format!("fake app {client_id}"),
            secrets: Vec::new(),
            certificates: Vec::new(),
            public_client: false,
            roles: Vec::new(),
            consented_scopes: None,
            redirect_uris: Vec::new(),
            app_token_upn: None,
            service_principal_oid: ids::derived_uuid(&format!("sp:{client_id}")),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn secret(mut self, value: &str) -> Self {
        self.secrets.push(AppSecret {
            value: SecretString::from(value.to_string()),
            expired: false,
        });
        self
    }

    pub fn expired_secret(mut self, value: &str) -> Self {
        self.secrets.push(AppSecret {
            value: SecretString::from(value.to_string()),
            expired: true,
        });
        self
    }

    /// Registers a certificate (DER) for client assertions.
    pub fn certificate_der(mut self, der: &[u8]) -> Result<Self, String> {
        self.certificates.push(RegisteredCert::from_der(der)?);
        Ok(self)
    }

    /// Registers every certificate of a PEM bundle.
    pub fn certificate_pem(mut self, pem: &[u8]) -> Result<Self, String> {
        let mut n = 0;
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|e| format!("bad PEM certificate: {e}"))?;
            self.certificates.push(RegisteredCert::from_der(&der)?);
            n += 1;
        }
        if n == 0 {
            return Err("no CERTIFICATE block in the PEM data".into());
        }
        Ok(self)
    }

    pub fn public_client(mut self, on: bool) -> Self {
        self.public_client = on;
        self
    }

    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    pub fn consented_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.consented_scopes = Some(s.into_iter().map(Into::into).collect());
        self
    }

    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_string());
        self
    }

    pub fn app_token_upn(mut self, upn: &str) -> Self {
        self.app_token_upn = Some(upn.to_string());
        self
    }

    pub fn service_principal_oid(mut self, oid: &str) -> Self {
        self.service_principal_oid = oid.to_string();
        self
    }

    pub(crate) fn is_confidential(&self) -> bool {
        !self.secrets.is_empty() || !self.certificates.is_empty()
    }

    /// `Some(expired)` when `presented` equals a registered secret.
    pub(crate) fn match_secret(&self, presented: &str) -> Option<bool> {
        self.secrets
            .iter()
            .find(|s| s.value.expose_secret() == presented)
            .map(|s| s.expired)
    }

    /// Whether the delegated permission `perm` (a name, no resource) is consented.
    pub(crate) fn consented(&self, perm: &str) -> bool {
        match &self.consented_scopes {
            None => true,
            Some(list) => list
                .iter()
                .any(|c| permission_name(c).eq_ignore_ascii_case(perm)),
        }
    }

    pub(crate) fn redirect_allowed(&self, uri: &str) -> bool {
        if self.redirect_uris.is_empty() {
            return true;
        }
        let strip_port = |u: &str| -> Option<String> {
            let url = url::Url::parse(u).ok()?;
            let host = url.host_str()?;
            if url.scheme() == "http" && (host == "localhost" || host == "127.0.0.1") {
                Some(format!("http://{host}{}", url.path()))
            } else {
                None
            }
        };
        self.redirect_uris.iter().any(|r| {
            r == uri || matches!((strip_port(r), strip_port(uri)), (Some(a), Some(b)) if a == b)
        })
    }
}

/// The part of a scope after its resource: `https://outlook.office.com/SMTP.Send` -> `SMTP.Send`.
pub(crate) fn permission_name(scope: &str) -> &str {
    scope.rsplit_once('/').map_or(scope, |(_, p)| p)
}

/// A user of the fake tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub upn: String,
    /// Object id (`oid`); by default derived from the upn, so stable across runs.
    pub oid: String,
    pub name: String,
}

impl User {
    pub fn new(upn: &str) -> Self {
        User {
            upn: upn.to_string(),
            oid: ids::derived_uuid(&format!("user:{}", upn.to_ascii_lowercase())),
            name: upn.split('@').next().unwrap_or(upn).to_string(),
        }
    }

    pub fn oid(mut self, oid: &str) -> Self {
        self.oid = oid.to_string();
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_matches_names_and_uris() {
        let app =
            App::new("c").consented_scopes(["https://outlook.office.com/IMAP.AccessAsUser.All"]);
        assert!(app.consented("imap.accessasuser.all"));
        assert!(!app.consented("SMTP.Send"));
        assert!(App::new("c").consented("anything"));
    }

    #[test]
    fn loopback_redirects_ignore_the_port() {
        let app = App::new("c").redirect_uri("http://localhost/cb");
        assert!(app.redirect_allowed("http://localhost:51234/cb"));
        assert!(!app.redirect_allowed("http://localhost:51234/other"));
        assert!(!app.redirect_allowed("https://evil.invalid/cb"));
        assert!(App::new("c").redirect_allowed("https://anything.invalid/"));
    }

    #[test]
    fn secrets_match_and_report_expiry() {
        let app = App::new("c").secret("good").expired_secret("old");
        assert_eq!(app.match_secret("good"), Some(false));
        assert_eq!(app.match_secret("old"), Some(true));
        assert_eq!(app.match_secret("nope"), None);
    }
}
