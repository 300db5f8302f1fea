//! The Cassandra reconcile: observe → plan (pure) → act → record status and Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::resources::{self, Names};
use super::status::{self, StatusInputs, state_word};
use crate::api::cassandra::{
    CassandraCluster, CassandraClusterStatus, CassandraNodePool, PvcPolicy,
};
use crate::api::common::{CurrentOperation, NodeStatus, PoolStatus};
use crate::apply::{self, Outcome};
use crate::context::{Context, PilotAddress};
use crate::labels;
use crate::pilot_client::ClientTls;
use crate::pilots::PodAddress;
use crate::planner::{
    self, ActionProgress, CleanupPhase, DecommissionPhase, DesiredPool, InFlight, Observed,
    ObservedNode, ObservedPool, OperationKind, Step, VolumePolicy, VolumeState, WaitCause,
};
use crate::tls;
use stateward_proto::v1::{ActionSpec, CleanupAction, DecommissionAction, action_spec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("rendering the pilot configuration: {0}")]
    Render(#[from] resources::RenderError),
    #[error("creating certificates: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("the object has no namespace")]
    NoNamespace,
}

trait KubeContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            what: what(),
            source,
        })
    }
}

/// What the observe phase saw, kept for the status.
struct Observation {
    planner: Observed,
    /// The cluster's StatefulSets as listed (act keeps their immutable claim templates).
    statefulsets: Vec<StatefulSet>,
    nodes: Vec<NodeStatus>,
    pools: Vec<PoolStatus>,
}

/// The operation recorded in the status, if it is one the planner carries to its end; its
/// `action` is filled in from the pilot afterwards.
fn recorded_operation(cluster: &CassandraCluster, names: &Names) -> Option<InFlight> {
    let op = cluster.status.as_ref()?.current_operation.as_ref()?;
    let kind = OperationKind::parse(&op.kind)?;
    let node = op.node.clone()?;
    let action_id = op.action_id.clone()?;
    // The pool is the one whose StatefulSet name prefixes the pod's; unknown stays unknown
    // (the planner then waits) rather than the operation being forgotten.
    let (pool, ordinal) = cluster
        .spec
        .node_pools
        .iter()
        .find_map(|p| {
            let ordinal = node
                .strip_prefix(&format!("{}-", names.statefulset(&p.name)))?
                .parse()
                .ok()?;
            Some((p.name.clone(), ordinal))
        })
        .unwrap_or_default();
    Some(InFlight {
        removal_verified: status::records_verified_removal(&op.phase),
        kind,
        pool,
        ordinal,
        node,
        action_id,
        action: ActionProgress::NotStarted,
    })
}

