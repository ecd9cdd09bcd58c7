//! The pure reply parsers of the login dialogues (`src/probe/`), on the exact lines Dovecot,
//! Postfix and Exchange Online send (o365-facts.md 2.x, mailstack NOTES.md). They run a few
//! times per login, so they only matter if one is unexpectedly slow; the bench keeps that
//! visible.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use o365_mail_exporter::probe::line::{parse_smtp_line, SmtpReply};
use o365_mail_exporter::probe::login::{exchange_backend, throttled, Stage};
use o365_mail_exporter::probe::{imap, pop3, sasl, smtp};

const IMAP_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.";
const EXCHANGE_GREETING: &str = "* OK The Microsoft Exchange IMAP4 service is ready. [QQBNAFMAUABSADAANABDAEEAMAAwADQAMgAuAGUAdQByAHAAcgBkADAANAAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]";
const IMAP_CAPS: &str = "CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
const IMAP_TAGGED: &str = "A1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES] Logged in";
const IMAP_THROTTLED: &str =
    "A1 NO Request is throttled. Suggested Backoff Time: 299609 milliseconds";
const CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
const EHLO: &[&str] = &[
    "250-localhost.localdomain",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-VRFY",
    "250-ETRN",
    "250-AUTH XOAUTH2 OAUTHBEARER",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-DSN",
    "250-SMTPUTF8",
    "250 CHUNKING",
];
const SMTP_535: &str = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.";

fn ehlo_reply() -> SmtpReply {
    let mut lines = Vec::new();
    for l in EHLO {
        let (_, _, text) = parse_smtp_line(l).expect("valid line");
        lines.push(text);
    }
    SmtpReply { code: 250, lines }
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parsers");
    g.bench_function("imap_greeting_dovecot", |b| {
        b.iter(|| imap::parse_greeting(black_box(IMAP_GREETING)))
    });
    g.bench_function("imap_greeting_exchange_backend", |b| {
        b.iter(|| exchange_backend(black_box(EXCHANGE_GREETING)))
    });
    g.bench_function("imap_capability_words", |b| {
        b.iter(|| imap::capability_words(black_box(IMAP_CAPS)))
    });
    g.bench_function("imap_tagged_line", |b| {
        b.iter(|| imap::parse_line(black_box(IMAP_TAGGED)))
    });
    g.bench_function("imap_exists", |b| {
        b.iter(|| imap::parse_exists(black_box("3 EXISTS")))
    });
    g.bench_function("imap_classify_throttled", |b| {
        b.iter(|| {
            imap::classify(
                Stage::Auth,
                imap::Status::No,
                black_box(&IMAP_THROTTLED[5..]),
            )
        })
    });
    g.bench_function("pop3_reply", |b| {
        b.iter(|| pop3::parse_reply(black_box("+OK Dovecot (Debian) ready.")))
    });
    g.bench_function("pop3_stat", |b| {
        b.iter(|| pop3::parse_stat(black_box("3 4521")))
    });
    g.bench_function("pop3_capa_sasl", |b| {
        b.iter(|| pop3::capa_sasl(black_box("SASL PLAIN XOAUTH2 OAUTHBEARER")))
    });
    g.bench_function("pop3_classify", |b| {
        b.iter(|| {
            pop3::classify(
                Stage::Auth,
                black_box("Authentication failure: unknown user name or bad password."),
            )
        })
    });
    g.bench_function("smtp_line", |b| {
        b.iter(|| parse_smtp_line(black_box("250-AUTH XOAUTH2 OAUTHBEARER")))
    });
    g.bench_function("smtp_ehlo_reply_11_lines", |b| {
        b.iter(|| {
            let mut lines = Vec::with_capacity(EHLO.len());
            for l in black_box(EHLO) {
                lines.push(parse_smtp_line(l).map(|(_, _, t)| t));
            }
            lines
        })
    });
    let ehlo = ehlo_reply();
    g.bench_function("smtp_auth_mechanisms", |b| {
        b.iter(|| smtp::auth_mechanisms(black_box(&ehlo)))
    });
    let refused = {
        let (code, _, text) = parse_smtp_line(SMTP_535).expect("valid line");
        SmtpReply {
            code,
            lines: vec![text],
        }
    };
    g.bench_function("smtp_classify_5_7_139", |b| {
        b.iter(|| smtp::classify(Stage::Auth, black_box(&refused)))
    });
    g.bench_function("sasl_decode_challenge", |b| {
        b.iter(|| sasl::decode_challenge(black_box(CHALLENGE)))
    });
    g.bench_function("throttling_hint", |b| {
        b.iter(|| throttled(black_box(IMAP_THROTTLED)))
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
