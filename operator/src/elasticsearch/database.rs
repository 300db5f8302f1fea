//! Elasticsearch's answers to the core's questions (pure): what proves a node a member, what
//! must hold before one leaves (its shard copies moved away, its vote handed over), what proves
//! it left, how a node is prepared for a restart and what is undone once it is back.
//!
//! Data leaves through cluster-scoped exclusions, set and cleared level-triggered by
//! [`desired_exclusions`]: the planner never starts a removal until the pilots show the node
//! holds no shard copy and is out of the voting configuration.

use std::collections::{BTreeMap, BTreeSet};

use stateward_core::database::{Database, Gate, View};
use stateward_core::model::{DesiredPool, Health, NodeReport, Observed, ObservedNode};
use stateward_core::operation::{NodeAction, OperationKind};
use stateward_core::planner::{Plan, Refusal, RefusedChange, WaitCause};
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{NodeStatus, ProcessState};

use super::watermark::LowWatermark;

/// An index's replication, from a pilot's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexReplication {
    pub name: String,
    pub replicas: u32,
    /// `index.auto_expand_replicas` is set: the index never needs more nodes than there are.
    pub auto_expand: bool,
}

/// What an Elasticsearch pilot reports beyond the neutral fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElasticsearchDetail {
    pub node_id: Option<String>,
    pub cluster_uuid: Option<String>,
    pub roles: Vec<String>,
    pub elected_master: bool,
    pub elected_master_name: Option<String>,
    /// Cluster health in this node's view.
    pub health: Option<String>,
    /// Shard copies on this node; `None` when the pilot could not read the shards.
    pub shards: Option<u32>,
    pub cluster_nodes: BTreeSet<String>,
    /// `None` when the pilot could not read the indices.
    pub indices: Option<Vec<IndexReplication>>,
    pub voting_config: BTreeSet<String>,
    /// Relocating plus initializing shard copies of the cluster (when the shards were read).
    pub moving_shards: Option<u32>,
    pub unassigned_shards: Option<u32>,
    pub allocation_exclusions: BTreeSet<String>,
    pub voting_exclusions: BTreeSet<String>,
    /// Bytes of the data volume (the neutral report has the free bytes).
    pub total_disk_bytes: Option<u64>,
    /// The low disk watermark in force; `None` when not read or not understood.
    pub low_watermark: Option<LowWatermark>,
}

pub type ElasticsearchNode = ObservedNode<ElasticsearchDetail>;

/// The roles of a pool that matter to the planner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolRoles {
    pub master: bool,
    pub data: bool,
}

/// Elasticsearch as the core sees it: the roles of every pool (from the spec; a retiring pool
/// keeps the roles its nodes report).
#[derive(Clone, Debug, Default)]
pub struct Elasticsearch {
    pub pools: BTreeMap<String, PoolRoles>,
}

/// What a pilot's status proves about its Elasticsearch node.
pub fn report_of(status: &NodeStatus) -> NodeReport<ElasticsearchDetail> {
    let es = match status.detail.as_ref() {
        Some(Detail::Elasticsearch(e)) => Some(e),
        _ => None,
    };
    let member = es.is_some_and(|e| {
        !e.cluster_uuid.is_empty()
            && !e.elected_master_name.is_empty()
            && e.cluster_nodes.contains(&status.node_name)
    });
    let health = match status.process_state() {
        ProcessState::NotRunning | ProcessState::Stopping => Some(Health::Down),
        ProcessState::Running if member => Some(Health::Healthy),
        ProcessState::Running | ProcessState::Starting => Some(Health::Joining),
        ProcessState::Unspecified => None,
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let detail = es
        .map(|e| {
            let known = e.indices_known;
            ElasticsearchDetail {
                node_id: text(&e.node_id),
                cluster_uuid: text(&e.cluster_uuid),
                roles: e.roles.clone(),
                elected_master: e.elected_master,
                elected_master_name: text(&e.elected_master_name),
                health: text(&e.cluster_health),
                shards: known.then_some(e.shard_count),
                cluster_nodes: e.cluster_nodes.iter().cloned().collect(),
                indices: known.then(|| {
                    e.indices
                        .iter()
                        .map(|i| IndexReplication {
                            name: i.name.clone(),
                            replicas: i.replicas,
                            auto_expand: !i.auto_expand_replicas.is_empty(),
                        })
                        .collect()
                }),
                voting_config: e.voting_config.iter().cloned().collect(),
                moving_shards: known.then_some(e.relocating_shards + e.initializing_shards),
                unassigned_shards: known.then_some(e.unassigned_shards),
                allocation_exclusions: e.allocation_exclusions.iter().cloned().collect(),
                voting_exclusions: e.voting_exclusions.iter().cloned().collect(),
                total_disk_bytes: status.total_disk_bytes,
                low_watermark: e
                    .disk_threshold
                    .as_ref()
                    .and_then(|d| LowWatermark::parse(d.enabled, &d.low_watermark)),
            }
        })
        .unwrap_or_default();
    NodeReport {
        health,
        version: text(&status.version),
        revision: text(&status.template_revision),
        data_bytes: status.data_bytes,
        free_disk_bytes: status.free_disk_bytes,
        detail,
    }
}

pub(super) fn detail(node: &ElasticsearchNode) -> Option<&ElasticsearchDetail> {
    node.report.as_ref().map(|r| &r.detail)
}

/// The cluster-wide view of a verified-healthy node other than `except`: cluster settings,
/// voting configuration and shard states read through it.
pub(super) fn witness<'a>(
    view: View<'a, ElasticsearchDetail>,
    except: Option<&str>,
) -> Option<&'a ElasticsearchDetail> {
    view.nodes()
        .filter(|n| n.is_verified_healthy() && Some(n.name.as_str()) != except)
        .filter_map(detail)
        .find(|d| d.indices.is_some())
}

