//! Leader election. Replicas of one role share a store; exactly one of them runs the
//! leader-only components (defaults, garbage collection, later the zone's KDS client).
//!
//! Safety rule for every elector: this replica publishes `false` *before* its lease can expire
//! for the others, so two replicas never act as leader at once. Electors measure their own
//! deadline from before the renewal request was sent, on the local monotonic clock.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

/// How long a lease lasts without renewal, and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    /// A SIGKILLed leader is replaced within `ttl + renew_every` (under 10 s).
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_secs(5),
            renew_every: Duration::from_secs(1),
        }
    }
}

impl LeaseTiming {
    /// The local deadline after a renewal sent at `sent`: leadership is given up at this point
    /// unless a newer renewal succeeded. A margin covers clock-rate differences.
    pub fn self_deadline(&self, sent: tokio::time::Instant) -> tokio::time::Instant {
        sent + self.ttl.mul_f64(0.8)
    }
}

#[async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// Campaigns until `shutdown` turns true, keeping `leader` current. On shutdown a held
    /// lease is released so another replica takes over at once.
    async fn campaign(
        &self,
        instance_id: &str,
        leader: watch::Sender<bool>,
        shutdown: watch::Receiver<bool>,
    );
}

/// The memory store has one replica by construction: it always leads.
pub struct AlwaysLeader;

#[async_trait]
impl LeaderElector for AlwaysLeader {
    async fn campaign(
        &self,
        _: &str,
        leader: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _ = leader.send(true);
        let _ = shutdown.wait_for(|s| *s).await;
        let _ = leader.send(false);
    }
}
