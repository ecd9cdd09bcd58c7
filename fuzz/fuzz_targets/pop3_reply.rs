//! The POP3 reply parser and classifier must never panic, whatever line a server sends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::probe::login::Stage;
use o365_mail_exporter::probe::pop3::{self, Reply};

const STAGES: [Stage; 4] = [Stage::Greeting, Stage::AuthCommand, Stage::Auth, Stage::Mailbox];

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    match pop3::parse_reply(&line) {
        Reply::Ok(text) => {
            let _ = pop3::parse_stat(text);
        }
        Reply::Err(text) => {
            for stage in STAGES {
                let _ = pop3::classify(stage, text);
            }
        }
        Reply::Continuation(_) | Reply::Unknown => {}
    }
    if let Some(mechs) = pop3::capa_sasl(&line) {
        assert!(mechs.len() <= 64);
    }
    for stage in STAGES {
        let _ = pop3::classify(stage, &line);
    }
});
