//! The status model every database shares, and its pure computation:
//! (previous status, plan, observed nodes) → the status that tells people what is happening,
//! what blocks and what comes next, plus the machine-readable operation record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::operation::{Operation, OperationKind, PendingTask, Phase};
use crate::planner::{Finished, OperationStep, Plan, Refusal, Step};
use crate::roll::version_key;

/// How many finished operations the status keeps.
pub const HISTORY_LIMIT: usize = 20;

/// A condition, as Kubernetes' API conventions define it (`metav1.Condition`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Available, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase word for machines.
    pub reason: String,
    /// What it means, for people.
    pub message: String,
    /// The metadata.generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

/// One database node (pod) and what its pilot verified about it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
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
    /// True when the pod is ready (pilot readiness: healthy and serving clients).
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
    /// The pod template revision the pod runs (`controller-revision-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// True when the pod runs an older template than its pool's: a restart is owed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outdated: bool,
    /// Anything notable (pod phase, pilot unreachable, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Elasticsearch: the node's roles as it reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub roles: Vec<String>,
    /// Elasticsearch: shard copies the node holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i64>,
    /// Elasticsearch: true on the elected master.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elected_master: bool,
    /// Free bytes on the node's data volume, as its pilot measured it, rounded down to less
    /// than 1% (so the status is not rewritten at every byte written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_disk_bytes: Option<i64>,
}

/// A byte count cut to its 8 most significant bits: less than 1% below it. What the status and
/// the wake-ups see of figures that move all the time (free disk, a node's load); decisions
/// read the exact figure.
pub fn coarse_bytes(bytes: u64) -> u64 {
    let bits = u64::BITS - bytes.leading_zeros();
    let shift = bits.saturating_sub(8);
    (bytes >> shift) << shift
}

/// Who may log in to the database, as the nodes' answers to real logins show.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationStatus {
    /// "Password" (a login is required) or "Off" (any client that reaches the port is in, as
    /// the spec asks).
    pub mode: String,
    /// The Secret with the superuser's `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret: Option<String>,
    /// True once every running node refuses a login without credentials and the default
    /// role's, and accepts the superuser's.
    #[serde(default)]
    pub ready: bool,
    /// Replicas of the authentication data in the datacenter (Cassandra `system_auth`), as
    /// the nodes' schema shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<i32>,
    /// What is missing or wrong until it is ready, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Replica counts of one node pool.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Node pool name.
    #[schemars(length(max = 64))]
    pub name: String,
    /// Desired nodes.
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
}

/// The step the operator is taking (or waiting to take), in words for people; derived from
/// `status.operation` and the plan, never read back to decide anything.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CurrentOperation {
    /// What: CreatePool, ScaleUp, ScaleDown, Decommission, Cleanup, Restart, Upgrade, ...
    pub kind: String,
    /// The node (pod) concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Idempotency key of the pilot action, when one is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// Where the operation is: Running, Waiting, Streaming, Draining, Rejoining, Blocked, ...
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
    /// Progress: what the node's pilot reports of the action, or how many nodes are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// A finished operation (for a restart: one node's part of it), kept for `kubectl describe`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    /// Decommission, Cleanup, Restart, Upgrade, UpgradeSSTables.
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

/// Observed state of a cluster, written only by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The metadata.generation this status describes; older means the operator has not yet
    /// acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: Available, Progressing (reason Paused when spec.paused), Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Creating, Ready, Scaling, Restarting, Upgrading, Degraded, Blocked or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready nodes / desired nodes, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Pods that exist (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the cluster's pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The lowest database version any node reports (what the cluster as a whole runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Elasticsearch: the cluster health the nodes report ("green", "yellow", "red").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Elasticsearch: the cluster's UUID, once it formed. Kept: a cluster that formed once is
    /// never bootstrapped again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uuid: Option<String>,
    /// Cassandra: who may log in over CQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationStatus>,
    /// The operation in flight, for machines: written before each of its steps is taken and
    /// read back by the next reconcile, so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// What the operator is doing or waiting for, what blocks and what comes next, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_operation: Option<CurrentOperation>,
    /// Every node and what its pilot verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// Per node pool counts (bounded, so apply-time rules over it stay within their cost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pools: Vec<PoolStatus>,
    /// Nodes that still have to drop data they no longer own after a node joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_cleanup: Vec<String>,
    /// Nodes that still have to rewrite their data files after a major-version upgrade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_sstable_upgrades: Vec<String>,
    /// The last finished operations (one record per node for restarts), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<OperationRecord>,
}

