//! Secret hygiene across everything the exporter shows: an end-to-end run with canary client
//! secrets (from a file and from an environment variable), the real access tokens the fake
//! identity provider issues (captured by the IMAP server they were sent to), the rotating
//! refresh tokens of a delegated credential, and servers that echo what they were sent (an IMAP
//! server echoing the AUTHENTICATE line, a token endpoint echoing the request body into its
//! error). Every log line (stderr at debug level), `/metrics` (both formats), the status page,
//! every transcript page (HTML and text), `check`'s text and JSON reports and the configuration
//! error messages of `--config.check` and of a refused reload are searched for every canary,
//! raw and in its base64 forms, and every base64 word in them is decoded and searched too.
//! Every token request and one endpoint check go through a real tinyproxy that wants a user and
//! a canary password (from a file); bad configurations put the proxy password inline and inside
//! the proxy URL.
//! The figure: canary hits (0).

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use o365_mail_exporter::fake_idp::{App, FakeIdp, User};
use o365_mail_exporter::oauth::TokenStore;
use secrecy::ExposeSecret;

use crate::reliability::{
    delegated_credential_yaml, device_login, heavy, report, runtime, serve, store_refresh_token,
    test_pki, Behaviour, ALICE, IMAP_SCOPE, PUBLIC,
};
use crate::support::exporter::{bin, free_port, get, request, write};
use crate::support::proxy::{Tinyproxy, TinyproxyConf};

const APP: &str = "88888888-2222-3333-4444-555555555555";
const APP_ENV: &str = "99999999-2222-3333-4444-555555555555";
const FILE_SECRET: &str = "CANARY-file-secret-5b8e1f0c7d2a";
const ENV_SECRET: &str = "CANARY-env-secret-0e4d9a7b3c61";
const ENV_VAR: &str = "O365_CANARY_CLIENT_SECRET";
const INLINE_SECRET: &str = "CANARY-inline-secret-71c3e8a09f";
/// A secret YAML reads as a number: serde's type error would quote it.
const NUMERIC_SECRET: &str = "7031958264173302";
const PROXY_USER: &str = "canary-proxy-user";
const PROXY_PASSWORD: &str = "CANARY-proxy-password-3e9b61d2";

/// The stable middle of `s`'s base64 encodings at each of the three alignments it can have
/// inside a longer encoded string (standard and URL-safe alphabets).
fn base64_forms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pad in ["", "x", "xx"] {
        let data = format!("{pad}{s}");
        for enc in [STANDARD_NO_PAD.encode(&data), URL_SAFE_NO_PAD.encode(&data)] {
            // the first 4 characters may mix in the prefix, the last 4 the following bytes
            let skip = if pad.is_empty() { 0 } else { 4 };
            let keep = enc.len().saturating_sub(4);
            if keep > skip + 8 {
                out.push(enc[skip..keep].to_string());
            }
        }
    }
    out
}

/// Every place a canary (raw, base64, or inside a decodable base64 word) shows in `text`.
fn hits(what: &str, text: &str, canaries: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for c in canaries {
        let mut forms = vec![c.clone()];
        forms.extend(base64_forms(c));
        // a JWT's signature alone is as secret as the whole token
        if let Some(sig) = c
            .rsplit('.')
            .next()
            .filter(|s| s.len() >= 20 && c.matches('.').count() == 2)
        {
            forms.push(sig.to_string());
        }
        for f in &forms {
            if text.contains(f.as_str()) {
                found.push(format!("{what}: {:.24}... as {:.24}...", c, f));
            }
        }
    }
    for word in text.split(|ch: char| !(ch.is_ascii_alphanumeric() || "+/=-_".contains(ch))) {
        if word.len() < 16 {
            continue;
        }
        for engine in [&STANDARD as &dyn Decode, &URL_SAFE_NO_PAD, &STANDARD_NO_PAD] {
            if let Some(raw) = engine.decode_lossy(word) {
                for c in canaries {
                    if raw.contains(c.as_str()) {
                        found.push(format!(
                            "{what}: {:.24}... inside base64 {:.24}...",
                            c, word
                        ));
                    }
                }
            }
        }
    }
    found
}

trait Decode {
    fn decode_lossy(&self, w: &str) -> Option<String>;
}

