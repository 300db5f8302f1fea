//! The operator's view of its pilots: one [`PilotHub`] per cluster (each cluster has its own CA),
//! one watch stream per pod, and the verified state folded into [`NodeReport`]s.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use stateward_core::model::ActionProgress;
use stateward_proto::v1::{ActionPhase, ActionSpec, ActionState, NodeStatus};
use tokio::sync::broadcast;

use crate::metrics::PilotSample;
use crate::pilot_client::{ClientTls, PilotHub, PilotTarget, PodKey};

/// A pod whose pilot should be watched.
pub struct PodAddress {
    pub name: String,
    pub ip: String,
}

/// Identifies a pod's pilot: namespace, cluster and pod name.
#[derive(Clone, Copy, Debug)]
pub struct PilotAddress<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub pod: &'a str,
}

/// Source of pilot reports (the pilot client keeps one watch stream per pod). Database-neutral:
/// it hands out the pilot's verified `NodeStatus`; each database module reads its own detail.
pub trait PilotReports: Send + Sync {
    /// The latest verified status of a pod's pilot, or `None` when there is none (never
    /// reached, or the stream is down): callers treat `None` as unknown, and take a status only
    /// when its `pod_uid` is the pod they observe.
    fn status(&self, namespace: &str, pod: &str) -> Option<NodeStatus>;

    /// Keep one watch stream to the pilot of each of `pods` (and drop the others of the
    /// cluster), authenticating with the cluster's operator client certificate.
    fn track(&self, _namespace: &str, _cluster: &str, _tls: ClientTls, _pods: &[PodAddress]) {}

    /// Stop watching a deleted cluster's pilots and drop what is known of them.
    fn forget(&self, _namespace: &str, _cluster: &str) {}

    /// What the pod's pilot says of an action, one call; unknown when it cannot be asked.
    fn action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
    ) -> BoxFuture<'a, ActionProgress>;

    /// Every watched pilot's connection state, for metrics.
    fn samples(&self) -> Vec<PilotSample> {
        vec![]
    }

    /// Asks the pod's pilot to start an action (idempotent by ID), without waiting for its end.
    fn start_action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
        spec: ActionSpec,
    ) -> BoxFuture<'a, Result<ActionProgress, String>>;
}

/// Used until pilots are connected: every node is unknown to the pilot view.
pub struct NoPilotReports;

impl PilotReports for NoPilotReports {
    fn status(&self, _namespace: &str, _pod: &str) -> Option<NodeStatus> {
        None
    }

    fn action<'a>(
        &'a self,
        _pilot: PilotAddress<'a>,
        _action_id: &'a str,
    ) -> BoxFuture<'a, ActionProgress> {
        Box::pin(async {
            ActionProgress::Unknown {
                why: "no pilot connection".into(),
            }
        })
    }

    fn start_action<'a>(
        &'a self,
        _pilot: PilotAddress<'a>,
        _action_id: &'a str,
        _spec: ActionSpec,
    ) -> BoxFuture<'a, Result<ActionProgress, String>> {
        Box::pin(async { Err("no pilot connection".to_string()) })
    }
}

/// Identifies a cluster: namespace and name.
pub type ClusterKey = (String, String);

pub struct PilotRegistry {
    hubs: Mutex<HashMap<ClusterKey, PilotHub>>,
    changes: broadcast::Sender<ClusterKey>,
}

impl Default for PilotRegistry {
    fn default() -> Self {
        PilotRegistry {
            hubs: Mutex::new(HashMap::new()),
            changes: broadcast::channel(256).0,
        }
    }
}

impl PilotRegistry {
    /// Clusters whose pilot view changed: reconcile them.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterKey> {
        self.changes.subscribe()
    }

    fn hub(&self, key: &ClusterKey, tls: ClientTls) -> PilotHub {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hub) = hubs.get(key) {
            hub.set_tls(tls);
            return hub.clone();
        }
        let hub = PilotHub::new(tls);
        let mut pod_changes = hub.subscribe();
        let changes = self.changes.clone();
        let cluster = key.clone();
        tokio::spawn(async move {
            while let Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) = pod_changes.recv().await
            {
                let _ = changes.send(cluster.clone());
            }
        });
        hubs.insert(key.clone(), hub.clone());
        hub
    }

    /// The hub and watched address of a pod's pilot.
    fn locate(&self, pilot: PilotAddress<'_>) -> Result<(PilotHub, PilotTarget), String> {
        let hub = self
            .hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pilot.namespace.to_string(), pilot.cluster.to_string()))
            .cloned()
            .ok_or_else(|| format!("no pilot connection for cluster {}", pilot.cluster))?;
        let target = hub
            .target(&PodKey {
                namespace: pilot.namespace.to_string(),
                name: pilot.pod.to_string(),
            })
            .ok_or_else(|| format!("the pilot of {} is not watched (no pod IP)", pilot.pod))?;
        Ok((hub, target))
    }
}

