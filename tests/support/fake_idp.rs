//! Helpers for talking to the fake identity provider the way a client would: form posts,
//! answers as (status, headers, JSON), JWT decoding, and certificate client assertions
//! (o365-facts.md 3.2) signed with a generated RSA certificate.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand::SystemRandom, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// A reqwest client that does not follow redirects (the authorize endpoint's 302 is checked).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// One answer: status, headers, body (raw) and body as JSON (`Null` if it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The first AADSTS code of an error answer.
    pub fn code(&self) -> Option<u64> {
        self.json["error_codes"][0].as_u64()
    }

    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        json,
    }
}

pub fn form_body(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

/// POSTs a form as `application/x-www-form-urlencoded`.
pub async fn post_form(url: &str, params: &[(&str, &str)]) -> Answer {
    let resp = http()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(params))
        .send()
        .await
        .expect("request");
    answer(resp).await
}

pub async fn get(url: &str) -> Answer {
    answer(http().get(url).send().await.expect("request")).await
}

pub async fn post_json(url: &str, body: Value) -> Answer {
    let resp = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    answer(resp).await
}

/// Header and claims of a JWT (no signature check).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut dec = |what| {
        let part = it.next().unwrap_or_else(|| panic!("JWT without {what}"));
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    };
    (dec("header"), dec("payload"))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// An RSA certificate and its key, for client assertions.
pub struct TestCert {
    pub der: Vec<u8>,
    pub pem: String,
    key: signature::RsaKeyPair,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA keygen");
        let params = rcgen::CertificateParams::new(vec!["fake-idp-client.test".to_string()])
            .expect("params");
        let cert = params.self_signed(&kp).expect("self-signed");
        TestCert {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key: signature::RsaKeyPair::from_pkcs8(&kp.serialize_der()).expect("pkcs8"),
        }
    }

    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der))
    }

    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &self.der))
    }

    /// Signs `claims` with `alg` (`RS256` or `PS256`) and the given header thumbprint field.
    pub fn sign(&self, alg: &str, header_extra: Value, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let (Some(h), Some(extra)) = (header.as_object_mut(), header_extra.as_object()) {
            h.extend(extra.clone());
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let enc: &'static dyn signature::RsaEncoding = if alg == "PS256" {
            &signature::RSA_PSS_SHA256
        } else {
            &signature::RSA_PKCS1_SHA256
        };
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(enc, &SystemRandom::new(), input.as_bytes(), &mut sig)
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A well-formed assertion for `client_id` at `token_url` (PS256 + `x5t#S256`, the current
    /// Microsoft documentation's form).
    pub fn assertion(&self, client_id: &str, token_url: &str) -> String {
        let now = now();
        self.sign(
            "PS256",
            json!({"x5t#S256": self.x5t_s256()}),
            &json!({"aud": token_url, "iss": client_id, "sub": client_id,
                    "jti": format!("jti-{now}"), "nbf": now, "iat": now, "exp": now + 300}),
        )
    }
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}
