//! The Kuma Discovery Service (multi-zone sync): the direction and naming rules and the wire
//! codec. The global-side server and the zone-side client build on these.

pub mod codec;
pub mod global;
pub mod insight;
pub mod inspect;
pub mod rules;
pub mod sync;
pub mod zone;

pub use proto::envoy_types;
