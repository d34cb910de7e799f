//! MeshHTTPRoute: HTTP matches, filters and weighted backends of an outbound or gateway
//! listener.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHttpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<HttpRouteTo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTo {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub default: HttpRouteConf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<QueryParamsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub match_type: PathMatchType,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Connect,
    Delete,
    Get,
    Head,
    Options,
    Patch,
    Post,
    Put,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryParamsMatchType {
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamsMatch {
    #[serde(rename = "type")]
    pub match_type: QueryParamsMatchType,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HttpFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub filter_type: HttpFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Http,
    Https,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathRewriteType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRewrite {
    #[serde(rename = "type")]
    pub rewrite_type: PathRewriteType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_to_backend_hostname: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
    #[serde(default = "BackendRef::default")]
    pub backend_ref: BackendRef,
}

fn check_precise_hostname(v: &mut Validator, name: &str, hostname: &Option<String>) {
    let Some(h) = hostname else { return };
    if h.parse::<std::net::IpAddr>().is_ok() {
        v.violation_at(name, "cannot be an IP address");
    } else if !crate::specs::gateway::is_dns1123_subdomain(h) {
        v.violation_at(
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
}

fn check_path_rewrite(v: &mut Validator, p: &PathRewrite, matches: &[HttpRouteMatch]) {
    v.field("path", |v| match p.rewrite_type {
        PathRewriteType::ReplaceFullPath => {
            if p.replace_full_path.is_none() {
                v.violation_at("replaceFullPath", MUST_BE_DEFINED);
            }
            if p.replace_prefix_match.is_some() {
                v.violation_at("replacePrefixMatch", "must not be defined");
            }
        }
        PathRewriteType::ReplacePrefixMatch => {
            if p.replace_prefix_match.is_none() {
                v.violation_at("replacePrefixMatch", MUST_BE_DEFINED);
            } else if matches.iter().any(|m| {
                m.path
                    .as_ref()
                    .is_none_or(|p| p.match_type != PathMatchType::PathPrefix)
            }) {
                v.violation_at(
                    "replacePrefixMatch",
                    "can only appear if all matches match a path prefix",
                );
            }
            if p.replace_full_path.is_some() {
                v.violation_at("replaceFullPath", "must not be defined");
            }
        }
    });
}

fn check_http_rule(v: &mut Validator, rule: &HttpRouteRule, top: &K) {
    v.field("matches", |v| {
        for (i, m) in rule.matches.iter().enumerate() {
            v.index(i, |v| {
                if let Some(p) = &m.path {
                    v.field("path", |v| match p.match_type {
                        PathMatchType::RegularExpression => {
                            if p.value.is_empty() {
                                v.violation_at("value", "must not be empty");
                            }
                        }
                        PathMatchType::PathPrefix => {
                            if p.value != "/" && p.value.ends_with('/') {
                                v.violation_at("value", "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched");
                            }
                            if !p.value.starts_with('/') {
                                v.violation_at("value", "must be an absolute path");
                            }
                        }
                        PathMatchType::Exact => {
                            if !p.value.starts_with('/') {
                                v.violation_at("value", "must be an absolute path");
                            }
                        }
                    });
                }
                if let Some(qps) = &m.query_params {
                    v.field("queryParams", |v| {
                        let mut names = HashSet::new();
                        for (j, q) in qps.iter().enumerate() {
                            v.index(j, |v| {
                                if q.name.is_empty() {
                                    v.violation_at("name", "must not be empty");
                                } else if !names.insert(q.name.as_str()) {
                                    v.violation_at("name", format!("multiple entries for name {}", q.name));
                                }
                            });
                        }
                    });
                }
                check_header_matches(v, "headers", &m.headers);
            });
        }
    });
    v.field("default", |v| {
        let filters = rule.default.filters.as_deref().unwrap_or_default();
        v.field("filters", |v| {
            for (i, f) in filters.iter().enumerate() {
                v.index(i, |v| check_http_filter(v, f, &rule.matches, top));
            }
        });
        let refs = rule.default.backend_refs.as_deref().unwrap_or_default();
        v.field("backendRefs", |v| {
            if refs.is_empty()
                && *top == K::MeshGateway
                && !filters
                    .iter()
                    .any(|f| f.filter_type == HttpFilterType::RequestRedirect)
            {
                v.violation("must not be empty");
            }
            check_backend_refs(v, refs);
        });
    });
}

fn check_http_filter(v: &mut Validator, f: &HttpFilter, matches: &[HttpRouteMatch], top: &K) {
    match f.filter_type {
        HttpFilterType::RequestHeaderModifier => match &f.request_header_modifier {
            None => v.violation_at("requestHeaderModifier", MUST_BE_DEFINED),
            Some(m) => v.field("requestHeaderModifier", |v| check_header_modifier(v, m)),
        },
        HttpFilterType::ResponseHeaderModifier => match &f.response_header_modifier {
            None => v.violation_at("responseHeaderModifier", MUST_BE_DEFINED),
            Some(m) => v.field("responseHeaderModifier", |v| check_header_modifier(v, m)),
        },
        HttpFilterType::RequestRedirect => match &f.request_redirect {
            None => v.violation_at("requestRedirect", MUST_BE_DEFINED),
            Some(r) => v.field("requestRedirect", |v| {
                check_precise_hostname(v, "hostname", &r.hostname);
                if let Some(p) = &r.path {
                    check_path_rewrite(v, p, matches);
                }
                if let Some(port) = r.port {
                    v.port("port", port);
                }
                if let Some(code) = r.status_code
                    && ![301, 302, 303, 307, 308].contains(&code)
                {
                    v.violation_at("statusCode", "must be one of 301, 302, 303, 307, 308");
                }
            }),
        },
        HttpFilterType::URLRewrite => match &f.url_rewrite {
            None => v.violation_at("urlRewrite", MUST_BE_DEFINED),
            Some(r) => v.field("urlRewrite", |v| {
                check_precise_hostname(v, "hostname", &r.hostname);
                if let Some(p) = &r.path {
                    check_path_rewrite(v, p, matches);
                }
                if r.host_to_backend_hostname == Some(true) {
                    if *top != K::MeshGateway {
                        v.violation_at("hostToBackendHostname", "can only be set with MeshGateway");
                    }
                    if r.hostname.is_some() {
                        v.violation_at(
                            "hostToBackendHostname",
                            "cannot be set together with hostname",
                        );
                    }
                }
            }),
        },
        HttpFilterType::RequestMirror => match &f.request_mirror {
            None => v.violation_at("requestMirror", MUST_BE_DEFINED),
            Some(m) => v.field("requestMirror", |v| {
                percentage(v, "percentage", &m.percentage, false);
                let opts = TargetRefOpts {
                    allowed: &[
                        K::MeshService,
                        K::MeshServiceSubset,
                        K::MeshMultiZoneService,
                    ],
                    ..Default::default()
                };
                validate_target_ref_with(v, "backendRef", &m.backend_ref.target_ref(), &opts);
                if let Some(p) = m.backend_ref.port {
                    v.field("backendRef", |v| v.port("port", p));
                }
            }),
        },
    }
}

impl Validate for MeshHttpRouteSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        let top = top_kind(&self.target_ref);
        let to_kinds = if top == K::MeshGateway {
            ONLY_MESH
        } else {
            ROUTE_DESTINATIONS
        };
        v.field("to", |v| {
            for (i, to) in self.to.iter().enumerate() {
                v.index(i, |v| {
                    check_ref(v, &to.target_ref, to_kinds);
                    v.field("hostnames", |v| {
                        if top != K::MeshGateway {
                            if !to.hostnames.is_empty() {
                                v.violation("must not be defined");
                            }
                        } else {
                            for (j, h) in to.hostnames.iter().enumerate() {
                                if let Err(e) = check_gateway_hostname(h) {
                                    v.index(j, |v| v.violation(e));
                                }
                            }
                        }
                    });
                    v.field("rules", |v| {
                        for (j, rule) in to.rules.iter().enumerate() {
                            v.index(j, |v| check_http_rule(v, rule, &top));
                        }
                    });
                });
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::policy::validate;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    fn http_route_example() -> Value {
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend", "namespace": "kuma-demo", "sectionName": "http"},
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET",
                        "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}, {"type": "Present", "name": "x-canary"}],
                        "queryParams": [{"type": "Exact", "name": "v", "value": "2"}]}],
                    "default": {
                        "filters": [
                            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-custom", "value": "xyz"}], "remove": ["x-remove"]}},
                            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
                            {"type": "RequestMirror", "requestMirror": {"percentage": 30, "backendRef": {"kind": "MeshService", "name": "backend-mirror", "port": 3001}}}],
                        "backendRefs": [{"kind": "MeshService", "name": "backend-v2", "namespace": "kuma-demo", "port": 3001, "weight": 100}]}}]}]})
    }

    #[test]
    fn mesh_http_route_docs_examples() {
        ok(validate::<MeshHttpRouteSpec>, http_route_example());
        ok(
            validate::<MeshHttpRouteSpec>,
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"app": "frontend"}},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
                    "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 10}]}}]}]}),
        );
        ok(
            validate::<MeshHttpRouteSpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge-gateway"},
            "to": [{"targetRef": {"kind": "Mesh"}, "hostnames": ["example.com", "*.example.org"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "default": {"backendRefs": [{"kind": "MeshService", "name": "demo-app_kuma-demo_svc_5000"}]}},
                    {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
                    "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301, "hostname": "new.example.com"}}]}}]}]}),
        );
    }

    #[test]
    fn mesh_http_route_rejections() {
        let f = validate::<MeshHttpRouteSpec>;
        let mut bad = http_route_example();
        bad["to"][0]["rules"][0]["matches"][0]["path"]["value"] = json!("v2/");
        err(
            f,
            bad.clone(),
            "spec.to[0].rules[0].matches[0].path.value",
            "must be an absolute path",
        );
        err(
            f,
            bad,
            "spec.to[0].rules[0].matches[0].path.value",
            "does not need a trailing slash",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "rules": []}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "hostnames": ["a.com"]}]}),
            "spec.to[0].hostnames",
            "must not be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
            "default": {"filters": [{"type": "RequestHeaderModifier"}]}}]}]}),
            "spec.to[0].rules[0].default.filters[0].requestHeaderModifier",
            "must be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
            "default": {"backendRefs": [{"kind": "Mesh"}]}}]}]}),
            "spec.to[0].rules[0].default.backendRefs[0].kind",
            "value is not supported",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"}, "to": [{"targetRef": {"kind": "Mesh"},
            "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}], "default": {}}]}]}),
            "spec.to[0].rules[0].default.backendRefs",
            "must not be empty",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"method": "FETCH"}], "default": {}}]}]}),
            "spec.to[0].rules[0].matches[0].method",
            "unknown variant",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/a"}}],
            "default": {"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}]}}]}]}),
            "spec.to[0].rules[0].default.filters[0].urlRewrite.path.replacePrefixMatch",
            "can only appear if all matches match a path prefix",
        );
    }
}
