//! `CassandraCluster` (`stateward.io/v1alpha1`): what app teams type and read.
//!
//! Every rule an app team can break at `kubectl apply` time is a CEL rule here, so the API server
//! rejects bad input with a clear message instead of the operator failing later.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// cassandra.yaml keys the operator and pilot own (one list, in the core); the CEL rule on
/// `config.cassandraYaml` is checked against it by a test.
pub use stateward_core::node_config::RESERVED_CASSANDRA_YAML_KEYS;

/// Desired state of a Cassandra cluster (one datacenter).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stateward.io",
    version = "v1alpha1",
    kind = "CassandraCluster",
    plural = "cassandraclusters",
    shortname = "cass",
    category = "stateward",
    namespaced,
    status = "CassandraClusterStatus",
    doc = "An Apache Cassandra datacenter run by Stateward: node pools on StatefulSets, every \
           node with a pilot sidecar that executes and verifies admin actions.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready", description = "Ready nodes / desired nodes"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Cassandra version running"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "What the cluster is doing now"),
    printcolumn(name = "Operation", type_ = "string", json_path = ".status.currentOperation.summary", description = "Current operation", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 40 characters (lowercase letters, digits, '-'; starting with a letter) so that StatefulSet, Service and pod names derived from it stay valid"),
    validation = Rule::new("!has(self.status) || !has(self.status.version) || !isSemver(self.status.version) || !isSemver(self.spec.version) || semver(self.spec.version).compareTo(semver(self.status.version)) >= 0")
        .message("spec.version must not be lower than the version the cluster runs (status.version): Cassandra does not support downgrades")
        .field_path(".spec.version"),
    // Supported upgrade paths: within a release line, or to the next major (4.1 → 5.0); a
    // skipped major would read data files two formats old.
    validation = Rule::new("!has(self.status) || !has(self.status.version) || !isSemver(self.status.version) || !isSemver(self.spec.version) || semver(self.spec.version).major() - semver(self.status.version).major() <= 1")
        .message("spec.version may move at most one major version past the version the cluster runs (status.version): upgrade one major at a time (4.1 → 5.0)")
        .field_path(".spec.version"),
    // Nodes already upgraded are never taken back: an upgrade in flight only moves forward.
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.operation) || oldSelf.status.operation.kind != 'Upgrade' || !isSemver(self.spec.version) || !isSemver(oldSelf.spec.version) || semver(self.spec.version).compareTo(semver(oldSelf.spec.version)) >= 0")
        .message("spec.version cannot go back while an upgrade runs: some nodes already run the newer version")
        .field_path(".spec.version"),
    // A pool leaves the spec only once its nodes have left through verified decommissions;
    // removing it earlier would orphan them outside every safety check.
    validation = Rule::new("oldSelf.spec.nodePools.all(o, self.spec.nodePools.exists(p, p.name == o.name) || ((has(oldSelf.spec.replicas) ? oldSelf.spec.replicas : o.replicas) == 0 && (!has(self.status) || !has(self.status.pools) || !self.status.pools.exists(s, s.name == o.name && s.replicas > 0))))")
        .message("a node pool can be removed only after its nodes have left: set its replicas to 0, wait until status.pools shows no node left in it, then remove it")
        .field_path(".spec.nodePools"),
)]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || size(self.nodePools) == 1")
        .message("spec.replicas is the shortcut for single-pool clusters; with several node pools set nodePools[].replicas instead")
        .field_path(".replicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct CassandraClusterSpec {
    /// Apache Cassandra version to run, as MAJOR.MINOR.PATCH (for example "5.0.9"). Upgrades move
    /// forward one node at a time; a version lower than the running one is rejected.
    #[x_kube(validation = Rule::new("self.matches('^(4\\\\.1|5\\\\.0)\\\\.[0-9]+$')").message("spec.version must be a supported Cassandra release written MAJOR.MINOR.PATCH: 4.1.x or 5.0.x"))]
    #[schemars(length(max = 32))]
    pub version: String,

    /// Cassandra container image. Defaults to the operator's configured repository tagged with
    /// `version` (the official `cassandra` image by default). The image must keep the official
    /// image's launch contract (`cassandra -f`, CASSANDRA_CONF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Pilot sidecar image. Defaults to the pilot image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub pilot_image: Option<String>,

    /// Cassandra datacenter name of this cluster's nodes. Defaults to "dc1". Cannot change once
    /// set: nodes would appear in a different datacenter and replication would break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.datacenter cannot change after creation"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][-_A-Za-z0-9]*$')").message("spec.datacenter may contain letters, digits, '-' and '_' only"))]
    #[schemars(length(min = 1, max = 48))]
    pub datacenter: Option<String>,

    /// When true the operator keeps observing and reporting but changes nothing (no applies, no
    /// pilot actions). Use it to freeze a cluster while investigating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// Shortcut for single-pool clusters, used by `kubectl scale`: when set it overrides the
    /// replicas of the only node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Groups of identical nodes, each on its own StatefulSet and in its own Cassandra rack. At
    /// least one pool; pool names are unique and immutable. A pool is removed after it was
    /// scaled to 0, so its nodes leave through verified decommissions.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1, max = 16))]
    pub node_pools: Vec<CassandraNodePool>,

    /// Cassandra settings the pilot renders into cassandra.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<CassandraConfig>,

    /// What happens to the data volumes (PersistentVolumeClaims).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_policy: Option<StoragePolicy>,

    /// Who may log in over CQL. On by default: password authentication with a superuser whose
    /// credentials the operator generates in the Secret `<cluster>-superuser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<CassandraAuthentication>,
}

