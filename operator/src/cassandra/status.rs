//! Pure status computation: (previous status, planner step, observed nodes) → the status that
//! tells a human what is happening, what blocks and what comes next.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::cassandra::CassandraClusterStatus;
use crate::api::common::{CurrentOperation, NodeStatus, OperationRecord, PoolStatus};
use crate::planner::{CleanupPhase, DecommissionPhase, Step, VerifiedState};

/// How many finished operations the status keeps.
/// Phase words of a decommission whose node both views already saw leave the ring.
const REMOVING: &str = "Removing";
const RELEASING_VOLUME: &str = "ReleasingVolume";

/// Whether a recorded decommission phase says the node's removal was verified before it was
/// recorded (the StatefulSet shrink and later).
pub fn records_verified_removal(phase: &str) -> bool {
    phase == REMOVING || phase == RELEASING_VOLUME
}

pub const HISTORY_LIMIT: usize = 10;

/// Inputs besides the step, already reduced to plain data by the observe phase.
pub struct StatusInputs<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a CassandraClusterStatus>,
    pub step: &'a Step,
    pub nodes: Vec<NodeStatus>,
    pub pools: Vec<PoolStatus>,
    pub selector: String,
    /// Pod name of the node a step concerns (for AddNode: the pod that will be created).
    pub step_node: Option<String>,
    /// Whole seconds: statuses compare equal across resyncs within one second.
    pub now: Timestamp,
    /// What the removed node's volume became, for the history ("PVC x deleted").
    pub volume_note: Option<String>,
}

pub fn state_word(state: Option<VerifiedState>, pod_ready: bool) -> &'static str {
    match state {
        Some(VerifiedState::UpNormal) => "Up/Normal",
        Some(VerifiedState::Joining) => "Up/Joining",
        Some(VerifiedState::Leaving) => "Up/Leaving",
        Some(VerifiedState::Decommissioned) => "Decommissioned",
        Some(VerifiedState::Down) => "Down",
        None if pod_ready => "Ready",
        None => "Unknown",
    }
}

