//! The zone control plane's role, which a standalone control plane runs too: the data plane
//! server ([`dpserver`]) that bootstraps and configures Envoy proxies, the zone ingresses'
//! available services ([`ingress`]), and the KDS client that federates the zone to global
//! ([`kds_client`]).

pub mod dpserver;
pub mod ingress;
pub mod kds_client;
pub mod kds_dial;
pub mod mads;
pub mod services;
