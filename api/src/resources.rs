//! Resource CRUD: `/{plural}[/{name}]` for global-scoped types (and cross-mesh listing of
//! mesh-scoped ones), `/meshes/{mesh}/{plural}[/{name}]` for mesh-scoped types.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use model::{Resource, ResourceKey, ResourceType, Scope};
use security::user::ADMIN_TOKEN_SECRET;
use serde_json::{Value, json};
use store::{ListQuery, StoreError};

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::overview;
use crate::paging::{DEFAULT_PAGE_SIZE, DataplaneFilter, list_page, next_link, parse_list_query};
use crate::{MAX_BODY_BYTES, SharedState};

const TITLE_GET: &str = "Could not retrieve a resource";
const TITLE_LIST: &str = "Could not retrieve resources";
const TITLE_PUT: &str = "Could not process a resource";
const TITLE_DELETE: &str = "Could not delete a resource";

pub async fn index(State(state): State<SharedState>) -> Json<crate::ServerInfo> {
    Json(state.info.clone())
}

pub async fn config(State(state): State<SharedState>) -> Json<Value> {
    Json(state.config.clone())
}

pub async fn resource_types() -> Json<Value> {
    let mut items: Vec<Value> = ResourceType::all()
        .map(|t| {
            let d = t.descriptor();
            let mut item = json!({
                "name": d.name,
                "path": d.plural,
                "scope": match d.scope { Scope::Mesh => "Mesh", Scope::Global => "Global" },
                "readOnly": d.read_only,
                "includeInFederation": d.has_flag(model::descriptor::kds::PROVIDED_BY_GLOBAL)
                    && !matches!(t, ResourceType::MeshService),
                "singularDisplayName": d.singular_display,
                "pluralDisplayName": d.plural_display,
                "kdsFlags": d.kds_flags,
            });
            if d.is_policy {
                item["policy"] = json!({"isTargetRef": true});
            }
            item
        })
        .collect();
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "resources": items }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found", "No such endpoint")
}

/// What the URL names: a known type in the right scope.
pub(crate) fn resolve_type(plural: &str, in_mesh: bool) -> Result<ResourceType, ApiError> {
    let kind = ResourceType::from_api_path(plural).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("unknown resource type {plural:?}"),
        )
    })?;
    if in_mesh && !kind.is_mesh_scoped() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{kind} is not mesh-scoped: use /{plural}"),
        ));
    }
    Ok(kind)
}

/// The type of an overview path: `<plural>+insights`, or Kuma's legacy
/// `zoneegressoverviews`; `None` for a plain path.
fn overview_type(segment: &str, in_mesh: bool) -> Option<Result<ResourceType, ApiError>> {
    if segment == "zoneegressoverviews" && !in_mesh {
        return Some(Ok(ResourceType::ZoneEgress));
    }
    segment
        .strip_suffix("+insights")
        .map(|base| resolve_type(base, in_mesh))
}

/// Listing in a mesh that does not exist is 404, as in Kuma (not an empty list).
async fn ensure_mesh(state: &SharedState, mesh: &str) -> Result<(), ApiError> {
    state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_store("Failed to retrieve Mesh", e))
}

/// Secrets are for admins only; the bootstrap admin token additionally only for this host.
fn check_read_access(
    caller: &Caller,
    key: Option<&ResourceKey>,
    kind: ResourceType,
) -> Result<(), ApiError> {
    let secret = matches!(kind, ResourceType::Secret | ResourceType::GlobalSecret);
    if secret && !caller.user.is_admin() {
        return Err(ApiError::forbidden(format!(
            "user {:?} cannot access {kind} resources",
            caller.user.name
        )));
    }
    if let Some(k) = key
        && k.kind == ResourceType::GlobalSecret
        && k.name == ADMIN_TOKEN_SECRET
        && !caller.local
    {
        return Err(ApiError::forbidden(
            "the admin user token can only be read from the control plane's host",
        ));
    }
    Ok(())
}

fn check_write_access(caller: &Caller, kind: ResourceType) -> Result<(), ApiError> {
    if kind.descriptor().read_only {
        return Err(ApiError::method_not_allowed(format!(
            "{kind} is read-only: the control plane writes it"
        )));
    }
    check_read_access(caller, None, kind)
}

