//! HTTP routes as MeshHTTPRoute writes them: matches, the forwarding action (one cluster or a
//! weighted split), redirects, rewrites, header modifiers and mirrors, and Kuma's names for
//! routes and split clusters.

use std::collections::BTreeMap;

use base64::Engine;
use model::specs::policy::{
    HeaderMatch, HeaderMatchType, HttpMethod, HttpRouteMatch, PathMatchType, PathRewrite,
    PathRewriteType, QueryParamsMatch, QueryParamsMatchType, RedirectScheme, RequestRedirect,
    UrlRewrite,
};
use serde_json::{Map, Value, json};

use super::core::header_value_options;

/// Kuma's name of the route a rule's `matches` make (`HashMatches`): base64 of the SHA-256 of
/// the matches as Go's JSON encoder writes them, so every match of one rule, and both halves
/// of a prefix, share one name, and policies can name a route by its rule.
pub fn route_name(matches: &[HttpRouteMatch]) -> String {
    let json = Value::Array(matches.iter().map(go_json_match).collect()).to_string();
    // Go escapes these inside strings; they appear nowhere else in JSON text.
    let json = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A match in the field order and with the omissions of Kuma's Go types.
fn go_json_match(m: &HttpRouteMatch) -> Value {
    let mut out = Map::new();
    if let Some(p) = &m.path {
        out.insert(
            "path".into(),
            json!({"value": p.value, "type": path_type(p.match_type)}),
        );
    }
    if let Some(method) = m.method {
        out.insert("method".into(), json!(method_name(method)));
    }
    if let Some(params) = m.query_params.as_ref().filter(|p| !p.is_empty()) {
        let params: Vec<Value> = params
            .iter()
            .map(|q| json!({"type": query_type(q.match_type), "name": q.name, "value": q.value}))
            .collect();
        out.insert("queryParams".into(), Value::Array(params));
    }
    if let Some(headers) = m.headers.as_ref().filter(|h| !h.is_empty()) {
        let headers: Vec<Value> = headers
            .iter()
            .map(|h| {
                let mut o = Map::new();
                if let Some(t) = h.match_type {
                    o.insert("type".into(), json!(header_type(t)));
                }
                o.insert("name".into(), json!(h.name));
                if let Some(v) = h.value.as_ref().filter(|v| !v.is_empty()) {
                    o.insert("value".into(), json!(v));
                }
                Value::Object(o)
            })
            .collect();
        out.insert("headers".into(), Value::Array(headers));
    }
    Value::Object(out)
}

fn path_type(t: PathMatchType) -> &'static str {
    match t {
        PathMatchType::Exact => "Exact",
        PathMatchType::PathPrefix => "PathPrefix",
        PathMatchType::RegularExpression => "RegularExpression",
    }
}

fn query_type(t: QueryParamsMatchType) -> &'static str {
    match t {
        QueryParamsMatchType::Exact => "Exact",
        QueryParamsMatchType::RegularExpression => "RegularExpression",
    }
}

fn header_type(t: HeaderMatchType) -> &'static str {
    match t {
        HeaderMatchType::Exact => "Exact",
        HeaderMatchType::Present => "Present",
        HeaderMatchType::RegularExpression => "RegularExpression",
        HeaderMatchType::Absent => "Absent",
        HeaderMatchType::Prefix => "Prefix",
    }
}

pub fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Connect => "CONNECT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Trace => "TRACE",
    }
}

/// Kuma's name of the cluster of a destination that selects more than its service:
/// `<service>-<16 hex digits>`, the first 8 bytes of the SHA-256 of its tags, names and values
/// concatenated in name order.
pub fn subset_cluster_name(service: &str, tags: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (k, v) in tags {
        text.push_str(k);
        text.push_str(v);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{service}-{hex}")
}

/// Which half of a path prefix an Envoy route matches: Kuma matches PathPrefix `/foo` as the
/// path `/foo` itself and the prefix `/foo/`, so `/foobar` is not under `/foo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixHalf {
    /// Not a prefix match, or the prefix `/`.
    Whole,
    Exact,
    Subtree,
}