pub async fn reconcile(cluster: Arc<CassandraCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = cluster.namespace().ok_or(Error::NoNamespace)?;
    let names = Names::of(&cluster);
    if cluster.meta().deletion_timestamp.is_some() {
        // Children go with the owner references; PVCs follow the StatefulSets' retention policy.
        return Ok(Action::await_change());
    }

    let observation = observe(&cluster, &ctx, &ns, &names).await?;
    let desired_pools: Vec<DesiredPool> = cluster
        .spec
        .node_pools
        .iter()
        .map(|p| DesiredPool {
            name: p.name.clone(),
            replicas: cluster.spec.pool_replicas(p),
        })
        .collect();
    let step = planner::plan(
        &desired_pools,
        cluster.spec.is_paused(),
        &observation.planner,
    );

    let step_node = match &step {
        Step::AddNode { pool, ordinal } => Some(names.pod(pool, *ordinal)),
        _ => None,
    };
    let volume_note = match &step {
        Step::Decommission {
            pool,
            ordinal,
            phase: DecommissionPhase::Done,
            ..
        } => Some(match cluster.spec.pvc_policy_on_scale_down() {
            PvcPolicy::Delete => format!("PVC {} deleted", names.data_volume(pool, *ordinal)),
            PvcPolicy::Retain => format!(
                "PVC {} retained, marked {}",
                names.data_volume(pool, *ordinal),
                labels::DECOMMISSIONED_ANNOTATION
            ),
        }),
        _ => None,
    };
    let new_status = status::build(StatusInputs {
        generation: cluster.metadata.generation,
        previous: cluster.status.as_ref(),
        step: &step,
        nodes: observation.nodes.clone(),
        pools: observation.pools.clone(),
        selector: labels::to_selector_string(&labels::cluster_selector(&names.cluster)),
        step_node,
        now: status::now_seconds(),
        volume_note,
    });
    // The intent (operation, action ID, phase) is recorded before anything is done, so that a
    // restarted operator resumes the same operation instead of starting another.
    if !record(&cluster, &ctx, &ns, &step, new_status).await? {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    match &step {
        Step::Paused | Step::Blocked { .. } => {}
        _ => act(&cluster, &ctx, &ns, &names, &observation, &step).await?,
    }

    Ok(match step {
        Step::Steady | Step::Paused => Action::requeue(ctx.resync),
        Step::Blocked { .. } => Action::requeue(ctx.resync.min(Duration::from_secs(60))),
        // An operation's next phase often shows only in the pilot's action state.
        Step::Decommission { .. } | Step::Cleanup { .. } => Action::requeue(Duration::from_secs(3)),
        // Pod and StatefulSet changes wake us up; the timer is a safety net.
        _ => Action::requeue(Duration::from_secs(10)),
    })
}

async fn observe(
    cluster: &CassandraCluster,
    ctx: &Context,
    ns: &str,
    names: &Names,
) -> Result<Observation, Error> {
    let selector = labels::to_selector_string(&labels::cluster_selector(&names.cluster));
    let lp = ListParams::default().labels(&selector);
    let statefulsets = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .context(|| format!("listing StatefulSets of {}/{}", ns, names.cluster))?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .context(|| format!("listing pods of {}/{}", ns, names.cluster))?;

    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .context(|| format!("listing PVCs of {}/{}", ns, names.cluster))?;

    track_pilots(ctx, ns, names, &pods.items).await?;

    let previous_nodes = cluster
        .status
        .as_ref()
        .map(|s| s.nodes.as_slice())
        .unwrap_or_default();
    let mut planner_view = Observed {
        generation: cluster.metadata.generation.unwrap_or(0),
        pending_cleanup: cluster
            .status
            .as_ref()
            .map(|s| s.pending_cleanup.clone())
            .unwrap_or_default(),
        volume_policy: match cluster.spec.pvc_policy_on_scale_down() {
            PvcPolicy::Delete => VolumePolicy::Delete,
            PvcPolicy::Retain => VolumePolicy::Retain,
        },
        ..Observed::default()
    };
    if let Some(mut op) = recorded_operation(cluster, names) {
        op.action = ctx
            .pilots
            .action(
                PilotAddress {
                    namespace: ns,
                    cluster: &names.cluster,
                    pod: &op.node,
                },
                &op.action_id,
            )
            .await;
        planner_view.in_flight = Some(op);
    }
    let mut nodes = Vec::new();
    let mut pools = Vec::new();
    for pool in &cluster.spec.node_pools {
        let sts_name = names.statefulset(&pool.name);
        let sts = statefulsets.items.iter().find(|s| s.name_any() == sts_name);
        let volume_prefix = format!("data-{sts_name}-");
        let volumes = claims
            .items
            .iter()
            .filter_map(|pvc| {
                let ordinal = pvc
                    .name_any()
                    .strip_prefix(&volume_prefix)?
                    .parse::<i32>()
                    .ok()?;
                let decommissioned = pvc
                    .annotations()
                    .contains_key(labels::DECOMMISSIONED_ANNOTATION);
                Some((ordinal, VolumeState { decommissioned }))
            })
            .collect();
        let mut observed_pool = ObservedPool {
            statefulset_replicas: sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas),
            statefulset_current: sts.is_none_or(|s| {
                s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
            }),
            nodes: Vec::new(),
            volumes,
        };
        let mut pool_pods: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.labels().get(labels::POOL) == Some(&pool.name))
            .collect();
        pool_pods.sort_by_key(|p| ordinal_of(p, &sts_name));
        for pod in pool_pods {
            let Some(ordinal) = ordinal_of(pod, &sts_name) else {
                continue;
            };
            let pod_name = pod.name_any();
            let pod_ready = is_pod_ready(pod);
            let report = ctx.pilots.report(ns, &pod_name);
            // The host ID outlives a report: a decommissioned node is still identified by the
            // one its pilot reported while it was a member.
            let host_id = report.as_ref().and_then(|r| r.host_id.clone()).or_else(|| {
                previous_nodes
                    .iter()
                    .find(|n| n.name == pod_name)
                    .and_then(|n| n.host_id.clone())
            });
            let node = ObservedNode {
                name: pod_name.clone(),
                ordinal,
                pod_ready,
                verified: report.as_ref().map(|r| r.state),
                host_id: host_id.clone(),
                ring: report.as_ref().and_then(|r| r.ring.clone()),
                data_bytes: report.as_ref().and_then(|r| r.data_bytes),
                free_disk_bytes: report.as_ref().and_then(|r| r.free_disk_bytes),
                keyspaces: report.as_ref().and_then(|r| r.keyspaces.clone()),
            };
            nodes.push(NodeStatus {
                name: pod_name,
                pool: pool.name.clone(),
                state: state_word(node.verified, pod_ready).to_string(),
                ready: node.is_ready(),
                version: report.as_ref().and_then(|r| r.version.clone()),
                host_id,
                address: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
                message: (!node.is_ready()).then(|| pod_problem(pod)).flatten(),
            });
            observed_pool.nodes.push(node);
        }
        pools.push(PoolStatus {
            name: pool.name.clone(),
            desired: cluster.spec.pool_replicas(pool),
            replicas: observed_pool.nodes.len() as i32,
            ready_replicas: observed_pool.nodes.iter().filter(|n| n.is_ready()).count() as i32,
        });
        planner_view.pools.insert(pool.name.clone(), observed_pool);
    }
    Ok(Observation {
        planner: planner_view,
        statefulsets: statefulsets.items,
        nodes,
        pools,
    })
}