pub fn build(inputs: StatusInputs<'_>) -> CassandraClusterStatus {
    let desired: i32 = inputs.pools.iter().map(|p| p.desired).sum();
    let replicas: i32 = inputs.pools.iter().map(|p| p.replicas).sum();
    let ready: i32 = inputs.pools.iter().map(|p| p.ready_replicas).sum();
    let previous_op = inputs.previous.and_then(|s| s.current_operation.as_ref());
    let now = inputs.now.to_string();

    let operation = current_operation(inputs.step, previous_op, inputs.step_node.clone(), &now);
    // "Creating" lasts until the cluster is Ready once; afterwards a shortfall is Scaling or
    // Degraded.
    let never_ready = inputs
        .previous
        .is_none_or(|s| matches!(s.phase.as_deref(), None | Some("Creating")));
    let unready_existing: Vec<&NodeStatus> = inputs
        .nodes
        .iter()
        .filter(|n| !n.ready && Some(&n.name) != operation.as_ref().and_then(|o| o.node.as_ref()))
        .collect();

    let decommission_failed = matches!(
        inputs.step,
        Step::Decommission {
            phase: DecommissionPhase::Failed { .. },
            ..
        }
    );
    let phase = match inputs.step {
        Step::Paused => "Paused",
        Step::Blocked { .. } => "Blocked",
        _ if decommission_failed => "Degraded",
        Step::Steady if ready == desired => "Ready",
        _ if !unready_existing.is_empty() && !never_ready => "Degraded",
        _ if never_ready => "Creating",
        _ => "Scaling",
    };

    let (progressing, progressing_reason, progressing_message) = match inputs.step {
        Step::Paused => (
            "False",
            "Paused",
            "spec.paused is true: the operator observes but changes nothing".to_string(),
        ),
        Step::Blocked { reason, remedy } => (
            "False",
            "Blocked",
            format!("{reason}. To resolve: {remedy}"),
        ),
        Step::Steady => (
            "False",
            "Reconciled",
            format!("the cluster matches the spec: {ready}/{desired} nodes ready"),
        ),
        Step::CreatePool { pool } => ("True", "CreatingPool", format!("creating node pool {pool}")),
        Step::AddNode { pool, ordinal } => (
            "True",
            "AddingNode",
            format!(
                "adding node {} to pool {pool} (node {} of {desired}); next: wait for it to join Up/Normal",
                inputs.step_node.clone().unwrap_or_default(),
                ordinal + 1
            ),
        ),
        Step::Wait { reason, next, .. } => (
            "True",
            "Waiting",
            format!("waiting: {reason}; next: {next}"),
        ),
        Step::Decommission { node, phase, .. } => match phase {
            DecommissionPhase::Failed { error } => (
                "False",
                "DecommissionFailed",
                format!(
                    "the decommission of {node} failed: {error}. The node stays in the ring with \
                     its data and nothing was removed. To resolve: check the node, then set the \
                     replicas back to keep it, or change the spec to retry"
                ),
            ),
            _ => (
                "True",
                "Decommissioning",
                operation
                    .as_ref()
                    .map(describe_operation)
                    .unwrap_or_else(|| format!("decommission of {node} finished")),
            ),
        },
        Step::Cleanup { node, .. } => (
            "True",
            "CleaningUp",
            operation
                .as_ref()
                .map(describe_operation)
                .unwrap_or_else(|| format!("cleanup of {node} finished")),
        ),
    };

    let (available, available_reason, available_message) = if desired > 0 && ready >= desired {
        (
            "True",
            "AllNodesReady",
            format!("all {desired} nodes are ready"),
        )
    } else if ready > 0 {
        (
            "False",
            "NodesNotReady",
            format!("{ready} of {desired} nodes ready"),
        )
    } else {
        (
            "False",
            "NoNodeReady",
            format!("0 of {desired} nodes ready"),
        )
    };

    let (degraded, degraded_reason, degraded_message) =
        if let Step::Blocked { reason, .. } = inputs.step {
            ("True", "SpecRefused", reason.clone())
        } else if let Step::Decommission {
            node,
            phase: DecommissionPhase::Failed { error },
            ..
        } = inputs.step
        {
            (
                "True",
                "DecommissionFailed",
                format!("the decommission of {node} failed: {error}"),
            )
        } else if !unready_existing.is_empty() && !never_ready {
            let names = unready_existing
                .iter()
                .map(|n| format!("{} ({})", n.name, n.message.as_deref().unwrap_or(&n.state)))
                .collect::<Vec<_>>()
                .join(", ");
            ("True", "NodesNotReady", format!("not ready: {names}"))
        } else {
            (
                "False",
                "AsExpected",
                "no node is unexpectedly unavailable".to_string(),
            )
        };

    let previous_conditions = inputs
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = vec![
        condition(
            previous_conditions,
            "Available",
            available,
            available_reason,
            available_message,
            inputs.generation,
            inputs.now,
        ),
        condition(
            previous_conditions,
            "Progressing",
            progressing,
            progressing_reason,
            progressing_message,
            inputs.generation,
            inputs.now,
        ),
        condition(
            previous_conditions,
            "Degraded",
            degraded,
            degraded_reason,
            degraded_message,
            inputs.generation,
            inputs.now,
        ),
    ];

    let version =
        lowest_version(&inputs.nodes).or_else(|| inputs.previous.and_then(|s| s.version.clone()));

    let mut history = inputs
        .previous
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let finished = finished_operation(inputs.step, previous_op, &now, inputs.volume_note);
    let mut pending_cleanup = inputs
        .previous
        .map(|s| s.pending_cleanup.clone())
        .unwrap_or_default();
    if let Some(record) = finished {
        // A node leaves the list when its cleanup finished or it was decommissioned, never just
        // because its pod is missing for a moment (the cleanup would be lost).
        if record.kind == "Cleanup" || record.kind == "Decommission" {
            pending_cleanup.retain(|n| Some(n) != record.node.as_ref());
        }
        history.push(record);
    }
    let overflow = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..overflow);
    // A node that joins a cluster that already served data takes over token ranges from the
    // others: each of them must drop what it no longer owns (during the first creation there is
    // no data yet, so no cleanup).
    if matches!(inputs.step, Step::AddNode { .. }) && !never_ready {
        for node in &inputs.nodes {
            if !pending_cleanup.contains(&node.name) {
                pending_cleanup.push(node.name.clone());
            }
        }
    }

    CassandraClusterStatus {
        observed_generation: inputs.generation,
        conditions,
        phase: Some(phase.to_string()),
        ready: Some(format!("{ready}/{desired}")),
        replicas,
        ready_replicas: ready,
        selector: Some(inputs.selector),
        version,
        current_operation: operation,
        nodes: inputs.nodes,
        pools: inputs.pools,
        pending_cleanup,
        history,
    }
}

