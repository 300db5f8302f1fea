//! The planner: a pure function from (spec, observed state) to the single next step.
//!
//! It never performs I/O, so every safety rule is property-tested over random states. The rules:
//! - a paused cluster is observed, never changed;
//! - one operation at a time: an operation recorded in the status (a decommission, a cleanup) is
//!   carried to its end before anything else starts, whatever the spec says meanwhile;
//! - only one node changes at a time, and only when every existing node is verified ready
//!   (pod ready through the pilot's readiness check and, when a pilot report exists, Up/Normal
//!   in the database's own view);
//! - a node leaves only through a verified decommission: every node Up/Normal in its pilot's
//!   view, every user keyspace's replication factor within the nodes that remain, the remaining
//!   nodes' free disk enough for the leaving node's data; its StatefulSet shrinks only once its
//!   own pilot reports it DECOMMISSIONED and another node's ring no longer holds it;
//! - anything unknown is a wait, with the reason spelt out for `kubectl describe`.

use std::collections::{BTreeMap, BTreeSet};

/// Desired shape of one node pool, derived from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPool {
    pub name: String,
    pub replicas: i32,
}

/// What the database's own view says of a node, as verified by its pilot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifiedState {
    /// Up and serving in its own view and its peers' (Cassandra: Up/Normal).
    UpNormal,
    /// Joining the cluster (bootstrapping, streaming data in).
    Joining,
    /// Leaving the cluster (decommission streaming out).
    Leaving,
    /// Left the cluster; holds no data of the ring.
    Decommissioned,
    /// The database process is down or unreachable by its pilot.
    Down,
}

/// A keyspace's replication in the cluster's datacenter, from a pilot's schema reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceReplication {
    pub name: String,
    pub replication_factor: u32,
    /// Cassandra's own replicated keyspaces (system_auth, system_distributed, system_traces).
    pub system: bool,
}

/// One pod of a pool as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    pub ordinal: i32,
    /// Pod Ready condition (its readiness probe is the pilot's check).
    pub pod_ready: bool,
    /// The pilot's latest verified report; `None` when there is none (unreachable, not yet up).
    pub verified: Option<VerifiedState>,
    /// The database's identity of the node (Cassandra host ID), when known.
    pub host_id: Option<String>,
    /// Host IDs of the nodes in this node's ring view, from a current pilot report.
    pub ring: Option<BTreeSet<String>>,
    /// Bytes of data the node holds (Cassandra's load), from a current pilot report.
    pub data_bytes: Option<u64>,
    /// Free bytes on the node's data volume, from a current pilot report.
    pub free_disk_bytes: Option<u64>,
    /// The schema's keyspaces as this node's pilot read them.
    pub keyspaces: Option<Vec<KeyspaceReplication>>,
}

impl ObservedNode {
    /// Ready to be counted on: pod ready and no pilot report contradicting Up/Normal.
    pub fn is_ready(&self) -> bool {
        self.pod_ready && matches!(self.verified, None | Some(VerifiedState::UpNormal))
    }

    /// Up/Normal in the database's own view, proven by a current pilot report (never assumed).
    pub fn is_verified_up_normal(&self) -> bool {
        self.pod_ready && self.verified == Some(VerifiedState::UpNormal)
    }
}

/// One pool's StatefulSet as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedPool {
    /// `spec.replicas` of the StatefulSet, or `None` when it does not exist yet.
    pub statefulset_replicas: Option<i32>,
    /// Whether the StatefulSet controller has caught up with the latest spec
    /// (`status.observedGeneration == metadata.generation`); decisions on a stale view wait.
    pub statefulset_current: bool,
    pub nodes: Vec<ObservedNode>,
    /// Data volumes (PVCs) of the pool by ordinal, including those of removed nodes.
    pub volumes: BTreeMap<i32, VolumeState>,
}

/// A node's data volume (PVC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeState {
    /// Marked as holding the data of a node that was decommissioned (retained by policy):
    /// a new node must not start on it.
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
    /// The pilot verified the action's intended end state; `verified` lists its checks.
    Succeeded { verified: String },
    /// The action failed or its end state could not be verified.
    Failed { error: String },
    /// The pilot could not be asked (unreachable, pod gone, ...): fail closed.
    Unknown { why: String },
}

/// The kind of a recorded, multi-step operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Decommission,
    Cleanup,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Decommission => "Decommission",
            OperationKind::Cleanup => "Cleanup",
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "Decommission" => Some(OperationKind::Decommission),
            "Cleanup" => Some(OperationKind::Cleanup),
            _ => None,
        }
    }
}

/// The operation recorded in the status (intent written before acting) and what the pilot
/// of its node now says of its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The status recorded a verified removal (the StatefulSet shrink or later): the node left
    /// the ring by both views before the operator removed it.
    pub removal_verified: bool,
    pub kind: OperationKind,
    pub pool: String,
    pub ordinal: i32,
    pub node: String,
    pub action_id: String,
    pub action: ActionProgress,
}

/// What happens to a removed node's PVC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VolumePolicy {
    /// Delete it after the decommission is verified (the default).
    #[default]
    Delete,
    /// Keep it, marked as decommissioned.
    Retain,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub pools: BTreeMap<String, ObservedPool>,
    /// `metadata.generation` of the cluster (part of new action IDs).
    pub generation: i64,
    /// The operation recorded in the status, if one is under way.
    pub in_flight: Option<InFlight>,
    /// Nodes that hold data they may no longer own since a node joined (cleanup pending).
    pub pending_cleanup: Vec<String>,
    pub volume_policy: VolumePolicy,
}

/// Where a decommission is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecommissionPhase {
    /// Ask the pilot to start (or confirm it started) the decommission.
    Start { force: bool },
    /// Recorded but not started, and not safe to start now; `reason` says why.
    Pending { reason: String },
    /// The node streams its data to the others.
    Streaming {
        message: String,
        percent: Option<u32>,
    },
    /// The pilot reported success; waiting for both views to confirm. `reason` says which.
    Verifying { reason: String },
    /// Verified: shrink the StatefulSet by this node.
    Shrink,
    /// The StatefulSet shrank; waiting for the pod to go.
    AwaitPodGone,
    /// Delete (or, under the Retain policy, mark) the node's PVC.
    ReleaseVolume { delete: bool },
    /// Everything is done: record it and clear the operation.
    Done,
    /// A failed attempt let go after the spec changed: record it and clear the operation.
    Abandoned { error: String },
    /// The pilot reports the action failed: nothing is removed; waiting for the user.
    Failed { error: String },
    /// The pilot cannot be asked: nothing is done until it answers.
    Unknown { why: String },
}

/// Where a cleanup is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupPhase {
    Start,
    Running {
        message: String,
        percent: Option<u32>,
    },
    /// Finished; `verified` says what proves it.
    Done {
        verified: String,
    },
    Failed {
        error: String,
    },
    Unknown {
        why: String,
    },
}

