//! Raw configuration -> [`Config`], collecting every problem with its line and field path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::locate::Locator;
use super::raw::*;
use super::*;

pub(super) struct Context {
    pub source: String,
    pub base_dir: PathBuf,
    /// The config file is unreadable by group and others (inline secrets are allowed then).
    pub file_private: bool,
    /// Environment variables as seen by `proxy.from_env` and `*_env`; None: the process's.
    pub env: Option<std::collections::HashMap<String, String>>,
}

struct V<'a> {
    ctx: &'a Context,
    loc: Locator,
    problems: Vec<Problem>,
}

impl V<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.loc.value(path);
        self.problems.push(Problem {
            line: pos.map(|p| p.line),
            col: pos.map(|p| p.col),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.loc.key(path);
        self.problems.push(Problem {
            line: pos.map(|p| p.line),
            col: pos.map(|p| p.col),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The value of a lenient scalar, or None (recording a problem if it was malformed).
    fn get<T: Clone>(&mut self, path: &str, v: &Option<Lenient<T>>) -> Option<T> {
        match v {
            None => None,
            Some(Lenient(Ok(x))) => Some(x.clone()),
            Some(Lenient(Err(e))) => {
                self.at(path, e.clone());
                None
            }
        }
    }

    fn required_str(&mut self, path: &str, v: &LStr) -> Option<String> {
        match self.get(path, v) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.at(path, "must not be empty");
                None
            }
            None => {
                if v.is_none() {
                    self.at(path, "is required");
                }
                None
            }
        }
    }

    /// A list of enum names (`protocols`, `graph.checks`): each must parse and appear once.
    /// `None` when the list is absent (the caller decides whether that is an error or a default);
    /// an empty list is a problem.
    fn enum_list<T: PartialEq + Copy>(
        &mut self,
        path: &str,
        list: Option<&[Lenient<String>]>,
        parse: fn(&str) -> Option<T>,
        what: &str,
        allowed: &str,
    ) -> Option<Vec<T>> {
        let list = list?;
        if list.is_empty() {
            self.at(path, format!("must name at least one of {allowed}"));
        }
        let mut out = Vec::new();
        for (j, item) in list.iter().enumerate() {
            let pp = format!("{path}[{j}]");
            let Some(s) = self.get(&pp, &Some(item.clone())) else {
                continue;
            };
            match parse(&s) {
                Some(x) if out.contains(&x) => self.at(&pp, format!("{s} is listed twice")),
                Some(x) => out.push(x),
                None => self.at(&pp, format!("{s:?} is not a {what} ({allowed})")),
            }
        }
        Some(out)
    }

    fn duration(&mut self, path: &str, v: &LStr, default: Duration) -> Duration {
        let Some(s) = self.get(path, v) else {
            return default;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.at(
                    path,
                    format!("{s:?} is not a duration like 30s or 5m ({e})"),
                );
                default
            }
        }
    }

    fn port(&mut self, path: &str, v: &LInt) -> Option<u16> {
        let n = self.get(path, v)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.at(path, format!("{n} is not a port"));
                None
            }
        }
    }

    fn tls(&mut self, path: &str, v: &LStr) -> Option<TlsMode> {
        let s = self.get(path, v)?;
        let m = TlsMode::parse(&s);
        if m.is_none() {
            let all: Vec<&str> = TlsMode::ALL.iter().map(|m| m.as_str()).collect();
            self.at(
                path,
                format!("{s:?} is not a TLS mode (one of {})", all.join(", ")),
            );
        }
        m
    }

    fn file(&mut self, path: &str, v: &LStr) -> Option<PathBuf> {
        let s = self.get(path, v)?;
        let p = self.resolve(&s);
        if !p.is_file() {
            self.at(path, format!("{} is not a readable file", p.display()));
        }
        Some(p)
    }

    /// An environment variable (the test override, else the process environment).
    fn env(&self, name: &str) -> Option<String> {
        match &self.ctx.env {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// A secret given inline (only in a private file), in a file or in an environment variable:
    /// at most one of the three. `what` names the keys in messages (`client_secret`).
    fn secret(
        &mut self,
        base: &str,
        what: &str,
        inline: &LStr,
        file: &LStr,
        env: &LStr,
    ) -> Vec<SecretString> {
        let key = |f: &str| {
            if base.is_empty() {
                f.to_string()
            } else {
                format!("{base}.{f}")
            }
        };
        let mut found = Vec::new();
        // serde's type error quotes the value ("invalid type: integer `1234`"), which here is the
        // secret itself (all digits, or anything else YAML reads as a number or boolean)
        let value = match inline {
            Some(Lenient(Err(_))) => {
                self.at(
                    &key(what),
                    format!("must be a string: put the secret in quotes (or use {what}_file)"),
                );
                None
            }
            other => self.get(&key(what), other),
        };
        if let Some(s) = value {
            if self.ctx.file_private {
                found.push(SecretString::from(s));
            } else {
                self.at(
                    &key(what),
                    format!("an inline secret is refused because the config file is readable by group or others; use {what}_file or {what}_env, or chmod 600 the config file"),
                );
            }
        }
        let file_key = key(&format!("{what}_file"));
        if let Some(path) = self.file(&file_key, file) {
            match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => {
                    found.push(SecretString::from(s.trim().to_string()))
                }
                Ok(_) => self.at(&file_key, format!("{} is empty", path.display())),
                Err(e) => self.at(&file_key, format!("cannot read {}: {e}", path.display())),
            }
        }
        let env_key = key(&format!("{what}_env"));
        if let Some(var) = self.get(&env_key, env) {
            match self.env(&var) {
                Some(s) if !s.trim().is_empty() => {
                    found.push(SecretString::from(s.trim().to_string()))
                }
                _ => self.at(
                    &env_key,
                    format!("environment variable {var} is not set or empty"),
                ),
            }
        }
        found
    }

    fn resolve(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.ctx.base_dir.join(p)
        }
    }

    fn name(
        &mut self,
        path: &str,
        v: &LStr,
        seen: &mut HashSet<String>,
        what: &str,
    ) -> Option<String> {
        let n = self.required_str(path, v)?;
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || n.len() > 64
        {
            self.at(
                path,
                format!("{n:?} is not a valid {what} name (letters, digits, '-', '_', '.'; at most 64; it becomes a metric label)"),
            );
            return None;
        }
        if !seen.insert(n.clone()) {
            self.at(path, format!("{what} name {n:?} is used twice"));
        }
        Some(n)
    }
}

pub(super) fn load(text: &str, ctx: &Context) -> Result<Config, ConfigError> {
    let mut v = V {
        ctx,
        loc: Locator::new(text),
        problems: Vec::new(),
    };
    let mut unknown: Vec<String> = Vec::new();
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        match serde_ignored::deserialize(de, |p| unknown.push(path_string(&p))) {
            Ok(r) => r,
            Err(e) => {
                let e: serde_yaml::Error = e;
                let pos = e.location();
                return Err(ConfigError {
                    source_name: ctx.source.clone(),
                    problems: vec![Problem {
                        line: pos.as_ref().map(|p| p.line()),
                        col: pos.as_ref().map(|p| p.column()),
                        path: String::new(),
                        message: strip_position(&e.to_string()),
                    }],
                });
            }
        }
    };
    for p in &unknown {
        v.at_key(p, "unknown field");
    }
    let cfg = validate(&mut v, &raw);
    if v.problems.is_empty() {
        Ok(cfg)
    } else {
        v.problems
            .sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.col.unwrap_or(0)));
        Err(ConfigError {
            source_name: ctx.source.clone(),
            problems: v.problems,
        })
    }
}