/// CQL authentication and authorization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CassandraAuthentication {
    /// PasswordAuthenticator and CassandraAuthorizer when true (the default); false lets any
    /// client that reaches port 9042 in without credentials (AllowAllAuthenticator). Changing
    /// it restarts every node, one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// A Secret of this namespace with keys `username` and `password`: the superuser Stateward
    /// creates and logs in as. Defaults to `<cluster>-superuser`, generated by the operator
    /// (random password) and kept when the cluster is deleted, like its volumes: a cluster
    /// re-created under the same name on them logs in with it. The operator never changes a
    /// Secret's password. The username cannot be `cassandra` (the default role, which
    /// Stateward disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$')").message("authentication.superuserSecretName must be a Secret name (a DNS subdomain)"))]
    #[schemars(length(min = 1, max = 253))]
    pub superuser_secret_name: Option<String>,
}

/// One group of identical Cassandra nodes (a StatefulSet) in one rack.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.rack) ? self.rack : self.name) == (has(oldSelf.rack) ? oldSelf.rack : oldSelf.name)")
        .message("the rack of an existing node pool cannot change (its nodes would move racks and replicas would be misplaced); add a new pool instead")
        .field_path(".rack"),
)]
#[serde(rename_all = "camelCase")]
pub struct CassandraNodePool {
    /// Pool name: a DNS label, part of the StatefulSet and pod names.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("node pool name must be a DNS label: lowercase letters, digits and '-', starting with a letter"))]
    #[schemars(length(min = 1, max = 16))]
    pub name: String,

    /// Number of Cassandra nodes in this pool. Scale-up adds one verified node at a time;
    /// scale-down decommissions one node at a time after safety checks.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Cassandra rack of this pool's nodes. Defaults to the pool name; cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][-_A-Za-z0-9]*$')").message("rack may contain letters, digits, '-' and '_' only"))]
    #[schemars(length(min = 1, max = 48))]
    pub rack: Option<String>,

    /// Availability zone for this pool: its pods are pinned to nodes labelled
    /// `topology.kubernetes.io/zone=<zone>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub zone: Option<String>,

    /// Node labels the pool's pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the pool's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tolerations: Option<Vec<Toleration>>,

    /// CPU and memory of the Cassandra container. The JVM heap is derived from the memory limit
    /// unless `heapSize` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// JVM heap size (for example "2G" or "512M"). Defaults to half of the memory limit,
    /// between 256M and 8G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+[MG]$')").message("heapSize is a whole number followed by M or G, for example 512M or 4G"))]
    #[schemars(length(max = 16))]
    pub heap_size: Option<String>,

    /// Data volume of each node.
    pub storage: CassandraStorage,
}

/// The PersistentVolumeClaim template of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storageClassName of an existing node pool cannot change; add a new pool with the new class instead")
        .field_path(".storageClassName"),
)]
#[serde(rename_all = "camelCase")]
pub struct CassandraStorage {
    /// Size of each node's data volume, as a Kubernetes quantity (for example "10Gi"). It can
    /// grow (when the storage class allows expansion) but never shrink.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage.size must be a positive quantity such as 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage.size cannot shrink: volumes can only grow"))]
    #[schemars(length(max = 32))]
    pub size: String,

    /// StorageClass of the data volumes; the cluster default when unset. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// Cassandra settings. Typed fields cover what users change most; `cassandraYaml` passes other
/// cassandra.yaml keys through verbatim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CassandraConfig {
    /// Tokens per node (num_tokens). Defaults to 16. Fixed once the cluster exists: a node
    /// cannot change its token count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("config.numTokens cannot change after creation"))]
    #[schemars(range(min = 1, max = 256))]
    pub num_tokens: Option<i32>,

