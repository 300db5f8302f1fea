//! Pure builders: an `ElasticsearchCluster` (plus the planner's StatefulSet sizes) → the
//! Kubernetes objects that realise it. No I/O here, so the shape of every object is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceFieldSelector, ResourceRequirements, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use stateward_core::node_config::{
    ELASTICSEARCH_CONFIG_FILE, ElasticsearchNodeConfig, is_reserved_elasticsearch_yml_key,
};

use crate::api::elasticsearch::{ElasticsearchCluster, ElasticsearchNodePool, PvcPolicy};
use crate::config::OperatorConfig;
use crate::labels;
pub use crate::platform::names::Names;

/// The value of `app.kubernetes.io/name` on everything an ElasticsearchCluster owns.
pub const APP_NAME: &str = "elasticsearch";

pub const ELASTICSEARCH_CONTAINER: &str = "elasticsearch";
pub const PILOT_CONTAINER: &str = "pilot";
pub const HTTP_PORT: i32 = 9200;
pub const TRANSPORT_PORT: i32 = 9300;
/// The pilot's ports, the same for every database.
pub const PILOT_GRPC_PORT: i32 = 7443;
pub const PILOT_HTTP_PORT: i32 = 7080;

/// The official image runs Elasticsearch as uid 1000, gid 0 (its files are group 0 and
/// group-writable); fsGroup 1000 makes the volumes writable for both containers.
const ELASTICSEARCH_UID: i64 = 1000;
const ELASTICSEARCH_GID: i64 = 0;
/// The pilot's preStop preparation may take its drain timeout (120 s by default); the JVM then
/// still needs time to close its shards cleanly.
const TERMINATION_GRACE_SECONDS: i64 = 180;

const HOME: &str = "/usr/share/elasticsearch";
const CONF_DIR: &str = "/usr/share/elasticsearch/config";
const DATA_DIR: &str = "/usr/share/elasticsearch/data";
const TMP_DIR: &str = "/usr/share/elasticsearch/tmp";
const LOGS_DIR: &str = "/usr/share/elasticsearch/logs";
const PILOT_CONFIG_DIR: &str = "/etc/stateward/config";
const PILOT_TLS_DIR: &str = "/etc/stateward/tls";