/// Every index with the highest replica count any healthy node read; unknown unless one did.
fn indices(view: View<'_, ElasticsearchDetail>) -> Option<Vec<IndexReplication>> {
    let mut merged: BTreeMap<&str, IndexReplication> = BTreeMap::new();
    let mut any = false;
    for list in view
        .nodes()
        .filter(|n| n.is_verified_healthy())
        .filter_map(|n| detail(n)?.indices.as_ref())
    {
        any = true;
        for i in list {
            merged
                .entry(&i.name)
                .and_modify(|m| m.replicas = m.replicas.max(i.replicas))
                .or_insert_with(|| i.clone());
        }
    }
    any.then(|| merged.into_values().collect())
}

impl Elasticsearch {
    fn roles(&self, pool: &str) -> PoolRoles {
        self.pools.get(pool).copied().unwrap_or_default()
    }

    /// Whether `node` (of `pool`) is master-eligible or holds data: what its pool's spec says,
    /// or else what the node reports (a retiring pool).
    pub(super) fn node_roles(&self, pool: &str, node: &ElasticsearchNode) -> PoolRoles {
        if let Some(roles) = self.pools.get(pool) {
            return *roles;
        }
        let reported = detail(node).map(|d| d.roles.clone()).unwrap_or_default();
        PoolRoles {
            master: reported.iter().any(|r| r == "master"),
            data: reported.iter().any(|r| r.starts_with("data")),
        }
    }

