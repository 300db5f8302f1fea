//! The planner skeleton: a pure function from (spec, observation) to the single next step.
//!
//! The rules every database shares live here, once:
//! - a paused cluster is observed, never changed;
//! - an operation recorded in the status is carried to its end before anything else starts;
//! - pools are created empty, so every StatefulSet exists before a node joins;
//! - nothing is decided on a StatefulSet whose controller has not caught up;
//! - one node changes at a time, and only when every node is verified healthy;
//! - every unknown is a wait, with its reason;
//! - a refusal blocks only what it refuses.
//!
//! The questions only a database can answer go to its [`Database`] implementation.

use crate::database::{Database, View};
use crate::model::{DesiredPool, Health, Observed, ObservedNode};
use crate::operation::{
    NodeAction, Operation, OperationKind, Phase, action_id, generation_salt, revision_salt,
};
use crate::{leave, roll, task};

/// Why the planner waits, as a stable word for machines (Event actions); the wait's `reason`
/// says it to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCause {
    /// A StatefulSet has not yet observed its latest spec: bookkeeping, gone in a moment.
    StatefulSetCatchingUp,
    NodeMissing,
    NodeNotReady,
    NodeUnverified,
    ReplicationUnknown,
    DiskUnknown,
    VersionUnknown,
    /// Data is moving off a leaving node (Elasticsearch: shard copies relocating away).
    Evacuating,
    /// A leaving master-eligible node is being taken out of the voting configuration.
    MasterHandoff,
}

impl WaitCause {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitCause::StatefulSetCatchingUp => "StatefulSetCatchingUp",
            WaitCause::NodeMissing => "NodeMissing",
            WaitCause::NodeNotReady => "NodeNotReady",
            WaitCause::NodeUnverified => "NodeUnverified",
            WaitCause::ReplicationUnknown => "ReplicationUnknown",
            WaitCause::DiskUnknown => "DiskUnknown",
            WaitCause::VersionUnknown => "VersionUnknown",
            WaitCause::Evacuating => "Evacuating",
            WaitCause::MasterHandoff => "MasterHandoff",
        }
    }
}

/// What a refusal refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedChange {
    ScaleDown,
    ScaleUp,
}

impl RefusedChange {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedChange::ScaleDown => "ScaleDown",
            RefusedChange::ScaleUp => "ScaleUp",
        }
    }
}

/// A change the spec asks for that the operator refuses (fails closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub change: RefusedChange,
    pub reason: String,
    pub remedy: String,
}

/// What the act phase does for an operation step, besides recording it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// Nothing: the step only records where the operation is.
    Nothing,
    /// Ask the node's pilot to start the operation's action (idempotent by action ID).
    StartAction(NodeAction),
    /// Shrink the pool's StatefulSet by the node whose removal was verified.
    Shrink,
    /// Delete (or, retained, mark) the removed node's volume.
    ReleaseVolume { delete: bool },
    /// Delete the node's pod, only if it still has this UID.
    DeletePod { uid: String },
}

/// A finished part of an operation, for `status.history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub kind: OperationKind,
    pub node: String,
    pub action_id: String,
    pub succeeded: bool,
    /// What was verified, or why it failed.
    pub message: String,
    pub started_at: Option<String>,
}

/// One step of an operation: the record as it stands after the step, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationStep {
    /// The record to write (`status.operation`); its `phase` says where the operation is.
    pub operation: Operation,
    pub act: Act,
    /// Why the operation waits, when it waits.
    pub waiting: Option<String>,
    /// What the pilot reports of the action now.
    pub progress: Option<String>,
    /// Parts finished by this step (history), oldest first.
    pub finished: Vec<Finished>,
    /// The operation ends with this step: the record is cleared.
    pub ends: bool,
    /// Node tasks owed once this step is recorded (for example after an upgrade).
    pub owed: Vec<crate::operation::PendingTask>,
}

impl OperationStep {
    pub fn new(operation: Operation, act: Act) -> Self {
        OperationStep {
            operation,
            act,
            waiting: None,
            progress: None,
            finished: Vec::new(),
            ends: false,
            owed: Vec::new(),
        }
    }
}

/// The single next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Paused: nothing will be changed.
    Paused,
    /// Create the pool's StatefulSet with zero replicas.
    CreatePool { pool: String },
    /// Delete the StatefulSet of a pool removed from the spec, now without nodes or pods.
    DeletePool { pool: String },
    /// Grow the pool by one node.
    AddNode { pool: String, ordinal: i32 },
    /// One step of a recorded operation (started by this step or carried on).
    Operation(Box<OperationStep>),
    /// Nothing can safely happen now; `reason` says why, `next` what comes after.
    Wait {
        cause: WaitCause,
        reason: String,
        next: String,
    },
    /// Everything the operator may do matches the spec.
    Steady,
}

/// The planner's answer: the next step, and what it refuses of the spec meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub step: Step,
    pub refusal: Option<Refusal>,
}

