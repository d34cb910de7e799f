//! A small read-only GUI: one page that reads the API from the browser.

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(include_str!("gui.html"))
}
