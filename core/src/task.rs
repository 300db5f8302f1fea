//! Node tasks owed after a change (Cassandra: cleanup after a join, upgradesstables after a
//! major upgrade): one node at a time, each started only on a cluster proven healthy.

use crate::database::{Database, View};
use crate::leave::{finish, progress_text};
use crate::model::ActionProgress;
use crate::operation::{Operation, Phase};
use crate::planner::{Act, Step, WaitCause, start_operation, step_at, unverified};

/// Starts the first owed task whose node exists, or waits until every node is healthy.
pub(crate) fn start<D: Database>(db: &D, view: View<'_, D::Detail>) -> Option<Step> {
    let (task, pool, node) = view.observed.pending_tasks.iter().find_map(|t| {
        let (pool, node) = view.observed.find_node(&t.node)?;
        view.desired
            .iter()
            .any(|d| d.name == pool)
            .then_some((t, pool, node))
    })?;
    // Tasks rewrite data files: they start only on a cluster proven healthy everywhere.
    if let Some(reason) = unverified(view, None) {
        return Some(Step::Wait {
            cause: WaitCause::NodeUnverified,
            reason,
            next: format!(
                "{} on {} once every node is verified healthy",
                task.kind.as_str(),
                node.name
            ),
        });
    }
    let action = db.task_action(task.kind)?;
    Some(start_operation(
        task.kind,
        pool,
        node,
        view.observed.generation,
        Act::StartAction(action),
    ))
}

/// The next step of a recorded task.
pub(crate) fn carry_on<D: Database>(
    db: &D,
    view: View<'_, D::Detail>,
    op: &Operation,
    action: &ActionProgress,
) -> Step {
    let at = |phase, act, waiting, progress| step_at(op, phase, act, waiting, progress);
    let pool = view.observed.pools.get(&op.pool);
    let node = pool.and_then(|p| p.node(op.ordinal));
    let in_statefulset = pool
        .and_then(|p| p.statefulset_replicas)
        .is_some_and(|r| r > op.ordinal);
    match (node, action) {
        // A pod missing for a moment (evicted, restarting) still owes its task.
        (None, _) if in_statefulset => at(
            Phase::Waiting,
            Act::Nothing,
            Some(format!("pod {} does not exist right now", op.node)),
            None,
        ),
        // The node went away (scaled down): nothing is left to do.
        (None, _) => finish(op, true, format!("{} is no longer in the cluster", op.node)),
        (_, ActionProgress::Unknown { why }) => {
            at(Phase::Waiting, Act::Nothing, Some(why.clone()), None)
        }
        (Some(node), ActionProgress::NotStarted) => {
            match (node.is_verified_healthy(), db.task_action(op.kind)) {
                (true, Some(action)) => at(Phase::Starting, Act::StartAction(action), None, None),
                _ => at(
                    Phase::Waiting,
                    Act::Nothing,
                    Some(format!("{} is not verified healthy", op.node)),
                    None,
                ),
            }
        }
        (_, ActionProgress::Running { message, percent }) => at(
            Phase::Running,
            Act::Nothing,
            None,
            Some(progress_text(message, *percent)),
        ),
        (_, ActionProgress::Succeeded { verified }) => finish(
            op,
            true,
            format!(
                "{} {}; verified: {verified}",
                op.node,
                db.task_purpose(op.kind)
            ),
        ),
        (_, ActionProgress::Failed { error }) => {
            // Tasks lose nothing when they fail (the node keeps data it does not need, or
            // files in an older format it still reads): recorded and let go.
            finish(op, false, format!("{error}; no data is lost"))
        }
    }
}
