//! HostnameGenerator templates (Kuma's Go templates, the part of the language Kuma's own
//! generators and documentation use: the fields `.Name`, `.DisplayName`, `.Namespace`,
//! `.Mesh`, `.Zone`, the function `label "key"`, and `{{-`/`-}}` trimming) and the choice of
//! which generators apply to a service.

use std::collections::BTreeMap;

use model::labels::{DISPLAY_NAME, ORIGIN, ZONE};
use model::specs::service::{HostnameGeneratorSpec, LabelSelector};
use model::{Resource, ResourceType, Timestamp};

const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("failed compiling gotemplate error=\"{0}\"")]
    Parse(String),
    #[error("pre evaluation of template with parameters failed with error=\"{0}\"")]
    Evaluate(String),
    #[error("generated hostname {hostname:?} is not a valid DNS name: {reason}")]
    NotDns {
        hostname: String,
        reason: &'static str,
    },
}

/// What a template may read of the service it names.
pub struct TemplateInput<'a> {
    pub resource: &'a Resource,
    pub local_zone: &'a str,
}

/// Evaluates `template` for a service: the hostname, or why there is none.
pub fn evaluate(template: &str, input: &TemplateInput<'_>) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let inside = &rest[open + 2..];
        let close = inside
            .find("}}")
            .ok_or_else(|| TemplateError::Parse("unclosed action".into()))?;
        let mut action = &inside[..close];
        rest = &inside[close + 2..];
        // Go trims only when the dash stands apart from the action: `{{- x }}`, `{{ x -}}`.
        if let Some(after_dash) = action.strip_prefix('-')
            && after_dash.starts_with(char::is_whitespace)
        {
            text = text.trim_end();
            action = after_dash;
        }
        if let Some(before_dash) = action.strip_suffix('-')
            && before_dash.ends_with(char::is_whitespace)
        {
            rest = rest.trim_start();
            action = before_dash;
        }
        out.push_str(text);
        out.push_str(&eval_action(action.trim(), input)?);
    }
    if rest.contains("}}") {
        return Err(TemplateError::Parse("unexpected \"}}\"".into()));
    }
    out.push_str(rest);
    check_dns_subdomain(&out)?;
    Ok(out)
}

fn eval_action(action: &str, input: &TemplateInput<'_>) -> Result<String, TemplateError> {
    let r = input.resource;
    if let Some(field) = action.strip_prefix('.') {
        let name = r.meta.name.clone();
        return match field {
            "Name" => Ok(name),
            "DisplayName" => Ok(r.label(DISPLAY_NAME).map(str::to_string).unwrap_or(name)),
            "Namespace" => Ok(r.label(NAMESPACE_LABEL).unwrap_or_default().to_string()),
            "Mesh" => Ok(r.meta.mesh.clone()),
            "Zone" => Ok(r
                .label(ZONE)
                .filter(|z| !z.is_empty())
                .unwrap_or(input.local_zone)
                .to_string()),
            other => Err(TemplateError::Evaluate(format!(
                "can't evaluate field {other} in type meshedName"
            ))),
        };
    }
    let mut words = action.splitn(2, char::is_whitespace);
    match (words.next(), words.next().map(str::trim)) {
        (Some("label"), Some(arg)) => {
            let key = unquote(arg).ok_or_else(|| {
                TemplateError::Parse(format!("label takes one string, got {arg}"))
            })?;
            r.label(key)
                .map(str::to_string)
                .ok_or_else(|| TemplateError::Evaluate(format!("label {key} not found")))
        }
        (Some(""), _) | (None, _) => Err(TemplateError::Parse("missing value for command".into())),
        (Some(f), _) => Err(TemplateError::Parse(format!(
            "function \"{f}\" not defined"
        ))),
    }
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('`').and_then(|s| s.strip_suffix('`')))
        .filter(|k| !k.contains(['"', '`']))
}

/// Kubernetes' DNS-1123 subdomain rule, which Kuma applies to every generated hostname.
fn check_dns_subdomain(h: &str) -> Result<(), TemplateError> {
    let bad = |reason| {
        Err(TemplateError::NotDns {
            hostname: h.to_string(),
            reason,
        })
    };
    if h.is_empty() || h.len() > 253 {
        return bad("must be between 1 and 253 characters");
    }
    for label in h.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ends_ok = label
            .bytes()
            .next()
            .zip(label.bytes().last())
            .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
        if !ok_chars || !ends_ok {
            return bad(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                 characters, '-' or '.', and must start and end with an alphanumeric character",
            );
        }
    }
    Ok(())
}

/// A HostnameGenerator as the controller reads it.
#[derive(Debug, Clone)]
pub struct Generator {
    pub name: String,
    pub spec: HostnameGeneratorSpec,
    zone_origin: bool,
    created: Timestamp,
}

impl Generator {
    /// `None` for a stored generator whose spec does not parse (the API refuses such; a
    /// synced copy from a newer global might still have one).
    pub fn from_resource(r: &Resource) -> Option<Generator> {
        let spec = serde_json::from_value(r.spec.clone()).ok()?;
        Some(Generator {
            name: r.meta.name.clone(),
            spec,
            zone_origin: r.label(ORIGIN) == Some("zone"),
            created: r.meta.creation_time,
        })
    }