/// Envoy `RouteMatch`es for one MeshHTTPRoute match (two for a path prefix other than `/`),
/// each with the half it is.
pub fn route_matches(m: &HttpRouteMatch) -> Vec<(Value, PrefixHalf)> {
    let mut headers = Vec::new();
    if let Some(method) = m.method {
        headers.push(json!({"name": ":method", "string_match": {"exact": method_name(method)}}));
    }
    let mut seen = Vec::new();
    for h in m.headers.iter().flatten() {
        if seen.contains(&h.name) {
            continue;
        }
        seen.push(h.name.clone());
        headers.push(header_matcher(h));
    }
    let mut params = Vec::new();
    let mut seen = Vec::new();
    for q in m.query_params.iter().flatten() {
        if seen.contains(&q.name) {
            continue;
        }
        seen.push(q.name.clone());
        params.push(query_matcher(q));
    }
    let with = |mut base: Map<String, Value>| {
        if !headers.is_empty() {
            base.insert("headers".into(), Value::Array(headers.clone()));
        }
        if !params.is_empty() {
            base.insert("query_parameters".into(), Value::Array(params.clone()));
        }
        Value::Object(base)
    };
    let single = |key: &str, value: Value| {
        let mut base = Map::new();
        base.insert(key.into(), value);
        base
    };
    match &m.path {
        None => vec![(with(single("prefix", json!("/"))), PrefixHalf::Whole)],
        Some(p) => match p.match_type {
            PathMatchType::Exact => vec![(with(single("path", json!(p.value))), PrefixHalf::Whole)],
            PathMatchType::RegularExpression => vec![(
                with(single("safe_regex", json!({"regex": p.value}))),
                PrefixHalf::Whole,
            )],
            PathMatchType::PathPrefix => {
                let prefix = p.value.trim_end_matches('/');
                if prefix.is_empty() {
                    return vec![(with(single("prefix", json!("/"))), PrefixHalf::Whole)];
                }
                vec![
                    (with(single("path", json!(prefix))), PrefixHalf::Exact),
                    (
                        with(single("prefix", json!(format!("{prefix}/")))),
                        PrefixHalf::Subtree,
                    ),
                ]
            }
        },
    }
}

fn header_matcher(h: &HeaderMatch) -> Value {
    let value = h.value.clone().unwrap_or_default();
    match h.match_type.unwrap_or(HeaderMatchType::Exact) {
        HeaderMatchType::Exact => json!({"name": h.name, "string_match": {"exact": value}}),
        HeaderMatchType::Present => json!({"name": h.name, "present_match": true}),
        HeaderMatchType::Absent => json!({"name": h.name, "present_match": false}),
        HeaderMatchType::RegularExpression => {
            json!({"name": h.name, "string_match": {"safe_regex": {"regex": value}}})
        }
        HeaderMatchType::Prefix if value.is_empty() => {
            json!({"name": h.name, "present_match": true})
        }
        HeaderMatchType::Prefix => json!({"name": h.name, "string_match": {"prefix": value}}),
    }
}

fn query_matcher(q: &QueryParamsMatch) -> Value {
    match q.match_type {
        QueryParamsMatchType::Exact => json!({"name": q.name, "string_match": {"exact": q.value}}),
        QueryParamsMatchType::RegularExpression => {
            json!({"name": q.name, "string_match": {"safe_regex": {"regex": q.value}}})
        }
    }
}

/// A `RouteAction` to `splits` (cluster, weight): one cluster, or a weighted split. No route
/// timeout by default: streaming and long-polling calls stay open (MeshTimeout sets one).
pub fn forward(splits: &[(String, u32)]) -> Value {
    match splits {
        [(cluster, _)] => json!({"cluster": cluster, "timeout": "0s"}),
        _ => {
            let clusters: Vec<Value> = splits
                .iter()
                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                .collect();
            json!({"weighted_clusters": {"clusters": clusters}, "timeout": "0s"})
        }
    }
}

/// A path rewrite's regex form: the whole path replaced.
fn whole_path(path: &str) -> Value {
    json!({"pattern": {"regex": "^.*$"}, "substitution": path})
}

/// How a `ReplacePrefixMatch` rewrites on `half`: the exact half becomes the new prefix; on the
/// subtree half the matched `/foo/` becomes the new prefix with its slash, so `/foo/x` with
/// `/bar` is `/bar/x` (the Gateway API's meaning).
fn prefix_rewrite(half: PrefixHalf, replacement: &str) -> (&'static str, Value) {
    match half {
        PrefixHalf::Exact => ("regex_rewrite", whole_path(replacement)),
        PrefixHalf::Subtree | PrefixHalf::Whole => {
            let trimmed = replacement.trim_end_matches('/');
            let rewritten = if half == PrefixHalf::Whole && trimmed.is_empty() {
                "/".to_string()
            } else {
                format!("{trimmed}/")
            };
            ("prefix_rewrite", json!(rewritten))
        }
    }
}

fn path_rewrite(p: &PathRewrite, half: PrefixHalf) -> Option<(&'static str, Value)> {
    match p.rewrite_type {
        PathRewriteType::ReplaceFullPath => p
            .replace_full_path
            .as_deref()
            .map(|path| ("regex_rewrite", whole_path(path))),
        PathRewriteType::ReplacePrefixMatch => p
            .replace_prefix_match
            .as_deref()
            .map(|prefix| prefix_rewrite(half, prefix)),
    }
}

