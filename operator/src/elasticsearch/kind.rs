//! Elasticsearch's part in the shared reconcile: the custom resource, its answers, and the
//! cluster-scoped exclusions it keeps level-triggered.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};
use stateward_core::database::View;
use stateward_core::model::{DesiredPool, NodeReport, Observed, ObservedNode, VolumePolicy};
use stateward_core::operation::NodeAction;
use stateward_core::planner::Plan;
use stateward_core::status::{ClusterStatus, NodeStatus};
use stateward_proto::v1::{
    ActionSpec, AllocationExclusionAction, DecommissionAction, DrainAction, ResumeAction,
    VotingExclusionAction, action_spec,
};

use super::database::{
    Elasticsearch, ElasticsearchDetail, PoolRoles, cluster_health, cluster_uuid,
    desired_exclusions, report_of, resume_health,
};
use super::resources::{self, APP_NAME};
use crate::api::elasticsearch::ElasticsearchCluster;
use crate::cluster::{ClusterAction, ClusterKind};
use crate::config::OperatorConfig;

impl ElasticsearchCluster {
    /// The master-eligible node names for the very first formation; none once the cluster
    /// formed (a status that recorded its UUID), so no node ever bootstraps a second cluster.
    fn bootstrap_masters(&self) -> Vec<String> {
        let formed = self
            .status
            .as_ref()
            .is_some_and(|s| s.cluster_uuid.is_some() || !s.history.is_empty());
        if formed {
            Vec::new()
        } else {
            resources::initial_master_nodes(self)
        }
    }
}

impl ClusterKind for ElasticsearchCluster {
    type Db = Elasticsearch;
    const APP_NAME: &'static str = APP_NAME;

    fn database(&self) -> Elasticsearch {
        Elasticsearch {
            pools: self
                .spec
                .node_pools
                .iter()
                .map(|p| {
                    let roles = PoolRoles {
                        master: p.is_master_eligible(),
                        data: p.holds_data(),
                    };
                    (p.name.clone(), roles)
                })
                .collect(),
        }
    }

    fn report_of(status: &stateward_proto::v1::NodeStatus) -> NodeReport<ElasticsearchDetail> {
        report_of(status)
    }

    fn identity_of(detail: &ElasticsearchDetail) -> Option<String> {
        detail.node_id.clone()
    }

    fn cluster_status(&self) -> Option<&ClusterStatus> {
        self.status.as_ref()
    }

    fn spec_pools(&self) -> Vec<DesiredPool> {
        self.spec
            .node_pools
            .iter()
            .map(|p| DesiredPool::new(&p.name, self.spec.pool_replicas(p)))
            .collect()
    }

    fn version(&self) -> &str {
        &self.spec.version
    }

    fn is_paused(&self) -> bool {
        self.spec.is_paused()
    }

    fn volume_policy(&self) -> VolumePolicy {
        self.spec.pvc_policy_on_scale_down().into()
    }

