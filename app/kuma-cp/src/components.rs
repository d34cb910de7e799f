//! The component list (Kuma's `Component` and `NeedLeaderElection`): every part of a running
//! control plane is a named component that runs either on every replica (servers, the
//! election itself) or only on the leader (defaults, garbage collection, the zone's KDS
//! client). One manager starts them, restarts leader-only ones on every new term, stops them
//! when leadership is lost, and stops everything on shutdown or when an every-replica
//! component fails.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Any component's failure; components come from every crate, each with its own error enum.
pub type ComponentError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a component runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    EveryReplica,
    /// Started when this replica becomes the leader, dropped (cancelled) when it stops being
    /// one, started afresh on the next term.
    LeaderOnly,
}

pub(crate) type Work = BoxFuture<'static, Result<(), ComponentError>>;

enum Start {
    Once(Work),
    EachTerm(Box<dyn Fn() -> Work + Send + Sync>),
}

pub struct Component {
    name: &'static str,
    start: Start,
}

impl Component {
    /// Runs `work` once on every replica. It should return when the manager's shutdown signal
    /// ([`Manager::shutdown_signal`]) turns true; an error stops the control plane.
    pub fn every_replica<E>(
        name: &'static str,
        work: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> Self
    where
        E: Into<ComponentError>,
    {
        Component {
            name,
            start: Start::Once(Box::pin(async move { work.await.map_err(Into::into) })),
        }
    }

    /// Runs what `make` returns whenever this replica leads. Work that ends with an error is
    /// retried with backoff within the term; work that ends well is done until the next term.
    pub fn leader_only<F, Fut, E>(name: &'static str, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<ComponentError>,
    {
        Component {
            name,
            start: Start::EachTerm(Box::new(move || {
                let work = make();
                Box::pin(async move { work.await.map_err(Into::into) })
            })),
        }
    }

    pub fn placement(&self) -> Placement {
        match self.start {
            Start::Once(_) => Placement::EveryReplica,
            Start::EachTerm(_) => Placement::LeaderOnly,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("component {name} failed")]
    Failed {
        name: &'static str,
        #[source]
        source: ComponentError,
    },
    #[error("component {name} panicked")]
    Panicked {
        name: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Backoff between retries of failed leader-only work.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

pub struct Manager {
    leader: watch::Receiver<bool>,
    shutdown: Arc<watch::Sender<bool>>,
    tasks: JoinSet<Result<(), ComponentError>>,
    names: HashMap<tokio::task::Id, &'static str>,
    started: Vec<(&'static str, Placement)>,
}

impl Manager {
    /// A manager whose leader-only components follow `leader` and which stops everything when
    /// `shutdown` turns true (it also sends true there itself when a component fails).
    pub fn new(leader: watch::Receiver<bool>, shutdown: Arc<watch::Sender<bool>>) -> Self {
        Manager {
            leader,
            shutdown,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            started: Vec::new(),
        }
    }

    /// What every-replica components watch to know when to stop.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts a component now (components may be added while others already run: some wait
    /// for what the leader creates first).
    pub fn start(&mut self, component: Component) {
        let name = component.name;
        self.started.push((name, component.placement()));
        let handle = match component.start {
            Start::Once(work) => self.tasks.spawn(work),
            Start::EachTerm(make) => {
                let (leader, shutdown) = (self.leader.clone(), self.shutdown.subscribe());
                self.tasks.spawn(async move {
                    follow_leadership(name, make, leader, shutdown).await;
                    Ok(())
                })
            }
        };
        self.names.insert(handle.id(), name);
    }

    /// The components started so far, in order.
    pub fn components(&self) -> &[(&'static str, Placement)] {
        &self.started
    }

    /// Runs until shutdown or until an every-replica component fails, then waits for every
    /// component to stop. Returns the first failure.
    pub async fn run(mut self) -> Result<(), ManagerError> {
        let mut shutdown = self.shutdown.subscribe();
        let mut failure = None;
        while failure.is_none() {
            let joined = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                joined = self.tasks.join_next_with_id() => joined,
            };
            match joined {
                Some(joined) => failure = self.outcome(joined),
                // Nothing runs (yet): only shutdown can end the wait.
                None => {
                    let _ = shutdown.wait_for(|s| *s).await;
                    break;
                }
            }
        }
        if let Some(e) = &failure {
            tracing::error!(error = %model::error_chain(e), "stopping the control plane");
        }
        let _ = self.shutdown.send(true);
        while let Some(joined) = self.tasks.join_next_with_id().await {
            if let Some(e) = self.outcome(joined) {
                tracing::warn!(error = %model::error_chain(&e), "while stopping");
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn outcome(
        &self,
        joined: Result<(tokio::task::Id, Result<(), ComponentError>), tokio::task::JoinError>,
    ) -> Option<ManagerError> {
        let name_of = |id| self.names.get(&id).copied().unwrap_or("unknown");
        match joined {
            Ok((id, Ok(()))) => {
                tracing::debug!(component = name_of(id), "component stopped");
                None
            }
            Ok((id, Err(source))) => Some(ManagerError::Failed {
                name: name_of(id),
                source,
            }),
            Err(source) => Some(ManagerError::Panicked {
                name: name_of(source.id()),
                source,
            }),
        }
    }
}

/// One leader-only component's life: each term it runs (retried on failure) until the term
/// ends, and it is dropped, that is cancelled, as soon as leadership is lost.
pub(crate) async fn follow_leadership(
    name: &'static str,
    make: Box<dyn Fn() -> Work + Send + Sync>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // Each wait is wrapped so no `watch::Ref` (not Send) lives across an await.
        tokio::select! {
            ok = async { leader.wait_for(|l| *l).await.is_ok() } => if !ok { return },
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
        tracing::info!(component = name, "starting leader-only component");
        let mut lost = leader.clone();
        let term = async {
            let mut delay = RETRY_FIRST;
            loop {
                match make().await {
                    Ok(()) => return,
                    Err(e) => {
                        let error = model::error_chain(e.as_ref());
                        tracing::warn!(component = name, %error, retry_in = ?delay, "leader-only component failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            }
        };
        tokio::select! {
            () = term => {
                // Done for this term (one-shot work): wait for the next one.
                tokio::select! {
                    () = async { let _ = leader.wait_for(|l| !*l).await; } => {}
                    () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                }
            }
            () = async { let _ = lost.wait_for(|l| !*l).await; } => {
                tracing::info!(component = name, "leadership lost: stopped leader-only component");
            }
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn manager() -> (Manager, watch::Sender<bool>, Arc<watch::Sender<bool>>) {
        let (leader_tx, leader_rx) = watch::channel(false);
        let shutdown = Arc::new(watch::Sender::new(false));
        (
            Manager::new(leader_rx, shutdown.clone()),
            leader_tx,
            shutdown,
        )
    }

    /// Counts starts and currently running instances of a never-ending component.
    fn counted(starts: &Arc<AtomicUsize>, running: &Arc<AtomicUsize>) -> Component {
        let (s, r) = (starts.clone(), running.clone());
        Component::leader_only("counted", move || {
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
                std::future::pending::<Result<(), ComponentError>>().await
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn leader_only_components_follow_leadership() {
        let (mut m, leader, shutdown) = manager();
        let (starts, running) = (Arc::default(), Arc::default());
        m.start(counted(&starts, &running));
        assert_eq!(m.components(), &[("counted", Placement::LeaderOnly)]);
        let run = tokio::spawn(m.run());
        let state = || {
            (
                starts.load(Ordering::SeqCst),
                running.load(Ordering::SeqCst),
            )
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state(), (0, 0), "started before this replica led");
        leader.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state(), (1, 1));
        leader.send(false).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state(), (1, 0), "kept running after leadership was lost");
        leader.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(state(), (2, 1), "not restarted on the new term");
        shutdown.send(true).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(state(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_leader_only_work_is_retried_within_the_term() {
        let (mut m, leader, shutdown) = manager();
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = attempts.clone();
        m.start(Component::leader_only("flaky", move || {
            let a = a.clone();
            async move {
                match a.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(ComponentError::from("not yet")),
                    _ => Ok(()),
                }
            }
        }));
        let run = tokio::spawn(m.run());
        leader.send(true).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            3,
            "two failures, then done"
        );
        shutdown.send(true).unwrap();
        run.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_replica_component_stops_the_others_and_is_named() {
        let (mut m, _leader, _shutdown) = manager();
        let mut stop = m.shutdown_signal();
        let stopped = Arc::new(AtomicUsize::new(0));
        let s = stopped.clone();
        m.start(Component::every_replica("server", async move {
            let _ = stop.wait_for(|v| *v).await;
            s.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ComponentError>(())
        }));
        m.start(Component::every_replica("broken", async {
            Err::<(), _>(std::io::Error::other("port gone"))
        }));
        let err = m.run().await.unwrap_err();
        assert!(
            matches!(err, ManagerError::Failed { name: "broken", .. }),
            "{err:?}"
        );
        assert_eq!(
            model::error_chain(&err),
            "component broken failed: port gone"
        );
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            1,
            "the server was not stopped"
        );
    }
}