// ---- list ----

pub async fn list_top(
    State(state): State<SharedState>,
    Path(plural): Path<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if let Some(kind) = overview_type(&plural, false) {
        return overview::list(&state, kind?, None, &params, &uri, &headers).await;
    }
    let kind = resolve_type(&plural, false)?;
    list(&state, kind, None, &params, &uri, &headers, &caller).await
}

/// `GET /{plural}/_overview`: Kuma's overview list (a type with insights).
pub async fn list_overview_top(
    State(state): State<SharedState>,
    Path(plural): Path<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, false)?;
    overview::list(&state, kind, None, &params, &uri, &headers).await
}

/// `GET /meshes/{mesh}/{plural}/_overview`.
pub async fn list_overview_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, true)?;
    ensure_mesh(&state, &mesh).await?;
    overview::list(&state, kind, Some(mesh), &params, &uri, &headers).await
}

/// `GET /{plural}/{name}/_overview`.
pub async fn get_overview_top(
    State(state): State<SharedState>,
    Path((plural, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, false)?;
    overview::get(&state, kind, "", &name).await
}

pub async fn list_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if let Some(kind) = overview_type(&plural, true) {
        let kind = kind?;
        ensure_mesh(&state, &mesh).await?;
        return overview::list(&state, kind, Some(mesh), &params, &uri, &headers).await;
    }
    let kind = resolve_type(&plural, true)?;
    ensure_mesh(&state, &mesh).await?;
    list(&state, kind, Some(mesh), &params, &uri, &headers, &caller).await
}

async fn list(
    state: &SharedState,
    kind: ResourceType,
    mesh: Option<String>,
    params: &HashMap<String, String>,
    uri: &OriginalUri,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Response, ApiError> {
    check_read_access(caller, None, kind)?;
    let filter = DataplaneFilter::from_request(kind, mesh.is_some(), uri)?;
    let query = parse_list_query(kind, mesh, params)?;
    let page = list_page(&state.store, &query, filter.as_ref())
        .await
        .map_err(|e| ApiError::from_store(TITLE_LIST, e))?;
    let items: Vec<Value> = page
        .items
        .iter()
        // The admin token never leaves the host, not even in a list.
        .filter(|r| {
            caller.local
                || !(r.kind == ResourceType::GlobalSecret && r.meta.name == ADMIN_TOKEN_SECRET)
        })
        .map(Resource::to_value)
        .collect();
    let next = next_link(
        uri,
        headers,
        page.next_offset,
        query.size.unwrap_or(DEFAULT_PAGE_SIZE),
    );
    Ok(Json(json!({"total": page.total, "items": items, "next": next})).into_response())
}

// ---- get ----

pub async fn get_top(
    State(state): State<SharedState>,
    Path((plural, name)): Path<(String, String)>,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if let Some(kind) = overview_type(&plural, false) {
        return overview::get(&state, kind?, "", &name).await;
    }
    let kind = resolve_type(&plural, false)?;
    if kind.is_mesh_scoped() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{kind} is mesh-scoped: use /meshes/{{mesh}}/{plural}/{name}"),
        ));
    }
    get_one(&state, ResourceKey::new(kind, "", name), &caller).await
}

pub async fn get_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if let Some(kind) = overview_type(&plural, true) {
        return overview::get(&state, kind?, &mesh, &name).await;
    }
    let kind = resolve_type(&plural, true)?;
    get_one(&state, ResourceKey::new(kind, mesh, name), &caller).await
}

pub async fn get_overview_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, true)?;
    overview::get(&state, kind, &mesh, &name).await
}

async fn get_one(
    state: &SharedState,
    key: ResourceKey,
    caller: &Caller,
) -> Result<Response, ApiError> {
    check_read_access(caller, Some(&key), key.kind)?;
    let r = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(TITLE_GET, e))?;
    Ok(Json(r.to_value()).into_response())
}

// ---- put ----

pub async fn put_top(
    State(state): State<SharedState>,
    Path((plural, name)): Path<(String, String)>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, false)?;
    if kind.is_mesh_scoped() {
        return Err(ApiError::method_not_allowed(format!(
            "{kind} is mesh-scoped: PUT /meshes/{{mesh}}/{plural}/{name}"
        )));
    }
    put(&state, ResourceKey::new(kind, "", name), &caller, body).await
}

