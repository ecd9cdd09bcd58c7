//! The configuration loader must never panic, whatever the YAML.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = o365_mail_exporter::config::load_str(text, "fuzz.yaml", std::path::Path::new("/nonexistent"));
    }
});