/// serde_yaml appends " at line N column M" to its messages; we print the position in front.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn path_string(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        P::Map { parent, key } => {
            let base = path_string(parent);
            if base.is_empty() {
                key.to_string()
            } else {
                format!("{base}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_string(parent)
        }
    }
}

fn validate(v: &mut V<'_>, raw: &RawConfig) -> Config {
    let cloud = match v.get("cloud", &raw.cloud) {
        None => &cloud::WORLDWIDE,
        Some(name) => match cloud::by_name(&name) {
            Some(c) => c,
            None => {
                let all: Vec<&str> = cloud::ALL.iter().map(|c| c.name).collect();
                v.at(
                    "cloud",
                    format!("{name:?} is not a cloud (one of {})", all.join(", ")),
                );
                &cloud::WORLDWIDE
            }
        },
    };
    let defaults = defaults(v, raw.defaults.as_ref());
    let proxy = proxy(v, raw.proxy.as_ref());
    let state_dir = match v.get("state_dir", &raw.state_dir) {
        Some(s) => v.resolve(&s),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let endpoints = endpoints(v, raw, cloud, &defaults, proxy.as_ref());
    let servers = servers(v, "servers", raw.servers.as_ref(), &default_servers(cloud));
    let mailboxes = mailboxes(v, raw, &defaults, &servers);
    let credentials = credentials(v, raw, cloud, &defaults, &mailboxes, proxy.as_ref());
    let graph = graph(v, raw, cloud, &defaults, &credentials, &mailboxes);
    let product = raw.product.as_ref().and_then(|p| {
        let url = v.required_str("product.external_url", &p.external_url)?;
        match url::Url::parse(&url) {
            Ok(u) if u.host_str().is_some() => Some(Product { external_url: url }),
            _ => {
                v.at(
                    "product.external_url",
                    format!("{url:?} is not an absolute URL like https://ece.example.com"),
                );
                None
            }
        }
    });
    Config {
        source: v.ctx.source.clone(),
        cloud,
        defaults,
        state_dir,
        endpoints,
        credentials,
        mailboxes,
        product,
        graph,
        proxy,
        proxy_from_env: raw
            .proxy
            .as_ref()
            .is_some_and(|p| matches!(p.from_env, Some(Lenient(Ok(true))))),
    }
}

/// Environment variables `proxy.from_env` reads, in order (the HTTPS proxy: every request the
/// exporter sends through a proxy is HTTPS).
const PROXY_ENV: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
/// Environment variables of the `no_proxy` list under `from_env`.
const NO_PROXY_ENV: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The `proxy:` section. `None` when there is none, it is invalid, or `from_env` finds no
/// variable set.
fn proxy(v: &mut V<'_>, raw: Option<&RawProxy>) -> Option<Arc<ProxySettings>> {
    let r = raw?;
    let from_env = v.get("proxy.from_env", &r.from_env).unwrap_or(false);
    let url = v.get("proxy.url", &r.url);
    let mut no_proxy: Vec<String> = Vec::new();
    for (j, item) in r.no_proxy.iter().flatten().enumerate() {
        let pp = format!("proxy.no_proxy[{j}]");
        let Some(entry) = v.get(&pp, &Some(item.clone())) else {
            continue;
        };
        let entry = entry.trim().to_string();
        if entry.is_empty() || entry.contains(|c: char| c == ',' || c.is_whitespace()) {
            v.at(
                &pp,
                "must be one host, domain (.example.com), IP address, CIDR range or *; one entry per list item",
            );
        } else {
            no_proxy.push(entry);
        }
    }
    let username = v.get("proxy.username", &r.username);
    if let Some(u) = &username {
        if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) {
            v.at(
                "proxy.username",
                "must be a non-empty user name without ':' (HTTP basic authentication)",
            );
        }
    }
    let mut passwords = v.secret(
        "proxy",
        "password",
        &r.password,
        &r.password_file,
        &r.password_env,
    );
    if passwords.len() > 1 {
        v.at_key(
            "proxy",
            "set only one of password, password_file, password_env",
        );
    }
    let mut password = passwords.drain(..).next();
    let (text, origin, path) = match (url, from_env) {
        (Some(_), true) => {
            v.at(
                "proxy.from_env",
                "set either proxy.url or proxy.from_env: true, not both",
            );
            return None;
        }
        (Some(u), false) => (u, ProxyOrigin::Config, "proxy.url"),
        (None, true) => {
            let found = PROXY_ENV
                .iter()
                .find_map(|k| v.env(k).filter(|s| !s.trim().is_empty()).map(|s| (*k, s)));
            let (var, value) = found?;
            for k in NO_PROXY_ENV {
                if let Some(list) = v.env(k).filter(|s| !s.trim().is_empty()) {
                    no_proxy.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(str::to_string),
                    );
                    break;
                }
            }
            (value, ProxyOrigin::Env(var), "proxy.from_env")
        }
        (None, false) => {
            v.at_key(
                "proxy",
                "set proxy.url (http://proxy.example.com:3128) or proxy.from_env: true",
            );
            return None;
        }
    };
    let parsed = parse_proxy_url(text.trim());
    let what = match origin {
        ProxyOrigin::Config => "the URL".to_string(),
        ProxyOrigin::Env(var) => format!("the proxy in {var}"),
    };
    let p = match parsed {
        Ok(p) => p,
        Err(msg) if origin == ProxyOrigin::Config => {
            v.at(path, msg);
            return None;
        }
        Err(msg) => {
            v.at(path, format!("{what} {msg}"));
            return None;
        }
    };
    if p.userinfo.is_some() && origin == ProxyOrigin::Config {
        // not quoted: the URL holds a password
        v.at(
            path,
            "must not hold credentials: set proxy.username and proxy.password_file (or password_env)",
        );
        return None;
    }
    let mut username = username;
    if let Some((u, pw)) = p.userinfo {
        if username.is_some() || password.is_some() {
            v.at(
                path,
                format!("{what} holds credentials, and so does the proxy section: keep one"),
            );
        } else {
            username = Some(u);
            password = pw.map(SecretString::from);
        }
    }
    match (&username, &password) {
        (None, Some(_)) => v.at_key("proxy", "a proxy password needs proxy.username"),
        (Some(_), None) => v.at(
            "proxy.username",
            "needs a password: set proxy.password_file or proxy.password_env",
        ),
        _ => {}
    }
    Some(Arc::new(ProxySettings {
        url: format!("http://{}:{}/", bracket(&p.host), p.port),
        host: p.host,
        port: p.port,
        username,
        password,
        no_proxy,
        origin,
    }))
}

/// `[::1]` for an IPv6 address, the name or IPv4 address as is.
fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

struct ProxyUrl {
    host: String,
    port: u16,
    /// User and (percent-decoded) password, from `http://user:pass@host:port`.
    userinfo: Option<(String, Option<String>)>,
}

