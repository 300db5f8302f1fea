//! The operator's view of its pilots: one [`PilotHub`] per cluster (each cluster has its own CA),
//! one watch stream per pod, and the verified state folded into [`NodeReport`]s.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{
    ActionPhase, ActionSpec, ActionState, CassandraOperationMode, NodeStatus, PeerState,
    ProcessState,
};
use tokio::sync::broadcast;

use crate::context::{NodeReport, PilotAddress, PilotReports};
use crate::pilot_client::{ClientTls, PilotHub, PilotTarget, PodKey};
use crate::planner::{ActionProgress, KeyspaceReplication, VerifiedState};

/// A pod whose pilot should be watched.
pub struct PodAddress {
    pub name: String,
    pub ip: String,
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
    fn report(&self, namespace: &str, pod: &str) -> Option<NodeReport> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let key = PodKey {
            namespace: namespace.to_string(),
            name: pod.to_string(),
        };
        hubs.iter()
            .filter(|((ns, _), _)| ns == namespace)
            .find_map(|(_, hub)| hub.view(&key))
            .and_then(|view| view.current().and_then(node_report))
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

/// What a pilot's status proves about its node; `None` when it proves nothing (unknown).
pub fn node_report(status: &NodeStatus) -> Option<NodeReport> {
    let state = match (status.process_state(), status.detail.as_ref()) {
        (ProcessState::NotRunning, _) => VerifiedState::Down,
        (_, Some(Detail::Cassandra(c))) => match c.operation_mode() {
            CassandraOperationMode::Normal => VerifiedState::UpNormal,
            CassandraOperationMode::Starting | CassandraOperationMode::Joining => {
                VerifiedState::Joining
            }
            CassandraOperationMode::Leaving => VerifiedState::Leaving,
            CassandraOperationMode::Decommissioned => VerifiedState::Decommissioned,
            CassandraOperationMode::Draining | CassandraOperationMode::Drained => {
                VerifiedState::Down
            }
            _ => return None,
        },
        _ => return None,
    };
    let host_id = match status.detail.as_ref() {
        Some(Detail::Cassandra(c)) if !c.host_id.is_empty() => Some(c.host_id.clone()),
        _ => None,
    };
    let cassandra = match status.detail.as_ref() {
        Some(Detail::Cassandra(c)) => Some(c),
        _ => None,
    };
    // Only peers with a ring state are members; a peer only gossiping is not. A member whose
    // host ID this node does not know makes the whole view unknown (it could be any node).
    let ring = cassandra.and_then(|c| {
        c.peers
            .iter()
            .filter(|p| p.state() != PeerState::Unspecified)
            .map(|p| (!p.host_id.is_empty()).then(|| p.host_id.clone()))
            .collect::<Option<_>>()
    });
    let keyspaces = cassandra.filter(|c| c.keyspaces_known).map(|c| {
        c.keyspaces
            .iter()
            .map(|k| KeyspaceReplication {
                name: k.name.clone(),
                replication_factor: k.replication_factor,
                system: k.system,
            })
            .collect()
    });
    Some(NodeReport {
        state,
        version: (!status.version.is_empty()).then(|| status.version.clone()),
        host_id,
        ring,
        data_bytes: status.data_bytes,
        free_disk_bytes: status.free_disk_bytes,
        keyspaces,
    })
}
