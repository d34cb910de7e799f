//! `GET /events`: the store's change stream as server-sent events, so a GUI or a script follows
//! changes as they happen instead of polling lists. Each event names what changed; the client
//! reads the resource itself through the API, with its own access rights.
//!
//! ```text
//! event: ready                      (the subscription is in place: list now, then follow)
//! event: change
//! data: {"operation":"Create","type":"Dataplane","mesh":"default","name":"web-1","version":1}
//! event: resync                     (events were missed: list again)
//! data: {"missed":12}
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, http::StatusCode};
use model::ResourceType;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::SharedState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};

/// Streams open at once, process-wide: each holds a store subscription and a connection.
pub const MAX_STREAMS: usize = 256;
/// A comment line this often keeps proxies and load balancers from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One open stream, counted until its body is dropped (the client went away).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Comma-separated resource types (`Dataplane,MeshTimeout`); every type when absent.
    types: Option<String>,
    /// Only changes in this mesh (and of global-scoped types, which belong to none).
    mesh: Option<String>,
}

/// Which changes a stream passes on.
#[derive(Debug)]
struct Filter {
    types: Option<Vec<ResourceType>>,
    mesh: Option<String>,
    secrets: bool,
}

impl Filter {
    fn parse(q: &EventsQuery, admin: bool) -> Result<Filter, ApiError> {
        let types = match q.types.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(list) => {
                let mut types = Vec::new();
                for name in list.split(',').map(str::trim) {
                    let kind = ResourceType::from_name(name).ok_or_else(|| {
                        ApiError::bad_request(
                            "Invalid query",
                            "types",
                            format!(
                                "{name:?} is not a resource type (e.g. Dataplane, MeshTimeout)"
                            ),
                        )
                    })?;
                    if is_secret(kind) && !admin {
                        return Err(ApiError::forbidden(format!(
                            "only admins can follow {kind} changes"
                        )));
                    }
                    types.push(kind);
                }
                Some(types)
            }
        };
        Ok(Filter {
            types,
            mesh: q.mesh.clone().filter(|m| !m.is_empty()),
            // Without types, secrets' names go to admins only.
            secrets: admin,
        })
    }

    fn passes(&self, key: &model::ResourceKey) -> bool {
        let type_ok = match &self.types {
            Some(types) => types.contains(&key.kind),
            None => self.secrets || !is_secret(key.kind),
        };
        type_ok
            && self
                .mesh
                .as_ref()
                .is_none_or(|m| key.mesh.is_empty() || *m == key.mesh)
    }
}

fn is_secret(kind: ResourceType) -> bool {
    matches!(kind, ResourceType::Secret | ResourceType::GlobalSecret)
}

fn change_event(ev: &store::ChangeEvent) -> Event {
    let data = serde_json::json!({
        "operation": format!("{:?}", ev.op),
        "type": ev.key.kind.name(),
        "mesh": ev.key.mesh,
        "name": ev.key.name,
        "version": ev.version,
    });
    Event::default().event("change").data(data.to_string())
}

pub async fn stream(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    stopping: Option<Extension<crate::serve::Stopping>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Response {
    let filter = match Filter::parse(&q, caller.user.is_admin()) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(slot) = Slot::take() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many event streams",
            format!("this control plane serves at most {MAX_STREAMS} event streams at once"),
        )
        .into_response();
    };
    // Subscribed before `ready` goes out: a client that lists after `ready` misses nothing.
    let events = state.store.subscribe();
    let ready =
        futures::stream::once(async { Ok::<_, Infallible>(Event::default().event("ready")) });
    let changes = futures::stream::unfold(
        (events, filter, slot),
        |(mut events, filter, slot)| async move {
            loop {
                let event = match events.recv().await {
                    Ok(ev) if filter.passes(&ev.key) => change_event(&ev),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => Event::default()
                        .event("resync")
                        .data(serde_json::json!({ "missed": missed }).to_string()),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), (events, filter, slot)));
            }
        },
    );
    // The server stopping ends the stream: the client reconnects, to another replica or to
    // this one once it is back, and lists again.
    let stopped = async move {
        match stopping {
            Some(Extension(crate::serve::Stopping(mut stopping))) => {
                let _ = stopping.wait_for(|s| *s).await;
            }
            None => futures::future::pending().await,
        }
    };
    let events = futures::StreamExt::take_until(futures::StreamExt::chain(ready, changes), stopped);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Takes the next complete event off `buffer`, which holds what a client has read of the
/// stream so far: the event's name and its JSON data (`Null` when it has none). Keep-alive
/// comments are skipped; `None` until a whole event has arrived.
pub fn take_event(
    buffer: &mut String,
) -> Option<Result<(String, serde_json::Value), serde_json::Error>> {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::new();
        let mut data = serde_json::Value::Null;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data = match serde_json::from_str(d.trim()) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(e)),
                };
            }
        }
        if !name.is_empty() {
            return Some(Ok((name, data)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ResourceKey;

    fn query(types: Option<&str>, mesh: Option<&str>) -> EventsQuery {
        EventsQuery {
            types: types.map(Into::into),
            mesh: mesh.map(Into::into),
        }
    }

    #[test]
    fn filters_by_type_and_mesh_and_keeps_secrets_for_admins() {
        let dp = ResourceKey::new(ResourceType::Dataplane, "default", "web-1");
        let other_mesh = ResourceKey::new(ResourceType::Dataplane, "payments", "web-1");
        let zone = ResourceKey::new(ResourceType::Zone, "", "zone-1");
        let secret = ResourceKey::new(ResourceType::Secret, "default", "key");

        let f = Filter::parse(&query(Some("Dataplane, Zone"), Some("default")), false).unwrap();
        assert!(f.passes(&dp) && f.passes(&zone));
        assert!(!f.passes(&other_mesh) && !f.passes(&secret));

        let everything = Filter::parse(&query(None, None), false).unwrap();
        assert!(everything.passes(&other_mesh) && !everything.passes(&secret));
        let admin = Filter::parse(&query(None, None), true).unwrap();
        assert!(admin.passes(&secret));
    }

    #[test]
    fn an_unknown_type_names_the_field_and_secrets_need_an_admin() {
        let err = Filter::parse(&query(Some("Dataplane,Nope"), None), true).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.invalid_parameters[0].field, "types");
        assert!(err.invalid_parameters[0].reason.contains("Nope"));
        let err = Filter::parse(&query(Some("Secret"), None), false).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }
}
