//! Reaching a proxy's Envoy admin from any replica: through the admin stream this replica
//! holds, or by forwarding to the replica the proxy's insight names as the one it is connected
//! to (`InterCpEnvoyAdminForwardService`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kds::inspect::{
    AdminAnswer, AdminError, AdminOp, PROXY_TIMEOUT, ProxyAdmin, ProxyRef, SharedProxyAdmin,
};
use model::catalog::Instance;
use model::{ResourceKey, ResourceType};
use proto::kuma::system::v1alpha1::EnvoyAdminForwardRequest;
use proto::kuma::system::v1alpha1::inter_cp_envoy_admin_forward_service_client::InterCpEnvoyAdminForwardServiceClient;
use store::{SharedStore, StoreError};
use tonic::transport::Channel;

use crate::catalog::read_catalog;
use crate::tls::channel;
use crate::{MAX_ADMIN_ANSWER, Me, Tls};

/// Which stream a replica needs to reach a proxy, and so which replica holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Zone or standalone: the proxy's own admin stream, held by the replica its xDS
    /// subscription (in its insight) is with.
    ProxyStream,
    /// Global: the inspect stream of the proxy's zone, held by the global replica the zone's
    /// KDS subscription (in its ZoneInsight) is with.
    ZoneStream,
}

/// Reaches a proxy's Envoy admin from any replica: through the stream this replica holds, or
/// by forwarding to the replica that holds it.
pub struct ReplicaProxyAdmin {
    store: SharedStore,
    tls: Arc<Tls>,
    me: Me,
    /// The proxies (or zones) whose stream this replica holds.
    local: SharedProxyAdmin,
    way: Way,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ReplicaProxyAdmin {
    pub fn new(
        store: SharedStore,
        tls: Arc<Tls>,
        me: Me,
        local: SharedProxyAdmin,
        way: Way,
    ) -> Self {
        ReplicaProxyAdmin {
            store,
            tls,
            me,
            local,
            way,
            channels: Mutex::default(),
        }
    }

    /// The insight naming the replica that holds the way to `proxy`.
    async fn holder_insight(
        &self,
        proxy: ProxyRef<'_>,
    ) -> Result<(ResourceKey, ResourceType), AdminError> {
        match self.way {
            Way::ProxyStream => {
                let insight = proxy
                    .kind
                    .owned_insight()
                    .unwrap_or(ResourceType::DataplaneInsight);
                Ok((ResourceKey::new(insight, proxy.mesh, proxy.name), insight))
            }
            Way::ZoneStream => {
                let (_, zone) = kds::inspect::proxy_in_zone(&self.store, proxy).await?;
                let insight = ResourceType::ZoneInsight;
                Ok((ResourceKey::new(insight, "", zone), insight))
            }
        }
    }

    /// The replica holding the stream to the proxy (or its zone), if it is another one.
    async fn holder(&self, proxy: ProxyRef<'_>) -> Result<Instance, AdminError> {
        let who = proxy.to_string();
        let (key, insight) = self.holder_insight(proxy).await?;
        let spec = match self.store.get(&key).await {
            Ok(r) => serde_json::from_value::<model::specs::insight::InsightSpec>(r.spec)
                .map_err(|source| AdminError::Insight { insight, source })?,
            Err(StoreError::NotFound(_)) => {
                return Err(AdminError::NeverConnected {
                    proxy: who,
                    insight,
                });
            }
            Err(source) => {
                return Err(AdminError::Store {
                    what: format!("the proxy's {insight}"),
                    source,
                });
            }
        };
        let Some(holder) = spec
            .subscriptions
            .last()
            .filter(|s| s.disconnect_time.is_none())
            .map(|s| match self.way {
                Way::ProxyStream => s.control_plane_instance_id.clone(),
                Way::ZoneStream => s.global_instance_id.clone().unwrap_or_default(),
            })
        else {
            return Err(AdminError::Disconnected { proxy: who });
        };
        if holder == self.me.id {
            return Err(AdminError::NotConnected { proxy: who });
        }
        read_catalog(&self.store)
            .await
            .and_then(|c| c.instances.into_iter().find(|i| i.id == holder))
            .ok_or(AdminError::UnknownInstance {
                proxy: who,
                instance: holder,
            })
    }

    async fn forward(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
    ) -> Result<AdminAnswer, AdminError> {
        let target = self.holder(proxy).await?;
        let endpoint = format!("https://{}:{}", target.address, target.inter_cp_port);
        let ch = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&endpoint) {
                Some(c) => c.clone(),
                None => {
                    let c = channel(&endpoint, &target.address, &self.tls, PROXY_TIMEOUT * 2)
                        .map_err(|source| AdminError::Endpoint {
                            endpoint: endpoint.clone(),
                            source,
                        })?
                        .connect_lazy();
                    channels.insert(endpoint.clone(), c.clone());
                    c
                }
            }
        };
        let mut client = InterCpEnvoyAdminForwardServiceClient::new(ch)
            .max_decoding_message_size(MAX_ADMIN_ANSWER);
        let request = EnvoyAdminForwardRequest {
            mesh: proxy.mesh.into(),
            name: proxy.name.into(),
            path: op.path().into(),
            query: query.into(),
            resource_type: proxy.kind.name().into(),
        };
        let answer = client
            .forward(request)
            .await
            .map_err(|source| AdminError::Forward {
                instance: target.id.clone(),
                endpoint,
                source,
            })?
            .into_inner();
        if !answer.error.is_empty() {
            return Err(AdminError::Remote {
                instance: target.id,
                message: answer.error,
            });
        }
        Ok(AdminAnswer {
            status: u16::try_from(answer.status).unwrap_or(502),
            content_type: answer.content_type,
            body: answer.body,
        })
    }
}

#[async_trait::async_trait]
impl ProxyAdmin for ReplicaProxyAdmin {
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
    ) -> Result<AdminAnswer, AdminError> {
        match self.local.get(proxy, op, query).await {
            Err(AdminError::NotConnected { .. } | AdminError::NoZoneStream { .. }) => {
                self.forward(proxy, op, query).await
            }
            other => other,
        }
    }
}