impl ClusterStatus {
    /// The node tasks still owed, in the order they run: cleanups, then SSTable upgrades.
    pub fn pending_tasks(&self) -> Vec<PendingTask> {
        let cleanup = self.pending_cleanup.iter().map(|n| PendingTask {
            kind: OperationKind::Cleanup,
            node: n.clone(),
        });
        let upgrades = self.pending_sstable_upgrades.iter().map(|n| PendingTask {
            kind: OperationKind::UpgradeSSTables,
            node: n.clone(),
        });
        cleanup.chain(upgrades).collect()
    }
}

/// Inputs besides the plan, already reduced to plain data by the observe phase.
pub struct StatusInputs<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a ClusterStatus>,
    pub plan: &'a Plan,
    pub nodes: Vec<NodeStatus>,
    pub pools: Vec<PoolStatus>,
    pub selector: String,
    /// Pod name of the node a step concerns (for AddNode: the pod that will be created).
    pub step_node: Option<String>,
    /// Now, RFC 3339 in whole seconds: statuses compare equal across resyncs within a second.
    pub now: String,
    /// What the removed node's volume became, for the history ("PVC x deleted").
    pub volume_note: Option<String>,
    /// The task the nodes already there owe when a node joins a serving cluster.
    pub after_join: Option<OperationKind>,
    /// A fault outside the planner's view that the cluster cannot heal by itself.
    pub fault: Option<crate::words::Fault>,
}

pub fn build(inputs: StatusInputs<'_>) -> ClusterStatus {
    let desired: i32 = inputs.pools.iter().map(|p| p.desired).sum();
    let replicas: i32 = inputs.pools.iter().map(|p| p.replicas).sum();
    let ready: i32 = inputs.pools.iter().map(|p| p.ready_replicas).sum();
    let previous_op = inputs.previous.and_then(|s| s.current_operation.as_ref());
    let step = &inputs.plan.step;
    let refusal = inputs.plan.refusal.as_ref();

    let operation = record(step, inputs.previous, &inputs.now);
    let current = crate::words::current_operation(
        step,
        refusal,
        operation.as_ref(),
        previous_op,
        inputs.step_node.clone(),
        &inputs.now,
    );
    // "Creating" lasts until the cluster is Ready once; afterwards a shortfall is Scaling or
    // Degraded.
    let never_ready = inputs
        .previous
        .is_none_or(|s| matches!(s.phase.as_deref(), None | Some("Creating")));
    let busy_node = operation.as_ref().map(|o| o.node.as_str());
    let unready: Vec<&NodeStatus> = inputs
        .nodes
        .iter()
        .filter(|n| !n.ready && Some(n.name.as_str()) != busy_node)
        .collect();
    let failed = operation.as_ref().filter(|o| o.phase == Phase::Failed);
    let phase = phase_word(
        step,
        refusal,
        operation.as_ref(),
        failed.is_some(),
        ready,
        desired,
        !unready.is_empty(),
        never_ready,
    );

    let conditions = crate::words::conditions(crate::words::ConditionInputs {
        step,
        refusal,
        operation: operation.as_ref(),
        current: current.as_ref(),
        unready: &unready,
        never_ready,
        ready,
        desired,
        previous: inputs
            .previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        generation: inputs.generation,
        now: &inputs.now,
        fault: inputs.fault.as_ref(),
    });

    let version =
        lowest_version(&inputs.nodes).or_else(|| inputs.previous.and_then(|s| s.version.clone()));
    let mut next = ClusterStatus {
        observed_generation: inputs.generation,
        conditions,
        phase: Some(phase.to_string()),
        ready: Some(format!("{ready}/{desired}")),
        replicas,
        ready_replicas: ready,
        selector: Some(inputs.selector),
        version,
        // Set by the database's own status step; the UUID is kept once known.
        health: None,
        cluster_uuid: inputs.previous.and_then(|s| s.cluster_uuid.clone()),
        // Set by the database's own status step.
        authentication: None,
        operation,
        current_operation: current,
        nodes: inputs.nodes,
        pools: inputs.pools,
        pending_cleanup: inputs
            .previous
            .map(|s| s.pending_cleanup.clone())
            .unwrap_or_default(),
        pending_sstable_upgrades: inputs
            .previous
            .map(|s| s.pending_sstable_upgrades.clone())
            .unwrap_or_default(),
        history: inputs
            .previous
            .map(|s| s.history.clone())
            .unwrap_or_default(),
    };
    if let Step::Operation(op) = step {
        record_finished(&mut next, op, &inputs.now, inputs.volume_note);
    }
    // A node that joins a cluster that already served data takes over part of the others'
    // data: each of them owes the implementation's follow-up (Cassandra: cleanup). During the
    // first creation there is no data yet.
    if let (Step::AddNode { .. }, Some(OperationKind::Cleanup), false) =
        (step, inputs.after_join, never_ready)
    {
        for node in &next.nodes {
            if !next.pending_cleanup.contains(&node.name) {
                next.pending_cleanup.push(node.name.clone());
            }
        }
    }
    next
}

