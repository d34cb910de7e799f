//! The Kuma Discovery Service protocol (multi-zone sync), as both roles speak it: the wire
//! codec, the direction and naming rules, the delta sender and receiver (either side can be
//! either), and the inspect streams. The global server and the zone client that use these live
//! in the `global` and `zone` crates.

pub mod codec;
pub mod inspect;
pub mod metrics;
pub mod rules;
pub mod sync;

pub use proto::envoy_types;