/// `http://host:port` (the scheme may be left out, as curl allows). Messages never quote the
/// text: it may hold a password.
fn parse_proxy_url(text: &str) -> Result<ProxyUrl, String> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let bad = || "is not a proxy URL like http://proxy.example.com:3128".to_string();
    let u = url::Url::parse(&with_scheme).map_err(|_| bad())?;
    if u.scheme() != "http" {
        return Err(format!(
            "uses {}://: only http:// proxies are supported (the tunnel to each server still carries TLS end to end)",
            u.scheme()
        ));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad()),
    };
    if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
        return Err("must be just http://host:port (no path or query)".into());
    }
    // url drops a port equal to the scheme's default, so look for it in the text itself: a
    // proxy's port is never assumed (curl would take 1080, reqwest 80)
    let authority = with_scheme
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let has_port = match hostport.rfind(']') {
        Some(i) => hostport[i..].contains(':'),
        None => hostport.contains(':'),
    };
    let port = match (has_port, u.port_or_known_default()) {
        (true, Some(p)) if p > 0 => p,
        _ => return Err("needs a port, e.g. http://proxy.example.com:3128".into()),
    };
    let userinfo = if u.username().is_empty() {
        None
    } else {
        Some((
            crate::percent_decode(u.username()),
            u.password().map(crate::percent_decode),
        ))
    };
    Ok(ProxyUrl {
        host,
        port,
        userinfo,
    })
}

/// Where rotated refresh tokens are kept when `state_dir` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/o365-mail-exporter";

fn defaults(v: &mut V<'_>, raw: Option<&RawDefaults>) -> Defaults {
    let d = Defaults::default();
    let Some(r) = raw else { return d };
    let max = match v.get("defaults.max_concurrent_checks", &r.max_concurrent_checks) {
        None => d.max_concurrent_checks,
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            v.at(
                "defaults.max_concurrent_checks",
                format!("{n} is outside 1..=1024"),
            );
            d.max_concurrent_checks
        }
    };
    let out = Defaults {
        interval: v.duration("defaults.interval", &r.interval, d.interval),
        timeout: v.duration("defaults.timeout", &r.timeout, d.timeout),
        jitter: v.duration("defaults.jitter", &r.jitter, d.jitter),
        login_interval: v.duration(
            "defaults.login_interval",
            &r.login_interval,
            d.login_interval,
        ),
        login_timeout: v.duration("defaults.login_timeout", &r.login_timeout, d.login_timeout),
        token_interval: v.duration(
            "defaults.token_interval",
            &r.token_interval,
            d.token_interval,
        ),
        max_concurrent_checks: max,
    };
    check_interval(v, "defaults.interval", out.interval, out.timeout);
    check_interval(
        v,
        "defaults.login_interval",
        out.login_interval,
        out.login_timeout,
    );
    out
}

fn check_interval(v: &mut V<'_>, path: &str, interval: Duration, timeout: Duration) {
    if interval < Duration::from_secs(1) {
        v.at(path, "must be at least 1s");
    } else if timeout > interval {
        v.at(
            path,
            format!(
                "is shorter than the timeout ({})",
                humantime::format_duration(timeout)
            ),
        );
    }
    if timeout.is_zero() {
        v.at(path, "timeout must be above 0");
    }
}

/// The four public endpoints of a cloud, used when `endpoints:` is not given.
fn preset_endpoint(cloud: &Cloud, service: &str) -> Option<(String, u16, TlsMode)> {
    Some(match service {
        "login" => (cloud.authority_host.to_string(), 443, TlsMode::Implicit),
        "imap" => (cloud.imap_host.to_string(), 993, TlsMode::Implicit),
        "pop3" => (cloud.imap_host.to_string(), 995, TlsMode::Implicit),
        "smtp" => (cloud.smtp_host.to_string(), 587, TlsMode::StarttlsSmtp),
        "graph" => (cloud.graph_host.to_string(), 443, TlsMode::Implicit),
        _ => return None,
    })
}

const SERVICES: [&str; 5] = ["login", "imap", "pop3", "smtp", "graph"];

/// Whether an endpoint without `via_proxy` follows the proxy: an HTTPS endpoint (implicit TLS
/// on 443) is checked the way the exporter's own HTTPS requests travel, so through the proxy
/// unless `no_proxy` names its host. Mail ports never pass an HTTP proxy.
fn auto_proxy(
    proxy: Option<&Arc<ProxySettings>>,
    host: &str,
    port: u16,
    tls: TlsMode,
) -> Option<Arc<ProxySettings>> {
    let p = proxy?;
    (tls == TlsMode::Implicit && port == 443 && !p.bypasses(host)).then(|| p.clone())
}

fn endpoints(
    v: &mut V<'_>,
    raw: &RawConfig,
    cloud: &Cloud,
    d: &Defaults,
    proxy: Option<&Arc<ProxySettings>>,
) -> Vec<Endpoint> {
    let Some(list) = &raw.endpoints else {
        return ["login", "imap", "pop3", "smtp"]
            .into_iter()
            .filter_map(|s| {
                let (host, port, tls) = preset_endpoint(cloud, s)?;
                Some(Endpoint {
                    name: s.to_string(),
                    server_name: host.clone(),
                    proxy: auto_proxy(proxy, &host, port, tls),
                    host,
                    port,
                    tls,
                    ca_file: None,
                    interval: d.interval,
                    timeout: d.timeout,
                })
            })
            .collect();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let p = |f: &str| format!("endpoints[{i}].{f}");
        let name = v.name(&p("name"), &e.name, &mut seen, "endpoint");
        let preset = match v.get(&p("service"), &e.service) {
            None => None,
            Some(s) => match preset_endpoint(cloud, &s) {
                Some(x) => Some(x),
                None => {
                    v.at(
                        &p("service"),
                        format!("{s:?} is not a service (one of {})", SERVICES.join(", ")),
                    );
                    None
                }
            },
        };
        let host = match (v.get(&p("host"), &e.host), &preset) {
            (Some(h), _) => Some(h),
            (None, Some((h, _, _))) => Some(h.clone()),
            (None, None) => {
                if e.service.is_none() {
                    v.at(
                        &p("host"),
                        "is required (or name a `service` of the cloud preset)",
                    );
                }
                None
            }
        };
        let port = match (&e.port, &preset) {
            (Some(_), _) => v.port(&p("port"), &e.port),
            (None, Some((_, port, _))) => Some(*port),
            (None, None) => {
                if e.service.is_none() {
                    v.at(&p("port"), "is required");
                }
                None
            }
        };
        let tls = match (&e.tls, &preset) {
            (Some(_), _) => v.tls(&p("tls"), &e.tls),
            (None, Some((_, _, t))) => Some(*t),
            (None, None) => Some(TlsMode::Implicit),
        };
        let server_name = v.get(&p("server_name"), &e.server_name);
        let ca_file = v.file(&p("ca_file"), &e.ca_file);
        let interval = v.duration(&p("interval"), &e.interval, d.interval);
        let timeout = v.duration(&p("timeout"), &e.timeout, d.timeout);
        // inherited values were checked once under `defaults`
        if e.interval.is_some() || e.timeout.is_some() {
            check_interval(v, &p("interval"), interval, timeout);
        }
        let via_proxy = v.get(&p("via_proxy"), &e.via_proxy);
        if via_proxy == Some(true) {
            if proxy.is_none() {
                v.at(
                    &p("via_proxy"),
                    "no proxy is configured: add a top-level proxy: section (or set proxy.from_env and HTTPS_PROXY)",
                );
            }
            if tls.is_some_and(|t| t != TlsMode::Implicit) {
                v.at(
                    &p("via_proxy"),
                    "only tls: implicit endpoints (HTTPS) pass an HTTP proxy; IMAP, POP3 and SMTP go direct",
                );
            }
        }
        if let (Some(name), Some(host), Some(port), Some(tls)) = (name, host, port, tls) {
            let proxy = match via_proxy {
                Some(true) => proxy.cloned(),
                Some(false) => None,
                None => auto_proxy(proxy, &host, port, tls),
            };
            out.push(Endpoint {
                name,
                server_name: server_name.unwrap_or_else(|| host.clone()),
                host,
                port,
                tls,
                ca_file,
                interval,
                timeout,
                proxy,
            });
        }
    }
    out
}

