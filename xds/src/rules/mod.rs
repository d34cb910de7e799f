//! Kuma's rule engine (`pkg/plugins/policies/core/rules` in Kuma 2.14): which policies of a type
//! select a proxy ([`matching`]), in which order they apply ([`order`]: least specific first,
//! so the last one wins), how their confs merge ([`merge`]: RFC 7396, `append*` lists
//! concatenated), and the rules plugins read ([`build`]): per destination (`to`), per inbound
//! (`rules`, and `from` where Kuma reads it as rules), or one for the whole proxy (`default`).
//!
//! The engine reads policies as stored JSON, so it treats every policy type alike; plugins
//! parse the merged conf into their typed conf.

pub mod build;
pub mod matching;
pub mod merge;
pub mod order;

pub use build::{InboundRule, Origin, Rule};
pub use matching::{Matched, matched_policies};
pub use merge::merge;
