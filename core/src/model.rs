//! What the planner looks at: the desired pools and the observed cluster, reduced to plain data
//! by the operator's observe phase. Database-specific readings ride along in `D`, the detail
//! type of a [`crate::Database`] implementation.

use std::collections::BTreeMap;

use crate::operation::Operation;

/// Desired shape of one node pool, derived from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPool {
    pub name: String,
    pub replicas: i32,
    /// Removed from the spec while its StatefulSet still exists: its nodes leave through
    /// verified removals (desired 0), then the StatefulSet is deleted.
    pub retiring: bool,
}

impl DesiredPool {
    pub fn new(name: impl Into<String>, replicas: i32) -> Self {
        DesiredPool {
            name: name.into(),
            replicas,
            retiring: false,
        }
    }
}

/// What the database's own view says of a node, as verified by its pilot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// A healthy, serving member in its own view (Cassandra: Up/Normal).
    Healthy,
    /// Joining the cluster (streaming data in).
    Joining,
    /// Leaving the cluster (streaming data out).
    Leaving,
    /// Left the cluster; holds none of its data.
    Left,
    /// The database process is down, stopped or drained, or unreachable by its pilot.
    Down,
}

/// A node's state as its pilot verified it, for the pod incarnation observed (a report from a
/// previous pod of the same name is never taken).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport<D> {
    /// `None` when the report proves no state (the operator then treats the node as unknown).
    pub health: Option<Health>,
    pub version: Option<String>,
    /// The pod template revision the pilot was started from.
    pub revision: Option<String>,
    /// Bytes of data the node holds, as the database reports it.
    pub data_bytes: Option<u64>,
    /// Free bytes on the node's data volume.
    pub free_disk_bytes: Option<u64>,
    /// What only its database knows (Cassandra: ring view, keyspaces).
    pub detail: D,
}

/// One pod of a pool as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedNode<D> {
    pub name: String,
    pub ordinal: i32,
    /// Pod Ready condition (its readiness probe is the pilot's check).
    pub pod_ready: bool,
    /// The pod's UID: tells one incarnation of a pod name from the next.
    pub pod_uid: Option<String>,
    /// The pod's template revision (`controller-revision-hash`).
    pub revision: Option<String>,
    /// The pilot's latest verified report for this pod; `None` when there is none.
    pub report: Option<NodeReport<D>>,
    /// The database's identity of the node (Cassandra host ID), kept from earlier reports.
    pub identity: Option<String>,
}

impl<D> ObservedNode<D> {
    pub fn health(&self) -> Option<Health> {
        self.report.as_ref().and_then(|r| r.health)
    }

    /// Ready to be counted on: pod ready and no pilot report contradicting health.
    pub fn is_ready(&self) -> bool {
        self.pod_ready && matches!(self.health(), None | Some(Health::Healthy))
    }

    /// Healthy in the database's own view, proven by a current pilot report (never assumed).
    pub fn is_verified_healthy(&self) -> bool {
        self.pod_ready && self.health() == Some(Health::Healthy)
    }

    pub fn version(&self) -> Option<&str> {
        self.report.as_ref().and_then(|r| r.version.as_deref())
    }
}

/// One pool's StatefulSet as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedPool<D> {
    /// `spec.replicas` of the StatefulSet, or `None` when it does not exist yet.
    pub statefulset_replicas: Option<i32>,
    /// Whether the StatefulSet controller has caught up with its latest spec; decisions on a
    /// stale view wait.
    pub statefulset_current: bool,
    /// The template revision new pods get (`status.updateRevision`).
    pub update_revision: Option<String>,
    pub nodes: Vec<ObservedNode<D>>,
    /// Data volumes of the pool by ordinal, including those of removed nodes.
    pub volumes: BTreeMap<i32, VolumeState>,
}

impl<D> ObservedPool<D> {
    pub fn node(&self, ordinal: i32) -> Option<&ObservedNode<D>> {
        self.nodes.iter().find(|n| n.ordinal == ordinal)
    }

    /// Whether a node runs an older template than the pool's current one.
    pub fn is_outdated(&self, node: &ObservedNode<D>) -> bool {
        match (&self.update_revision, &node.revision) {
            (Some(want), Some(has)) => want != has,
            _ => false,
        }
    }
}

/// A node's data volume (PVC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeState {
    /// Retained after its node was decommissioned: a new node must not start on it.
    pub decommissioned: bool,
}

/// What a pilot says of an action, by ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionProgress {
    /// The pilot answered that it never received this action.
    NotStarted,
    /// Accepted or running; the pilot's message and rough progress.
    Running {
        message: String,
        percent: Option<u32>,
    },
    /// The pilot verified the action's end state; `verified` lists its checks.
    Succeeded { verified: String },
    /// The action failed or its end state could not be verified.
    Failed { error: String },
    /// The pilot could not be asked (unreachable, pod gone, ...): fail closed.
    Unknown { why: String },
}

/// What happens to a removed node's PVC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VolumePolicy {
    #[default]
    Delete,
    Retain,
}

/// The operation recorded in the status and what the pilot now says of its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub operation: Operation,
    pub action: ActionProgress,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<D> {
    pub pools: BTreeMap<String, ObservedPool<D>>,
    /// `metadata.generation` of the cluster (part of new action IDs).
    pub generation: i64,
    /// The version the spec asks for.
    pub desired_version: String,
    /// The operation recorded in the status, if one is under way.
    pub in_flight: Option<InFlight>,
    /// Node tasks owed, in order (e.g. cleanups after a join), from the status.
    pub pending_tasks: Vec<crate::operation::PendingTask>,
    pub volume_policy: VolumePolicy,
}

impl<D> Default for Observed<D> {
    fn default() -> Self {
        Observed {
            pools: BTreeMap::new(),
            generation: 0,
            desired_version: String::new(),
            in_flight: None,
            pending_tasks: Vec::new(),
            volume_policy: VolumePolicy::Delete,
        }
    }
}

impl<D> Observed<D> {
    pub fn replicas(&self, pool: &str) -> i32 {
        self.pools
            .get(pool)
            .and_then(|p| p.statefulset_replicas)
            .unwrap_or(0)
    }

    /// The nodes of the given pools, in pool order.
    pub fn nodes_of<'a>(
        &'a self,
        desired: &'a [DesiredPool],
    ) -> impl Iterator<Item = &'a ObservedNode<D>> + 'a {
        desired
            .iter()
            .filter_map(|p| self.pools.get(&p.name))
            .flat_map(|p| p.nodes.iter())
    }

    pub fn find_node(&self, name: &str) -> Option<(&str, &ObservedNode<D>)> {
        self.pools.iter().find_map(|(pool, p)| {
            p.nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| (pool.as_str(), n))
        })
    }
}
