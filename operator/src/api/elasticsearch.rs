//! `ElasticsearchCluster` (`stateward.io/v1alpha1`): what app teams type and read.
//!
//! Every rule an app team can break at `kubectl apply` time is a CEL rule here, so the API server
//! rejects bad input with a clear message instead of the operator failing later.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// elasticsearch.yml keys the operator and pilot own (one list, in the core); the CEL rule on
/// `config.elasticsearchYml` is generated from it.
pub use stateward_core::node_config::RESERVED_ELASTICSEARCH_YML_KEYS;

/// Keep or delete a PersistentVolumeClaim: one type for every database, so the volume code that
/// acts on it is shared.
pub use crate::api::cassandra::PvcPolicy;

/// The roles a pool gets when `roles` is absent: a small cluster of identical nodes.
pub const DEFAULT_ROLES: &[NodeRole] = &[NodeRole::Master, NodeRole::Data, NodeRole::Ingest];

// CEL over a pool: absent roles mean the defaults, which are master-eligible and hold data.
fn cel_master(pool: &str) -> String {
    format!("(!has({pool}.roles) || 'master' in {pool}.roles)")
}

fn cel_data(pool: &str) -> String {
    format!("(!has({pool}.roles) || {pool}.roles.exists(r, r.startsWith('data')))")
}

/// A pool that has (or may still have) nodes: replicas in the stored spec, or pods in the status.
fn cel_has_nodes(old_pool: &str) -> String {
    format!(
        "((has(oldSelf.spec.replicas) ? oldSelf.spec.replicas : {old_pool}.replicas) > 0 || (has(self.status) && has(self.status.pools) && self.status.pools.exists(s, s.name == {old_pool}.name && s.replicas > 0)))"
    )
}

/// Refuses a role change that would leave a pool's nodes with what Elasticsearch refuses to
/// start on: shard data without a data role, or cluster metadata with neither master nor data.
fn roles_change_rule() -> String {
    let stranded = format!(
        "({old_data} && !{new_data}) || ({old_master} && !{new_master} && !{new_data})",
        old_data = cel_data("o"),
        new_data = cel_data("p"),
        old_master = cel_master("o"),
        new_master = cel_master("p"),
    );
    format!(
        "self.spec.nodePools.all(p, !oldSelf.spec.nodePools.exists(o, o.name == p.name && ({stranded}) && {}))",
        cel_has_nodes("o")
    )
}

fn master_eligible_rule() -> String {
    format!(
        "self.nodePools.exists(p, {} && (has(self.replicas) ? self.replicas : p.replicas) >= 1)",
        cel_master("p")
    )
}

/// Every reserved key, and every dotted ancestor of one ("discovery" would nest
/// "discovery.seed_hosts"), in list order without repeats.
pub fn reserved_keys_and_ancestors() -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in RESERVED_ELASTICSEARCH_YML_KEYS {
        let ancestors = key
            .char_indices()
            .filter(|(_, c)| *c == '.')
            .map(|(i, _)| &key[..i]);
        for candidate in ancestors.chain(std::iter::once(*key)) {
            if !keys.iter().any(|k| k == candidate) {
                keys.push(candidate.to_string());
            }
        }
    }
    keys
}

/// The CEL rule on `config.elasticsearchYml`, generated from the shared list so it cannot drift.
/// Map lookups (`in`) and constant-prefix checks keep its cost independent of key length.
fn reserved_keys_rule() -> String {
    let present = reserved_keys_and_ancestors()
        .iter()
        .map(|k| format!("!('{k}' in self)"))
        .collect::<Vec<_>>()
        .join(" && ");
    let under = RESERVED_ELASTICSEARCH_YML_KEYS
        .iter()
        .map(|k| format!("!k.startsWith('{k}.')"))
        .collect::<Vec<_>>()
        .join(" && ");
    format!("{present} && self.all(k, {under})")
}

fn reserved_keys_message() -> String {
    format!(
        "config.elasticsearchYml may not set keys that Stateward owns, nor a key that nests one or sits under one: {}",
        RESERVED_ELASTICSEARCH_YML_KEYS.join(", ")
    )
}

