//! Cassandra's part in the shared reconcile: the custom resource and its answers.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use stateward_core::model::{DesiredPool, NodeReport, Observed, VolumePolicy};
use stateward_core::operation::NodeAction;
use stateward_core::planner::Plan;
use stateward_core::status::ClusterStatus;
use stateward_proto::v1::{
    ActionSpec, CleanupAction, DecommissionAction, DrainAction, ResumeAction,
    UpgradeSsTablesAction, action_spec,
};

use super::auth;
use super::database::{Cassandra, CassandraDetail, report_of};
use super::resources::{self, APP_NAME};
use crate::api::cassandra::CassandraCluster;
use crate::cluster::{ClusterAction, ClusterKind};
use crate::config::OperatorConfig;
use crate::platform::login::LoginSecret;
use crate::platform::names::Names;

impl ClusterKind for CassandraCluster {
    type Db = Cassandra;
    const APP_NAME: &'static str = APP_NAME;

    fn database(&self) -> Cassandra {
        Cassandra
    }

    fn report_of(status: &stateward_proto::v1::NodeStatus) -> NodeReport<CassandraDetail> {
        report_of(status)
    }

    fn identity_of(detail: &CassandraDetail) -> Option<String> {
        detail.host_id.clone()
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
        resources::config_map(self).map_err(|e| e.to_string())
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

    fn action_spec(&self, action: NodeAction, _observed: &Observed<CassandraDetail>) -> ActionSpec {
        let action = match action {
            NodeAction::Decommission { force } => {
                action_spec::Action::Decommission(DecommissionAction { force })
            }
            NodeAction::Drain => action_spec::Action::Drain(DrainAction {}),
            // Never asked for (nothing of a drain outlives a restart); a Cassandra pilot would
            // refuse it.
            NodeAction::Resume => action_spec::Action::Resume(ResumeAction::default()),
            NodeAction::Cleanup => action_spec::Action::Cleanup(CleanupAction::default()),
            NodeAction::UpgradeSSTables => {
                action_spec::Action::UpgradeSstables(UpgradeSsTablesAction::default())
            }
        };
        ActionSpec {
            action: Some(action),
        }
    }

    fn login_secret(&self) -> Option<LoginSecret> {
        if !self.spec.authentication_enabled() {
            return None;
        }
        Some(LoginSecret {
            name: resources::superuser_secret(self),
            generate_for: self
                .spec
                .named_superuser_secret()
                .is_none()
                .then(|| Names::of(self).generated_superuser_secret()),
        })
    }

    fn cluster_fields(&self, observed: &Observed<CassandraDetail>, status: &mut ClusterStatus) {
        status.authentication = Some(auth::status(
            self.spec.authentication_enabled(),
            &resources::superuser_secret(self),
            observed,
        ));
    }

    fn cluster_actions(
        &self,
        _desired: &[DesiredPool],
        observed: &Observed<CassandraDetail>,
        plan: &Plan,
        attempt: &str,
    ) -> Vec<ClusterAction> {
        auth::action(self.spec.authentication_enabled(), observed, plan, attempt)
            .into_iter()
            .collect()
    }
}
