//! The zone's KDS client: dials global, receives what global provides and sends what the zone
//! owns, holds the inspect streams global reaches this zone's proxies through, and answers
//! global's health checks. Reconnects with jittered exponential backoff; meanwhile the zone
//! keeps serving its proxies from what its store has.

use std::sync::Arc;
use std::time::Duration;

use model::labels::ORIGIN;
use model::{Resource, ResourceType};
use proto::kuma::mesh::v1alpha1::ZoneHealthCheckRequest;
use proto::kuma::mesh::v1alpha1::global_kds_service_client::GlobalKdsServiceClient;
use proto::kuma::mesh::v1alpha1::kds_sync_service_client::KdsSyncServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use kds::inspect::{self, AdminOp, SharedProxyAdmin};
use kds::rules::{self, Refusal};
use kds::sync::{self, Inbound, SyncError};

use crate::kds_dial::{self, ForwardProxy, ProxyConfigError};

/// Why a connection to global ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("multizone.zone.kds.auth.cpTokenPath: cannot read {path}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the zone token is empty")]
    EmptyToken,
    #[error("multizone.zone.globalAddress: {0:?} must start with grpc:// or grpcs://")]
    Scheme(String),
    #[error("multizone.zone.globalAddress: {0:?} is not a valid address")]
    Address(String, #[source] tonic::transport::Error),
    #[error("multizone.zone.kds.rootCaFile: cannot verify global with it")]
    RootCa(#[source] security::tls::TlsError),
    #[error(
        "grpcs:// without multizone.zone.kds.rootCaFile verifies global against this host's trust store"
    )]
    SystemRoots(#[source] security::tls::TlsError),
    #[error(transparent)]
    Proxy(#[from] ProxyConfigError),
    #[error("TLS without verification")]
    SkipVerify(#[source] security::tls::TlsError),
    #[error("cannot connect to global")]
    Connect(#[source] tonic::transport::Error),
    #[error("global refused the {0} stream")]
    Refused(&'static str, #[source] tonic::Status),
    #[error("{0} stream")]
    Stream(&'static str, #[source] SyncError),
    #[error("the zone->global sender stopped")]
    Sender(#[source] tokio::task::JoinError),
    #[error("health check refused")]
    HealthCheck(#[source] tonic::Status),
}

#[derive(Debug, Clone)]
pub struct ZoneClientConfig {
    pub zone: String,
    /// `grpc://host:port` or `grpcs://host:port`.
    pub global_address: String,
    pub cp_version: String,
    pub max_message: usize,
    /// PEM of the CA that signed global's certificate, for `grpcs://`.
    pub root_ca_pem: Option<String>,
    /// `grpcs://` without checking global's certificate (encrypted, not authenticated).
    pub tls_skip_verify: bool,
    pub token: Option<ZoneToken>,
    /// `multizone.zone.kds.proxyUrl`; `None`: the environment's `HTTPS_PROXY`, if any.
    pub proxy_url: Option<String>,
    /// Where the streams' figures go on `/metrics` (`None`: nowhere).
    pub metrics: Option<kds::metrics::KdsMetrics>,
}

/// Where the zone token comes from. A file is read on every connection attempt, so a rotated
/// token is picked up without a restart.
#[derive(Debug, Clone)]
pub enum ZoneToken {
    Inline(String),
    File(String),
}

impl ZoneToken {
    fn read(&self) -> Result<String, ClientError> {
        let token = match self {
            ZoneToken::Inline(t) => t.clone(),
            ZoneToken::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(ClientError::EmptyToken);
        }
        Ok(token)
    }
}

// Public for the fuzz targets (fuzz/), not an API.
#[doc(hidden)]
pub struct FromGlobal {
    pub zone: String,
}

impl Inbound for FromGlobal {
    fn accept(&self, mut r: Resource) -> Result<Resource, Refusal> {
        if !rules::zone_consumes(r.kind) {
            return Err(Refusal::NotProvided {
                name: r.meta.name,
                peer: "global",
                kind: r.kind,
            });
        }
        if rules::zone_of(&r) == Some(self.zone.as_str()) {
            return Err(Refusal::OwnResource { name: r.meta.name });
        }
        r.meta
            .labels
            .entry(ORIGIN.into())
            .or_insert_with(|| rules::ORIGIN_GLOBAL.into());
        Ok(r)
    }

    fn keeps_local_status(&self) -> bool {
        true
    }

    fn owned_by_peer(&self, r: &Resource) -> bool {
        match r.label(ORIGIN) {
            Some(rules::ORIGIN_GLOBAL) => true,
            Some(rules::ORIGIN_ZONE) => rules::zone_of(r).is_some_and(|z| z != self.zone),
            _ => false,
        }
    }
}

/// Types a zone provides to global.
pub fn zone_provided_types() -> Vec<ResourceType> {
    ResourceType::all()
        .filter(|k| {
            k.descriptor()
                .has_flag(model::descriptor::kds::PROVIDED_BY_ZONE)
        })
        .collect()
}

/// How to reach global: TCP (through a forward proxy where one is set), TLS for `grpcs://`,
/// then HTTP/2. The connector does both TCP and TLS, so tonic sees a plain `http://` URI.
struct Dialer {
    endpoint: Endpoint,
    /// `host:port` of global, an IPv6 host in brackets (as CONNECT wants it).
    target: String,
    host: String,
    port: u16,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    proxy: Option<ForwardProxy>,
}

impl Dialer {
    async fn connect(&self) -> Result<Channel, ClientError> {
        let (tls, proxy) = (self.tls.clone(), self.proxy.clone());
        let (target, host, port) = (self.target.clone(), self.host.clone(), self.port);
        let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let (tls, proxy) = (tls.clone(), proxy.clone());
            let (target, host) = (target.clone(), host.clone());
            async move {
                let open = kds_dial::open(&target, &host, port, proxy.as_ref(), tls);
                let io = tokio::time::timeout(kds_dial::DIAL_TIMEOUT, open)
                    .await
                    .map_err(|_| kds_dial::DialError::Timeout {
                        target: target.clone(),
                        after: kds_dial::DIAL_TIMEOUT,
                    })??;
                Ok::<_, kds_dial::DialError>(hyper_util::rt::TokioIo::new(io))
            }
        });
        self.endpoint
            .connect_with_connector(connector)
            .await
            .map_err(ClientError::Connect)
    }
}

/// Whether the client can dial global as configured (address, TLS trust, proxy), without
/// dialing.
pub fn check(config: &ZoneClientConfig) -> Result<(), ClientError> {
    dialer(config).map(|_| ())
}

fn dialer(config: &ZoneClientConfig) -> Result<Dialer, ClientError> {
    let address = &config.global_address;
    let (rest, tls) = if let Some(rest) = address.strip_prefix("grpcs://") {
        (rest, true)
    } else if let Some(rest) = address.strip_prefix("grpc://") {
        (rest, false)
    } else {
        return Err(ClientError::Scheme(address.clone()));
    };
    let endpoint = Endpoint::from_shared(format!("http://{rest}"))
        .map_err(|e| ClientError::Address(address.clone(), e))?;
    let uri = endpoint.uri();
    let bracketed = uri.host().unwrap_or_default().to_string();
    let host = bracketed.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(5685);
    let tls = match (tls, config.tls_skip_verify, &config.root_ca_pem) {
        (false, _, _) => None,
        (true, true, _) => {
            Some(security::tls::skip_verify_grpc_client_config().map_err(ClientError::SkipVerify)?)
        }
        (true, false, Some(pem)) => Some(
            security::tls::grpc_client_config(security::tls::TrustRoots::Pem(pem))
                .map_err(ClientError::RootCa)?,
        ),
        // No CA given: the host's trust store, as Kuma does (a hosted manager's certificate
        // is publicly signed).
        (true, false, None) => Some(
            security::tls::grpc_client_config(security::tls::TrustRoots::System)
                .map_err(ClientError::SystemRoots)?,
        ),
    };
    let proxy = match &config.proxy_url {
        Some(url) => Some(ForwardProxy::parse("multizone.zone.kds.proxyUrl", url)?),
        None => ForwardProxy::from_env(&host, port)?,
    };
    Ok(Dialer {
        endpoint: endpoint
            .connect_timeout(kds_dial::DIAL_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true),
        target: format!("{bracketed}:{port}"),
        host,
        port,
        tls,
        proxy,
    })
}

fn with_metadata<T>(config: &ZoneClientConfig, token: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    let bearer = token.map(|t| format!("Bearer {t}"));
    for (k, v) in [
        ("client-id", Some(config.zone.as_str())),
        ("kds-version", Some("v3")),
        ("features", Some("hash-suffix")),
        ("features", Some(sync::FEATURE_STREAMED_FULL_STATE)),
        ("version", Some(config.cp_version.as_str())),
        ("authorization", bearer.as_deref()),
    ] {
        // `features` is a list (Kuma reads every value of it), so values are appended.
        if let Some(Ok(v)) = v.map(str::parse) {
            md.append(k, v);
        }
    }
    req
}

/// One connection's life: both streams until either ends.
async fn session(
    store: store::SharedStore,
    config: &ZoneClientConfig,
    channel: Channel,
    admin: Option<SharedProxyAdmin>,
) -> Result<(), ClientError> {
    let mut client = KdsSyncServiceClient::new(channel.clone())
        .max_decoding_message_size(config.max_message)
        .max_encoding_message_size(config.max_message);
    let token = config.token.as_ref().map(ZoneToken::read).transpose()?;
    let token = token.as_deref();
    let (req_tx, req_rx) = mpsc::channel(64);
    let downstream = client
        .global_to_zone_sync(with_metadata(config, token, ReceiverStream::new(req_rx)))
        .await
        .map_err(|s| ClientError::Refused("global->zone", s))?
        .into_inner();
    let (resp_tx, resp_rx) = mpsc::channel(64);
    let upstream = client
        .zone_to_global_sync(with_metadata(config, token, ReceiverStream::new(resp_rx)))
        .await
        .map_err(|s| ClientError::Refused("zone->global", s))?
        .into_inner();
    tracing::info!(zone = %config.zone, global = %config.global_address, "connected to global");
    let stats = Arc::new(match &config.metrics {
        Some(m) => sync::StreamStats::metered(m.clone(), config.zone.clone()),
        None => sync::StreamStats::default(),
    });
    let inbound = Arc::new(FromGlobal {
        zone: config.zone.clone(),
    });
    let receive = sync::run_receiver(
        store.clone(),
        rules::zone_subscriptions(),
        inbound,
        config.zone.clone(),
        downstream,
        req_tx,
        sync::StreamLabel {
            peer: "global (global->zone)".into(),
            stats: stats.clone(),
        },
    );
    let zone = config.zone.clone();
    let wire = {
        let zone = zone.clone();
        sync::WireForms::new(move |r: &Resource| rules::to_global(r, &zone))
    };
    let outbound = sync::Outbound {
        wanted: Arc::new(move |r: &Resource| rules::zone_sends_to_global(r, &zone)),
        wire: Arc::new(wire),
        refilter: None,
        changes: sync::ChangeFeed::follow(&store, &zone_provided_types()),
        // Global announces nothing of its receiver: what it gets is Kuma's framing.
        streamed_full_state: false,
    };
    // Its own task: while the receiver applies a large full state on one core, the sender
    // follows the changes that makes on the other (it would otherwise fall behind its feed and
    // relist everything). Dropping the set with the session aborts it.
    let mut send = tokio::task::JoinSet::new();
    send.spawn(sync::run_sender(
        store,
        zone_provided_types(),
        outbound,
        upstream,
        resp_tx,
        sync::StreamLabel {
            peer: "global (zone->global)".into(),
            stats,
        },
        config.max_message,
    ));
    let health = health_checks(channel.clone(), config, token);
    let inspect = async {
        match admin {
            Some(admin) => inspect_streams(channel, config, token, admin).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = receive => r.map_err(|e| ClientError::Stream("global->zone", e)),
        Some(r) = send.join_next() => match r {
            Ok(r) => r.map_err(|e| ClientError::Stream("zone->global", e)),
            Err(e) => Err(ClientError::Sender(e)),
        },
        e = health => Err(e),
        () = inspect => unreachable!("inspect streams never end the session"),
    }
}

/// Holds the three inspect streams global sends proxy admin requests down. They do not end the
/// session: a global without them (or one that drops them) still syncs; the next session
/// opens them again.
async fn inspect_streams(
    channel: Channel,
    config: &ZoneClientConfig,
    token: Option<&str>,
    admin: SharedProxyAdmin,
) {
    let client = GlobalKdsServiceClient::new(channel)
        .max_decoding_message_size(config.max_message)
        .max_encoding_message_size(config.max_message);
    let xds = hold(AdminOp::ConfigDump, admin.clone(), &config.zone, |out| {
        let mut client = client.clone();
        async move {
            client
                .stream_xds_configs(with_metadata(config, token, out))
                .await
        }
    });
    let stats = hold(AdminOp::Stats, admin.clone(), &config.zone, |out| {
        let mut client = client.clone();
        async move { client.stream_stats(with_metadata(config, token, out)).await }
    });
    let clusters = hold(AdminOp::Clusters, admin.clone(), &config.zone, |out| {
        let mut client = client.clone();
        async move {
            client
                .stream_clusters(with_metadata(config, token, out))
                .await
        }
    });
    futures::join!(xds, stats, clusters);
    std::future::pending::<()>().await;
}

/// Opens one inspect stream with `open` and answers global's requests on it until it ends.
async fn hold<Req, Resp, Fut>(
    op: AdminOp,
    admin: SharedProxyAdmin,
    zone: &str,
    open: impl FnOnce(ReceiverStream<Resp>) -> Fut,
) where
    Req: inspect::RequestMessage,
    Resp: inspect::ResponseMessage,
    Fut:
        std::future::Future<Output = Result<tonic::Response<tonic::Streaming<Req>>, tonic::Status>>,
{
    let (tx, rx) = mpsc::channel(16);
    match open(ReceiverStream::new(rx)).await {
        Ok(requests) => inspect::answer(op, requests.into_inner(), tx, admin).await,
        Err(s) => {
            tracing::warn!(%zone, op = op.path(), code = ?s.code(), error = %s.message(), "global refused an inspect stream; its API cannot inspect this zone's proxies");
        }
    }
}

/// Calls `GlobalKDSService.HealthCheck` at the interval global asks for, as Kuma zones do; a
/// refusal ends the session so the zone reconnects.
async fn health_checks(
    channel: Channel,
    config: &ZoneClientConfig,
    token: Option<&str>,
) -> ClientError {
    let mut client = GlobalKdsServiceClient::new(channel);
    loop {
        let request = with_metadata(config, token, ZoneHealthCheckRequest {});
        let interval = match client.health_check(request).await {
            Ok(resp) => resp
                .into_inner()
                .interval
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(10)),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return std::future::pending().await;
            }
            Err(s) => return ClientError::HealthCheck(s),
        };
        tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
    }
}

const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// Runs until `shutdown`, reconnecting with backoff from 1 s to 10 s, plus up to half again of
/// jitter. The ceiling bounds how long a zone stays apart from global after a partition heals
/// (Kuma waits a random 0-10 s); global's admission limit, not the zones' patience, protects it
/// from a thousand zones reconnecting at once.
pub async fn run(
    store: store::SharedStore,
    config: ZoneClientConfig,
    admin: Option<SharedProxyAdmin>,
    mut shutdown: watch::Receiver<bool>,
) {
    let dialer = match dialer(&config) {
        Ok(d) => {
            if let Some(proxy) = &d.proxy {
                tracing::info!(%proxy, global = %config.global_address, "dialing global through a forward proxy");
            }
            d
        }
        Err(e) => {
            tracing::error!(error = %model::error_chain(&e), "cannot reach global");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = async {
            let channel = dialer.connect().await?;
            session(store.clone(), &config, channel, admin.clone()).await
        };
        let started = tokio::time::Instant::now();
        tokio::select! {
            r = attempt => {
                if let Err(e) = r {
                    let error = model::error_chain(&e);
                    tracing::warn!(zone = %config.zone, %error, retry_in = ?backoff, "KDS connection to global lost");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        let jitter = backoff.mul_f64(rand_fraction() * 0.5);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

/// A cheap jitter source: the clock's sub-second noise is random enough to spread reconnects.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}
