//! A node leaving the cluster: the pool's highest node, through a verified removal. Its
//! StatefulSet shrinks only once the database's own views prove it left; its volume is released
//! after its pod is gone.

use crate::database::{Database, Gate, View};
use crate::model::{ActionProgress, DesiredPool, VolumePolicy};
use crate::operation::{Operation, OperationKind, Phase};
use crate::planner::{
    Act, Finished, OperationStep, Refusal, Step, WaitCause, spec_changed_since, start_operation,
    step_at, unverified,
};

/// Starts the removal of the shrinking pool's highest node, or says why it must wait; a
/// refusal from the implementation is returned as such.
pub(crate) fn start<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    pool: &DesiredPool,
) -> Result<Step, Refusal> {
    let ordinal = view.observed.replicas(&pool.name) - 1;
    let wait = |cause: WaitCause, reason: String| Step::Wait {
        cause,
        reason,
        next: format!(
            "decommission node {ordinal} of pool {} once verified safe",
            pool.name
        ),
    };
    // Fail closed: every node's state must be proven by its pilot, not just its pod.
    if let Some(reason) = unverified(view, None) {
        return Ok(wait(WaitCause::NodeUnverified, reason));
    }
    let Some(leaving) = view.observed.pools[&pool.name].node(ordinal) else {
        return Ok(wait(
            WaitCause::NodeMissing,
            format!("node {ordinal} of pool {} has no pod", pool.name),
        ));
    };
    match db.prepare_leave(view, leaving) {
        Gate::Wait { cause, reason } => Ok(wait(cause, reason)),
        Gate::Refuse(refusal) => Err(refusal),
        Gate::Go(action) => Ok(start_operation(
            OperationKind::Decommission,
            &pool.name,
            leaving,
            view.observed.generation,
            Act::StartAction(action),
        )),
    }
}

/// The next step of a recorded removal.
pub(crate) fn carry_on<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    action: &ActionProgress,
) -> Step {
    let at =
        |phase: Phase, act: Act, waiting: Option<String>| step_at(op, phase, act, waiting, None);
    let Some(obs) = view.observed.pools.get(&op.pool) else {
        return at(
            Phase::Waiting,
            Act::Nothing,
            Some(format!("pool {} is not observed", op.pool)),
        );
    };
    let leaving = obs.node(op.ordinal);
    let in_statefulset = obs.statefulset_replicas.is_some_and(|r| r > op.ordinal);
    let removal_verified = op.phase.records_verified_removal();
    if !in_statefulset && !removal_verified {
        // Shrunk by someone else before every view confirmed the node left: its data may be the
        // only copy of what it did not stream yet. Keep the volume; the act phase restores the
        // StatefulSet and the removal resumes on the same data.
        return at(
            Phase::Waiting,
            Act::Nothing,
            Some(format!(
                "cannot verify the decommission's state: the StatefulSet no longer includes {} \
                 but its decommission was not verified (a change outside the operator); its \
                 volume is kept and the StatefulSet restored",
                op.node
            )),
        );
    }
    if !in_statefulset {
        if leaving.is_some() {
            return at(Phase::Removing, Act::Nothing, None);
        }
        return match obs.volumes.get(&op.ordinal) {
            Some(_) if view.observed.volume_policy == VolumePolicy::Delete => at(
                Phase::ReleasingVolume,
                Act::ReleaseVolume { delete: true },
                None,
            ),
            Some(v) if !v.decommissioned => at(
                Phase::ReleasingVolume,
                Act::ReleaseVolume { delete: false },
                None,
            ),
            _ => finish(op, true, left_message(op, view.observed.volume_policy)),
        };
    }
    match action {
        ActionProgress::Unknown { why } => at(
            Phase::Waiting,
            Act::Nothing,
            Some(format!("cannot verify the decommission's state: {why}")),
        ),
        ActionProgress::Failed { error } if spec_changed_since(view, op) => {
            finish(op, false, format!("{error}; let go after the spec changed"))
        }
        ActionProgress::Failed { error } => at(Phase::Failed, Act::Nothing, Some(error.clone())),
        ActionProgress::NotStarted => not_started(db, view, op),
        ActionProgress::Running { message, percent } => step_at(
            op,
            Phase::Streaming,
            Act::Nothing,
            None,
            Some(progress_text(message, *percent)),
        ),
        ActionProgress::Succeeded { .. } => {
            let Some(leaving) = leaving else {
                return at(
                    Phase::Verifying,
                    Act::Nothing,
                    Some(format!(
                        "pod {} is gone before the StatefulSet shrank",
                        op.node
                    )),
                );
            };
            match db.verify_left(view, leaving) {
                Ok(()) => at(Phase::Removing, Act::Shrink, None),
                Err(missing) => at(Phase::Verifying, Act::Nothing, Some(missing)),
            }
        }
    }
}

/// Recorded but never received (the operator stopped in between): nothing happened yet, so it
/// starts only if the spec still asks for it and every pre-check passes again now.
fn not_started<D: Database>(db: &D, view: View<'_, D::Detail>, op: &Operation) -> Step {
    let Some(pool) = view.desired.iter().find(|p| p.name == op.pool) else {
        return finish(
            op,
            false,
            format!("pool {} is no longer in the spec; never started", op.pool),
        );
    };
    let still_asked = pool.replicas <= op.ordinal;
    let mut record = op.clone();
    match start(db, view, pool) {
        Ok(Step::Operation(step)) if still_asked && step.operation.ordinal == op.ordinal => {
            record.phase = Phase::Starting;
            Step::Operation(Box::new(OperationStep::new(record, step.act)))
        }
        Ok(Step::Wait { reason, .. }) if still_asked => {
            record.phase = Phase::Waiting;
            let mut step = OperationStep::new(record, Act::Nothing);
            step.waiting = Some(reason);
            Step::Operation(Box::new(step))
        }
        Err(refusal) => finish(op, false, format!("never started: {}", refusal.reason)),
        _ => finish(
            op,
            false,
            "the spec no longer asks for this node to leave; never started".into(),
        ),
    }
}

fn left_message(op: &Operation, policy: VolumePolicy) -> String {
    format!(
        "{} left the cluster: its removal was verified by the database's own views before the \
         StatefulSet shrank; its volume was {}",
        op.node,
        match policy {
            VolumePolicy::Delete => "deleted",
            VolumePolicy::Retain => "retained and marked decommissioned",
        }
    )
}

/// The operation ends: one history record.
pub(crate) fn finish(op: &Operation, succeeded: bool, message: String) -> Step {
    let mut step = OperationStep::new(op.clone(), Act::Nothing);
    step.ends = true;
    step.finished.push(Finished {
        kind: op.kind,
        node: op.node.clone(),
        action_id: op.action_id.clone(),
        succeeded,
        message,
        started_at: Some(op.started_at.clone()).filter(|s| !s.is_empty()),
    });
    Step::Operation(Box::new(step))
}

pub(crate) fn progress_text(message: &str, percent: Option<u32>) -> String {
    match percent {
        Some(p) => format!("{message} ({p}%)"),
        None => message.to_string(),
    }
}