    /// The nodes that stay after a scale-down to the desired sizes: (master-eligible, data).
    fn remaining<'a>(
        &self,
        view: View<'a, ElasticsearchDetail>,
    ) -> (i32, Vec<&'a ElasticsearchNode>) {
        let mut masters = 0;
        let mut data = Vec::new();
        for pool in view.desired {
            let roles = self.roles(&pool.name);
            let stay = pool.replicas.min(view.observed.replicas(&pool.name));
            if roles.master {
                masters += stay;
            }
            if let (true, Some(obs)) = (roles.data, view.observed.pools.get(&pool.name)) {
                data.extend(obs.nodes.iter().filter(|n| n.ordinal < pool.replicas));
            }
        }
        (masters, data)
    }

    /// The nodes a scale-down removes (every node past its pool's desired size).
    fn leaving_nodes<'a>(
        &self,
        view: View<'a, ElasticsearchDetail>,
    ) -> Vec<(&'a str, &'a ElasticsearchNode)> {
        let mut out = Vec::new();
        for pool in view.desired {
            if let Some(obs) = view.observed.pools.get(&pool.name) {
                out.extend(
                    obs.nodes
                        .iter()
                        .filter(|n| n.ordinal >= pool.replicas)
                        .map(|n| (pool.name.as_str(), n)),
                );
            }
        }
        out
    }

    fn refuse_last_master(&self, view: View<'_, ElasticsearchDetail>) -> Option<Refusal> {
        let (masters, _) = self.remaining(view);
        (masters == 0).then(|| Refusal {
            change: RefusedChange::ScaleDown,
            reason: "the scale-down would remove the last master-eligible node: the cluster \
                     could no longer elect a master"
                .into(),
            remedy: "keep at least one master-eligible node".into(),
        })
    }

    fn refuse_quorum(&self, view: View<'_, ElasticsearchDetail>) -> Option<Refusal> {
        let (masters, _) = self.remaining(view);
        let voters = view
            .nodes()
            .filter_map(detail)
            .map(|d| d.voting_config.len())
            .max()
            .unwrap_or(0) as i32;
        let quorum = voters / 2 + 1;
        let refuse = |reason: String| Refusal {
            change: RefusedChange::ScaleDown,
            reason,
            remedy: "keep the master-eligible nodes (or add a master-eligible pool and let it \
                     join first), then scale down"
                .into(),
        };
        (voters > 0 && masters < quorum).then(|| {
            refuse(format!(
                "the scale-down would leave {masters} master-eligible node(s), fewer than a \
                 quorum ({quorum}) of the current voting configuration of {voters}"
            ))
        })
    }

    fn refuse_replicas(&self, view: View<'_, ElasticsearchDetail>) -> Option<Refusal> {
        let (_, data) = self.remaining(view);
        let data_nodes = data.len() as u32;
        let indices = indices(view)?;
        let short: Vec<String> = indices
            .iter()
            .filter(|i| !i.auto_expand && i.replicas + 1 > data_nodes)
            .map(|i| format!("{} ({} replica(s))", i.name, i.replicas))
            .collect();
        let needed = indices
            .iter()
            .filter(|i| !i.auto_expand)
            .map(|i| i.replicas + 1)
            .max()?;
        (!short.is_empty()).then(|| Refusal {
            change: RefusedChange::ScaleDown,
            reason: format!(
                "the scale-down would leave {data_nodes} data node(s), too few for the replicas \
                 of index {}: every copy of a shard needs a node of its own",
                short.join(", ")
            ),
            remedy: format!(
                "keep at least {needed} data nodes, or lower the index's number_of_replicas \
                 first"
            ),
        })
    }

    /// Room under the low watermark on the data nodes that stay must hold what the leaving data
    /// nodes hold. Each node's own reading of the watermark counts (the default when it has
    /// none). Unknown sizes refuse nothing (the removal waits on them instead).
    fn refuse_disk(&self, view: View<'_, ElasticsearchDetail>) -> Option<Refusal> {
        let (_, staying) = self.remaining(view);
        let leaving: Option<u64> = self
            .leaving_nodes(view)
            .into_iter()
            .filter(|(pool, n)| self.node_roles(pool, n).data)
            .map(|(_, n)| n.report.as_ref()?.data_bytes)
            .sum();
        let watermark_of = |n: &ElasticsearchNode| {
            detail(n)
                .and_then(|d| d.low_watermark)
                .unwrap_or(LowWatermark::DEFAULT)
        };
        let room: Option<u64> = staying
            .iter()
            .map(|n| {
                let r = n.report.as_ref()?;
                let reserve = watermark_of(n).reserve(r.detail.total_disk_bytes)?;
                Some(r.free_disk_bytes?.saturating_sub(reserve))
            })
            .sum();
        let (leaving, room) = (leaving?, room?);
        let watermark = staying
            .first()
            .map_or(LowWatermark::DEFAULT, |n| watermark_of(n));
        (leaving > room).then(|| Refusal {
            change: RefusedChange::ScaleDown,
            reason: format!(
                "the data nodes that stay have {room} bytes free below the disk low watermark \
                 ({watermark}), less than the {leaving} bytes the leaving nodes hold"
            ),
            remedy: "grow the data volumes (storage.size) or keep more data nodes".into(),
        })
    }
}

impl Database for Elasticsearch {
    type Detail = ElasticsearchDetail;

