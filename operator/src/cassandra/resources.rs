//! Pure builders: a `CassandraCluster` (plus the planner's StatefulSet sizes) → the Kubernetes
//! objects that realise it. No I/O here, so the shape of every object is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceFieldSelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use stateward_core::node_config::{
    CASSANDRA_CONFIG_FILE, CassandraNodeConfig, is_reserved_cassandra_yaml_key,
};

use crate::api::cassandra::{CassandraCluster, CassandraNodePool, PvcPolicy};
use crate::config::OperatorConfig;
use crate::labels;
pub use crate::platform::names::Names;

/// The value of `app.kubernetes.io/name` on everything a CassandraCluster owns.
pub const APP_NAME: &str = "cassandra";

pub const CASSANDRA_CONTAINER: &str = "cassandra";
pub const PILOT_CONTAINER: &str = "pilot";
pub const CQL_PORT: i32 = 9042;
pub const STORAGE_PORT: i32 = 7000;
pub const PILOT_GRPC_PORT: i32 = 7443;
pub const PILOT_HTTP_PORT: i32 = 7080;
/// The official image runs Cassandra as uid/gid 999; the pilot shares its volumes.
const CASSANDRA_UID: i64 = 999;
/// Draining flushes memtables and stops gossip; generous so a slow disk never cuts it short.
const TERMINATION_GRACE_SECONDS: i64 = 180;