/// Desired state of an Elasticsearch cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stateward.io",
    version = "v1alpha1",
    kind = "ElasticsearchCluster",
    plural = "elasticsearchclusters",
    shortname = "es",
    // ECK's Elasticsearch kind also claims `es` and wins where both are installed; `esc` is ours alone.
    shortname = "esc",
    category = "stateward",
    namespaced,
    status = "ElasticsearchClusterStatus",
    doc = "An Elasticsearch cluster run by Stateward: node pools on StatefulSets, every node with a \
           pilot sidecar that executes and verifies admin actions. Security is not configured: \
           TLS and users need x-pack, which the Maven-assembled build used in tests lacks, so \
           Stateward does not configure Elasticsearch security yet. HTTP (9200) and transport \
           (9300) are plain and unauthenticated: restrict who reaches them with NetworkPolicies.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health", description = "Elasticsearch cluster health: green, yellow or red"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready", description = "Ready nodes / desired nodes"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Elasticsearch version running"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "What the cluster is doing now"),
    printcolumn(name = "Operation", type_ = "string", json_path = ".status.currentOperation.summary", description = "Current operation", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 40 characters (lowercase letters, digits, '-'; starting with a letter) so that StatefulSet, Service and pod names derived from it stay valid"),
    validation = Rule::new("!has(self.status) || !has(self.status.version) || !isSemver(self.status.version) || !isSemver(self.spec.version) || semver(self.spec.version).compareTo(semver(self.status.version)) >= 0")
        .message("spec.version must not be lower than the version the cluster runs (status.version): Elasticsearch does not support downgrades")
        .field_path(".spec.version"),
    // Elasticsearch reads indices of the previous major only: a skipped major cannot start.
    validation = Rule::new("!has(self.status) || !has(self.status.version) || !isSemver(self.status.version) || !isSemver(self.spec.version) || semver(self.spec.version).major() - semver(self.status.version).major() <= 1")
        .message("spec.version may move at most one major version past the version the cluster runs (status.version): upgrade one major at a time")
        .field_path(".spec.version"),
    // Nodes already upgraded are never taken back: an upgrade in flight only moves forward.
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.operation) || oldSelf.status.operation.kind != 'Upgrade' || !isSemver(self.spec.version) || !isSemver(oldSelf.spec.version) || semver(self.spec.version).compareTo(semver(oldSelf.spec.version)) >= 0")
        .message("spec.version cannot go back while an upgrade runs: some nodes already run the newer version")
        .field_path(".spec.version"),
    // A pool leaves the spec only once its nodes have left through verified removals;
    // removing it earlier would orphan them outside every safety check.
    validation = Rule::new("oldSelf.spec.nodePools.all(o, self.spec.nodePools.exists(p, p.name == o.name) || ((has(oldSelf.spec.replicas) ? oldSelf.spec.replicas : o.replicas) == 0 && (!has(self.status) || !has(self.status.pools) || !self.status.pools.exists(s, s.name == o.name && s.replicas > 0))))")
        .message("a node pool can be removed only after its nodes have left: set its replicas to 0, wait until status.pools shows no node left in it, then remove it")
        .field_path(".spec.nodePools"),
    // Changing roles is a rolling restart, except where a node would keep on disk what its new
    // roles forbid (Elasticsearch then refuses to start it).
    validation = Rule::new(roles_change_rule())
        .message("a node pool with nodes cannot drop its data roles, nor become neither master-eligible nor data: its nodes hold shard data or cluster metadata that Elasticsearch refuses to start with; scale it to 0 first (its shards move to other nodes), or add a new pool with the new roles")
        .field_path(".spec.nodePools"),
)]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || size(self.nodePools) == 1")
        .message("spec.replicas is the shortcut for single-pool clusters; with several node pools set nodePools[].replicas instead")
        .field_path(".replicas"),
    validation = Rule::new(master_eligible_rule())
        .message("no master-eligible node: at least one node pool must have the master role (pools without roles have it) and at least 1 replica, or the cluster cannot form")
        .field_path(".nodePools"),
)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchClusterSpec {
    /// Elasticsearch version to run, as MAJOR.MINOR.PATCH. Supported: 9.x (tested with 9.5.3).
    /// Upgrades move forward one node at a time; a version lower than the running one is
    /// rejected.
    #[x_kube(validation = Rule::new("self.matches('^9\\\\.[0-9]+\\\\.[0-9]+$')").message("spec.version must be a supported Elasticsearch release written MAJOR.MINOR.PATCH: 9.x.y (tested: 9.5.3)"))]
    #[schemars(length(max = 32))]
    pub version: String,

    /// Elasticsearch container image. Defaults to the operator's configured repository tagged
    /// with `version` (the official docker.elastic.co/elasticsearch/elasticsearch by default).
    /// The image must run `/usr/share/elasticsearch/bin/elasticsearch` as uid 1000 with
    /// ES_PATH_CONF honoured, as the official image does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Pilot sidecar image. Defaults to the pilot image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub pilot_image: Option<String>,

    /// When true the operator keeps observing and reporting but changes nothing (no applies, no
    /// pilot actions). Use it to freeze a cluster while investigating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// Shortcut for single-pool clusters, used by `kubectl scale`: when set it overrides the
    /// replicas of the only node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Groups of identical nodes, each on its own StatefulSet, with the same roles. At least one
    /// pool, and at least one master-eligible node; pool names are unique and immutable. A pool
    /// is removed after it was scaled to 0, so its shards move away first.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1, max = 16))]
    pub node_pools: Vec<ElasticsearchNodePool>,

    /// Elasticsearch settings the pilot renders into elasticsearch.yml and jvm.options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ElasticsearchConfig>,

    /// What happens to the data volumes (PersistentVolumeClaims).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_policy: Option<StoragePolicy>,
}