struct ServerSet {
    imap: Arc<Server>,
    pop3: Arc<Server>,
    smtp: Arc<Server>,
}

fn default_servers(cloud: &Cloud) -> ServerSet {
    let s = |host: &str, port, tls| {
        Arc::new(Server {
            host: host.to_string(),
            port,
            tls,
            server_name: host.to_string(),
            ca_file: None,
        })
    };
    ServerSet {
        imap: s(cloud.imap_host, 993, TlsMode::Implicit),
        pop3: s(cloud.imap_host, 995, TlsMode::Implicit),
        smtp: s(cloud.smtp_host, 587, TlsMode::StarttlsSmtp),
    }
}

fn servers(v: &mut V<'_>, path: &str, raw: Option<&RawServers>, base: &ServerSet) -> ServerSet {
    let Some(r) = raw else {
        return ServerSet {
            imap: base.imap.clone(),
            pop3: base.pop3.clone(),
            smtp: base.smtp.clone(),
        };
    };
    ServerSet {
        imap: server(v, &format!("{path}.imap"), r.imap.as_ref(), &base.imap),
        pop3: server(v, &format!("{path}.pop3"), r.pop3.as_ref(), &base.pop3),
        smtp: server(v, &format!("{path}.smtp"), r.smtp.as_ref(), &base.smtp),
    }
}

fn server(v: &mut V<'_>, path: &str, raw: Option<&RawServer>, base: &Arc<Server>) -> Arc<Server> {
    let Some(r) = raw else { return base.clone() };
    let host = v.get(&format!("{path}.host"), &r.host);
    let server_name = v.get(&format!("{path}.server_name"), &r.server_name);
    let port = if r.port.is_some() {
        v.port(&format!("{path}.port"), &r.port)
    } else {
        None
    };
    let tls = if r.tls.is_some() {
        v.tls(&format!("{path}.tls"), &r.tls)
    } else {
        None
    };
    let ca_file = v.file(&format!("{path}.ca_file"), &r.ca_file);
    if tls == Some(TlsMode::None) {
        // a login sends a bearer token: never over a connection without TLS
        v.at(&format!("{path}.tls"), "a mail server for logins must use TLS (implicit or starttls-*): the token would travel in clear text");
    }
    let host_changed = host.is_some();
    let host = host.unwrap_or_else(|| base.host.clone());
    Arc::new(Server {
        server_name: server_name.unwrap_or_else(|| {
            if host_changed {
                host.clone()
            } else {
                base.server_name.clone()
            }
        }),
        host,
        port: port.unwrap_or(base.port),
        tls: tls.unwrap_or(base.tls),
        ca_file: ca_file.or_else(|| base.ca_file.clone()),
    })
}

fn looks_like_address(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace))
}

