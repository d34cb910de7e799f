//! Generators: from a mesh's context to one proxy's [`crate::resources::ResourceSet`] (sidecars)
//! or finished resources (zone proxies, bootstraps), before any policy is applied.

pub mod bootstrap;
pub mod common;
pub mod dns;
pub mod dynconf;
pub mod egress;
pub mod endpoints;
pub mod external;
pub mod gateway;
pub mod ingress;
pub mod routes;
pub mod services;
pub mod sidecar;
pub mod transparent;