/// A node role (elasticsearch.yml `node.roles`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Master,
    Data,
    DataContent,
    DataHot,
    DataWarm,
    DataCold,
    DataFrozen,
    Ingest,
    Ml,
    RemoteClusterClient,
    Transform,
}

impl NodeRole {
    /// The name in `node.roles`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Data => "data",
            NodeRole::DataContent => "data_content",
            NodeRole::DataHot => "data_hot",
            NodeRole::DataWarm => "data_warm",
            NodeRole::DataCold => "data_cold",
            NodeRole::DataFrozen => "data_frozen",
            NodeRole::Ingest => "ingest",
            NodeRole::Ml => "ml",
            NodeRole::RemoteClusterClient => "remote_cluster_client",
            NodeRole::Transform => "transform",
        }
    }

    /// Whether a node with this role holds shards (the generic role or a data tier).
    pub fn holds_data(self) -> bool {
        matches!(
            self,
            NodeRole::Data
                | NodeRole::DataContent
                | NodeRole::DataHot
                | NodeRole::DataWarm
                | NodeRole::DataCold
                | NodeRole::DataFrozen
        )
    }
}

/// One group of identical Elasticsearch nodes (a StatefulSet).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.roles) || !('data' in self.roles) || !self.roles.exists(r, r.startsWith('data_'))")
        .message("roles cannot combine the generic 'data' role with data tier roles (data_content, data_hot, data_warm, data_cold, data_frozen): Elasticsearch refuses to start such a node")
        .field_path(".roles"),
)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchNodePool {
    /// Pool name: a DNS label, part of the StatefulSet and pod names.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("node pool name must be a DNS label: lowercase letters, digits and '-', starting with a letter"))]
    #[schemars(length(min = 1, max = 16))]
    pub name: String,

    /// Roles of this pool's nodes (elasticsearch.yml `node.roles`). Absent: master, data and
    /// ingest. An empty list makes coordinating-only nodes. Changing roles restarts the pool's
    /// nodes one at a time; a pool with nodes cannot drop its data roles (scale it to 0 first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 11))]
    pub roles: Option<Vec<NodeRole>>,

    /// Number of Elasticsearch nodes in this pool.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

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

    /// CPU and memory of the Elasticsearch container. Defaults to requests of 250m CPU and 2Gi
    /// memory and a 2Gi memory limit. The JVM heap is derived from the memory limit unless
    /// `heapSize` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// JVM heap size (for example "1g" or "512m"). Defaults to half of the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+[mgMG]$')").message("heapSize is a whole number followed by m or g, for example 512m or 4g"))]
    #[schemars(length(max = 16))]
    pub heap_size: Option<String>,

    /// Data volume of each node.
    pub storage: ElasticsearchStorage,
}

