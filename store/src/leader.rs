//! Leader election. Replicas of one role share a store; exactly one of them runs the
//! leader-only components (defaults, garbage collection, later the zone's KDS client).
//!
//! Safety rule for every elector: this replica publishes `false` *before* its lease can expire
//! for the others, so two replicas never act as leader at once. Electors measure their own
//! deadline from before the renewal request was sent, on the local monotonic clock.

use std::future::Future;
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

/// Runs `work` whenever this replica leads and drops it (cancelling it) as soon as leadership
/// is lost or shutdown begins. `work` is started afresh on every new term.
pub async fn run_leader_only<F, Fut>(
    name: &str,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        // Each wait is wrapped so no `watch::Ref` (not Send) lives across an await.
        tokio::select! {
            ok = async { leader.wait_for(|l| *l).await.is_ok() } => if !ok { return },
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
        tracing::info!(component = name, "starting leader-only component");
        let mut lost = leader.clone();
        tokio::select! {
            () = work() => {
                // Finished on its own (one-shot work): wait for the next term.
                let _ = leader.wait_for(|l| !*l).await;
            }
            () = async { let _ = lost.wait_for(|l| !*l).await; } => {
                tracing::info!(component = name, "leadership lost: stopped leader-only component");
            }
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn leader_only_work_follows_leadership() {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let (s, r) = (starts.clone(), running.clone());
        let task = tokio::spawn(async move {
            run_leader_only("test", leader_rx, shutdown_rx, move || {
                let (s, r) = (s.clone(), r.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    r.fetch_add(1, Ordering::SeqCst);
                    struct Guard(Arc<AtomicUsize>);
                    impl Drop for Guard {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _g = Guard(r);
                    std::future::pending::<()>().await;
                }
            })
            .await
        });
        tokio::task::yield_now().await;
        assert_eq!(starts.load(Ordering::SeqCst), 0);
        leader_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            (
                starts.load(Ordering::SeqCst),
                running.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        leader_tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "work kept running after leadership was lost"
        );
        leader_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            (
                starts.load(Ordering::SeqCst),
                running.load(Ordering::SeqCst)
            ),
            (2, 1)
        );
        shutdown_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}
