//! Restarts and upgrades, owned by the planner: the StatefulSets never roll pods on their own
//! (`OnDelete`). Every node whose pod runs an older template is restarted, one at a time, in a
//! stated order (pools in spec order, highest ordinal first): its pilot prepares it (Cassandra:
//! drain, verified) → its pod is deleted, by UID → the new pod's pilot reports it healthy at the
//! new template revision (and, for an upgrade, the new version) → the next node.

use crate::database::{Database, View};
use crate::leave::{finish, progress_text};
use crate::model::{ActionProgress, ObservedNode, ObservedPool};
use crate::operation::{Operation, OperationKind, PendingTask, Phase};
use crate::planner::{
    Act, Finished, OperationStep, Step, WaitCause, describe, restart_action_id, spec_changed_since,
    step_at, unverified,
};

/// The nodes running an older template than their pool's, in restart order.
fn outdated<'a, DB: Database>(
    db: &DB,
    view: View<'a, DB::Detail>,
) -> Vec<(&'a str, &'a ObservedNode<DB::Detail>)> {
    let mut nodes = Vec::new();
    let mut pools: Vec<_> = view.desired.iter().filter(|p| !p.retiring).collect();
    // Stable: pools of one rank keep their spec order.
    pools.sort_by_key(|p| db.restart_rank(&p.name));
    for desired in pools {
        let Some(pool) = view.observed.pools.get(&desired.name) else {
            continue;
        };
        let mut pool_nodes: Vec<&ObservedNode<DB::Detail>> =
            pool.nodes.iter().filter(|n| pool.is_outdated(n)).collect();
        pool_nodes.sort_by_key(|n| std::cmp::Reverse(n.ordinal));
        nodes.extend(pool_nodes.into_iter().map(|n| (desired.name.as_str(), n)));
    }
    nodes
}

/// Starts a restart (or an upgrade) when a node runs an older template.
pub(crate) fn start<D: Database>(db: &D, view: View<'_, D::Detail>) -> Option<Step> {
    let outdated = outdated(db, view);
    let (pool, first) = *outdated.first()?;
    let desired_version = &view.observed.desired_version;
    let versions: Vec<Option<&str>> = view.nodes().map(|n| n.version()).collect();
    let upgrade = !desired_version.is_empty()
        && versions
            .iter()
            .any(|v| v.is_some_and(|v| v != desired_version));
    let kind = if upgrade {
        OperationKind::Upgrade
    } else {
        OperationKind::Restart
    };
    let wait = |cause, reason| {
        Some(Step::Wait {
            cause,
            reason,
            next: format!(
                "{} {} nodes one at a time once every node is verified healthy",
                kind.as_str().to_lowercase(),
                outdated.len()
            ),
        })
    };
    if let Some(reason) = unverified(view, None) {
        return wait(WaitCause::NodeUnverified, reason);
    }
    if upgrade && versions.iter().any(Option::is_none) {
        return wait(
            WaitCause::VersionUnknown,
            "a node's pilot has not reported its version".into(),
        );
    }
    let pool_obs = &view.observed.pools[pool];
    let revision = pool_obs.update_revision.clone()?;
    let from_version = versions
        .iter()
        .flatten()
        .min_by(|a, b| version_key(a).cmp(&version_key(b)))
        .map(|v| v.to_string());
    let operation = Operation {
        kind,
        phase: Phase::Waiting,
        node: first.name.clone(),
        pool: pool.to_string(),
        ordinal: first.ordinal,
        action_id: restart_action_id(&first.name, &revision),
        generation: view.observed.generation,
        started_at: String::new(),
        target_revision: Some(revision),
        target_version: upgrade.then(|| desired_version.clone()),
        from_version: from_version.filter(|_| upgrade),
        pod_uid: first.pod_uid.clone(),
        nodes: outdated.iter().map(|(_, n)| n.name.clone()).collect(),
        completed: Vec::new(),
    };
    Some(Step::Operation(Box::new(OperationStep::new(
        operation,
        Act::Nothing,
    ))))
}

