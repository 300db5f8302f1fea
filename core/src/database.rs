//! The one seam between the core and a database: the questions only a database can answer.
//! Cassandra implements it in the operator's `cassandra` module; Elasticsearch will too.

use std::fmt::Debug;

use crate::model::{DesiredPool, Health, Observed, ObservedNode};
use crate::operation::{NodeAction, OperationKind};
use crate::planner::{Refusal, WaitCause};

/// The cluster as the planner sees it: the desired pools and the observation.
pub struct View<'a, D> {
    pub desired: &'a [DesiredPool],
    pub observed: &'a Observed<D>,
}

impl<D> Clone for View<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D> Copy for View<'_, D> {}

impl<'a, D> View<'a, D> {
    /// Every node of the desired pools (retiring ones included).
    pub fn nodes(&self) -> impl Iterator<Item = &'a ObservedNode<D>> + 'a {
        self.observed.nodes_of(self.desired)
    }

    /// Nodes the StatefulSets hold now.
    pub fn current_nodes(&self) -> i32 {
        self.desired
            .iter()
            .map(|p| self.observed.replicas(&p.name))
            .sum()
    }

    /// Nodes the spec asks for.
    pub fn target_nodes(&self) -> i32 {
        self.desired.iter().map(|p| p.replicas).sum()
    }
}

/// Whether a node may leave now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Safe: run this action on the leaving node.
    Go(NodeAction),
    /// Not known to be safe yet.
    Wait { cause: WaitCause, reason: String },
    /// Never safe as asked.
    Refuse(Refusal),
}

pub trait Database {
    /// What a pilot report holds that only this database knows.
    type Detail: Clone + Debug + PartialEq + Default;

    /// The word for a node's state in `status.nodes[].state` (Cassandra: "Up/Normal", ...).
    fn state_word(&self, health: Option<Health>, pod_ready: bool) -> &'static str;

    /// A scale-down to `target_nodes` that can never be safe, refused before anything is
    /// touched. Unknowns are not refusals: they wait in [`Database::prepare_leave`].
    fn refuse_leave(&self, view: View<'_, Self::Detail>, target_nodes: i32) -> Option<Refusal>;

    /// What must hold before `leaving` may leave (the core already proved every node
    /// healthy), and the action that removes it.
    fn prepare_leave(
        &self,
        view: View<'_, Self::Detail>,
        leaving: &ObservedNode<Self::Detail>,
    ) -> Gate;

    /// What proves `leaving` left, once its action succeeded; `Err` says which view is
    /// missing.
    fn verify_left(
        &self,
        view: View<'_, Self::Detail>,
        leaving: &ObservedNode<Self::Detail>,
    ) -> Result<(), String>;

    /// The task the nodes already there owe when a node joined a cluster that served data.
    fn after_join(&self) -> Option<OperationKind> {
        None
    }

    /// The task every node owes once an upgrade from `from` to `to` finished.
    fn after_upgrade(&self, _from: &str, _to: &str) -> Option<OperationKind> {
        None
    }

    /// What must hold before `node` is prepared for a restart, beyond every node verified
    /// healthy (Elasticsearch: every shard copy assigned, and the node's vote handed over when
    /// the others would lack a majority without it); `Err` says what is awaited.
    fn ready_to_restart(
        &self,
        _view: View<'_, Self::Detail>,
        _node: &ObservedNode<Self::Detail>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// The pilot action that prepares a node for a restart; verified before its pod is
    /// deleted.
    fn prepare_restart(&self) -> NodeAction {
        NodeAction::Drain
    }

    /// The pilot action run on a restarted node once it is back, verified before the next node
    /// (Elasticsearch: allocation restored and the health recovered); none by default.
    fn after_restart(&self) -> Option<NodeAction> {
        None
    }

    /// Order in which pools grow: lower ranks first, one rank in spec order (Elasticsearch
    /// grows master-eligible pools first: a new cluster forms on its first master-eligible node).
    fn join_rank(&self, _pool: &str) -> u8 {
        0
    }

    /// Restart order between pools: lower ranks restart first, pools of one rank in spec order
    /// (Elasticsearch restarts master-eligible pools last).
    fn restart_rank(&self, _pool: &str) -> u8 {
        0
    }

    /// What proves a restarted node is back, beyond what the core checks (a new pod at the
    /// target revision, verified healthy, reporting the target version).
    fn verify_back(
        &self,
        _view: View<'_, Self::Detail>,
        _node: &ObservedNode<Self::Detail>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// The pilot action of a node task.
    fn task_action(&self, kind: OperationKind) -> Option<NodeAction> {
        match kind {
            OperationKind::Cleanup => Some(NodeAction::Cleanup),
            OperationKind::UpgradeSSTables => Some(NodeAction::UpgradeSSTables),
            _ => None,
        }
    }

    /// Words for what a node task does, for people ("drop data it no longer owns").
    fn task_purpose(&self, kind: OperationKind) -> &'static str {
        match kind {
            OperationKind::Cleanup => "dropped the data it no longer owns",
            OperationKind::UpgradeSSTables => "rewrote its data files in the current format",
            _ => "finished",
        }
    }
}
