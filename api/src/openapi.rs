//! `GET /openapi.yaml` (and `/openapi.json`): an OpenAPI 3 description of this API in Kuma's
//! shapes, built from the resource type table so every type's paths are in it. CI runs
//! schemathesis against a live control plane with it (`scripts/schemathesis.sh`): no input
//! may give a 5xx, and every answer must match what is described here.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use model::resource::to_yaml;
use model::{Descriptor, ResourceType, Scope};
use serde_json::{Map, Value, json};

fn plurals(filter: impl Fn(&Descriptor) -> bool) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = ResourceType::all()
        .map(ResourceType::descriptor)
        .filter(|d| filter(d))
        .map(|d| d.plural)
        .collect();
    all.sort_unstable();
    all
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn query_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

const NAME: &str = "name";

/// Any answer this operation gives: `ok` for 200 (and 201 for writes), Kuma's error shape
/// for every other status.
fn answers(ok: Value, created: bool) -> Value {
    let mut responses = json!({
        "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
        "default": {"description": "Kuma's error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
    });
    if created {
        responses["201"] = json!({"description": "Created", "content": {"application/json": {
            "schema": {"type": "object"}}}});
    }
    responses
}

fn get(ok: Value) -> Value {
    json!({"responses": answers(ok, false)})
}

/// A path whose only operation is a GET answering `ok`.
fn read_only(ok: Value) -> Value {
    json!({"get": get(ok)})
}

fn resource_operations() -> Value {
    json!({
        "get": get(json!({"$ref": "#/components/schemas/Resource"})),
        "put": {
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Resource"}}}},
            "responses": answers(json!({"type": "object"}), true),
        },
        "delete": {"responses": answers(json!({"type": "object"}), false)},
    })
}

fn list() -> Value {
    json!({"$ref": "#/components/schemas/List"})
}

fn paging() -> Vec<Value> {
    vec![
        query_param("size", json!({"type": "integer", "minimum": 0})),
        query_param("offset", json!({"type": "string"})),
    ]
}

fn spec() -> Value {
    let global = plurals(|d| d.scope == Scope::Global);
    let mesh_scoped = plurals(|d| d.scope == Scope::Mesh);
    let policies = plurals(|d| d.is_policy || d.kind == ResourceType::MeshGateway);
    let enumerated = |values: &[&str]| json!({"type": "string", "enum": values});
    let name = json!({"type": "string", "minLength": 1});
    let mesh = path_param("mesh", name.clone());
    let mut paths = Map::new();
    let mut add = |path: &str, item: Value| {
        paths.insert(path.to_string(), item);
    };
    add(
        "/",
        read_only(json!({"$ref": "#/components/schemas/Index"})),
    );
    add("/config", read_only(json!({"type": "object"})));
    add(
        "/_resources",
        read_only(json!({"type": "object", "required": ["resources"],
            "properties": {"resources": {"type": "array", "items": {"type": "object",
                "required": ["name", "path", "scope"]}}}})),
    );
    add(
        "/who-am-i",
        read_only(json!({"type": "object", "required": ["name"]})),
    );
    add("/mesh-insights", read_only(list()));
    add(
        "/mesh-insights/{mesh}",
        json!({"parameters": [mesh.clone()], "get": get(json!({"type": "object"}))}),
    );
    add("/global-insight", read_only(json!({"type": "object"})));
    add("/control-planes", read_only(list()));
    for kind in ["user", "dataplane", "zone"] {
        add(
            &format!("/tokens/{kind}"),
            json!({"post": {
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "responses": {
                    "200": {"description": "The token", "content": {"text/plain": {
                        "schema": {"type": "string"}}}},
                    "default": {"description": "Kuma's error", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }}),
        );
    }
    let mut plural_list = vec![path_param(
        "plural",
        enumerated(&[global.clone(), mesh_scoped.clone()].concat()),
    )];
    plural_list.extend(paging());
    add(
        "/{plural}",
        json!({"parameters": plural_list, "get": get(list())}),
    );
    let mut item = resource_operations();
    item["parameters"] = json!([
        path_param("plural", enumerated(&global)),
        path_param(NAME, name.clone()),
    ]);
    add("/{plural}/{name}", item);
    let mut mesh_list = vec![mesh.clone(), path_param("plural", enumerated(&mesh_scoped))];
    mesh_list.extend(paging());
    add(
        "/meshes/{mesh}/{plural}",
        json!({"parameters": mesh_list, "get": get(list())}),
    );
    let mut item = resource_operations();
    item["parameters"] = json!([
        mesh.clone(),
        path_param("plural", enumerated(&mesh_scoped)),
        path_param(NAME, name.clone()),
    ]);
    add("/meshes/{mesh}/{plural}/{name}", item);
    let dataplane = json!([mesh.clone(), path_param(NAME, name.clone())]);
    for (suffix, ok) in [
        ("_overview", json!({"type": "object"})),
        ("_rules", json!({"type": "object"})),
        ("_policies", json!({"type": "object"})),
    ] {
        add(
            &format!("/meshes/{{mesh}}/dataplanes/{{name}}/{suffix}"),
            json!({"parameters": dataplane.clone(), "get": get(ok)}),
        );
    }
    let mut selected = vec![
        mesh.clone(),
        path_param("plural", enumerated(&policies)),
        path_param(NAME, name.clone()),
    ];
    selected.extend(paging());
    add(
        "/meshes/{mesh}/{plural}/{name}/_resources/dataplanes",
        json!({"parameters": selected, "get": get(list())}),
    );
    add(
        "/meshes/{mesh}/service-insights",
        json!({"parameters": [mesh.clone()], "get": get(list())}),
    );
    add(
        "/meshes/{mesh}/service-insights/{service}",
        json!({"parameters": [mesh, path_param("service", name)],
            "get": get(json!({"type": "object"}))}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Kuma control plane HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The resource API in Kuma's shapes (see docs/api.md). Not described: \
                the event stream `/events`, the GUI under `/gui`, a hosted manager's \
                `/v0/mesh/control-planes`, and proxies' inspect views (`.../xds`, `stats`, \
                `clusters`), which answer Envoy's own formats.",
        },
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["title", "status"], "properties": {
                "type": {"type": "string"},
                "status": {"type": "integer"},
                "title": {"type": "string"},
                "detail": {"type": "string"},
                "invalid_parameters": {"type": "array", "items": {"type": "object",
                    "required": ["field", "reason"], "properties": {
                        "field": {"type": "string"}, "reason": {"type": "string"}}}},
            }},
            "Resource": {"type": "object", "required": ["type", "name"], "properties": {
                "type": {"type": "string"},
                "name": {"type": "string"},
                "mesh": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": {"type": "object"},
            }},
            "List": {"type": "object", "required": ["items"], "properties": {
                "total": {"type": "integer"},
                "items": {"type": "array", "items": {"type": "object"}},
                "next": {"type": "string", "nullable": true},
            }},
            "Index": {"type": "object", "required": ["product", "version", "mode"]},
        }},
    })
}

pub async fn yaml() -> Response {
    let mut response = to_yaml(&spec()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    response
}

pub async fn json() -> axum::Json<Value> {
    axum::Json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_type_has_its_paths() {
        let spec = spec();
        let text = spec.to_string();
        for kind in ResourceType::all() {
            assert!(
                text.contains(&format!("\"{}\"", kind.descriptor().plural)),
                "{kind}"
            );
        }
        // Each path parameter is declared where the path names it.
        for (path, item) in spec["paths"].as_object().unwrap() {
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let declared = item["parameters"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == name));
                assert!(declared, "{path}: {name}");
            }
        }
    }
}