/// The next step of a recorded restart or upgrade.
pub(crate) fn carry_on<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    action: &ActionProgress,
) -> Step {
    let pool = view.observed.pools.get(&op.pool);
    let node = pool.and_then(|p| p.node(op.ordinal));
    // The pod was replaced (deleted by us, or by anyone) once its UID changed or it is gone.
    let replaced = node.is_none_or(|n| n.pod_uid != op.pod_uid);
    match op.phase {
        Phase::Deleting | Phase::Rejoining if !replaced => at(
            op,
            Phase::Deleting,
            delete(op),
            Some(format!("waiting for pod {} to be deleted", op.node)),
        ),
        Phase::Deleting | Phase::Rejoining => rejoin(db, view, op, pool, node, action),
        _ if replaced => rejoin(db, view, op, pool, node, action),
        _ => prepare(db, view, op, action),
    }
}

/// Before the pod is deleted: the pilot prepares the node, verified.
fn prepare<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    action: &ActionProgress,
) -> Step {
    match action {
        ActionProgress::NotStarted => {
            // Never two nodes down by our hand: every node must be verified healthy first, and
            // the database must agree that this one may stop.
            let node = view
                .observed
                .pools
                .get(&op.pool)
                .and_then(|p| p.node(op.ordinal));
            let not_ready = unverified(view, None).or_else(|| match node {
                None => Some(format!("node {} has no pod", op.node)),
                Some(node) => db.ready_to_restart(view, node).err(),
            });
            match not_ready {
                Some(reason) => at(op, Phase::Waiting, Act::Nothing, Some(reason)),
                None => at(
                    op,
                    Phase::Draining,
                    Act::StartAction(db.prepare_restart()),
                    None,
                ),
            }
        }
        ActionProgress::Running { message, percent } => step_at(
            op,
            Phase::Draining,
            Act::Nothing,
            None,
            Some(progress_text(message, *percent)),
        ),
        ActionProgress::Succeeded { .. } => at(op, Phase::Deleting, delete(op), None),
        ActionProgress::Failed { error } if spec_changed_since(view, op) => {
            finish(op, false, format!("{error}; let go after the spec changed"))
        }
        ActionProgress::Failed { error } => {
            at(op, Phase::Failed, Act::Nothing, Some(error.clone()))
        }
        ActionProgress::Unknown { why } => at(
            op,
            Phase::Waiting,
            Act::Nothing,
            Some(format!("cannot verify the drain's state: {why}")),
        ),
    }
}

fn delete(op: &Operation) -> Act {
    match &op.pod_uid {
        Some(uid) => Act::DeletePod { uid: uid.clone() },
        None => Act::Nothing,
    }
}

/// After the pod was deleted: the node must come back healthy at the new template (and
/// version) before the next one starts.
fn rejoin<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    pool: Option<&ObservedPool<D::Detail>>,
    node: Option<&ObservedNode<D::Detail>>,
    action: &ActionProgress,
) -> Step {
    // A pod replaced before its drain (an eviction) is waited for in the phase it was in, so
    // the record never claims a drain that did not happen.
    let phase = match op.phase {
        Phase::Deleting | Phase::Rejoining => Phase::Rejoining,
        other => other,
    };
    let waiting = |reason: String| at(op, phase, Act::Nothing, Some(reason));
    let (Some(pool), Some(node)) = (pool, node) else {
        return waiting(format!("pod {} has not been recreated yet", op.node));
    };
    if pool.is_outdated(node) || node.revision.is_none() {
        return waiting(format!(
            "pod {} runs template revision {}, not {}",
            op.node,
            node.revision.as_deref().unwrap_or("?"),
            pool.update_revision.as_deref().unwrap_or("?")
        ));
    }
    if !node.is_verified_healthy() {
        return waiting(format!("{} is not back yet ({})", op.node, describe(node)));
    }
    let reported = node.report.as_ref().and_then(|r| r.revision.as_deref());
    if reported.is_some_and(|r| Some(r) != node.revision.as_deref()) {
        return waiting(format!(
            "the pilot of {} reports revision {}, the pod has {}",
            op.node,
            reported.unwrap_or("?"),
            node.revision.as_deref().unwrap_or("?")
        ));
    }
    if let Some(version) = &op.target_version
        && node.version() != Some(version.as_str())
    {
        return waiting(format!(
            "{} reports version {}, not {version}",
            op.node,
            node.version().unwrap_or("unknown")
        ));
    }
    if let Err(missing) = db.verify_back(view, node) {
        return waiting(missing);
    }
    match db.after_restart() {
        None => node_done(db, view, op, node, action),
        Some(resume) if op.phase != Phase::Resuming => {
            // A new action ID, recorded before the pilot is asked: the drain's ID stays done.
            let mut record = op.clone();
            record.phase = Phase::Resuming;
            record.action_id = format!("{}-resume", op.action_id);
            Step::Operation(Box::new(OperationStep::new(
                record,
                Act::StartAction(resume),
            )))
        }
        Some(resume) => resuming(db, view, op, node, action, resume),
    }
}