    fn state_word(&self, health: Option<Health>, pod_ready: bool) -> &'static str {
        match health {
            Some(Health::Healthy) => "Joined",
            Some(Health::Joining) => "Starting",
            Some(Health::Leaving) => "Leaving",
            Some(Health::Left) => "Left",
            Some(Health::Down) => "Down",
            None if pod_ready => "Ready",
            None => "Unknown",
        }
    }

    fn refuse_leave(&self, view: View<'_, ElasticsearchDetail>, _target: i32) -> Option<Refusal> {
        // The data first: it is what a user most needs to hear about.
        self.refuse_last_master(view)
            .or_else(|| self.refuse_replicas(view))
            .or_else(|| self.refuse_quorum(view))
            .or_else(|| self.refuse_disk(view))
    }

    fn prepare_leave(
        &self,
        view: View<'_, ElasticsearchDetail>,
        leaving: &ElasticsearchNode,
    ) -> Gate {
        let wait = |cause, reason| Gate::Wait { cause, reason };
        if indices(view).is_none() {
            return wait(
                WaitCause::ReplicationUnknown,
                "no pilot has reported the indices' replication yet".into(),
            );
        }
        let Some(peer) = witness(view, Some(&leaving.name)) else {
            return wait(
                WaitCause::ReplicationUnknown,
                format!(
                    "no node but {} has reported the cluster's shards",
                    leaving.name
                ),
            );
        };
        let pool = view
            .observed
            .find_node(&leaving.name)
            .map(|(p, _)| p)
            .unwrap_or_default();
        let roles = self.node_roles(pool, leaving);
        if let Some(reason) = evacuation_pending(roles, peer, leaving) {
            return wait(WaitCause::Evacuating, reason);
        }
        if let Some(reason) = handoff_pending(roles, peer, leaving) {
            return wait(WaitCause::MasterHandoff, reason);
        }
        Gate::Go(NodeAction::Decommission { force: false })
    }

    fn verify_left(
        &self,
        view: View<'_, ElasticsearchDetail>,
        leaving: &ElasticsearchNode,
    ) -> Result<(), String> {
        let peer = witness(view, Some(&leaving.name))
            .ok_or_else(|| format!("no node but {} reports the cluster's state", leaving.name))?;
        let pool = view
            .observed
            .find_node(&leaving.name)
            .map(|(p, _)| p)
            .unwrap_or_default();
        let roles = self.node_roles(pool, leaving);
        evacuation_pending(roles, peer, leaving)
            .or_else(|| handoff_pending(roles, peer, leaving))
            .map_or(Ok(()), Err)
    }

    fn after_join(&self) -> Option<OperationKind> {
        None
    }

    fn prepare_restart(&self) -> NodeAction {
        NodeAction::Drain
    }

    fn ready_to_restart(
        &self,
        view: View<'_, ElasticsearchDetail>,
        node: &ElasticsearchNode,
    ) -> Result<(), String> {
        super::restart::not_ready(self, view, node).map_or(Ok(()), Err)
    }

    fn after_restart(&self) -> Option<NodeAction> {
        Some(NodeAction::Resume)
    }

    /// A new cluster forms on the first master-eligible node: those pools grow first.
    fn join_rank(&self, pool: &str) -> u8 {
        u8::from(!self.roles(pool).master)
    }

    /// Elasticsearch's rule for upgrades: master-eligible nodes last, so a master never runs a
    /// newer version than the nodes that join it.
    fn restart_rank(&self, pool: &str) -> u8 {
        u8::from(self.roles(pool).master)
    }

    fn verify_back(
        &self,
        view: View<'_, ElasticsearchDetail>,
        node: &ElasticsearchNode,
    ) -> Result<(), String> {
        let uuid = detail(node).and_then(|d| d.cluster_uuid.as_deref());
        let peers_uuid = witness(view, Some(&node.name)).and_then(|d| d.cluster_uuid.as_deref());
        match (uuid, peers_uuid) {
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => Err(format!(
                "{} reports cluster {a}, the other nodes {b}: it must rejoin the same cluster",
                node.name
            )),
            _ => Err(format!(
                "no report yet proves that {} rejoined the same cluster",
                node.name
            )),
        }
    }

    fn task_action(&self, _kind: OperationKind) -> Option<NodeAction> {
        None
    }
}

/// Why `leaving`'s data has not left yet, as `peer` and its own pilot see it.
fn evacuation_pending(
    roles: PoolRoles,
    peer: &ElasticsearchDetail,
    leaving: &ElasticsearchNode,
) -> Option<String> {
    if !roles.data {
        return None;
    }
    if !peer.allocation_exclusions.contains(&leaving.name) {
        return Some(format!("excluding {} from shard allocation", leaving.name));
    }
    match detail(leaving).and_then(|d| d.shards) {
        None => return Some(format!("the shards on {} are not known", leaving.name)),
        Some(n) if n > 0 => {
            return Some(format!(
                "{n} shard copies are still on {}, moving to the other nodes",
                leaving.name
            ));
        }
        Some(_) => {}
    }
    let (moving, unassigned) = (peer.moving_shards?, peer.unassigned_shards?);
    (moving + unassigned > 0).then(|| {
        format!(
            "the cluster has {moving} shard copies moving and {unassigned} unassigned; \
             waiting until every copy has a home"
        )
    })
}