    /// Extra cassandra.yaml settings: snake_case keys as in cassandra.yaml, each value written as
    /// YAML text (for example `concurrent_reads: "64"` or
    /// `client_encryption_options: "{enabled: false}"`). Keys that define a
    /// node's identity or addresses (cluster_name, seed_provider, listen/rpc/broadcast addresses,
    /// endpoint_snitch, num_tokens, directories, ports) are owned by Stateward and rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!('cluster_name' in self) && !('seed_provider' in self) && !('listen_address' in self) && !('listen_interface' in self) && !('broadcast_address' in self) && !('rpc_address' in self) && !('rpc_interface' in self) && !('broadcast_rpc_address' in self) && !('endpoint_snitch' in self) && !('num_tokens' in self) && !('initial_token' in self) && !('data_file_directories' in self) && !('commitlog_directory' in self) && !('saved_caches_directory' in self) && !('hints_directory' in self) && !('cdc_raw_directory' in self) && !('storage_port' in self) && !('native_transport_port' in self) && !('authenticator' in self) && !('authorizer' in self) && !('role_manager' in self)")
        .message("config.cassandraYaml may not set keys that Stateward owns: cluster_name, seed_provider, listen/rpc/broadcast addresses and interfaces, endpoint_snitch, num_tokens (use config.numTokens), initial_token, data/commitlog/saved_caches/hints/cdc directories, storage_port, native_transport_port, authenticator, authorizer and role_manager (use spec.authentication)"))]
    #[schemars(extend("maxProperties" = 64))]
    pub cassandra_yaml: Option<BTreeMap<String, String>>,
}

/// What happens to PersistentVolumeClaims when nodes or the whole cluster go away.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoragePolicy {
    /// After a scale-down, once the node's decommission is verified: "Delete" its PVC (default)
    /// or "Retain" it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_scale_down: Option<PvcPolicy>,
    /// When the CassandraCluster is deleted: "Retain" the PVCs (default, data survives) or
    /// "Delete" them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_cluster_delete: Option<PvcPolicy>,
}

/// Keep or delete a PersistentVolumeClaim.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvcPolicy {
    Retain,
    Delete,
}

impl From<PvcPolicy> for stateward_core::model::VolumePolicy {
    fn from(policy: PvcPolicy) -> Self {
        match policy {
            PvcPolicy::Delete => Self::Delete,
            PvcPolicy::Retain => Self::Retain,
        }
    }
}

/// Observed state of a Cassandra cluster, written only by the operator: the status model every
/// database shares (`stateward-core`).
pub type CassandraClusterStatus = stateward_core::status::ClusterStatus;

impl CassandraClusterSpec {
    /// Datacenter name, defaulted.
    pub fn datacenter_name(&self) -> &str {
        self.datacenter.as_deref().unwrap_or("dc1")
    }

    /// Desired replicas of a pool, honouring the single-pool `spec.replicas` shortcut.
    pub fn pool_replicas(&self, pool: &CassandraNodePool) -> i32 {
        match self.replicas {
            Some(replicas) if self.node_pools.len() == 1 => replicas,
            _ => pool.replicas,
        }
        .max(0)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or(false)
    }

    pub fn num_tokens(&self) -> i32 {
        self.config
            .as_ref()
            .and_then(|c| c.num_tokens)
            .unwrap_or(16)
    }

    /// Whether CQL requires a login (the default).
    pub fn authentication_enabled(&self) -> bool {
        self.authentication
            .as_ref()
            .and_then(|a| a.enabled)
            .unwrap_or(true)
    }

    /// The user's superuser Secret, if they named one.
    pub fn named_superuser_secret(&self) -> Option<&str> {
        self.authentication
            .as_ref()
            .and_then(|a| a.superuser_secret_name.as_deref())
    }

    pub fn pvc_policy_on_scale_down(&self) -> PvcPolicy {
        self.storage_policy
            .as_ref()
            .and_then(|p| p.on_scale_down)
            .unwrap_or(PvcPolicy::Delete)
    }

    pub fn pvc_policy_on_cluster_delete(&self) -> PvcPolicy {
        self.storage_policy
            .as_ref()
            .and_then(|p| p.on_cluster_delete)
            .unwrap_or(PvcPolicy::Retain)
    }
}

impl CassandraNodePool {
    pub fn rack_name(&self) -> &str {
        self.rack.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    /// The CEL rule on `config.cassandraYaml` is written out by hand (CEL has no list constant);
    /// it must refuse exactly the keys of the one list the operator and the pilot use.
    #[test]
    fn the_reserved_keys_rule_matches_the_shared_list() {
        let crd = serde_json::to_string(&CassandraCluster::crd()).expect("crd");
        let rule_start = crd
            .find("!('cluster_name' in self)")
            .expect("the rule exists");
        let rule = &crd[rule_start..];
        let rule = &rule[..rule.find('"').unwrap_or(rule.len())];
        let in_rule: Vec<&str> = rule
            .split("!('")
            .skip(1)
            .filter_map(|part| part.split('\'').next())
            .collect();
        assert_eq!(in_rule, RESERVED_CASSANDRA_YAML_KEYS, "{rule}");
    }
}
