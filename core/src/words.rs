//! The words people read: `currentOperation`, the conditions, and the Events of each step.
//! Derived from the typed plan and operation record; nothing here is read back to decide.

use crate::operation::{Operation, OperationKind, Phase};
use crate::planner::{Act, OperationStep, Plan, Refusal, Step, WaitCause};
use crate::status::{ClusterStatus, Condition, CurrentOperation, NodeStatus};

/// What the next step of an operation in this phase is, in words.
fn next_words(op: &OperationStep) -> String {
    let record = &op.operation;
    match (record.kind, record.phase) {
        (OperationKind::Decommission, Phase::Starting) => format!(
            "the pilot starts the decommission{}; the node then streams its data to the others",
            match op.act {
                Act::StartAction(a) if a.is_forced() =>
                    " (forced past the database's own replication check: only system keyspaces \
                     exceed the remaining nodes)",
                _ => "",
            }
        ),
        (OperationKind::Decommission, Phase::Streaming) => {
            "verify the node left, from the node itself and from a peer's view".into()
        }
        (OperationKind::Decommission, Phase::Verifying) => {
            "shrink the StatefulSet once both views confirm".into()
        }
        (OperationKind::Decommission, Phase::Removing) => {
            "the StatefulSet shrinks by this node; then its volume is released".into()
        }
        (OperationKind::Decommission, Phase::ReleasingVolume) => match op.act {
            Act::ReleaseVolume { delete: false } => "keep the node's PersistentVolumeClaim, \
                                                     marked decommissioned \
                                                     (storagePolicy.onScaleDown: Retain)"
                .into(),
            _ => {
                "delete the node's PersistentVolumeClaim (storagePolicy.onScaleDown: Delete)".into()
            }
        },
        (OperationKind::Decommission, Phase::Failed) => "nothing was removed; set the replicas \
                                                         back to keep the node, or change the \
                                                         spec to retry"
            .into(),
        (OperationKind::Decommission, _) => {
            "resume as soon as it is safe and the node's pilot answers; nothing is removed \
             meanwhile"
                .into()
        }
        (kind, _) if kind.is_roll() => match record.phase {
            Phase::Waiting => format!(
                "drain {} once every node is verified healthy, then delete its pod",
                record.node
            ),
            Phase::Draining => "delete the pod once its pilot verified the drain".into(),
            Phase::Deleting => "the StatefulSet recreates the pod from the new template".into(),
            Phase::Rejoining => format!(
                "verify {} healthy at the new template{}, then the next node",
                record.node,
                record
                    .target_version
                    .as_ref()
                    .map(|v| format!(" and version {v}"))
                    .unwrap_or_default()
            ),
            Phase::Resuming => format!(
                "verify the cluster recovered after {} came back, then the next node",
                record.node
            ),
            Phase::Failed => "nothing more is restarted; fix the node, then change the spec to \
                              retry"
                .into(),
            _ => "the next node".into(),
        },
        _ => "run it on the next node that owes it, one at a time".into(),
    }
}

fn roll_progress(record: &Operation) -> Option<String> {
    record.kind.is_roll().then(|| {
        format!(
            "{}/{} nodes {}",
            record.completed.len(),
            record.nodes.len(),
            if record.kind == OperationKind::Upgrade {
                "upgraded"
            } else {
                "restarted"
            }
        )
    })
}

