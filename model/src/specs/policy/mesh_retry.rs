//! MeshRetry: retries of TCP connections and HTTP/gRPC requests to the destinations in `to`.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<RetryConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<RetryTcp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RetryHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<RetryGrpc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryTcp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempt: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_response_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_request_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<Vec<HostPredicate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryGrpc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitedBackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_headers: Option<Vec<ResetHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateLimitFormat {
    Seconds,
    UnixTimestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetHeader {
    #[serde(default)]
    pub name: String,
    pub format: RateLimitFormat,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPredicate {
    #[serde(default)]
    pub predicate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<i32>,
}

const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "5XX",
    "GatewayError",
    "Reset",
    "Retriable4xx",
    "ConnectFailure",
    "EnvoyRatelimited",
    "RefusedStream",
    "Http3PostConnectFailure",
    "HttpMethodConnect",
    "HttpMethodDelete",
    "HttpMethodGet",
    "HttpMethodHead",
    "HttpMethodOptions",
    "HttpMethodPatch",
    "HttpMethodPost",
    "HttpMethodPut",
    "HttpMethodTrace",
];
const GRPC_RETRY_ON: &[&str] = &[
    "Canceled",
    "DeadlineExceeded",
    "Internal",
    "ResourceExhausted",
    "Unavailable",
];

/// Status codes Go's `http.StatusText` knows, which Kuma accepts as `retryOn` items.
fn is_known_http_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

fn check_back_off(v: &mut Validator, b: &Option<BackOff>) {
    let Some(b) = b else { return };
    v.field("backOff", |v| {
        if b.base_interval.is_none() && b.max_interval.is_none() {
            v.violation("must not be empty");
        }
        duration_positive(v, "baseInterval", &b.base_interval);
        duration_positive(v, "maxInterval", &b.max_interval);
    });
}

fn check_rate_limited_back_off(v: &mut Validator, r: &Option<RateLimitedBackOff>) {
    let Some(r) = r else { return };
    v.field("rateLimitedBackOff", |v| {
        duration_positive(v, "maxInterval", &r.max_interval);
        match &r.reset_headers {
            None => v.violation_at("resetHeaders", MUST_BE_DEFINED),
            Some(headers) => v.field("resetHeaders", |v| {
                for (i, h) in headers.iter().enumerate() {
                    if h.name.is_empty() {
                        v.index(i, |v| v.violation_at("name", MUST_BE_DEFINED));
                    }
                }
            }),
        }
    });
}

fn check_retry_on(v: &mut Validator, items: &Option<Vec<String>>, allowed: &[&str], http: bool) {
    let Some(items) = items else { return };
    v.field("retryOn", |v| {
        for (i, item) in items.iter().enumerate() {
            let status_ok = http && item.parse::<u16>().is_ok_and(is_known_http_status);
            if !allowed.contains(&item.as_str()) && !status_ok {
                v.index(i, |v| v.violation(format!("unknown item '{item}'")));
            }
        }
    });
}

