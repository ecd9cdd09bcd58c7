//! The SASL error-challenge decoder must never panic and its output stays bounded, whatever a
//! server sends after `+ ` or `334 `.
#![no_main]
use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::probe::sasl::{decode_challenge, MAX_CHALLENGE_SHOWN};

fuzz_target!(|data: &[u8]| {
    let b64 = String::from_utf8_lossy(data);
    let c = decode_challenge(&b64);
    assert!(c.text.chars().count() <= MAX_CHALLENGE_SHOWN + 3);
    assert!(!c.text.chars().any(char::is_control));
    if let Some(s) = &c.status {
        assert!(s.chars().count() <= 40);
    }
});