/// `currentOperation`: what runs, what it waits for, what comes next.
pub fn current_operation(
    step: &Step,
    refusal: Option<&Refusal>,
    record: Option<&Operation>,
    previous: Option<&CurrentOperation>,
    step_node: Option<String>,
    now: &str,
) -> Option<CurrentOperation> {
    let started = |kind: &str, node: &Option<String>| {
        previous
            .filter(|p| p.kind == kind && &p.node == node)
            .and_then(|p| p.started_at.clone())
            .or_else(|| Some(now.to_string()))
    };
    let plain = |kind: &str, node: Option<String>, phase: &str, next: &str, summary: String| {
        Some(CurrentOperation {
            kind: kind.into(),
            started_at: started(kind, &node),
            node,
            action_id: None,
            phase: phase.into(),
            blocked_reason: None,
            next_step: Some(next.into()),
            summary: Some(summary),
            progress: None,
        })
    };
    match step {
        Step::Paused => None,
        Step::Steady => refusal.map(|r| refused(r, started(r.change.as_str(), &None))),
        Step::Operation(op) if op.ends => None,
        Step::Operation(op) => {
            let record = record.unwrap_or(&op.operation);
            let kind = record.kind.as_str();
            let phase = record.phase.as_str();
            let progress = op.progress.clone().or_else(|| roll_progress(record));
            Some(CurrentOperation {
                kind: kind.into(),
                node: Some(record.node.clone()),
                action_id: Some(record.action_id.clone()),
                phase: phase.into(),
                started_at: Some(record.started_at.clone()),
                blocked_reason: op.waiting.clone(),
                next_step: Some(next_words(op)),
                summary: Some(match roll_progress(record) {
                    Some(done) => format!("{kind} {}: {phase} ({done})", record.node),
                    None => format!("{kind} {}: {phase}", record.node),
                }),
                progress,
            })
        }
        Step::CreatePool { pool } => plain(
            "CreatePool",
            None,
            "Running",
            "add the pool's nodes one at a time",
            format!("CreatePool {pool}"),
        ),
        Step::DeletePool { pool } => plain(
            "DeletePool",
            None,
            "Running",
            "delete the StatefulSet of the removed pool, now without nodes",
            format!("DeletePool {pool}"),
        ),
        Step::AddNode { .. } => {
            let summary = step_node
                .as_ref()
                .map(|n| format!("ScaleUp {n}: Running"))
                .unwrap_or_else(|| "ScaleUp: Running".into());
            plain(
                "ScaleUp",
                step_node,
                "Running",
                "wait for the new node to join and report healthy",
                summary,
            )
        }
        Step::Wait { reason, next, .. } => {
            // A wait continues the step that caused it (for example a node being added).
            let (kind, node) = previous
                .filter(|p| p.phase != "Blocked")
                .map(|p| (p.kind.clone(), p.node.clone()))
                .unwrap_or_else(|| ("Wait".into(), None));
            Some(CurrentOperation {
                started_at: started(&kind, &node),
                summary: Some(format!(
                    "{kind}{}: Waiting",
                    node.as_ref().map(|n| format!(" {n}")).unwrap_or_default()
                )),
                kind,
                node,
                action_id: None,
                phase: "Waiting".into(),
                blocked_reason: Some(reason.clone()),
                next_step: Some(next.clone()),
                progress: None,
            })
        }
    }
}

fn refused(refusal: &Refusal, started_at: Option<String>) -> CurrentOperation {
    let kind = refusal.change.as_str();
    CurrentOperation {
        kind: kind.into(),
        started_at,
        node: None,
        action_id: None,
        phase: "Blocked".into(),
        blocked_reason: Some(refusal.reason.clone()),
        next_step: Some(refusal.remedy.clone()),
        summary: Some(format!("{kind}: Blocked")),
        progress: None,
    }
}

/// One sentence for the Progressing condition: what runs, what the pilot says, what is next.
fn describe(op: &CurrentOperation) -> String {
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

/// A fault of the platform below the planner (for example a CA Secret that cannot be read),
/// shown as the Degraded condition until it is mended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// A stable word for machines (the condition's reason).
    pub reason: String,
    /// What is wrong and what to do, for people.
    pub message: String,
}

pub struct ConditionInputs<'a> {
    pub step: &'a Step,
    pub refusal: Option<&'a Refusal>,
    pub operation: Option<&'a Operation>,
    pub current: Option<&'a CurrentOperation>,
    pub unready: &'a [&'a NodeStatus],
    pub never_ready: bool,
    pub ready: i32,
    pub desired: i32,
    pub previous: &'a [Condition],
    pub generation: Option<i64>,
    pub now: &'a str,
    pub fault: Option<&'a Fault>,
}

fn progressing_reason(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Decommission => "Decommissioning",
        OperationKind::Restart => "Restarting",
        OperationKind::Upgrade => "Upgrading",
        OperationKind::Cleanup => "CleaningUp",
        OperationKind::UpgradeSSTables => "UpgradingSSTables",
    }
}