fn check_retry_conf(v: &mut Validator, c: &RetryConf) {
    if c.tcp.is_none() && c.http.is_none() && c.grpc.is_none() {
        v.violation("at least one of the 'tcp', 'http', 'grpc' must be specified");
    }
    if let Some(tcp) = &c.tcp
        && tcp.max_connect_attempt.is_none()
    {
        v.violation_at("tcp", "must not be empty");
    }
    if let Some(h) = &c.http {
        v.field("http", |v| {
            if h.num_retries.is_none()
                && h.per_try_timeout.is_none()
                && h.back_off.is_none()
                && h.retry_on.is_none()
                && h.retriable_request_headers.is_none()
                && h.retriable_response_headers.is_none()
                && h.rate_limited_back_off.is_none()
                && h.host_selection.is_none()
                && h.host_selection_max_attempts.is_none()
            {
                v.violation("must not be empty");
            }
            duration(v, "perTryTimeout", &h.per_try_timeout);
            check_back_off(v, &h.back_off);
            check_rate_limited_back_off(v, &h.rate_limited_back_off);
            check_retry_on(v, &h.retry_on, HTTP_RETRY_ON, true);
            check_header_matches(v, "retriableResponseHeaders", &h.retriable_response_headers);
            check_header_matches(v, "retriableRequestHeaders", &h.retriable_request_headers);
            if let Some(preds) = &h.host_selection {
                v.field("hostSelection", |v| {
                    let mut priority_set = false;
                    for (i, p) in preds.iter().enumerate() {
                        v.index(i, |v| match p.predicate.as_str() {
                            "OmitPreviousHosts" => {}
                            "OmitHostsWithTags" => {
                                if p.tags.is_none() {
                                    v.violation_at("tags", MUST_BE_DEFINED);
                                }
                            }
                            "OmitPreviousPriorities" => {
                                if priority_set {
                                    v.violation_at(
                                        "predicate",
                                        "OmitPreviousPriorities must only be specified once",
                                    );
                                }
                                priority_set = true;
                                if p.update_frequency.unwrap_or(0) <= 0 {
                                    v.violation_at(
                                        "updateFrequency",
                                        "must be defined and greater than zero",
                                    );
                                }
                            }
                            other => v.violation_at(
                                "predicate",
                                format!("unknown predicate type '{other}'"),
                            ),
                        });
                    }
                });
            }
            greater_than_zero(v, "hostSelectionMaxAttempts", h.host_selection_max_attempts);
        });
    }
    if let Some(g) = &c.grpc {
        v.field("grpc", |v| {
            if g.num_retries.is_none()
                && g.per_try_timeout.is_none()
                && g.back_off.is_none()
                && g.retry_on.is_none()
                && g.rate_limited_back_off.is_none()
            {
                v.violation("must not be empty");
            }
            duration(v, "perTryTimeout", &g.per_try_timeout);
            check_back_off(v, &g.back_off);
            check_rate_limited_back_off(v, &g.rate_limited_back_off);
            check_retry_on(v, &g.retry_on, GRPC_RETRY_ON, false);
        });
    }
}

impl Validate for MeshRetrySpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshGateway,
                K::MeshService,
                K::MeshServiceSubset,
                K::MeshHTTPRoute,
                K::Dataplane,
            ],
            false,
        );
        if self.to.is_empty() {
            v.violation_at("to", "needs at least one item");
        }
        let to_kinds = if is_gateway_or_route(&top_kind(&self.target_ref)) {
            &[K::Mesh, K::MeshExternalService][..]
        } else {
            TO_DESTINATIONS_AND_ROUTES
        };
        check_to(v, &self.to, to_kinds, check_retry_conf);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::policy::validate;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    #[test]
    fn mesh_retry_docs_examples() {
        ok(
            validate::<MeshRetrySpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "tcp": {"maxConnectAttempt": 5},
                "http": {"numRetries": 10, "perTryTimeout": "5s", "backOff": {"baseInterval": "15s", "maxInterval": "20m"},
                    "retryOn": ["5xx", "GatewayError", "Reset", "HttpMethodGet", "503"],
                    "rateLimitedBackOff": {"maxInterval": "1m", "resetHeaders": [{"name": "retry-after", "format": "Seconds"}]},
                    "retriableResponseHeaders": [{"name": "x-retry", "type": "Exact", "value": "true"}],
                    "hostSelection": [{"predicate": "OmitPreviousHosts"}, {"predicate": "OmitPreviousPriorities", "updateFrequency": 2}],
                    "hostSelectionMaxAttempts": 3},
                "grpc": {"numRetries": 5, "perTryTimeout": "2s", "retryOn": ["Canceled", "Unavailable"]}}}]}),
        );
    }

    #[test]
    fn mesh_retry_rejections() {
        err(
            validate::<MeshRetrySpec>,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.to",
            "needs at least one item",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one of the 'tcp', 'http', 'grpc' must be specified",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"tcp": {}}}]}),
            "spec.to[0].default.tcp",
            "must not be empty",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"backOff": {}}}}]}),
            "spec.to[0].default.http.backOff",
            "must not be empty",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"retryOn": ["5xx", "Sometimes"]}}}]}),
            "spec.to[0].default.http.retryOn[1]",
            "unknown item 'Sometimes'",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"grpc": {"retryOn": ["5xx"]}}}]}),
            "spec.to[0].default.grpc.retryOn[0]",
            "unknown item '5xx'",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"hostSelection": [{"predicate": "OmitHostsWithTags"}]}}}]}),
            "spec.to[0].default.http.hostSelection[0].tags",
            "must be defined",
        );
        err(
            validate::<MeshRetrySpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "default": {"tcp": {"maxConnectAttempt": 1}}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
    }
}