impl Step {
    /// Whether this step changes the topology, data placement or a running node.
    pub fn is_disruptive(&self) -> bool {
        match self {
            Step::AddNode { .. } => true,
            Step::Operation(op) => !matches!(op.act, Act::Nothing),
            _ => false,
        }
    }

    /// The node a step is about, when there is one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Step::Operation(op) => Some(&op.operation.node),
            _ => None,
        }
    }

    pub fn operation(&self) -> Option<&OperationStep> {
        match self {
            Step::Operation(op) => Some(op),
            _ => None,
        }
    }

    /// Whether the act phase may change pod templates and the node configuration with this
    /// step: never while an operation is recorded or being started (the barrier), so a spec
    /// change made during an operation waits until it ends.
    pub fn allows_template_change(&self) -> bool {
        !matches!(self, Step::Operation(_) | Step::Paused)
    }
}

/// StatefulSet replicas the act phase applies for a pool, given a step: the observed count,
/// plus one for the pool gaining a node, minus one for the pool whose node's removal was
/// verified; a node whose removal is not verified stays, whoever shrank the StatefulSet.
pub fn statefulset_replicas<D>(observed: &Observed<D>, step: &Step, pool: &str) -> i32 {
    let current = observed.replicas(pool);
    match step {
        Step::AddNode { pool: target, .. } if target == pool => current + 1,
        Step::Operation(op) if op.operation.kind == OperationKind::Decommission => {
            let record = &op.operation;
            if record.pool != pool {
                return current;
            }
            match op.act {
                Act::Shrink if current == record.ordinal + 1 => record.ordinal,
                _ if !record.phase.records_verified_removal() => current.max(record.ordinal + 1),
                _ => current,
            }
        }
        _ => current,
    }
}

/// Decide the next step.
pub fn plan<D: Database>(
    db: &D,
    desired: &[DesiredPool],
    paused: bool,
    observed: &Observed<D::Detail>,
) -> Plan {
    let view = View { desired, observed };
    let step = |step| Plan {
        step,
        refusal: None,
    };
    if paused {
        return step(Step::Paused);
    }
    // An operation under way is carried to its end first: a spec change never leaves a node
    // half-removed or half-restarted.
    if let Some(in_flight) = &observed.in_flight {
        let op = &in_flight.operation;
        let next = match op.kind {
            OperationKind::Decommission => leave::carry_on(db, view, op, &in_flight.action),
            OperationKind::Restart | OperationKind::Upgrade => {
                roll::carry_on(db, view, op, &in_flight.action)
            }
            OperationKind::Cleanup | OperationKind::UpgradeSSTables => {
                task::carry_on(db, view, op, &in_flight.action)
            }
        };
        return step(next);
    }
    if let Some(pool) = desired.iter().find(|p| {
        !p.retiring
            && observed
                .pools
                .get(&p.name)
                .is_none_or(|o| o.statefulset_replicas.is_none())
    }) {
        return step(Step::CreatePool {
            pool: pool.name.clone(),
        });
    }
    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .is_some_and(|o| !o.statefulset_current)
    }) {
        return step(Step::Wait {
            cause: WaitCause::StatefulSetCatchingUp,
            reason: format!(
                "StatefulSet of pool {} has not yet observed its latest spec",
                pool.name
            ),
            next: "re-plan once the StatefulSet controller catches up".into(),
        });
    }
    plan_changes(db, view)
}

/// The next change on a cluster with no operation in flight and current StatefulSets.
fn plan_changes<D: Database>(db: &D, view: View<'_, D::Detail>) -> Plan {
    let observed = view.observed;
    let shrinking = view
        .desired
        .iter()
        .find(|p| observed.replicas(&p.name) > p.replicas);
    let mut refusal = shrinking.and_then(|_| db.refuse_leave(view, view.target_nodes()));
    let with = |step: Step, refusal: Option<Refusal>| Plan { step, refusal };

    // Every pod the StatefulSets should have must exist and be ready before anything changes.
    if let Some(wait) = wait_for_every_node(view) {
        return with(wait, refusal);
    }
    if let (Some(pool), None) = (shrinking, &refusal) {
        match leave::start(db, view, pool) {
            Ok(step) => return with(step, None),
            Err(refused) => refusal = Some(refused),
        }
    }
    if let Some(pool) = view.desired.iter().find(|p| {
        p.retiring
            && observed.replicas(&p.name) == 0
            && observed
                .pools
                .get(&p.name)
                .is_some_and(|o| o.nodes.is_empty())
    }) {
        return with(
            Step::DeletePool {
                pool: pool.name.clone(),
            },
            refusal,
        );
    }
    if let Some(step) = roll::start(db, view) {
        return with(step, refusal);
    }
    match add_node(db, view) {
        Ok(Some(step)) => return with(step, refusal),
        Ok(None) => {}
        Err(refused) => refusal = refusal.or(Some(refused)),
    }
    if let Some(step) = task::start(db, view) {
        return with(step, refusal);
    }
    with(Step::Steady, refusal)
}

