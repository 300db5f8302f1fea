//! Typed operations: the machine-readable record of the operation in flight
//! (`status.operation`), written before acting and read back by the next reconcile. The text
//! shown to people (`status.currentOperation`) is derived from it and never parsed back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a multi-step operation does.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum OperationKind {
    /// A node leaves through a verified removal (Cassandra: decommission).
    Decommission,
    /// Nodes restart one at a time onto a new pod template.
    Restart,
    /// A restart onto a new database version, verified by the version each node reports.
    Upgrade,
    /// A node drops data it no longer owns after another joined.
    Cleanup,
    /// A node rewrites its data files in the current format after a major upgrade.
    UpgradeSSTables,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Decommission => "Decommission",
            OperationKind::Restart => "Restart",
            OperationKind::Upgrade => "Upgrade",
            OperationKind::Cleanup => "Cleanup",
            OperationKind::UpgradeSSTables => "UpgradeSSTables",
        }
    }

    /// Prefix of the pilot action IDs of this kind.
    pub fn action_prefix(self) -> &'static str {
        match self {
            OperationKind::Decommission => "decommission",
            OperationKind::Restart | OperationKind::Upgrade => "drain",
            OperationKind::Cleanup => "cleanup",
            OperationKind::UpgradeSSTables => "upgradesstables",
        }
    }

    pub fn is_roll(self) -> bool {
        matches!(self, OperationKind::Restart | OperationKind::Upgrade)
    }

    pub fn is_task(self) -> bool {
        matches!(
            self,
            OperationKind::Cleanup | OperationKind::UpgradeSSTables
        )
    }
}

/// Where an operation is, as a machine reads it. People read the same word in
/// `currentOperation.phase`, with the reason and the next step beside it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The pilot is asked to start the node's action.
    Starting,
    /// Recorded, not started: waiting until it is safe to start.
    Waiting,
    /// A node streams its data to the others (decommission).
    Streaming,
    /// The action succeeded; waiting until every view confirms it.
    Verifying,
    /// Verified: the node leaves the StatefulSet, then its pod goes.
    Removing,
    /// The removed node's volume is released.
    ReleasingVolume,
    /// The action runs on the node (cleanup, upgradesstables).
    Running,
    /// The node's pilot drains it before its pod is deleted (restart).
    Draining,
    /// Drained and verified: the pod is deleted.
    Deleting,
    /// The pod was deleted: waiting for the new one to come back healthy.
    Rejoining,
    /// The node is back: its pilot undoes what the drain changed outside the node
    /// (Elasticsearch: allocation of replicas), verified, before the next node.
    Resuming,
    /// The action failed; nothing more is done until the spec changes.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "Starting",
            Phase::Waiting => "Waiting",
            Phase::Streaming => "Streaming",
            Phase::Verifying => "Verifying",
            Phase::Removing => "Removing",
            Phase::ReleasingVolume => "ReleasingVolume",
            Phase::Running => "Running",
            Phase::Draining => "Draining",
            Phase::Deleting => "Deleting",
            Phase::Rejoining => "Rejoining",
            Phase::Resuming => "Resuming",
            Phase::Failed => "Failed",
        }
    }

    /// A decommission recorded in one of these phases was verified by every view before the
    /// operator started removing the node.
    pub fn records_verified_removal(self) -> bool {
        matches!(self, Phase::Removing | Phase::ReleasingVolume)
    }
}

/// The operation in flight, as recorded in `status.operation` before each step is taken.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    pub phase: Phase,
    /// The node (pod) the operation works on now.
    pub node: String,
    /// Its pool and ordinal.
    pub pool: String,
    pub ordinal: i32,
    /// Idempotency key of the pilot action on `node`.
    pub action_id: String,
    /// `metadata.generation` the operation was planned for.
    pub generation: i64,
    /// When the operation started (RFC 3339).
    pub started_at: String,
    /// Restart and upgrade: the template revision `node` must come back at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Upgrade: the version every node must report when it is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Upgrade: the lowest version the nodes ran when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Restart: the UID of the pod being replaced (it is deleted only with this UID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Restart and upgrade: every node to restart, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Restart and upgrade: the nodes already back, verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
}

/// A node task owed (recorded in the status until it ran): run one at a time once every node
/// is verified healthy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingTask {
    pub kind: OperationKind,
    pub node: String,
}

/// What the operator asks a node's pilot to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Leave the cluster, streaming data to the others (`force`: past the database's own
    /// replication check, only when the implementation proved the user data safe).
    Decommission {
        force: bool,
    },
    /// Stop serving and flush to disk, before the pod is deleted.
    Drain,
    /// Undo what the drain changed outside the node, once it is back.
    Resume,
    Cleanup,
    UpgradeSSTables,
}

impl NodeAction {
    pub fn is_forced(self) -> bool {
        matches!(self, NodeAction::Decommission { force: true })
    }
}

/// The action ID of an operation on a node: recorded in the status before the pilot is asked,
/// so a restarted operator resumes the same action. `salt` makes it unique per attempt: the
/// spec generation, or for a restart the target revision (a template change outside the spec,
/// such as a new pilot image, keeps the generation).
pub fn action_id(kind: OperationKind, node: &str, salt: &str) -> String {
    let id: String = format!("{}-{node}-{salt}", kind.action_prefix())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.chars().take(128).collect()
}

/// The generation salt of an action ID.
pub fn generation_salt(generation: i64) -> String {
    format!("g{generation}")
}

/// The revision salt of a restart's action ID: the hash part of a StatefulSet revision name.
pub fn revision_salt(revision: &str) -> String {
    format!("r{}", revision.rsplit('-').next().unwrap_or(revision))
}