/// Why `leaving` still has a say in master elections.
pub(super) fn handoff_pending(
    roles: PoolRoles,
    peer: &ElasticsearchDetail,
    leaving: &ElasticsearchNode,
) -> Option<String> {
    if !roles.master {
        return None;
    }
    if !peer.voting_exclusions.contains(&leaving.name) {
        return Some(format!(
            "excluding {} from the voting configuration",
            leaving.name
        ));
    }
    if peer.voting_config.contains(&leaving.name) {
        return Some(format!(
            "{} is still in the committed voting configuration",
            leaving.name
        ));
    }
    (peer.elected_master_name.as_deref() == Some(leaving.name.as_str())).then(|| {
        format!(
            "{} is the elected master; waiting for another node to be elected",
            leaving.name
        )
    })
}

/// The exclusions the cluster must carry now (level-triggered: computed from the desired and
/// observed state alone, so they are cleared once their node is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub allocation: BTreeSet<String>,
    pub voting: BTreeSet<String>,
}

/// Excluded: the node a scale-down is removing (the recorded removal's, else the first pool's
/// highest node past its desired size — unless the scale-down is refused: nothing is touched
/// then), and from the vote the node a restart stops when the others need its vote moved.
pub fn desired_exclusions(
    es: &Elasticsearch,
    desired: &[DesiredPool],
    observed: &Observed<ElasticsearchDetail>,
    plan: &Plan,
) -> Exclusions {
    let view = View { desired, observed };
    let recorded = observed
        .in_flight
        .as_ref()
        .filter(|f| f.operation.kind == OperationKind::Decommission)
        .map(|f| f.operation.node.clone());
    let leaving = match recorded {
        Some(node) => observed.find_node(&node),
        None if plan.refusal.is_some() => None,
        None => es.leaving_nodes(view).into_iter().max_by_key(|(pool, n)| {
            // The planner removes the first shrinking pool's highest node first.
            let rank = desired.iter().position(|p| p.name == *pool).unwrap_or(0);
            (std::cmp::Reverse(rank), n.ordinal)
        }),
    };
    let mut out = Exclusions::default();
    if let Some((pool, node)) = leaving {
        let roles = es.node_roles(pool, node);
        if roles.data {
            out.allocation.insert(node.name.clone());
        }
        if roles.master {
            out.voting.insert(node.name.clone());
        }
    }
    out.voting
        .extend(super::restart::restarting_voter(es, view, observed));
    out
}

/// The cluster's health as its healthy nodes report it (the elected master's view first).
pub fn cluster_health(observed: &Observed<ElasticsearchDetail>) -> Option<String> {
    let details: Vec<&ElasticsearchDetail> = observed
        .pools
        .values()
        .flat_map(|p| p.nodes.iter())
        .filter(|n| n.is_verified_healthy())
        .filter_map(detail)
        .collect();
    details
        .iter()
        .find(|d| d.elected_master)
        .or(details.first())
        .and_then(|d| d.health.clone())
}

/// The cluster's UUID once any healthy node reports one.
pub fn cluster_uuid(observed: &Observed<ElasticsearchDetail>) -> Option<String> {
    observed
        .pools
        .values()
        .flat_map(|p| p.nodes.iter())
        .filter(|n| n.is_verified_healthy())
        .find_map(|n| detail(n)?.cluster_uuid.clone())
}

/// The health a restarted node's resume waits for: green, unless some index can never be green
/// on the data nodes there are (then yellow).
pub fn resume_health(es: &Elasticsearch, view: View<'_, ElasticsearchDetail>) -> &'static str {
    let (_, data) = es.remaining(view);
    let data_nodes = data.len() as u32;
    let never_green = indices(view)
        .unwrap_or_default()
        .iter()
        .any(|i| !i.auto_expand && i.replicas + 1 > data_nodes);
    if never_green { "yellow" } else { "green" }
}
