//! The `o365-fake-idp` process's configuration file (YAML, or JSON when the name ends in
//! `.json`), turned into the same [`FakeIdpBuilder`] the in-process tests use. Unknown fields are
//! errors; durations are humantime (`90s`, `1h`); relative paths are relative to the file.
//!
//! ```yaml
//! tenant: 00000000-0000-0000-0000-00000000beef
//! tenant_aliases: [contoso.onmicrosoft.com]
//! audience: https://outlook.office.com        # optional fixed aud
//! access_token_lifetime: 1h
//! strict_refresh: false
//! loop_detection: true
//! rs256: { key_file: idp/rs256.key, kid: mailstack-rs256 }   # optional; default HS256
//! device_code: { interval: 5s, expires_in: 15m }
//! apps:
//!   - client_id: 11111111-2222-3333-4444-555555555555
//!     secrets: [{ value: "test-secret" }, { value: "old", expired: true }]
//!     certificate_file: app.crt
//!     roles: [IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp]
//!     app_token_upn: alice@example.test
//!   - client_id: 22222222-2222-3333-4444-555555555555
//!     public_client: true
//!     consented_scopes: [IMAP.AccessAsUser.All, SMTP.Send]
//!     redirect_uris: [http://localhost/callback]
//! users: [{ upn: alice@example.test }, { upn: bob@example.test }]
//! signed_in_user: alice@example.test
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{App, FakeIdp, FakeIdpBuilder, FakeIdpError, User};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub tenant_aliases: Vec<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub access_token_lifetime: Option<String>,
    #[serde(default)]
    pub refresh_token_max_inactive: Option<String>,
    #[serde(default)]
    pub auth_code_lifetime: Option<String>,
    #[serde(default)]
    pub strict_refresh: bool,
    #[serde(default)]
    pub loop_detection: bool,
    #[serde(default)]
    pub loop_threshold: Option<usize>,
    #[serde(default)]
    pub loop_window: Option<String>,
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub rs256: Option<Rs256Config>,
    #[serde(default)]
    pub device_code: Option<DeviceCodeConfig>,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub signed_in_user: Option<String>,
    /// What the fake Microsoft Graph serves (`super::FakeGraph`'s fields).
    #[serde(default)]
    pub graph: Option<super::FakeGraph>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rs256Config {
    /// PKCS#8 PEM private key (`openssl genpkey` output).
    pub key_file: PathBuf,
    pub kid: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCodeConfig {
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub expires_in: Option<String>,
    #[serde(default)]
    pub verification_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    #[serde(default)]
    pub expired: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub client_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub secrets: Vec<SecretConfig>,
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    #[serde(default)]
    pub public_client: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub consented_scopes: Option<Vec<String>>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub app_token_upn: Option<String>,
    #[serde(default)]
    pub service_principal_oid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub upn: String,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

fn cfg_err(msg: impl Into<String>) -> FakeIdpError {
    FakeIdpError::Config(msg.into())
}

fn duration(field: &str, v: &Option<String>) -> Result<Option<Duration>, FakeIdpError> {
    v.as_deref()
        .map(|s| humantime::parse_duration(s).map_err(|e| cfg_err(format!("{field}: {e}"))))
        .transpose()
}

/// Config files are small; anything bigger is a mistake.
const MAX_FILE: u64 = 1024 * 1024;

fn read_bounded(path: &Path) -> Result<Vec<u8>, FakeIdpError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| cfg_err(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| cfg_err(format!("{}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(cfg_err(format!("{}: larger than 1 MiB", path.display())));
    }
    Ok(buf)
}

impl FakeIdpBuilder {
    /// The HS256 secret from a file holding it in base64 (the mail stack's
    /// `DIR/idp/hs256.secret`).
    pub fn hs256_secret_file(self, path: &Path) -> Result<Self, FakeIdpError> {
        let text = String::from_utf8(read_bounded(path)?)
            .map_err(|_| cfg_err(format!("{}: not base64 text", path.display())))?;
        self.hs256_secret_base64(&text)
    }
}

impl FileConfig {
    /// Parses YAML, or JSON when `is_json`.
    pub fn parse(text: &str, is_json: bool) -> Result<Self, FakeIdpError> {
        if is_json {
            serde_json::from_str(text).map_err(|e| cfg_err(e.to_string()))
        } else {
            serde_yaml::from_str(text).map_err(|e| cfg_err(e.to_string()))
        }
    }

    /// Reads `path` and builds the fake; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<FakeIdpBuilder, FakeIdpError> {
        let bytes = read_bounded(path)?;
        let text = String::from_utf8(bytes).map_err(|_| cfg_err("config file is not UTF-8"))?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, is_json)?.into_builder(base)
    }

    pub fn into_builder(self, base: &Path) -> Result<FakeIdpBuilder, FakeIdpError> {
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut b = FakeIdp::builder();
        if let Some(t) = &self.tenant {
            b = b.tenant(t);
        }
        for a in &self.tenant_aliases {
            b = b.tenant_alias(a);
        }
        if let Some(a) = &self.audience {
            b = b.audience(a);
        }
        if let Some(d) = duration("access_token_lifetime", &self.access_token_lifetime)? {
            b = b.access_token_lifetime(d);
        }
        if let Some(d) = duration(
            "refresh_token_max_inactive",
            &self.refresh_token_max_inactive,
        )? {
            b = b.refresh_token_max_inactive(d);
        }
        if let Some(d) = duration("auth_code_lifetime", &self.auth_code_lifetime)? {
            b = b.auth_code_lifetime(d);
        }
        b = b
            .strict_refresh(self.strict_refresh)
            .loop_detection(self.loop_detection);
        if self.loop_threshold.is_some() || self.loop_window.is_some() {
            let window =
                duration("loop_window", &self.loop_window)?.unwrap_or(Duration::from_secs(300));
            b = b.loop_limits(self.loop_threshold.unwrap_or(15), window);
        }
        if let Some(f) = &self.hs256_secret_file {
            b = b.hs256_secret_file(&rel(f))?;
        }
        if let Some(rs) = &self.rs256 {
            use rustls_pki_types::pem::PemObject as _;
            let pem = read_bounded(&rel(&rs.key_file))?;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem)
                .map_err(|e| cfg_err(format!("rs256.key_file: not a PKCS#8 PEM key: {e}")))?;
            b = b.rs256_key(der.secret_pkcs8_der(), &rs.kid);
        }
        if let Some(dc) = &self.device_code {
            if let Some(d) = duration("device_code.interval", &dc.interval)? {
                b = b.device_code_interval(d);
            }
            if let Some(d) = duration("device_code.expires_in", &dc.expires_in)? {
                b = b.device_code_lifetime(d);
            }
            if let Some(u) = &dc.verification_uri {
                b = b.verification_uri(u);
            }
        }
        for a in self.apps {
            let mut app = App::new(&a.client_id)
                .public_client(a.public_client)
                .roles(a.roles);
            if let Some(n) = &a.name {
                app = app.name(n);
            }
            for s in &a.secrets {
                let value = match (&s.value, &s.value_file) {
                    (Some(v), None) => v.clone(),
                    (None, Some(f)) => String::from_utf8(read_bounded(&rel(f))?)
                        .map_err(|_| cfg_err("secret value_file is not UTF-8"))?
                        .trim()
                        .to_string(),
                    _ => {
                        return Err(cfg_err(format!(
                            "app {}: each secret needs exactly one of value, value_file",
                            a.client_id
                        )))
                    }
                };
                app = if s.expired {
                    app.expired_secret(&value)
                } else {
                    app.secret(&value)
                };
            }
            if let Some(f) = &a.certificate_file {
                let pem = read_bounded(&rel(f))?;
                app = app
                    .certificate_pem(&pem)
                    .map_err(|e| cfg_err(format!("app {}: {e}", a.client_id)))?;
            }
            if let Some(c) = a.consented_scopes {
                app = app.consented_scopes(c);
            }
            for r in &a.redirect_uris {
                app = app.redirect_uri(r);
            }
            if let Some(u) = &a.app_token_upn {
                app = app.app_token_upn(u);
            }
            if let Some(o) = &a.service_principal_oid {
                app = app.service_principal_oid(o);
            }
            b = b.app(app);
        }
        for u in self.users {
            let mut user = User::new(&u.upn);
            if let Some(o) = &u.oid {
                user = user.oid(o);
            }
            if let Some(n) = &u.name {
                user = user.name(n);
            }
            b = b.user(user);
        }
        if let Some(s) = &self.signed_in_user {
            b = b.signed_in_user(s);
        }
        if let Some(g) = self.graph {
            b = b.graph(g);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_doc_example_parses() {
        let yaml = r#"
tenant: 00000000-0000-0000-0000-00000000beef
tenant_aliases: [contoso.onmicrosoft.com]
audience: https://outlook.office.com
access_token_lifetime: 1h
loop_detection: true
device_code: { interval: 5s, expires_in: 15m }
apps:
  - client_id: 11111111-2222-3333-4444-555555555555
    secrets: [{ value: "test-secret" }, { value: "old", expired: true }]
    roles: [IMAP.AccessAsApp]
    app_token_upn: alice@example.test
users: [{ upn: alice@example.test }]
signed_in_user: alice@example.test
"#;
        let c = FileConfig::parse(yaml, false).expect("valid");
        assert_eq!(c.apps.len(), 1);
        c.into_builder(Path::new(".")).expect("builds");
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_errors() {
        assert!(FileConfig::parse("tenant: x\nbogus: 1\n", false).is_err());
        let c = FileConfig::parse(r#"{"access_token_lifetime": "soon"}"#, true).expect("json");
        assert!(c.into_builder(Path::new(".")).is_err());
    }
}