    /// The selector this generator has for `kind`, when it names that kind at all.
    pub fn selector(&self, kind: ResourceType) -> Option<&LabelSelector> {
        let s = &self.spec.selector;
        match kind {
            ResourceType::MeshService => s.mesh_service.as_ref(),
            ResourceType::MeshExternalService => s.mesh_external_service.as_ref(),
            ResourceType::MeshMultiZoneService => s.mesh_multi_zone_service.as_ref(),
            _ => None,
        }
    }
}

/// Whether `selector` picks a service with `labels`. One without `kuma.io/origin` was written
/// here without Kuma's computed labels (a standalone control plane computes none); Kuma's
/// non-federated zone labels such a service `zone`, which the default generators select.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| match labels.get(k) {
            Some(have) => have == v,
            None => k == model::labels::ORIGIN && v == "zone",
        })
}

/// Kuma's order: the zone's own generators first, then the oldest, then by name. A hostname
/// goes to the first service (oldest, then by name) that gets it.
pub fn sort(generators: &mut [Generator]) {
    generators.sort_by(|a, b| {
        b.zone_origin
            .cmp(&a.zone_origin)
            .then(a.created.cmp(&b.created))
            .then_with(|| a.name.cmp(&b.name))
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(labels: &[(&str, &str)]) -> Resource {
        let mut r = Resource::new(
            ResourceType::MeshService,
            "default",
            "backend-x7",
            json!({}),
        );
        for (k, v) in labels {
            r.meta.labels.insert(k.to_string(), v.to_string());
        }
        r
    }

    fn eval(t: &str, r: &Resource) -> Result<String, TemplateError> {
        evaluate(
            t,
            &TemplateInput {
                resource: r,
                local_zone: "zone-1",
            },
        )
    }

    #[test]
    fn kumas_default_templates() {
        let local = service(&[]);
        assert_eq!(
            eval("{{ .DisplayName }}.svc.mesh.local", &local).unwrap(),
            "backend-x7.svc.mesh.local"
        );
        let synced = service(&[(DISPLAY_NAME, "backend"), (ZONE, "zone-2")]);
        assert_eq!(
            eval("{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local", &synced).unwrap(),
            "backend.svc.zone-2.mesh.local"
        );
        assert_eq!(
            eval("{{ .Name }}.{{.Mesh}}.{{ .Zone }}", &local).unwrap(),
            "backend-x7.default.zone-1"
        );
        let kube = service(&[
            ("statefulset.kubernetes.io/pod-name", "db-0"),
            ("k8s.kuma.io/service-name", "db"),
            (NAMESPACE_LABEL, "data"),
            (ZONE, "east"),
        ]);
        assert_eq!(
            eval(
                r#"{{ label "statefulset.kubernetes.io/pod-name" }}.{{ label "k8s.kuma.io/service-name" }}.{{ .Namespace }}.svc.{{ .Zone }}.mesh.local"#,
                &kube
            )
            .unwrap(),
            "db-0.db.data.svc.east.mesh.local"
        );
        assert_eq!(
            eval("{{- .Name -}} .x", &local).unwrap(),
            "backend-x7.x",
            "trim markers eat the spaces beside them"
        );
    }

    #[test]
    fn errors_are_kumas() {
        let r = service(&[]);
        assert_eq!(
            eval(r#"{{ label "team" }}.mesh"#, &r),
            Err(TemplateError::Evaluate("label team not found".into()))
        );
        assert!(matches!(
            eval("{{ .Nope }}", &r),
            Err(TemplateError::Evaluate(_))
        ));
        assert!(matches!(
            eval("{{ upper .Name }}", &r),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            eval("{{ .Name }", &r),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            eval("{{ .Name }}..local", &r),
            Err(TemplateError::NotDns { .. })
        ));
        assert!(matches!(
            eval("Backend.local", &r),
            Err(TemplateError::NotDns { .. })
        ));
    }

    #[test]
    fn a_service_without_origin_reads_as_this_zones() {
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"kuma.io/origin": "zone"}})).unwrap();
        let labels = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&selector, &labels(&[])));
        assert!(selects(&selector, &labels(&[("kuma.io/origin", "zone")])));
        assert!(!selects(
            &selector,
            &labels(&[("kuma.io/origin", "global")])
        ));
        let other: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"team": "a"}})).unwrap();
        assert!(!selects(&other, &labels(&[])));
    }

    #[test]
    fn zone_generators_sort_first_then_oldest() {
        let mut gens: Vec<Generator> = [("b", false, 1), ("a", false, 2), ("z", true, 3)]
            .into_iter()
            .map(|(name, zone, t)| {
                let mut r = Resource::new(
                    ResourceType::HostnameGenerator,
                    "",
                    name,
                    json!({"template": "x", "selector": {"meshService": {"matchLabels": {}}}}),
                );
                if zone {
                    r.meta.labels.insert(ORIGIN.into(), "zone".into());
                }
                r.meta.creation_time = Timestamp::from_unix_seconds(t);
                Generator::from_resource(&r).unwrap()
            })
            .collect();
        sort(&mut gens);
        let names: Vec<&str> = gens.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["z", "b", "a"]);
    }
}
