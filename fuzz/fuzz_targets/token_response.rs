//! Whatever answers at the token URL: the error-body parser and classifier, the success-body
//! parser and the best-effort JWT inspection must never panic, and the text they derive for
//! messages stays short and free of request syntax.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::oauth::error::{classify, clean_token, MsError};
use o365_mail_exporter::oauth::grant::parse_success;
use o365_mail_exporter::oauth::inspect;

fuzz_target!(|data: &[u8]| {
    let body = data;
    let parsed = MsError::parse(body);
    for status in [200u16, 400, 401, 429, 500, 503] {
        for cert in [false, true] {
            let _ = classify(status, parsed.as_ref(), cert);
        }
    }
    if let Some(e) = &parsed {
        let shown = e.to_string();
        let _ = e.code();
        assert!(!shown.contains('&') && !shown.contains('=') && !shown.contains('\n'));
    }
    let cleaned = clean_token(&String::from_utf8_lossy(body));
    assert!(cleaned.chars().count() <= 64);
    if let Ok(f) = parse_success(body, Duration::ZERO) {
        let _ = f.expires_in;
    }
    let _ = inspect::claims(&String::from_utf8_lossy(body));
});
