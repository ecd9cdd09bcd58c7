//! SASL for the mailbox logins: the XOAUTH2 and OAUTHBEARER initial client responses, their
//! redacted transcript form, and the server's error challenge.
//!
//! Pure functions only, so the wire formats can be pinned by Microsoft's own test vectors
//! (o365-facts.md 2.1) and RFC 7628's layout (2.7). The initial response carries the bearer token,
//! so it is built into a [`SecretString`] (zeroized on drop) and shown in transcripts only as
//! `[redacted: user=... token N bytes]`. An error challenge (`+ <base64 json>` in IMAP/POP3,
//! `334 <base64 json>` in SMTP, o365-facts.md 2.6) is decoded for the transcript with a size cap,
//! and answered the way each mechanism requires: an empty line for XOAUTH2, `AQ==` (a single
//! 0x01) for OAUTHBEARER, after which the server sends its final failure.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Mechanism;

/// Most base64 characters of an error challenge that are decoded (the rest is ignored): real
/// challenges are ~100 bytes of JSON; a hostile server must not make us allocate more.
pub const MAX_CHALLENGE_B64: usize = 4096;
/// Longest decoded challenge text kept for the transcript and the detail.
pub const MAX_CHALLENGE_SHOWN: usize = 300;

/// The SASL mechanism name as sent on the wire (upper case: Exchange's SMTP is reported to refuse
/// a lower-case `xoauth2`, o365-facts.md 2.1).
pub fn mechanism_name(m: Mechanism) -> &'static str {
    match m {
        Mechanism::XOAuth2 => "XOAUTH2",
        Mechanism::OAuthBearer => "OAUTHBEARER",
    }
}

/// Where the OAUTHBEARER GS2 header and key/values point (RFC 7628 section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// The base64 initial client response for `mech`.
///
/// XOAUTH2: `user=<user>^Aauth=Bearer <token>^A^A`;
/// OAUTHBEARER: `n,a=<user>,^Ahost=<host>^Aport=<port>^Aauth=Bearer <token>^A^A`.
pub fn initial_response(
    mech: Mechanism,
    user: &str,
    target: Target<'_>,
    token: &SecretString,
) -> SecretString {
    let token = token.expose_secret();
    let raw = secrecy::zeroize::Zeroizing::new(match mech {
        Mechanism::XOAuth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        Mechanism::OAuthBearer => format!(
            "n,a={},\x01host={}\x01port={}\x01auth=Bearer {token}\x01\x01",
            gs2_escape(user),
            target.host,
            target.port
        ),
    });
    SecretString::from(STANDARD.encode(raw.as_bytes()))
}

/// RFC 5801 saslname escaping for the authzid: `,` -> `=2C`, `=` -> `=3D`.
fn gs2_escape(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// What a transcript shows in place of an initial response.
pub fn redacted(user: &str, token: &SecretString) -> String {
    format!(
        "[redacted: user={user} token {} bytes]",
        token.expose_secret().len()
    )
}

/// What a client answers to an error challenge: XOAUTH2 wants an empty response, OAUTHBEARER a
/// single 0x01 (RFC 7628 section 3.2.3), both before the server sends its final failure.
pub fn challenge_answer(mech: Mechanism) -> &'static str {
    match mech {
        Mechanism::XOAuth2 => "",
        Mechanism::OAuthBearer => "AQ==",
    }
}

/// A decoded error challenge, bounded for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The decoded text (usually JSON), control characters replaced, at most
    /// [`MAX_CHALLENGE_SHOWN`] characters (plus `...` when cut).
    pub text: String,
    /// The JSON `status` member when the text is JSON with one (`"401"`, `"invalid_token"`).
    pub status: Option<String>,
}

