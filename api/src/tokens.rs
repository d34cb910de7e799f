//! `POST /tokens/user`, `POST /tokens/zone` and `POST /tokens/dataplane`: admins issue user,
//! zone and dataplane tokens (`kumactl generate user-token|zone-token|dataplane-token`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::duration::parse_duration;
use model::{ResourceKey, ResourceType};
use serde::{Deserialize, Deserializer};
use store::StoreError;

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::resources::read_body;

const TITLE: &str = "Could not issue a token";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserTokenRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    valid_for: String,
}

fn check_valid_for(v: &mut model::Validator, valid_for: &str) -> Option<std::time::Duration> {
    match parse_duration(valid_for) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            v.violation_at("validFor", "must be greater than 0");
            None
        }
        Err(e) => {
            v.violation_at("validFor", format!("is invalid: {e}"));
            None
        }
    }
}

/// Only admins issue tokens; the body is parsed strictly so a typo in a field is reported.
async fn admin_request<T: serde::de::DeserializeOwned>(
    caller: &Caller,
    what: &str,
    body: Body,
) -> Result<T, ApiError> {
    if !caller.user.is_admin() {
        return Err(ApiError::forbidden(format!(
            "user {:?} cannot generate {what}",
            caller.user.name
        )));
    }
    let bytes = read_body(body, "Invalid request").await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("Invalid request", "body", e.to_string()))
}

pub async fn issue_user_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    user_token(&state.user_keys, &caller, body, &[]).await
}

/// A user token signed with `keys` (this control plane's, or one of a hosted manager's
/// control planes'); `default_groups` when the request names none.
pub(crate) async fn user_token(
    keys: &security::SigningKeys,
    caller: &Caller,
    body: Body,
    default_groups: &[&str],
) -> Result<Response, ApiError> {
    let req: UserTokenRequest = admin_request(caller, "user tokens", body).await?;
    let mut v = model::Validator::new();
    if req.name.trim().is_empty() {
        v.violation_at("name", "cannot be empty");
    }
    let valid_for = check_valid_for(&mut v, &req.valid_for);
    v.finish()
        .map_err(|e| ApiError::invalid("Invalid request", e))?;
    let groups = match req.groups.is_empty() {
        true => default_groups.iter().map(|g| g.to_string()).collect(),
        false => req.groups,
    };
    let token = security::user::issue_user_token(
        keys,
        req.name.trim(),
        &groups,
        valid_for.unwrap_or_default(),
    )
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, TITLE, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ZoneTokenRequest {
    #[serde(default)]
    zone: String,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    valid_for: String,
}

pub async fn issue_zone_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    if state.info.mode == "zone" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            TITLE,
            "zone tokens are issued by the global control plane; run this against global",
        ));
    }
    zone_token(&state.zone_keys, &state.control_plane, &caller, body).await
}

/// A zone token signed with `keys`, naming `control_plane` when it is one of a hosted
/// manager's (empty otherwise).
pub(crate) async fn zone_token(
    keys: &security::SigningKeys,
    control_plane: &str,
    caller: &Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ZoneTokenRequest = admin_request(caller, "zone tokens", body).await?;
    let mut v = model::Validator::new();
    if let Some(reason) = model::name::name_violation(&req.zone) {
        v.violation_at("zone", reason);
    }
    for (i, scope) in req.scope.iter().enumerate() {
        if !security::zone::SCOPES.contains(&scope.as_str()) {
            v.violation_at(
                &format!("scope[{i}]"),
                format!(
                    "{scope:?} is not one of {}",
                    security::zone::SCOPES.join(", ")
                ),
            );
        }
    }
    let valid_for = check_valid_for(&mut v, &req.valid_for);
    v.finish()
        .map_err(|e| ApiError::invalid("Invalid request", e))?;
    let token = security::zone::issue_control_plane_zone_token(
        keys,
        control_plane,
        &req.zone,
        &req.scope,
        valid_for.unwrap_or_default(),
    )
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, TITLE, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}

/// Go's kumactl sends `"tags": null` when no `--tag` is given, so null reads as absent.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DataplaneTokenRequest {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    mesh: String,
    #[serde(default, deserialize_with = "null_as_default")]
    tags: BTreeMap<String, Vec<String>>,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    proxy_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    valid_for: String,
}

fn check_tags(v: &mut model::Validator, tags: &BTreeMap<String, Vec<String>>) {
    v.field("tags", |v| {
        for (key, values) in tags {
            if key.trim().is_empty() {
                v.violation("tag names cannot be empty");
                continue;
            }
            // A tag with no allowed value would refuse every dataplane that has it.
            v.key(key, |v| {
                if values.is_empty() {
                    v.violation("must have at least one value");
                }
                for (i, value) in values.iter().enumerate() {
                    if value.trim().is_empty() {
                        v.index(i, |v| v.violation("cannot be empty"));
                    }
                }
            });
        }
    });
}

/// Kuma's `POST /tokens/dataplane`. Only `mesh` is required; a token without name, tags or
/// type serves any dataplane of the mesh that presents it.
pub async fn issue_dataplane_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: DataplaneTokenRequest = admin_request(&caller, "dataplane tokens", body).await?;
    let mut v = model::Validator::new();
    let mesh = req.mesh.trim().to_string();
    if mesh.is_empty() {
        v.violation_at("mesh", "cannot be empty");
    } else {
        match state
            .store
            .get(&ResourceKey::new(ResourceType::Mesh, "", &mesh))
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                v.violation_at("mesh", format!("mesh of name {mesh} is not found"));
            }
            Err(e) => return Err(ApiError::from_store(TITLE, e)),
        }
    }
    let name = req.name.trim();
    if !name.is_empty()
        && let Some(reason) = model::name::name_violation(name)
    {
        v.violation_at("name", reason);
    }
    check_tags(&mut v, &req.tags);
    let proxy_type = req.proxy_type.trim();
    if !proxy_type.is_empty() && !security::dataplane::PROXY_TYPES.contains(&proxy_type) {
        v.violation_at(
            "type",
            format!(
                "{proxy_type:?} is not one of {}",
                security::dataplane::PROXY_TYPES.join(", ")
            ),
        );
    }
    // Kuma's default when validFor is not given is ten years.
    let valid_for = if req.valid_for.trim().is_empty() {
        Some(security::dataplane::DEFAULT_VALID_FOR)
    } else {
        check_valid_for(&mut v, &req.valid_for)
    };
    v.finish()
        .map_err(|e| ApiError::invalid("Invalid request", e))?;

    let keys = security::dataplane::dataplane_signing_keys(state.store.clone(), &mesh);
    // A zone uses the key global created and synced with the mesh: a key of its own would
    // clash with that copy and sign tokens no other control plane accepts.
    if state.info.mode != "zone" {
        keys.ensure_key().await.map_err(token_error)?;
    }
    let token = security::dataplane::issue_dataplane_token(
        &keys,
        name,
        &mesh,
        &req.tags,
        proxy_type,
        valid_for.unwrap_or(security::dataplane::DEFAULT_VALID_FOR),
    )
    .await
    .map_err(|e| match e {
        security::TokenError::NoSigningKey => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            TITLE,
            format!(
                "the signing key of mesh {mesh:?} has not been synced from global yet: retry, or generate the token on global"
            ),
        ),
        other => token_error(other),
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}

/// Store trouble keeps its status (503 when the store is down); anything else is ours.
fn token_error(e: security::TokenError) -> ApiError {
    match e {
        security::TokenError::Store(e) => ApiError::from_store(TITLE, e),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, TITLE, other.to_string()),
    }
}
