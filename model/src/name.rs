//! Resource names: the rules they must follow and the hashed names KDS gives copies.

/// Kuma accepts DNS-1123 subdomain-like names (Kubernetes compatible) up to 253 characters.
pub const MAX_NAME_LEN: usize = 253;

/// Why a name is rejected, or `None` if it is fine.
pub fn name_violation(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "name must be at most {MAX_NAME_LEN} characters long"
        ));
    }
    let valid_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_';
    if !name.chars().all(valid_char) {
        return Some(
            "name must consist of lower case alphanumeric characters, '-', '_' or '.'".into(),
        );
    }
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("name must start and end with an alphanumeric character".into());
    }
    None
}

const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const DISPLAY_NAME_MAX: usize = 236;

/// The name KDS gives a synced copy: the display name cut to 236 characters, `-`, and a
/// 16-character suffix from FNV-1a 64 over mesh ‖ name ‖ zone ‖ namespace (Kuma's `hash-suffix`).
pub fn hashed_name(
    mesh: &str,
    display_name: &str,
    zone: Option<&str>,
    namespace: Option<&str>,
) -> String {
    const OFFSET: u64 = 0xcbf29ce484222325;
    const PRIME: u64 = 0x100000001b3;
    let mut h = OFFSET;
    let parts = [Some(mesh), Some(display_name), zone, namespace];
    for part in parts.into_iter().flatten() {
        for b in part.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(PRIME);
        }
    }
    let hex = format!("{h:016x}");
    let suffix: String = hex
        .bytes()
        .map(|c| HASH_ALPHABET[c as usize % HASH_ALPHABET.len()] as char)
        .collect();
    let mut prefix_end = display_name.len().min(DISPLAY_NAME_MAX);
    while !display_name.is_char_boundary(prefix_end) {
        prefix_end -= 1;
    }
    format!("{}-{}", &display_name[..prefix_end], suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_vectors_from_kuma() {
        assert_eq!(
            hashed_name("default", "default-timeout-global", None, None),
            "default-timeout-global-54dbd4c66zwbcf9c"
        );
        assert_eq!(
            hashed_name("default", "default-timeout-zone-1", Some("zone-1"), None),
            "default-timeout-zone-1-c58w24w4vw27f454"
        );
        assert_eq!(
            hashed_name("default", "redis-zone-1", Some("zone-1"), None),
            "redis-zone-1-2v6wfvvcvbc9f55d"
        );
    }

    #[test]
    fn names() {
        assert!(name_violation("backend-v1.default").is_none());
        assert!(name_violation("Backend").is_some());
        assert!(name_violation("-a").is_some());
        assert!(name_violation("a b").is_some());
        assert!(name_violation(&"a".repeat(254)).is_some());
        assert!(name_violation("").is_some());
    }
}