/// The PersistentVolumeClaim template of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storageClassName of an existing node pool cannot change; add a new pool with the new class instead")
        .field_path(".storageClassName"),
)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchStorage {
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

/// Elasticsearch settings passed through to the nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchConfig {
    /// Extra elasticsearch.yml settings: dotted keys as in elasticsearch.yml, each value written
    /// as YAML text (for example `indices.memory.index_buffer_size: "20%"` or
    /// `cluster.routing.allocation.awareness.attributes: "[zone]"`). Keys that define a node's
    /// identity, roles, addresses, discovery, paths or security are owned by Stateward and
    /// rejected, as is any key nesting or nested under one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(reserved_keys_rule()).message(Message::Message(reserved_keys_message())))]
    #[schemars(extend("maxProperties" = 64))]
    pub elasticsearch_yml: Option<BTreeMap<String, String>>,

    /// Extra JVM options, appended to jvm.options (for example "-XX:+AlwaysPreTouch"). The
    /// heap is set with nodePools[].heapSize, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(o, !o.startsWith('-Xms') && !o.startsWith('-Xmx'))").message("config.jvmOptions may not set the heap (-Xms/-Xmx): use nodePools[].heapSize"))]
    #[schemars(length(max = 32))]
    pub jvm_options: Option<Vec<String>>,
}

/// What happens to PersistentVolumeClaims when nodes or the whole cluster go away.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoragePolicy {
    /// After a scale-down, once the node's removal is verified (its shards moved away): "Delete"
    /// its PVC (default) or "Retain" it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_scale_down: Option<PvcPolicy>,
    /// When the ElasticsearchCluster is deleted: "Retain" the PVCs (default, data survives) or
    /// "Delete" them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_cluster_delete: Option<PvcPolicy>,
}

/// Observed state of an Elasticsearch cluster, written only by the operator: the status model
/// every database shares (`stateward-core`).
pub type ElasticsearchClusterStatus = stateward_core::status::ClusterStatus;

