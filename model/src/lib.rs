//! Kuma's resource model: types, descriptors, validation with field paths and codecs.
//! Pure data: nothing here does I/O.

pub mod catalog;
pub mod descriptor;
pub mod duration;
pub mod name;
pub mod proxy_paths;
pub mod resource;
pub mod specs;
pub mod template;
pub mod time;
pub mod validate;

pub use descriptor::{Descriptor, Layout, ResourceType, Scope};
pub use resource::{Meta, Resource, ResourceKey};
pub use time::Timestamp;
pub use validate::{ValidationError, Validator, Violation};

/// An error and its causes on one line (`outer: cause: root cause`), for logs and for
/// messages that cross the wire as text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Labels Kuma reserves, written by the control plane.
pub mod labels {
    pub const ORIGIN: &str = "kuma.io/origin";
    pub const ZONE: &str = "kuma.io/zone";
    pub const DISPLAY_NAME: &str = "kuma.io/display-name";
    pub const KDS_SYNC: &str = "kuma.io/kds-sync";
    pub const MESH: &str = "kuma.io/mesh";
    pub const ENV: &str = "kuma.io/env";
    pub const SERVICE_TAG: &str = "kuma.io/service";
    pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
}
