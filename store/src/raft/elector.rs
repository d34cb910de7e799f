//! The control plane's leader on a raft store is the raft leader, with a lease so that two
//! replicas never act as leader at once, even across a partition:
//!
//! - the raft leader acts only until `LEASE` after the last moment a quorum acknowledged it
//!   (openraft measures that from when the acknowledged heartbeat was sent), and
//! - a newly elected raft leader starts acting only `CLAIM_DELAY` after its election.
//!
//! A new leader's quorum shares a member with the old leader's last acknowledging quorum; that
//! member acknowledged the old leader before it voted for the new one, so the old leader's
//! lease ended before `election + LEASE` < `election + CLAIM_DELAY`.

use std::time::Duration;

use async_trait::async_trait;
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use super::RaftTiming;
use super::types::{NodeId, Raft};
use crate::leader::LeaderElector;

pub struct RaftLeaderElector {
    raft: Raft,
    id: NodeId,
    lease: Duration,
    claim_delay: Duration,
}

impl RaftLeaderElector {
    pub(super) fn new(raft: Raft, id: NodeId, timing: RaftTiming) -> Self {
        // Several heartbeats per lease, and well inside the followers' own lease (openraft's
        // followers refuse to vote for `election_max` after hearing from the leader).
        let lease = (timing.heartbeat * 3).min(timing.election_min / 2);
        RaftLeaderElector {
            raft,
            id,
            lease,
            claim_delay: lease + lease / 2,
        }
    }
}

#[async_trait]
impl LeaderElector for RaftLeaderElector {
    async fn campaign(
        &self,
        instance_id: &str,
        leader: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut metrics = self.raft.metrics();
        // The term this replica leads and when it learned it.
        let mut leading: Option<(u64, Instant)> = None;
        // When the lease from the last quorum acknowledgement ends, computed when the metrics
        // arrive: re-reading old metrics later would stretch it.
        let mut lease_end: Option<Instant>;
        loop {
            let now = Instant::now();
            {
                let m = metrics.borrow_and_update();
                let raft_leader = m.state == ServerState::Leader
                    && m.current_leader == Some(self.id)
                    && m.running_state.is_ok();
                if !raft_leader {
                    leading = None;
                    lease_end = None;
                } else {
                    if leading.is_none_or(|(term, _)| term != m.current_term) {
                        leading = Some((m.current_term, now));
                    }
                    lease_end = m
                        .millis_since_quorum_ack
                        .map(|ms| now - Duration::from_millis(ms) + self.lease);
                }
            }
            loop {
                let now = Instant::now();
                let claim_at = leading.map(|(_, since)| since + self.claim_delay);
                let (acting, recheck) = match (claim_at, lease_end) {
                    (None, _) => (false, None),
                    (Some(claim_at), _) if now < claim_at => (false, Some(claim_at)),
                    (Some(_), Some(end)) if now < end => (true, Some(end)),
                    _ => (false, None),
                };
                leader.send_if_modified(|l| {
                    let changed = *l != acting;
                    if changed {
                        tracing::info!(
                            instance = instance_id,
                            node_id = self.id,
                            term = leading.map_or(0, |(term, _)| term),
                            leader = acting,
                            "control plane leadership (raft)"
                        );
                    }
                    *l = acting;
                    changed
                });
                tokio::select! {
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            let _ = leader.send(false);
                            return;
                        }
                        break;
                    }
                    () = sleep_until(recheck) => {}
                    _ = shutdown.wait_for(|s| *s) => {
                        let _ = leader.send(false);
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