/// Point the pilot watches at the cluster's current pods. Without the operator's client
/// certificate (not created yet) nothing is watched and every node stays unknown.
async fn track_pilots(ctx: &Context, ns: &str, names: &Names, pods: &[Pod]) -> Result<(), Error> {
    let secret_name = names.operator_client_secret();
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&secret_name)
        .await
        .context(|| format!("reading Secret {secret_name}"))?
    else {
        return Ok(());
    };
    let text = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
        (text("ca.crt"), text("tls.crt"), text("tls.key"))
    else {
        return Ok(());
    };
    let addresses: Vec<PodAddress> = pods
        .iter()
        .filter_map(|p| {
            Some(PodAddress {
                name: p.name_any(),
                ip: p.status.as_ref()?.pod_ip.clone()?,
            })
        })
        .collect();
    ctx.pilots.track(
        ns,
        &names.cluster,
        ClientTls {
            ca_pem,
            cert_pem,
            key_pem,
        },
        &addresses,
    );
    Ok(())
}

fn ordinal_of(pod: &Pod, statefulset: &str) -> Option<i32> {
    pod.labels()
        .get(labels::POD_INDEX)
        .and_then(|i| i.parse().ok())
        .or_else(|| {
            pod.name_any()
                .strip_prefix(&format!("{statefulset}-"))
                .and_then(|i| i.parse().ok())
        })
}

fn is_pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not ready, in the words Kubernetes uses (for `kubectl describe`).
fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let waiting = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "container {} waiting: {}",
                c.name,
                waiting.reason.as_deref().unwrap_or("unknown reason")
            ))
        });
    let unscheduled = status.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "PodScheduled" && c.status == "False")
            .then(|| format!("unschedulable: {}", c.message.as_deref().unwrap_or("")))
    });
    waiting
        .or(unscheduled)
        .or_else(|| status.phase.as_ref().map(|p| format!("pod {p}, not ready")))
}