pub fn owner_reference(cluster: &CassandraCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

fn meta(cluster: &CassandraCluster, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

pub fn nodes_service(cluster: &CassandraCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: meta(
            cluster,
            names.nodes_service(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers and seeds must resolve before a node is ready: a joining node is not ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::cluster_selector(&names.cluster)),
            ports: Some(vec![
                service_port("intra-node", STORAGE_PORT),
                service_port("cql", CQL_PORT),
                service_port("pilot", PILOT_GRPC_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn client_service(cluster: &CassandraCluster) -> Service {
    let names = Names::of(cluster);
    Service {
        metadata: meta(
            cluster,
            names.client_service(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::cluster_selector(&names.cluster)),
            ports: Some(vec![service_port("cql", CQL_PORT)]),
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

pub fn pod_disruption_budget(cluster: &CassandraCluster) -> PodDisruptionBudget {
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
    #[error("config.cassandraYaml.{key} is not valid YAML: {source}")]
    Yaml {
        key: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("serializing the pilot configuration: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn pilot_config(cluster: &CassandraCluster) -> Result<CassandraNodeConfig, RenderError> {
    let extra = cluster
        .spec
        .config
        .as_ref()
        .and_then(|c| c.cassandra_yaml.clone())
        .unwrap_or_default();
    let mut cassandra_yaml = BTreeMap::new();
    for (key, text) in extra {
        // The API server already rejects these; skipping them here keeps identity safe even
        // for an object stored before the rule existed.
        if is_reserved_cassandra_yaml_key(&key) {
            continue;
        }
        let value = serde_yaml::from_str::<serde_json::Value>(&text).map_err(|source| {
            RenderError::Yaml {
                key: key.clone(),
                source,
            }
        })?;
        cassandra_yaml.insert(key, value);
    }
    Ok(CassandraNodeConfig {
        num_tokens: u32::try_from(cluster.spec.num_tokens()).ok(),
        cassandra_yaml,
        jvm_options: Vec::new(),
        authentication: cluster.spec.authentication_enabled(),
    })
}

/// The Secret with the superuser's `username` and `password`: the user's, or the generated one.
pub fn superuser_secret(cluster: &CassandraCluster) -> String {
    cluster
        .spec
        .named_superuser_secret()
        .map(str::to_string)
        .unwrap_or_else(|| Names::of(cluster).generated_superuser_secret())
}

pub fn config_map(cluster: &CassandraCluster) -> Result<ConfigMap, RenderError> {
    let names = Names::of(cluster);
    let rendered = serde_json::to_string_pretty(&pilot_config(cluster)?)?;
    Ok(ConfigMap {
        metadata: meta(
            cluster,
            names.config_map(),
            labels::cluster(&names.cluster, APP_NAME),
        ),
        data: Some([(CASSANDRA_CONFIG_FILE.to_string(), rendered)].into()),
        ..ConfigMap::default()
    })
}

/// Hash of everything that should roll the pods when it changes.
pub fn config_hash(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config_map.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Seeds: the first node of the first pool. A seed never bootstraps (streams no data in), so
/// only a node that founded the ring may be one.
pub fn seeds(cluster: &CassandraCluster) -> String {
    let names = Names::of(cluster);
    cluster
        .spec
        .node_pools
        .first()
        .map(|pool| names.pod_dns(&pool.name, 0))
        .unwrap_or_default()
}

pub fn cassandra_image(cluster: &CassandraCluster, config: &OperatorConfig) -> String {
    cluster.spec.image.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            config.cassandra_image_repository, cluster.spec.version
        )
    })
}

pub fn pilot_image(cluster: &CassandraCluster, config: &OperatorConfig) -> String {
    cluster
        .spec
        .pilot_image
        .clone()
        .unwrap_or_else(|| config.pilot_image.clone())
}

pub fn statefulset(
    cluster: &CassandraCluster,
    pool: &CassandraNodePool,
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
            // One node at a time, in ordinal order, each ready before the next.
            pod_management_policy: Some("OrderedReady".into()),
            // The planner owns every restart: a template change rolls nothing by itself; the
            // operator drains and deletes one pod at a time and verifies it came back.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Scale-down PVCs are removed by the operator itself, only after a verified
            // decommission; on cluster deletion the user's policy applies.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(pvc_policy.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
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
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels::pool(&names.cluster, APP_NAME, &pool.name)),
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
            }]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(
    cluster: &CassandraCluster,
    pool: &CassandraNodePool,
    config: &OperatorConfig,
) -> PodSpec {
    let names = Names::of(cluster);
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    };
    let read_only_mount = |name: &str, path: &str| VolumeMount {
        read_only: Some(true),
        ..mount(name, path)
    };
    let pilot_get = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(PILOT_HTTP_PORT),
        ..HTTPGetAction::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(pilot_get(path)),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    };

    let mut pilot_env = vec![
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
        plain_env("STATEWARD_DATACENTER", cluster.spec.datacenter_name()),
        plain_env("STATEWARD_RACK", pool.rack_name()),
        plain_env("STATEWARD_POOL", &pool.name),
        plain_env("STATEWARD_SEEDS", &seeds(cluster)),
        plain_env(
            "STATEWARD_CONFIG_FILE",
            &format!("/etc/stateward/config/{CASSANDRA_CONFIG_FILE}"),
        ),
        plain_env("STATEWARD_TLS_DIR", "/etc/stateward/tls"),
        EnvVar {
            name: "STATEWARD_MEMORY_LIMIT_BYTES".into(),
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some(CASSANDRA_CONTAINER.into()),
                    resource: "limits.memory".into(),
                    ..ResourceFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(heap) = &pool.heap_size {
        pilot_env.push(plain_env("STATEWARD_HEAP_SIZE", heap));
    }

    let pilot = Container {
        name: PILOT_CONTAINER.into(),
        image: Some(pilot_image(cluster, config)),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["cassandra".into()]),
        // Native sidecar: starts before Cassandra, stops after it.
        restart_policy: Some("Always".into()),
        env: Some(pilot_env),
        ports: Some(vec![
            container_port("pilot-grpc", PILOT_GRPC_PORT),
            container_port("pilot-http", PILOT_HTTP_PORT),
        ]),
        // Cassandra starts only once this succeeds: the configuration is rendered.
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(120),
            ..probe("/healthz/startup", 1, 120)
        }),
        resources: Some(config.pilot_resources()),
        volume_mounts: Some(vec![
            mount("config", "/etc/cassandra"),
            mount("data", "/var/lib/cassandra"),
            read_only_mount("pilot-config", "/etc/stateward/config"),
            read_only_mount("pilot-tls", "/etc/stateward/tls"),
            // Mounted whether authentication is on or not, so turning it on changes only the
            // node configuration.
            read_only_mount("superuser", "/etc/stateward/superuser"),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };

    let cassandra = Container {
        name: CASSANDRA_CONTAINER.into(),
        image: Some(cassandra_image(cluster, config)),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        // The official image's launch contract, minus its entrypoint (which would rewrite the
        // configuration the pilot rendered).
        command: Some(vec!["cassandra".into(), "-f".into()]),
        env: Some(vec![plain_env("CASSANDRA_CONF", "/etc/cassandra")]),
        ports: Some(vec![
            container_port("intra-node", STORAGE_PORT),
            container_port("cql", CQL_PORT),
        ]),
        // Startup: the JVM and Cassandra answer at all (joining can take long, so generous).
        startup_probe: Some(probe("/healthz/live", 5, 120)),
        // Liveness is "the process answers", never "Up/Normal": a node streaming data must not
        // be killed as dead.
        liveness_probe: Some(probe("/healthz/live", 10, 6)),
        // Readiness is the pilot's verified view: Up/Normal and serving CQL.
        readiness_probe: Some(probe("/healthz/ready", 5, 1)),
        lifecycle: Some(Lifecycle {
            // The pilot drains Cassandra (flush, stop accepting writes) before the JVM stops.
            pre_stop: Some(LifecycleHandler {
                http_get: Some(pilot_get("/lifecycle/pre-stop")),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: pool.resources.clone(),
        volume_mounts: Some(vec![
            mount("config", "/etc/cassandra"),
            mount("data", "/var/lib/cassandra"),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };

    let selector = labels::cluster_selector(&names.cluster);
    PodSpec {
        init_containers: Some(vec![pilot]),
        containers: vec![cassandra],
        // Neither container needs the Kubernetes API.
        automount_service_account_token: Some(false),
        // Service env vars named CASSANDRA_* would be read by Cassandra's scripts.
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(CASSANDRA_UID),
            run_as_group: Some(CASSANDRA_UID),
            fs_group: Some(CASSANDRA_UID),
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
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                empty_dir: Some(Default::default()),
                ..Volume::default()
            },
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
            // Only the pilot mounts it. Optional: a Secret the user named but has not created
            // yet keeps the node from being set up (the status says why), not from starting.
            Volume {
                name: "superuser".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(superuser_secret(cluster)),
                    default_mode: Some(0o440),
                    optional: Some(true),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

fn affinity(pool: &CassandraNodePool, selector: &BTreeMap<String, String>) -> Affinity {
    // Preferred, not required: two Cassandra nodes on one host lose redundancy but still work,
    // and single-node development clusters must be able to run several.
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
    let node_affinity = pool
        .zone
        .as_ref()
        .map(|zone| k8s_openapi::api::core::v1::NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(
                k8s_openapi::api::core::v1::NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "topology.kubernetes.io/zone".into(),
                            operator: "In".into(),
                            values: Some(vec![zone.clone()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                },
            ),
            ..Default::default()
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
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
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
    use crate::api::cassandra::{CassandraClusterSpec, CassandraStorage};

    pub(crate) fn sample() -> CassandraCluster {
        let mut c = CassandraCluster::new(
            "demo",
            CassandraClusterSpec {
                version: "5.0.9".into(),
                image: None,
                pilot_image: None,
                datacenter: None,
                paused: None,
                replicas: Some(3),
                node_pools: vec![CassandraNodePool {
                    name: "main".into(),
                    replicas: 1,
                    rack: None,
                    zone: Some("z1".into()),
                    node_selector: None,
                    tolerations: None,
                    resources: None,
                    heap_size: None,
                    storage: CassandraStorage {
                        size: "1Gi".into(),
                        storage_class_name: None,
                    },
                }],
                config: None,
                storage_policy: None,
                authentication: None,
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn statefulset_shape() {
        let c = sample();
        let sts = statefulset(
            &c,
            &c.spec.node_pools[0],
            2,
            "abc",
            &OperatorConfig::default(),
        );
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some("demo-nodes"));
        let pod = spec.template.spec.expect("pod spec");
        let pilot = &pod.init_containers.expect("init")[0];
        assert_eq!(pilot.restart_policy.as_deref(), Some("Always"));
        assert!(pilot.startup_probe.is_some());
        let cass = &pod.containers[0];
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(
            path(&cass.readiness_probe).as_deref(),
            Some("/healthz/ready")
        );
        assert_eq!(path(&cass.liveness_probe).as_deref(), Some("/healthz/live"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let owner = sts.metadata.owner_references.expect("owner");
        assert_eq!(owner[0].controller, Some(true));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("policy");
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let strategy = spec.update_strategy.and_then(|u| u.type_);
        assert_eq!(
            strategy.as_deref(),
            Some("OnDelete"),
            "the planner owns restarts"
        );
        assert!(pod.affinity.and_then(|a| a.node_affinity).is_some());
    }

    #[test]
    fn reserved_keys_never_reach_the_pilot() {
        let mut c = sample();
        c.spec.config = Some(crate::api::cassandra::CassandraConfig {
            num_tokens: None,
            cassandra_yaml: Some(
                [
                    ("cluster_name".to_string(), "evil".to_string()),
                    ("concurrent_reads".to_string(), "64".to_string()),
                ]
                .into(),
            ),
        });
        let cfg = pilot_config(&c).expect("render");
        assert_eq!(cfg.num_tokens, Some(16));
        assert!(!cfg.cassandra_yaml.contains_key("cluster_name"));
        assert_eq!(
            cfg.cassandra_yaml.get("concurrent_reads"),
            Some(&serde_json::json!(64))
        );
    }

    #[test]
    fn config_hash_follows_content() {
        let c = sample();
        let a = config_map(&c).expect("cm");
        let mut c2 = sample();
        c2.spec.config = Some(crate::api::cassandra::CassandraConfig {
            num_tokens: Some(8),
            cassandra_yaml: None,
        });
        let b = config_map(&c2).expect("cm");
        assert_ne!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a), config_hash(&config_map(&c).expect("cm")));
    }

    #[test]
    fn authentication_is_on_unless_the_spec_turns_it_off() {
        let mut c = sample();
        assert!(pilot_config(&c).expect("render").authentication);
        assert_eq!(superuser_secret(&c), "demo-superuser");
        let on = config_map(&c).expect("cm");
        c.spec.authentication = Some(crate::api::cassandra::CassandraAuthentication {
            enabled: Some(false),
            superuser_secret_name: Some("app-admin".into()),
        });
        assert!(!pilot_config(&c).expect("render").authentication);
        assert_eq!(superuser_secret(&c), "app-admin");
        // Turning it on or off restarts the nodes (the node configuration changed).
        assert_ne!(config_hash(&on), config_hash(&config_map(&c).expect("cm")));
    }
}