fn mailboxes(v: &mut V<'_>, raw: &RawConfig, d: &Defaults, base: &ServerSet) -> Vec<Mailbox> {
    let Some(list) = &raw.mailboxes else {
        return Vec::new();
    };
    let credential_names: Vec<String> = raw
        .credentials
        .iter()
        .flatten()
        .filter_map(|c| match &c.name {
            Some(Lenient(Ok(n))) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let p = |f: &str| format!("mailboxes[{i}].{f}");
        let name = v.name(&p("name"), &m.name, &mut seen, "mailbox");
        if let Some(n) = &name {
            if n.contains('@') {
                v.at(
                    &p("name"),
                    "must be a short label, not an e-mail address (it becomes a metric label)",
                );
            }
        }
        let address = v.required_str(&p("address"), &m.address);
        if let Some(a) = &address {
            if !looks_like_address(a) {
                v.at(&p("address"), format!("{a:?} is not an e-mail address"));
            }
        }
        let login_as = v.get(&p("login_as"), &m.login_as);
        if let Some(a) = &login_as {
            if !looks_like_address(a) {
                v.at(&p("login_as"), format!("{a:?} is not an e-mail address"));
            }
        }
        let credential = v.required_str(&p("credential"), &m.credential);
        if let Some(c) = &credential {
            if !credential_names.iter().any(|n| n == c) {
                v.at(&p("credential"), format!("no credential is named {c:?}"));
            }
        }
        let protocols = v
            .enum_list(
                &p("protocols"),
                m.protocols.as_deref(),
                Protocol::parse,
                "protocol",
                "imap, pop3, smtp",
            )
            .unwrap_or_else(|| {
                v.at(&p("protocols"), "is required (any of imap, pop3, smtp)");
                Vec::new()
            });
        let mechanism = match v.get(&p("mechanism"), &m.mechanism).as_deref() {
            None | Some("xoauth2") => Mechanism::XOAuth2,
            Some("oauthbearer") => Mechanism::OAuthBearer,
            Some(other) => {
                v.at(
                    &p("mechanism"),
                    format!("{other:?} is not a mechanism (xoauth2, oauthbearer)"),
                );
                Mechanism::XOAuth2
            }
        };
        let smtp_mail_from = v
            .get(&p("smtp_mail_from"), &m.smtp_mail_from)
            .unwrap_or(login_as.is_some());
        let interval = v.duration(&p("interval"), &m.interval, d.login_interval);
        let timeout = v.duration(&p("timeout"), &m.timeout, d.login_timeout);
        if m.interval.is_some() || m.timeout.is_some() {
            check_interval(v, &p("interval"), interval, timeout);
        }
        let set = servers(v, &p("servers"), m.servers.as_ref(), base);
        if let (Some(name), Some(address)) = (name, address) {
            out.push(Mailbox {
                name,
                address,
                credential: credential.unwrap_or_default(),
                protocols,
                login_as,
                mechanism,
                smtp_mail_from,
                interval,
                timeout,
                imap: set.imap,
                pop3: set.pop3,
                smtp: set.smtp,
            });
        }
    }
    out
}

fn credentials(
    v: &mut V<'_>,
    raw: &RawConfig,
    cloud: &Cloud,
    d: &Defaults,
    mailboxes: &[Mailbox],
    proxy: Option<&Arc<ProxySettings>>,
) -> Vec<Credential> {
    let Some(list) = &raw.credentials else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let p = |f: &str| format!("credentials[{i}].{f}");
        let name = v.name(&p("name"), &c.name, &mut seen, "credential");
        let tenant = v.required_str(&p("tenant"), &c.tenant);
        let client_id = v.required_str(&p("client_id"), &c.client_id);
        let grant = match v.required_str(&p("grant"), &c.grant).as_deref() {
            Some("client_credentials") => Some(GrantKind::ClientCredentials),
            Some("refresh_token") => Some(GrantKind::RefreshToken),
            Some(other) => {
                v.at(
                    &p("grant"),
                    format!("{other:?} is not a grant (client_credentials, refresh_token)"),
                );
                None
            }
            None => None,
        };
        let authority = match v.get(&p("authority"), &c.authority) {
            Some(a) => match url::Url::parse(&a) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
                    a.trim_end_matches('/').to_string()
                }
                _ => {
                    v.at(
                        &p("authority"),
                        format!(
                            "{a:?} is not an https:// URL (http:// only to a loopback address)"
                        ),
                    );
                    format!("https://{}", cloud.authority_host)
                }
            },
            None => format!("https://{}", cloud.authority_host),
        };
        let tenant_s = tenant.clone().unwrap_or_default();
        let token_url = match v.get(&p("token_url"), &c.token_url) {
            Some(t) => match url::Url::parse(&t) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => t,
                _ => {
                    // a secret must never travel in clear text over a network
                    v.at(
                        &p("token_url"),
                        format!(
                            "{t:?} is not an https:// URL (http:// only to a loopback address)"
                        ),
                    );
                    format!("{authority}/{tenant_s}/oauth2/v2.0/token")
                }
            },
            None => format!("{authority}/{tenant_s}/oauth2/v2.0/token"),
        };
        if c.token_url.is_some() {
            clear_text_via_proxy(v, &p("token_url"), &token_url, proxy);
        } else if c.authority.is_some() {
            clear_text_via_proxy(v, &p("authority"), &token_url, proxy);
        }
        let client_auth = client_auth(v, i, c);
        if let (Some(GrantKind::ClientCredentials), ClientAuth::None) = (grant, &client_auth) {
            v.at(&p("grant"), "client_credentials needs client_secret_file, client_secret_env or client_certificate");
        }
        if matches!(grant, Some(GrantKind::ClientCredentials))
            && matches!(
                tenant.as_deref(),
                Some("common" | "organizations" | "consumers")
            )
        {
            v.at(&p("tenant"), "client credentials need the tenant ID or domain, not common/organizations/consumers (AADSTS9001023)");
        }
        let name_s = name.clone().unwrap_or_default();
        let mut protocols: Vec<Protocol> = Vec::new();
        for m in mailboxes.iter().filter(|m| m.credential == name_s) {
            for pr in &m.protocols {
                if !protocols.contains(pr) {
                    protocols.push(*pr);
                }
            }
        }
        protocols.sort();
        let scopes = match &c.scopes {
            Some(list) => {
                let mut s = Vec::new();
                for (j, item) in list.iter().enumerate() {
                    if let Some(x) = v.get(
                        &format!("credentials[{i}].scopes[{j}]"),
                        &Some(item.clone()),
                    ) {
                        s.push(x);
                    }
                }
                s
            }
            None => default_scopes(cloud, grant, &protocols),
        };
        let secret_expires = v
            .get(&p("secret_expires"), &c.secret_expires)
            .and_then(|s| match parse_date(&s) {
                Some(t) => Some(t),
                None => {
                    v.at(
                        &p("secret_expires"),
                        format!("{s:?} is not a date like 2027-01-31 or 2027-01-31T12:00:00Z"),
                    );
                    None
                }
            });
        let redirect_uri = v.get(&p("redirect_uri"), &c.redirect_uri);
        if let Some(r) = &redirect_uri {
            if url::Url::parse(r)
                .map(|u| u.host_str().is_none())
                .unwrap_or(true)
            {
                v.at(&p("redirect_uri"), format!("{r:?} is not an absolute URL"));
            }
        }
        let expected_identity = v.get(&p("expected_identity"), &c.expected_identity);
        let refresh_ahead = v.duration(
            &p("refresh_ahead"),
            &c.refresh_ahead,
            Duration::from_secs(600),
        );
        let interval = v.duration(&p("interval"), &c.interval, d.token_interval);
        let timeout = v.duration(&p("timeout"), &c.timeout, d.timeout);
        let ca_file = v.file(&p("ca_file"), &c.ca_file);
        if let (Some(name), Some(tenant), Some(client_id), Some(grant)) =
            (name, tenant, client_id, grant)
        {
            out.push(Credential {
                name,
                authorize_url: format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
                device_code_url: format!("{authority}/{tenant}/oauth2/v2.0/devicecode"),
                tenant,
                client_id,
                grant,
                client_auth,
                authority,
                token_url,
                scopes,
                expected_identity,
                secret_expires,
                refresh_ahead,
                redirect_uri,
                interval,
                timeout,
                ca_file,
                protocols,
                proxy: proxy.cloned(),
            });
        }
    }
    out
}

/// Default interval of the Graph checks: what they read changes slowly, and Graph throttles
/// (o365-facts.md 8: 150 requests/min per tenant for `$select=keyCredentials`; 9: "every 15-60 min
/// is plenty").
pub const DEFAULT_GRAPH_INTERVAL: Duration = Duration::from_secs(3600);
/// The service-health service watched unless `graph.service` names another.
pub const DEFAULT_GRAPH_SERVICE: &str = "Exchange Online";

