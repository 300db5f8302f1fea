//! Cassandra's answers to the core's questions (pure): what proves a node healthy, what must
//! hold before one leaves and what proves it left, what follows a join or a major upgrade.

use std::collections::{BTreeMap, BTreeSet};

use stateward_core::database::{Database, Gate, View};
use stateward_core::model::{Health, NodeReport, ObservedNode};
use stateward_core::operation::{NodeAction, OperationKind};
use stateward_core::planner::{Refusal, RefusedChange, WaitCause};
use stateward_core::roll::version_key;
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{CassandraOperationMode, NodeStatus, PeerState, ProcessState};

/// A keyspace's replication in the cluster's datacenter, from a pilot's schema reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceReplication {
    pub name: String,
    pub replication_factor: u32,
    /// Cassandra's own replicated keyspaces (system_auth, system_distributed, system_traces).
    pub system: bool,
}

/// What a Cassandra pilot reports beyond the neutral fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CassandraDetail {
    /// The node's host ID, from this report.
    pub host_id: Option<String>,
    /// Host IDs of the ring members in this node's view.
    pub ring: Option<BTreeSet<String>>,
    /// The schema's keyspaces with their replication in the node's datacenter.
    pub keyspaces: Option<Vec<KeyspaceReplication>>,
    /// What CQL logins to the node showed; `None` when it runs without authentication (or
    /// was not checked yet).
    pub auth: Option<LoginsSeen>,
}

/// What the pilot's CQL logins to its node showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginsSeen {
    pub anonymous_refused: bool,
    pub superuser_login: bool,
    pub default_role_login: bool,
    /// Every login got a conclusive answer: the flags above are all known.
    pub checks_complete: bool,
    /// What could not be checked or was wrong; empty when every check ran.
    pub problem: String,
}

pub type CassandraNode = ObservedNode<CassandraDetail>;

/// Cassandra as the core sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cassandra;

/// What a pilot's status proves about its Cassandra node.
pub fn report_of(status: &NodeStatus) -> NodeReport<CassandraDetail> {
    let cassandra = match status.detail.as_ref() {
        Some(Detail::Cassandra(c)) => Some(c),
        _ => None,
    };
    let health = match (status.process_state(), cassandra) {
        (ProcessState::NotRunning, _) => Some(Health::Down),
        (_, Some(c)) => match c.operation_mode() {
            CassandraOperationMode::Normal => Some(Health::Healthy),
            CassandraOperationMode::Starting | CassandraOperationMode::Joining => {
                Some(Health::Joining)
            }
            CassandraOperationMode::Leaving => Some(Health::Leaving),
            CassandraOperationMode::Decommissioned => Some(Health::Left),
            CassandraOperationMode::Draining | CassandraOperationMode::Drained => {
                Some(Health::Down)
            }
            _ => None,
        },
        _ => None,
    };
    // Only peers with a ring state are members; a peer only gossiping is not. A member whose
    // host ID this node does not know makes the whole view unknown (it could be any node).
    let ring = cassandra.and_then(|c| {
        c.peers
            .iter()
            .filter(|p| p.state() != PeerState::Unspecified)
            .map(|p| (!p.host_id.is_empty()).then(|| p.host_id.clone()))
            .collect::<Option<_>>()
    });
    let keyspaces = cassandra.filter(|c| c.keyspaces_known).map(|c| {
        c.keyspaces
            .iter()
            .map(|k| KeyspaceReplication {
                name: k.name.clone(),
                replication_factor: k.replication_factor,
                system: k.system,
            })
            .collect()
    });
    NodeReport {
        health,
        version: (!status.version.is_empty()).then(|| status.version.clone()),
        revision: (!status.template_revision.is_empty()).then(|| status.template_revision.clone()),
        data_bytes: status.data_bytes,
        free_disk_bytes: status.free_disk_bytes,
        detail: CassandraDetail {
            host_id: cassandra
                .filter(|c| !c.host_id.is_empty())
                .map(|c| c.host_id.clone()),
            ring,
            keyspaces,
            auth: cassandra.and_then(|c| c.auth.as_ref()).map(|a| LoginsSeen {
                anonymous_refused: a.anonymous_refused,
                superuser_login: a.superuser_login,
                default_role_login: a.default_role_login,
                checks_complete: a.checks_complete,
                problem: a.problem.clone(),
            }),
        },
    }
}

fn keyspaces_of(node: &CassandraNode) -> Option<&Vec<KeyspaceReplication>> {
    node.report.as_ref()?.detail.keyspaces.as_ref()
}

