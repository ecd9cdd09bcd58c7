//! The configuration exactly as written: serde structs, no meaning attached yet.
//!
//! Scalars are wrapped in [`Lenient`] so that a wrong type (`port: abc`) is recorded and reported
//! by the validator together with every other problem, instead of aborting deserialization at the
//! first one. Unknown keys are collected by `serde_ignored` in `load` for the same reason.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A scalar that may have failed to deserialize; the error is reported during validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Lenient<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        Ok(Lenient(T::deserialize(v).map_err(|e| {
            // serde_yaml's Value errors read "invalid type: string \"x\", expected u16"
            e.to_string()
        })))
    }
}

pub type LStr = Option<Lenient<String>>;
pub type LInt = Option<Lenient<i64>>;
pub type LBool = Option<Lenient<bool>>;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub cloud: LStr,
    pub defaults: Option<RawDefaults>,
    pub state_dir: LStr,
    pub endpoints: Option<Vec<RawEndpoint>>,
    pub servers: Option<RawServers>,
    pub credentials: Option<Vec<RawCredential>>,
    pub mailboxes: Option<Vec<RawMailbox>>,
    pub product: Option<RawProduct>,
    pub proxy: Option<RawProxy>,
}

/// The outbound HTTP proxy of the token, Graph and HTTPS endpoint checks (`proxy:`).
#[derive(Debug, Default, Deserialize)]
pub struct RawProxy {
    pub url: LStr,
    pub from_env: LBool,
    pub no_proxy: Option<Vec<Lenient<String>>>,
    pub username: LStr,
    pub password: LStr,
    pub password_file: LStr,
    pub password_env: LStr,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDefaults {
    pub interval: LStr,
    pub timeout: LStr,
    pub jitter: LStr,
    pub login_interval: LStr,
    pub login_timeout: LStr,
    pub token_interval: LStr,
    pub max_concurrent_checks: LInt,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEndpoint {
    pub name: LStr,
    pub service: LStr,
    pub host: LStr,
    pub port: LInt,
    pub tls: LStr,
    pub server_name: LStr,
    pub ca_file: LStr,
    pub interval: LStr,
    pub timeout: LStr,
    pub via_proxy: LBool,
}

/// Mail servers for the mailbox logins, per protocol (defaults: the cloud preset's hosts).
#[derive(Debug, Default, Deserialize)]
pub struct RawServers {
    pub imap: Option<RawServer>,
    pub pop3: Option<RawServer>,
    pub smtp: Option<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub host: LStr,
    pub port: LInt,
    pub tls: LStr,
    pub server_name: LStr,
    pub ca_file: LStr,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCredential {
    pub name: LStr,
    pub tenant: LStr,
    pub client_id: LStr,
    pub grant: LStr,
    pub authority: LStr,
    pub token_url: LStr,
    pub client_secret: LStr,
    pub client_secret_file: LStr,
    pub client_secret_env: LStr,
    pub client_certificate: Option<RawClientCertificate>,
    pub scopes: Option<Vec<Lenient<String>>>,
    pub expected_identity: LStr,
    pub secret_expires: LStr,
    pub refresh_ahead: LStr,
    pub redirect_uri: LStr,
    pub interval: LStr,
    pub timeout: LStr,
    pub ca_file: LStr,
    pub graph: Option<RawGraph>,
}

/// Microsoft Graph checks run with a credential's app-only token (`credentials[].graph`).
#[derive(Debug, Default, Deserialize)]
pub struct RawGraph {
    pub checks: Option<Vec<Lenient<String>>>,
    pub interval: LStr,
    pub timeout: LStr,
    pub graph_url: LStr,
    pub scope: LStr,
    pub service: LStr,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClientCertificate {
    pub cert_file: LStr,
    pub key_file: LStr,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMailbox {
    pub name: LStr,
    pub address: LStr,
    pub credential: LStr,
    pub protocols: Option<Vec<Lenient<String>>>,
    pub login_as: LStr,
    pub mechanism: LStr,
    pub smtp_mail_from: LBool,
    pub interval: LStr,
    pub timeout: LStr,
    pub servers: Option<RawServers>,
    pub licensed: LBool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawProduct {
    pub external_url: LStr,
}
