//! The shipped alerting and dashboard files: the rules load and their unit tests pass (promtool),
//! the Alertmanager example is valid and routes every alert by severity (amtool), and the files
//! agree with each other and with `docs/metrics.md`.
//!
//! promtool and amtool are Debian packages (`prometheus`, `prometheus-alertmanager`), installed
//! by `scripts/install-deps.sh` as CI does. A missing tool fails these tests with that hint
//! rather than skipping them: a silent pass would hide broken rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Fails the test, with the fix, when promtool or amtool is not installed.
fn require_tools() {
    for tool in ["promtool", "amtool"] {
        match Command::new(tool).arg("--version").output() {
            Ok(_) => {}
            Err(e) => panic!(
                "`{tool}` cannot be run ({e}): run scripts/install-deps.sh (Debian packages \
                 prometheus and prometheus-alertmanager); CI installs them"
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn alerts() -> Vec<Rule> {
    let f: RuleFile = serde_yaml::from_str(&read("alerts/o365-mail-exporter.rules.yml"))
        .expect("rules file is YAML of the Prometheus rule-file shape");
    let rules: Vec<Rule> = f.groups.into_iter().flat_map(|g| g.rules).collect();
    assert!(rules.len() >= 15, "only {} rules found", rules.len());
    for r in &rules {
        assert!(
            r.alert.is_some(),
            "recording rule in the alerts file: {}",
            r.expr
        );
    }
    rules
}

/// `name -> type` from the table rows `| \`o365_...\` | type | ...` of docs/metrics.md.
fn documented_metrics() -> BTreeMap<String, String> {
    let doc = read("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 && cells[1].starts_with("`o365_") {
            out.insert(cells[1].trim_matches('`').to_string(), cells[2].to_string());
        }
    }
    assert!(out.len() >= 30, "docs/metrics.md tables not found");
    out
}

/// Whether `name` is a series the exporter (or Prometheus, for `up`) provides.
fn is_documented(name: &str, doc: &BTreeMap<String, String>) -> bool {
    if name == "up" || doc.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| doc.get(base))
            .is_some_and(|ty| ty == "histogram")
    })
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "Inf",
    "NaN",
];
/// Keywords whose parenthesised list holds label names, not expressions.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the string literal starting at `i` (quote char at `b[i]`).
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        if b[j] == b'\\' && q != b'`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Index just past the bracket that closes the one at `i`, skipping strings inside.
fn skip_bracket(b: &[u8], i: usize, close: u8) -> usize {
    let mut j = i + 1;
    while j < b.len() && b[j] != close {
        if matches!(b[j], b'"' | b'\'' | b'`') {
            j = skip_string(b, j);
        } else {
            j += 1;
        }
    }
    j + 1
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (matchers, `by (...)` lists) or Grafana variables.
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut depth = 0usize;
    let mut label_list_at: Option<usize> = None;
    let mut prev = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'{' => i = skip_bracket(b, i, b'}'),
            b'[' => i = skip_bracket(b, i, b']'),
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = skip_bracket(b, i, b'}');
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            b'(' => {
                depth += 1;
                if label_list_at.is_none() && LABEL_LISTS.contains(&prev.as_str()) {
                    label_list_at = Some(depth);
                }
                prev.clear();
                i += 1;
            }
            b')' => {
                if label_list_at == Some(depth) {
                    label_list_at = None;
                }
                depth = depth.saturating_sub(1);
                prev.clear();
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                // numbers and durations (`1e9`, `0.9`, `50m`)
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = b[i..].iter().find(|c| !c.is_ascii_whitespace()).copied();
                let is_metric = label_list_at.is_none()
                    && next != Some(b'(')
                    && !AGGREGATIONS.contains(&word)
                    && !KEYWORDS.contains(&word);
                if is_metric {
                    out.insert(word.to_string());
                }
                prev = word.to_string();
            }
            _ => i += 1,
        }
    }
    out
}

/// PromQL inside Go templates: the format strings of `printf "..."` calls.
fn template_queries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("printf \"") {
        let b = rest.as_bytes();
        let start = pos + "printf ".len();
        let end = skip_string(b, start);
        let literal = &rest[start..end];
        let decoded: String = serde_json::from_str(literal).expect("printf format is a Go string");
        out.push(decoded);
        rest = &rest[end..];
    }
    out
}