async fn act(
    cluster: &CassandraCluster,
    ctx: &Context,
    ns: &str,
    names: &Names,
    observation: &Observation,
    step: &Step,
) -> Result<(), Error> {
    let observed = &observation.planner;
    ensure_pki(cluster, ctx, ns, names).await?;
    act_on_operation(ctx, ns, names, step).await?;
    let fm = &ctx.config.field_manager;
    let client = &ctx.client;

    let (config_map, _) = apply::apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        resources::config_map(cluster)?,
        fm,
        &ctx.writes,
    )
    .await
    .context(|| format!("applying ConfigMap {}", names.config_map()))?;
    let config_hash = resources::config_hash(&config_map);

    let services = Api::<Service>::namespaced(client.clone(), ns);
    for service in [
        resources::nodes_service(cluster),
        resources::client_service(cluster),
    ] {
        let name = service.name_any();
        apply::apply(&services, service, fm, &ctx.writes)
            .await
            .context(|| format!("applying Service {name}"))?;
    }
    apply::apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        resources::pod_disruption_budget(cluster),
        fm,
        &ctx.writes,
    )
    .await
    .context(|| format!("applying PodDisruptionBudget {}", names.pdb()))?;

    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), ns);
    for pool in &cluster.spec.node_pools {
        let exists = observed
            .pools
            .get(&pool.name)
            .is_some_and(|p| p.statefulset_replicas.is_some());
        let creating = matches!(step, Step::CreatePool { pool: p } if p == &pool.name);
        if !exists && !creating {
            continue;
        }
        let replicas = planner::statefulset_replicas(observed, step, &pool.name);
        let mut sts = resources::statefulset(cluster, pool, replicas, &config_hash, &ctx.config);
        let name = sts.name_any();
        // volumeClaimTemplates are immutable: keep the live ones and grow the PVCs directly.
        if let Some(live) = observation
            .statefulsets
            .iter()
            .find(|s| s.name_any() == name)
            && let (Some(spec), Some(live_spec)) = (sts.spec.as_mut(), live.spec.as_ref())
        {
            spec.volume_claim_templates = live_spec.volume_claim_templates.clone();
        }
        grow_volumes(ctx, ns, &names.cluster, pool).await;
        let (_, outcome) = apply::apply(&statefulsets, sts, fm, &ctx.writes)
            .await
            .context(|| format!("applying StatefulSet {name}"))?;
        if outcome != Outcome::Unchanged {
            info!(statefulset = %name, replicas, ?outcome, "applied StatefulSet");
        }
    }
    Ok(())
}

/// The parts of a decommission or cleanup that are not StatefulSet replicas: asking the pilot
/// to start the action, releasing the removed node's volume.
async fn act_on_operation(
    ctx: &Context,
    ns: &str,
    names: &Names,
    step: &Step,
) -> Result<(), Error> {
    let (node, action_id, spec) = match step {
        Step::Decommission {
            node,
            action_id,
            phase: DecommissionPhase::Start { force },
            ..
        } => (
            node,
            action_id,
            action_spec::Action::Decommission(DecommissionAction { force: *force }),
        ),
        Step::Cleanup {
            node,
            action_id,
            phase: CleanupPhase::Start,
        } => (
            node,
            action_id,
            action_spec::Action::Cleanup(CleanupAction::default()),
        ),
        Step::Decommission {
            pool,
            ordinal,
            phase: DecommissionPhase::ReleaseVolume { delete },
            ..
        } => {
            return release_volume(ctx, ns, &names.data_volume(pool, *ordinal), *delete).await;
        }
        _ => return Ok(()),
    };
    let started = ctx
        .pilots
        .start_action(
            PilotAddress {
                namespace: ns,
                cluster: &names.cluster,
                pod: node,
            },
            action_id,
            ActionSpec { action: Some(spec) },
        )
        .await;
    match started {
        Ok(progress) => info!(action = %action_id, ?progress, "asked the pilot to run the action"),
        // The next reconcile asks again with the same ID (the pilot's StartAction is idempotent).
        Err(e) => warn!(action = %action_id, error = %e, "the pilot did not take the action"),
    }
    Ok(())
}

/// Deletes the removed node's PVC, or keeps it marked as a decommissioned node's data.
async fn release_volume(ctx: &Context, ns: &str, name: &str, delete: bool) -> Result<(), Error> {
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    ctx.writes.record("PersistentVolumeClaim");
    if delete {
        match pvcs.delete(name, &Default::default()).await {
            Ok(_) => info!(pvc = %name, "deleted the decommissioned node's volume"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting PVC {name}"),
                    source,
                });
            }
        }
    } else {
        let patch = json!({"metadata": {"annotations": {
            labels::DECOMMISSIONED_ANNOTATION: status::now_seconds().to_string()
        }}});
        pvcs.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .context(|| format!("marking PVC {name} as decommissioned"))?;
    }
    Ok(())
}

