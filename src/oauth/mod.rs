//! OAuth2 token sources (filled in by the token work).
