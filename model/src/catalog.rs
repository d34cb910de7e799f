//! The catalog of a control plane's replicas, kept by the leader in a `Config` resource.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The `Config` resource holding the catalog (JSON in its `config` field).
pub const CATALOG_CONFIG: &str = "cp-catalog";
/// The GlobalSecret holding the CA that signs replicas' inter-CP certificates.
pub const INTER_CP_CA_SECRET: &str = "inter-cp-ca";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub address: String,
    pub inter_cp_port: u16,
    pub leader: bool,
    pub ready: bool,
    pub version: String,
    pub last_heartbeat: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    pub instances: Vec<Instance>,
}

impl Catalog {
    pub fn leader(&self) -> Option<&Instance> {
        self.instances.iter().find(|i| i.leader)
    }
}
