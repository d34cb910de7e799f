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

/// Reaches a proxy's Envoy admin from any replica: through the stream this replica holds, or
/// by forwarding to the replica its insight names as the one it is connected to.
pub struct ReplicaProxyAdmin {
    store: SharedStore,
    tls: Arc<Tls>,
    me: Me,
    /// The proxies whose admin stream this replica holds.
    local: SharedProxyAdmin,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ReplicaProxyAdmin {
    pub fn new(store: SharedStore, tls: Arc<Tls>, me: Me, local: SharedProxyAdmin) -> Self {
        ReplicaProxyAdmin {
            store,
            tls,
            me,
            local,
            channels: Mutex::default(),
        }
    }

    /// The replica the proxy's newest open xDS subscription is with, if it is another one.
    async fn holder(&self, proxy: ProxyRef<'_>) -> Result<Instance, AdminError> {
        let who = proxy.to_string();
        let insight = proxy
            .kind
            .owned_insight()
            .unwrap_or(ResourceType::DataplaneInsight);
        let key = ResourceKey::new(insight, proxy.mesh, proxy.name);
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
            .map(|s| s.control_plane_instance_id.clone())
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
            Err(AdminError::NotConnected { .. }) => self.forward(proxy, op, query).await,
            other => other,
        }
    }
}