/// The node is back and its pilot restores what the drain changed outside it.
fn resuming<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    node: &ObservedNode<D::Detail>,
    action: &ActionProgress,
    resume: crate::operation::NodeAction,
) -> Step {
    match action {
        ActionProgress::NotStarted => at(op, Phase::Resuming, Act::StartAction(resume), None),
        ActionProgress::Running { message, percent } => step_at(
            op,
            Phase::Resuming,
            Act::Nothing,
            None,
            Some(progress_text(message, *percent)),
        ),
        ActionProgress::Succeeded { .. } => node_done(db, view, op, node, action),
        ActionProgress::Failed { error } => {
            at(op, Phase::Failed, Act::Nothing, Some(error.clone()))
        }
        ActionProgress::Unknown { why } => at(
            op,
            Phase::Resuming,
            Act::Nothing,
            Some(format!("cannot verify the resume's state: {why}")),
        ),
    }
}

/// The node is back: record it, move to the next node or end the operation.
fn node_done<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    node: &ObservedNode<D::Detail>,
    action: &ActionProgress,
) -> Step {
    // The operation reaches Deleting only after the pilot verified the drain.
    let was_drained = matches!(
        op.phase,
        Phase::Deleting | Phase::Rejoining | Phase::Resuming
    );
    let drained = match action {
        ActionProgress::Succeeded { verified } if op.phase == Phase::Resuming => {
            format!("drained before its pod was deleted; resumed (pilot verified: {verified})")
        }
        ActionProgress::Succeeded { verified } if was_drained && !verified.is_empty() => {
            format!("drained before its pod was deleted (pilot verified: {verified})")
        }
        _ if was_drained => "drained before its pod was deleted (verified by its pilot)".into(),
        _ => "its pod was replaced before the drain (deleted outside the operator)".into(),
    };
    let message = format!(
        "{} restarted: {drained}; pod {} deleted; back healthy at template revision {}{}",
        op.node,
        op.pod_uid.as_deref().unwrap_or("?"),
        node.revision.as_deref().unwrap_or("?"),
        node.version()
            .map(|v| format!(", version {v}"))
            .unwrap_or_default()
    );
    let finished = Finished {
        kind: op.kind,
        node: op.node.clone(),
        action_id: op.action_id.clone(),
        succeeded: true,
        message,
        started_at: Some(op.started_at.clone()).filter(|s| !s.is_empty()),
    };
    let mut next = op.clone();
    next.completed.push(op.node.clone());
    let candidate = op.nodes.iter().find_map(|name| {
        if next.completed.contains(name) {
            return None;
        }
        let (pool, n) = view.observed.find_node(name)?;
        let p = &view.observed.pools[pool];
        p.is_outdated(n).then_some((pool, n, p))
    });
    let mut step = match candidate {
        Some((pool, n, p)) => {
            next.node = n.name.clone();
            next.pool = pool.to_string();
            next.ordinal = n.ordinal;
            next.pod_uid = n.pod_uid.clone();
            next.target_revision = p.update_revision.clone();
            next.action_id =
                restart_action_id(&n.name, p.update_revision.as_deref().unwrap_or_default());
            next.phase = Phase::Waiting;
            OperationStep::new(next, Act::Nothing)
        }
        None => {
            let mut step = OperationStep::new(next, Act::Nothing);
            step.ends = true;
            if let (Some(from), Some(to)) = (&op.from_version, &op.target_version)
                && let Some(kind) = db.after_upgrade(from, to)
            {
                step.owed = view
                    .nodes()
                    .map(|n| PendingTask {
                        kind,
                        node: n.name.clone(),
                    })
                    .collect();
            }
            step
        }
    };
    step.finished.push(finished);
    Step::Operation(Box::new(step))
}

fn at(op: &Operation, phase: Phase, act: Act, waiting: Option<String>) -> Step {
    step_at(op, phase, act, waiting, None)
}

/// Numeric parts of a version, for ordering ("5.0.10" after "5.0.9").
pub fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}