/// Ask for a larger volume on every PVC of the pool smaller than the spec. Growth needs a
/// StorageClass that allows expansion; a refusal is reported and never stops the reconcile.
async fn grow_volumes(ctx: &Context, ns: &str, cluster: &str, pool: &CassandraNodePool) {
    let Ok(wanted) = parse_quantity(&pool.storage.size) else {
        return;
    };
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&labels::to_selector_string(&labels::pool_selector(
        cluster, &pool.name,
    )));
    let Ok(list) = pvcs.list(&lp).await else {
        return;
    };
    for pvc in list {
        let current = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| parse_quantity(&q.0).ok());
        if current.is_some_and(|c| c >= wanted) {
            continue;
        }
        let name = pvc.name_any();
        ctx.writes.record("PersistentVolumeClaim");
        let patch = json!({"spec": {"resources": {"requests": {"storage": pool.storage.size}}}});
        if let Err(e) = pvcs
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            warn!(pvc = %name, error = %e, "volume expansion refused");
        }
    }
}

/// Bytes of a Kubernetes quantity with a binary or decimal suffix (enough for volume sizes).
fn parse_quantity(q: &str) -> Result<u128, ()> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: u128 = number.parse().map_err(|_| ())?;
    let factor: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(()),
    };
    Ok(number * factor)
}

/// Create the cluster's CA and certificates once; they are never rewritten by a resync.
async fn ensure_pki(
    cluster: &CassandraCluster,
    ctx: &Context,
    ns: &str,
    names: &Names,
) -> Result<(), Error> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let ca_name = names.ca_secret();
    let ca = match secrets
        .get_opt(&ca_name)
        .await
        .context(|| format!("reading Secret {ca_name}"))?
    {
        Some(secret) => ca_from_secret(&secret, &names.cluster),
        None => None,
    };
    let ca = match ca {
        Some(ca) => ca,
        None => {
            let ca = tls::new_ca(&names.cluster)?;
            let data = [
                ("ca.crt", ca.cert_pem.clone()),
                ("ca.key", ca.key_pem.clone()),
            ];
            create_secret(cluster, ctx, &secrets, &ca_name, &data).await?;
            // Another writer may have won the race: always continue with what is stored.
            let stored = secrets
                .get(&ca_name)
                .await
                .context(|| format!("reading Secret {ca_name}"))?;
            ca_from_secret(&stored, &names.cluster).unwrap_or(ca)
        }
    };

    let server_names = vec![
        names.pilot_tls_name(),
        format!(
            "*.{}.{}.svc.cluster.local",
            names.nodes_service(),
            names.namespace
        ),
    ];
    let client_names = vec![tls::OPERATOR_CLIENT_NAME.to_string()];
    for (secret_name, cert_names, client_cert) in [
        (names.pilot_tls_secret(), server_names, false),
        (names.operator_client_secret(), client_names, true),
    ] {
        let existing = secrets
            .get_opt(&secret_name)
            .await
            .context(|| format!("reading Secret {secret_name}"))?;
        if existing.is_some() {
            continue;
        }
        let issued = tls::issue(&ca, &cert_names, client_cert)?;
        let data = [
            ("ca.crt", ca.cert_pem.clone()),
            ("tls.crt", issued.cert_pem),
            ("tls.key", issued.key_pem),
        ];
        create_secret(cluster, ctx, &secrets, &secret_name, &data).await?;
    }
    Ok(())
}

fn ca_from_secret(secret: &Secret, cluster: &str) -> Option<tls::CertificateAuthority> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(tls::CertificateAuthority {
        cluster: cluster.to_string(),
        cert_pem: text("ca.crt")?,
        key_pem: text("ca.key")?,
    })
}

async fn create_secret(
    cluster: &CassandraCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
    name: &str,
    data: &[(&str, String)],
) -> Result<(), Error> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: cluster.namespace(),
            labels: Some(labels::cluster(&cluster.name_any())),
            owner_references: resources::owner_reference(cluster).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    };
    ctx.writes.record("Secret");
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("creating Secret {name}"),
            source,
        }),
    }
}