fn failed_words(op: &Operation, error: &str) -> String {
    match op.kind {
        OperationKind::Decommission => format!(
            "the decommission of {} failed: {error}. The node stays in the cluster with its \
             data and nothing was removed. To resolve: check the node, then set the replicas \
             back to keep it, or change the spec to retry",
            op.node
        ),
        kind => format!(
            "the {} of {} failed: {error}. Nothing more is restarted. To resolve: check the \
             node, then change the spec to retry",
            kind.as_str().to_lowercase(),
            op.node
        ),
    }
}

/// Available, Progressing and Degraded, computed whole in one place.
pub fn conditions(i: ConditionInputs<'_>) -> Vec<Condition> {
    let failed = i.operation.filter(|o| o.phase == Phase::Failed).map(|o| {
        let error = i
            .current
            .and_then(|c| c.blocked_reason.clone())
            .unwrap_or_default();
        (o, error)
    });
    let (progressing, p_reason, p_message) = match (i.step, &failed) {
        (Step::Paused, _) => (
            "False",
            "Paused".to_string(),
            "spec.paused is true: the operator observes but changes nothing".to_string(),
        ),
        (_, Some((op, error))) => (
            "False",
            format!("{}Failed", op.kind.as_str()),
            failed_words(op, error),
        ),
        (Step::Steady, _) if i.refusal.is_some() => {
            let r = i
                .refusal
                .map(|r| format!("{}. To resolve: {}", r.reason, r.remedy));
            ("False", "Blocked".into(), r.unwrap_or_default())
        }
        (Step::Steady, _) => (
            "False",
            "Reconciled".into(),
            format!(
                "the cluster matches the spec: {}/{} nodes ready",
                i.ready, i.desired
            ),
        ),
        (Step::CreatePool { pool }, _) => (
            "True",
            "CreatingPool".into(),
            format!("creating node pool {pool}"),
        ),
        (Step::DeletePool { pool }, _) => (
            "True",
            "DeletingPool".into(),
            format!("deleting the StatefulSet of removed node pool {pool}"),
        ),
        (Step::AddNode { pool, ordinal }, _) => (
            "True",
            "AddingNode".into(),
            format!(
                "adding node {} to pool {pool} (node {} of {}); next: wait for it to join and \
                 report healthy",
                i.current.and_then(|c| c.node.clone()).unwrap_or_default(),
                ordinal + 1,
                i.desired
            ),
        ),
        (Step::Wait { reason, next, .. }, _) => (
            "True",
            "Waiting".into(),
            format!("waiting: {reason}; next: {next}"),
        ),
        (Step::Operation(op), _) => (
            "True",
            progressing_reason(op.operation.kind).into(),
            i.current.map(describe).unwrap_or_else(|| {
                format!(
                    "{} of {} finished",
                    op.operation.kind.as_str(),
                    op.operation.node
                )
            }),
        ),
    };
    let (available, a_reason, a_message) = if i.desired > 0 && i.ready >= i.desired {
        (
            "True",
            "AllNodesReady",
            format!("all {} nodes are ready", i.desired),
        )
    } else if i.ready > 0 {
        (
            "False",
            "NodesNotReady",
            format!("{} of {} nodes ready", i.ready, i.desired),
        )
    } else {
        (
            "False",
            "NoNodeReady",
            format!("0 of {} nodes ready", i.desired),
        )
    };
    let (degraded, d_reason, d_message) = if let Some(f) = i.fault {
        ("True", f.reason.clone(), f.message.clone())
    } else if let Some(r) = i.refusal {
        ("True", "SpecRefused".to_string(), r.reason.clone())
    } else if let Some((op, error)) = &failed {
        (
            "True",
            format!("{}Failed", op.kind.as_str()),
            format!(
                "the {} of {} failed: {error}",
                op.kind.as_str().to_lowercase(),
                op.node
            ),
        )
    } else if !i.unready.is_empty() && !i.never_ready {
        let names = i
            .unready
            .iter()
            .map(|n| format!("{} ({})", n.name, n.message.as_deref().unwrap_or(&n.state)))
            .collect::<Vec<_>>()
            .join(", ");
        (
            "True",
            "NodesNotReady".into(),
            format!("not ready: {names}"),
        )
    } else {
        (
            "False",
            "AsExpected".into(),
            "no node is unexpectedly unavailable".to_string(),
        )
    };
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let last_transition_time = i
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| i.now.to_string());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: i.generation,
            last_transition_time,
        }
    };
    vec![
        condition("Available", available, a_reason, a_message),
        condition("Progressing", progressing, &p_reason, p_message),
        condition("Degraded", degraded, &d_reason, d_message),
    ]
}