/// The anchors GitHub gives the headings of a markdown file.
fn heading_anchors(md: &str) -> BTreeSet<String> {
    md.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = root().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(&path).expect("readable dashboard");
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((path, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 4,
        "expected the four dashboards in dashboards/"
    );
    out
}

/// Every panel, rows' nested panels included.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// PromQL queries of a dashboard: panel targets, and the selectors inside the variables'
/// `label_values(SELECTOR, label)` queries.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.rsplit_once(','))
            .map(|(sel, _)| sel.trim().to_string())
            .unwrap_or_else(|| {
                panic!(
                    "variable {} query {q:?} is not label_values(...)",
                    v["name"]
                )
            });
        out.push(inner);
    }
    out
}

/// Grafana's variables replaced by values promtool accepts.
fn expand_grafana_variables(expr: &str) -> String {
    let mut s = expr.to_string();
    for v in ["$__rate_interval", "$__interval", "$__range"] {
        s = s.replace(v, "5m");
    }
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'{') {
            for c in it.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            while it
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                it.next();
            }
        }
        out.push('x');
    }
    out
}

#[test]
fn metric_scanner_finds_selected_metrics_only() {
    let got = selected_metrics(
        r#"sum by (instance, le) (rate(foo_bucket{a="b{c}"}[5m])) > 1 and on(job) bar
           * on(x) group_left(reason) label_replace(baz, "p", "$1", "q", "(r)") # qux
           unless present_over_time(quux{m=~"$mailbox"}[10m] offset 50m) / 1e9"#,
    );
    let want: BTreeSet<String> = ["foo_bucket", "bar", "baz", "quux"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
    let doc = documented_metrics();
    assert!(is_documented(
        "o365_tls_handshake_duration_seconds_bucket",
        &doc
    ));
    assert!(
        !is_documented("o365_endpoint_up_bucket", &doc),
        "gauge has no buckets"
    );
    assert!(!is_documented("o365_no_such_metric", &doc));
}

#[test]
fn promtool_and_amtool_accept_rules_tests_and_alertmanager_example() {
    require_tools();
    let out = Command::new("bash")
        .arg(root().join("scripts/check-rules.sh"))
        .current_dir(root())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/check-rules.sh failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rules found"), "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn every_alert_has_severity_annotations_and_documented_metrics() {
    let doc = documented_metrics();
    for r in alerts() {
        let name = r.alert.as_deref().unwrap_or_default();
        let sev = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(sev, Some("page" | "warning")),
            "{name}: severity {sev:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                r.annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                "{name}: no {key} annotation"
            );
        }
        let mut queries = vec![r.expr.clone()];
        for text in r.annotations.values() {
            queries.extend(template_queries(text));
        }
        let mut seen = BTreeSet::new();
        for q in &queries {
            for m in selected_metrics(q) {
                assert!(
                    is_documented(&m, &doc),
                    "{name}: metric {m} is not in docs/metrics.md"
                );
                seen.insert(m);
            }
        }
        assert!(!seen.is_empty(), "{name}: no metric found in {}", r.expr);
    }
}

#[test]
fn every_alert_has_a_runbook_section_matching_its_url() {
    let md = read("docs/runbooks.md");
    let anchors = heading_anchors(&md);
    let mut names = BTreeSet::new();
    for r in alerts() {
        let name = r.alert.clone().unwrap_or_default();
        let url = &r.annotations["runbook_url"];
        let (page, fragment) = url.split_once('#').expect("runbook_url has a #fragment");
        assert!(page.ends_with("docs/runbooks.md"), "{name}: {url}");
        assert_eq!(
            fragment,
            name.to_lowercase(),
            "{name}: anchor is the alert name"
        );
        assert!(
            md.lines().any(|l| l == format!("## {name}")),
            "docs/runbooks.md has no section `## {name}`"
        );
        assert!(anchors.contains(fragment), "{name}: #{fragment} not found");
        names.insert(name);
    }
    // every alert section belongs to an alert, and the page's own links resolve
    for l in md.lines().filter_map(|l| l.strip_prefix("## O365")) {
        assert!(
            names.contains(&format!("O365{l}")),
            "runbook for unknown alert O365{l}"
        );
    }
    // links into the sibling docs' sections (reasons.md#dns, ...) name existing headings
    let mut rest = md.as_str();
    while let Some(pos) = rest.find(".md#") {
        let start = rest[..pos].rfind("](").expect("markdown link") + 2;
        let end = pos + rest[pos..].find(')').expect("closed link");
        let (file, anchor) = rest[start..end].split_once('#').expect("anchored link");
        let target = read(&format!("docs/{file}"));
        assert!(
            heading_anchors(&target).contains(anchor),
            "runbooks.md links to {file}#{anchor}, no such heading"
        );
        rest = &rest[end..];
    }
    let mut rest = md.as_str();
    while let Some(pos) = rest.find("](#") {
        let link = &rest[pos + 3..];
        let end = link.find(')').expect("closed link");
        assert!(
            anchors.contains(&link[..end]),
            "link to missing anchor #{}",
            &link[..end]
        );
        rest = &link[end..];
    }
}

