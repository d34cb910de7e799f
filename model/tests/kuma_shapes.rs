//! Every field Kuma 2.14 accepts on a resource is accepted here. `data/kuma-2.14-shapes.json`
//! holds, per type, an object with every field Kuma's schema for that type has (each given a
//! value of the field's type): read off Kuma v2.14.3's generated CRD schemas (targetRef
//! policies, MeshService and friends) and its protobuf JSON schemas (Mesh, Dataplane, zone
//! proxies, MeshGateway). The values are placeholders, so semantic validation may refuse them;
//! what must never happen is a refusal of the shape itself: an unknown field, a field of the
//! wrong type or an enum value Kuma has that we do not.

use model::Resource;
use serde_json::{Map, Value, json};

const STRUCTURAL: [&str; 4] = [
    "unknown field",
    "invalid type",
    "unknown variant",
    "expected one of",
];

fn resource(kind: &str, shape: &Value, spec_field: &str) -> Value {
    let mut obj = Map::new();
    obj.insert("type".into(), json!(kind));
    obj.insert("name".into(), json!("kuma-shape"));
    if !matches!(kind, "ZoneIngress" | "ZoneEgress" | "Mesh") {
        obj.insert("mesh".into(), json!("default"));
    }
    if let Some(spec) = shape.get(spec_field) {
        obj.insert("spec".into(), spec.clone());
    }
    if let Some(Value::Object(inline)) = shape.get("inline") {
        obj.extend(inline.clone());
    }
    Value::Object(obj)
}

#[test]
fn every_field_kuma_accepts_is_accepted() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kuma-2.14-shapes.json");
    let shapes: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(shapes.len() >= 25, "one shape per type Kuma and we share");
    let mut refused = Vec::new();
    // `spec` gives each enum field Kuma's first value, `specLastEnumValues` its last.
    for (kind, shape) in &shapes {
        for spec_field in ["spec", "specLastEnumValues"] {
            if spec_field != "spec" && shape.get(spec_field).is_none() {
                continue;
            }
            let value = resource(kind, shape, spec_field);
            let outcome = Resource::from_value(value.clone()).and_then(|r| r.validate());
            if let Err(e) = outcome {
                let text = e.to_string();
                if STRUCTURAL.iter().any(|s| text.contains(s)) {
                    refused.push(format!("{kind} ({spec_field}): {text}"));
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "Kuma's shapes refused:\n{}",
        refused.join("\n")
    );
}