/// `credentials[].graph` sections, and which credential checks each licensed mailbox (its own
/// credential when that runs `licenses`, else the first one of the same tenant that does).
fn graph(
    v: &mut V<'_>,
    raw: &RawConfig,
    cloud: &Cloud,
    d: &Defaults,
    credentials: &[Credential],
    mailboxes: &[Mailbox],
) -> Vec<GraphSettings> {
    // `licensed` is read for every mailbox, so a malformed value is reported without Graph too
    let mut licensed: Vec<(String, bool)> = Vec::new();
    for (j, m) in raw.mailboxes.iter().flatten().enumerate() {
        let flag = v.get(&format!("mailboxes[{j}].licensed"), &m.licensed);
        if let Some(Lenient(Ok(name))) = &m.name {
            if let Some(mb) = mailboxes.iter().find(|x| &x.name == name) {
                licensed.push((name.clone(), flag.unwrap_or(mb.login_as.is_none())));
            }
        }
    }
    let mut out: Vec<(GraphSettings, String)> = Vec::new();
    for (i, c) in raw.credentials.iter().flatten().enumerate() {
        let Some(g) = &c.graph else { continue };
        let p = |f: &str| format!("credentials[{i}].graph.{f}");
        let cred = match &c.name {
            Some(Lenient(Ok(n))) => credentials.iter().find(|x| &x.name == n),
            _ => None,
        };
        if let Some(cr) = cred {
            if cr.grant != GrantKind::ClientCredentials {
                // a delegated Graph token would need its own sign-in and refresh-token chain
                v.at_key(
                    &format!("credentials[{i}].graph"),
                    "Graph checks need an app-only credential (grant: client_credentials) with Application.Read.All, User.Read.All and ServiceHealth.Read.All; add a dedicated app-only credential with this graph: section",
                );
            }
        }
        let checks = v
            .enum_list(
                &p("checks"),
                g.checks.as_deref(),
                GraphCheck::parse,
                "Graph check",
                "app_credentials, licenses, service_health",
            )
            .unwrap_or_else(|| GraphCheck::ALL.to_vec());
        let interval = v.duration(&p("interval"), &g.interval, DEFAULT_GRAPH_INTERVAL);
        let timeout = v.duration(&p("timeout"), &g.timeout, d.timeout);
        check_interval(v, &p("interval"), interval, timeout);
        let default_url = format!("https://{}", cloud.graph_host);
        let url = match v.get(&p("graph_url"), &g.graph_url) {
            Some(u) => match url::Url::parse(&u) {
                Ok(x) if x.scheme() == "https" || (x.scheme() == "http" && is_loopback(&x)) => {
                    u.trim_end_matches('/').to_string()
                }
                _ => {
                    // the Graph token travels in a header: never in clear text over a network
                    v.at(
                        &p("graph_url"),
                        format!(
                            "{u:?} is not an https:// URL (http:// only to a loopback address)"
                        ),
                    );
                    default_url.clone()
                }
            },
            None => default_url.clone(),
        };
        if g.graph_url.is_some() {
            clear_text_via_proxy(
                v,
                &p("graph_url"),
                &url,
                cred.and_then(|c| c.proxy.as_ref()),
            );
        }
        let scope = v
            .get(&p("scope"), &g.scope)
            .unwrap_or_else(|| format!("{default_url}/.default"));
        let service = match v.get(&p("service"), &g.service) {
            Some(s) if s.trim().is_empty() || s.len() > 64 || s.contains('\'') => {
                v.at(
                    &p("service"),
                    "must be a service name such as Exchange Online (at most 64 characters, no quote)",
                );
                DEFAULT_GRAPH_SERVICE.to_string()
            }
            Some(s) => s.trim().to_string(),
            None => DEFAULT_GRAPH_SERVICE.to_string(),
        };
        if let Some(cr) = cred {
            out.push((
                GraphSettings {
                    credential: cr.name.clone(),
                    checks,
                    interval,
                    timeout,
                    url,
                    scope,
                    service,
                    licence_targets: Vec::new(),
                    app_targets: Vec::new(),
                },
                cr.tenant.to_ascii_lowercase(),
            ));
        }
    }
    for c in credentials {
        let tenant = c.tenant.to_ascii_lowercase();
        let runs = |g: &GraphSettings| g.runs(GraphCheck::AppCredentials);
        let pick = out
            .iter()
            .position(|(g, _)| runs(g) && g.credential == c.name)
            .or_else(|| {
                // a credential with a graph section that leaves app_credentials out opted out
                if out.iter().any(|(g, _)| g.credential == c.name) {
                    return None;
                }
                out.iter().position(|(g, t)| runs(g) && *t == tenant)
            });
        if let Some(k) = pick {
            out[k].0.app_targets.push(c.name.clone());
        }
    }
    for m in mailboxes {
        if !licensed.iter().any(|(n, l)| n == &m.name && *l) {
            continue;
        }
        let tenant = credentials
            .iter()
            .find(|c| c.name == m.credential)
            .map(|c| c.tenant.to_ascii_lowercase());
        let runs = |g: &GraphSettings| g.runs(GraphCheck::Licenses);
        let pick = out
            .iter()
            .position(|(g, _)| runs(g) && g.credential == m.credential)
            .or_else(|| {
                out.iter()
                    .position(|(g, t)| runs(g) && Some(t) == tenant.as_ref())
            });
        if let Some(k) = pick {
            out[k].0.licence_targets.push(LicenceTarget {
                mailbox: m.name.clone(),
                address: m.address.clone(),
            });
        }
    }
    out.into_iter().map(|(g, _)| g).collect()
}