/// The single next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Paused: nothing will be changed.
    Paused,
    /// Create the pool's StatefulSet with zero replicas (then grow it one node at a time).
    CreatePool { pool: String },
    /// Grow the pool by one node.
    AddNode { pool: String, ordinal: i32 },
    /// Remove the pool's highest node through a verified decommission, step by step.
    Decommission {
        pool: String,
        ordinal: i32,
        node: String,
        action_id: String,
        phase: DecommissionPhase,
    },
    /// Drop data a node no longer owns after another node joined.
    Cleanup {
        node: String,
        action_id: String,
        phase: CleanupPhase,
    },
    /// Nothing can safely happen now; `reason` says why, `next` what comes after.
    Wait {
        cause: WaitCause,
        reason: String,
        next: String,
    },
    /// The spec asks for something the operator refuses (fails closed); nothing is touched.
    Blocked { reason: String, remedy: String },
    /// Everything matches the spec.
    Steady,
}

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
        }
    }
}

impl DecommissionPhase {
    /// The node left the ring by both views and is being (or was) removed.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            DecommissionPhase::Shrink
                | DecommissionPhase::AwaitPodGone
                | DecommissionPhase::ReleaseVolume { .. }
                | DecommissionPhase::Done
        )
    }
}

impl Step {
    /// Whether this step changes the database topology or its data placement.
    pub fn is_disruptive(&self) -> bool {
        matches!(
            self,
            Step::AddNode { .. }
                | Step::Decommission {
                    phase: DecommissionPhase::Start { .. }
                        | DecommissionPhase::Shrink
                        | DecommissionPhase::ReleaseVolume { .. },
                    ..
                }
                | Step::Cleanup {
                    phase: CleanupPhase::Start,
                    ..
                }
        )
    }

    /// The node a step is about, when there is one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Step::Decommission { node, .. } | Step::Cleanup { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// The action ID of an operation on a node, for a spec generation: recorded in the status
/// before the pilot is asked, so a restarted operator resumes the same action.
pub fn action_id(kind: OperationKind, node: &str, generation: i64) -> String {
    let prefix = match kind {
        OperationKind::Decommission => "decommission",
        OperationKind::Cleanup => "cleanup",
    };
    format!("{prefix}-{node}-g{generation}")
}

/// StatefulSet replicas the act phase should apply for each pool, given a step: the observed
/// count, plus one for the pool gaining a node, minus one for the pool whose node's
/// decommission was verified.
pub fn statefulset_replicas(observed: &Observed, step: &Step, pool: &str) -> i32 {
    let current = observed
        .pools
        .get(pool)
        .and_then(|p| p.statefulset_replicas)
        .unwrap_or(0);
    match step {
        Step::AddNode { pool: target, .. } if target == pool => current + 1,
        Step::Decommission {
            pool: target,
            ordinal,
            phase: DecommissionPhase::Shrink,
            ..
        } if target == pool && current == ordinal + 1 => *ordinal,
        // Until a decommission is verified its node stays in the StatefulSet, whoever shrank it.
        Step::Decommission {
            pool: target,
            ordinal,
            phase,
            ..
        } if target == pool && !phase.is_removal() => current.max(ordinal + 1),
        _ => current,
    }
}

/// Decide the next step.
pub fn plan(desired: &[DesiredPool], paused: bool, observed: &Observed) -> Step {
    if paused {
        return Step::Paused;
    }

    // An operation under way is carried to its end first: a spec change never leaves a node
    // half-decommissioned (Cassandra cannot cancel a decommission cleanly).
    if let Some(op) = &observed.in_flight {
        return match op.kind {
            OperationKind::Decommission => continue_decommission(desired, observed, op),
            OperationKind::Cleanup => continue_cleanup(observed, op),
        };
    }

    // Pools are created first (with zero nodes) so that every StatefulSet exists before nodes
    // join: creating one is not disruptive.
    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .and_then(|o| o.statefulset_replicas)
            .is_none()
    }) {
        return Step::CreatePool {
            pool: pool.name.clone(),
        };
    }

    // Decisions on a StatefulSet whose controller has not caught up would be made on stale
    // pod counts.
    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .is_some_and(|o| !o.statefulset_current)
    }) {
        return Step::Wait {
            cause: WaitCause::StatefulSetCatchingUp,
            reason: format!(
                "StatefulSet of pool {} has not yet observed its latest spec",
                pool.name
            ),
            next: "re-plan once the StatefulSet controller catches up".into(),
        };
    }

    let shrinking = desired
        .iter()
        .find(|p| current_replicas(observed, &p.name) > p.replicas);
    if shrinking.is_some()
        && let Some(refusal) = refuse_scale_down(desired, observed)
    {
        return refusal;
    }

    // Every pod the StatefulSets should have must exist and be ready before anything changes.
    if let Some(wait) = wait_for_every_node(desired, observed) {
        return wait;
    }

    if let Some(pool) = shrinking {
        return start_decommission(desired, observed, pool);
    }

    for pool in desired {
        let current = current_replicas(observed, &pool.name);
        if current < pool.replicas {
            let reused = observed
                .pools
                .get(&pool.name)
                .and_then(|p| p.volumes.get(&current))
                .is_some_and(|v| v.decommissioned);
            if reused {
                return Step::Blocked {
                    reason: format!(
                        "the data volume of node {current} of pool {} was retained after that \
                         node was decommissioned; a new node must not start on a decommissioned \
                         node's data",
                        pool.name
                    ),
                    remedy: format!(
                        "delete that PersistentVolumeClaim (after saving what you need from it), \
                         or set the replicas of pool {} back to {current}",
                        pool.name
                    ),
                };
            }
            return Step::AddNode {
                pool: pool.name.clone(),
                ordinal: current,
            };
        }
    }

    // Nodes that held data before a node joined drop what they no longer own, one at a time.
    let existing: BTreeSet<&str> = all_nodes(desired, observed)
        .map(|n| n.name.as_str())
        .collect();
    if let Some(node) = observed
        .pending_cleanup
        .iter()
        .find(|n| existing.contains(n.as_str()))
    {
        // Cleanup rewrites SSTables: it starts only on a cluster proven Up/Normal everywhere.
        if let Some(unverified) = all_nodes(desired, observed).find(|n| !n.is_verified_up_normal())
        {
            return Step::Wait {
                cause: WaitCause::NodeUnverified,
                reason: format!(
                    "node {} is not verified Up/Normal by its pilot ({})",
                    unverified.name,
                    describe(unverified)
                ),
                next: format!("clean up {node} once every node is verified Up/Normal"),
            };
        }
        return Step::Cleanup {
            node: node.clone(),
            action_id: action_id(OperationKind::Cleanup, node, observed.generation),
            phase: CleanupPhase::Start,
        };
    }
    Step::Steady
}

