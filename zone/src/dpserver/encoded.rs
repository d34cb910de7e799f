//! Encoded Envoy resources shared by the proxies of a mesh. Most of a sidecar's resources are
//! the same JSON as other sidecars' (the clusters, endpoints and outbound listeners of the
//! services they call), and turning JSON into protobuf through Envoy's descriptors is the
//! costliest step of a proxy's configuration: each distinct resource is encoded once, and a
//! proxy whose JSON is equal gets the same bytes (and version) without encoding it again.
//!
//! Entries live for two generations: the mesh's cache turns a generation with every new
//! snapshot, and an entry no proxy asked for during the last two is dropped, so the cache
//! holds what current configurations use and little more.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use xds::wire::{self, WireError};

/// One resource as ADS sends it.
#[derive(Debug)]
pub struct Encoded {
    pub version: String,
    pub bytes: Vec<u8>,
    type_url: String,
    /// What it was encoded from: a hash match is confirmed by equality, never trusted alone.
    json: Value,
}

/// Equal bytes are equal resources; the JSON they came from does not matter here.
impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.type_url == other.type_url
            && self.version == other.version
            && self.bytes == other.bytes
    }
}

impl Eq for Encoded {}

type Buckets = HashMap<u64, Vec<Arc<Encoded>>>;
/// By the address of a JSON document proxies share; the entry holds the document, so the
/// address cannot be reused by another while the entry lives.
type ByAddress = HashMap<usize, (Arc<Value>, Arc<Encoded>)>;

#[derive(Default)]
struct Generations {
    current: Buckets,
    previous: Buckets,
    current_by_address: ByAddress,
    previous_by_address: ByAddress,
}

#[derive(Default)]
pub struct EncodedCache {
    generations: Mutex<Generations>,
}

impl std::fmt::Debug for EncodedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("EncodedCache")
            .field("current", &g.current.len())
            .field("previous", &g.previous.len())
            .finish()
    }
}

/// FNV-1a of the encoded bytes: the version Envoy is told, so equal bytes keep their version
/// across snapshots and restarts.
pub fn content_version(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

impl Encoded {
    /// `json` encoded as `type_url`; `keep` is what lookups compare against (nothing for a
    /// resource never looked up).
    fn new(type_url: &str, json: &Value, keep: Value) -> Result<Arc<Encoded>, WireError> {
        let bytes = wire::encode(type_url, json)?;
        Ok(Arc::new(Encoded {
            version: content_version(&bytes),
            bytes,
            type_url: type_url.to_string(),
            json: keep,
        }))
    }
}

/// Encodes without sharing (what no other proxy can have, such as its secrets).
pub fn encode_alone(type_url: &str, json: &Value) -> Result<Arc<Encoded>, WireError> {
    Encoded::new(type_url, json, Value::Null)
}

impl EncodedCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A poisoned lock only means a panic elsewhere mid-lookup; every entry is whole.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The encoding of `json` as `type_url`, from the cache when an equal resource was
    /// encoded in this generation or the one before.
    pub fn encode(&self, type_url: &str, json: &Value) -> Result<Arc<Encoded>, WireError> {
        let key = {
            let mut h = DefaultHasher::new();
            type_url.hash(&mut h);
            hash_json(json, &mut h);
            h.finish()
        };
        let same = |e: &&Arc<Encoded>| e.type_url == type_url && same_in_order(&e.json, json);
        {
            let mut g = self.lock();
            if let Some(e) = g.current.get(&key).and_then(|b| b.iter().find(same)) {
                return Ok(e.clone());
            }
            if let Some(e) = g
                .previous
                .get(&key)
                .and_then(|b| b.iter().find(same))
                .cloned()
            {
                g.current.entry(key).or_default().push(e.clone());
                return Ok(e);
            }
        }
        // Encoded outside the lock: other proxies' lookups do not wait for it.
        let e = Encoded::new(type_url, json, json.clone())?;
        let mut g = self.lock();
        let bucket = g.current.entry(key).or_default();
        // Another proxy may have encoded the same resource meanwhile: keep one.
        match bucket.iter().find(same) {
            Some(existing) => Ok(existing.clone()),
            None => {
                bucket.push(e.clone());
                Ok(e)
            }
        }
    }

    /// Like [`EncodedCache::encode`], for a document proxies share as one `Arc` (a
    /// destination's endpoints): found by its address without reading it.
    pub fn encode_shared(
        &self,
        type_url: &str,
        json: &Arc<Value>,
    ) -> Result<Arc<Encoded>, WireError> {
        let address = Arc::as_ptr(json) as usize;
        let held = |entry: Option<&(Arc<Value>, Arc<Encoded>)>| {
            entry
                .filter(|(doc, e)| Arc::ptr_eq(doc, json) && e.type_url == type_url)
                .map(|(_, e)| e.clone())
        };
        {
            let mut g = self.lock();
            if let Some(e) = held(g.current_by_address.get(&address)) {
                return Ok(e);
            }
            if let Some(e) = held(g.previous_by_address.get(&address)) {
                g.current_by_address
                    .insert(address, (json.clone(), e.clone()));
                return Ok(e);
            }
        }
        let e = self.encode(type_url, json)?;
        self.lock()
            .current_by_address
            .insert(address, (json.clone(), e.clone()));
        Ok(e)
    }

    /// Starts a generation: what was used in the last one stays reachable for one more.
    pub fn turn(&self) {
        let mut g = self.lock();
        g.previous = std::mem::take(&mut g.current);
        g.previous_by_address = std::mem::take(&mut g.current_by_address);
    }
}

