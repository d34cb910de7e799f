//! Names Envoy and Kuma agree on: SDS secrets, SPIFFE identities, cross-zone SNIs, stat
//! prefixes.

use std::collections::BTreeMap;

/// SDS name of a proxy's identity certificate in `mesh` (Kuma's name).
pub fn identity_secret_name(mesh: &str) -> String {
    format!("identity_cert:secret:{mesh}")
}

/// SDS name of `mesh`'s CA bundle (Kuma's name).
pub fn mesh_ca_secret_name(mesh: &str) -> String {
    format!("mesh_ca:secret:{mesh}")
}

/// The SPIFFE identity of a service in a mesh, carried as a URI SAN.
pub fn spiffe_id(mesh: &str, service: &str) -> String {
    format!("spiffe://{mesh}/{service}")
}

/// The SNI cross-zone routing uses for a service: Kuma's legacy `<service>{mesh=<mesh>,k=v}`,
/// extra tags sorted by name.
pub fn service_sni(service: &str, mesh: &str, extra_tags: &BTreeMap<String, String>) -> String {
    let mut parts = vec![format!("mesh={mesh}")];
    parts.extend(
        extra_tags
            .iter()
            .filter(|(k, _)| k.as_str() != model::labels::SERVICE_TAG)
            .map(|(k, v)| format!("{k}={v}")),
    );
    format!("{service}{{{}}}", parts.join(","))
}

/// Stat prefixes may not carry `:` or `.` (Envoy splits stat names on dots).
pub fn stat_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == ':' || c == '.' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_kumas_legacy_form() {
        let mut tags = BTreeMap::new();
        assert_eq!(
            service_sni("backend", "default", &tags),
            "backend{mesh=default}"
        );
        tags.insert("version".to_string(), "v2".to_string());
        tags.insert("kuma.io/service".to_string(), "backend".to_string());
        assert_eq!(
            service_sni("backend", "default", &tags),
            "backend{mesh=default,version=v2}"
        );
    }
}