/// The schema's keyspaces as every healthy node's pilot read them, each with the highest
/// replication factor any of them saw (a reading can be seconds old, and a schema change
/// reaches the nodes one by one). Unknown unless at least one node has a reading.
fn keyspaces(view: View<'_, CassandraDetail>) -> Option<Vec<KeyspaceReplication>> {
    let mut merged: BTreeMap<&str, KeyspaceReplication> = BTreeMap::new();
    let mut any = false;
    for list in view
        .nodes()
        .filter(|n| n.is_verified_healthy())
        .filter_map(keyspaces_of)
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

impl Database for Cassandra {
    type Detail = CassandraDetail;

    fn state_word(&self, health: Option<Health>, pod_ready: bool) -> &'static str {
        match health {
            Some(Health::Healthy) => "Up/Normal",
            Some(Health::Joining) => "Up/Joining",
            Some(Health::Leaving) => "Up/Leaving",
            Some(Health::Left) => "Decommissioned",
            Some(Health::Down) => "Down",
            None if pod_ready => "Ready",
            None => "Unknown",
        }
    }

    fn refuse_leave(&self, view: View<'_, CassandraDetail>, target: i32) -> Option<Refusal> {
        let keyspaces = keyspaces(view)?;
        let user = || keyspaces.iter().filter(|k| !k.system);
        let too_replicated: Vec<String> = user()
            .filter(|k| i64::from(k.replication_factor) > i64::from(target))
            .map(|k| format!("{} (RF {})", k.name, k.replication_factor))
            .collect();
        if too_replicated.is_empty() {
            return None;
        }
        let needed = user().map(|k| k.replication_factor).max().unwrap_or(0);
        Some(Refusal {
            change: RefusedChange::ScaleDown,
            reason: format!(
                "scaling down to {target} nodes would leave fewer nodes than the replication \
                 factor of keyspace {}: every replica must have a node of its own",
                too_replicated.join(", ")
            ),
            remedy: format!(
                "keep at least {needed} nodes (set replicas to {needed} or more; {} now), or \
                 lower the keyspace's replication factor with ALTER KEYSPACE first",
                view.current_nodes()
            ),
        })
    }

    fn prepare_leave(&self, view: View<'_, CassandraDetail>, leaving: &CassandraNode) -> Gate {
        let wait = |cause, reason| Gate::Wait { cause, reason };
        let Some(keyspaces) = keyspaces(view) else {
            return wait(
                WaitCause::ReplicationUnknown,
                "no pilot has reported the keyspaces' replication yet".into(),
            );
        };
        if let Some(node) = view.nodes().find(|n| keyspaces_of(n).is_none()) {
            return wait(
                WaitCause::ReplicationUnknown,
                format!(
                    "the pilot of {} has not reported the keyspaces' replication",
                    node.name
                ),
            );
        }
        let remaining = view.current_nodes() - 1;
        // Cassandra's own keyspaces may be replicated more widely than the nodes that remain
        // (system_distributed has RF 3); they are re-replicated on every node that stays, and
        // Cassandra refuses such a decommission unless forced. User keyspaces were checked by
        // refuse_leave, and the pilot checks them again before it starts.
        let force = keyspaces
            .iter()
            .any(|k| i64::from(k.replication_factor) > i64::from(remaining));
        let Some(data) = leaving.report.as_ref().and_then(|r| r.data_bytes) else {
            return wait(
                WaitCause::DiskUnknown,
                format!("the data size of {} is not known", leaving.name),
            );
        };
        let mut free: u64 = 0;
        for node in view.nodes().filter(|n| n.name != leaving.name) {
            let Some(f) = node.report.as_ref().and_then(|r| r.free_disk_bytes) else {
                return wait(
                    WaitCause::DiskUnknown,
                    format!("the free disk of {} is not known", node.name),
                );
            };
            free = free.saturating_add(f);
        }
        // Streamed data lands as new SSTables that compaction rewrites: room for twice the data.
        if free < data.saturating_mul(2) {
            return Gate::Refuse(Refusal {
                change: RefusedChange::ScaleDown,
                reason: format!(
                    "the remaining nodes have {free} bytes free, not enough to take the {data} \
                     bytes of {} (twice its data is needed for streaming and compaction)",
                    leaving.name
                ),
                remedy: format!(
                    "grow the volumes (spec.nodePools[].storage.size) or free space, or set the \
                     replicas back to {}",
                    view.current_nodes()
                ),
            });
        }
        Gate::Go(NodeAction::Decommission { force })
    }

    fn verify_left(
        &self,
        view: View<'_, CassandraDetail>,
        leaving: &CassandraNode,
    ) -> Result<(), String> {
        if leaving.health() != Some(Health::Left) {
            return Err(format!(
                "{}'s own view does not show DECOMMISSIONED yet ({})",
                leaving.name,
                stateward_core::planner::describe(leaving)
            ));
        }
        let Some(host_id) = &leaving.identity else {
            return Err(format!("the host ID of {} is not known", leaving.name));
        };
        let witness = view.nodes().any(|n| {
            n.name != leaving.name
                && n.is_verified_healthy()
                // A ring that lacks the witness itself is no proof (an empty or failed read).
                && n.report.as_ref().and_then(|r| r.detail.ring.as_ref()).is_some_and(|r| {
                    n.identity.as_ref().is_some_and(|own| r.contains(own)) && !r.contains(host_id)
                })
        });
        if witness {
            Ok(())
        } else {
            Err(format!(
                "no other Up/Normal node confirms yet that {} left its ring",
                leaving.name
            ))
        }
    }

    fn after_join(&self) -> Option<OperationKind> {
        Some(OperationKind::Cleanup)
    }

    fn after_upgrade(&self, from: &str, to: &str) -> Option<OperationKind> {
        // SSTables of the previous major format stay readable, but only until the next major:
        // rewrite them once every node runs the new one (`nodetool upgradesstables`).
        let major = |v: &str| version_key(v).first().copied();
        (major(from) != major(to)).then_some(OperationKind::UpgradeSSTables)
    }

    fn verify_back(
        &self,
        _view: View<'_, CassandraDetail>,
        node: &CassandraNode,
    ) -> Result<(), String> {
        // The pilot refuses readiness when the host ID differs from the one on the volume; a
        // reported host ID proves the node rejoined with its own identity.
        match node.report.as_ref().and_then(|r| r.detail.host_id.as_ref()) {
            Some(_) => Ok(()),
            None => Err(format!(
                "the pilot of {} has not reported its host ID",
                node.name
            )),
        }
    }
}
