//! A stored resource and its Kuma-shaped JSON/YAML form.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::descriptor::{Layout, ResourceType};
use crate::name::name_violation;
use crate::time::Timestamp;
use crate::validate::{ValidationError, Validator};

/// Identifies one resource. `mesh` is empty for global-scoped types.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: ResourceType,
    pub mesh: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: ResourceType, mesh: impl Into<String>, name: impl Into<String>) -> Self {
        let mesh = if kind.is_mesh_scoped() {
            mesh.into()
        } else {
            String::new()
        };
        ResourceKey {
            kind,
            mesh,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mesh.is_empty() {
            write!(f, "{} {:?}", self.kind, self.name)
        } else {
            write!(f, "{} {:?} in mesh {:?}", self.kind, self.name, self.mesh)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    pub name: String,
    /// Empty for global-scoped types.
    pub mesh: String,
    /// Store-assigned, strictly increasing per resource; 0 before the first write.
    pub version: u64,
    pub labels: BTreeMap<String, String>,
    pub creation_time: Timestamp,
    pub modification_time: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: ResourceType,
    pub meta: Meta,
    /// Always a JSON object; for top-level types these are the fields beside `type`/`name`.
    pub spec: Value,
    pub status: Option<Value>,
}

/// Fields that belong to the envelope, never to a top-level spec.
const ENVELOPE_FIELDS: &[&str] = &[
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
];

impl Resource {
    pub fn new(kind: ResourceType, mesh: &str, name: &str, spec: Value) -> Self {
        let mesh = if kind.is_mesh_scoped() {
            mesh.to_string()
        } else {
            String::new()
        };
        Resource {
            kind,
            meta: Meta {
                name: name.to_string(),
                mesh,
                ..Meta::default()
            },
            spec,
            status: None,
        }
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind,
            mesh: self.meta.mesh.clone(),
            name: self.meta.name.clone(),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.meta.labels.get(key).map(String::as_str)
    }

    /// Reads Kuma's JSON/YAML shape. Structural problems (missing `type`, a spec that is not an
    /// object) are reported with field paths; the spec itself is checked by [`Resource::validate`].
    pub fn from_value(value: Value) -> Result<Resource, ValidationError> {
        let Value::Object(mut obj) = value else {
            return Err(ValidationError::single("", "resource must be an object"));
        };
        let kind = match obj.get("type") {
            Some(Value::String(t)) => ResourceType::from_name(t).ok_or_else(|| {
                ValidationError::single("type", format!("unknown resource type {t:?}"))
            })?,
            Some(_) => return Err(ValidationError::single("type", "must be a string")),
            None => return Err(ValidationError::single("type", "must be defined")),
        };
        let mut v = Validator::new();
        let name = take_string(&mut obj, "name", &mut v);
        let mesh = if kind.is_mesh_scoped() {
            take_string(&mut obj, "mesh", &mut v)
        } else {
            // As Kuma's API does: a `mesh` on a global-scoped resource (Kuma's docs show one on
            // a HostnameGenerator) is ignored, the resource is stored without one.
            obj.remove("mesh");
            String::new()
        };
        let labels = match obj.remove("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => {
                let mut labels = BTreeMap::new();
                for (k, val) in map {
                    match val {
                        Value::String(s) => {
                            labels.insert(k, s);
                        }
                        _ => v.field("labels", |v| {
                            v.key(&k, |v| v.violation("label value must be a string"))
                        }),
                    }
                }
                labels
            }
            Some(_) => {
                v.violation_at("labels", "must be an object of string values");
                BTreeMap::new()
            }
        };
        let creation_time = take_time(&obj, "creationTime");
        let modification_time = take_time(&obj, "modificationTime");
        let (spec, status) = match kind.descriptor().layout {
            Layout::TopLevel => {
                for f in ENVELOPE_FIELDS {
                    obj.remove(*f);
                }
                (Value::Object(obj), None)
            }
            Layout::Spec => {
                let spec = match obj.remove("spec") {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(s @ Value::Object(_)) => s,
                    Some(_) => {
                        v.violation_at("spec", "must be an object");
                        Value::Object(Map::new())
                    }
                };
                let status = obj.remove("status").filter(|s| !s.is_null());
                for f in ENVELOPE_FIELDS {
                    obj.remove(*f);
                }
                for extra in obj.keys() {
                    v.violation_at(extra, "unknown field");
                }
                (spec, status)
            }
        };
        v.finish()?;
        Ok(Resource {
            kind,
            meta: Meta {
                name,
                mesh,
                version: 0,
                labels,
                creation_time: creation_time.unwrap_or_default(),
                modification_time: modification_time.unwrap_or_default(),
            },
            spec,
            status,
        })
    }

    /// Kuma's JSON shape: envelope first, then the spec (inline or under `spec`).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), Value::String(self.kind.name().into()));
        if self.kind.is_mesh_scoped() {
            obj.insert("mesh".into(), Value::String(self.meta.mesh.clone()));
        }
        obj.insert("name".into(), Value::String(self.meta.name.clone()));
        obj.insert(
            "creationTime".into(),
            Value::String(self.meta.creation_time.to_string()),
        );
        obj.insert(
            "modificationTime".into(),
            Value::String(self.meta.modification_time.to_string()),
        );
        if !self.meta.labels.is_empty() {
            let labels = self
                .meta
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            obj.insert("labels".into(), Value::Object(labels));
        }
        match self.kind.descriptor().layout {
            Layout::TopLevel => {
                if let Value::Object(spec) = &self.spec {
                    for (k, v) in spec {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
            Layout::Spec => {
                obj.insert("spec".into(), self.spec.clone());
                if let Some(status) = &self.status {
                    obj.insert("status".into(), status.clone());
                }
            }
        }
        Value::Object(obj)
    }

    /// Everything a write must satisfy: name, mesh, labels, and the type's spec rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Validator::new();
        if let Some(reason) = name_violation(&self.meta.name) {
            v.violation_at("name", reason);
        }
        if self.kind.is_mesh_scoped() {
            if self.meta.mesh.is_empty() {
                v.violation_at("mesh", "must be defined for a mesh-scoped resource");
            } else if let Some(reason) = name_violation(&self.meta.mesh) {
                v.violation_at("mesh", reason);
            }
        }
        v.field("labels", |v| {
            for (k, val) in &self.meta.labels {
                if let Some(reason) = label_key_violation(k) {
                    v.key(k, |v| v.violation(reason));
                } else if val.len() > 63 {
                    v.key(k, |v| {
                        v.violation("label value must be at most 63 characters long")
                    });
                } else if !is_label_value(val) {
                    // Kubernetes' rule and message, which Kuma applies on universal too.
                    v.key(k, |v| {
                        v.violation(
                            "a valid label must be an empty string or consist of alphanumeric \
                             characters, '-', '_' or '.', and must start and end with an \
                             alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
                             regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                        )
                    });
                }
            }
        });
        let mut errors = v.finish().err().unwrap_or_default();
        if !self.spec.is_object() {
            errors.violations.push(crate::Violation {
                field: "spec".into(),
                reason: "must be an object".into(),
            });
        } else if let Err(e) = (self.kind.descriptor().validate)(&self.spec) {
            errors.violations.extend(e.violations);
        }
        if errors.violations.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The spec decoded into its typed form. Only call on validated resources.
    pub fn typed_spec<T: serde::de::DeserializeOwned>(&self) -> Result<T, ValidationError> {
        crate::validate::decode_at(&self.spec, "spec")
    }
}

fn take_string(obj: &mut Map<String, Value>, field: &str, v: &mut Validator) -> String {
    match obj.remove(field) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => {
            v.violation_at(field, "must be defined");
            String::new()
        }
        Some(_) => {
            v.violation_at(field, "must be a string");
            String::new()
        }
    }
}

fn take_time(obj: &Map<String, Value>, field: &str) -> Option<Timestamp> {
    obj.get(field)
        .and_then(Value::as_str)
        .and_then(Timestamp::parse)
}

/// Kubernetes label-key rules: optional DNS prefix, `/`, a name of at most 63 characters.
pub fn label_key_violation(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() || name.len() > 63 {
        return Some("label key name must be 1 to 63 characters long");
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if !name.chars().all(ok)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Some(
            "label key must consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character",
        );
    }
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Some("label key prefix must be a DNS subdomain");
    }
    None
}

/// Parse errors of YAML/JSON documents, before any resource rule is applied.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("document {index}: invalid YAML: {message}")]
    Yaml { index: usize, message: String },
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Splits a multi-document YAML stream into JSON values. Empty documents are skipped, as kubectl does.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, DecodeError> {
    let mut docs = Vec::new();
    for (index, chunk) in split_yaml_documents(text).into_iter().enumerate() {
        if chunk.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let value: Value = serde_saphyr::from_str(&chunk).map_err(|e| DecodeError::Yaml {
            index: index + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Splits on `---` document markers at the start of a line.
fn split_yaml_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push(String::new());
            continue;
        }
        if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs
}

/// Parses one resource given as YAML or JSON (JSON is a subset of YAML, but serde_json's errors
/// are clearer, so it is tried first when the text looks like JSON).
pub fn parse_resource_text(text: &str) -> Result<Value, DecodeError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| DecodeError::Json(e.to_string()));
    }
    let mut docs = parse_yaml_documents(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err(DecodeError::Yaml {
            index: 1,
            message: "document is empty".into(),
        }),
        n => Err(DecodeError::Yaml {
            index: 2,
            message: format!("expected one document, found {n}"),
        }),
    }
}