/// A `RedirectAction` on `half` of a prefix match.
pub fn redirect(r: &RequestRedirect, half: PrefixHalf) -> Value {
    let mut out = Map::new();
    if let Some(scheme) = r.scheme {
        let scheme = match scheme {
            RedirectScheme::Http => "http",
            RedirectScheme::Https => "https",
        };
        out.insert("scheme_redirect".into(), json!(scheme));
    }
    if let Some(host) = &r.hostname {
        out.insert("host_redirect".into(), json!(host));
    }
    if let Some(port) = r.port {
        out.insert("port_redirect".into(), json!(port));
    }
    if let Some(path) = &r.path {
        match path.rewrite_type {
            PathRewriteType::ReplaceFullPath => {
                if let Some(p) = &path.replace_full_path {
                    out.insert("path_redirect".into(), json!(p));
                }
            }
            PathRewriteType::ReplacePrefixMatch => {
                if let Some((key, value)) = path_rewrite(path, half) {
                    out.insert(key.into(), value);
                }
            }
        }
    }
    let code = match r.status_code.unwrap_or(302) {
        301 => "MOVED_PERMANENTLY",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        _ => "FOUND",
    };
    out.insert("response_code".into(), json!(code));
    Value::Object(out)
}

/// Applies a URL rewrite to a `RouteAction` on `half` of a prefix match.
pub fn rewrite(action: &mut Map<String, Value>, r: &UrlRewrite, half: PrefixHalf) {
    if let Some(host) = &r.hostname {
        action.insert("host_rewrite_literal".into(), json!(host));
    }
    if let Some((key, value)) = r.path.as_ref().and_then(|p| path_rewrite(p, half)) {
        action.insert(key.into(), value);
    }
}

/// Adds a header modifier's headers to a route: `request` or `response` side.
pub fn modify_headers(
    route: &mut Map<String, Value>,
    side: &str,
    modifier: &model::specs::policy::HeaderModifier,
) {
    // Kuma writes the overwritten (`set`) headers before the appended ones.
    let mut options = header_value_options(Some(modifier), false);
    options.sort_by_key(|o| o["append_action"] != "OVERWRITE_IF_EXISTS_OR_ADD");
    if !options.is_empty() {
        let list = route
            .entry(format!("{side}_headers_to_add"))
            .or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.extend(options);
        }
    }
    if let Some(remove) = modifier.remove.as_ref().filter(|r| !r.is_empty()) {
        let list = route
            .entry(format!("{side}_headers_to_remove"))
            .or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.extend(remove.iter().map(|r| json!(r)));
        }
    }
}

/// A request mirror to `cluster` for `fraction` of requests (all without one).
pub fn mirror(cluster: &str, fraction: Option<Value>) -> Value {
    let mut policy = json!({"cluster": cluster});
    if let Some(f) = fraction {
        policy["runtime_fraction"] = json!({"default_value": f});
    }
    policy
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn matches(v: Value) -> Vec<HttpRouteMatch> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn route_names_are_kumas_hashes() {
        let catch_all = matches(json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
        assert_eq!(
            route_name(&catch_all),
            "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo="
        );
        let v1 = matches(json!([{"path": {"type": "PathPrefix", "value": "/v1"}}]));
        assert_eq!(
            route_name(&v1),
            "bzv64o+joRk33jfDADgGv5ar4QyONO0NEVKnoBfJW/E="
        );
    }

    #[test]
    fn subset_clusters_are_named_as_kuma_names_them() {
        let tags = BTreeMap::from([
            ("kuma.io/service".to_string(), "backend".to_string()),
            ("region".to_string(), "us".to_string()),
        ]);
        assert_eq!(
            subset_cluster_name("backend", &tags),
            "backend-c72efb5be46fae6b"
        );
    }

    #[test]
    fn a_prefix_is_the_path_and_its_subtree() {
        let m = &matches(json!([{"path": {"type": "PathPrefix", "value": "/api"},
            "method": "GET", "headers": [{"type": "Present", "name": "x-a"}, {"name": "x-a", "value": "dup"}]}]))
            [0];
        let routes = route_matches(m);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].0["path"], "/api");
        assert_eq!(routes[1].0["prefix"], "/api/");
        assert_eq!(routes[0].1, PrefixHalf::Exact);
        let headers = routes[1].0["headers"].as_array().unwrap();
        assert_eq!(headers.len(), 2, "method first, a repeated header once");
        assert_eq!(headers[0]["name"], ":method");
        assert_eq!(headers[1]["present_match"], true);
    }

    #[test]
    fn prefix_rewrite_keeps_the_separator() {
        let r = PathRewrite {
            rewrite_type: PathRewriteType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some("/v2".into()),
        };
        assert_eq!(
            path_rewrite(&r, PrefixHalf::Subtree),
            Some(("prefix_rewrite", json!("/v2/")))
        );
        assert_eq!(
            path_rewrite(&r, PrefixHalf::Exact).map(|(k, _)| k),
            Some("regex_rewrite")
        );
        let root = PathRewrite {
            replace_prefix_match: Some("/".into()),
            ..r
        };
        assert_eq!(
            path_rewrite(&root, PrefixHalf::Subtree),
            Some(("prefix_rewrite", json!("/")))
        );
    }
}
