//! JWTs: signing the fake's access and id tokens, and verifying clients' certificate assertions.
//!
//! Access tokens are what the test mail stack's Dovecot validates locally
//! (shared/mailstack NOTES.md): header `typ` must be exactly `JWT`; HS256 tokens carry no `kid`
//! (Dovecot then reads `keys/default/HS256/default`), RS256 tokens carry the configured `kid`.
//! Client assertions follow o365-facts.md 3.2: RS256 with `x5t` (SHA-1 thumbprint, the
//! client-credentials page's sample) or PS256 with `x5t#S256` (the certificate-credentials
//! page); both algorithms are accepted with either thumbprint.

use aws_lc_rs::{digest, hmac, rand as lc_rand, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::aad::{self, AadError};

pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// How the fake signs the tokens it issues.
pub(crate) enum Signer {
    Hs256(Box<hmac::Key>),
    Rs256 {
        key: signature::RsaKeyPair,
        kid: String,
    },
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Hs256(_) => f.write_str("Signer::Hs256([REDACTED])"),
            Signer::Rs256 { kid, .. } => write!(f, "Signer::Rs256(kid {kid})"),
        }
    }
}

impl Signer {
    pub(crate) fn hs256(secret: &[u8]) -> Self {
        Signer::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    pub(crate) fn rs256(pkcs8_der: &[u8], kid: &str) -> Result<Self, String> {
        let key = signature::RsaKeyPair::from_pkcs8(pkcs8_der)
            .map_err(|e| format!("not an RSA PKCS#8 private key: {e}"))?;
        Ok(Signer::Rs256 {
            key,
            kid: kid.to_string(),
        })
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = match self {
            Signer::Hs256(_) => json!({"typ": "JWT", "alg": "HS256"}),
            // Microsoft's RS256 headers carry the same value as `x5t` and `kid`.
            Signer::Rs256 { kid, .. } => {
                json!({"typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid})
            }
        };
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = match self {
            Signer::Hs256(key) => hmac::sign(key, input.as_bytes()).as_ref().to_vec(),
            Signer::Rs256 { key, .. } => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                // Signing with a key that parsed as RSA PKCS#8 only fails on allocation
                // failure inside aws-lc; an empty signature then makes the token unusable,
                // which a test notices.
                if key
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &lc_rand::SystemRandom::new(),
                        input.as_bytes(),
                        &mut sig,
                    )
                    .is_err()
                {
                    sig.clear();
                }
                sig
            }
        };
        format!("{input}.{}", b64url(&sig))
    }
}

/// A certificate registered on an app, with what assertion checks need.
#[derive(Clone, Debug)]
pub(crate) struct RegisteredCert {
    pub x5t: String,
    pub x5t_s256: String,
    /// PKCS#1 RSAPublicKey DER.
    rsa_public_key: Vec<u8>,
}

impl RegisteredCert {
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = cert.public_key();
        // rsaEncryption; Entra only takes RSA certificates for client assertions.
        if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
            return Err("the certificate's key is not RSA".into());
        }
        Ok(RegisteredCert {
            x5t: b64url(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
            x5t_s256: b64url(digest::digest(&digest::SHA256, der).as_ref()),
            rsa_public_key: spki.subject_public_key.data.to_vec(),
        })
    }
}

fn decode_part(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a verified assertion proved.
pub(crate) struct AssertionOk;

/// Verifies a client assertion (o365-facts.md 3.2) against the app's certificates.
/// `audiences` are the token-endpoint URLs this request may name in `aud`.
pub(crate) fn verify_assertion(
    assertion: &str,
    client_id: &str,
    audiences: &[String],
    certs: &[RegisteredCert],
    now: i64,
) -> Result<AssertionOk, AadError> {
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(aad::assertion_malformed(
            "The assertion is not a signed JWT.",
        ));
    };
    let header = decode_part(h).ok_or_else(|| aad::assertion_malformed("Bad header."))?;
    let claims = decode_part(c).ok_or_else(|| aad::assertion_malformed("Bad payload."))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| aad::assertion_malformed("Bad signature encoding."))?;

    let alg: &'static dyn signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
        _ => {
            return Err(aad::assertion_malformed(
                "Only RS256 and PS256 client assertions are supported.",
            ))
        }
    };
    let (thumb, cert) = if let Some(t) = header["x5t#S256"].as_str() {
        (t, certs.iter().find(|k| k.x5t_s256 == t))
    } else if let Some(t) = header["x5t"].as_str() {
        (t, certs.iter().find(|k| k.x5t == t))
    } else {
        ("", None)
    };
    let Some(cert) = cert else {
        return Err(aad::assertion_bad_signature(thumb, client_id));
    };
    signature::UnparsedPublicKey::new(alg, &cert.rsa_public_key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| aad::assertion_signature_invalid(client_id))?;

    if claims["iss"].as_str() != Some(client_id) {
        return Err(aad::assertion_wrong_issuer());
    }
    if claims["sub"].as_str() != Some(client_id) {
        return Err(aad::assertion_subject_mismatch());
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => audiences.iter().any(|x| x == a),
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err(aad::assertion_wrong_audience());
    }
    let exp = claims["exp"].as_i64();
    let nbf = claims["nbf"].as_i64();
    // Entra allows five minutes of clock skew on `nbf`.
    let in_range = exp.is_some_and(|e| e > now) && nbf.is_none_or(|n| n <= now + 300);
    if !in_range {
        return Err(aad::assertion_time_range(now, nbf, exp));
    }
    Ok(AssertionOk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_token_verifies_with_the_secret() {
        let s = Signer::hs256(b"0123456789abcdef0123456789abcdef");
        let t = s.sign(&json!({"sub": "x"}));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]).expect("header"),
            json!({"typ": "JWT", "alg": "HS256"})
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        hmac::verify(&key, format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature");
    }

    #[test]
    fn malformed_assertions_are_invalid_client() {
        for a in ["", "a.b", "a.b.c.d", "e30.e30.AA"] {
            let e = match verify_assertion(a, "c", &[], &[], 0) {
                Err(e) => e,
                Ok(_) => panic!("{a:?} accepted"),
            };
            assert_eq!((e.status, e.error), (401, "invalid_client"), "{a:?}");
        }
    }
}
