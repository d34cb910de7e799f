//! Generated protobuf types and gRPC services.

pub mod kuma {
    pub mod system {
        pub mod v1alpha1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("kuma.system.v1alpha1");
        }
    }
}
