//! Global's way to proxies' Envoy admin: through the inspect streams of the zone a proxy's
//! resource came from, naming the proxy as that zone does.

use std::sync::Arc;
use std::time::Duration;

use kds::inspect::{
    AdminAnswer, AdminCall, AdminError, AdminOp, ProxyAdmin, ProxyRef, ZoneAdminStreams,
};
use store::SharedStore;

/// How long global waits for a zone to answer: the zone may itself forward to the replica
/// holding the proxy, which waits [`kds::inspect::PROXY_TIMEOUT`] for kuma-dp.
const ZONE_INSPECT_TIMEOUT: Duration = Duration::from_secs(25);

pub struct ZoneProxies {
    pub store: SharedStore,
    pub streams: Arc<ZoneAdminStreams>,
}

#[async_trait::async_trait]
impl ProxyAdmin for ZoneProxies {
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
    ) -> Result<AdminAnswer, AdminError> {
        let (r, zone) = kds::inspect::proxy_in_zone(&self.store, proxy).await?;
        let call = AdminCall {
            kind: proxy.kind,
            mesh: proxy.mesh.to_string(),
            name: r
                .label(model::labels::DISPLAY_NAME)
                .unwrap_or(&r.meta.name)
                .to_string(),
            include_eds: query.split('&').any(|p| p == "include_eds"),
        };
        let body = self
            .streams
            .call(&zone, op, call, ZONE_INSPECT_TIMEOUT)
            .await?;
        Ok(AdminAnswer {
            status: 200,
            content_type: op.content_type().into(),
            body,
        })
    }
}