/// An Event to publish on the cluster object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventIntent {
    pub warning: bool,
    pub reason: String,
    /// The recorder folds Events with the same reason, action and related object into one
    /// series keeping the first note: the action names the phase (and why a wait waits).
    pub action: String,
    pub note: String,
    /// The node (pod) the Event is about.
    pub node: Option<String>,
}

/// The Events of a reconcile: finished operations first (what was verified), then a refusal
/// that is new, then the step now under way when it changed.
pub fn events(
    previous: Option<&ClusterStatus>,
    next: &ClusterStatus,
    plan: &Plan,
) -> Vec<EventIntent> {
    let step = &plan.step;
    let previous_history = previous.map(|s| s.history.as_slice()).unwrap_or_default();
    let mut events: Vec<EventIntent> = next
        .history
        .iter()
        .filter(|r| !previous_history.contains(r))
        .map(|r| EventIntent {
            warning: r.result != "Succeeded",
            reason: format!("{}{}", r.kind, r.result),
            action: format!("{}{}", r.kind, r.result),
            note: r.message.clone(),
            node: r.node.clone(),
        })
        .collect();
    let refusal_of = |s: &ClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.reason == "SpecRefused")
            .map(|c| c.message.clone())
    };
    if let Some(refusal) = &plan.refusal
        && previous.and_then(refusal_of).as_ref() != Some(&refusal.reason)
    {
        events.push(EventIntent {
            warning: true,
            reason: "Refused".into(),
            action: format!("Refused{}", refusal.change.as_str()),
            note: format!("{}; to resolve: {}", refusal.reason, refusal.remedy),
            node: None,
        });
    }
    events.extend(step_event(
        previous.and_then(|s| s.current_operation.as_ref()),
        next,
        step,
    ));
    events
}

fn step_event(
    previous: Option<&CurrentOperation>,
    status: &ClusterStatus,
    step: &Step,
) -> Option<EventIntent> {
    let current = status.current_operation.as_ref();
    let key = |op: Option<&CurrentOperation>| {
        op.map(|o| {
            (
                o.kind.clone(),
                o.node.clone(),
                o.phase.clone(),
                o.blocked_reason.clone(),
                o.summary.clone(),
            )
        })
    };
    if key(previous) == key(current) {
        return None;
    }
    if let Step::Wait {
        cause: WaitCause::StatefulSetCatchingUp,
        ..
    } = step
    {
        // Follows every StatefulSet change for a moment; the status shows it, an Event is noise.
        return None;
    }
    let node = current.and_then(|op| op.node.clone());
    let event = |warning, reason: &str, action: String, note: String| EventIntent {
        warning,
        reason: reason.into(),
        action,
        note,
        node: node.clone(),
    };
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    Some(match current {
        None => event(
            false,
            "Reconciled",
            // Per size, so a later match at another size is not folded into this one's note.
            format!("ReconciledWith{}Nodes", status.ready_replicas),
            format!(
                "cluster matches the spec: {} nodes ready",
                status.ready.as_deref().unwrap_or("?")
            ),
        ),
        // A refusal has its own Event.
        Some(op) if op.phase == "Blocked" => return None,
        Some(op) if op.phase == "Waiting" => event(
            false,
            "Waiting",
            match step {
                Step::Wait { cause, .. } => format!("{}Waiting{}", op.kind, cause.as_str()),
                _ => format!("{}Waiting", op.kind),
            },
            format!(
                "{}: {}; next: {}",
                op.summary.as_deref().unwrap_or(&op.kind),
                text(&op.blocked_reason),
                text(&op.next_step)
            ),
        ),
        Some(op) => event(
            op.phase == "Failed",
            &op.kind,
            format!("{}{}", op.kind, op.phase),
            format!(
                "{}{}; next: {}",
                op.summary.as_deref().unwrap_or(&op.kind),
                op.node
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                text(&op.next_step)
            ),
        ),
    })
}
