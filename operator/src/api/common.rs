//! Status types shared by every database kind.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One database node (pod) and what its pilot verified about it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name.
    pub name: String,
    /// Node pool the pod belongs to.
    pub pool: String,
    /// State as the node's pilot verified it in the database's own view (for Cassandra:
    /// "Up/Normal", "Up/Joining", "Up/Leaving", "Decommissioned", "Down"); "Unknown" when no
    /// pilot report is available (the operator then treats the node as not safe to act on).
    pub state: String,
    /// True when the pod is ready (pilot readiness: Up and Normal, serving clients).
    #[serde(default)]
    pub ready: bool,
    /// Database version the node runs, as reported by its pilot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The database's identity of this node (Cassandra host ID), recorded by the pilot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Anything notable (pod phase, pilot unreachable, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Replica counts of one node pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Node pool name.
    pub name: String,
    /// Desired nodes.
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
}

/// The step the operator is taking (or waiting to take), recorded before acting so a restarted
/// operator resumes the same step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CurrentOperation {
    /// What: CreateNode, ScaleUp, Decommission, Cleanup, Rollout, ...
    pub kind: String,
    /// The node (pod) concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Idempotency key of the pilot action, when one is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// Where the operation is: Waiting, Running, Verifying, Completed, Blocked.
    pub phase: String,
    /// When the operation started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Why it waits, in words, when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
    /// What happens next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// One line for `kubectl get -o wide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// What the node's pilot reports of the action now (for example its streaming progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// A finished operation, kept in the status (the most recent ones) for `kubectl describe`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    /// Decommission, Cleanup, ...
    pub kind: String,
    /// The node (pod) concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Idempotency key of the pilot action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// When the operation started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Succeeded or Failed.
    pub result: String,
    /// What was verified, or why it failed.
    pub message: String,
}
