//! OAuth2 tokens for the mailbox logins: one [`TokenSource`] per configured credential keeps an
//! access token fresh in memory, the [`TokenStore`] keeps delegated refresh tokens on disk, and
//! the `login` command ([`login::run`]) signs a user in once.
//!
//! Shape and why:
//! - [`error`]: Microsoft's error body and the closed [`TokenReason`] set (metric labels).
//!   Classification follows o365-facts.md 3.7/4: `error_codes`, then `error`, never the text.
//! - [`http`]: the single reqwest client (no redirects, deadline, 1 MiB body cap, aws-lc-rs
//!   rustls) and the `oauth2::AsyncHttpClient` adapter that also keeps status and `Retry-After`.
//! - [`source`]: the token lifecycle. Tokens are fetched rarely on purpose: Microsoft's loop
//!   detection trips at about 15 identical requests in 5 minutes (o365-facts.md 9), so a token
//!   is cached until shortly before it expires, failures back off (transient: exponential with
//!   jitter; needs-a-human: every 15 minutes), and the last good token is used until it expires.
//! - [`store`]: crash-safe persistence of the rotated refresh token (temp file, fsync, rename,
//!   directory fsync), with failpoints so tests can break every step.
//! - [`inspect`]: best-effort JWT claims (identity, scopes/roles, audience); never fails.
//! - [`assertion`]: the signed client assertion of certificate credentials.
//! - [`login`]: authorization code + PKCE on a loopback redirect, or the device code flow; refuses
//!   to store a token of anyone but `expected_identity`.
//!
//! Secrets (client secrets, keys, access and refresh tokens) are held in `secrecy` types and
//! never reach logs, errors, the state's `detail` or metrics.

pub mod assertion;
pub mod error;
pub mod grant;
pub mod http;
pub mod inspect;
pub mod login;
pub mod source;
pub mod store;

pub use error::{MsError, TokenReason};
pub use source::{AccessToken, TokenSource, TokenUnavailable, Tokens, Tuning};
pub use store::{StoreError, StoredToken, TokenStore};

/// Setting up token work failed (not a token request: those yield a [`TokenReason`]).
#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    #[error("HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential {credential}: {message}")]
    Credential { credential: String, message: String },
}
