//! Compiles our .proto files with protox (pure Rust), so building needs no protoc. Envoy's
//! messages come from envoy-types; well-known types from prost-types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "kuma/system/v1alpha1/inter_cp.proto",
        "kuma/mesh/v1alpha1/kds.proto",
    ];
    println!("cargo:rerun-if-changed=protos");
    let fds = protox::compile(protos, ["protos"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".envoy", "::envoy_types::pb::envoy")
        .compile_fds(fds)?;
    Ok(())
}