/// YAML as kumactl prints it.
pub fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

/// A Kubernetes label value: empty, or alphanumerics with `-`, `_`, `.` inside.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    bytes.is_empty()
        || (bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(inner_ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_round_trip() {
        let v = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}});
        let r = Resource::from_value(v).unwrap();
        assert_eq!(r.kind, ResourceType::Mesh);
        assert_eq!(r.spec["mtls"]["enabledBackend"], "ca-1");
        let out = r.to_value();
        assert_eq!(out["type"], "Mesh");
        assert_eq!(out["mtls"]["backends"][0]["type"], "builtin");
        assert!(out.get("mesh").is_none());
    }

    #[test]
    fn spec_layout_rejects_stray_fields() {
        let v = json!({"type": "MeshTimeout", "name": "t", "mesh": "default", "spce": {}});
        let e = Resource::from_value(v).unwrap_err();
        assert_eq!(e.violations[0].field, "spce");
    }

    #[test]
    fn missing_type_and_unknown_type() {
        assert_eq!(
            Resource::from_value(json!({"name": "x"}))
                .unwrap_err()
                .violations[0]
                .field,
            "type"
        );
        let e = Resource::from_value(json!({"type": "Nope", "name": "x"})).unwrap_err();
        assert!(e.violations[0].reason.contains("unknown resource type"));
    }

    #[test]
    fn bad_names_are_reported() {
        let r = Resource::from_value(json!({"type": "Mesh", "name": "Bad Name"})).unwrap();
        let e = r.validate().unwrap_err();
        assert_eq!(e.violations[0].field, "name");
    }

    #[test]
    fn multi_document_yaml() {
        let text = "type: Mesh\nname: a\n---\n# comment only\n---\ntype: Mesh\nname: b\n";
        let docs = parse_yaml_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["name"], "b");
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        assert!(parse_yaml_documents("type: Mesh\n  name: [a\n").is_err());
        assert!(parse_resource_text("{\"type\": ").is_err());
    }

    #[test]
    fn label_keys() {
        assert!(label_key_violation("kuma.io/zone").is_none());
        assert!(label_key_violation("team").is_none());
        assert!(label_key_violation("/x").is_some());
        assert!(label_key_violation("a b").is_some());
    }
}
