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

/// A page as Kuma's `size` and `offset` ask for it.
pub struct Page {
    pub size: usize,
    pub offset: usize,
}

impl Page {
    /// The items of this page, and the offset of the next one if there is more.
    pub fn cut<T>(&self, items: Vec<T>) -> (Vec<T>, Option<usize>) {
        let total = items.len();
        let end = self.offset.saturating_add(self.size).min(total);
        let page = items
            .into_iter()
            .skip(self.offset)
            .take(self.size)
            .collect();
        (page, (end < total).then_some(end))
    }
}

/// Parses `size` and `offset` with Kuma's defaults, bounds and error messages.
pub fn parse_page(params: &HashMap<String, String>) -> Result<Page, ApiError> {
    // Kuma's page size errors: detail "Invalid page size", the reason on `size`.
    let bad_size = |reason: String| {
        let mut e = ApiError::bad_request(TITLE, "size", reason);
        e.detail = "Invalid page size".into();
        e
    };
    let size = match params.get("size").filter(|s| !s.is_empty()) {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.parse::<i64>() {
            Err(_) => return Err(bad_size("invalid format".into())),
            Ok(n) if n <= 0 => return Err(bad_size("must be greater than 0".into())),
            Ok(n) if n > MAX_PAGE_SIZE as i64 => {
                return Err(bad_size(format!(
                    "invalid page size of {n}. Maximum page size is {MAX_PAGE_SIZE}"
                )));
            }
            Ok(n) => n as usize,
        },
    };
    let offset = match params.get("offset") {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(TITLE, "offset", "Invalid format"))?,
    };
    Ok(Page { size, offset })
}

/// Parses `size`, `offset`, `name` and `filter[labels.<key>]` into a store query.
pub fn parse_list_query(
    kind: ResourceType,
    mesh: Option<String>,
    params: &HashMap<String, String>,
) -> Result<ListQuery, ApiError> {
    let Page { size, offset } = parse_page(params)?;
    // Kuma's filters: `filter[labels.<key>]=<value>` (equality) only; any other filter is
    // refused naming the parameter, under the route's path as Kuma names it.
    let route = match &mesh {
        Some(_) => format!("/meshes/{{mesh}}/{}", kind.descriptor().plural),
        None => format!("/{}", kind.descriptor().plural),
    };
    let mut labels = BTreeMap::new();
    let mut violations = Vec::new();
    let mut keys: Vec<&String> = params.keys().filter(|k| k.starts_with("filter[")).collect();
    keys.sort();
    for k in keys {
        let reason = match k.strip_prefix("filter[labels.") {
            None => Some("filters are only supported on labels"),
            Some(rest) => match rest.find(']') {
                Some(end) if end + 1 == rest.len() => {
                    labels.insert(rest[..end].to_string(), params[k].clone());
                    None
                }
                _ => Some("advanced filters are not supported"),
            },
        };
        if let Some(reason) = reason {
            violations.push(model::validate::Violation {
                field: format!("{route}.{k}"),
                reason: reason.into(),
            });
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::invalid(
            TITLE,
            model::ValidationError { violations },
        ));
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
