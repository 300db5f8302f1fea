//! The operator's view of its pilots: one [`PilotHub`] per cluster (each cluster has its own CA),
//! one watch stream per pod, and the verified state folded into [`NodeReport`]s.

use std::collections::HashMap;
use std::sync::Mutex;

use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{CassandraOperationMode, NodeStatus, ProcessState};
use tokio::sync::broadcast;

use crate::context::{NodeReport, PilotReports};
use crate::pilot_client::{ClientTls, PilotHub, PilotTarget, PodKey};
use crate::planner::VerifiedState;

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
    Some(NodeReport {
        state,
        version: (!status.version.is_empty()).then(|| status.version.clone()),
        host_id,
    })
}
