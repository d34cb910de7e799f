//! Generated protobuf types and gRPC services, and the Envoy types they build on.

pub use envoy_types;

pub mod kuma {
    pub mod system {
        pub mod v1alpha1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("kuma.system.v1alpha1");
        }
    }
    pub mod mesh {
        pub mod v1alpha1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("kuma.mesh.v1alpha1");
        }
    }
}

/// Encoded `FileDescriptorSet` of Kuma's legacy resource messages (`kuma.mesh.v1alpha1.Mesh`,
/// `Dataplane`, ..., `kuma.system.v1alpha1.Secret`), for run-time conversion.
pub const KUMA_LEGACY_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kuma_legacy_descriptors.bin"));
