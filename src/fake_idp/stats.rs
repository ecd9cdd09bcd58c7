//! Request counts by endpoint, grant, client and outcome, so tests can assert how many token
//! requests a client made (Microsoft's loop detection allows fewer than 15 identical requests
//! in 5 minutes, o365-facts.md section 9) and what each one got.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One group of requests with the same endpoint, grant, client and outcome.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatRow {
    /// `token`, `devicecode` or `authorize`.
    pub endpoint: String,
    /// `grant_type` as sent (empty when absent or for non-token endpoints).
    pub grant: String,
    /// `client_id` as sent (empty when absent).
    pub client_id: String,
    /// `ok`, the OAuth `error` value (`invalid_grant`, …), or a hostile preset's name
    /// (`malformed_json`, `html_login_page`, `huge_body`, `hang`).
    pub outcome: String,
    /// The first AADSTS code of an error answer.
    pub aadsts: Option<u32>,
    pub count: u64,
}

/// A snapshot of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub rows: Vec<StatRow>,
}

impl Stats {
    /// Sum of `count` over rows that satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&StatRow) -> bool) -> u64 {
        self.rows.iter().filter(|r| pred(r)).map(|r| r.count).sum()
    }

    /// All token-endpoint requests.
    pub fn token_requests(&self) -> u64 {
        self.count(|r| r.endpoint == "token")
    }

    /// Token-endpoint requests of one grant type (e.g. `client_credentials`).
    pub fn grant(&self, grant: &str) -> u64 {
        self.count(|r| r.endpoint == "token" && r.grant == grant)
    }

    /// Token-endpoint requests with this outcome (`ok`, `invalid_grant`, …).
    pub fn outcome(&self, outcome: &str) -> u64 {
        self.count(|r| r.endpoint == "token" && r.outcome == outcome)
    }

    /// Token-endpoint requests answered with this AADSTS code.
    pub fn aadsts(&self, code: u32) -> u64 {
        self.count(|r| r.endpoint == "token" && r.aadsts == Some(code))
    }
}

type Key = (String, String, String, String, Option<u32>);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    map: BTreeMap<Key, u64>,
}

impl Counters {
    pub(crate) fn record(
        &mut self,
        endpoint: &str,
        grant: &str,
        client_id: &str,
        outcome: &str,
        aadsts: Option<u32>,
    ) {
        // Bounded: a client id longer than any real one is cut, so a hostile caller cannot
        // grow the map's keys without limit.
        let cut = |s: &str| s.chars().take(100).collect::<String>();
        *self
            .map
            .entry((
                endpoint.to_string(),
                cut(grant),
                cut(client_id),
                outcome.to_string(),
                aadsts,
            ))
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            rows: self
                .map
                .iter()
                .map(
                    |((endpoint, grant, client_id, outcome, aadsts), count)| StatRow {
                        endpoint: endpoint.clone(),
                        grant: grant.clone(),
                        client_id: client_id.clone(),
                        outcome: outcome.clone(),
                        aadsts: *aadsts,
                        count: *count,
                    },
                )
                .collect(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_and_filter() {
        let mut c = Counters::default();
        c.record("token", "client_credentials", "a", "ok", None);
        c.record("token", "client_credentials", "a", "ok", None);
        c.record("token", "refresh_token", "a", "invalid_grant", Some(50196));
        c.record("devicecode", "", "a", "ok", None);
        let s = c.snapshot();
        assert_eq!(s.rows.len(), 3);
        assert_eq!(s.token_requests(), 3);
        assert_eq!(s.grant("client_credentials"), 2);
        assert_eq!(s.outcome("invalid_grant"), 1);
        assert_eq!(s.aadsts(50196), 1);
        c.reset();
        assert_eq!(c.snapshot().token_requests(), 0);
    }
}