/// Decode the base64 payload of a `+ ...` / `334 ...` challenge. Never fails: undecodable input
/// is shown as such. Only the first [`MAX_CHALLENGE_B64`] characters are looked at.
pub fn decode_challenge(b64: &str) -> Challenge {
    let b64 = b64.trim();
    let mut cut = b64.len().min(MAX_CHALLENGE_B64);
    while !b64.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &b64[..cut];
    // A cut challenge loses its padding; decode the whole quads we have. The cut is a char
    // boundary even when the text is not base64 (a non-ASCII line would decode as an error
    // anyway, but must not make the slice panic: found by the property test below).
    let mut q = head.len() - head.len() % 4;
    while !head.is_char_boundary(q) {
        q -= 1;
    }
    let quads = &head[..q];
    let decoded = if cut == b64.len() {
        STANDARD.decode(head)
    } else {
        STANDARD.decode(quads)
    };
    let Ok(bytes) = decoded else {
        return Challenge {
            text: format!("(not base64, {} characters)", b64.len()),
            status: None,
        };
    };
    let status = if cut == b64.len() {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("status").map(|s| match s {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .map(|s| s.chars().take(40).collect())
    } else {
        None
    };
    let full = String::from_utf8_lossy(&bytes);
    let mut text: String = full
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .take(MAX_CHALLENGE_SHOWN)
        .collect();
    if full.chars().count() > MAX_CHALLENGE_SHOWN || cut < b64.len() {
        text.push_str("...");
    }
    Challenge { text, status }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    const NO_TARGET: Target<'static> = Target {
        host: "outlook.office365.com",
        port: 993,
    };

    #[test]
    fn xoauth2_matches_microsofts_test_vector() {
        let got = initial_response(
            Mechanism::XOAuth2,
            "test@contoso.onmicrosoft.com",
            NO_TARGET,
            &secret("EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"),
        );
        assert_eq!(
            got.expose_secret(),
            "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
        );
    }

    #[test]
    fn xoauth2_matches_the_second_vector() {
        let got = initial_response(
            Mechanism::XOAuth2,
            "someuser@example.com",
            NO_TARGET,
            &secret("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
        );
        assert_eq!(
            got.expose_secret(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn oauthbearer_matches_the_rfc7628_layout() {
        let got = initial_response(
            Mechanism::OAuthBearer,
            "user@contoso.com",
            Target {
                host: "outlook.office365.com",
                port: 993,
            },
            &secret("TOKEN"),
        );
        assert_eq!(
            got.expose_secret(),
            "bixhPXVzZXJAY29udG9zby5jb20sAWhvc3Q9b3V0bG9vay5vZmZpY2UzNjUuY29tAXBvcnQ9OTkzAWF1dGg9QmVhcmVyIFRPS0VOAQE="
        );
    }

    #[test]
    fn oauthbearer_escapes_the_authzid() {
        let got = initial_response(
            Mechanism::OAuthBearer,
            "a,b=c@x.test",
            NO_TARGET,
            &secret("T"),
        );
        let raw = STANDARD.decode(got.expose_secret()).unwrap();
        assert!(raw.starts_with(b"n,a=a=2Cb=3Dc@x.test,\x01"));
    }

    #[test]
    fn redacted_form_names_user_and_length_not_token() {
        let token = secret("CANARY-abcdef");
        let shown = redacted("support@contoso.com", &token);
        assert_eq!(shown, "[redacted: user=support@contoso.com token 13 bytes]");
        assert!(!shown.contains("CANARY"));
    }

    #[test]
    fn answers_per_mechanism() {
        assert_eq!(challenge_answer(Mechanism::XOAuth2), "");
        assert_eq!(challenge_answer(Mechanism::OAuthBearer), "AQ==");
        assert_eq!(mechanism_name(Mechanism::XOAuth2), "XOAUTH2");
        assert_eq!(mechanism_name(Mechanism::OAuthBearer), "OAUTHBEARER");
    }

    #[test]
    fn decodes_the_dovecot_and_gmail_challenges() {
        let c = decode_challenge(
            "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=",
        );
        assert_eq!(
            c.text,
            r#"{"status":"401","schemes":"bearer","scope":"mail"}"#
        );
        assert_eq!(c.status.as_deref(), Some("401"));
        let c = decode_challenge(&STANDARD.encode(r#"{"status":"invalid_token"}"#));
        assert_eq!(c.status.as_deref(), Some("invalid_token"));
    }

    #[test]
    fn huge_or_broken_challenges_stay_bounded() {
        let big = STANDARD.encode("x".repeat(100_000));
        let c = decode_challenge(&big);
        assert!(c.text.len() <= MAX_CHALLENGE_SHOWN + 3, "{}", c.text.len());
        assert!(c.text.ends_with("..."));
        assert_eq!(c.status, None);
        let c = decode_challenge("%%% not base64 %%%");
        assert!(c.text.starts_with("(not base64"));
        let c = decode_challenge(&STANDARD.encode("a\u{0}b\nc"));
        assert_eq!(c.text, "a.b.c");
        assert_eq!(decode_challenge("").text, "");
    }

    #[test]
    fn a_long_challenge_with_a_wide_character_at_the_cut_does_not_panic() {
        // 4072 base64 characters, then a 4-byte character across the 4076th byte
        let s = format!("{}\u{1192e}{}", "QUFB".repeat(1018), "A".repeat(100));
        let c = decode_challenge(&s);
        assert!(c.text.starts_with("(not base64"), "{}", c.text);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever follows `+ ` or `334 `: no panic, bounded, no control characters.
        #[test]
        fn arbitrary_challenges_stay_bounded(s in prop::collection::vec(any::<char>(), 0..6000).prop_map(String::from_iter)) {
            let c = decode_challenge(&s);
            prop_assert!(c.text.chars().count() <= MAX_CHALLENGE_SHOWN + 3);
            prop_assert!(!c.text.chars().any(char::is_control));
            prop_assert!(c.status.map_or(0, |s| s.chars().count()) <= 40);
        }

        /// Base64 that is long enough to be cut, with anything after the cut.
        #[test]
        fn long_base64_then_anything_stays_bounded(n in 4000usize..4200, tail in "\\PC{0,20}") {
            let s = format!("{}{tail}", "QUFB".repeat(n / 4));
            let c = decode_challenge(&s);
            prop_assert!(c.text.chars().count() <= MAX_CHALLENGE_SHOWN + 3);
        }

        /// A short printable challenge decodes to itself; a JSON one yields its status.
        #[test]
        fn short_challenges_round_trip(text in "[ -~]{0,300}", status in "[a-z0-9_]{1,20}") {
            prop_assert_eq!(decode_challenge(&STANDARD.encode(&text)).text, text);
            let json = format!(r#"{{"status":"{status}","schemes":"bearer"}}"#);
            prop_assert_eq!(decode_challenge(&STANDARD.encode(&json)).status, Some(status));
        }

        /// The initial response carries exactly the user and the token, in XOAUTH2's layout.
        #[test]
        fn xoauth2_layout(user in "[a-z0-9.@-]{1,40}", token in "TOK[A-Za-z0-9._-]{13,200}") {
            let t = SecretString::from(token.clone());
            let blob = initial_response(Mechanism::XOAuth2, &user, Target { host: "h", port: 1 }, &t);
            let raw = STANDARD.decode(blob.expose_secret()).expect("base64");
            prop_assert_eq!(raw, format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes());
            prop_assert!(!redacted(&user, &t).contains(&token));
        }
    }
}