pub async fn put_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, true)?;
    put(&state, ResourceKey::new(kind, mesh, name), &caller, body).await
}

/// Reads at most `MAX_BODY_BYTES`; a larger body is a 400 naming the body, not a dropped connection.
pub(crate) async fn read_body(body: Body, title: &str) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                title,
                "body",
                format!("request body must not exceed {MAX_BODY_BYTES} bytes"),
            )
        })
}

/// Turns request bytes into a resource whose type, name and mesh agree with the URL.
pub fn decode_put_body(bytes: &[u8], key: &ResourceKey) -> Result<Resource, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(TITLE_PUT, "body", "must be UTF-8"))?;
    let value: Value = model::resource::parse_resource_text(text)
        .map_err(|e| ApiError::bad_request(TITLE_PUT, "body", e.to_string()))?;
    let mut v = model::Validator::new();
    if let Some(t) = value.get("type").and_then(Value::as_str)
        && t != key.kind.name()
    {
        v.violation_at("type", "type from the URL has to be the same as in body");
    }
    if let Some(n) = value.get("name").and_then(Value::as_str)
        && n != key.name
    {
        v.violation_at("name", "name from the URL has to be the same as in body");
    }
    if key.kind.is_mesh_scoped()
        && let Some(m) = value.get("mesh").and_then(Value::as_str)
        && m != key.mesh
    {
        v.violation_at("mesh", "mesh from the URL has to be the same as in body");
    }
    v.finish().map_err(|e| ApiError::invalid(TITLE_PUT, e))?;
    // Fill what the URL already says so clients may omit it, as Kuma allows.
    let mut value = value;
    if let Value::Object(obj) = &mut value {
        obj.entry("type")
            .or_insert_with(|| Value::String(key.kind.name().into()));
        obj.entry("name")
            .or_insert_with(|| Value::String(key.name.clone()));
        if key.kind.is_mesh_scoped() {
            obj.entry("mesh")
                .or_insert_with(|| Value::String(key.mesh.clone()));
        }
    }
    let resource = Resource::from_value(value).map_err(|e| ApiError::invalid(TITLE_PUT, e))?;
    resource
        .validate()
        .map_err(|e| ApiError::invalid(TITLE_PUT, e))?;
    Ok(resource)
}

async fn put(
    state: &SharedState,
    key: ResourceKey,
    caller: &Caller,
    body: Body,
) -> Result<Response, ApiError> {
    check_write_access(caller, key.kind)?;
    let bytes = read_body(body, TITLE_PUT).await?;
    let mut resource = decode_put_body(&bytes, &key)?;
    let existing = match state.store.get(&key).await {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(ApiError::from_store(TITLE_PUT, e)),
    };
    if let Some(reason) =
        crate::federation::write_refusal(state.federation, key.kind, existing.as_ref())
    {
        return Err(ApiError::method_not_allowed(reason));
    }
    check_reserved_labels(state, &resource)?;
    model::labels::compute(&mut resource, state.local_zone.as_deref());
    if let Some(current) = &existing {
        keep_identity_labels(current, &mut resource)?;
        if current.kind == ResourceType::Mesh {
            keep_mesh_ca(current, &resource)?;
        }
    }
    match existing.ok_or(StoreError::NotFound(key.clone())) {
        Ok(current) => {
            resource.meta.version = current.meta.version;
            if resource.status.is_none() {
                resource.status = current.status;
            }
            state
                .store
                .update(resource)
                .await
                .map_err(|e| ApiError::from_store("Could not update a resource", e))?;
            Ok((StatusCode::OK, Json(json!({}))).into_response())
        }
        Err(StoreError::NotFound(_)) => {
            let created = state
                .store
                .create(resource)
                .await
                .map_err(|e| ApiError::from_store("Could not create a resource", e))?;
            if created.kind == ResourceType::Mesh {
                crate::mesh_defaults::ensure(&state.store, &created, state.local_zone.as_deref())
                    .await
                    .map_err(mesh_defaults_error)?;
            }
            // Kuma's CreateOrUpdateSuccessResponse: `warnings` only when there are some.
            Ok((StatusCode::CREATED, Json(json!({}))).into_response())
        }
        Err(e) => Err(ApiError::from_store(TITLE_PUT, e)),
    }
}

