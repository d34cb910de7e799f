//! Who is calling: a bearer user token, else admin when calling from this host (Kuma's
//! `localhostIsAdmin`), else anonymous. Anonymous callers may read but not write.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use security::User;

use crate::error::ApiError;
use crate::serve::Peer;
use crate::{SharedState, is_local};

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub localhost_is_admin: bool,
    /// Callers without a token may read (Kuma's default); a hosted manager's control planes
    /// answer only to their own tokens.
    pub anonymous_reads: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            localhost_is_admin: true,
            anonymous_reads: true,
        }
    }
}

/// The authenticated caller, put in request extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub local: bool,
}

pub async fn authenticate(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    // The GUI's own files hold no data (its script reads the API with the caller's
    // credentials): a remote browser needs them to show the sign-in form.
    if req.method() == Method::GET && crate::gui::is_gui_path(req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let local = is_local(peer);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let user = match bearer {
        Some(value) => {
            let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
                return ApiError::unauthenticated(
                    "the Authorization header must be 'Bearer <token>'",
                )
                .into_response();
            };
            match security::user::authenticate(&state.user_keys, token).await {
                Ok(user) => user,
                // The token may be fine: the keys to check it could not be read. 503 says
                // "try again", where 401 would send the caller to get a new token.
                Err(security::tokens::TokenError::Store(
                    e @ store::StoreError::Unavailable { .. },
                )) => {
                    return ApiError::from_store("Could not verify the user token", e)
                        .into_response();
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?peer, "rejected user token");
                    return ApiError::unauthenticated(format!("invalid user token: {e}"))
                        .into_response();
                }
            }
        }
        None if local && state.auth.localhost_is_admin => User::admin(),
        None if !state.auth.anonymous_reads => {
            return ApiError::unauthenticated(
                "this API needs a token: pass 'Authorization: Bearer <token>' (kumactl: --auth-type=tokens --auth-conf token=...)",
            )
            .into_response();
        }
        None => User::anonymous(),
    };
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && user.is_anonymous() {
        return ApiError::unauthenticated(
            "writes need a user token: pass 'Authorization: Bearer <token>' (kumactl: --auth-type=tokens --auth-conf token=...)",
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller { user, local });
    next.run(req).await
}

pub async fn who_am_i(caller: Option<axum::Extension<Caller>>) -> Json<User> {
    Json(caller.map(|c| c.0.user).unwrap_or_else(User::anonymous))
}
