//! The fake's notion of "now", and Microsoft's timestamp formats.
//!
//! Time is wall-clock time at start-up plus `tokio::time::Instant` elapsed since then, plus a
//! signed offset the tests may set. Reading tokio's clock (not `SystemTime`) means a test running
//! under `#[tokio::test(start_paused = true)]` moves the fake's device-code intervals, code
//! expiry and loop-detection window along with its own virtual time; the offset lets a test issue
//! tokens that are already expired for a real server (Dovecot) without sleeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub(crate) struct Clock {
    wall_at_start: Duration,
    instant_at_start: tokio::time::Instant,
    offset_secs: i64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            wall_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
            instant_at_start: tokio::time::Instant::now(),
            offset_secs: 0,
        }
    }

    pub(crate) fn set_offset(&mut self, secs: i64) {
        self.offset_secs = secs;
    }

    /// Time since the Unix epoch, as the fake sees it.
    pub(crate) fn now(&self) -> Duration {
        let base = self.wall_at_start + self.instant_at_start.elapsed();
        let off = Duration::from_secs(self.offset_secs.unsigned_abs());
        if self.offset_secs >= 0 {
            base + off
        } else {
            base.saturating_sub(off)
        }
    }

    /// Whole Unix seconds, as used in JWT claims.
    pub(crate) fn unix(&self) -> i64 {
        i64::try_from(self.now().as_secs()).unwrap_or(i64::MAX)
    }
}

/// Civil date-time (UTC) from Unix seconds (Howard Hinnant's days-to-civil algorithm).
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    )
}

/// `2016-01-09 02:02:12Z`: the `timestamp` field and the `Timestamp:` line of Microsoft's error
/// bodies (o365-facts.md 3.7; sample in Microsoft's error-code reference).
pub(crate) fn error_timestamp(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// `2023-01-01T00:00:00.0000000Z`: the .NET round-trip form Microsoft prints inside
/// AADSTS700082/50173 texts.
pub(crate) fn dotnet_timestamp(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.0000000Z")
}

/// `90.00:00:00`: a .NET TimeSpan (`d.hh:mm:ss`), as in AADSTS700082's "inactive for".
pub(crate) fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}.{:02}:{:02}:{:02}",
        s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_microsoft_samples() {
        // 2016-01-09 02:02:12Z is the sample in Microsoft's error-code reference.
        assert_eq!(error_timestamp(1_452_304_932), "2016-01-09 02:02:12Z");
        assert_eq!(dotnet_timestamp(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(error_timestamp(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(timespan(Duration::from_secs(90 * 86_400)), "90.00:00:00");
        assert_eq!(timespan(Duration::from_secs(3661)), "0.01:01:01");
    }

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time_and_offset() {
        let mut c = Clock::new();
        let t0 = c.unix();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(c.unix() - t0, 10);
        c.set_offset(-7200);
        assert_eq!(c.unix() - t0, 10 - 7200);
    }
}
