//! Compiles the Envoy API messages the generated configuration uses into a descriptor set, so
//! configuration can be written as Envoy's JSON and turned into protobuf at run time (and
//! checked against the real schema in tests). The .proto files are the ones the `envoy-types`
//! crate ships; its version is read from the workspace's Cargo.lock.

use std::path::{Path, PathBuf};

const ROOTS: &[&str] = &[
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/config/trace/v3/datadog.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/open_telemetry/v3/logs_service.proto",
    // Before fault.proto: its package `envoy.extensions.filters.common` would capture the
    // rate limits' relative `common.ratelimit` references (protobuf resolves innermost scope
    // first among the files loaded so far).
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/retry/host/omit_host_metadata/v3/omit_host_metadata_config.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/health_check/event_sinks/file/v3/file.proto",
];

const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "googleapis",
    "protoc-gen-validate",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
];

fn envoy_types_version(lock: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"envoy-types\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}

fn proto_root() -> Result<PathBuf, String> {
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO_DIR");
    if let Ok(dir) = std::env::var("ENVOY_TYPES_PROTO_DIR") {
        return Ok(dir.into());
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let lock = manifest.join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let version = envoy_types_version(&lock)
        .ok_or_else(|| format!("no envoy-types entry in {}", lock.display()))?;
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_string())?;
    let registry = cargo_home.join("registry/src");
    let entries =
        std::fs::read_dir(&registry).map_err(|e| format!("{}: {e}", registry.display()))?;
    for entry in entries.flatten() {
        let candidate = entry.path().join(format!("envoy-types-{version}/proto"));
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "envoy-types {version}'s proto files are not under {}; set ENVOY_TYPES_PROTO_DIR to its proto/ folder",
        registry.display()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = proto_root()?;
    let includes: Vec<PathBuf> = INCLUDES.iter().map(|i| root.join(i)).collect();
    let fds = protox::compile(ROOTS, &includes)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("envoy_descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    Ok(())
}