/// Kuma's rules for the labels a writer sets (its `validateLabels` and the Dataplane workload
/// check), on the labels as sent, before the computed ones are added.
fn check_reserved_labels(state: &SharedState, r: &Resource) -> Result<(), ApiError> {
    use crate::federation::Federation;
    use model::descriptor::Layout;
    use model::labels::{MESH, ORIGIN, WORKLOAD, ZONE};
    let key = |label: &str| format!("labels[{label:?}]");
    let mut v = model::Validator::new();
    let origin = r.label(ORIGIN);
    if let Some(o) = origin.filter(|o| !matches!(*o, "zone" | "global")) {
        v.violation_at(&key(ORIGIN), format!("unknown resource origin {o:?}"));
    }
    match state.federation {
        Federation::Global if origin.is_some_and(|o| o != "global") => {
            v.violation_at(&key(ORIGIN), "the origin label must be set to 'global'");
        }
        // On a zone under a global, Kuma asks a zone's own policies to say so, so that a
        // manifest meant for global is not applied to a zone by mistake.
        Federation::Zone
            if state.origin_label_validation
                && r.kind.descriptor().layout == Layout::Spec
                && origin != Some("zone") =>
        {
            v.violation_at(&key(ORIGIN), "the origin label must be set to 'zone'");
        }
        _ => {}
    }
    if let Some(zone) = &state.local_zone
        && origin != Some("global")
    {
        if r.label(ZONE).is_some_and(|z| z != zone) {
            v.violation_at(&key(ZONE), format!("{ZONE} label should have {zone} value"));
        }
        if r.kind.is_mesh_scoped() && r.label(MESH).is_some_and(|m| m != r.meta.mesh) {
            v.violation_at(
                &key(MESH),
                format!("{MESH} label must not differ from mesh set on resource"),
            );
        }
    }
    v.finish().map_err(|e| ApiError::invalid(TITLE_PUT, e))?;
    if r.kind == ResourceType::Dataplane
        && let Some(workload) = r.label(WORKLOAD).filter(|w| !w.is_empty())
    {
        // (Global refuses Dataplane writes before this, as Kuma's global refuses the label.)
        if is_dns1035_label(workload) {
            return Ok(());
        }
        let detail = format!(
            "{}: must be a valid DNS-1035 label (at most 63 characters, matching regex \
             [a-z]([-a-z0-9]*[a-z0-9])?)",
            key(WORKLOAD)
        );
        let mut e = ApiError::bad_request("Invalid workload label", &key(WORKLOAD), detail.clone());
        e.detail = detail;
        return Err(e);
    }
    Ok(())
}

/// Kubernetes' DNS-1035 label: what Kuma requires of `kuma.io/workload`.
fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Kuma's immutable labels: where a resource came from (`kuma.io/origin`, `kuma.io/zone`)
/// and the name it was given there (`kuma.io/display-name`). An update that leaves one out
/// keeps the stored value (Kuma computes it again on every write); one that changes it is
/// refused with Kuma's reason.
fn keep_identity_labels(current: &Resource, update: &mut Resource) -> Result<(), ApiError> {
    use model::labels::{DISPLAY_NAME, ORIGIN, ZONE};
    let mut v = model::Validator::new();
    for label in [ORIGIN, ZONE, DISPLAY_NAME] {
        let Some(was) = current.label(label) else {
            continue;
        };
        match update.label(label) {
            None => {
                update.meta.labels.insert(label.into(), was.into());
            }
            Some(now) if now != was => v.violation_at(
                &format!("labels[{label:?}]"),
                format!("is immutable, cannot be changed from {was:?} to {now:?}"),
            ),
            Some(_) => {}
        }
    }
    v.finish()
        .map_err(|e| ApiError::invalid("Could not update a resource", e))
}