fn add_node<D: Database>(db: &D, view: View<'_, D::Detail>) -> Result<Option<Step>, Refusal> {
    let mut pools: Vec<&DesiredPool> = view.desired.iter().filter(|p| !p.retiring).collect();
    // Stable: pools of one rank grow in spec order.
    pools.sort_by_key(|p| db.join_rank(&p.name));
    for pool in pools {
        let current = view.observed.replicas(&pool.name);
        if current >= pool.replicas {
            continue;
        }
        let reused = view
            .observed
            .pools
            .get(&pool.name)
            .and_then(|p| p.volumes.get(&current))
            .is_some_and(|v| v.decommissioned);
        if reused {
            return Err(Refusal {
                change: RefusedChange::ScaleUp,
                reason: format!(
                    "the data volume of node {current} of pool {} was retained after that node \
                     was decommissioned; a new node must not start on a decommissioned node's \
                     data",
                    pool.name
                ),
                remedy: format!(
                    "delete that PersistentVolumeClaim (after saving what you need from it), or \
                     set the replicas of pool {} back to {current}",
                    pool.name
                ),
            });
        }
        return Ok(Some(Step::AddNode {
            pool: pool.name.clone(),
            ordinal: current,
        }));
    }
    Ok(None)
}

fn wait_for_every_node<D>(view: View<'_, D>) -> Option<Step> {
    for pool in view.desired {
        let Some(obs) = view.observed.pools.get(&pool.name) else {
            continue;
        };
        for ordinal in 0..obs.statefulset_replicas.unwrap_or(0) {
            match obs.node(ordinal) {
                None => {
                    return Some(Step::Wait {
                        cause: WaitCause::NodeMissing,
                        reason: format!("node {ordinal} of pool {} has no pod yet", pool.name),
                        next: "wait for the StatefulSet to create the pod".into(),
                    });
                }
                Some(node) if !node.is_ready() => {
                    return Some(Step::Wait {
                        cause: WaitCause::NodeNotReady,
                        reason: format!("node {} is not ready ({})", node.name, describe(node)),
                        next: "wait until every node is healthy before changing the cluster".into(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// The first node of the cluster not proven healthy by its pilot, as a wait reason.
pub(crate) fn unverified<D>(view: View<'_, D>, except: Option<&str>) -> Option<String> {
    view.nodes()
        .filter(|n| Some(n.name.as_str()) != except)
        .find(|n| !n.is_verified_healthy())
        .map(|n| {
            format!(
                "node {} is not verified healthy by its pilot ({})",
                n.name,
                describe(n)
            )
        })
}

/// A node's state in words, for wait reasons.
pub fn describe<D>(node: &ObservedNode<D>) -> String {
    match (node.pod_ready, node.health()) {
        (_, Some(Health::Down)) => "pilot reports the database down".into(),
        (_, Some(Health::Joining)) => "joining the cluster".into(),
        (_, Some(Health::Leaving)) => "leaving the cluster".into(),
        (_, Some(Health::Left)) => "left the cluster".into(),
        (false, _) => "pod not ready".into(),
        (true, None) => "no current report from its pilot".into(),
        (true, Some(Health::Healthy)) => "healthy".into(),
    }
}

/// A new operation's record, in its first phase.
pub(crate) fn new_operation(
    kind: OperationKind,
    pool: &str,
    node: &ObservedNode<impl Sized>,
    phase: Phase,
    generation: i64,
) -> Operation {
    Operation {
        kind,
        phase,
        node: node.name.clone(),
        pool: pool.to_string(),
        ordinal: node.ordinal,
        action_id: action_id(kind, &node.name, &generation_salt(generation)),
        generation,
        started_at: String::new(),
        target_revision: None,
        target_version: None,
        from_version: None,
        pod_uid: None,
        nodes: Vec::new(),
        completed: Vec::new(),
    }
}

/// A step that starts a new operation on `node` with `act`.
pub(crate) fn start_operation(
    kind: OperationKind,
    pool: &str,
    node: &ObservedNode<impl Sized>,
    generation: i64,
    act: Act,
) -> Step {
    let operation = new_operation(kind, pool, node, Phase::Starting, generation);
    Step::Operation(Box::new(OperationStep::new(operation, act)))
}

/// A step of the recorded operation `op`, now in `phase`.
pub(crate) fn step_at(
    op: &Operation,
    phase: Phase,
    act: Act,
    waiting: Option<String>,
    progress: Option<String>,
) -> Step {
    let mut operation = op.clone();
    operation.phase = phase;
    let mut step = OperationStep::new(operation, act);
    step.waiting = waiting;
    step.progress = progress;
    Step::Operation(Box::new(step))
}

/// The action ID of a node's restart onto `revision`.
pub(crate) fn restart_action_id(node: &str, revision: &str) -> String {
    action_id(OperationKind::Restart, node, &revision_salt(revision))
}

/// A failed attempt of an older spec is let go once the spec changed.
pub(crate) fn spec_changed_since<D>(view: View<'_, D>, op: &Operation) -> bool {
    view.observed.generation != op.generation
}
