//! KDS messages from a peer control plane, through the real stream halves of `kds::sync`:
//! `DeltaDiscoveryResponse`s into `run_receiver` (each resource decoded by
//! `kds::codec::from_xds_resource`, validated, accepted or refused by the zone's or global's
//! own `Inbound` rules, applied to an in-memory store), and `DeltaDiscoveryRequest`s
//! (subscriptions, ACKs, NACKs) into `run_sender`.
//!
//! Input: one byte choosing the direction, then protobuf messages split by
//! `fuzz::SEPARATOR`. A message that does not decode ends the stream as tonic would, with an
//! error status.
#![no_main]

use std::sync::{Arc, LazyLock};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use kds::sync::{ChangeFeed, Inbound, Outbound, StreamLabel, WireForms};
use libfuzzer_sys::fuzz_target;
use model::Resource;
use prost::Message;
use store::SharedStore;

struct Setup {
    rt: tokio::runtime::Runtime,
    /// What global's and the zone's senders serve; senders never write, so one store of each
    /// serves every input.
    global: SharedStore,
    zone: SharedStore,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let rt = fuzz::runtime();
    let global = rt.block_on(fuzz::store_with(&fuzz::baseline(None)));
    let zone = rt.block_on(fuzz::store_with(&fuzz::baseline(Some(fuzz::ZONE))));
    Setup { rt, global, zone }
});

fn label() -> StreamLabel {
    StreamLabel {
        peer: "fuzz".into(),
        stats: Arc::default(),
    }
}

fn decoded<M: Message + Default>(messages: &[&[u8]]) -> Vec<Result<M, tonic::Status>> {
    let mut out = Vec::new();
    for m in messages {
        match M::decode(*m) {
            Ok(msg) => out.push(Ok(msg)),
            Err(e) => {
                out.push(Err(tonic::Status::internal(e.to_string())));
                break;
            }
        }
    }
    out
}

async fn drain<T>(mut rx: tokio::sync::mpsc::Receiver<T>) {
    while rx.recv().await.is_some() {}
}

async fn receive(messages: &[&[u8]], to_zone: bool) {
    let responses = decoded::<DeltaDiscoveryResponse>(messages);
    // A fresh store per input: what one input applied must not change how the next one runs.
    let store = fuzz::store_with(&fuzz::baseline(None)[..1]).await;
    let (types, inbound): (_, Arc<dyn Inbound>) = if to_zone {
        (
            kds::rules::zone_subscriptions(),
            Arc::new(zone::kds_client::FromGlobal {
                zone: fuzz::ZONE.into(),
            }),
        )
    } else {
        (
            kds::rules::global_subscriptions(),
            Arc::new(global::kds_server::FromZone {
                zone: fuzz::ZONE.into(),
            }),
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<DeltaDiscoveryRequest>(64);
    let run = kds::sync::run_receiver(
        store,
        types,
        inbound,
        "fuzz".into(),
        futures::stream::iter(responses),
        tx,
        label(),
    );
    let _ = tokio::join!(run, drain(rx));
}

/// Global's sender as it serves a zone, or a zone's as it serves global (their `wanted` and
/// wire forms as in `global::kds_server` and `zone::kds_client`).
async fn send(served: &SharedStore, messages: &[&[u8]], to_zone: bool) {
    let requests = decoded::<DeltaDiscoveryRequest>(messages);
    let (types, wanted, wire): (_, fn(&Resource) -> bool, _) = if to_zone {
        (
            kds::rules::zone_subscriptions(),
            |r| kds::rules::global_sends_to_zone(r, fuzz::ZONE, |_| true),
            WireForms::new(kds::rules::to_zone),
        )
    } else {
        (
            zone::kds_client::zone_provided_types(),
            |r| kds::rules::zone_sends_to_global(r, fuzz::ZONE),
            WireForms::new(|r: &Resource| kds::rules::to_global(r, fuzz::ZONE)),
        )
    };
    let outbound = Outbound {
        wanted: Arc::new(wanted),
        wire: Arc::new(wire),
        refilter: None,
        changes: ChangeFeed::follow(served, &types),
        // As our zones announce it to global; global announces nothing to a zone.
        streamed_full_state: to_zone,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<DeltaDiscoveryResponse>(64);
    let run = kds::sync::run_sender(
        served.clone(),
        types,
        outbound,
        futures::stream::iter(requests),
        tx,
        label(),
        kds::sync::DEFAULT_MAX_MESSAGE,
    );
    let _ = tokio::join!(run, drain(rx));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let messages = fuzz::split_messages(rest);
    let Setup { rt, global, zone } = &*SETUP;
    rt.block_on(async {
        match mode % 4 {
            0 => receive(&messages, true).await,
            1 => receive(&messages, false).await,
            2 => send(global, &messages, true).await,
            _ => send(zone, &messages, false).await,
        }
    });
});
