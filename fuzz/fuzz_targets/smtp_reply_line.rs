//! The SMTP reply-line parser must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = o365_mail_exporter::probe::line::parse_smtp_line(&line);
});
