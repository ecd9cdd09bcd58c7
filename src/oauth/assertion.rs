//! The signed client assertion (RFC 7523 `private_key_jwt`) that a certificate credential sends
//! instead of a secret (o365-facts.md 3.2).
//!
//! Microsoft's two pages disagree on the header: the client-credentials page shows RS256 with the
//! SHA-1 thumbprint `x5t`, the certificate-credentials page asks for PS256 with the SHA-256
//! thumbprint `x5t#S256`. Both are built here; PS256 is the default. The claims are the same:
//! `aud` = token URL, `iss` = `sub` = client_id, a random `jti`, `nbf`/`iat` now and `exp` five
//! minutes later (well inside the ≤ 10 min Microsoft accepts). Signing uses aws-lc-rs with the
//! PKCS#8 RSA key from the configuration; the key never leaves [`crate::config::SecretBytes`].

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use aws_lc_rs::{digest, rand::SystemRandom};
use base64::Engine;
use serde_json::json;

/// How long an assertion is valid.
pub const LIFETIME_SECS: u64 = 300;

/// The `client_assertion_type` form value.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Signature algorithm and matching thumbprint header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 SHA-256 with `x5t` (SHA-1 thumbprint).
    Rs256,
    /// RSASSA-PSS SHA-256 with `x5t#S256`.
    #[default]
    Ps256,
}

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the client certificate's private key is not a PKCS#8 RSA key: {0}")]
    Key(String),
    #[error("signing the client assertion failed")]
    Sign,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A fresh random GUID-shaped string for `jti`.
pub fn guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Build and sign an assertion for `client_id` at `token_url`.
pub fn build(
    alg: Alg,
    client_id: &str,
    token_url: &str,
    cert_der: &[u8],
    key_pkcs8: &[u8],
    now: SystemTime,
) -> Result<String, AssertionError> {
    let key = RsaKeyPair::from_pkcs8(key_pkcs8).map_err(|e| AssertionError::Key(e.to_string()))?;
    let header = match alg {
        Alg::Rs256 => json!({
            "alg": "RS256", "typ": "JWT",
            "x5t": b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref()),
        }),
        Alg::Ps256 => json!({
            "alg": "PS256", "typ": "JWT",
            "x5t#S256": b64(digest::digest(&digest::SHA256, cert_der).as_ref()),
        }),
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": guid(),
        "nbf": now,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key.public_modulus_len()];
    let padding = match alg {
        Alg::Rs256 => &RSA_PKCS1_SHA256,
        Alg::Ps256 => &RSA_PSS_SHA256,
    };
    key.sign(
        padding,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| AssertionError::Sign)?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };

    fn part(t: &str, i: usize) -> serde_json::Value {
        let p = t.split('.').nth(i).unwrap();
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn both_algorithms_sign_verifiable_assertions_with_the_right_claims() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let key = kp.serialize_der();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let pair = RsaKeyPair::from_pkcs8(&key).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        for (alg, name, thumb, verify) in [
            (Alg::Rs256, "RS256", "x5t", &RSA_PKCS1_2048_8192_SHA256),
            (Alg::Ps256, "PS256", "x5t#S256", &RSA_PSS_2048_8192_SHA256),
        ] {
            let t = build(
                alg,
                "app-id",
                "https://login.test/t/token",
                cert.der(),
                &key,
                now,
            )
            .unwrap();
            let h = part(&t, 0);
            assert_eq!(h["alg"], name);
            assert!(h[thumb].as_str().is_some_and(|s| !s.is_empty()), "{h}");
            let c = part(&t, 1);
            assert_eq!(c["aud"], "https://login.test/t/token");
            assert_eq!(c["iss"], "app-id");
            assert_eq!(c["sub"], "app-id");
            assert_eq!(c["nbf"], 1_800_000_000u64);
            assert_eq!(c["exp"], 1_800_000_000u64 + LIFETIME_SECS);
            assert_eq!(c["jti"].as_str().unwrap().len(), 36);
            let (input, sig) = t.rsplit_once('.').unwrap();
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .unwrap();
            UnparsedPublicKey::new(verify, &public)
                .verify(input.as_bytes(), &sig)
                .expect("signature verifies");
        }
        let sha256 = digest::digest(&digest::SHA256, cert.der());
        let t = build(Alg::Ps256, "a", "u", cert.der(), &key, now).unwrap();
        assert_eq!(part(&t, 0)["x5t#S256"], b64(sha256.as_ref()));
    }

    #[test]
    fn a_non_rsa_key_is_an_error() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let e = build(
            Alg::Ps256,
            "a",
            "u",
            b"",
            &kp.serialize_der(),
            SystemTime::now(),
        );
        assert!(matches!(e, Err(AssertionError::Key(_))));
    }
}