#[allow(clippy::too_many_arguments)]
fn phase_word(
    step: &Step,
    refusal: Option<&Refusal>,
    operation: Option<&Operation>,
    failed: bool,
    ready: i32,
    desired: i32,
    unready: bool,
    never_ready: bool,
) -> &'static str {
    match (step, operation) {
        (Step::Paused, _) => "Paused",
        _ if failed => "Degraded",
        (_, Some(op)) if op.kind == OperationKind::Restart => "Restarting",
        (_, Some(op)) if op.kind == OperationKind::Upgrade => "Upgrading",
        (Step::Steady | Step::Wait { .. }, None) if refusal.is_some() => "Blocked",
        (Step::Steady, _) if ready == desired => "Ready",
        _ if unready && !never_ready => "Degraded",
        _ if never_ready => "Creating",
        _ => "Scaling",
    }
}

/// The operation record after this step: the step's own record unless it ended; a paused
/// cluster keeps the record it had.
fn record(step: &Step, previous: Option<&ClusterStatus>, now: &str) -> Option<Operation> {
    match step {
        Step::Paused => previous.and_then(|s| s.operation.clone()),
        Step::Operation(op) if op.ends => None,
        Step::Operation(op) => {
            let mut operation = op.operation.clone();
            if operation.started_at.is_empty() {
                operation.started_at = now.to_string();
            }
            Some(operation)
        }
        _ => None,
    }
}

fn record_finished(
    status: &mut ClusterStatus,
    op: &OperationStep,
    now: &str,
    volume_note: Option<String>,
) {
    for finished in &op.finished {
        let Finished { kind, node, .. } = finished;
        // A node leaves a list when its task finished or it was removed, never just because its
        // pod is missing for a moment (the task would be lost).
        match kind {
            OperationKind::Cleanup => status.pending_cleanup.retain(|n| n != node),
            OperationKind::UpgradeSSTables => status.pending_sstable_upgrades.retain(|n| n != node),
            OperationKind::Decommission => {
                status.pending_cleanup.retain(|n| n != node);
                status.pending_sstable_upgrades.retain(|n| n != node);
            }
            _ => {}
        }
        let mut message = finished.message.clone();
        if *kind == OperationKind::Decommission
            && finished.succeeded
            && let Some(note) = &volume_note
        {
            message.push_str(&format!(" ({note})"));
        }
        status.history.push(OperationRecord {
            kind: kind.as_str().into(),
            node: Some(node.clone()),
            action_id: Some(finished.action_id.clone()),
            started_at: finished
                .started_at
                .clone()
                .or_else(|| Some(now.to_string())),
            finished_at: now.to_string(),
            result: if finished.succeeded {
                "Succeeded"
            } else {
                "Failed"
            }
            .into(),
            message,
        });
    }
    for owed in &op.owed {
        let list = match owed.kind {
            OperationKind::Cleanup => &mut status.pending_cleanup,
            OperationKind::UpgradeSSTables => &mut status.pending_sstable_upgrades,
            _ => continue,
        };
        if !list.contains(&owed.node) {
            list.push(owed.node.clone());
        }
    }
    let overflow = status.history.len().saturating_sub(HISTORY_LIMIT);
    status.history.drain(..overflow);
}

fn lowest_version(nodes: &[NodeStatus]) -> Option<String> {
    nodes
        .iter()
        .filter_map(|n| n.version.clone())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)))
}

#[cfg(test)]
mod coarse_tests {
    use super::coarse_bytes;

    #[test]
    fn coarse_bytes_keep_eight_significant_bits() {
        assert_eq!(coarse_bytes(0), 0);
        assert_eq!(coarse_bytes(255), 255);
        assert_eq!(coarse_bytes(257), 256);
        for b in [
            1_000u64,
            999_999,
            10_737_418_240,
            10_737_418_240 - 4096,
            u64::MAX,
        ] {
            let c = coarse_bytes(b);
            assert!(c <= b && (b - c) as f64 <= b as f64 / 128.0, "{b} -> {c}");
        }
        // Writes of a few KiB on a 10 GiB volume do not move the figure.
        assert_eq!(
            coarse_bytes(10_000_000_000),
            coarse_bytes(10_000_000_000 - 8192)
        );
    }
}
