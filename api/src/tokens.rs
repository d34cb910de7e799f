//! `POST /tokens/user` and `POST /tokens/zone`: admins issue user tokens and zone tokens
//! (`kumactl generate user-token`, `kumactl generate zone-token`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::duration::parse_duration;
use serde::Deserialize;

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
    let req: UserTokenRequest = admin_request(&caller, "user tokens", body).await?;
    let mut v = model::Validator::new();
    if req.name.trim().is_empty() {
        v.violation_at("name", "cannot be empty");
    }
    let valid_for = check_valid_for(&mut v, &req.valid_for);
    v.finish()
        .map_err(|e| ApiError::invalid("Invalid request", e))?;
    let token = security::user::issue_user_token(
        &state.user_keys,
        req.name.trim(),
        &req.groups,
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
    let req: ZoneTokenRequest = admin_request(&caller, "zone tokens", body).await?;
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
    let token = security::zone::issue_zone_token(
        &state.zone_keys,
        &req.zone,
        &req.scope,
        valid_for.unwrap_or_default(),
    )
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, TITLE, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}
