//! Kuma's error body (`type: /std-errors`), and the one place store and token errors become
//! HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::{ValidationError, Violation};
use serde::Serialize;
use store::StoreError;

#[derive(Debug, Serialize)]
struct Cause<'a> {
    field: &'a str,
    message: &'a str,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub invalid_parameters: Vec<Violation>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            title: title.into(),
            detail: detail.into(),
            invalid_parameters: vec![],
        }
    }

    pub fn bad_request(title: impl Into<String>, field: &str, reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            detail: "Resource is not valid".into(),
            invalid_parameters: vec![Violation {
                field: field.into(),
                reason: reason.into(),
            }],
        }
    }

    pub fn invalid(title: impl Into<String>, err: ValidationError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            detail: "Resource is not valid".into(),
            invalid_parameters: err.violations,
        }
    }

    pub fn not_found(title: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, title, "Not found")
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Access Denied", detail)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", detail)
    }

    /// Maps a store failure under the caller's title.
    pub fn from_store(title: &str, err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => Self::not_found(title),
            StoreError::AlreadyExists(key) => Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("{key} already exists"),
            ),
            e @ StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            StoreError::MeshNotFound(mesh) => ApiError {
                status: StatusCode::BAD_REQUEST,
                title: title.into(),
                detail: "Mesh is not found".into(),
                invalid_parameters: vec![Violation {
                    field: "mesh".into(),
                    reason: format!("mesh of name {mesh} is not found"),
                }],
            },
            e @ StoreError::TooLarge { .. } => ApiError {
                status: StatusCode::BAD_REQUEST,
                title: title.into(),
                detail: "Resource is too large".into(),
                invalid_parameters: vec![Violation {
                    field: "spec".into(),
                    reason: e.to_string(),
                }],
            },
            e @ StoreError::Unavailable { .. } => {
                tracing::warn!(error = %e, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, title, e.to_string())
            }
            e @ StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt data in the store");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    title,
                    "Internal Server Error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `details` and `causes` are deprecated in Kuma but older kumactl versions read them.
        let causes: Vec<Cause> = self
            .invalid_parameters
            .iter()
            .map(|v| Cause {
                field: &v.field,
                message: &v.reason,
            })
            .collect();
        let mut body = serde_json::json!({
            "type": "/std-errors",
            "status": self.status.as_u16(),
            "title": self.title,
            "detail": self.detail,
            "details": self.detail,
        });
        if !self.invalid_parameters.is_empty() {
            body["invalid_parameters"] = serde_json::json!(self.invalid_parameters);
            body["causes"] = serde_json::json!(causes);
        }
        (self.status, Json(body)).into_response()
    }
}

/// `axum::extract::Query` whose rejection (a value of the wrong type, a repeated parameter)
/// is a 400 in Kuma's error shape naming the query, not axum's plain-text answer.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| ApiQuery(q))
            .map_err(|rejection| {
                ApiError::bad_request("Invalid query", "query", rejection.body_text())
            })
    }
}

/// A method the path does not take: 405 in Kuma's error shape.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} does not take {method}", uri.path()),
    )
}