#[test]
fn alertmanager_example_names_only_existing_alerts() {
    let names: BTreeSet<String> = alerts().into_iter().filter_map(|r| r.alert).collect();
    let am = read("alerts/alertmanager.example.yml");
    let v: serde_yaml::Value = serde_yaml::from_str(&am).expect("YAML");
    assert!(
        v["inhibit_rules"]
            .as_sequence()
            .is_some_and(|s| s.len() >= 4),
        "inhibit rules"
    );
    let mut mentioned = BTreeSet::new();
    let b = am.as_bytes();
    let mut i = 0;
    while let Some(pos) = am[i..].find("O365") {
        let start = i + pos;
        let mut j = start + 4;
        if b.get(j) == Some(&b'(') {
            // `O365(A|B|C)`: each alternative is a name
            let close = am[j..].find(')').map(|k| j + k).expect("closed group");
            for alt in am[j + 1..close].split('|') {
                mentioned.insert(format!("O365{alt}"));
            }
            j = close;
        } else {
            while j < b.len() && b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j > start + 4 {
                mentioned.insert(am[start..j].to_string());
            }
        }
        i = j;
    }
    assert!(mentioned.len() >= 8, "{mentioned:?}");
    for m in &mentioned {
        assert!(
            names.contains(m),
            "alertmanager.example.yml names {m}, no such alert"
        );
    }
}

#[test]
fn dashboards_use_a_datasource_variable_instance_and_mailbox_and_documented_metrics() {
    let doc = documented_metrics();
    let mut uids = BTreeSet::new();
    for (path, d) in dashboards() {
        let file = path.display();
        assert!(
            uids.insert(d["uid"].as_str().unwrap_or_default().to_string()),
            "{file}: duplicate uid"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        assert_eq!(
            var("datasource").map(|v| v["type"].clone()),
            Some("datasource".into()),
            "{file}: datasource variable"
        );
        assert!(var("instance").is_some(), "{file}: no instance variable");
        assert!(var("mailbox").is_some(), "{file}: no mailbox variable");

        // Every datasource reference is the variable: never a fixed UID.
        let text = serde_json::to_string(&d).expect("serialises");
        let mut stack = vec![&d];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(ds) = m.get("datasource") {
                        let uid = ds.get("uid").and_then(|u| u.as_str()).or(ds.as_str());
                        assert_eq!(uid, Some("${datasource}"), "{file}: datasource {ds}");
                    }
                    stack.extend(m.values());
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        assert!(
            !text.contains("${DS_"),
            "{file}: import-time datasource input left in"
        );

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            assert!(
                ids.insert(p["id"].to_string()),
                "{file}: duplicate panel id"
            );
            if p["type"] != "row" {
                let desc = p["description"].as_str().unwrap_or_default();
                assert!(
                    desc.len() > 40,
                    "{file}: panel {} has no description",
                    p["title"]
                );
                assert!(
                    p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: panel {} has no query",
                    p["title"]
                );
            }
        }
        for q in dashboard_queries(&d) {
            let metrics = selected_metrics(&q);
            assert!(!metrics.is_empty(), "{file}: no metric in {q}");
            for m in metrics {
                assert!(
                    is_documented(&m, &doc),
                    "{file}: metric {m} (in {q}) is not in docs/metrics.md"
                );
            }
        }
    }
}

#[test]
fn dashboard_queries_parse_with_promtool() {
    require_tools();
    let mut yaml = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let mut n = 0;
    for (path, d) in dashboards() {
        for q in dashboard_queries(&d) {
            let expr = expand_grafana_variables(&q);
            let quoted = serde_json::to_string(&expr).expect("a JSON string is a YAML scalar");
            yaml.push_str(&format!(
                "      # {}\n      - record: dashboard_query_{n}\n        expr: {quoted}\n",
                path.file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default()
            ));
            n += 1;
        }
    }
    assert!(n >= 40, "only {n} dashboard queries found");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard-queries.rules.yml");
    std::fs::write(&file, &yaml).expect("write temp rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "a dashboard query does not parse:\n{}{}\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
