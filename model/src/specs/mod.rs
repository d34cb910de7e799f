//! Typed, validated specs, one module per family of types.

pub mod dataplane;
pub mod gateway;
pub mod insight;
pub mod mesh;
pub mod policy;
pub mod secret;
pub mod service;
pub mod targetref;
#[cfg(test)]
mod testing;
pub mod zone;

use std::collections::BTreeMap;

use crate::validate::Validator;

/// Kuma tag keys and values: letters, digits and `.-_:/`; values must not be empty.
pub fn validate_tags(v: &mut Validator, tags: &BTreeMap<String, String>) {
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:/".contains(c))
    };
    for (k, val) in tags {
        v.key(k, |v| {
            if k.is_empty() || !ok(k) {
                v.violation("tag name must consist of alphanumeric characters, dots, dashes, slashes, colons and underscores");
            }
            if val.is_empty() {
                v.violation("tag value cannot be empty");
            } else if !ok(val) {
                v.violation("tag value must consist of alphanumeric characters, dots, dashes, slashes, colons and underscores");
            }
        });
    }
}

/// An IPv4/IPv6 address or a DNS hostname.
pub fn is_address(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    is_hostname(s)
}

pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub fn validate_address(v: &mut Validator, field: &str, value: &str, required: bool) {
    if value.is_empty() {
        if required {
            v.violation_at(field, "address can't be empty");
        }
    } else if !is_address(value) {
        v.violation_at(
            field,
            "address has to be a valid IP address or a domain name",
        );
    }
}