/// An `http://` URL (allowed to loopback only) must not be sent through a proxy on another
/// machine: the request (a client secret, a token) would cross the network in clear text, and
/// the proxy's own loopback is not ours.
fn clear_text_via_proxy(
    v: &mut V<'_>,
    path: &str,
    target: &str,
    proxy: Option<&Arc<ProxySettings>>,
) {
    let (Some(p), Ok(u)) = (proxy, url::Url::parse(target)) else {
        return;
    };
    let host = u.host_str().unwrap_or("");
    if u.scheme() == "http" && !p.is_loopback() && !p.bypasses(host) {
        v.at(
            path,
            format!("http:// to {host} would go through the proxy in clear text (and reach the proxy's own loopback): add {host} to proxy.no_proxy"),
        );
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Scopes when none are configured (o365-facts.md 3.1, 3.2): app-only tokens use the resource's
/// `.default`; delegated tokens ask for each protocol the credential's mailboxes use, plus
/// `offline_access` for a refresh token.
pub fn default_scopes(
    cloud: &Cloud,
    grant: Option<GrantKind>,
    protocols: &[Protocol],
) -> Vec<String> {
    match grant {
        Some(GrantKind::ClientCredentials) | None => vec![cloud.app_scope.to_string()],
        Some(GrantKind::RefreshToken) => {
            let mut s: Vec<String> = protocols
                .iter()
                .map(|p| cloud.delegated_scope(*p))
                .collect();
            if s.is_empty() {
                s = Protocol::ALL
                    .iter()
                    .map(|p| cloud.delegated_scope(*p))
                    .collect();
            }
            s.push("offline_access".to_string());
            s
        }
    }
}

fn client_auth(v: &mut V<'_>, i: usize, c: &RawCredential) -> ClientAuth {
    let p = |f: &str| format!("credentials[{i}].{f}");
    let mut found: Vec<ClientAuth> = v
        .secret(
            &format!("credentials[{i}]"),
            "client_secret",
            &c.client_secret,
            &c.client_secret_file,
            &c.client_secret_env,
        )
        .into_iter()
        .map(ClientAuth::Secret)
        .collect();
    if let Some(cc) = &c.client_certificate {
        let cert = v.file(&p("client_certificate.cert_file"), &cc.cert_file);
        let key = v.file(&p("client_certificate.key_file"), &cc.key_file);
        if cc.cert_file.is_none() {
            v.at(&p("client_certificate.cert_file"), "is required");
        }
        if cc.key_file.is_none() {
            v.at(&p("client_certificate.key_file"), "is required");
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            let cert_der = std::fs::read_to_string(&cert)
                .ok()
                .and_then(|t| pem_block(&t, "CERTIFICATE"));
            let key_der = std::fs::read_to_string(&key)
                .ok()
                .and_then(|t| pem_block(&t, "PRIVATE KEY"));
            match (cert_der, key_der) {
                (Some(cert_der), Some(key_der)) => found.push(ClientAuth::Certificate {
                    cert_der,
                    key_der: SecretBytes(key_der),
                }),
                (None, _) => v.at(
                    &p("client_certificate.cert_file"),
                    "holds no PEM CERTIFICATE block",
                ),
                (_, None) => v.at(
                    &p("client_certificate.key_file"),
                    "holds no PEM PRIVATE KEY (PKCS#8) block",
                ),
            }
        }
    }
    if found.len() > 1 {
        v.at(&p("name"), "set only one of client_secret, client_secret_file, client_secret_env, client_certificate");
    }
    found.into_iter().next().unwrap_or(ClientAuth::None)
}

/// The first PEM block labelled `label`, decoded.
pub fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `2027-01-31` (midnight UTC) or RFC 3339 -> Unix seconds.
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).ok()?;
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn ctx() -> Context {
        Context {
            source: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            file_private: false,
            env: None,
        }
    }

    #[test]
    fn three_mistakes_are_all_reported_with_lines() {
        let text = "\
cloud: worldwide
endpoints:
  - name: a
    host: example.com
    port: 99999
  - name: b
    host: example.com
    port: 993
    tls: sometimes
    colour: blue
";
        let err = load(text, &ctx()).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = err
            .problems
            .iter()
            .map(|p| (p.line, p.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(5), "endpoints[0].port"),
                (Some(9), "endpoints[1].tls"),
                (Some(10), "endpoints[1].colour"),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("t.yaml:5:11: endpoints[0].port: 99999 is not a port"),
            "{text}"
        );
    }

    #[test]
    fn wrong_types_and_durations_are_collected() {
        let text = "defaults:\n  interval: soon\n  timeout: 5x\nendpoints:\n  - name: a\n    host: h\n    port: abc\n";
        let err = load(text, &ctx()).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["defaults.interval", "defaults.timeout", "endpoints[0].port"],
            "{err}"
        );
    }

    #[test]
    fn yaml_syntax_error_has_a_line() {
        let err = load("endpoints: [\n  - a\n", &ctx()).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].line.is_some(), "{err}");
    }

    #[test]
    fn mailbox_needs_known_credential_and_short_name() {
        let text = "\
mailboxes:
  - name: support@contoso.com
    address: support@contoso.com
    credential: nope
    protocols: [imap, gopher]
";
        let err = load(text, &ctx()).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "mailboxes[0].name",
                "mailboxes[0].credential",
                "mailboxes[0].protocols[1]"
            ],
            "{err}"
        );
    }

    #[test]
    fn inline_secret_refused_in_readable_file() {
        let text = "\
credentials:
  - name: app
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: client_credentials
    client_secret: CANARY-inline-secret
";
        let err = load(text, &ctx()).unwrap_err();
        let s = err.to_string();
        assert!(
            s.contains("credentials[0].client_secret: an inline secret is refused"),
            "{s}"
        );
        assert!(!s.contains("CANARY"), "secret leaked into the error: {s}");
        let mut c = ctx();
        c.file_private = true;
        let cfg = load(text, &c).unwrap();
        assert_eq!(
            cfg.credentials[0].scopes,
            vec!["https://outlook.office365.com/.default"]
        );
    }

    #[test]
    fn a_secret_yaml_reads_as_a_number_is_refused_without_quoting_it() {
        for value in ["918273645501", "9182736.5", "true"] {
            let text = format!("credentials:\n  - name: a\n    tenant: t.example\n    client_id: x\n    grant: client_credentials\n    client_secret: {value}\n");
            let e = load(&text, &ctx()).expect_err("refused").to_string();
            assert!(e.contains("client_secret: must be a string"), "{e}");
            assert!(!e.contains(value), "{e}");
        }
    }

    #[test]
    fn delegated_default_scopes_follow_mailbox_protocols() {
        let text = "\
credentials:
  - name: user
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
mailboxes:
  - name: support
    address: support@contoso.com
    credential: user
    protocols: [smtp, imap]
";
        let cfg = load(text, &ctx()).unwrap();
        assert_eq!(
            cfg.credentials[0].scopes,
            vec![
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/SMTP.Send",
                "offline_access"
            ]
        );
        assert_eq!(cfg.mailboxes[0].imap.host, "outlook.office365.com");
    }

    #[test]
    fn graph_sections_default_to_the_cloud_and_assign_each_mailbox_once() {
        let text = "\
cloud: gcc-high
credentials:
  - name: user
    tenant: contoso.onmicrosoft.us
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
  - name: reader
    tenant: Contoso.onmicrosoft.us
    client_id: 22222222-2222-3333-4444-555555555555
    grant: client_credentials
    client_secret: x
    graph: {}
  - name: other
    tenant: fabrikam.onmicrosoft.us
    client_id: 33333333-2222-3333-4444-555555555555
    grant: client_credentials
    client_secret: y
    graph:
      checks: [licenses, service_health]
      interval: 30m
      graph_url: http://127.0.0.1:9/
      scope: https://graph.microsoft.com/.default
      service: Exchange
mailboxes:
  - {name: a, address: a@contoso.us, credential: user, protocols: [imap]}
  - {name: b, address: b@contoso.us, credential: user, protocols: [imap], licensed: false}
  - {name: s, address: s@contoso.us, credential: user, protocols: [imap], login_as: a@contoso.us}
  - {name: f, address: f@fabrikam.us, credential: other, protocols: [imap]}
  - {name: r, address: r@contoso.us, credential: reader, protocols: [pop3]}
";
        let mut c = ctx();
        c.file_private = true;
        let cfg = load(text, &c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.graph.len(), 2);
        let r = &cfg.graph[0];
        assert_eq!(
            (r.credential.as_str(), r.checks.clone(), r.interval),
            ("reader", GraphCheck::ALL.to_vec(), DEFAULT_GRAPH_INTERVAL)
        );
        assert_eq!(r.url, "https://graph.microsoft.us");
        assert_eq!(r.scope, "https://graph.microsoft.us/.default");
        assert_eq!(r.service, "Exchange Online");
        // a (delegated credential, same tenant) and r (its own); not b (licensed: false),
        // not s (shared: reached through a delegate), not f (another tenant)
        let names: Vec<&str> = r
            .licence_targets
            .iter()
            .map(|t| t.mailbox.as_str())
            .collect();
        assert_eq!(names, ["a", "r"]);
        // the delegated credential's app registration is read by the reader too
        assert_eq!(r.app_targets, ["user", "reader"]);
        let o = &cfg.graph[1];
        assert_eq!(o.url, "http://127.0.0.1:9");
        assert_eq!(o.interval, Duration::from_secs(1800));
        assert_eq!(o.service, "Exchange");
        let names: Vec<&str> = o
            .licence_targets
            .iter()
            .map(|t| t.mailbox.as_str())
            .collect();
        assert_eq!(names, ["f"]);
        // `other` does not run app_credentials, so nobody reads its app registration
        assert!(o.app_targets.is_empty());
    }

    #[test]
    fn graph_mistakes_are_reported_with_their_paths() {
        let text = "\
credentials:
  - name: user
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    grant: refresh_token
    graph:
      checks: [licenses, licenses, gossip]
      graph_url: http://graph.example.com
      interval: 1s
      timeout: 5s
      colour: red
mailboxes:
  - {name: a, address: a@contoso.com, credential: user, protocols: [imap], licensed: maybe}
";
        let err = load(text, &ctx()).unwrap_err();
        let got: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "credentials[0].graph",
                "credentials[0].graph.checks[1]",
                "credentials[0].graph.checks[2]",
                "credentials[0].graph.graph_url",
                "credentials[0].graph.interval",
                "credentials[0].graph.colour",
                "mailboxes[0].licensed",
            ],
            "{err}"
        );
        assert!(err.to_string().contains("client_credentials"), "{err}");
    }

    fn private_ctx(env: &[(&str, &str)]) -> Context {
        let mut c = ctx();
        c.file_private = true;
        c.env = Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c
    }

    #[test]
    fn proxy_mistakes_are_reported_with_positions() {
        let text = "\
proxy:
  url: https://proxy.example.com:3128
  no_proxy: [ok.example, two words, \"\"]
  colour: red
endpoints:
  - {name: s, host: smtp.example.com, port: 587, tls: starttls-smtp, via_proxy: true}
  - {name: m, host: x.example.com, port: 443, via_proxy: maybe}
";
        let err = load(text, &ctx()).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = err
            .problems
            .iter()
            .map(|p| (p.line, p.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(2), "proxy.url"),
                (Some(3), "proxy.no_proxy[1]"),
                (Some(3), "proxy.no_proxy[2]"),
                (Some(4), "proxy.colour"),
                (Some(6), "endpoints[0].via_proxy"),
                (Some(6), "endpoints[0].via_proxy"),
                (Some(7), "endpoints[1].via_proxy"),
            ],
            "{err}"
        );
        let s = err.to_string();
        assert!(
            s.contains("t.yaml:2:8: proxy.url: uses https://: only http:// proxies"),
            "{s}"
        );
        assert!(s.contains("no proxy is configured"), "{s}");
        assert!(s.contains("only tls: implicit endpoints"), "{s}");
    }

    #[test]
    fn proxy_credentials_are_secrets_and_never_quoted() {
        // in the URL: refused, not echoed
        let text = "proxy:\n  url: http://svc:CANARY-pw@proxy.example.com:3128\n";
        let e = load(text, &private_ctx(&[])).unwrap_err().to_string();
        assert!(e.contains("proxy.url: must not hold credentials"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
        // inline: only in a private file, like client_secret
        let text = "proxy:\n  url: http://proxy.example.com:3128\n  username: svc\n  password: CANARY-pw\n";
        let e = load(text, &ctx()).unwrap_err().to_string();
        assert!(
            e.contains("proxy.password: an inline secret is refused"),
            "{e}"
        );
        assert!(!e.contains("CANARY"), "{e}");
        let cfg = load(text, &private_ctx(&[])).unwrap_or_else(|e| panic!("{e}"));
        let p = cfg.proxy.expect("proxy");
        assert_eq!(
            p.basic_auth().map(|a| a.expose_secret().to_string()),
            Some("Basic c3ZjOkNBTkFSWS1wdw==".to_string())
        );
        assert!(!format!("{p:?} {}", p.describe()).contains("CANARY"));
        // from a variable; a password without a user, a user without a password
        let text = "proxy:\n  url: http://proxy.example.com:3128\n  password_env: PROXY_PW\n";
        let e = load(text, &private_ctx(&[("PROXY_PW", "CANARY-pw")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a proxy password needs proxy.username"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
        let text = "proxy:\n  url: http://proxy.example.com:3128\n  username: svc\n";
        let e = load(text, &ctx()).unwrap_err().to_string();
        assert!(e.contains("proxy.username: needs a password"), "{e}");
        // a numeric password is refused without quoting serde's message (which holds it)
        let text = "proxy:\n  url: http://proxy.example.com:3128\n  username: svc\n  password: 918273645501\n";
        let e = load(text, &private_ctx(&[])).unwrap_err().to_string();
        assert!(e.contains("proxy.password: must be a string"), "{e}");
        assert!(!e.contains("918273645501"), "{e}");
    }

    #[test]
    fn proxy_urls_need_http_a_host_and_a_port() {
        for (url, want) in [
            ("http://proxy.example.com", "needs a port"),
            ("http://proxy.example.com:80/path", "no path or query"),
            ("socks5://proxy.example.com:1080", "only http:// proxies"),
            ("http://:3128", "is not a proxy URL"),
        ] {
            let text = format!("proxy:\n  url: {url}\n");
            let e = load(&text, &ctx()).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        let cfg =
            load("proxy:\n  url: proxy.example.com:80\n", &ctx()).unwrap_or_else(|e| panic!("{e}"));
        let p = cfg.proxy.expect("proxy");
        assert_eq!(
            (p.url.as_str(), p.port),
            ("http://proxy.example.com:80/", 80)
        );
        let cfg =
            load("proxy:\n  url: http://[::1]:3128\n", &ctx()).unwrap_or_else(|e| panic!("{e}"));
        let p = cfg.proxy.expect("proxy");
        assert_eq!(
            (p.url.as_str(), p.host.as_str()),
            ("http://[::1]:3128/", "::1")
        );
        let e = load(
            "proxy:\n  url: http://p.example:3128\n  from_env: true\n",
            &ctx(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = load("proxy: {}\n", &ctx()).unwrap_err().to_string();
        assert!(e.contains("set proxy.url"), "{e}");
    }

    #[test]
    fn from_env_reads_https_proxy_and_no_proxy() {
        let text = "proxy:\n  from_env: true\n  no_proxy: [.corp.example]\n";
        let c = private_ctx(&[
            ("https_proxy", "http://svc:p%40ss@proxy.example.com:8080"),
            ("no_proxy", "localhost, 10.0.0.0/8"),
        ]);
        let cfg = load(text, &c).unwrap_or_else(|e| panic!("{e}"));
        let p = cfg.proxy.as_deref().expect("proxy");
        assert_eq!(p.origin, ProxyOrigin::Env("https_proxy"));
        assert_eq!(p.url, "http://proxy.example.com:8080/");
        assert_eq!(p.username.as_deref(), Some("svc"));
        assert_eq!(
            p.password.as_ref().map(|s| s.expose_secret().to_string()),
            Some("p@ss".to_string())
        );
        assert_eq!(p.no_proxy, [".corp.example", "localhost", "10.0.0.0/8"]);
        assert!(cfg.proxy_from_env);
        // nothing set: no proxy, and the summary says why
        let cfg = load(text, &private_ctx(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.proxy.is_none());
        assert!(cfg
            .proxy_summary()
            .unwrap_or_default()
            .contains("HTTPS_PROXY"));
    }

    #[test]
    fn an_http_token_url_does_not_cross_a_remote_proxy_in_clear_text() {
        let cred = |url: &str| {
            format!("credentials:\n  - {{name: a, tenant: t.example, client_id: x, grant: client_credentials, client_secret: s, token_url: {url}}}\n")
        };
        let remote = "proxy:\n  url: http://proxy.example.com:3128\n";
        let e = load(
            &format!("{remote}{}", cred("http://127.0.0.1:9/t")),
            &private_ctx(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("credentials[0].token_url: http:// to 127.0.0.1 would go through the proxy in clear text"), "{e}");
        // listed in no_proxy, or the proxy on loopback too, or HTTPS: fine
        for text in [
            format!(
                "{remote}  no_proxy: [127.0.0.1]\n{}",
                cred("http://127.0.0.1:9/t")
            ),
            format!(
                "proxy:\n  url: http://127.0.0.1:3128\n{}",
                cred("http://127.0.0.1:9/t")
            ),
            format!("{remote}{}", cred("https://login.example.com/t")),
        ] {
            let cfg = load(&text, &private_ctx(&[])).unwrap_or_else(|e| panic!("{e}"));
            assert!(cfg.credentials[0].proxy.is_some());
        }
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_date("1970-01-02"), Some(86400));
        assert_eq!(parse_date("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_date("31.01.2027"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> Context {
        Context {
            source: "p.yaml".into(),
            base_dir: PathBuf::from("/nonexistent"),
            file_private: false,
            env: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary text never panics the loader; every problem it reports names a position
        /// or a path.
        #[test]
        fn loader_never_panics(text in "\\PC{0,400}") {
            if let Err(e) = load(&text, &ctx()) {
                for p in &e.problems {
                    prop_assert!(p.line.is_some() || !p.path.is_empty() || !p.message.is_empty());
                }
            }
        }

        /// Structured but wrong values: each bad port is reported at its own line.
        #[test]
        fn every_bad_port_is_reported(ports in proptest::collection::vec(65536i64..1_000_000, 1..6)) {
            let mut text = String::from("endpoints:\n");
            for (i, p) in ports.iter().enumerate() {
                text.push_str(&format!("  - name: e{i}\n    host: h\n    port: {p}\n"));
            }
            let err = load(&text, &ctx()).expect_err("all ports are invalid");
            prop_assert_eq!(err.problems.len(), ports.len());
            for (i, p) in err.problems.iter().enumerate() {
                prop_assert_eq!(p.line, Some(4 + 3 * i));
            }
        }
    }
}
