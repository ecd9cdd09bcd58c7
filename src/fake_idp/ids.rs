//! Identifiers the fake hands out: GUIDs, opaque refresh tokens and codes, device user codes.
//! Random ones come from the OS generator; derived ones (object ids of registered users and
//! service principals) are stable hashes, so a test can predict them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng as _;

fn format_uuid(b: [u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random (version 4) GUID.
pub(crate) fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

/// A GUID derived from `name` (SHA-256, version 5-like bits): stable across runs.
pub(crate) fn derived_uuid(name: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

/// An opaque token: `prefix` + base64url of `n` random bytes. Microsoft refresh tokens and
/// authorization codes start `0.A`; device codes `DAQABAAEAAAD`.
pub(crate) fn opaque(prefix: &str, n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A 9-character device-flow user code (Entra's length), without look-alike characters.
pub(crate) fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..9)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid());
        assert_eq!(derived_uuid("a"), derived_uuid("a"));
        assert_ne!(derived_uuid("a"), derived_uuid("b"));
        assert!(opaque("0.A", 32).starts_with("0.A"));
        assert_eq!(user_code().len(), 9);
    }
}