impl<E: Engine> Decode for E {
    fn decode_lossy(&self, w: &str) -> Option<String> {
        self.decode(w)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// The exporter with the secret in its environment (set for the child only: `set_var` in a
/// multi-threaded test binary races with other tests' lookups).
struct Running {
    child: std::process::Child,
    addr: String,
    stderr: std::path::PathBuf,
}

impl Running {
    fn start(cfg: &str, dir: &std::path::Path) -> Running {
        let addr = format!("127.0.0.1:{}", free_port());
        let stderr = dir.join("exporter.stderr");
        let child = Command::new(bin())
            .args([
                "--config.file",
                cfg,
                "--log.level=debug",
                &format!("--web.listen-address={addr}"),
            ])
            .env(ENV_VAR, ENV_SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("exporter starts");
        let r = Running {
            child,
            addr,
            stderr,
        };
        let t = std::time::Instant::now();
        while !get(&r.addr, "/-/healthy").is_ok_and(|(s, _)| s == 200) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "not healthy: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        get(&self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn wait_metrics(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t = std::time::Instant::now();
        loop {
            let (_, m) = self.get("/metrics");
            if pred(&m) {
                return m;
            }
            assert!(
                t.elapsed() < within,
                "not reached within {within:?}:\n{m}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env(ENV_VAR, ENV_SECRET)
        .output()
        .expect("runs");
    format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_canary_reaches_logs_metrics_pages_transcripts_reports_or_config_errors() {
    let _heavy = heavy();
    let rt = runtime();
    let (pki, tls) = test_pki();
    let imap = rt.block_on(serve(Behaviour::Imap, Some(tls.clone())));
    let echo_imap = rt.block_on(serve(Behaviour::ImapEcho, Some(tls)));
    let echo_token = rt.block_on(serve(Behaviour::HttpEcho, None));
    let idp = rt
        .block_on(
            FakeIdp::builder()
                .app(
                    App::new(APP)
                        .secret(FILE_SECRET)
                        .roles(["IMAP.AccessAsApp"]),
                )
                .app(
                    App::new(APP_ENV)
                        .secret(ENV_SECRET)
                        .roles(["IMAP.AccessAsApp"]),
                )
                .app(App::new(PUBLIC).public_client(true))
                .user(User::new(ALICE))
                .strict_refresh(true)
                .start(),
        )
        .expect("fake IdP");
    let proxy = rt.block_on(Tinyproxy::start(TinyproxyConf {
        connect_ports: vec![imap.addr.port()],
        basic_auth: Some((PROXY_USER.into(), PROXY_PASSWORD.into())),
    }));
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let store = TokenStore::new(&state_dir);
    let first = rt.block_on(device_login(
        &idp,
        PUBLIC,
        &format!("{IMAP_SCOPE} offline_access"),
    ));
    let mut refresh_tokens = vec![first.json["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string()];
    store_refresh_token(&state_dir, "delegated", PUBLIC, &refresh_tokens[0]);
    let stored = || {
        store
            .load("delegated")
            .ok()
            .flatten()
            .map(|t| t.refresh_token.expose_secret().to_string())
    };
    let secret_file = write(dir.path(), "secret.txt", &format!("{FILE_SECRET}\n"));
    let proxy_password = write(dir.path(), "proxy-password", &format!("{PROXY_PASSWORD}\n"));
    let server = |port: u16| {
        format!(
            "{{imap: {{host: 127.0.0.1, port: {port}, tls: implicit, server_name: localhost, ca_file: {}}}}}",
            pki.ca_file.display()
        )
    };
    let yaml = format!(
        "state_dir: {}\ndefaults: {{interval: 2s, timeout: 2s, login_interval: 2s, login_timeout: 2s, jitter: 0s}}\n\
         proxy: {{url: {}, username: {PROXY_USER}, password_file: {}}}\n\
         endpoints:\n  - {{name: imap, host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {}}}\n\
         \x20 - {{name: via-proxy, host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: {}, via_proxy: true}}\n\
         credentials:\n\
         \x20 - {{name: app, tenant: {t}, client_id: {APP}, grant: client_credentials, client_secret_file: {}, token_url: {u}}}\n\
         \x20 - {{name: app-env, tenant: {t}, client_id: {APP_ENV}, grant: client_credentials, client_secret_env: {ENV_VAR}, token_url: {u}}}\n\
         \x20 - {{name: echo, tenant: {t}, client_id: {APP}, grant: client_credentials, client_secret_file: {}, token_url: http://127.0.0.1:{}/{t}/oauth2/v2.0/token}}\n\
         {}\
         mailboxes:\n\
         \x20 - {{name: mb-app, address: support@example.test, credential: app, protocols: [imap], servers: {}}}\n\
         \x20 - {{name: mb-env, address: sales@example.test, credential: app-env, protocols: [imap], servers: {}}}\n\
         \x20 - {{name: mb-user, address: {ALICE}, credential: delegated, protocols: [imap], servers: {}}}\n\
         \x20 - {{name: mb-echo, address: support@example.test, credential: app, protocols: [imap], servers: {}}}\n",
        state_dir.display(),
        proxy.url(),
        proxy_password.display(),
        imap.addr.port(),
        pki.ca_file.display(),
        imap.addr.port(),
        pki.ca_file.display(),
        secret_file.display(),
        secret_file.display(),
        echo_token.addr.port(),
        delegated_credential_yaml("delegated", &idp, ""),
        server(imap.addr.port()),
        server(imap.addr.port()),
        server(imap.addr.port()),
        server(echo_imap.addr.port()),
        t = idp.tenant(),
        u = idp.token_url(),
    );
    let cfg = write(dir.path(), "c.yaml", &yaml);
    let cfg_s = cfg.to_str().expect("utf8").to_string();

    // The running exporter, at debug level, with the secret in its environment.
    let e = Running::start(&cfg_s, dir.path());
    let m = e.wait_metrics(Duration::from_secs(20), |m| {
        ["app", "app-env", "delegated"].iter().all(|c| {
            m.contains(&format!("o365_token_reason{{credential=\"{c}\",reason=\"ok\"}} 1"))
        }) && m.contains("o365_token_reason{credential=\"echo\",reason=\"invalid_client_secret\"} 1")
            && ["mb-app", "mb-env", "mb-user"].iter().all(|mb| {
                m.contains(&format!(
                    "o365_login_success{{mailbox=\"{mb}\",protocol=\"imap\"}} 1"
                ))
            })
            && m.contains(
                "o365_login_reason{mailbox=\"mb-echo\",protocol=\"imap\",reason=\"auth_rejected\"} 1",
            )
            && m.contains("o365_endpoint_up{endpoint=\"via-proxy\"} 1")
    });
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{}", imap.addr.port()))
            && proxy.log().contains(&format!("POST {}", idp.token_url())),
        "the tokens and the endpoint check went through the proxy: {}",
        proxy.log()
    );
    let mut outputs: Vec<(String, String)> = vec![("metrics".into(), m)];
    let (_, om) = request(
        &e.addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )
    .expect("OpenMetrics scrape");
    outputs.push(("metrics (OpenMetrics)".into(), om));
    let (_, page) = e.get("/");
    let ids: Vec<String> = page
        .split("href=\"/checks/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| s.split('?').next().unwrap_or(s).to_string())
        .collect();
    assert!(
        ids.len() >= 5,
        "transcript links on the status page: {ids:?}"
    );
    outputs.push(("status page".into(), page));
    for id in &ids {
        for q in ["", "?format=text"] {
            let (s, body) = e.get(&format!("/checks/{id}{q}"));
            assert_eq!(s, 200, "/checks/{id}{q}");
            outputs.push((format!("/checks/{id}{q}"), body));
        }
    }
    // a refused reload: its answer and its log line
    let broken = write(
        dir.path(),
        "c.yaml",
        &format!("{yaml}  - {{name: bad, address: x@example.test, credential: nope, protocols: [imap], client_secret: {INLINE_SECRET}}}\n"),
    );
    let (status, answer) = request(&e.addr, "POST", "/-/reload", &[]).expect("reload");
    assert_eq!(status, 500, "{answer}");
    outputs.push(("refused reload answer".into(), answer));
    std::thread::sleep(Duration::from_millis(200));
    outputs.push(("exporter stderr (debug)".into(), e.log()));
    write(dir.path(), "c.yaml", &yaml);
    drop(broken);
    drop(e);
    refresh_tokens.extend(stored());

    // `check`, text and JSON
    for format in ["text", "json"] {
        outputs.push((
            format!("check --format {format}"),
            run(&["check", "--config.file", &cfg_s, "--format", format]),
        ));
        refresh_tokens.extend(stored());
    }
    // configuration errors with the canary where a secret would be (or nearly)
    let bad_configs = [
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secret: {INLINE_SECRET}}}\n"),
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secret: [{INLINE_SECRET}]}}\n"),
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secrt: {INLINE_SECRET}}}\n"),
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secret: {INLINE_SECRET}, client_secret_env: {ENV_VAR}}}\n"),
        format!("credentials:\n  - name: a\n    client_secret: \"{INLINE_SECRET}\n    tenant: x\n"),
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secret: {NUMERIC_SECRET}}}\n"),
        // the proxy password inline in a readable file, and inside the proxy URL
        format!("proxy:\n  url: http://127.0.0.1:3128\n  username: {PROXY_USER}\n  password: {PROXY_PASSWORD}\n"),
        format!("proxy:\n  url: http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128\n"),
        format!("proxy:\n  url: http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1\n"),
        // private file: the inline secret is accepted, another mistake is reported
        format!("credentials:\n  - {{name: a, tenant: t.example, client_id: {APP}, grant: client_credentials, client_secret: {INLINE_SECRET}}}\nmailboxes:\n  - {{name: m, address: m@example.test, credential: b, protocols: [imap]}}\n"),
    ];
    for (i, text) in bad_configs.iter().enumerate() {
        let p = write(dir.path(), &format!("bad{i}.yaml"), text);
        if i + 1 == bad_configs.len() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let said = run(&["--config.file", p.to_str().expect("utf8"), "--config.check"]);
        assert!(
            said.starts_with("exit Some(2)"),
            "bad config {i} accepted: {said}"
        );
        outputs.push((format!("--config.check of bad config {i}"), said));
    }

    let access_tokens: Vec<String> = imap
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        access_tokens.len() >= 3,
        "the IMAP server saw the access tokens: {}",
        access_tokens.len()
    );
    refresh_tokens.sort();
    refresh_tokens.dedup();
    assert!(
        refresh_tokens.len() >= 3,
        "the refresh token rotated: {}",
        refresh_tokens.len()
    );
    let mut canaries: Vec<String> = vec![
        FILE_SECRET.into(),
        ENV_SECRET.into(),
        INLINE_SECRET.into(),
        NUMERIC_SECRET.into(),
        PROXY_PASSWORD.into(),
        format!("{PROXY_USER}:{PROXY_PASSWORD}"),
    ];
    canaries.extend(access_tokens.iter().cloned());
    canaries.extend(refresh_tokens.iter().cloned());
    canaries.sort();
    canaries.dedup();
    let mut found = Vec::new();
    let mut bytes = 0;
    for (what, text) in &outputs {
        bytes += text.len();
        found.extend(hits(what, text, &canaries));
    }
    // the search works: it does find a canary where one is
    assert!(!hits(
        "self-test",
        &format!(
            "x {}",
            STANDARD.encode(format!(
                "user=a\x01auth=Bearer {}\x01\x01",
                access_tokens[0]
            ))
        ),
        &canaries
    )
    .is_empty());
    assert!(!hits("self-test", &format!("=={FILE_SECRET}=="), &canaries).is_empty());
    // ... also the proxy's Basic credentials as a header would carry them
    let header = format!(
        "Proxy-Authorization: Basic {}",
        STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
    );
    assert!(!hits("self-test", &header, &canaries).is_empty());
    report!(
        "canaries: {} canaries (4 client secrets, the proxy password, {} access tokens, {} refresh tokens) searched in {} outputs \
         ({} kB: stderr at debug, metrics in both formats, the status page, {} transcript pages, \
         check text and JSON, a refused reload, {} config errors): {} hits",
        canaries.len(),
        access_tokens.len(),
        refresh_tokens.len(),
        outputs.len(),
        bytes / 1000,
        ids.len() * 2,
        bad_configs.len(),
        found.len()
    );
    assert!(found.is_empty(), "canaries found:\n{}", found.join("\n"));
    drop((imap, echo_imap, echo_token, proxy));
}