/// One sentence for the Progressing condition: what runs, what the pilot says, what is next.
fn describe_operation(op: &CurrentOperation) -> String {
    let mut text = format!(
        "{} of {}: {}",
        op.kind,
        op.node.as_deref().unwrap_or("?"),
        op.phase
    );
    if let Some(progress) = &op.progress {
        text.push_str(&format!(" ({progress})"));
    }
    if let Some(reason) = &op.blocked_reason {
        text.push_str(&format!("; waiting: {reason}"));
    }
    if let Some(next) = &op.next_step {
        text.push_str(&format!("; next: {next}"));
    }
    text
}

/// The record of an operation that ends with this step, if one does.
fn finished_operation(
    step: &Step,
    previous: Option<&CurrentOperation>,
    now: &str,
    volume_note: Option<String>,
) -> Option<OperationRecord> {
    let (kind, node, action_id, result, message) = match step {
        Step::Decommission {
            node,
            action_id,
            phase,
            ..
        } => match phase {
            DecommissionPhase::Done => (
                "Decommission",
                node,
                action_id,
                "Succeeded",
                format!(
                    "{node} left the ring: its pilot verified DECOMMISSIONED and another node's \
                     ring no longer holds it; the StatefulSet shrank{}",
                    volume_note.map(|v| format!("; {v}")).unwrap_or_default()
                ),
            ),
            DecommissionPhase::Abandoned { error } => (
                "Decommission",
                node,
                action_id,
                "Failed",
                format!("{error}; let go after the spec changed"),
            ),
            _ => return None,
        },
        Step::Cleanup {
            node,
            action_id,
            phase,
        } => match phase {
            CleanupPhase::Done { verified } => (
                "Cleanup",
                node,
                action_id,
                "Succeeded",
                format!("{node} dropped the data it no longer owns; verified: {verified}"),
            ),
            CleanupPhase::Failed { error } => (
                "Cleanup",
                node,
                action_id,
                "Failed",
                format!("{error}; the node keeps data it does not own (no data is lost)"),
            ),
            _ => return None,
        },
        _ => return None,
    };
    Some(OperationRecord {
        kind: kind.into(),
        node: Some(node.clone()),
        action_id: Some(action_id.clone()),
        started_at: previous
            .filter(|p| p.kind == kind && p.node.as_ref() == Some(node))
            .and_then(|p| p.started_at.clone()),
        finished_at: now.to_string(),
        result: result.into(),
        message,
    })
}

