//! The status page and the transcript pages in a real browser (Debian's chromium, headless): every
//! configured check is rendered with its state and reason, every transcript link works, and nothing
//! needs JavaScript to be read: the pages carry no script and their Content-Security-Policy
//! (`default-src 'none'`) would forbid one, so what chromium renders is what any browser shows.
//! (`--dump-dom` itself needs the browser's scripting switched on, so it is not disabled here.)

use std::process::Command;
use std::time::Duration;

use crate::support::exporter::{free_port, write, Exporter};

/// The DOM chromium builds for `url`.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs (scripts/install-deps.sh installs it)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<html"),
        "chromium rendered nothing for {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

fn hrefs(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"))
        .collect()
}

#[test]
fn status_page_and_transcripts_render_without_javascript() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = open.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "defaults: {{interval: 2s, timeout: 2s, jitter: 0s}}\nendpoints:\n  - {{name: reachable, host: 127.0.0.1, port: {open_port}, tls: none}}\n  - {{name: closed, host: 127.0.0.1, port: {}}}\n  - {{name: nowhere, host: nothing.invalid, port: 993}}\n",
            free_port()
        ),
    );
    let e = Exporter::start(&["--config.file", cfg.to_str().expect("utf8")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while e.get("/-/ready").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = format!("http://{}", e.addr);
    let dom = dump_dom(&format!("{base}/"));
    // every check with its state and reason, readable without scripts
    for (name, state, reason) in [
        ("reachable", "OK", "ok"),
        ("closed", "FAIL", "connect_refused"),
        ("nowhere", "FAIL", "dns"),
    ] {
        let row = dom
            .split("<tr>")
            .find(|r| r.contains(&format!("<td>{name}</td>")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
        assert!(
            row.contains(&format!(">{state}</span>")),
            "{name} state:\n{row}"
        );
        assert!(
            row.contains(&format!("<td>{reason}</td>")),
            "{name} reason:\n{row}"
        );
    }
    assert!(dom.contains("fix:"), "failed rows carry their fix:\n{dom}");
    assert!(!dom.contains("<script"), "the page must not need scripts");
    let links: Vec<String> = hrefs(&dom)
        .into_iter()
        .filter(|h| h.starts_with("/checks/"))
        .collect();
    assert_eq!(links.len(), 3, "one transcript link per check: {links:?}");
    for link in &links {
        let page = dump_dom(&format!("{base}{link}"));
        let id = link.trim_start_matches("/checks/");
        assert!(page.contains(&format!("<h1>{id}</h1>")), "{link}:\n{page}");
        assert!(page.contains("Transcript"), "{link}:\n{page}");
        let text_link = hrefs(&page)
            .into_iter()
            .find(|h| h.contains("format=text"))
            .expect("plain-text link");
        let (status, text) = e.get(&text_link);
        assert_eq!(status, 200, "{text_link}");
        assert!(text.contains(&format!("check: {id}")), "{text}");
    }
    drop(open);
}
