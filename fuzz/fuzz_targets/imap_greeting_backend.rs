//! The Exchange backend-name decoder (base64 UTF-16LE in the greeting's trailing bracket) and
//! the throttling-hint parser must never panic; a decoded name is always host-like.
#![no_main]
use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::probe::login::{exchange_backend, throttled, MAX_BACKOFF};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some(name) = exchange_backend(&line) {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    }
    if let Some(Some(d)) = throttled(&line) {
        assert!(d <= MAX_BACKOFF);
    }
});
