//! A whole (multi-line) SMTP reply: line parser, enhanced status code, EHLO AUTH list and the
//! classifier must never panic, whatever a server sends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use o365_mail_exporter::probe::line::{parse_smtp_line, SmtpReply};
use o365_mail_exporter::probe::login::Stage;
use o365_mail_exporter::probe::smtp;

const STAGES: [Stage; 4] = [Stage::Greeting, Stage::AuthCommand, Stage::Auth, Stage::Mailbox];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut code = None;
    let mut lines = Vec::new();
    for l in text.split('\n').take(256) {
        let l = l.strip_suffix('\r').unwrap_or(l);
        let Some((c, _more, t)) = parse_smtp_line(l) else {
            continue;
        };
        assert!((200..600).contains(&c));
        code.get_or_insert(c);
        lines.push(t);
    }
    let reply = SmtpReply {
        code: code.unwrap_or(0),
        lines,
    };
    if let Some(mechs) = smtp::auth_mechanisms(&reply) {
        assert!(mechs.len() <= 64);
    }
    if let Some(e) = smtp::enhanced_code(&reply.text()) {
        assert!(e.len() <= 9);
    }
    for stage in STAGES {
        let _ = smtp::classify(stage, &reply);
    }
});