fn current_operation(
    step: &Step,
    previous: Option<&CurrentOperation>,
    step_node: Option<String>,
    now: &str,
) -> Option<CurrentOperation> {
    let same_as_previous =
        |kind: &str, node: &Option<String>| previous.filter(|p| p.kind == kind && &p.node == node);
    let started = |kind: &str, node: &Option<String>| {
        same_as_previous(kind, node)
            .and_then(|p| p.started_at.clone())
            .or_else(|| Some(now.to_string()))
    };
    let operation = |kind: &str,
                     node: &String,
                     action_id: &String,
                     phase: &str,
                     reason: Option<String>,
                     next: String,
                     progress: Option<String>| {
        let node = Some(node.clone());
        CurrentOperation {
            kind: kind.into(),
            started_at: started(kind, &node),
            summary: node.as_ref().map(|n| format!("{kind} {n}: {phase}")),
            node,
            action_id: Some(action_id.clone()),
            phase: phase.into(),
            blocked_reason: reason,
            next_step: Some(next),
            progress,
        }
    };
    match step {
        Step::Steady | Step::Paused => None,
        Step::Decommission {
            node,
            action_id,
            phase,
            ..
        } => {
            let (word, reason, next, progress) = match phase {
                DecommissionPhase::Done | DecommissionPhase::Abandoned { .. } => return None,
                DecommissionPhase::Start { force } => (
                    "Starting",
                    None,
                    format!(
                        "the pilot starts the decommission{}; the node then streams its data to \
                         the others",
                        if *force {
                            " (forced past Cassandra's own replication check: only system \
                             keyspaces exceed the remaining nodes)"
                        } else {
                            ""
                        }
                    ),
                    None,
                ),
                DecommissionPhase::Streaming { message, percent } => (
                    "Streaming",
                    None,
                    "verify DECOMMISSIONED from the node and its absence from a peer's ring".into(),
                    Some(match percent {
                        Some(p) => format!("{message} ({p}%)"),
                        None => message.clone(),
                    }),
                ),
                DecommissionPhase::Pending { reason } => (
                    "Waiting",
                    Some(reason.clone()),
                    "start the decommission once it is safe".into(),
                    None,
                ),
                DecommissionPhase::Verifying { reason } => (
                    "Verifying",
                    Some(reason.clone()),
                    "shrink the StatefulSet once both views confirm".into(),
                    None,
                ),
                DecommissionPhase::Shrink | DecommissionPhase::AwaitPodGone => (
                    REMOVING,
                    None,
                    "the StatefulSet shrinks by this node; then its volume is released".into(),
                    None,
                ),
                DecommissionPhase::ReleaseVolume { delete } => (
                    RELEASING_VOLUME,
                    None,
                    if *delete {
                        "delete the node's PersistentVolumeClaim (storagePolicy.onScaleDown: Delete)"
                    } else {
                        "keep the node's PersistentVolumeClaim, marked decommissioned \
                         (storagePolicy.onScaleDown: Retain)"
                    }
                    .into(),
                    None,
                ),
                DecommissionPhase::Failed { error } => (
                    "Failed",
                    Some(error.clone()),
                    "nothing was removed; set the replicas back to keep the node, or change \
                     the spec to retry"
                        .into(),
                    None,
                ),
                DecommissionPhase::Unknown { why } => (
                    "Waiting",
                    Some(format!("cannot verify the decommission's state: {why}")),
                    "resume as soon as the node's pilot answers; nothing is removed meanwhile"
                        .into(),
                    None,
                ),
            };
            Some(operation(
                "Decommission",
                node,
                action_id,
                word,
                reason,
                next,
                progress,
            ))
        }
        Step::Cleanup {
            node,
            action_id,
            phase,
        } => {
            let (word, reason, progress) = match phase {
                CleanupPhase::Done { .. } | CleanupPhase::Failed { .. } => return None,
                CleanupPhase::Start => ("Starting", None, None),
                CleanupPhase::Running { message, percent } => (
                    "Running",
                    None,
                    Some(match percent {
                        Some(p) => format!("{message} ({p}%)"),
                        None => message.clone(),
                    }),
                ),
                CleanupPhase::Unknown { why } => ("Waiting", Some(why.clone()), None),
            };
            Some(operation(
                "Cleanup",
                node,
                action_id,
                word,
                reason,
                "clean up the next node that held data before the scale-up, one at a time".into(),
                progress,
            ))
        }
        Step::CreatePool { pool } => {
            let node = None;
            Some(CurrentOperation {
                kind: "CreatePool".into(),
                started_at: started("CreatePool", &node),
                node,
                action_id: None,
                phase: "Running".into(),
                blocked_reason: None,
                next_step: Some("add the pool's nodes one at a time".into()),
                summary: Some(format!("CreatePool {pool}")),
                progress: None,
            })
        }
        Step::AddNode { .. } => {
            let node = step_node;
            Some(CurrentOperation {
                kind: "ScaleUp".into(),
                started_at: started("ScaleUp", &node),
                summary: node.as_ref().map(|n| format!("ScaleUp {n}: Running")),
                node,
                action_id: None,
                phase: "Running".into(),
                blocked_reason: None,
                next_step: Some("wait for the new node to join and report Up/Normal".into()),
                progress: None,
            })
        }
        Step::Wait { reason, next, .. } => {
            // A wait continues the operation that caused it (for example a node being added).
            let (kind, node, action_id) = previous
                .filter(|p| p.phase != "Blocked")
                .map(|p| (p.kind.clone(), p.node.clone(), p.action_id.clone()))
                .unwrap_or_else(|| ("Wait".into(), None, None));
            Some(CurrentOperation {
                started_at: started(&kind, &node),
                summary: Some(format!(
                    "{kind}{}: Waiting",
                    node.as_ref().map(|n| format!(" {n}")).unwrap_or_default()
                )),
                kind,
                node,
                action_id,
                phase: "Waiting".into(),
                blocked_reason: Some(reason.clone()),
                next_step: Some(next.clone()),
                progress: None,
            })
        }
        Step::Blocked { reason, remedy } => {
            let node = None;
            Some(CurrentOperation {
                kind: "ScaleDown".into(),
                started_at: started("ScaleDown", &node),
                node,
                action_id: None,
                phase: "Blocked".into(),
                blocked_reason: Some(reason.clone()),
                next_step: Some(remedy.clone()),
                summary: Some("ScaleDown: Blocked".into()),
                progress: None,
            })
        }
    }
}

