//! `POST /tokens/user`: admins issue user tokens (`kumactl generate user-token`).

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

pub async fn issue_user_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    if !caller.user.is_admin() {
        return Err(ApiError::forbidden(format!(
            "user {:?} cannot generate user tokens",
            caller.user.name
        )));
    }
    let bytes = read_body(body, "Invalid request").await?;
    let req: UserTokenRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("Invalid request", "body", e.to_string()))?;
    let mut v = model::Validator::new();
    if req.name.trim().is_empty() {
        v.violation_at("name", "cannot be empty");
    }
    let valid_for = match parse_duration(&req.valid_for) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            v.violation_at("validFor", "must be greater than 0");
            None
        }
        Err(e) => {
            v.violation_at("validFor", format!("is invalid: {e}"));
            None
        }
    };
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