/// The planner's reading of an action's state.
fn progress_of(state: &ActionState) -> ActionProgress {
    match state.phase() {
        ActionPhase::Succeeded => ActionProgress::Succeeded {
            verified: state
                .result
                .iter()
                .flat_map(|r| &r.verifications)
                .filter(|v| v.passed)
                .map(|v| v.check.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
        ActionPhase::Failed => ActionProgress::Failed {
            error: state
                .result
                .as_ref()
                .map(|r| r.error.clone())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| state.message.clone()),
        },
        ActionPhase::Pending | ActionPhase::Running => ActionProgress::Running {
            message: state.message.clone(),
            percent: state.progress_percent,
        },
        ActionPhase::Unspecified => ActionProgress::Unknown {
            why: "the pilot reports no phase for the action".into(),
        },
    }
}

impl PilotReports for PilotRegistry {
    fn status(&self, namespace: &str, pod: &str) -> Option<NodeStatus> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let key = PodKey {
            namespace: namespace.to_string(),
            name: pod.to_string(),
        };
        hubs.iter()
            .filter(|((ns, _), _)| ns == namespace)
            .find_map(|(_, hub)| hub.view(&key))
            .and_then(|view| view.current().cloned())
    }

    fn samples(&self) -> Vec<PilotSample> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let mut samples = Vec::new();
        for ((namespace, cluster), hub) in hubs.iter() {
            samples.extend(hub.views().into_iter().map(|(pod, view)| PilotSample {
                namespace: namespace.clone(),
                cluster: cluster.clone(),
                pod: pod.name,
                connected: view.current().is_some(),
                report_age: view.last_message_at.map(|t| t.elapsed()),
            }));
        }
        samples
    }

    fn track(&self, namespace: &str, cluster: &str, tls: ClientTls, pods: &[PodAddress]) {
        let key = (namespace.to_string(), cluster.to_string());
        let hub = self.hub(&key, tls);
        let server_name = stateward_proto::pilot_server_name(cluster, namespace);
        for pod in pods {
            hub.ensure_watch(PilotTarget {
                pod: PodKey {
                    namespace: namespace.to_string(),
                    name: pod.name.clone(),
                },
                endpoint: format!("https://{}:{}", pod.ip, stateward_proto::PILOT_GRPC_PORT),
                server_name: server_name.clone(),
            });
        }
        hub.retain(|p| pods.iter().any(|pod| pod.name == p.name));
    }

    fn forget(&self, namespace: &str, cluster: &str) {
        let key = (namespace.to_string(), cluster.to_string());
        let removed = self
            .hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        // Aborting the watch tasks drops their handles on the hub; its change channel then
        // closes and the task forwarding its changes ends.
        if let Some(hub) = removed {
            hub.retain(|_| false);
        }
    }

    fn action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
    ) -> BoxFuture<'a, ActionProgress> {
        Box::pin(async move {
            let (hub, target) = match self.locate(pilot) {
                Ok(found) => found,
                Err(why) => return ActionProgress::Unknown { why },
            };
            match hub.get_action(&target, action_id).await {
                Ok(Some(state)) => progress_of(&state),
                Ok(None) => ActionProgress::NotStarted,
                Err(e) => ActionProgress::Unknown {
                    why: format!("asking the pilot of {}: {e}", pilot.pod),
                },
            }
        })
    }

    fn start_action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
        spec: ActionSpec,
    ) -> BoxFuture<'a, Result<ActionProgress, String>> {
        Box::pin(async move {
            let (hub, target) = self.locate(pilot)?;
            hub.start_action(&target, action_id, spec)
                .await
                .map(|state| progress_of(&state))
                .map_err(|e| format!("starting {action_id} on {}: {e}", pilot.pod))
        })
    }
}