/// Write the status when it changed, then publish an Event for every new step and finished
/// operation. Returns false when the cluster object this reconcile planned on was stale (the
/// conditional write was refused): nothing is announced and nothing may be done.
async fn record(
    cluster: &CassandraCluster,
    ctx: &Context,
    ns: &str,
    step: &Step,
    new_status: CassandraClusterStatus,
) -> Result<bool, Error> {
    let previous = cluster.status.as_ref();
    if previous != Some(&new_status) {
        let api = Api::<CassandraCluster>::namespaced(ctx.client.clone(), ns);
        ctx.writes.record("status");
        // Server-side apply, not a merge patch: a field left out of the new status (an
        // operation that finished) must disappear, or the next reconcile sees it again. The
        // resourceVersion makes the write conditional: a reconcile that ran on a cached copy
        // older than the last recorded intent must not overwrite that intent.
        let patch = json!({
            "apiVersion": CassandraCluster::api_version(&()),
            "kind": CassandraCluster::kind(&()),
            "metadata": { "resourceVersion": cluster.metadata.resource_version },
            "status": new_status,
        });
        match api
            .patch_status(
                &cluster.name_any(),
                &PatchParams::apply(&ctx.config.field_manager).force(),
                &Patch::Apply(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                info!(cluster = %cluster.name_any(), "planned on a stale copy; re-planning");
                return Ok(false);
            }
            Err(e) => {
                return Err(Error::Kube {
                    what: format!("updating status of {ns}/{}", cluster.name_any()),
                    source: e,
                });
            }
        }
    }

    let previous_history = previous.map(|s| s.history.as_slice()).unwrap_or_default();
    // Finished operations first (what was verified), then the step now under way.
    let finished = new_status
        .history
        .iter()
        .filter(|r| !previous_history.contains(r))
        .map(|r| Event {
            type_: if r.result == "Succeeded" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: format!("{}{}", r.kind, r.result),
            note: Some(r.message.clone()),
            action: format!("{}{}", r.kind, r.result),
            secondary: r.node.as_deref().map(|n| pod_reference(ns, n)),
        });
    let step_event = step_event(
        previous.and_then(|s| s.current_operation.as_ref()),
        &new_status,
        step,
        ns,
    );
    for event in finished.chain(step_event) {
        ctx.writes.record("Event");
        if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            // An Event that cannot be written must not stop the reconcile.
            warn!(error = %e, "publishing event failed");
        }
    }
    Ok(true)
}

fn pod_reference(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectReference::default()
    }
}

