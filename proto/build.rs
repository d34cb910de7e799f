//! Compiles our .proto files with protox (pure Rust), so building needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["kuma/system/v1alpha1/inter_cp.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed=protos/{p}");
    }
    let fds = protox::compile(protos, ["protos"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