fn current_replicas(observed: &Observed, pool: &str) -> i32 {
    observed
        .pools
        .get(pool)
        .and_then(|o| o.statefulset_replicas)
        .unwrap_or(0)
}

/// The nodes of the desired pools.
fn all_nodes<'a>(
    desired: &'a [DesiredPool],
    observed: &'a Observed,
) -> impl Iterator<Item = &'a ObservedNode> {
    desired
        .iter()
        .filter_map(|p| observed.pools.get(&p.name))
        .flat_map(|p| p.nodes.iter())
}

fn wait_for_every_node(desired: &[DesiredPool], observed: &Observed) -> Option<Step> {
    for pool in desired {
        let Some(obs) = observed.pools.get(&pool.name) else {
            continue;
        };
        let expected = obs.statefulset_replicas.unwrap_or(0);
        for ordinal in 0..expected {
            match obs.nodes.iter().find(|n| n.ordinal == ordinal) {
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
                        next: "wait until every node is Up/Normal before changing the topology"
                            .into(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// The schema's keyspaces as every Up/Normal node's pilot read them, each keyspace with the
/// highest replication factor any of them saw (a reading can be seconds old, and a schema change
/// reaches the nodes one by one). Unknown unless at least one node has a reading.
fn keyspaces(desired: &[DesiredPool], observed: &Observed) -> Option<Vec<KeyspaceReplication>> {
    let mut merged: BTreeMap<&str, KeyspaceReplication> = BTreeMap::new();
    let mut any = false;
    for list in all_nodes(desired, observed)
        .filter(|n| n.is_verified_up_normal())
        .filter_map(|n| n.keyspaces.as_ref())
    {
        any = true;
        for k in list {
            merged
                .entry(&k.name)
                .and_modify(|m| {
                    m.replication_factor = m.replication_factor.max(k.replication_factor)
                })
                .or_insert_with(|| k.clone());
        }
    }
    any.then(|| merged.into_values().collect())
}

/// A scale-down the spec asks for that can never be safe: refused before anything is touched.
/// Unknowns are not refusals (they wait, in [`start_decommission`]).
fn refuse_scale_down(desired: &[DesiredPool], observed: &Observed) -> Option<Step> {
    let target: i32 = desired.iter().map(|p| p.replicas).sum();
    let current: i32 = desired
        .iter()
        .map(|p| current_replicas(observed, &p.name))
        .sum();
    let keyspaces = keyspaces(desired, observed)?;
    let too_replicated: Vec<String> = keyspaces
        .iter()
        .filter(|k| !k.system && i64::from(k.replication_factor) > i64::from(target))
        .map(|k| format!("{} (RF {})", k.name, k.replication_factor))
        .collect();
    if too_replicated.is_empty() {
        return None;
    }
    let needed = keyspaces
        .iter()
        .filter(|k| !k.system)
        .map(|k| k.replication_factor)
        .max()
        .unwrap_or(0);
    Some(Step::Blocked {
        reason: format!(
            "scaling down to {target} nodes would leave fewer nodes than the replication factor of \
             keyspace {}: every replica must have a node of its own",
            too_replicated.join(", ")
        ),
        remedy: format!(
            "keep at least {needed} nodes (set replicas to {needed} or more; {current} now), or \
             lower the keyspace's replication factor with ALTER KEYSPACE first"
        ),
    })
}

fn start_decommission(desired: &[DesiredPool], observed: &Observed, pool: &DesiredPool) -> Step {
    let obs = &observed.pools[&pool.name];
    let ordinal = current_replicas(observed, &pool.name) - 1;
    let wait = |cause: WaitCause, reason: String| Step::Wait {
        cause,
        reason,
        next: format!(
            "decommission node {ordinal} of pool {} once verified safe",
            pool.name
        ),
    };
    // Fail closed: every node's state must be proven by its pilot, not just its pod.
    if let Some(node) = all_nodes(desired, observed).find(|n| !n.is_verified_up_normal()) {
        return wait(
            WaitCause::NodeUnverified,
            format!(
                "node {} is not verified Up/Normal by its pilot ({})",
                node.name,
                describe(node)
            ),
        );
    }
    let Some(leaving) = obs.nodes.iter().find(|n| n.ordinal == ordinal) else {
        return wait(
            WaitCause::NodeMissing,
            format!("node {ordinal} of pool {} has no pod", pool.name),
        );
    };
    let Some(keyspaces) = keyspaces(desired, observed) else {
        return wait(
            WaitCause::ReplicationUnknown,
            "no pilot has reported the keyspaces' replication yet".into(),
        );
    };
    if let Some(node) = all_nodes(desired, observed).find(|n| n.keyspaces.is_none()) {
        return wait(
            WaitCause::ReplicationUnknown,
            format!(
                "the pilot of {} has not reported the keyspaces' replication",
                node.name
            ),
        );
    }
    let remaining: i32 = desired
        .iter()
        .map(|p| current_replicas(observed, &p.name))
        .sum::<i32>()
        - 1;
    // Cassandra's own keyspaces may be replicated more widely than the nodes that remain
    // (system_distributed has RF 3); they are re-replicated on every node that stays, and
    // Cassandra refuses such a decommission unless forced. User keyspaces were checked above.
    let force = keyspaces
        .iter()
        .any(|k| i64::from(k.replication_factor) > i64::from(remaining));
    let Some(data) = leaving.data_bytes else {
        return wait(
            WaitCause::DiskUnknown,
            format!("the data size of {} is not known", leaving.name),
        );
    };
    let mut free: u64 = 0;
    for node in all_nodes(desired, observed).filter(|n| n.name != leaving.name) {
        let Some(f) = node.free_disk_bytes else {
            return wait(
                WaitCause::DiskUnknown,
                format!("the free disk of {} is not known", node.name),
            );
        };
        free = free.saturating_add(f);
    }
    // Streamed data lands as new SSTables that compaction rewrites: keep room for twice the data.
    if free < data.saturating_mul(2) {
        return Step::Blocked {
            reason: format!(
                "the remaining nodes have {free} bytes free, not enough to take the {data} bytes \
                 of {} (twice its data is needed for streaming and compaction)",
                leaving.name
            ),
            remedy: format!(
                "grow the volumes of pool {} (spec.nodePools[].storage.size) or free space, or \
                 set the replicas back to {}",
                pool.name,
                ordinal + 1
            ),
        };
    }
    Step::Decommission {
        pool: pool.name.clone(),
        ordinal,
        node: leaving.name.clone(),
        action_id: action_id(
            OperationKind::Decommission,
            &leaving.name,
            observed.generation,
        ),
        phase: DecommissionPhase::Start { force },
    }
}

fn continue_decommission(desired: &[DesiredPool], observed: &Observed, op: &InFlight) -> Step {
    let step = |phase| Step::Decommission {
        pool: op.pool.clone(),
        ordinal: op.ordinal,
        node: op.node.clone(),
        action_id: op.action_id.clone(),
        phase,
    };
    let Some(obs) = observed.pools.get(&op.pool) else {
        return step(DecommissionPhase::Unknown {
            why: format!("pool {} is not observed", op.pool),
        });
    };
    let leaving = obs.nodes.iter().find(|n| n.ordinal == op.ordinal);
    let in_statefulset = obs.statefulset_replicas.is_some_and(|r| r > op.ordinal);
    if !in_statefulset && !op.removal_verified {
        // Shrunk by someone else before both views confirmed the node left: its data may be
        // the only copy of what it did not stream yet. Keep the volume; the act phase restores
        // the StatefulSet and the decommission resumes on the same data.
        return step(DecommissionPhase::Unknown {
            why: format!(
                "the StatefulSet no longer includes {} but its decommission was not verified (a \
                 change outside the operator); its volume is kept and the StatefulSet restored",
                op.node
            ),
        });
    }
    if !in_statefulset {
        if leaving.is_some() {
            return step(DecommissionPhase::AwaitPodGone);
        }
        return match obs.volumes.get(&op.ordinal) {
            Some(_) if observed.volume_policy == VolumePolicy::Delete => {
                step(DecommissionPhase::ReleaseVolume { delete: true })
            }
            Some(v) if !v.decommissioned => {
                step(DecommissionPhase::ReleaseVolume { delete: false })
            }
            _ => step(DecommissionPhase::Done),
        };
    }
    match &op.action {
        ActionProgress::Unknown { why } => step(DecommissionPhase::Unknown { why: why.clone() }),
        ActionProgress::Failed { error } => {
            // A failed attempt of an older spec is let go once the spec changed: the next plan
            // starts afresh (a new decommission gets a new action ID).
            let current_id = action_id(OperationKind::Decommission, &op.node, observed.generation);
            if current_id != op.action_id {
                step(DecommissionPhase::Abandoned {
                    error: error.clone(),
                })
            } else {
                step(DecommissionPhase::Failed {
                    error: error.clone(),
                })
            }
        }
        ActionProgress::NotStarted => {
            // Recorded but never received (the operator stopped in between): nothing happened
            // yet, so start it only if the spec still asks for it and every pre-check passes
            // again now.
            let Some(pool) = desired.iter().find(|p| p.name == op.pool) else {
                return step(DecommissionPhase::Abandoned {
                    error: format!("pool {} is no longer in the spec; never started", op.pool),
                });
            };
            match start_decommission(desired, observed, pool) {
                Step::Decommission {
                    ordinal,
                    phase: DecommissionPhase::Start { force },
                    ..
                } if ordinal == op.ordinal && pool.replicas <= op.ordinal => {
                    step(DecommissionPhase::Start { force })
                }
                Step::Wait { reason, .. } if pool.replicas <= op.ordinal => {
                    step(DecommissionPhase::Pending { reason })
                }
                other => step(DecommissionPhase::Abandoned {
                    error: match other {
                        Step::Blocked { reason, .. } => format!("never started: {reason}"),
                        _ => "the spec no longer asks for this node to leave; never started".into(),
                    },
                }),
            }
        }
        ActionProgress::Running { message, percent } => step(DecommissionPhase::Streaming {
            message: message.clone(),
            percent: *percent,
        }),
        ActionProgress::Succeeded { .. } => {
            let Some(leaving) = leaving else {
                return step(DecommissionPhase::Verifying {
                    reason: format!("pod {} is gone before the StatefulSet shrank", op.node),
                });
            };
            if leaving.verified != Some(VerifiedState::Decommissioned) {
                return step(DecommissionPhase::Verifying {
                    reason: format!(
                        "{}'s own view does not show DECOMMISSIONED yet ({})",
                        op.node,
                        describe(leaving)
                    ),
                });
            }
            let Some(host_id) = &leaving.host_id else {
                return step(DecommissionPhase::Verifying {
                    reason: format!("the host ID of {} is not known", op.node),
                });
            };
            let witness = all_nodes(desired, observed).find(|n| {
                n.name != op.node
                    && n.is_verified_up_normal()
                    // A ring that lacks the witness itself is no proof (an empty or failed read).
                    && n.ring.as_ref().is_some_and(|r| {
                        n.host_id.as_ref().is_some_and(|own| r.contains(own)) && !r.contains(host_id)
                    })
            });
            if witness.is_none() {
                return step(DecommissionPhase::Verifying {
                    reason: format!(
                        "no other Up/Normal node confirms yet that {} left its ring",
                        op.node
                    ),
                });
            }
            step(DecommissionPhase::Shrink)
        }
    }
}

fn continue_cleanup(observed: &Observed, op: &InFlight) -> Step {
    let step = |phase| Step::Cleanup {
        node: op.node.clone(),
        action_id: op.action_id.clone(),
        phase,
    };
    let pool = observed.pools.get(&op.pool);
    let node = pool.and_then(|p| p.nodes.iter().find(|n| n.ordinal == op.ordinal));
    let in_statefulset = pool
        .and_then(|p| p.statefulset_replicas)
        .is_some_and(|r| r > op.ordinal);
    match &op.action {
        // A pod missing for a moment (evicted, restarting) still owes its cleanup.
        _ if node.is_none() && in_statefulset => step(CleanupPhase::Unknown {
            why: format!("pod {} does not exist right now", op.node),
        }),
        // The node went away (scaled down): nothing is left to clean.
        _ if node.is_none() => step(CleanupPhase::Done {
            verified: format!("{} is no longer in the cluster", op.node),
        }),
        ActionProgress::Unknown { why } => step(CleanupPhase::Unknown { why: why.clone() }),
        ActionProgress::NotStarted => {
            if node.is_some_and(ObservedNode::is_verified_up_normal) {
                step(CleanupPhase::Start)
            } else {
                step(CleanupPhase::Unknown {
                    why: format!("{} is not verified Up/Normal", op.node),
                })
            }
        }
        ActionProgress::Running { message, percent } => step(CleanupPhase::Running {
            message: message.clone(),
            percent: *percent,
        }),
        ActionProgress::Succeeded { verified } => step(CleanupPhase::Done {
            verified: verified.clone(),
        }),
        ActionProgress::Failed { error } => step(CleanupPhase::Failed {
            error: error.clone(),
        }),
    }
}

fn describe(node: &ObservedNode) -> String {
    match (node.pod_ready, node.verified) {
        (_, Some(VerifiedState::Down)) => "pilot reports the database down".into(),
        (_, Some(VerifiedState::Joining)) => "joining the ring".into(),
        (_, Some(VerifiedState::Leaving)) => "leaving the ring".into(),
        (_, Some(VerifiedState::Decommissioned)) => "decommissioned".into(),
        (false, _) => "pod not ready".into(),
        (true, None) => "no current report from its pilot".into(),
        (true, Some(VerifiedState::UpNormal)) => "Up/Normal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(pool: &str, ordinal: i32, ready: bool) -> ObservedNode {
        ObservedNode {
            name: format!("c-{pool}-{ordinal}"),
            ordinal,
            pod_ready: ready,
            verified: ready.then_some(VerifiedState::UpNormal),
            ..Default::default()
        }
    }

    fn pool_with(replicas: i32, ready: i32) -> ObservedPool {
        ObservedPool {
            statefulset_replicas: Some(replicas),
            statefulset_current: true,
            nodes: (0..replicas).map(|o| node("a", o, o < ready)).collect(),
            volumes: (0..replicas).map(|o| (o, VolumeState::default())).collect(),
        }
    }

    fn desired(replicas: i32) -> Vec<DesiredPool> {
        vec![DesiredPool {
            name: "a".into(),
            replicas,
        }]
    }

    fn keyspaces(user_rf: u32) -> Vec<KeyspaceReplication> {
        vec![
            KeyspaceReplication {
                name: "app".into(),
                replication_factor: user_rf,
                system: false,
            },
            KeyspaceReplication {
                name: "system_distributed".into(),
                replication_factor: 3,
                system: true,
            },
        ]
    }

    /// A pool of `replicas` nodes, each fully verified by its pilot: Up/Normal, host ID
    /// `h<ordinal>`, every node in its ring, 1 MB of data and 1 GB free.
    fn healthy(replicas: i32, user_rf: u32) -> Observed {
        let ring: BTreeSet<String> = (0..replicas).map(|o| format!("h{o}")).collect();
        let mut pool = pool_with(replicas, replicas);
        for n in &mut pool.nodes {
            n.host_id = Some(format!("h{}", n.ordinal));
            n.ring = Some(ring.clone());
            n.data_bytes = Some(1_000_000);
            n.free_disk_bytes = Some(1_000_000_000);
            n.keyspaces = Some(keyspaces(user_rf));
        }
        Observed {
            pools: [("a".to_string(), pool)].into(),
            generation: 7,
            ..Default::default()
        }
    }

    fn succeeded() -> ActionProgress {
        ActionProgress::Succeeded {
            verified: "checked".into(),
        }
    }

    fn in_flight(observed: &mut Observed, action: ActionProgress) {
        observed.in_flight = Some(InFlight {
            removal_verified: false,
            kind: OperationKind::Decommission,
            pool: "a".into(),
            ordinal: 2,
            node: "c-a-2".into(),
            action_id: "decommission-c-a-2-g7".into(),
            action,
        });
    }

    fn phase(step: Step) -> DecommissionPhase {
        match step {
            Step::Decommission { phase, .. } => phase,
            other => panic!("expected a decommission step, got {other:?}"),
        }
    }

    #[test]
    fn creates_missing_pool_first() {
        let step = plan(&desired(3), false, &Observed::default());
        assert_eq!(step, Step::CreatePool { pool: "a".into() });
    }

    #[test]
    fn adds_one_node_when_all_ready() {
        let observed = Observed {
            pools: [("a".to_string(), pool_with(2, 2))].into(),
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(3), false, &observed),
            Step::AddNode {
                pool: "a".into(),
                ordinal: 2
            }
        );
    }

    #[test]
    fn waits_for_unready_node() {
        let observed = Observed {
            pools: [("a".to_string(), pool_with(2, 1))].into(),
            ..Default::default()
        };
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn pilot_report_overrides_pod_readiness() {
        let mut pool = pool_with(2, 2);
        pool.nodes[1].verified = Some(VerifiedState::Down);
        let observed = Observed {
            pools: [("a".to_string(), pool)].into(),
            ..Default::default()
        };
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn refuses_scale_down_below_a_user_keyspace_replication_factor() {
        let step = plan(&desired(1), false, &healthy(3, 2));
        let Step::Blocked { reason, remedy } = step else {
            panic!("expected Blocked, got {step:?}");
        };
        assert!(reason.contains("app (RF 2)"), "{reason}");
        assert!(remedy.contains("at least 2"), "{remedy}");
    }

    #[test]
    fn decommissions_the_highest_node_forcing_only_for_system_keyspaces() {
        let step = plan(&desired(2), false, &healthy(3, 2));
        assert_eq!(
            step,
            Step::Decommission {
                pool: "a".into(),
                ordinal: 2,
                node: "c-a-2".into(),
                action_id: "decommission-c-a-2-g7".into(),
                // system_distributed has RF 3 and two nodes remain.
                phase: DecommissionPhase::Start { force: true },
            }
        );
        assert!(step.is_disruptive());
        // Nothing shrinks when the decommission starts.
        assert_eq!(statefulset_replicas(&healthy(3, 2), &step, "a"), 3);

        let mut observed = healthy(4, 2);
        observed.pools.get_mut("a").expect("pool").nodes[0].keyspaces = Some(vec![]);
        for n in &mut observed.pools.get_mut("a").expect("pool").nodes {
            n.keyspaces = Some(keyspaces(2).into_iter().filter(|k| !k.system).collect());
        }
        assert_eq!(
            phase(plan(&desired(3), false, &observed)),
            DecommissionPhase::Start { force: false }
        );
    }

    #[test]
    fn scale_down_waits_on_every_unknown() {
        type MakeUnknown = fn(&mut ObservedNode);
        let cases: [(&str, MakeUnknown); 5] = [
            ("no current report", |n| n.verified = None),
            ("leaving", |n| n.verified = Some(VerifiedState::Leaving)),
            ("keyspaces unknown", |n| n.keyspaces = None),
            ("data size unknown", |n| n.data_bytes = None),
            ("free disk unknown", |n| n.free_disk_bytes = None),
        ];
        for (what, change) in cases {
            let mut observed = healthy(3, 2);
            for n in &mut observed.pools.get_mut("a").expect("pool").nodes {
                if what == "keyspaces unknown" || n.ordinal == 1 || what == "data size unknown" {
                    change(n);
                }
            }
            let step = plan(&desired(2), false, &observed);
            assert!(matches!(step, Step::Wait { .. }), "{what}: {step:?}");
        }
    }

    #[test]
    fn refuses_scale_down_without_disk_for_the_leaving_data() {
        let mut observed = healthy(3, 2);
        for n in &mut observed.pools.get_mut("a").expect("pool").nodes {
            n.data_bytes = Some(1_500_000_000);
        }
        let step = plan(&desired(2), false, &observed);
        let Step::Blocked { reason, .. } = step else {
            panic!("expected Blocked, got {step:?}");
        };
        assert!(reason.contains("not enough"), "{reason}");
    }

    #[test]
    fn a_decommission_runs_through_its_verified_phases() {
        let mut observed = healthy(3, 2);
        in_flight(&mut observed, ActionProgress::NotStarted);
        assert_eq!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Start { force: true }
        );
        // Recorded but never started, and the spec no longer asks for it: dropped untouched.
        assert!(matches!(
            phase(plan(&desired(3), false, &observed)),
            DecommissionPhase::Abandoned { .. }
        ));

        in_flight(
            &mut observed,
            ActionProgress::Running {
                message: "streaming".into(),
                percent: None,
            },
        );
        observed.pools.get_mut("a").expect("pool").nodes[2].verified = Some(VerifiedState::Leaving);
        // A spec change while streaming (scaled back up) does not interrupt it.
        for replicas in [2, 3, 5] {
            assert!(matches!(
                phase(plan(&desired(replicas), false, &observed)),
                DecommissionPhase::Streaming { .. }
            ));
        }

        in_flight(&mut observed, succeeded());
        // The pilot's success alone is not enough: the node's own view must agree...
        assert!(matches!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Verifying { .. }
        ));
        observed.pools.get_mut("a").expect("pool").nodes[2].verified =
            Some(VerifiedState::Decommissioned);
        // ...and a peer must no longer hold it in its ring.
        assert!(matches!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Verifying { .. }
        ));
        // An empty ring (a failed read) proves nothing: it must at least hold the witness.
        observed.pools.get_mut("a").expect("pool").nodes[1].ring = Some(BTreeSet::new());
        assert!(matches!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Verifying { .. }
        ));
        let ring: BTreeSet<String> = ["h0".to_string(), "h1".to_string()].into();
        observed.pools.get_mut("a").expect("pool").nodes[1].ring = Some(ring);
        let step = plan(&desired(2), false, &observed);
        assert_eq!(phase(step.clone()), DecommissionPhase::Shrink);
        assert_eq!(statefulset_replicas(&observed, &step, "a"), 2);

        let pool = observed.pools.get_mut("a").expect("pool");
        pool.statefulset_replicas = Some(2);
        // Shrunk before the status recorded the verified removal (by someone else): the node
        // and its volume stay, and the StatefulSet is restored.
        let step = plan(&desired(2), false, &observed);
        assert!(matches!(
            phase(step.clone()),
            DecommissionPhase::Unknown { .. }
        ));
        assert_eq!(statefulset_replicas(&observed, &step, "a"), 3);
        if let Some(op) = observed.in_flight.as_mut() {
            op.removal_verified = true;
        }
        assert_eq!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::AwaitPodGone
        );
        observed.pools.get_mut("a").expect("pool").nodes.pop();
        assert_eq!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::ReleaseVolume { delete: true }
        );
        observed.volume_policy = VolumePolicy::Retain;
        assert_eq!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::ReleaseVolume { delete: false }
        );
        observed.pools.get_mut("a").expect("pool").volumes.insert(
            2,
            VolumeState {
                decommissioned: true,
            },
        );
        assert_eq!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Done
        );
        // A new node never starts on a retained, decommissioned node's volume.
        observed.in_flight = None;
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Blocked { .. }
        ));
    }

    #[test]
    fn a_failed_decommission_holds_until_the_spec_changes() {
        let mut observed = healthy(3, 2);
        in_flight(
            &mut observed,
            ActionProgress::Failed {
                error: "boom".into(),
            },
        );
        assert!(matches!(
            phase(plan(&desired(2), false, &observed)),
            DecommissionPhase::Failed { .. }
        ));
        observed.generation = 8;
        assert!(matches!(
            phase(plan(&desired(3), false, &observed)),
            DecommissionPhase::Abandoned { .. }
        ));
    }

    #[test]
    fn cleanup_follows_a_scale_up_one_node_at_a_time() {
        let mut observed = healthy(3, 2);
        observed.pending_cleanup = vec!["c-a-0".into(), "c-a-1".into()];
        assert_eq!(
            plan(&desired(3), false, &observed),
            Step::Cleanup {
                node: "c-a-0".into(),
                action_id: "cleanup-c-a-0-g7".into(),
                phase: CleanupPhase::Start,
            }
        );
        observed.in_flight = Some(InFlight {
            removal_verified: false,
            kind: OperationKind::Cleanup,
            pool: "a".into(),
            ordinal: 0,
            node: "c-a-0".into(),
            action_id: "cleanup-c-a-0-g7".into(),
            action: succeeded(),
        });
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Cleanup {
                phase: CleanupPhase::Done { .. },
                ..
            }
        ));
        // A pod missing for a moment still owes its cleanup: not done, not forgotten.
        if let Some(op) = observed.in_flight.as_mut() {
            op.action = ActionProgress::Unknown {
                why: "pod gone".into(),
            };
        }
        observed.pools.get_mut("a").expect("pool").nodes.remove(0);
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Cleanup {
                phase: CleanupPhase::Unknown { .. },
                ..
            }
        ));
    }

    // --- properties over random states ---

    fn arb_progress() -> impl Strategy<Value = ActionProgress> {
        prop_oneof![
            Just(ActionProgress::NotStarted),
            Just(ActionProgress::Running {
                message: "m".into(),
                percent: None
            }),
            Just(succeeded()),
            Just(ActionProgress::Failed { error: "e".into() }),
            Just(ActionProgress::Unknown { why: "w".into() }),
        ]
    }

    fn arb_node(ordinal: i32) -> impl Strategy<Value = ObservedNode> {
        (
            any::<bool>(),
            prop::option::of(prop_oneof![
                Just(VerifiedState::UpNormal),
                Just(VerifiedState::Joining),
                Just(VerifiedState::Leaving),
                Just(VerifiedState::Decommissioned),
                Just(VerifiedState::Down),
            ]),
            any::<bool>(),
            prop::option::of(prop::collection::btree_set(0..6i32, 0..6)),
            prop::option::of(0..4u64),
            prop::option::of(0..8u64),
            prop::option::of((0..5u32, 0..5u32)),
        )
            .prop_map(
                move |(pod_ready, verified, has_id, ring, data, free, rfs)| ObservedNode {
                    name: format!("n-{ordinal}"),
                    ordinal,
                    pod_ready,
                    verified,
                    host_id: has_id.then(|| format!("h{ordinal}")),
                    ring: ring.map(|r| r.iter().map(|o| format!("h{o}")).collect()),
                    data_bytes: data,
                    free_disk_bytes: free,
                    keyspaces: rfs.map(|(user, system)| {
                        vec![
                            KeyspaceReplication {
                                name: "app".into(),
                                replication_factor: user,
                                system: false,
                            },
                            KeyspaceReplication {
                                name: "system_traces".into(),
                                replication_factor: system,
                                system: true,
                            },
                        ]
                    }),
                },
            )
    }

    fn arb_pool() -> impl Strategy<Value = ObservedPool> {
        (
            prop::option::of(0..6i32),
            any::<bool>(),
            any::<bool>(),
            prop::collection::btree_map(0..7i32, any::<bool>(), 0..7),
        )
            .prop_flat_map(|(replicas, current, missing_pod, volumes)| {
                let n = replicas.unwrap_or(0);
                let nodes = (0..n).map(arb_node).collect::<Vec<_>>();
                (
                    Just(replicas),
                    Just(current),
                    Just(missing_pod),
                    Just(volumes),
                    nodes,
                )
            })
            .prop_map(|(replicas, current, missing_pod, volumes, mut nodes)| {
                if missing_pod && !nodes.is_empty() {
                    nodes.pop();
                }
                ObservedPool {
                    statefulset_replicas: replicas,
                    statefulset_current: current,
                    nodes,
                    volumes: volumes
                        .into_iter()
                        .map(|(o, d)| (o, VolumeState { decommissioned: d }))
                        .collect(),
                }
            })
    }

    fn arb_case() -> impl Strategy<Value = (Vec<DesiredPool>, bool, Observed)> {
        (
            prop::collection::vec(0..6i32, 1..4),
            any::<bool>(),
            prop::collection::vec(prop::option::of(arb_pool()), 4),
            prop::option::of((
                prop_oneof![
                    Just(OperationKind::Decommission),
                    Just(OperationKind::Cleanup)
                ],
                0..4usize,
                0..6i32,
                any::<bool>(),
                arb_progress(),
                any::<bool>(),
            )),
            any::<bool>(),
            prop::collection::vec((0..4usize, 0..6i32), 0..3),
        )
            .prop_map(|(replicas, paused, pools, op, retain, cleanup)| {
                let desired = replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| DesiredPool {
                        name: format!("p{i}"),
                        replicas: *r,
                    })
                    .collect::<Vec<_>>();
                let pools: BTreeMap<String, ObservedPool> = pools
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        p.map(|mut p| {
                            let name = format!("p{i}");
                            for n in &mut p.nodes {
                                n.name = format!("{name}-{}", n.ordinal);
                            }
                            (name, p)
                        })
                    })
                    .collect();
                let generation = 7;
                let in_flight = op.map(
                    |(kind, pool, ordinal, same_gen, action, removal_verified)| {
                        let pool = format!("p{pool}");
                        let node = format!("{pool}-{ordinal}");
                        InFlight {
                            removal_verified,
                            kind,
                            action_id: action_id(
                                kind,
                                &node,
                                if same_gen { generation } else { generation - 1 },
                            ),
                            pool,
                            ordinal,
                            node,
                            action,
                        }
                    },
                );
                let observed = Observed {
                    pools,
                    generation,
                    in_flight,
                    pending_cleanup: cleanup
                        .into_iter()
                        .map(|(p, o)| format!("p{p}-{o}"))
                        .collect(),
                    volume_policy: if retain {
                        VolumePolicy::Retain
                    } else {
                        VolumePolicy::Delete
                    },
                };
                (desired, paused, observed)
            })
    }

    /// The node of `observed` a step names, if any.
    fn find_node<'a>(observed: &'a Observed, name: &str) -> Option<&'a ObservedNode> {
        observed
            .pools
            .values()
            .flat_map(|p| p.nodes.iter())
            .find(|n| n.name == name)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn paused_never_changes_anything((desired, _paused, observed) in arb_case()) {
            prop_assert_eq!(plan(&desired, true, &observed), Step::Paused);
        }

        #[test]
        fn adds_only_when_every_node_is_ready((desired, paused, observed) in arb_case()) {
            if let Step::AddNode { pool, ordinal } = plan(&desired, paused, &observed) {
                prop_assert!(observed.in_flight.is_none());
                for (name, obs) in &observed.pools {
                    let expected = obs.statefulset_replicas.unwrap_or(0);
                    // Pools no longer in the spec are not the planner's to wait for.
                    if desired.iter().any(|d| &d.name == name) {
                        prop_assert!(obs.statefulset_current);
                        for o in 0..expected {
                            let node = obs.nodes.iter().find(|n| n.ordinal == o);
                            prop_assert!(node.is_some_and(ObservedNode::is_ready));
                        }
                    }
                }
                let obs = &observed.pools[&pool];
                prop_assert_eq!(Some(ordinal), obs.statefulset_replicas);
                prop_assert!(!obs.volumes.get(&ordinal).is_some_and(|v| v.decommissioned));
                let want = desired.iter().find(|d| d.name == pool).map(|d| d.replicas);
                prop_assert!(want.is_some_and(|w| w > ordinal));
            }
        }

        /// At most one node changes per step, and a StatefulSet shrinks only by the node whose
        /// decommission both views verified.
        #[test]
        fn never_shrinks_before_verification((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            let mut changed = 0;
            for d in &desired {
                let before = observed.pools.get(&d.name).and_then(|p| p.statefulset_replicas).unwrap_or(0);
                let after = statefulset_replicas(&observed, &step, &d.name);
                if let Step::Decommission { pool, ordinal, phase, .. } = &step
                    && pool == &d.name
                    && !phase.is_removal()
                    && after > before
                {
                    // Restoring a StatefulSet shrunk by someone else mid-decommission: back to
                    // the recorded node, never beyond it.
                    prop_assert_eq!(after, ordinal + 1);
                    continue;
                }
                changed += (after - before).abs();
                if after < before {
                    let op = observed.in_flight.as_ref().expect("shrink only inside an operation");
                    prop_assert_eq!(op.kind, OperationKind::Decommission);
                    let succeeded = matches!(op.action, ActionProgress::Succeeded { .. });
                    prop_assert!(succeeded, "shrink before the action succeeded");
                    prop_assert_eq!(after, op.ordinal);
                    let leaving = find_node(&observed, &op.node).expect("leaving node observed");
                    prop_assert_eq!(leaving.verified, Some(VerifiedState::Decommissioned));
                    let host = leaving.host_id.clone().expect("host ID known");
                    let witnessed = observed.pools.values().flat_map(|p| p.nodes.iter()).any(|n| {
                        n.name != op.node
                            && n.is_verified_up_normal()
                            && n.ring.as_ref().is_some_and(|r| {
                                n.host_id.as_ref().is_some_and(|own| r.contains(own)) && !r.contains(&host)
                            })
                    });
                    prop_assert!(witnessed);
                }
            }
            prop_assert!(changed <= 1);
        }

        /// A node leaves the StatefulSet, and its volume is released, only after the status
        /// recorded its verified removal; a StatefulSet shrunk by anyone else is restored.
        #[test]
        fn never_removes_a_node_before_its_recorded_verification((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            if let Step::Decommission { phase, pool, ordinal, .. } = &step {
                let op = observed.in_flight.as_ref();
                if matches!(phase, DecommissionPhase::AwaitPodGone | DecommissionPhase::ReleaseVolume { .. }) {
                    prop_assert!(op.is_some_and(|o| o.removal_verified), "{:?}", step);
                }
                if !phase.is_removal() && op.is_some_and(|o| !o.removal_verified) {
                    prop_assert!(statefulset_replicas(&observed, &step, pool) > *ordinal);
                }
            }
        }

        /// While an operation is recorded, no step touches another node or starts anything else.
        #[test]
        fn never_two_disruptive_operations((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            if let Some(op) = &observed.in_flight {
                let adds = matches!(step, Step::AddNode { .. } | Step::CreatePool { .. });
                prop_assert!(!adds);
                if step != Step::Paused {
                    prop_assert_eq!(step.node(), Some(op.node.as_str()), "{:?}", step);
                    if let Step::Decommission { action_id, .. } | Step::Cleanup { action_id, .. } = &step {
                        prop_assert_eq!(action_id, &op.action_id);
                    }
                }
            }
        }

        /// Starting a decommission or a cleanup needs every node proven Up/Normal by its pilot.
        #[test]
        fn never_acts_on_unknown_state((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            let starts = matches!(
                step,
                Step::Decommission { phase: DecommissionPhase::Start { .. }, .. }
                    | Step::Cleanup { phase: CleanupPhase::Start, .. }
            );
            if starts {
                if let Step::Decommission { .. } = step {
                    for d in &desired {
                        for n in observed.pools.get(&d.name).map(|p| p.nodes.as_slice()).unwrap_or_default() {
                            prop_assert!(n.is_verified_up_normal(), "{} unverified", n.name);
                        }
                    }
                }
                let node = find_node(&observed, step.node().expect("node")).expect("observed");
                prop_assert!(node.is_verified_up_normal());
            }
            if observed.in_flight.is_none() {
                // One unready node forbids any topology change.
                let mut unready = observed.clone();
                let target = unready.pools.iter_mut().find(|(name, p)| {
                    desired.iter().any(|d| &&d.name == name) && !p.nodes.is_empty()
                });
                if let Some((_, pool)) = target {
                    pool.nodes[0].pod_ready = false;
                    prop_assert!(!plan(&desired, paused, &unready).is_disruptive());
                }
            }
        }

        /// A scale-down below a user keyspace's replication factor is refused outright.
        #[test]
        fn never_decommissions_below_replication_factor((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            if let Step::Decommission { phase: DecommissionPhase::Start { .. }, .. } = step
                && observed.in_flight.is_none()
            {
                let target: i32 = desired.iter().map(|d| d.replicas).sum();
                let rf = desired.iter()
                    .filter_map(|d| observed.pools.get(&d.name))
                    .flat_map(|p| p.nodes.iter())
                    .filter_map(|n| n.keyspaces.as_ref())
                    .flatten()
                    .filter(|k| !k.system)
                    .map(|k| k.replication_factor as i32)
                    .max();
                prop_assert!(rf.is_some_and(|rf| rf <= target));
            }
        }

        #[test]
        fn converges_when_nodes_come_up(replicas in prop::collection::vec(0..5i32, 1..3)) {
            let desired: Vec<_> = replicas.iter().enumerate()
                .map(|(i, r)| DesiredPool { name: format!("p{i}"), replicas: *r }).collect();
            let mut observed = Observed::default();
            for _ in 0..64 {
                match plan(&desired, false, &observed) {
                    Step::Steady => break,
                    Step::CreatePool { pool } => {
                        observed.pools.insert(pool, ObservedPool {
                            statefulset_replicas: Some(0), statefulset_current: true, ..Default::default() });
                    }
                    Step::AddNode { pool, ordinal } => {
                        let p = observed.pools.get_mut(&pool).expect("pool exists");
                        p.statefulset_replicas = Some(ordinal + 1);
                        p.nodes.push(node(&pool, ordinal, true));
                    }
                    other => prop_assert!(false, "unexpected step {:?}", other),
                }
            }
            prop_assert_eq!(plan(&desired, false, &observed), Step::Steady);
            for d in &desired {
                prop_assert_eq!(observed.pools[&d.name].statefulset_replicas, Some(d.replicas));
            }
        }

        /// Scaling down from a healthy cluster reaches the target through verified
        /// decommissions, one node at a time, with a simulated database and status.
        #[test]
        fn scale_down_converges(from in 2..6i32, to in 1..6i32, rf in 1..4u32) {
            let to = to.min(from);
            let desired = desired(to);
            let mut observed = healthy(from, rf);
            let mut removed = 0;
            for _ in 0..200 {
                let step = plan(&desired, false, &observed);
                let pool = observed.pools.get_mut("a").expect("pool");
                match step {
                    Step::Steady => break,
                    Step::Blocked { .. } => {
                        prop_assert!(i64::from(rf) > i64::from(to));
                        break;
                    }
                    Step::Decommission { ordinal, node, action_id, phase, .. } => {
                        let progress = match &phase {
                            DecommissionPhase::Start { .. } => {
                                pool.nodes[ordinal as usize].verified = Some(VerifiedState::Decommissioned);
                                let host = format!("h{ordinal}");
                                for n in &mut pool.nodes {
                                    if let Some(r) = n.ring.as_mut() { r.remove(&host); }
                                }
                                Some(succeeded())
                            }
                            DecommissionPhase::Shrink => {
                                pool.statefulset_replicas = Some(ordinal);
                                removed += 1;
                                None
                            }
                            DecommissionPhase::AwaitPodGone => {
                                pool.nodes.retain(|n| n.ordinal != ordinal);
                                None
                            }
                            DecommissionPhase::ReleaseVolume { .. } => {
                                pool.volumes.remove(&ordinal);
                                None
                            }
                            DecommissionPhase::Done => {
                                observed.in_flight = None;
                                continue;
                            }
                            other => { prop_assert!(false, "unexpected {:?}", other); None }
                        };
                        let action = progress.unwrap_or(succeeded());
                        // What the status records from the shrink on (Done left the loop above).
                        let removal_verified = phase.is_removal();
                        observed.in_flight = Some(InFlight {
                            removal_verified, kind: OperationKind::Decommission, pool: "a".into(), ordinal, node, action_id, action,
                        });
                    }
                    other => prop_assert!(false, "unexpected step {:?}", other),
                }
            }
            if i64::from(rf) <= i64::from(to) {
                prop_assert_eq!(removed, from - to);
                prop_assert_eq!(observed.pools["a"].statefulset_replicas, Some(to));
                prop_assert_eq!(plan(&desired, false, &observed), Step::Steady);
            } else {
                prop_assert_eq!(removed, 0);
            }
        }
    }
}
