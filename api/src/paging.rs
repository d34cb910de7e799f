//! Kuma's list paging: `size`, `offset`, `name` and `filter[labels.<key>]` parameters in, a
//! `next` link to the following page out. Shared by plain lists and insight overviews.

use std::collections::{BTreeMap, HashMap};

use axum::extract::OriginalUri;
use axum::http::{HeaderMap, header};
use model::{Resource, ResourceType};
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
    let route = route_of(kind, mesh.is_some());
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

/// The list route as Kuma names it in errors about its parameters.
fn route_of(kind: ResourceType, in_mesh: bool) -> String {
    match in_mesh {
        true => format!("/meshes/{{mesh}}/{}", kind.descriptor().plural),
        false => format!("/{}", kind.descriptor().plural),
    }
}

/// Which Dataplanes Kuma's `gateway` parameter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatewayMode {
    Gateways,
    NotGateways,
    Builtin,
    Delegated,
}

/// Kuma's Dataplane list parameters: `gateway` (`true`, `false`, `builtin`, `delegated`) and
/// `tag=key:value` (repeatable). A Dataplane matches the tags when one of its inbounds, or its
/// gateway, has every key with a value containing the one asked for (Kuma's fuzzy match).
#[derive(Debug, Default)]
pub struct DataplaneFilter {
    gateway: Option<GatewayMode>,
    tags: Vec<(String, String)>,
}

impl DataplaneFilter {
    /// `None` for other types and for a Dataplane list that asks for neither.
    pub fn from_request(
        kind: ResourceType,
        in_mesh: bool,
        uri: &OriginalUri,
    ) -> Result<Option<DataplaneFilter>, ApiError> {
        if kind != ResourceType::Dataplane {
            return Ok(None);
        }
        let params = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri.0)
            .map(|q| q.0)
            .unwrap_or_default();
        let mut filter = DataplaneFilter::default();
        for (key, value) in params {
            match key.as_str() {
                "gateway" => {
                    filter.gateway = match value.to_ascii_lowercase().as_str() {
                        "" => None,
                        "true" => Some(GatewayMode::Gateways),
                        "false" => Some(GatewayMode::NotGateways),
                        "builtin" => Some(GatewayMode::Builtin),
                        "delegated" => Some(GatewayMode::Delegated),
                        other => {
                            // Kuma's reason, word for word (clients may match on it).
                            return Err(ApiError::invalid(
                                TITLE,
                                model::ValidationError::single(
                                    format!("{}.gateway", route_of(kind, in_mesh)),
                                    format!(
                                        "shoud use `true`, `false`, 'builtin' or 'delegated' instead of {other}"
                                    ),
                                ),
                            ));
                        }
                    }
                }
                // `:` may appear in a value, so only the first one separates; a tag without
                // one is ignored, as in Kuma.
                "tag" => filter.tags.extend(
                    value
                        .split_once(':')
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                ),
                _ => {}
            }
        }
        Ok((filter.gateway.is_some() || !filter.tags.is_empty()).then_some(filter))
    }

    pub fn matches(&self, r: &Resource) -> bool {
        let networking = &r.spec["networking"];
        let gateway = networking["gateway"].as_object();
        let builtin =
            gateway.is_some_and(|g| g.get("type").and_then(Value::as_str) == Some("BUILTIN"));
        let gateway_ok = match self.gateway {
            None => true,
            Some(GatewayMode::Gateways) => gateway.is_some(),
            Some(GatewayMode::NotGateways) => gateway.is_none(),
            Some(GatewayMode::Builtin) => builtin,
            Some(GatewayMode::Delegated) => gateway.is_some() && !builtin,
        };
        let fuzzy = |tags: &Value| {
            self.tags.iter().all(|(k, v)| {
                tags.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|have| have.contains(v.as_str()))
            })
        };
        let tags_ok = self.tags.is_empty()
            || networking["inbound"]
                .as_array()
                .is_some_and(|ins| ins.iter().any(|i| fuzzy(&i["tags"])))
            || (gateway.is_some() && fuzzy(&networking["gateway"]["tags"]));
        gateway_ok && tags_ok
    }
}

/// Lists a page; with a Dataplane filter, which the store cannot apply, every match is read
/// and the page cut here so that `total` and `next` count only matches.
pub async fn list_page(
    store: &store::SharedStore,
    query: &ListQuery,
    filter: Option<&DataplaneFilter>,
) -> Result<store::ListPage, store::StoreError> {
    let Some(filter) = filter else {
        return store.list(query).await;
    };
    let all = store
        .list(&ListQuery {
            offset: 0,
            size: None,
            ..query.clone()
        })
        .await?;
    let matched: Vec<Resource> = all
        .items
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();
    let total = matched.len();
    let page = Page {
        size: query.size.unwrap_or(usize::MAX),
        offset: query.offset,
    };
    let (items, next_offset) = page.cut(matched);
    Ok(store::ListPage {
        items,
        total,
        next_offset,
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