pub fn owner_reference(cluster: &ElasticsearchCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

fn meta(
    cluster: &ElasticsearchCluster,
    name: String,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Headless Service: stable pod DNS names, and the discovery host (it resolves to every pod).
pub fn nodes_service(cluster: &ElasticsearchCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: meta(
            cluster,
            names.nodes_service(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Discovery must find nodes that are still starting: a cluster forms only once its
            // master-eligible nodes see each other, before any of them is ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::cluster_selector(&names.cluster)),
            ports: Some(vec![
                service_port("http", HTTP_PORT),
                service_port("transport", TRANSPORT_PORT),
                service_port("pilot", PILOT_GRPC_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Client Service: HTTP on ready nodes only.
pub fn client_service(cluster: &ElasticsearchCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: meta(
            cluster,
            names.client_service(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::cluster_selector(&names.cluster)),
            ports: Some(vec![service_port("http", HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// At most one node of the cluster voluntarily down at a time, as for Cassandra: the planner
/// restarts one node at a time and drains cannot race an eviction.
pub fn pod_disruption_budget(cluster: &ElasticsearchCluster) -> PodDisruptionBudget {
    let names = Names::of(cluster);
    PodDisruptionBudget {
        metadata: meta(
            cluster,
            names.pdb(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::cluster_selector(&names.cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("config.elasticsearchYml.{key} is not valid YAML: {source}")]
    Yaml {
        key: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("serializing the pilot configuration: {0}")]
    Json(#[from] serde_json::Error),
}

/// The first node of the first master-eligible pool: a brand-new cluster forms on it alone,
/// because nodes are added one at a time, each verified joined before the next (master-eligible
/// pools first), so no other node runs yet. Elasticsearch grows the voting configuration as the
/// next master-eligible nodes join. The caller decides when a cluster is new.
pub fn initial_master_nodes(cluster: &ElasticsearchCluster) -> Vec<String> {
    let names = Names::of(cluster);
    cluster
        .spec
        .node_pools
        .iter()
        .find(|pool| pool.is_master_eligible() && cluster.spec.pool_replicas(pool) > 0)
        .map(|pool| vec![names.pod(&pool.name, 0)])
        .unwrap_or_default()
}

pub fn pilot_config(
    cluster: &ElasticsearchCluster,
    initial_master_nodes: &[String],
) -> Result<ElasticsearchNodeConfig, RenderError> {
    let config = cluster.spec.config.as_ref();
    let extra = config
        .and_then(|c| c.elasticsearch_yml.clone())
        .unwrap_or_default();
    let mut elasticsearch_yml = BTreeMap::new();
    for (key, text) in extra {
        // The API server already rejects these; skipping them here keeps identity safe even
        // for an object stored before the rule existed.
        if is_reserved_elasticsearch_yml_key(&key) {
            continue;
        }
        let value = serde_yaml::from_str::<serde_json::Value>(&text).map_err(|source| {
            RenderError::Yaml {
                key: key.clone(),
                source,
            }
        })?;
        elasticsearch_yml.insert(key, value);
    }
    Ok(ElasticsearchNodeConfig {
        elasticsearch_yml,
        jvm_options: config
            .and_then(|c| c.jvm_options.clone())
            .unwrap_or_default(),
        initial_master_nodes: initial_master_nodes.to_vec(),
    })
}

pub fn config_map(
    cluster: &ElasticsearchCluster,
    initial_master_nodes: &[String],
) -> Result<ConfigMap, RenderError> {
    let names = Names::of(cluster);
    let rendered = serde_json::to_string_pretty(&pilot_config(cluster, initial_master_nodes)?)?;
    Ok(ConfigMap {
        metadata: meta(
            cluster,
            names.config_map(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        data: Some([(ELASTICSEARCH_CONFIG_FILE.to_string(), rendered)].into()),
        ..ConfigMap::default()
    })
}

/// Hash of what the nodes are started from; a change restarts them. `initialMasterNodes` is
/// left out: it only matters to a node with an empty data volume, and dropping it once the
/// cluster formed must not restart every node.
pub fn config_hash(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config_map.data.iter().flatten() {
        let content = match serde_json::from_str::<ElasticsearchNodeConfig>(v) {
            Ok(mut parsed) if k == ELASTICSEARCH_CONFIG_FILE => {
                parsed.initial_master_nodes.clear();
                serde_json::to_string(&parsed).unwrap_or_else(|_| v.clone())
            }
            _ => v.clone(),
        };
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(content.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// `discovery.seed_hosts`: the headless Service, which resolves to every pod (starting ones
/// too), so no seed list has to follow scaling.
pub fn seed_hosts(cluster: &ElasticsearchCluster) -> String {
    let names = Names::of(cluster);
    format!(
        "{}.{}.svc.cluster.local:{TRANSPORT_PORT}",
        names.nodes_service(),
        names.namespace
    )
}

pub fn elasticsearch_image(cluster: &ElasticsearchCluster, config: &OperatorConfig) -> String {
    cluster.spec.image.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            config.elasticsearch_image_repository, cluster.spec.version
        )
    })
}

pub fn pilot_image(cluster: &ElasticsearchCluster, config: &OperatorConfig) -> String {
    cluster
        .spec
        .pilot_image
        .clone()
        .unwrap_or_else(|| config.pilot_image.clone())
}

/// Resources of the Elasticsearch container when the pool sets none. A memory limit always
/// exists, so the heap (half of it: 1g here) is never derived from the node's whole memory;
/// request = limit so the node is not the first to be reclaimed under memory pressure.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("2Gi".into())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), Quantity("2Gi".into()))].into()),
        ..ResourceRequirements::default()
    }
}

pub fn statefulset(
    cluster: &ElasticsearchCluster,
    pool: &ElasticsearchNodePool,
    replicas: i32,
    config_hash: &str,
    config: &OperatorConfig,
) -> StatefulSet {
    let names = Names::of(cluster);
    let pod_labels = labels::pool(&names.cluster, APP_NAME, &pool.name);
    let pvc_policy = match cluster.spec.pvc_policy_on_cluster_delete() {
        PvcPolicy::Delete => "Delete",
        PvcPolicy::Retain => "Retain",
    };
    StatefulSet {
        metadata: meta(cluster, names.statefulset(&pool.name), pod_labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.nodes_service()),
            selector: LabelSelector {
                match_labels: Some(labels::pool_selector(&names.cluster, &pool.name)),
                ..LabelSelector::default()
            },
            // The planner adds nodes one at a time (a new cluster forms on its first node), so
            // the policy only matters for pods recreated together after an outage: then they
            // start at once, as a cluster whose quorum needs several of them must.
            pod_management_policy: Some("Parallel".into()),
            // The planner owns every restart: a template change rolls nothing by itself.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Scale-down PVCs are removed by the operator itself, only after a verified
            // removal; on cluster deletion the user's policy applies.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(pvc_policy.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    annotations: Some(
                        [(
                            labels::CONFIG_HASH_ANNOTATION.to_string(),
                            config_hash.to_string(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster, pool, config)),
            },
            volume_claim_templates: Some(vec![data_claim(pool, pod_labels)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn data_claim(
    pool: &ElasticsearchNodePool,
    labels: BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: pool.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(
                    [("storage".to_string(), Quantity(pool.storage.size.clone()))].into(),
                ),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        read_only: Some(true),
        ..mount(name, path)
    }
}

fn pilot_get(path: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(PILOT_HTTP_PORT),
        ..HTTPGetAction::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(pilot_get(path)),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn pilot_env(cluster: &ElasticsearchCluster, pool: &ElasticsearchNodePool) -> Vec<EnvVar> {
    let names = Names::of(cluster);
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        // The pilot reports both, so a report is taken only for the pod incarnation it came
        // from, and a restart is verified at the template revision it was meant to reach.
        field_env("POD_UID", "metadata.uid"),
        field_env(
            "STATEWARD_TEMPLATE_REVISION",
            "metadata.labels['controller-revision-hash']",
        ),
        plain_env("STATEWARD_CLUSTER", &names.cluster),
        plain_env("STATEWARD_POOL", &pool.name),
        plain_env("STATEWARD_ROLES", &pool.roles_env()),
        plain_env("STATEWARD_SEED_HOSTS", &seed_hosts(cluster)),
        plain_env(
            "STATEWARD_CONFIG_FILE",
            &format!("{PILOT_CONFIG_DIR}/{ELASTICSEARCH_CONFIG_FILE}"),
        ),
        plain_env("STATEWARD_TLS_DIR", PILOT_TLS_DIR),
        plain_env("STATEWARD_DATA_DIR", DATA_DIR),
        plain_env("ES_PATH_CONF", CONF_DIR),
        EnvVar {
            name: "STATEWARD_MEMORY_LIMIT_BYTES".into(),
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some(ELASTICSEARCH_CONTAINER.into()),
                    resource: "limits.memory".into(),
                    ..ResourceFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(heap) = &pool.heap_size {
        env.push(plain_env("STATEWARD_HEAP_SIZE", heap));
    }
    env
}

fn pilot_container(
    cluster: &ElasticsearchCluster,
    pool: &ElasticsearchNodePool,
    config: &OperatorConfig,
) -> Container {
    Container {
        name: PILOT_CONTAINER.into(),
        image: Some(pilot_image(cluster, config)),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["elasticsearch".into()]),
        // Native sidecar: starts before Elasticsearch, stops after it.
        restart_policy: Some("Always".into()),
        env: Some(pilot_env(cluster, pool)),
        ports: Some(vec![
            container_port("pilot-grpc", PILOT_GRPC_PORT),
            container_port("pilot-http", PILOT_HTTP_PORT),
        ]),
        // Elasticsearch starts only once this succeeds: the configuration is rendered.
        startup_probe: Some(probe("/healthz/startup", 1, 120)),
        resources: Some(config.pilot_resources()),
        volume_mounts: Some(vec![
            mount("config", CONF_DIR),
            mount("data", DATA_DIR),
            read_only_mount("pilot-config", PILOT_CONFIG_DIR),
            read_only_mount("pilot-tls", PILOT_TLS_DIR),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

fn elasticsearch_container(
    cluster: &ElasticsearchCluster,
    pool: &ElasticsearchNodePool,
    config: &OperatorConfig,
) -> Container {
    Container {
        name: ELASTICSEARCH_CONTAINER.into(),
        image: Some(elasticsearch_image(cluster, config)),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        // The launcher itself, not the official image's entrypoint (which would turn
        // environment variables into settings over what the pilot rendered).
        command: Some(vec![format!("{HOME}/bin/elasticsearch")]),
        env: Some(vec![
            plain_env("ES_PATH_CONF", CONF_DIR),
            plain_env("ES_TMPDIR", TMP_DIR),
        ]),
        ports: Some(vec![
            container_port("http", HTTP_PORT),
            container_port("transport", TRANSPORT_PORT),
        ]),
        // Startup: the JVM and Elasticsearch answer at all (generous: recovering local shards
        // can take long).
        startup_probe: Some(probe("/healthz/live", 5, 120)),
        // Liveness is "the process answers", never "the cluster is green": a node recovering
        // shards, or cut off from the master, must not be killed as dead.
        liveness_probe: Some(probe("/healthz/live", 10, 6)),
        // Readiness is the pilot's verified view: joined the cluster and serving HTTP.
        readiness_probe: Some(probe("/healthz/ready", 5, 1)),
        lifecycle: Some(Lifecycle {
            // The pilot prepares the node (flush) before the JVM stops.
            pre_stop: Some(LifecycleHandler {
                http_get: Some(pilot_get("/lifecycle/pre-stop")),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(pool.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(vec![
            mount("config", CONF_DIR),
            mount("data", DATA_DIR),
            mount("tmp", TMP_DIR),
            mount("logs", LOGS_DIR),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

fn volumes(names: &Names) -> Vec<Volume> {
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    vec![
        // Rendered by the pilot at every start; never state worth keeping.
        empty_dir("config"),
        empty_dir("tmp"),
        // Logs go to the console; the JVM may still write GC or crash files here.
        empty_dir("logs"),
        Volume {
            name: "pilot-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "pilot-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.pilot_tls_secret()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

fn pod_spec(
    cluster: &ElasticsearchCluster,
    pool: &ElasticsearchNodePool,
    config: &OperatorConfig,
) -> PodSpec {
    let names = Names::of(cluster);
    let selector = labels::cluster_selector(&names.cluster);
    PodSpec {
        init_containers: Some(vec![pilot_container(cluster, pool, config)]),
        containers: vec![elasticsearch_container(cluster, pool, config)],
        // Neither container needs the Kubernetes API.
        automount_service_account_token: Some(false),
        // No Service environment variables: nothing in the pod reads them.
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(ELASTICSEARCH_UID),
            run_as_group: Some(ELASTICSEARCH_GID),
            fs_group: Some(ELASTICSEARCH_UID),
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        }),
        node_selector: pool.node_selector.clone(),
        tolerations: pool.tolerations.clone(),
        affinity: Some(affinity(pool, &selector)),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        volumes: Some(volumes(&names)),
        ..PodSpec::default()
    }
}

fn affinity(pool: &ElasticsearchNodePool, selector: &BTreeMap<String, String>) -> Affinity {
    // Preferred, not required: two nodes on one host lose redundancy but still work, and
    // single-node development clusters must be able to run several.
    let anti = PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                topology_key: "kubernetes.io/hostname".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                }),
                ..PodAffinityTerm::default()
            },
        }]),
        ..PodAntiAffinity::default()
    };
    let node_affinity = pool.zone.as_ref().map(|zone| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "topology.kubernetes.io/zone".into(),
                    operator: "In".into(),
                    values: Some(vec![zone.clone()]),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    });
    Affinity {
        pod_anti_affinity: Some(anti),
        node_affinity,
        ..Affinity::default()
    }
}

fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::elasticsearch::{
        ElasticsearchClusterSpec, ElasticsearchConfig, ElasticsearchStorage, NodeRole,
    };

    fn pool(name: &str, roles: Option<Vec<NodeRole>>, replicas: i32) -> ElasticsearchNodePool {
        ElasticsearchNodePool {
            name: name.into(),
            roles,
            replicas,
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

    pub(crate) fn sample() -> ElasticsearchCluster {
        let mut c = ElasticsearchCluster::new(
            "logs",
            ElasticsearchClusterSpec {
                version: "9.5.3".into(),
                image: None,
                pilot_image: None,
                paused: None,
                replicas: Some(3),
                node_pools: vec![ElasticsearchNodePool {
                    zone: Some("z1".into()),
                    heap_size: Some("512m".into()),
                    ..pool("main", None, 1)
                }],
                config: None,
                storage_policy: None,
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn env_value(container: &Container, name: &str) -> Option<String> {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    fn mounts(container: &Container) -> Vec<(String, String)> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone()))
            .collect()
    }

    #[test]
    fn statefulset_shape() {
        let c = sample();
        let config = OperatorConfig::default();
        let sts = statefulset(&c, &c.spec.node_pools[0], 2, "abc", &config);
        assert_eq!(sts.metadata.name.as_deref(), Some("logs-main"));
        let owner = sts.metadata.owner_references.clone().expect("owner");
        assert_eq!(owner[0].kind, "ElasticsearchCluster");
        assert_eq!(owner[0].controller, Some(true));
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some("logs-nodes"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let strategy = spec.update_strategy.and_then(|u| u.type_);
        assert_eq!(
            strategy.as_deref(),
            Some("OnDelete"),
            "the planner owns restarts"
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("policy");
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let claims = spec.volume_claim_templates.expect("claims");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let annotations = spec.template.metadata.and_then(|m| m.annotations);
        assert_eq!(
            annotations.and_then(|a| a.get(labels::CONFIG_HASH_ANNOTATION).cloned()),
            Some("abc".into())
        );

        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(180));
        let security = pod.security_context.clone().expect("security");
        assert_eq!(
            (
                security.run_as_user,
                security.run_as_group,
                security.fs_group
            ),
            (Some(1000), Some(0), Some(1000))
        );
        assert!(pod.affinity.clone().and_then(|a| a.node_affinity).is_some());
    }

    fn sample_pod() -> PodSpec {
        let c = sample();
        let sts = statefulset(
            &c,
            &c.spec.node_pools[0],
            2,
            "abc",
            &OperatorConfig::default(),
        );
        sts.spec.and_then(|s| s.template.spec).expect("pod spec")
    }

    #[test]
    fn pilot_is_a_native_sidecar_told_everything_it_renders_from() {
        let pod = sample_pod();
        let pilot = &pod.init_containers.clone().expect("init")[0];
        assert_eq!(pilot.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pilot.args, Some(vec!["elasticsearch".to_string()]));
        assert!(pilot.startup_probe.is_some());
        assert_eq!(
            env_value(pilot, "STATEWARD_SEED_HOSTS").as_deref(),
            Some("logs-nodes.ns.svc.cluster.local:9300")
        );
        assert_eq!(
            env_value(pilot, "STATEWARD_ROLES").as_deref(),
            Some("master,data,ingest")
        );
        assert_eq!(env_value(pilot, "STATEWARD_POOL").as_deref(), Some("main"));
        assert_eq!(
            env_value(pilot, "STATEWARD_CLUSTER").as_deref(),
            Some("logs")
        );
        assert_eq!(
            env_value(pilot, "STATEWARD_HEAP_SIZE").as_deref(),
            Some("512m")
        );
        assert_eq!(
            env_value(pilot, "STATEWARD_CONFIG_FILE").as_deref(),
            Some("/etc/stateward/config/elasticsearch.json")
        );
        assert!(mounts(pilot).contains(&("config".into(), CONF_DIR.into())));
    }

    #[test]
    fn elasticsearch_container_shape() {
        let pod = sample_pod();
        let es = &pod.containers[0];
        assert_eq!(es.name, "elasticsearch");
        assert_eq!(
            es.image.as_deref(),
            Some("docker.elastic.co/elasticsearch/elasticsearch:9.5.3")
        );
        assert_eq!(
            es.command,
            Some(vec![
                "/usr/share/elasticsearch/bin/elasticsearch".to_string()
            ])
        );
        assert_eq!(env_value(es, "ES_PATH_CONF").as_deref(), Some(CONF_DIR));
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&es.readiness_probe).as_deref(), Some("/healthz/ready"));
        assert_eq!(path(&es.liveness_probe).as_deref(), Some("/healthz/live"));
        let es_mounts = mounts(es);
        for dir in [CONF_DIR, DATA_DIR, TMP_DIR, LOGS_DIR] {
            assert!(es_mounts.iter().any(|(_, p)| p == dir), "{dir}");
        }
        // No resources given: a memory limit still exists, so the heap is bounded.
        let limits = es.resources.clone().and_then(|r| r.limits).expect("limits");
        assert_eq!(limits.get("memory"), Some(&Quantity("2Gi".into())));
    }

    #[test]
    fn coordinating_only_pool_passes_empty_roles() {
        let mut c = sample();
        c.spec.replicas = None;
        c.spec.node_pools.push(pool("coord", Some(vec![]), 2));
        let sts = statefulset(
            &c,
            &c.spec.node_pools[1],
            2,
            "h",
            &OperatorConfig::default(),
        );
        let pod = sts.spec.and_then(|s| s.template.spec).expect("pod");
        let pilot = &pod.init_containers.expect("init")[0];
        assert_eq!(env_value(pilot, "STATEWARD_ROLES").as_deref(), Some(""));
        assert_eq!(env_value(pilot, "STATEWARD_HEAP_SIZE"), None);
    }

    #[test]
    fn a_new_cluster_forms_on_the_first_master_eligible_node() {
        let mut c = sample();
        c.spec.replicas = None;
        c.spec.node_pools = vec![
            pool("masters", Some(vec![NodeRole::Master]), 3),
            pool("hot", Some(vec![NodeRole::DataHot]), 4),
            pool("mixed", None, 1),
        ];
        assert_eq!(initial_master_nodes(&c), ["logs-masters-0"]);
        c.spec.node_pools[0].replicas = 0;
        assert_eq!(initial_master_nodes(&c), ["logs-mixed-0"]);
        assert_eq!(initial_master_nodes(&sample()), ["logs-main-0"]);
    }

    #[test]
    fn reserved_keys_never_reach_the_pilot() {
        let mut c = sample();
        c.spec.config = Some(ElasticsearchConfig {
            elasticsearch_yml: Some(
                [
                    ("cluster.name", "evil"),
                    ("discovery", "{seed_hosts: [elsewhere]}"),
                    ("path.data.extra", "/tmp"),
                    ("indices.memory.index_buffer_size", "20%"),
                    ("cluster.max_shards_per_node", "2000"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ),
            jvm_options: Some(vec!["-XX:+AlwaysPreTouch".into()]),
        });
        let cfg = pilot_config(&c, &[]).expect("render");
        let keys: Vec<&str> = cfg.elasticsearch_yml.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cluster.max_shards_per_node",
                "indices.memory.index_buffer_size"
            ]
        );
        assert_eq!(
            cfg.elasticsearch_yml.get("cluster.max_shards_per_node"),
            Some(&serde_json::json!(2000))
        );
        assert_eq!(cfg.jvm_options, ["-XX:+AlwaysPreTouch"]);
    }

    #[test]
    fn config_hash_ignores_initial_master_nodes() {
        let c = sample();
        let forming = config_map(&c, &initial_master_nodes(&c)).expect("cm");
        let formed = config_map(&c, &[]).expect("cm");
        assert_ne!(forming.data, formed.data, "the pilot still gets the list");
        assert_eq!(config_hash(&forming), config_hash(&formed));

        let mut changed = sample();
        changed.spec.config = Some(ElasticsearchConfig {
            elasticsearch_yml: Some(
                [("indices.memory.index_buffer_size".into(), "20%".into())].into(),
            ),
            jvm_options: None,
        });
        assert_ne!(
            config_hash(&formed),
            config_hash(&config_map(&changed, &[]).expect("cm"))
        );
    }

    #[test]
    fn invalid_yaml_is_an_error_naming_the_key() {
        let mut c = sample();
        c.spec.config = Some(ElasticsearchConfig {
            elasticsearch_yml: Some([("indices.x".into(), "[unclosed".into())].into()),
            jvm_options: None,
        });
        let err = config_map(&c, &[]).expect_err("invalid YAML");
        assert!(err.to_string().contains("indices.x"), "{err}");
    }

    #[test]
    fn services_and_budget() {
        let c = sample();
        let headless = nodes_service(&c).spec.expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = headless.ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [9200, 9300, 7443]);
        let client = client_service(&c);
        assert_eq!(client.metadata.name.as_deref(), Some("logs"));
        let ports: Vec<i32> = client
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [9200]);
        let pdb = pod_disruption_budget(&c).spec.expect("spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    }
}