/// The Event announcing a change of operation or phase, if anything changed.
///
/// The recorder folds Events with the same reason, action and related object into one series
/// that keeps the first note; the action therefore names the phase (and why a wait waits) and
/// the related object is the node's pod, so every distinct step stays its own Event.
fn step_event(
    previous: Option<&CurrentOperation>,
    status: &CassandraClusterStatus,
    step: &Step,
    ns: &str,
) -> Option<Event> {
    let current = status.current_operation.as_ref();
    let key = |op: Option<&CurrentOperation>| {
        op.map(|o| {
            (
                o.kind.clone(),
                o.node.clone(),
                o.phase.clone(),
                o.blocked_reason.clone(),
            )
        })
    };
    if key(previous) == key(current) {
        return None;
    }
    if let Step::Wait {
        cause: WaitCause::StatefulSetCatchingUp,
        ..
    } = step
    {
        // Follows every StatefulSet change for a moment; the status shows it, an Event is noise.
        return None;
    }
    let related = current
        .and_then(|op| op.node.as_deref())
        .map(|n| pod_reference(ns, n));
    let event = |type_, reason: &str, action: String, note: String| Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action,
        secondary: related.clone(),
    };
    Some(match current {
        None => event(
            EventType::Normal,
            "Reconciled",
            // Per size, so a later match at another size is not folded into this one's note.
            format!("ReconciledWith{}Nodes", status.ready_replicas),
            format!(
                "cluster matches the spec: {} nodes ready",
                status.ready.as_deref().unwrap_or("?")
            ),
        ),
        Some(op) => match op.phase.as_str() {
            "Blocked" => event(
                EventType::Warning,
                "Refused",
                "Refused".into(),
                format!(
                    "{}; to resolve: {}",
                    op.blocked_reason.as_deref().unwrap_or(""),
                    op.next_step.as_deref().unwrap_or("")
                ),
            ),
            "Waiting" => event(
                EventType::Normal,
                "Waiting",
                match step {
                    Step::Wait { cause, .. } => format!("{}Waiting{}", op.kind, cause.as_str()),
                    _ => format!("{}Waiting", op.kind),
                },
                format!(
                    "{}: {}; next: {}",
                    op.kind,
                    op.blocked_reason.as_deref().unwrap_or(""),
                    op.next_step.as_deref().unwrap_or("")
                ),
            ),
            _ => event(
                EventType::Normal,
                &op.kind,
                format!("{}{}", op.kind, op.phase),
                format!(
                    "{}{}; next: {}",
                    op.summary.as_deref().unwrap_or(&op.kind),
                    op.node
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    op.next_step.as_deref().unwrap_or("")
                ),
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with(
        kind: &str,
        node: &str,
        phase: &str,
        reason: Option<&str>,
    ) -> CassandraClusterStatus {
        CassandraClusterStatus {
            current_operation: Some(CurrentOperation {
                kind: kind.into(),
                node: Some(node.into()),
                phase: phase.into(),
                blocked_reason: reason.map(str::to_string),
                ..CurrentOperation::default()
            }),
            ..CassandraClusterStatus::default()
        }
    }

    fn wait(cause: WaitCause) -> Step {
        Step::Wait {
            cause,
            reason: "r".into(),
            next: "n".into(),
        }
    }

    /// The recorder merges Events by reason, action and related object and keeps the first
    /// note: distinct steps must differ in one of them, or `kubectl describe` shows stale text.
    #[test]
    fn distinct_steps_make_distinct_events() {
        let key = |e: &Event| (e.reason.clone(), e.action.clone(), e.secondary.clone());
        let add = |node: &str| Step::AddNode {
            pool: "main".into(),
            ordinal: if node.ends_with('1') { 1 } else { 2 },
        };
        let first = status_with("ScaleUp", "c-main-1", "Running", None);
        let second = status_with("ScaleUp", "c-main-2", "Running", None);
        let a = step_event(None, &first, &add("c-main-1"), "ns").expect("event");
        let b = step_event(
            first.current_operation.as_ref(),
            &second,
            &add("c-main-2"),
            "ns",
        )
        .expect("event");
        assert_ne!(key(&a), key(&b));

        let decommission = |phase| Step::Decommission {
            pool: "main".into(),
            ordinal: 2,
            node: "c-main-2".into(),
            action_id: "d".into(),
            phase,
        };
        let starting = status_with("Decommission", "c-main-2", "Starting", None);
        let streaming = status_with("Decommission", "c-main-2", "Streaming", None);
        let a = step_event(
            None,
            &starting,
            &decommission(DecommissionPhase::Start { force: false }),
            "ns",
        )
        .expect("event");
        let b = step_event(
            starting.current_operation.as_ref(),
            &streaming,
            &decommission(DecommissionPhase::Streaming {
                message: "streaming".into(),
                percent: None,
            }),
            "ns",
        )
        .expect("event");
        assert_ne!(key(&a), key(&b));
        assert!(
            step_event(
                streaming.current_operation.as_ref(),
                &streaming,
                &decommission(DecommissionPhase::Streaming {
                    message: "streaming".into(),
                    percent: None,
                }),
                "ns"
            )
            .is_none(),
            "an unchanged step is not announced again"
        );

        let missing = status_with("ScaleUp", "c-main-2", "Waiting", Some("no pod"));
        let not_ready = status_with("ScaleUp", "c-main-2", "Waiting", Some("not ready"));
        let a = step_event(None, &missing, &wait(WaitCause::NodeMissing), "ns").expect("event");
        let b = step_event(
            missing.current_operation.as_ref(),
            &not_ready,
            &wait(WaitCause::NodeNotReady),
            "ns",
        )
        .expect("event");
        assert_ne!(key(&a), key(&b));
        assert!(
            step_event(
                None,
                &missing,
                &wait(WaitCause::StatefulSetCatchingUp),
                "ns"
            )
            .is_none(),
            "the StatefulSet catching up is not worth an Event"
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert!(parse_quantity("2Gi") > parse_quantity("1500Mi"));
        assert_eq!(parse_quantity("10G"), Ok(10_000_000_000));
        assert!(parse_quantity("1.5Gi").is_err());
    }
}
