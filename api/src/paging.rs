//! Kuma's list paging: `size`, `offset`, `name` and `filter[labels.<key>]` parameters in, a
//! `next` link to the following page out. Shared by plain lists and insight overviews.

use std::collections::{BTreeMap, HashMap};

use axum::extract::OriginalUri;
use axum::http::{HeaderMap, header};
use model::ResourceType;
use serde_json::Value;
use store::ListQuery;

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
const TITLE: &str = "Could not retrieve resources";

/// Parses `size`, `offset`, `name` and `filter[labels.<key>]` into a store query.
pub fn parse_list_query(
    kind: ResourceType,
    mesh: Option<String>,
    params: &HashMap<String, String>,
) -> Result<ListQuery, ApiError> {
    let size = match params.get("size") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    TITLE,
                    "size",
                    format!("must be a number between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
        },
    };
    let offset = match params.get("offset") {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(TITLE, "offset", "Invalid format"))?,
    };
    let mut labels = BTreeMap::new();
    for (k, v) in params {
        if let Some(label) = k
            .strip_prefix("filter[labels.")
            .and_then(|r| r.strip_suffix(']'))
        {
            labels.insert(label.to_string(), v.clone());
        }
    }
    Ok(ListQuery {
        kind,
        mesh,
        labels,
        name_contains: params.get("name").filter(|n| !n.is_empty()).cloned(),
        offset,
        size: Some(size),
    })
}

/// Kuma's `next` is a full URL to the next page, keeping the other query parameters.
pub fn next_link(
    uri: &OriginalUri,
    headers: &HeaderMap,
    next_offset: Option<usize>,
    size: usize,
) -> Value {
    let Some(offset) = next_offset else {
        return Value::Null;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = uri.0.scheme_str().unwrap_or("http");
    let mut query: Vec<String> = uri
        .0
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("offset=") && !p.starts_with("size="))
        .map(String::from)
        .collect();
    query.push(format!("offset={offset}"));
    query.push(format!("size={size}"));
    Value::String(format!(
        "{scheme}://{host}{}?{}",
        uri.0.path(),
        query.join("&")
    ))
}