impl ElasticsearchClusterSpec {
    /// Desired replicas of a pool, honouring the single-pool `spec.replicas` shortcut.
    pub fn pool_replicas(&self, pool: &ElasticsearchNodePool) -> i32 {
        match self.replicas {
            Some(replicas) if self.node_pools.len() == 1 => replicas,
            _ => pool.replicas,
        }
        .max(0)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.unwrap_or(false)
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

impl ElasticsearchNodePool {
    /// The pool's roles, the defaults when absent (empty: coordinating-only).
    pub fn roles_or_default(&self) -> Vec<NodeRole> {
        self.roles.clone().unwrap_or_else(|| DEFAULT_ROLES.to_vec())
    }

    pub fn is_master_eligible(&self) -> bool {
        self.roles_or_default().contains(&NodeRole::Master)
    }

    /// Whether the pool's nodes hold shards (any data role).
    pub fn holds_data(&self) -> bool {
        self.roles_or_default().iter().any(|r| r.holds_data())
    }

    /// `node.roles` as the pilot takes it: comma-separated, "" for coordinating-only.
    pub fn roles_env(&self) -> String {
        self.roles_or_default()
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use stateward_core::node_config::is_reserved_elasticsearch_yml_key;

    use super::*;

    fn crd_json() -> serde_json::Value {
        serde_json::to_value(ElasticsearchCluster::crd()).expect("crd")
    }

    fn spec_schema() -> serde_json::Value {
        crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    /// Splits the generated rule back into what it refuses, and checks it refuses exactly the
    /// keys `is_reserved_elasticsearch_yml_key` (what the operator and pilot use) refuses.
    #[test]
    fn the_reserved_keys_rule_matches_the_shared_list() {
        let schema = spec_schema();
        let rules = &schema["properties"]["config"]["properties"]["elasticsearchYml"]["x-kubernetes-validations"];
        let rule = rules[0]["rule"].as_str().expect("the rule exists");
        let quoted = |marker: &str| -> Vec<String> {
            rule.split(marker)
                .skip(1)
                .filter_map(|part| part.split('\'').next())
                .map(str::to_string)
                .collect()
        };
        let present = quoted("!('");
        let under: Vec<String> = quoted("!k.startsWith('");
        let refused = |key: &str| {
            present.iter().any(|p| p == key) || under.iter().any(|u| key.starts_with(u.as_str()))
        };
        let mut probes: Vec<String> = reserved_keys_and_ancestors();
        for key in RESERVED_ELASTICSEARCH_YML_KEYS {
            probes.push(format!("{key}.x"));
            probes.push(format!("{key}x"));
        }
        probes.extend(
            [
                "node.attr.zone",
                "indices.memory.index_buffer_size",
                "cluster.routing.allocation.awareness.attributes",
                "path.shared_data",
                "xpack.ml.enabled",
                "http.max_content_length",
                "discoveryx",
            ]
            .map(String::from),
        );
        for key in &probes {
            assert_eq!(
                refused(key),
                is_reserved_elasticsearch_yml_key(key),
                "{key} in {rule}"
            );
        }
        assert!(
            RESERVED_ELASTICSEARCH_YML_KEYS
                .iter()
                .all(|k| !k.contains('\''))
        );
    }

    #[test]
    fn crd_shape() {
        let crd = crd_json();
        let names = &crd["spec"]["names"];
        assert_eq!(names["shortNames"][0], "es");
        assert_eq!(names["shortNames"][1], "esc");
        assert_eq!(names["categories"][0], "stateward");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        let scale = &version["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.replicas");
        assert_eq!(scale["statusReplicasPath"], ".status.replicas");
        assert_eq!(scale["labelSelectorPath"], ".status.selector");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            columns,
            ["Health", "Ready", "Version", "Phase", "Operation", "Age"]
        );
        let roles = &spec_schema()["properties"]["nodePools"]["items"]["properties"]["roles"];
        assert_eq!(roles["x-kubernetes-list-type"], "set");
        assert_eq!(
            roles["items"]["enum"].as_array().map(Vec::len),
            Some(11),
            "{roles}"
        );
    }

    fn pool(roles: Option<Vec<NodeRole>>) -> ElasticsearchNodePool {
        ElasticsearchNodePool {
            name: "main".into(),
            roles,
            replicas: 3,
            zone: None,
            node_selector: None,
            tolerations: None,
            resources: None,
            heap_size: None,
            storage: ElasticsearchStorage {
                size: "1Gi".into(),
                storage_class_name: None,
            },
        }
    }

    #[test]
    fn absent_roles_are_the_defaults_and_empty_is_coordinating_only() {
        let default = pool(None);
        assert!(default.is_master_eligible() && default.holds_data());
        assert_eq!(default.roles_env(), "master,data,ingest");
        let coordinating = pool(Some(vec![]));
        assert!(!coordinating.is_master_eligible() && !coordinating.holds_data());
        assert_eq!(coordinating.roles_env(), "");
        let hot = pool(Some(vec![NodeRole::DataHot, NodeRole::RemoteClusterClient]));
        assert!(hot.holds_data() && !hot.is_master_eligible());
        assert_eq!(hot.roles_env(), "data_hot,remote_cluster_client");

        // Absent and empty stay distinct through the API server's JSON.
        let json = serde_json::to_value(&coordinating).expect("json");
        assert_eq!(json["roles"], serde_json::json!([]));
        assert!(
            serde_json::to_value(&default)
                .expect("json")
                .get("roles")
                .is_none()
        );
        let back: ElasticsearchNodePool = serde_json::from_value(json).expect("parse");
        assert_eq!(back.roles, Some(vec![]));
    }

    #[test]
    fn replicas_shortcut_applies_to_a_single_pool_only() {
        let mut spec = ElasticsearchClusterSpec {
            version: "9.5.3".into(),
            image: None,
            pilot_image: None,
            paused: None,
            replicas: Some(5),
            node_pools: vec![pool(None)],
            config: None,
            storage_policy: None,
        };
        assert_eq!(spec.pool_replicas(&spec.node_pools[0]), 5);
        spec.node_pools.push(pool(Some(vec![NodeRole::Ingest])));
        assert_eq!(spec.pool_replicas(&spec.node_pools[0]), 3);
        assert_eq!(spec.pvc_policy_on_scale_down(), PvcPolicy::Delete);
        assert_eq!(spec.pvc_policy_on_cluster_delete(), PvcPolicy::Retain);
    }
}
