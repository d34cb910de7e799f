//! Compiles our .proto files with protox (pure Rust), so building needs no protoc. Envoy's
//! messages come from envoy-types; well-known types from prost-types. Kuma's legacy resource
//! messages (Mesh, Dataplane, ...) are not turned into Rust: their descriptors are embedded and
//! read at run time to convert specs between Kuma's protobuf and our JSON.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "kuma/system/v1alpha1/inter_cp.proto",
        "kuma/mesh/v1alpha1/kds.proto",
        "kuma/mesh/v1alpha1/dp_admin.proto",
        "kuma/raft/v1/raft.proto",
        "opentelemetry/trace_service.proto",
        "opentelemetry/logs_service.proto",
        "opentelemetry/metrics_service.proto",
    ];
    println!("cargo:rerun-if-changed=protos");
    let fds = protox::compile(protos, ["protos"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".envoy", "::envoy_types::pb::envoy")
        .compile_fds(fds)?;

    let legacy = [
        "kuma/mesh/v1alpha1/mesh.proto",
        "kuma/mesh/v1alpha1/dataplane.proto",
        "kuma/mesh/v1alpha1/dataplane_insight.proto",
        "kuma/mesh/v1alpha1/zone_ingress.proto",
        "kuma/mesh/v1alpha1/zone_ingress_insight.proto",
        "kuma/mesh/v1alpha1/zoneegress.proto",
        "kuma/mesh/v1alpha1/zoneegressinsight.proto",
        "kuma/mesh/v1alpha1/gateway.proto",
        "kuma/system/v1alpha1/secret.proto",
    ];
    let descriptors = protox::compile(legacy, ["protos"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("kuma_legacy_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    Ok(())
}