/// Keep `lastTransitionTime` unless the status flips, as the Condition convention requires.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Now, truncated to whole seconds (the precision Kubernetes stores).
pub fn now_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn lowest_version(nodes: &[NodeStatus]) -> Option<String> {
    nodes
        .iter()
        .filter_map(|n| n.version.clone())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        step: &'a Step,
        previous: Option<&'a CassandraClusterStatus>,
    ) -> StatusInputs<'a> {
        StatusInputs {
            generation: Some(2),
            previous,
            step,
            nodes: vec![],
            pools: vec![PoolStatus {
                name: "main".into(),
                desired: 3,
                replicas: 2,
                ready_replicas: 2,
            }],
            selector: "a=b".into(),
            step_node: Some("demo-main-2".into()),
            now: now_seconds(),
            volume_note: None,
        }
    }

    #[test]
    fn blocked_says_why_and_what_to_do() {
        let step = Step::Blocked {
            reason: "no".into(),
            remedy: "do this".into(),
        };
        let status = build(inputs(&step, None));
        assert_eq!(status.phase.as_deref(), Some("Blocked"));
        let progressing = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .expect("cond");
        assert!(progressing.message.contains("do this"));
        let op = status.current_operation.expect("op");
        assert_eq!(op.phase, "Blocked");
        assert_eq!(op.next_step.as_deref(), Some("do this"));
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let step = Step::Steady;
        let first = build(inputs(&step, None));
        let mut later = inputs(&step, Some(&first));
        later.now = first_now_plus(&first);
        let second = build(later);
        assert_eq!(first.conditions, second.conditions);
        assert_eq!(first, second);
    }

    fn first_now_plus(_s: &CassandraClusterStatus) -> Timestamp {
        Timestamp::from_second(now_seconds().as_second() + 30).expect("time")
    }

    #[test]
    fn wait_continues_the_previous_operation() {
        let add = Step::AddNode {
            pool: "main".into(),
            ordinal: 2,
        };
        let first = build(inputs(&add, None));
        let wait = Step::Wait {
            cause: crate::planner::WaitCause::NodeNotReady,
            reason: "node demo-main-2 is not ready".into(),
            next: "wait".into(),
        };
        let second = build(inputs(&wait, Some(&first)));
        let op = second.current_operation.expect("op");
        assert_eq!(op.kind, "ScaleUp");
        assert_eq!(op.node.as_deref(), Some("demo-main-2"));
        assert_eq!(
            op.started_at,
            first.current_operation.expect("op").started_at
        );
    }
}
