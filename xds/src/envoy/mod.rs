//! Small builders of Envoy's JSON, and the accessors that edit it: the only place (with
//! [`crate::resources::ResourceSet`]) that knows Envoy's field paths.

pub mod cluster;
pub mod core;
pub mod endpoints;
pub mod filters;
pub mod listener;
pub mod names;
pub mod routes;
pub mod tls;