/// Kuma refuses to switch a mesh's CA while mTLS is on: proxies would lose trust in each
/// other mid-flight. mTLS goes off first, then the CA changes.
fn keep_mesh_ca(current: &Resource, update: &Resource) -> Result<(), ApiError> {
    let backend = |r: &Resource| -> Option<String> {
        serde_json::from_value::<model::specs::mesh::MeshSpec>(r.spec.clone())
            .ok()
            .filter(model::specs::mesh::MeshSpec::mtls_enabled)
            .and_then(|m| m.mtls.map(|t| t.enabled_backend))
    };
    match (backend(current), backend(update)) {
        (Some(was), Some(now)) if was != now => Err(ApiError::bad_request(
            "Could not update a resource",
            "mtls.enabledBackend",
            "Changing CA when mTLS is enabled is forbidden. Disable mTLS first and then change the CA",
        )),
        _ => Ok(()),
    }
}

/// The mesh is stored by then, and a repeated PUT is an update that creates no defaults (as in
/// Kuma): the error names what is missing, for the operator to create.
fn mesh_defaults_error(e: crate::mesh_defaults::MeshDefaultsError) -> ApiError {
    use crate::mesh_defaults::MeshDefaultsError;
    let what = e.to_string();
    match e {
        MeshDefaultsError::Store { source, .. }
        | MeshDefaultsError::SigningKey(security::TokenError::Store(source)) => {
            ApiError::from_store(&format!("The mesh was created; {what} failed"), source)
        }
        MeshDefaultsError::SigningKey(other) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The mesh was created; its defaults were not",
            format!("{what}: {other}"),
        ),
    }
}

// ---- delete ----

pub async fn delete_top(
    State(state): State<SharedState>,
    Path((plural, name)): Path<(String, String)>,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, false)?;
    if kind.is_mesh_scoped() {
        return Err(ApiError::method_not_allowed(format!(
            "{kind} is mesh-scoped: DELETE /meshes/{{mesh}}/{plural}/{name}"
        )));
    }
    delete(&state, ResourceKey::new(kind, "", name), &caller).await
}

pub async fn delete_in_mesh(
    State(state): State<SharedState>,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    caller: axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, true)?;
    delete(&state, ResourceKey::new(kind, mesh, name), &caller).await
}

async fn delete(
    state: &SharedState,
    key: ResourceKey,
    caller: &Caller,
) -> Result<Response, ApiError> {
    check_write_access(caller, key.kind)?;
    let existing = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(TITLE_DELETE, e))?;
    if let Some(reason) =
        crate::federation::write_refusal(state.federation, key.kind, Some(&existing))
    {
        return Err(ApiError::method_not_allowed(reason));
    }
    if key.kind == ResourceType::Mesh {
        // As Kuma: a mesh with proxies in it stays (deleting it would cut them off).
        let mut query = ListQuery::in_mesh(ResourceType::Dataplane, &key.name);
        query.size = Some(1);
        let proxies = state
            .store
            .list(&query)
            .await
            .map_err(|e| ApiError::from_store(TITLE_DELETE, e))?;
        if proxies.total > 0 {
            return Err(ApiError::bad_request(
                TITLE_DELETE,
                "mesh",
                "unable to delete mesh, there are still some dataplanes attached",
            ));
        }
    }
    state
        .store
        .delete(&key)
        .await
        .map_err(|e| ApiError::from_store(TITLE_DELETE, e))?;
    // Kuma's DeleteSuccessResponse.
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use security::User;

    #[test]
    fn admin_token_secret_stays_on_the_host() {
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", ADMIN_TOKEN_SECRET);
        let remote_admin = Caller {
            user: User::admin(),
            local: false,
        };
        assert!(check_read_access(&remote_admin, Some(&key), key.kind).is_err());
        let local_admin = Caller {
            user: User::admin(),
            local: true,
        };
        assert!(check_read_access(&local_admin, Some(&key), key.kind).is_ok());
        let other = ResourceKey::new(ResourceType::GlobalSecret, "", "something-else");
        assert!(check_read_access(&remote_admin, Some(&other), other.kind).is_ok());
        let user = Caller {
            user: User {
                name: "john".into(),
                groups: vec![],
            },
            local: true,
        };
        assert!(check_read_access(&user, Some(&other), other.kind).is_err());
        assert!(check_read_access(&user, None, ResourceType::MeshTimeout).is_ok());
    }
}
