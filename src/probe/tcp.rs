//! DNS resolution and TCP connect, each timed and deadlined as its own phase.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Dir, Phase, ProbeError, Reason, Recorder};

/// Resolve `host` and connect to the first address that answers, before `deadline`.
/// Records the `dns` and `connect` phases.
pub async fn connect(
    rec: &mut Recorder,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, ProbeError> {
    let (stream, started) = open(rec, host, port, deadline).await?;
    rec.record(Phase::Connect, started.elapsed());
    Ok(stream)
}

/// Like [`connect`], but on success leaves the `connect` phase open: it returns when the TCP
/// connect started, so a caller that does more to establish the connection (the CONNECT round
/// trip through a proxy) records the phase once, over all of it. Failures record it.
pub async fn open(
    rec: &mut Recorder,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(TcpStream, Instant), ProbeError> {
    let t = Instant::now();
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Err(_) => {
                rec.record(Phase::Dns, t.elapsed());
                return Err(ProbeError::new(
                    Phase::Dns,
                    Reason::Timeout,
                    format!("resolving {host} took too long"),
                ));
            }
            Ok(Err(e)) => {
                rec.record(Phase::Dns, t.elapsed());
                return Err(ProbeError::new(
                    Phase::Dns,
                    Reason::Dns,
                    format!("cannot resolve {host}: {e}"),
                ));
            }
            Ok(Ok(a)) => a.collect(),
        };
    rec.record(Phase::Dns, t.elapsed());
    if addrs.is_empty() {
        return Err(ProbeError::new(
            Phase::Dns,
            Reason::Dns,
            format!("{host} has no addresses"),
        ));
    }
    let t = Instant::now();
    let mut last: Option<ProbeError> = None;
    // Bounded: at most the first 4 addresses (a name with many records still costs one deadline).
    for addr in addrs.iter().take(4) {
        rec.note(Dir::Note, &format!("connecting to {addr}"));
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                last = Some(ProbeError::new(
                    Phase::Connect,
                    Reason::ConnectTimeout,
                    format!("no answer from {addr} before the deadline"),
                ));
                break;
            }
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, t));
            }
            Ok(Err(e)) => {
                let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Reason::ConnectRefused
                } else if e.kind() == std::io::ErrorKind::TimedOut {
                    Reason::ConnectTimeout
                } else {
                    Reason::ConnectError
                };
                last = Some(ProbeError::new(
                    Phase::Connect,
                    reason,
                    format!("connect to {addr}: {e}"),
                ));
            }
        }
    }
    rec.record(Phase::Connect, t.elapsed());
    Err(last.unwrap_or_else(|| {
        ProbeError::new(
            Phase::Connect,
            Reason::ConnectError,
            "no address to connect to",
        )
    }))
}
