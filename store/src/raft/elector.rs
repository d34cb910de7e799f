//! The control plane's leader on a raft store is the raft leader, with a lease so that two
//! replicas never act as leader at once, even across a partition:
//!
//! - the raft leader confirms its leadership with a quorum every heartbeat interval
//!   (openraft's read-index round); each confirmation asked at `t` extends its lease to
//!   `t + lease`. The quorum that answered heard from it after `t`, and openraft's followers
//!   refuse to vote for anyone else for `election_max` after hearing from their leader, so no
//!   other leader exists before `t + election_max`, which is later than `t + lease`;
//! - a newly elected raft leader starts acting only `claim_delay` after its election: the old
//!   leader's last confirmation was answered by a quorum sharing a member with the new
//!   leader's, who answered before voting, so the old lease ended before
//!   `election + lease` < `election + claim_delay`.
//!
//! Both hold on each replica's own monotonic clock, with margins for clock-rate differences.

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
    confirm_every: Duration,
}

impl RaftLeaderElector {
    pub(super) fn new(raft: Raft, id: NodeId, timing: RaftTiming) -> Self {
        // Two or more confirmations per lease, and well inside the followers' own lease.
        let lease = (timing.heartbeat * 3).min(timing.election_min / 2);
        RaftLeaderElector {
            raft,
            id,
            lease,
            claim_delay: lease + lease / 2,
            confirm_every: timing.heartbeat.min(lease / 2),
        }
    }

    fn leads(&self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> Option<u64> {
        (m.state == ServerState::Leader
            && m.current_leader == Some(self.id)
            && m.running_state.is_ok())
        .then_some(m.current_term)
    }

    /// While this replica is the raft leader, confirms it with a quorum every `confirm_every`
    /// and publishes where the lease ends.
    async fn confirm(&self, lease_end: watch::Sender<Option<Instant>>) {
        let mut metrics = self.raft.metrics();
        loop {
            let leads = self.leads(&metrics.borrow_and_update()).is_some();
            if !leads {
                if metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let asked = Instant::now();
            let confirmed = tokio::time::timeout(self.lease, self.raft.get_read_log_id()).await;
            if let Ok(Ok(_)) = confirmed {
                lease_end.send_replace(Some(asked + self.lease));
            }
            tokio::time::sleep_until(asked + self.confirm_every).await;
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
        let (lease_tx, mut lease_end) = watch::channel(None);
        let confirming = self.confirm(lease_tx);
        tokio::pin!(confirming);
        let mut metrics = self.raft.metrics();
        // The term this replica leads and when it learned it.
        let mut leading: Option<(u64, Instant)> = None;
        loop {
            let now = Instant::now();
            match self.leads(&metrics.borrow_and_update()) {
                None => leading = None,
                Some(term) if leading.is_none_or(|(t, _)| t != term) => {
                    leading = Some((term, now));
                }
                Some(_) => {}
            }
            let claim_at = leading.map(|(_, since)| since + self.claim_delay);
            let ends = *lease_end.borrow_and_update();
            let acting = match (claim_at, ends) {
                (Some(claim_at), Some(end)) => now >= claim_at && now < end,
                _ => false,
            };
            let wake = [claim_at, ends]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min();
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
                changed = metrics.changed() => if changed.is_err() { break },
                _ = lease_end.changed() => {}
                () = sleep_until(wake) => {}
                () = &mut confirming => break,
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        let _ = leader.send(false);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
