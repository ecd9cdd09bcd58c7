//! The IMAP reply parser and classifier must never panic, and capability lists stay bounded,
//! whatever line a server sends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::probe::imap::{self, Status};
use o365_mail_exporter::probe::login::Stage;

const STAGES: [Stage; 4] = [Stage::Greeting, Stage::AuthCommand, Stage::Auth, Stage::Mailbox];
const STATUSES: [Status; 3] = [Status::Ok, Status::No, Status::Bad];

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = imap::parse_line(&line);
    let g = imap::parse_greeting(&line);
    if let Some(caps) = &g.capabilities {
        assert!(caps.len() <= 256);
    }
    if let Some(rest) = line.strip_prefix("* ") {
        if let Some(caps) = imap::capability_words(rest) {
            assert!(caps.len() <= 256);
            let _ = imap::offers_auth(&caps, "XOAUTH2");
        }
        let _ = imap::parse_exists(rest);
    }
    let _ = imap::capability_code(&line);
    for stage in STAGES {
        for status in STATUSES {
            let _ = imap::classify(stage, status, &line);
        }
    }
});