/// Equality that also requires object keys in the same order: a linear walk, where `==` on
/// objects looks every key up. Generated JSON is always written in one order, so equal
/// resources compare equal; one written in another order only misses the cache.
fn same_in_order(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_in_order(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_in_order(vx, vy))
        }
        _ => a == b,
    }
}

/// A hash of `v` consistent with `==` for equal documents written in the same order (which
/// generated JSON always is); documents equal in another key order only miss the cache.
fn hash_json(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u.hash(h),
                (None, Some(i)) => i.hash(h),
                _ => n.as_f64().map(f64::to_bits).hash(h),
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|i| hash_json(i, h));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(h);
            for (k, v) in map {
                k.hash(h);
                hash_json(v, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(name: &str) -> Value {
        json!({"name": name, "type": "EDS", "connect_timeout": "5s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}})
    }

    #[test]
    fn equal_resources_share_one_encoding_for_two_generations() {
        let cache = EncodedCache::default();
        let a = cache.encode(wire::CLUSTER, &cluster("backend")).expect("a");
        let again = cache
            .encode(wire::CLUSTER, &cluster("backend"))
            .expect("again");
        assert!(Arc::ptr_eq(&a, &again), "an equal resource is encoded once");
        let other = cache.encode(wire::CLUSTER, &cluster("web")).expect("web");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_ne!(a.version, other.version);
        assert_eq!(
            *a,
            *encode_alone(wire::CLUSTER, &cluster("backend")).expect("alone")
        );

        cache.turn();
        let kept = cache
            .encode(wire::CLUSTER, &cluster("backend"))
            .expect("kept");
        assert!(
            Arc::ptr_eq(&a, &kept),
            "used in the last generation, still there"
        );
        cache.turn();
        cache.turn();
        // "web" was not asked for in two generations: encoded afresh, to the same bytes.
        let web = cache
            .encode(wire::CLUSTER, &cluster("web"))
            .expect("web again");
        assert!(!Arc::ptr_eq(&web, &other));
        assert_eq!(*web, *other);
    }

    #[test]
    fn a_shared_document_is_found_by_address_and_kept_alive() {
        let cache = EncodedCache::default();
        let doc = Arc::new(json!({"cluster_name": "backend", "endpoints": []}));
        let first = cache.encode_shared(wire::ENDPOINTS, &doc).expect("first");
        let again = cache.encode_shared(wire::ENDPOINTS, &doc).expect("again");
        assert!(Arc::ptr_eq(&first, &again));
        // An equal document elsewhere is found by content; another one is encoded.
        let copy = Arc::new((*doc).clone());
        assert!(Arc::ptr_eq(
            &first,
            &cache.encode_shared(wire::ENDPOINTS, &copy).expect("copy")
        ));
        let other = Arc::new(json!({"cluster_name": "web", "endpoints": []}));
        let web = cache.encode_shared(wire::ENDPOINTS, &other).expect("web");
        assert_ne!(web.version, first.version);
        // The caller's documents may go: the cache holds them, so no address is reused.
        drop((doc, copy, other));
        let fresh = Arc::new(json!({"cluster_name": "fresh", "endpoints": []}));
        let got = cache.encode_shared(wire::ENDPOINTS, &fresh).expect("fresh");
        assert_eq!(*got, *encode_alone(wire::ENDPOINTS, &fresh).expect("alone"));
    }

    #[test]
    fn a_bad_resource_is_an_error_not_an_entry() {
        let cache = EncodedCache::default();
        let bad = json!({"name": "x", "no_such_field": 1});
        assert!(cache.encode(wire::CLUSTER, &bad).is_err());
        assert!(cache.encode(wire::CLUSTER, &bad).is_err());
    }
}
