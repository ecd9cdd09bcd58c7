//! An endpoint check through the configured outbound HTTP proxy: TCP to the proxy, `CONNECT
//! host:port` (RFC 9110 9.3.6), then the caller runs the TLS handshake with the real server
//! through the tunnel, so the certificate is checked end to end exactly as without a proxy (a
//! TLS-intercepting proxy shows up as the usual certificate reasons).
//!
//! Phases: `dns` is the proxy's name, `connect` covers the TCP connect to the proxy *and* the
//! CONNECT round trip, i.e. the time until a byte stream to the server exists, which is what
//! `connect` means without a proxy. No phase is added, so dashboards and the metric's label set
//! stay as they are. Failures of the proxy get their own reasons (`proxy_connect_failed`,
//! `proxy_auth_required` for 407, and for 401, which tinyproxy answers to wrong credentials,
//! `proxy_refused` for any other non-2xx); a proxy that answers with something that is not HTTP,
//! endless headers or silence fails as `protocol_error`, `reply_too_long` or `timeout` in phase
//! `connect`, with the proxy named in the detail. Every read is bounded in size and by the
//! check's deadline.
//!
//! The proxy's credentials go in one `Proxy-Authorization` header; the transcript shows it
//! redacted. The token client uses [`connect`] too, to learn the status a refused tunnel was
//! answered with (its HTTP library keeps only "unsuccessful").

use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::line::{BoxStream, LineConn};
use super::{tcp, Dir, Phase, ProbeError, Reason, Recorder};
use crate::config::ProxySettings;

/// Longest line of the proxy's answer to CONNECT (hyper-util allows 8 KiB for the whole head).
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// Most header lines accepted in the proxy's answer.
pub const MAX_HEADER_LINES: usize = 100;

/// A byte stream to `host:port` through `proxy`, before `deadline`. Records `dns` (the proxy's
/// name) and `connect` (TCP to the proxy plus the CONNECT round trip).
pub async fn connect(
    rec: &mut Recorder,
    proxy: &ProxySettings,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<BoxStream, ProbeError> {
    let shown = proxy.url.trim_end_matches('/').to_string();
    rec.fact("proxy", shown.clone());
    rec.note(Dir::Note, &format!("through the proxy {shown}"));
    let (tcp, started) = tcp::open(rec, &proxy.host, proxy.port, deadline)
        .await
        .map_err(|e| {
            ProbeError::new(
                e.phase,
                Reason::ProxyConnectFailed,
                format!("cannot reach the proxy {shown}: {}", e.detail),
            )
        })?;
    let r = tunnel(rec, proxy, Box::new(tcp), host, port, deadline).await;
    rec.record(Phase::Connect, started.elapsed());
    r.map_err(|e| ProbeError::new(e.phase, e.reason, format!("proxy {shown}: {}", e.detail)))
}

/// `host:port` as the CONNECT request target (IPv6 in brackets).
fn authority(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    }
}

async fn tunnel(
    rec: &mut Recorder,
    proxy: &ProxySettings,
    stream: BoxStream,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<BoxStream, ProbeError> {
    let ph = Phase::Connect;
    let target = authority(host, port);
    let mut conn = LineConn::new(stream).with_max_line(MAX_HEADER_LINE);
    conn.send(rec, ph, deadline, &format!("CONNECT {target} HTTP/1.1"))
        .await?;
    conn.send(rec, ph, deadline, &format!("Host: {target}"))
        .await?;
    conn.send(
        rec,
        ph,
        deadline,
        concat!("User-Agent: o365-mail-exporter/", env!("CARGO_PKG_VERSION")),
    )
    .await?;
    if let Some(auth) = proxy.basic_auth() {
        conn.send_secret(
            rec,
            ph,
            deadline,
            &format!("Proxy-Authorization: {}", auth.expose_secret()),
            "Proxy-Authorization: Basic [redacted]",
        )
        .await?;
    }
    conn.send(rec, ph, deadline, "").await?;

    let status_line = conn.recv(rec, ph, deadline).await?;
    let (code, text) = parse_status(&status_line).ok_or_else(|| {
        ProbeError::new(
            ph,
            Reason::ProtocolError,
            format!(
                "the answer to CONNECT is not HTTP: {}",
                shorten(&status_line)
            ),
        )
    })?;
    let mut ended = false;
    for _ in 0..MAX_HEADER_LINES {
        if conn.recv(rec, ph, deadline).await?.is_empty() {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(ProbeError::new(
            ph,
            Reason::ReplyTooLong,
            format!("the answer to CONNECT has more than {MAX_HEADER_LINES} header lines"),
        ));
    }
    match code {
        200..=299 => {}
        // 401 too: a CONNECT is addressed to the proxy alone, and tinyproxy answers wrong
        // credentials with 401 (and missing ones with 407)
        401 | 407 => {
            let why = if proxy.basic_auth().is_some() {
                "the proxy refused the configured credentials"
            } else {
                "the proxy wants credentials (set proxy.username and a password)"
            };
            return Err(ProbeError::new(
                ph,
                Reason::ProxyAuthRequired,
                format!("{why}: CONNECT {target} answered {code} {text}"),
            ));
        }
        _ => {
            let hint = match code {
                502..=504 => " (the proxy could not reach the server)",
                403 | 405 => " (refused by the proxy's policy)",
                _ => "",
            };
            return Err(ProbeError::new(
                ph,
                Reason::ProxyRefused,
                format!("CONNECT {target} answered {code} {text}{hint}"),
            ));
        }
    }
    if conn.buffered() > 0 {
        // the server speaks after our ClientHello: bytes now would be read as if they came over
        // TLS
        return Err(ProbeError::new(
            ph,
            Reason::ProtocolError,
            format!(
                "the proxy sent {} bytes after its answer to CONNECT, before the TLS handshake",
                conn.buffered()
            ),
        ));
    }
    rec.note(Dir::Note, &format!("tunnel to {target} open"));
    conn.into_stream(ph)
}

/// `HTTP/1.1 200 Connection established` -> (200, "Connection established"), the text cut to
/// 64 printable characters (the proxy chooses it).
pub fn parse_status(line: &str) -> Option<(u16, String)> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut it = rest.splitn(3, ' ');
    let minor = it.next()?;
    if minor.len() != 1 || !minor.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let code = it.next()?;
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    if !(100..=599).contains(&code) {
        return None;
    }
    Some((code, shorten(it.next().unwrap_or(""))))
}

fn shorten(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(64)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_status("HTTP/1.1 200 Connection established"),
            Some((200, "Connection established".into()))
        );
        assert_eq!(
            parse_status("HTTP/1.0 407 Proxy Authentication Required"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(parse_status("HTTP/1.1 403"), Some((403, String::new())));
        for bad in [
            "",
            "220 smtp.example ESMTP",
            "HTTP/2 200",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 999 Nine",
            "SSH-2.0-OpenSSH",
        ] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
        let (_, text) =
            parse_status(&format!("HTTP/1.1 403 {}\u{7}", "é".repeat(200))).expect("parses");
        assert!(text.len() <= 64 && text.is_ascii(), "{text}");
    }

    #[test]
    fn targets_bracket_ipv6() {
        assert_eq!(
            authority("login.microsoftonline.com", 443),
            "login.microsoftonline.com:443"
        );
        assert_eq!(authority("::1", 8443), "[::1]:8443");
        assert_eq!(authority("[::1]", 8443), "[::1]:8443");
        assert_eq!(authority("127.0.0.1", 443), "127.0.0.1:443");
    }
}
