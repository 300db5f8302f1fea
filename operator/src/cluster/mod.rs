//! The reconcile every database kind shares (observe → plan → record → act, in [`reconcile`]),
//! and the one trait a kind implements to take part: its custom resource, its answers to the
//! core's questions, and the objects it runs on.

pub mod reconcile;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stateward_core::Database;
use stateward_core::model::{DesiredPool, NodeReport, Observed, ObservedNode, VolumePolicy};
use stateward_core::operation::NodeAction;
use stateward_core::planner::Plan;
use stateward_core::status::{ClusterStatus, NodeStatus};
use stateward_proto::v1::ActionSpec;

use crate::config::OperatorConfig;
use crate::platform::login::LoginSecret;

/// The detail type of a kind's database.
pub type DetailOf<K> = <<K as ClusterKind>::Db as Database>::Detail;

/// A cluster-scoped pilot action the kind wants sent now (level-triggered: recomputed on every
/// reconcile; the same ID is harmless to send again).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterAction {
    /// The pod whose pilot runs it.
    pub pilot: String,
    pub action_id: String,
    pub spec: ActionSpec,
}

/// One database kind: everything the shared reconcile asks of it.
pub trait ClusterKind:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Db: Database<Detail: Send + Sync> + Send + Sync;

    /// `app.kubernetes.io/name` of the kind's objects.
    const APP_NAME: &'static str;

    fn database(&self) -> Self::Db;
    fn report_of(status: &stateward_proto::v1::NodeStatus) -> NodeReport<DetailOf<Self>>;
    /// The database's identity of the node in a report (Cassandra host ID).
    fn identity_of(detail: &DetailOf<Self>) -> Option<String>;

    fn cluster_status(&self) -> Option<&ClusterStatus>;
    /// The spec's pools with their desired sizes, in spec order.
    fn spec_pools(&self) -> Vec<DesiredPool>;
    fn version(&self) -> &str;
    fn is_paused(&self) -> bool;
    fn volume_policy(&self) -> VolumePolicy;
    /// The data volume size of a pool in the spec.
    fn storage_size(&self, pool: &str) -> Option<String>;

    fn owner_reference(&self) -> Option<OwnerReference>;
    fn config_map(&self) -> Result<ConfigMap, String>;
    /// The hash of what, in the ConfigMap, the nodes are started from (a change restarts them).
    fn config_hash(config_map: &ConfigMap) -> String;
    fn services(&self) -> Vec<Service>;
    fn pod_disruption_budget(&self) -> PodDisruptionBudget;
    /// The StatefulSet of a pool in the spec; `None` if the pool is not in the spec.
    fn statefulset(
        &self,
        pool: &str,
        replicas: i32,
        config_hash: &str,
        config: &OperatorConfig,
    ) -> Option<StatefulSet>;

    /// The pilot request of a node action.
    fn action_spec(&self, action: NodeAction, observed: &Observed<DetailOf<Self>>) -> ActionSpec;

    /// What only this kind shows of a node in `status.nodes`.
    fn node_status(&self, _node: &ObservedNode<DetailOf<Self>>, _status: &mut NodeStatus) {}

    /// What only this kind shows of the cluster in its status.
    fn cluster_fields(&self, _observed: &Observed<DetailOf<Self>>, _status: &mut ClusterStatus) {}

    /// The Secret of the database's administrative login, when the cluster uses one.
    fn login_secret(&self) -> Option<LoginSecret> {
        None
    }

    /// Cluster-scoped actions to send now.
    ///
    /// `attempt` changes every minute and salts the action IDs: a pilot answers an ID it has
    /// seen with its old result, so an action that failed, or a set asked for again by a later
    /// operation, needs a new ID to run again.
    fn cluster_actions(
        &self,
        _desired: &[DesiredPool],
        _observed: &Observed<DetailOf<Self>>,
        _plan: &Plan,
        _attempt: &str,
    ) -> Vec<ClusterAction> {
        Vec::new()
    }
}
