//! A store decorator that counts and times every operation for `/metrics`.

use std::future::Future;
use tokio::time::Instant;

use async_trait::async_trait;
use model::{Resource, ResourceKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::{ChangeEvent, ListPage, ListQuery, ResourceStore, Result, SharedStore, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    backend: &'static str,
    operation: &'static str,
    resource_type: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    backend: &'static str,
    operation: &'static str,
}

pub struct MeteredStore {
    inner: SharedStore,
    ops: Family<OpLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl MeteredStore {
    /// Another store counted in the same metrics (the same store read another way).
    pub fn sharing(&self, inner: SharedStore) -> Self {
        MeteredStore {
            inner,
            ops: self.ops.clone(),
            latency: self.latency.clone(),
        }
    }

    pub fn new(inner: SharedStore, registry: &mut Registry) -> Self {
        let ops = Family::<OpLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.5, 14))) as fn() -> Histogram,
        );
        registry.register(
            "store_operations",
            "Store operations by type and result",
            ops.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Latency of store operations",
            latency.clone(),
        );
        MeteredStore {
            inner,
            ops,
            latency,
        }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        resource_type: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let res = fut.await;
        let backend = self.inner.backend();
        self.latency
            .get_or_create(&LatencyLabels { backend, operation })
            .observe(start.elapsed().as_secs_f64());
        let result = match &res {
            Ok(_) => "ok",
            Err(StoreError::NotFound(_)) => "not_found",
            Err(StoreError::AlreadyExists(_)) => "already_exists",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(StoreError::MeshNotFound(_)) => "mesh_not_found",
            Err(StoreError::Unavailable { .. }) => "unavailable",
            Err(StoreError::Corrupt { .. }) => "corrupt",
            Err(StoreError::TooLarge { .. }) => "too_large",
        };
        self.ops
            .get_or_create(&OpLabels {
                backend,
                operation,
                resource_type,
                result,
            })
            .inc();
        res
    }
}

#[async_trait]
impl ResourceStore for MeteredStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.observe("get", key.kind.name(), self.inner.get(key))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.observe("list", query.kind.name(), self.inner.list(query))
            .await
    }

    async fn for_each(
        &self,
        query: &ListQuery,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<()> {
        self.observe("list", query.kind.name(), self.inner.for_each(query, visit))
            .await
    }

    async fn for_each_after(
        &self,
        query: &ListQuery,
        after: Option<&ResourceKey>,
        limit: usize,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<Option<ResourceKey>> {
        let listed = self.inner.for_each_after(query, after, limit, visit);
        self.observe("list", query.kind.name(), listed).await
    }

    async fn create(&self, resource: Resource) -> Result<Resource> {
        let t = resource.kind.name();
        self.observe("create", t, self.inner.create(resource)).await
    }

    async fn update(&self, resource: Resource) -> Result<Resource> {
        let t = resource.kind.name();
        self.observe("update", t, self.inner.update(resource)).await
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        self.observe("delete", key.kind.name(), self.inner.delete(key))
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn cluster_status(&self) -> Result<Option<crate::ClusterStatus>> {
        self.inner.cluster_status().await
    }
}
