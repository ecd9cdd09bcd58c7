//! Everything the fake remembers: settings, registrations, issued refresh tokens,
//! authorization codes and device codes, injected failures, the loop-detection log and the
//! counters. One mutex guards it all; no lock is held across an await (the server locks, decides
//! the answer, unlocks, then writes), so the operations here are plain synchronous methods shared
//! by the in-process handle and the control API.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::clock::Clock;
use super::failure::{Failure, Injection};
use super::jwt::Signer;
use super::registry::{App, User};
use super::stats::Counters;
use super::FakeIdpError;

/// Knobs fixed at start-up.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub tenant_id: String,
    pub tenant_aliases: Vec<String>,
    /// Fixed `aud` of access tokens; `None` = the resource of the requested scope.
    pub audience: Option<String>,
    pub access_token_lifetime: Duration,
    pub refresh_token_max_inactive: Duration,
    pub auth_code_lifetime: Duration,
    pub device_code_interval: Duration,
    pub device_code_lifetime: Duration,
    pub verification_uri: String,
    pub loop_threshold: usize,
    pub loop_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tenant_id: super::DEFAULT_TENANT.to_string(),
            tenant_aliases: Vec::new(),
            audience: None,
            // Microsoft's typical `expires_in` for a 60-minute token (facts 3.3 sample).
            access_token_lifetime: Duration::from_secs(3599),
            refresh_token_max_inactive: Duration::from_secs(90 * 86_400),
            auth_code_lifetime: Duration::from_secs(600),
            device_code_interval: Duration::from_secs(5),
            device_code_lifetime: Duration::from_secs(900),
            verification_uri: "https://microsoft.com/devicelogin".to_string(),
            loop_threshold: 15,
            loop_window: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RefreshRecord {
    pub client_id: String,
    pub user: User,
    /// The scope string the chain was granted with (used when a refresh sends none).
    pub scope: String,
    pub issued_at: i64,
    pub last_used_at: i64,
    pub used: bool,
    /// The token this one was last rotated into (strict mode's lost-answer grace).
    pub successor: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub user: User,
    pub challenge: Option<(String, String)>,
    pub issued_at: i64,
    pub redeemed: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DeviceState {
    Pending,
    Approved(User),
    Declined,
    Redeemed,
}

#[derive(Clone, Debug)]
pub(crate) struct DeviceRecord {
    pub device_code: String,
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: Duration,
    pub interval: Duration,
    pub last_poll: Option<Duration>,
    pub state: DeviceState,
}

/// Upper bound on remembered refresh tokens, codes and device codes: a runaway client cannot
/// grow the fake without limit; the oldest entries go first.
const MAX_RECORDS: usize = 50_000;

/// Not `Debug`: it holds live refresh tokens and codes, which must never reach a log.
pub(crate) struct State {
    pub settings: Settings,
    pub signer: Signer,
    pub apps: HashMap<String, App>,
    pub users: Vec<User>,
    pub signed_in: Option<String>,
    pub strict_refresh: bool,
    /// With `strict_refresh`: a used token stays redeemable until its successor is used.
    pub refresh_grace: bool,
    pub loop_detection: bool,
    pub clock: Clock,
    pub base_url: String,
    pub injections: Vec<Injection>,
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    refresh_order: VecDeque<String>,
    pub codes: HashMap<String, CodeRecord>,
    code_order: VecDeque<String>,
    pub devices: VecDeque<DeviceRecord>,
    loop_log: HashMap<String, VecDeque<Duration>>,
    /// Per user oid: refresh tokens issued before this Unix time are revoked (AADSTS50173).
    pub tokens_valid_from: HashMap<String, i64>,
    pub counters: Counters,
    /// What the fake Microsoft Graph serves (`graph.rs`).
    pub graph: super::graph::FakeGraph,
}

impl State {
    pub(crate) fn new(
        settings: Settings,
        signer: Signer,
        apps: Vec<App>,
        users: Vec<User>,
        signed_in: Option<String>,
    ) -> Self {
        State {
            settings,
            signer,
            apps: apps.into_iter().map(|a| (a.client_id.clone(), a)).collect(),
            users,
            signed_in,
            strict_refresh: false,
            refresh_grace: false,
            loop_detection: false,
            clock: Clock::new(),
            base_url: String::new(),
            injections: Vec::new(),
            refresh_tokens: HashMap::new(),
            refresh_order: VecDeque::new(),
            codes: HashMap::new(),
            code_order: VecDeque::new(),
            devices: VecDeque::new(),
            loop_log: HashMap::new(),
            tokens_valid_from: HashMap::new(),
            counters: Counters::default(),
            graph: super::graph::FakeGraph::default(),
        }
    }

    /// `Some(canonical tenant id)` when `seg` names the fake tenant (id, alias, or one of the
    /// multi-tenant names `common`, `organizations`, `consumers`).
    pub(crate) fn resolve_tenant(&self, seg: &str) -> Option<&str> {
        let s = &self.settings;
        let known = seg.eq_ignore_ascii_case(&s.tenant_id)
            || s.tenant_aliases.iter().any(|a| a.eq_ignore_ascii_case(seg))
            || ["common", "organizations", "consumers"].contains(&seg);
        known.then_some(s.tenant_id.as_str())
    }

    pub(crate) fn user(&self, upn: &str) -> Option<&User> {
        self.users.iter().find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    /// The user the fake's "browser" is signed in as: the configured one, else the first user.
    pub(crate) fn signed_in_user(&self) -> Option<User> {
        match &self.signed_in {
            Some(upn) => self.user(upn).cloned(),
            None => self.users.first().cloned(),
        }
    }

    // ---- control operations (in-process handle and /_fake API) ---------------------------

    pub(crate) fn inject(&mut self, i: Injection) {
        self.injections.push(i);
    }

    pub(crate) fn clear_injections(&mut self) {
        self.injections.clear();
    }

    /// Takes (counting down) the first injection matching this request.
    pub(crate) fn take_injection(&mut self, client_id: &str, grant: &str) -> Option<Failure> {
        let pos = self
            .injections
            .iter()
            .position(|i| i.matches(client_id, grant))?;
        let inj = &mut self.injections[pos];
        let failure = inj.failure.clone();
        if let Some(n) = inj.times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.injections.remove(pos);
            }
        }
        Some(failure)
    }

    /// Signs in as `upn`, registering the user if unknown (a test may sign in as a stranger).
    pub(crate) fn set_signed_in_user(&mut self, upn: &str) -> User {
        let user = match self.user(upn) {
            Some(u) => u.clone(),
            None => {
                let u = User::new(upn);
                self.users.push(u.clone());
                u
            }
        };
        self.signed_in = Some(user.upn.clone());
        user
    }

    /// Revokes every refresh token of `upn` issued up to now (their next use: AADSTS50173).
    pub(crate) fn revoke_user(&mut self, upn: &str) -> Result<(), FakeIdpError> {
        let oid = self
            .user(upn)
            .map(|u| u.oid.clone())
            .ok_or_else(|| FakeIdpError::UnknownUser(upn.to_string()))?;
        let now = self.clock.unix();
        // "valid from" = one second after now: a token issued in this very second is revoked.
        self.tokens_valid_from.insert(oid, now + 1);
        Ok(())
    }

    fn pending_device(
        &mut self,
        user_code: Option<&str>,
    ) -> Result<&mut DeviceRecord, FakeIdpError> {
        let now = self.clock.now();
        let found = self.devices.iter_mut().rev().find(|d| {
            d.state == DeviceState::Pending
                && d.expires_at > now
                && user_code.is_none_or(|c| d.user_code.eq_ignore_ascii_case(c))
        });
        found.ok_or(FakeIdpError::NoPendingDeviceCode)
    }

    /// Approves a pending device code (the given user code, else the newest pending one) as the
    /// signed-in user. Returns the user code.
    pub(crate) fn approve_device(
        &mut self,
        user_code: Option<&str>,
    ) -> Result<String, FakeIdpError> {
        let user = self.signed_in_user().ok_or(FakeIdpError::NoSignedInUser)?;
        let d = self.pending_device(user_code)?;
        d.state = DeviceState::Approved(user);
        Ok(d.user_code.clone())
    }

    pub(crate) fn decline_device(
        &mut self,
        user_code: Option<&str>,
    ) -> Result<String, FakeIdpError> {
        let d = self.pending_device(user_code)?;
        d.state = DeviceState::Declined;
        Ok(d.user_code.clone())
    }

    // ---- bookkeeping --------------------------------------------------------------------

    pub(crate) fn remember_refresh(&mut self, token: String, rec: RefreshRecord) {
        if self.refresh_order.len() >= MAX_RECORDS {
            if let Some(old) = self.refresh_order.pop_front() {
                self.refresh_tokens.remove(&old);
            }
        }
        self.refresh_order.push_back(token.clone());
        self.refresh_tokens.insert(token, rec);
    }

    pub(crate) fn remember_code(&mut self, code: String, rec: CodeRecord) {
        if self.code_order.len() >= MAX_RECORDS {
            if let Some(old) = self.code_order.pop_front() {
                self.codes.remove(&old);
            }
        }
        self.code_order.push_back(code.clone());
        self.codes.insert(code, rec);
    }

    pub(crate) fn remember_device(&mut self, rec: DeviceRecord) {
        if self.devices.len() >= MAX_RECORDS {
            self.devices.pop_front();
        }
        self.devices.push_back(rec);
    }

    /// Microsoft's loop detection (o365-facts.md section 9): the request that makes `threshold`
    /// identical requests within `window` is refused, and so is every further one while the
    /// window still holds that many (refused requests count too).
    pub(crate) fn loop_detected(&mut self, key: String) -> bool {
        if !self.loop_detection {
            return false;
        }
        let now = self.clock.now();
        let window = self.settings.loop_window;
        let threshold = self.settings.loop_threshold.max(1);
        // Forget other keys whose requests all left the window, so the log stays bounded.
        self.loop_log
            .retain(|_, q| q.back().is_some_and(|t| now.saturating_sub(*t) < window));
        let q = self.loop_log.entry(key).or_default();
        while q.front().is_some_and(|t| now.saturating_sub(*t) >= window) {
            q.pop_front();
        }
        q.push_back(now);
        while q.len() > threshold {
            q.pop_front();
        }
        q.len() >= threshold
    }
}
