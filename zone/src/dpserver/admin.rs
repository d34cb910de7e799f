//! Envoy's admin, reached through kuma-dp. Envoy's admin listens on loopback only, so kuma-dp
//! keeps a stream open to the control plane replica it bootstrapped from and answers admin
//! requests sent down it. The API asks this registry; a proxy whose kuma-dp holds no stream to
//! this replica is reported as not connected here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kds::inspect::{AdminAnswer, AdminError, AdminOp, PROXY_TIMEOUT, ProxyAdmin, ProxyRef};
use proto::kuma::mesh::v1alpha1::dataplane_admin_service_server::DataplaneAdminService;
use proto::kuma::mesh::v1alpha1::{DataplaneAdminRequest, DataplaneAdminResponse};
use store::SharedStore;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::dpserver::auth::ProxyAuth;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<DataplaneAdminResponse>>>>;

struct Session {
    id: u64,
    requests: mpsc::Sender<Result<DataplaneAdminRequest, Status>>,
    pending: Pending,
}

/// A proxy's tunnel is keyed by its type too: a zone ingress and a zone egress may share a
/// name (both in no mesh).
type TunnelKey = (model::ResourceType, String, String);

#[derive(Default)]
pub struct AdminTunnels {
    sessions: Mutex<HashMap<TunnelKey, Session>>,
    next: AtomicU64,
}

impl AdminTunnels {
    /// Ends every tunnel (the control plane is stopping): each stream's requests end, so its
    /// proxy reconnects elsewhere and the server's drain is not held by it.
    pub fn close_all(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Sends `path?query` to the proxy's Envoy admin and waits for its answer.
    pub async fn request(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
        timeout: Duration,
    ) -> Result<DataplaneAdminResponse, AdminError> {
        let (mesh, name) = (proxy.mesh, proxy.name);
        let request_id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        let sender = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let session = sessions
                .get(&(proxy.kind, mesh.to_string(), name.to_string()))
                .ok_or_else(|| AdminError::NotConnected {
                    proxy: proxy.to_string(),
                })?;
            session
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(request_id.clone(), tx);
            session.requests.clone()
        };
        let request = DataplaneAdminRequest {
            request_id,
            path: op.path().into(),
            query: query.into(),
        };
        sender
            .send(Ok(request))
            .await
            .map_err(|_| AdminError::Closed)?;
        let response = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| AdminError::Timeout(timeout))?
            .map_err(|_| AdminError::Closed)?;
        if !response.error.is_empty() {
            return Err(AdminError::Envoy(response.error));
        }
        Ok(response)
    }
}

/// The proxies whose kuma-dp holds its admin stream to this replica.
#[async_trait::async_trait]
impl ProxyAdmin for AdminTunnels {
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
    ) -> Result<AdminAnswer, AdminError> {
        let r = self.request(proxy, op, query, PROXY_TIMEOUT).await?;
        Ok(AdminAnswer {
            status: u16::try_from(r.status).unwrap_or(502),
            content_type: r.content_type,
            body: r.body,
        })
    }
}

pub struct AdminService {
    pub store: SharedStore,
    pub auth: Arc<dyn ProxyAuth>,
    pub tunnels: Arc<AdminTunnels>,
}

fn metadata<'a, T>(req: &'a Request<T>, key: &str) -> Option<&'a str> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

#[tonic::async_trait]
impl DataplaneAdminService for AdminService {
    type StreamStream = ReceiverStream<Result<DataplaneAdminRequest, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<DataplaneAdminResponse>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let proxy_type = metadata(&request, "kuma-proxy-type")
            .unwrap_or("dataplane")
            .to_string();
        // Zone proxies serve every mesh and name none.
        let mesh = metadata(&request, "kuma-mesh")
            .map(str::to_string)
            .or_else(|| crate::dpserver::auth::is_zone_proxy(&proxy_type).then(String::new));
        let (Some(mesh), Some(name)) = (mesh, metadata(&request, "kuma-name")) else {
            return Err(Status::invalid_argument(
                "kuma-mesh and kuma-name metadata are required",
            ));
        };
        let name = name.to_string();
        let token = metadata(&request, "authorization")
            .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).to_string());
        crate::dpserver::auth::admit_stored_proxy(
            &self.store,
            self.auth.as_ref(),
            token.as_deref(),
            &mesh,
            &name,
            &proxy_type,
        )
        .await?;
        let key: TunnelKey = (
            crate::dpserver::auth::proxy_resource_type(&proxy_type),
            mesh.clone(),
            name.clone(),
        );
        let (tx, rx) = mpsc::channel(8);
        let pending: Pending = Arc::default();
        let id = self.tunnels.next.fetch_add(1, Ordering::Relaxed);
        self.tunnels
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Session {
                    id,
                    requests: tx,
                    pending: pending.clone(),
                },
            );
        let tunnels = self.tunnels.clone();
        let mut responses = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(response)) = responses.next().await {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&response.request_id);
                if let Some(w) = waiter {
                    let _ = w.send(response);
                }
            }
            let mut sessions = tunnels.sessions.lock().unwrap_or_else(|p| p.into_inner());
            // A newer stream of the same proxy may have replaced this one.
            if sessions.get(&key).is_some_and(|s| s.id == id) {
                sessions.remove(&key);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
