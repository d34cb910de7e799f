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
    pub mod raft {
        pub mod v1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("kuma.raft.v1");
        }
    }
    /// OTLP messages, reduced to what is read of them (see `otlp_messages.proto`).
    pub mod otlp {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("kuma.otlp");
    }
}

/// OTLP's collector services under their real gRPC names: what receives the traces and logs
/// Envoy exports (the tests' collectors), and the metrics service kuma-dp and the control
/// plane push to.
pub mod opentelemetry {
    pub mod proto {
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    #![allow(clippy::all, clippy::pedantic, missing_docs)]
                    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                }
            }
            pub mod logs {
                pub mod v1 {
                    #![allow(clippy::all, clippy::pedantic, missing_docs)]
                    tonic::include_proto!("opentelemetry.proto.collector.logs.v1");
                }
            }
            pub mod metrics {
                pub mod v1 {
                    #![allow(clippy::all, clippy::pedantic, missing_docs)]
                    tonic::include_proto!("opentelemetry.proto.collector.metrics.v1");
                }
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of Kuma's legacy resource messages (`kuma.mesh.v1alpha1.Mesh`,
/// `Dataplane`, ..., `kuma.system.v1alpha1.Secret`), for run-time conversion.
pub const KUMA_LEGACY_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kuma_legacy_descriptors.bin"));
