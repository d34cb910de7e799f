//! Security primitives: signed tokens backed by signing keys kept in the store, the users they
//! name, and TLS material for the control plane's own listeners.

pub mod ca;
pub mod dataplane;
pub mod tls;
pub mod tokens;
pub mod user;
pub mod zone;

pub use tokens::{KeyScope, SigningKeys, TokenError};
pub use user::User;

/// How far the clocks of two machines of one deployment may disagree (a zone's against
/// global's, a control plane's against its proxies'): tokens are valid from this long before
/// they were issued and certificates from this long before they were signed. Kuma allows 5 s
/// for tokens and 10 s for proxies' certificates; a zone whose NTP has drifted minutes would
/// see its proxies refused, so we allow minutes (docs/reliability.md, clock skew).
pub const ALLOWED_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(600);

/// A random identifier in UUID v4 form, for token ids and instance ids.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
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

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
