//! The GUI: one HTML shell for every page under `/gui` (deep links such as
//! `/gui/meshes/default/dataplanes/web-1` load it, and its script draws the page the path
//! names), a plain ES module and a style sheet, all embedded in the binary. The script reads
//! only the public API with the caller's own credentials, so the files themselves hold no data
//! and are served to anyone (a remote browser needs them to show its sign-in form).

use axum::extract::{OriginalUri, Path};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Nothing but this origin's own files and API: a name with markup in it could not run a
/// script even if it reached the page as HTML.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// Whether `path` is one of the GUI's files (served without authentication).
pub fn is_gui_path(path: &str) -> bool {
    path == "/gui" || path.starts_with("/gui/")
}

/// Where the assets are relative to the page at `path`, so the GUI works behind a proxy that
/// serves the API under a prefix: `/gui` -> `gui/assets/`, `/gui/` -> `assets/`,
/// `/gui/meshes/default` -> `../assets/`.
fn assets_relative_to(path: &str) -> String {
    let from_gui = path.find("/gui").map_or(path, |i| &path[i..]);
    let directory = &from_gui[..=from_gui.rfind('/').unwrap_or(0)];
    match directory.matches('/').count() {
        0 | 1 => "gui/assets/".to_string(),
        n => format!("{}assets/", "../".repeat(n - 2)),
    }
}

fn file(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Served from the binary: a new version must not meet an old cached script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The shell, for `/gui` and every page under it.
pub async fn page(OriginalUri(uri): OriginalUri) -> Response {
    let html = INDEX.replace("__ASSETS__", &assets_relative_to(uri.path()));
    file("text/html; charset=utf-8", html)
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file("text/javascript; charset=utf-8", APP.to_string()),
        "style.css" => file("text/css; charset=utf-8", STYLE.to_string()),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_resolve_from_any_page() {
        assert_eq!(assets_relative_to("/gui"), "gui/assets/");
        assert_eq!(assets_relative_to("/gui/"), "assets/");
        assert_eq!(assets_relative_to("/gui/meshes"), "assets/");
        assert_eq!(assets_relative_to("/gui/meshes/default"), "../assets/");
        assert_eq!(
            assets_relative_to("/gui/meshes/default/dataplanes/web-1"),
            "../../../assets/"
        );
        // Behind a prefix the path still starts at /gui for this purpose.
        assert_eq!(assets_relative_to("/cp/api/gui/zones/z"), "../assets/");
    }
}
