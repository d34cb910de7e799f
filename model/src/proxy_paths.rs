//! Where a proxy's kuma-dp keeps the pipes and sockets the control plane points Envoy at:
//! both sides compute the same path from kuma-dp's working directory (sent to the control
//! plane as the `workdir` node metadata) and the proxy's name and mesh, as Kuma's do.

/// The pipe kuma-dp forwards TCP access logs from (Kuma's `AccessLogSocketName`):
/// `<workdir>/kuma-al-<name>-<mesh>`, cut to 98 bytes as Kuma cuts it for the length limit
/// of a socket path, then `.sock`.
pub fn access_log_pipe(workdir: &str, name: &str, mesh: &str) -> String {
    socket_path(workdir, &format!("kuma-al-{name}-{mesh}"))
}

/// The socket kuma-dp serves a proxy's merged metrics on, which Envoy's Prometheus listener
/// forwards scrapes to (Kuma's `MetricsHijackerSocketName`): `<workdir>/kuma-mh-<name>-<mesh>`.
pub fn metrics_hijacker_socket(workdir: &str, name: &str, mesh: &str) -> String {
    socket_path(workdir, &format!("kuma-mh-{name}-{mesh}"))
}

/// The path of MeshMetric's configuration on that socket (Kuma's `dpapi.PATH`), and the path
/// Envoy rewrites MeshMetric scrapes to on their way to kuma-dp.
pub const MESH_METRIC_PATH: &str = "/meshmetric";

/// The socket Envoy serves MeshMetric's configuration for kuma-dp on (Kuma's
/// `MeshMetricsDynamicConfigurationSocketName`).
pub fn mesh_metric_config_socket(workdir: &str) -> String {
    socket_path(workdir, "kuma-mesh-metric-config")
}

/// The socket Envoy takes a MeshMetric OpenTelemetry backend's pushes on, for kuma-dp to
/// export to (Kuma's `OpenTelemetrySocketName`): `<workdir>/kuma-otel-<backend>`.
pub fn mesh_metric_otel_socket(workdir: &str, backend: &str) -> String {
    socket_path(workdir, &format!("kuma-otel-{backend}"))
}

/// The file-name prefix of [`mesh_metric_otel_socket`]'s sockets, for kuma-dp watching its
/// working directory for them.
pub const MESH_METRIC_OTEL_SOCKET_PREFIX: &str = "kuma-otel-";

fn socket_path(workdir: &str, stem: &str) -> String {
    let mut path = format!("{}/{stem}", workdir.trim_end_matches('/'));
    let mut cut = path.len().min(98);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    path.truncate(cut);
    path.push_str(".sock");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_as_kuma_cuts_them() {
        assert_eq!(
            access_log_pipe("/tmp/", "web-1", "default"),
            "/tmp/kuma-al-web-1-default.sock"
        );
        let long = access_log_pipe(&"/d".repeat(60), "web", "default");
        assert_eq!(long.len(), 98 + ".sock".len());
        assert!(long.ends_with(".sock"));
    }
}