    fn storage_size(&self, pool: &str) -> Option<String> {
        self.spec
            .node_pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| p.storage.size.clone())
    }

    fn owner_reference(&self) -> Option<OwnerReference> {
        resources::owner_reference(self)
    }

    fn config_map(&self) -> Result<ConfigMap, String> {
        resources::config_map(self, &self.bootstrap_masters()).map_err(|e| e.to_string())
    }

    fn config_hash(config_map: &ConfigMap) -> String {
        resources::config_hash(config_map)
    }

    fn services(&self) -> Vec<Service> {
        vec![
            resources::nodes_service(self),
            resources::client_service(self),
        ]
    }

    fn pod_disruption_budget(&self) -> PodDisruptionBudget {
        resources::pod_disruption_budget(self)
    }

    fn statefulset(
        &self,
        pool: &str,
        replicas: i32,
        config_hash: &str,
        config: &OperatorConfig,
    ) -> Option<StatefulSet> {
        let pool = self.spec.node_pools.iter().find(|p| p.name == pool)?;
        Some(resources::statefulset(
            self,
            pool,
            replicas,
            config_hash,
            config,
        ))
    }

    fn action_spec(
        &self,
        action: NodeAction,
        observed: &Observed<ElasticsearchDetail>,
    ) -> ActionSpec {
        let action = match action {
            NodeAction::Decommission { .. } => {
                action_spec::Action::Decommission(DecommissionAction { force: false })
            }
            NodeAction::Drain => action_spec::Action::Drain(DrainAction {}),
            NodeAction::Resume => {
                let desired = self.spec_pools();
                let view = View {
                    desired: &desired,
                    observed,
                };
                action_spec::Action::Resume(ResumeAction {
                    min_health: resume_health(&self.database(), view).into(),
                })
            }
            // Elasticsearch has no node tasks; a pilot would refuse the request.
            NodeAction::Cleanup | NodeAction::UpgradeSSTables => return ActionSpec::default(),
        };
        ActionSpec {
            action: Some(action),
        }
    }

    fn node_status(&self, node: &ObservedNode<ElasticsearchDetail>, status: &mut NodeStatus) {
        if let Some(report) = &node.report {
            status.roles = report.detail.roles.clone();
            status.shards = report.detail.shards.map(i64::from);
            status.elected_master = report.detail.elected_master;
        }
    }

    fn cluster_fields(&self, observed: &Observed<ElasticsearchDetail>, status: &mut ClusterStatus) {
        status.health = cluster_health(observed);
        if let Some(uuid) = cluster_uuid(observed) {
            status.cluster_uuid = Some(uuid);
        }
    }

    fn cluster_actions(
        &self,
        desired: &[DesiredPool],
        observed: &Observed<ElasticsearchDetail>,
        plan: &Plan,
        attempt: &str,
    ) -> Vec<ClusterAction> {
        let want = desired_exclusions(&self.database(), desired, observed, plan);
        let leaving: BTreeSet<&String> = want.allocation.iter().chain(&want.voting).collect();
        // Healthy nodes that stay, each with a fresh reading of the cluster's settings.
        let pilots: Vec<(&str, &ElasticsearchDetail)> = observed
            .nodes_of(desired)
            .filter(|n| n.is_verified_healthy() && !leaving.contains(&n.name))
            .filter_map(|n| Some((n.name.as_str(), &n.report.as_ref()?.detail)))
            .collect();
        let Some(&(first, seen)) = pilots.first() else {
            return Vec::new();
        };
        // A pilot runs one action at a time: the two exclusions go to different pilots when
        // there are two.
        let second = pilots.get(1).map_or(first, |(name, _)| *name);
        let mut out = Vec::new();
        if want.allocation != seen.allocation_exclusions {
            out.push(ClusterAction {
                pilot: first.to_string(),
                action_id: exclusion_id(
                    "allocation",
                    attempt,
                    &want.allocation,
                    &seen.allocation_exclusions,
                ),
                spec: ActionSpec {
                    action: Some(action_spec::Action::AllocationExclusion(
                        AllocationExclusionAction {
                            node_names: want.allocation.iter().cloned().collect(),
                        },
                    )),
                },
            });
        }
        if want.voting != seen.voting_exclusions {
            out.push(ClusterAction {
                pilot: second.to_string(),
                action_id: exclusion_id("voting", attempt, &want.voting, &seen.voting_exclusions),
                spec: ActionSpec {
                    action: Some(action_spec::Action::VotingExclusion(
                        VotingExclusionAction {
                            node_names: want.voting.iter().cloned().collect(),
                        },
                    )),
                },
            });
        }
        out
    }
}

/// An exclusion action's ID: the attempt (the minute), the set asked for and the set it
/// replaces. The same change asked again within the minute is the same action; a change not in
/// force a minute later (the action failed, or the set drifted) is asked again under a new ID,
/// and a later operation that asks for the same sets never gets an old answer.
fn exclusion_id(
    kind: &str,
    attempt: &str,
    want: &BTreeSet<String>,
    seen: &BTreeSet<String>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(attempt.as_bytes());
    hasher.update([1]);
    for name in want {
        hasher.update(name.as_bytes());
        hasher.update([0]);
    }
    hasher.update([1]);
    for name in seen {
        hasher.update(name.as_bytes());
        hasher.update([0]);
    }
    format!("{kind}-exclusion-{}", hex::encode(&hasher.finalize()[..8]))
}
