//! Who may fetch configuration for a proxy: with dataplane tokens on (the default), the token
//! must name the proxy's mesh and, when it names them, its name, tags and proxy type.

use std::collections::BTreeMap;

use std::sync::Arc;

use async_trait::async_trait;

/// Zone ingress and egress: global-scoped resources (no mesh) admitted with zone tokens.
pub fn is_zone_proxy(proxy_type: &str) -> bool {
    matches!(proxy_type, "ingress" | "egress")
}

/// The resource a proxy of `proxy_type` is registered as.
pub fn proxy_resource_type(proxy_type: &str) -> model::ResourceType {
    match proxy_type {
        "ingress" => model::ResourceType::ZoneIngress,
        "egress" => model::ResourceType::ZoneEgress,
        _ => model::ResourceType::Dataplane,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("cannot check the token: {0}")]
    Unavailable(String),
}

/// What a proxy says it is.
#[derive(Debug, Clone)]
pub struct ProxyIdentity<'a> {
    pub mesh: &'a str,
    pub name: &'a str,
    pub proxy_type: &'a str,
    /// Every value each tag has across the proxy's inbounds.
    pub tags: BTreeMap<String, Vec<String>>,
}

#[async_trait]
pub trait ProxyAuth: Send + Sync {
    async fn check(&self, token: Option<&str>, proxy: &ProxyIdentity<'_>) -> Result<(), AuthError>;
}

/// `KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none`: anyone reaching the port gets any proxy's
/// configuration (and certificate). For demos only.
pub struct NoAuth;

#[async_trait]
impl ProxyAuth for NoAuth {
    async fn check(&self, _: Option<&str>, _: &ProxyIdentity<'_>) -> Result<(), AuthError> {
        Ok(())
    }
}

pub const TOKEN_REQUIRED: &str = "Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > /path/file' and provide it via --dataplane-token-file=/path/file argument to Kuma DP";

/// Tag values across a Dataplane's inbounds (and gateway), as tokens constrain them.
pub fn tag_values(spec: &model::specs::dataplane::DataplaneSpec) -> BTreeMap<String, Vec<String>> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let gateway = spec.networking.gateway.iter().map(|g| &g.tags);
    for t in spec
        .networking
        .inbound
        .iter()
        .map(|i| &i.tags)
        .chain(gateway)
    {
        for (k, v) in t {
            let values = tags.entry(k.clone()).or_default();
            if !values.contains(v) {
                values.push(v.clone());
            }
        }
    }
    tags
}

/// Dataplane tokens (Kuma's default): RS256 JWTs signed by the mesh's signing key. Zone
/// ingress and egress proxies present zone tokens (scope `ingress`/`egress`) for this zone.
pub struct TokenAuth {
    pub store: store::SharedStore,
    /// This control plane's zone (empty on a standalone without a zone name).
    pub zone: String,
    /// What zone tokens are checked with: the public keys global published to a federated
    /// zone, else this control plane's own signing keys.
    pub zone_keys: Option<Arc<security::tokens::SigningKeys>>,
}

pub const ZONE_TOKEN_REQUIRED: &str = "Zone Token is required. Generate one on global with 'kumactl generate zone-token --zone=<zone> --scope=ingress' (or egress) and provide it via --dataplane-token-file=/path/file argument to Kuma DP";

impl TokenAuth {
    async fn check_zone_proxy(
        &self,
        token: Option<&str>,
        proxy_type: &str,
    ) -> Result<(), AuthError> {
        let token =
            token.ok_or_else(|| AuthError::Unauthenticated(ZONE_TOKEN_REQUIRED.to_string()))?;
        if self.zone.is_empty() {
            return Err(AuthError::Unauthenticated(
                "zone proxies need a zone: this control plane has no zone name (set KUMA_MULTIZONE_ZONE_NAME)".into(),
            ));
        }
        let keys = self.zone_keys.as_ref().ok_or_else(|| {
            AuthError::Unavailable("no zone token keys on this control plane".into())
        })?;
        match security::zone::verify_zone_token(keys, token, &self.zone, proxy_type).await {
            Ok(_) => Ok(()),
            Err(security::zone::ZoneTokenError::Token(
                e @ security::tokens::TokenError::Store(_),
            )) => Err(AuthError::Unavailable(e.to_string())),
            Err(e) => Err(AuthError::Unauthenticated(e.to_string())),
        }
    }
}

#[async_trait]
impl ProxyAuth for TokenAuth {
    async fn check(&self, token: Option<&str>, proxy: &ProxyIdentity<'_>) -> Result<(), AuthError> {
        if is_zone_proxy(proxy.proxy_type) {
            return self.check_zone_proxy(token, proxy.proxy_type).await;
        }
        let token = token.ok_or_else(|| AuthError::Unauthenticated(TOKEN_REQUIRED.to_string()))?;
        let keys = security::dataplane::dataplane_signing_keys(self.store.clone(), proxy.mesh);
        match security::dataplane::verify_dataplane_token(
            &keys,
            token,
            proxy.name,
            proxy.mesh,
            &proxy.tags,
            proxy.proxy_type,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_unavailable() => Err(AuthError::Unavailable(e.to_string())),
            Err(e) => Err(AuthError::Unauthenticated(e.to_string())),
        }
    }
}

/// Admits a gRPC stream for the stored Dataplane `mesh`/`name`: it must exist, parse, and
/// `token` must be accepted for it. Refusals carry the reason.
pub async fn admit_stored_proxy(
    store: &store::SharedStore,
    auth: &dyn ProxyAuth,
    token: Option<&str>,
    mesh: &str,
    name: &str,
    proxy_type: &str,
) -> Result<(), tonic::Status> {
    use tonic::Status;
    let kind = proxy_resource_type(proxy_type);
    let key = model::ResourceKey::new(kind, mesh, name);
    let stored = match store.get(&key).await {
        Ok(d) => d,
        Err(store::StoreError::NotFound(_)) => {
            return Err(Status::not_found(format!(
                "{} {name:?} in mesh {mesh:?} not found; create it in the control plane first or pass it to kuma-dp",
                kind.descriptor().singular
            )));
        }
        Err(e) => return Err(Status::unavailable(e.to_string())),
    };
    let tags = if is_zone_proxy(proxy_type) {
        BTreeMap::new()
    } else {
        let spec: model::specs::dataplane::DataplaneSpec = serde_json::from_value(stored.spec)
            .map_err(|e| {
                Status::failed_precondition(format!("stored dataplane is invalid: {e}"))
            })?;
        tag_values(&spec)
    };
    let identity = ProxyIdentity {
        mesh,
        name,
        proxy_type,
        tags,
    };
    match auth.check(token, &identity).await {
        Ok(()) => Ok(()),
        Err(AuthError::Unauthenticated(reason)) => {
            tracing::warn!(%mesh, %name, %reason, "proxy refused");
            Err(Status::unauthenticated(format!(
                "authentication failed: {reason}"
            )))
        }
        Err(e @ AuthError::Unavailable(_)) => Err(Status::unavailable(e.to_string())),
    }
}
