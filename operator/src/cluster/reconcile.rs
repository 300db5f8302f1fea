//! The reconcile of every database kind: observe → plan (pure, in the core) → record status
//! and Events → act. Only the two ends touch the API; the plumbing they use is in `platform/`;
//! what differs between kinds comes from their [`ClusterKind`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use stateward_core::Database;
use stateward_core::model::{
    DesiredPool, InFlight, Observed, ObservedNode, ObservedPool, VolumePolicy, VolumeState,
};
use stateward_core::planner::{self, Act, Plan, Step};
use stateward_core::status::{
    self as core_status, ClusterStatus, NodeStatus, PoolStatus, StatusInputs,
};
use stateward_core::words::Fault;
use tracing::{debug, info, warn};

use super::{ClusterKind, DetailOf};
use crate::apply::{self, Outcome};
use crate::context::{Context, PilotAddress};
use crate::labels;
use crate::pilots::PodAddress;
pub use crate::platform::Error;
use crate::platform::names::Names;
use crate::platform::record::{Recording, record};
use crate::platform::{KubeContext, login, now_rfc3339, pki, pods, volumes};

/// What the observe phase saw.
struct Observation<D> {
    planner: Observed<D>,
    desired: Vec<DesiredPool>,
    statefulsets: Vec<StatefulSet>,
    pods: Vec<Pod>,
    claims: Vec<PersistentVolumeClaim>,
    nodes: Vec<NodeStatus>,
    pools: Vec<PoolStatus>,
    /// What keeps the cluster's credentials from being used, if anything.
    fault: Option<Fault>,
}

/// How soon a reconcile that found a cache behind the operator's own write looks again (the
/// watch event that catches it up usually wakes it first).
const STALE_RETRY: Duration = Duration::from_millis(500);

pub async fn reconcile<K: ClusterKind>(
    cluster: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    let (result, cpu) = crate::cpu_time::cpu_timed(reconcile_cached(cluster, ctx.clone())).await;
    let result = match result {
        Err(Error::Stale(what)) => {
            debug!(%what, "a cache is behind the operator's last write; waiting for it");
            Ok(Action::requeue(STALE_RETRY))
        }
        other => other,
    };
    let cause = result.as_ref().err().map(Error::cause);
    ctx.metrics
        .reconciled(&K::kind(&()), started.elapsed(), cpu, cause);
    result
}

/// The reconcile proper, on the caches (no API read when nothing changes).
async fn reconcile_cached<K: ClusterKind>(
    cluster: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = cluster.namespace().ok_or(Error::NoNamespace)?;
    let names = Names::of(cluster.as_ref());
    if cluster.meta().deletion_timestamp.is_some() {
        // Children go with the owner references; PVCs follow the StatefulSets' retention policy.
        ctx.pilots.forget(&ns, &names.cluster);
        return Ok(Action::await_change());
    }
    // The cluster itself comes from the controller's cache: never plan on a copy older than
    // the status this operator last wrote (its intent).
    let version = |_: &str| cluster.resource_version();
    let kind = K::kind(&());
    if let Some(what) = ctx
        .writes
        .expectations
        .unmet(&kind, &ns, Some(&names.cluster), version)
    {
        return Err(Error::Stale(what));
    }

    let observation = observe(cluster.as_ref(), &ctx, &ns, &names).await?;
    let db = cluster.database();
    let plan = planner::plan(
        &db,
        &observation.desired,
        cluster.is_paused(),
        &observation.planner,
    );
    let next = build_status(cluster.as_ref(), &names, &observation, &plan);
    // The intent (operation, action ID, phase) is recorded before anything is done, so that a
    // restarted operator resumes the same operation instead of starting another.
    let api = Api::<K>::namespaced(ctx.client.clone(), &ns);
    let recording = Recording {
        api: &api,
        object: cluster.as_ref(),
        previous: cluster.cluster_status(),
        field_manager: &ctx.config.field_manager,
        recorder: &ctx.recorder,
        writes: &ctx.writes,
    };
    if !record(recording, &plan, &next).await? {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if plan.step != Step::Paused {
        act(cluster.as_ref(), &ctx, &ns, &names, &observation, &plan).await?;
    }
    Ok(match (&plan.step, &plan.refusal) {
        (Step::Steady, None) | (Step::Paused, _) => Action::requeue(ctx.resync),
        (Step::Steady, Some(_)) => Action::requeue(ctx.resync.min(Duration::from_secs(60))),
        // An operation's next phase often shows only in the pilot's action state.
        (Step::Operation(_), _) => Action::requeue(Duration::from_secs(3)),
        // Pod and StatefulSet changes wake us up; the timer is a safety net.
        _ => Action::requeue(Duration::from_secs(10)),
    })
}

fn build_status<K: ClusterKind>(
    cluster: &K,
    names: &Names,
    observation: &Observation<DetailOf<K>>,
    plan: &Plan,
) -> ClusterStatus {
    let step_node = match &plan.step {
        Step::AddNode { pool, ordinal } => Some(names.pod(pool, *ordinal)),
        _ => None,
    };
    let volume_note = plan.step.operation().and_then(|op| {
        let record = &op.operation;
        let volume = names.data_volume(&record.pool, record.ordinal);
        op.finished
            .iter()
            .any(|f| f.succeeded)
            .then(|| match cluster.volume_policy() {
                VolumePolicy::Delete => format!("PVC {volume} deleted"),
                VolumePolicy::Retain => format!(
                    "PVC {volume} retained, marked {}",
                    labels::DECOMMISSIONED_ANNOTATION
                ),
            })
    });
    let mut status = core_status::build(StatusInputs {
        generation: cluster.meta().generation,
        previous: cluster.cluster_status(),
        plan,
        nodes: observation.nodes.clone(),
        pools: observation.pools.clone(),
        selector: labels::to_selector_string(&labels::cluster_selector(&names.cluster)),
        step_node,
        now: now_rfc3339(),
        volume_note,
        after_join: cluster.database().after_join(),
        fault: observation.fault.clone(),
    });
    cluster.cluster_fields(&observation.planner, &mut status);
    status
}

/// The pools the planner works on: the spec's, then those removed from the spec whose
/// StatefulSet still exists (their nodes leave through verified removals first).
fn desired_pools<K: ClusterKind>(cluster: &K, statefulsets: &[StatefulSet]) -> Vec<DesiredPool> {
    let mut desired = cluster.spec_pools();
    for sts in statefulsets {
        let Some(pool) = sts.labels().get(labels::POOL) else {
            continue;
        };
        if !desired.iter().any(|d| &d.name == pool) {
            desired.push(DesiredPool {
                name: pool.clone(),
                replicas: 0,
                retiring: true,
            });
        }
    }
    desired
}

async fn observe<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
) -> Result<Observation<DetailOf<K>>, Error> {
    // The kind's name too: a cluster of another kind may share the name in this namespace.
    let mut selector = labels::cluster_selector(&names.cluster);
    selector.insert(labels::NAME.to_string(), K::APP_NAME.to_string());
    let statefulsets: Vec<StatefulSet> = ctx.caches.list(ns, &selector)?;
    let pods: Vec<Pod> = ctx.caches.list(ns, &selector)?;
    let claims: Vec<PersistentVolumeClaim> = ctx.caches.list(ns, &selector)?;
    let fault = credentials_and_pilots(cluster, ctx, ns, names, &pods).await?;

    let previous = cluster.cluster_status();
    let mut planner_view = Observed {
        generation: cluster.meta().generation.unwrap_or(0),
        desired_version: cluster.version().to_string(),
        pending_tasks: previous
            .map(ClusterStatus::pending_tasks)
            .unwrap_or_default(),
        volume_policy: cluster.volume_policy(),
        ..Observed::default()
    };
    if let Some(operation) = previous.and_then(|s| s.operation.clone()) {
        let action = ctx
            .pilots
            .action(
                PilotAddress {
                    namespace: ns,
                    cluster: &names.cluster,
                    pod: &operation.node,
                },
                &operation.action_id,
            )
            .await;
        planner_view.in_flight = Some(InFlight { operation, action });
    }
    let desired = desired_pools(cluster, &statefulsets);
    let mut nodes = Vec::new();
    let mut pools = Vec::new();
    for pool in &desired {
        let observed_pool = observe_pool(
            cluster,
            ctx,
            ns,
            names,
            &pool.name,
            &statefulsets,
            &pods,
            &claims,
            previous,
            &mut nodes,
        );
        pools.push(PoolStatus {
            name: pool.name.clone(),
            desired: pool.replicas,
            replicas: observed_pool.nodes.len() as i32,
            ready_replicas: observed_pool.nodes.iter().filter(|n| n.is_ready()).count() as i32,
        });
        planner_view.pools.insert(pool.name.clone(), observed_pool);
    }
    Ok(Observation {
        planner: planner_view,
        desired,
        statefulsets,
        pods,
        claims,
        nodes,
        pools,
        fault,
    })
}

/// The cluster's credentials ensured (not for a paused cluster: nothing is created for it),
/// then the pilots tracked with the operator's client certificate.
async fn credentials_and_pilots<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    pods: &[Pod],
) -> Result<Option<Fault>, Error> {
    let stores = pki::SecretStores::new(
        &ctx.client,
        &ctx.caches,
        ns,
        &ctx.config.credentials_namespace,
    );
    let uid = cluster.meta().uid.clone().ok_or(Error::NoUid)?;
    let fault = if cluster.is_paused() {
        None
    } else {
        match ensure_credentials(cluster, ctx, &stores, names, &uid).await? {
            Some(fault) => Some(fault),
            None => ensure_login_secret(cluster, ctx, &stores, names).await?,
        }
    };
    track_pilots(ctx, &stores, &uid, names, pods)?;
    Ok(fault)
}

/// The cluster's CA and certificates, created once; a CA that is unusable, or missing while the
/// pilots trust one, is a fault to show, not an error to retry in silence (nothing can mend it
/// but a person).
async fn ensure_credentials<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    stores: &pki::SecretStores<'_>,
    names: &Names,
    uid: &str,
) -> Result<Option<Fault>, Error> {
    let owner = pki::SecretOwner {
        owner: cluster.owner_reference(),
        labels: labels::cluster(&names.cluster, K::APP_NAME),
        names,
        uid: uid.to_string(),
    };
    match pki::ensure(
        stores,
        &owner,
        ctx.config.leaf_certificate_lifetime,
        &ctx.writes,
    )
    .await
    {
        Ok(()) => Ok(None),
        Err(Error::UnusableCa(secret)) => {
            warn!(cluster = %names.cluster, %secret, "the cluster's CA Secret is unusable");
            Ok(Some(Fault {
                reason: "UnusableCa".into(),
                message: format!(
                    "Secret {secret} exists but holds no usable CA certificate and key; every \
                     pilot trusts that CA, so the operator does not replace it and issues no \
                     certificate: restore the Secret, or replace the cluster's CA as \
                     docs/troubleshooting.md describes"
                ),
            }))
        }
        Err(Error::MissingCa { ca, pilot_tls }) => {
            warn!(cluster = %names.cluster, %ca, "the cluster's CA Secret is missing");
            Ok(Some(Fault {
                reason: "MissingCa".into(),
                message: format!(
                    "the CA Secret {ca} is missing while {pilot_tls} holds the pilots' \
                     certificates it issued; a new CA would not be trusted by the pilots, so \
                     none is made: restore the Secret, or replace the cluster's CA as \
                     docs/troubleshooting.md describes"
                ),
            }))
        }
        Err(e) => Err(e),
    }
}

/// The database's administrative login Secret, generated once when the user names none.
async fn ensure_login_secret<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    stores: &pki::SecretStores<'_>,
    names: &Names,
) -> Result<Option<Fault>, Error> {
    let Some(wanted) = cluster.login_secret() else {
        return Ok(None);
    };
    login::ensure(
        stores,
        &wanted,
        labels::cluster(&names.cluster, K::APP_NAME),
        &ctx.writes,
        ctx.resync,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
fn observe_pool<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    pool: &str,
    statefulsets: &[StatefulSet],
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
    previous: Option<&ClusterStatus>,
    nodes: &mut Vec<NodeStatus>,
) -> ObservedPool<DetailOf<K>> {
    let sts_name = names.statefulset(pool);
    let sts = statefulsets.iter().find(|s| s.name_any() == sts_name);
    let volume_prefix = format!("data-{sts_name}-");
    let volumes = claims
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
    let mut observed = ObservedPool {
        statefulset_replicas: sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas),
        statefulset_current: sts.is_none_or(|s| {
            s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
        }),
        update_revision: sts
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.update_revision.clone()),
        nodes: Vec::new(),
        volumes,
    };
    let mut pool_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get(labels::POOL).map(String::as_str) == Some(pool))
        .collect();
    pool_pods.sort_by_key(|p| pods::ordinal_of(p, &sts_name));
    for pod in pool_pods {
        let Some(ordinal) = pods::ordinal_of(pod, &sts_name) else {
            continue;
        };
        let node = observe_node::<K>(ctx, ns, pod, ordinal, previous);
        let mut status = NodeStatus {
            name: node.name.clone(),
            pool: pool.to_string(),
            state: cluster
                .database()
                .state_word(node.health(), node.pod_ready)
                .to_string(),
            ready: node.is_ready(),
            version: node.version().map(str::to_string),
            host_id: node.identity.clone(),
            address: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            revision: node.revision.clone(),
            outdated: observed.is_outdated(&node),
            message: (!node.is_ready()).then(|| pods::problem(pod)).flatten(),
            // Signed, as Kubernetes schemas know no unsigned formats.
            free_disk_bytes: node
                .report
                .as_ref()
                .and_then(|r| r.free_disk_bytes)
                .and_then(|b| i64::try_from(core_status::coarse_bytes(b)).ok()),
            ..NodeStatus::default()
        };
        cluster.node_status(&node, &mut status);
        nodes.push(status);
        observed.nodes.push(node);
    }
    observed
}

fn observe_node<K: ClusterKind>(
    ctx: &Context,
    ns: &str,
    pod: &Pod,
    ordinal: i32,
    previous: Option<&ClusterStatus>,
) -> ObservedNode<DetailOf<K>> {
    let name = pod.name_any();
    let uid = pod.uid();
    // A view kept from an earlier incarnation of this pod name is not this pod's: a pilot
    // that reports its pod UID is taken only for that pod (an older pilot reports none).
    let report = ctx
        .pilots
        .status(ns, &name)
        .filter(|s| s.pod_uid.is_empty() || Some(&s.pod_uid) == uid.as_ref())
        .map(|s| K::report_of(&s));
    // The host ID outlives a report: a decommissioned node is still identified by the one its
    // pilot reported while it was a member.
    let identity = report
        .as_ref()
        .and_then(|r| K::identity_of(&r.detail))
        .or_else(|| {
            previous
                .and_then(|s| s.nodes.iter().find(|n| n.name == name))
                .and_then(|n| n.host_id.clone())
        });
    ObservedNode {
        name,
        ordinal,
        pod_ready: pods::is_ready(pod),
        pod_uid: uid,
        revision: pods::revision_of(pod),
        report,
        identity,
    }
}

/// Point the pilot watches at the cluster's current pods. Without the operator's client
/// certificate (not created yet) nothing is watched and every node stays unknown.
fn track_pilots(
    ctx: &Context,
    stores: &pki::SecretStores<'_>,
    uid: &str,
    names: &Names,
    pods: &[Pod],
) -> Result<(), Error> {
    let ns = names.namespace.as_str();
    let Some(tls) = pki::client_tls(stores, names, uid)? else {
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
    ctx.pilots.track(ns, &names.cluster, tls, &addresses);
    Ok(())
}

async fn act<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    observation: &Observation<DetailOf<K>>,
    plan: &Plan,
) -> Result<(), Error> {
    let step = &plan.step;
    act_on_operation(cluster, ctx, ns, names, observation, step).await?;
    send_cluster_actions(cluster, ctx, ns, names, observation, plan).await;
    let fm = &ctx.config.field_manager;
    let client = &ctx.client;

    // The barrier: while an operation runs, nothing that changes a pod's template or the
    // node configuration is applied; the change waits until the operation ends.
    let template_change = step.allows_template_change();
    let config_hash = if template_change {
        let config_map = cluster.config_map().map_err(Error::Render)?;
        let live: Option<ConfigMap> = ctx.caches.get(ns, &names.config_map())?;
        let (applied, _) = apply::apply(
            &Api::<ConfigMap>::namespaced(client.clone(), ns),
            config_map,
            live.as_ref(),
            fm,
            &ctx.writes,
        )
        .await
        .context(|| format!("applying ConfigMap {}", names.config_map()))?;
        Some(K::config_hash(&applied))
    } else {
        None
    };
    let services = Api::<Service>::namespaced(client.clone(), ns);
    for service in cluster.services() {
        let name = service.name_any();
        let live: Option<Service> = ctx.caches.get(ns, &name)?;
        apply::apply(&services, service, live.as_ref(), fm, &ctx.writes)
            .await
            .context(|| format!("applying Service {name}"))?;
    }
    let live: Option<PodDisruptionBudget> = ctx.caches.get(ns, &names.pdb())?;
    apply::apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        cluster.pod_disruption_budget(),
        live.as_ref(),
        fm,
        &ctx.writes,
    )
    .await
    .context(|| format!("applying PodDisruptionBudget {}", names.pdb()))?;
    apply_statefulsets(
        cluster,
        ctx,
        ns,
        names,
        observation,
        step,
        config_hash.as_deref(),
    )
    .await
}

/// One StatefulSet per pool, with the size the step allows; a pool removed from the spec only
/// has its size followed, and its StatefulSet is deleted once it has no node and no pod.
async fn apply_statefulsets<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    observation: &Observation<DetailOf<K>>,
    step: &Step,
    config_hash: Option<&str>,
) -> Result<(), Error> {
    let observed = &observation.planner;
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
    for pool in &observation.desired {
        let name = names.statefulset(&pool.name);
        let live = observation
            .statefulsets
            .iter()
            .find(|s| s.name_any() == name);
        let replicas = planner::statefulset_replicas(observed, step, &pool.name);
        let (Some(mut sts), Some(size)) = (
            cluster.statefulset(
                &pool.name,
                replicas,
                config_hash.unwrap_or_default(),
                &ctx.config,
            ),
            cluster.storage_size(&pool.name),
        ) else {
            retire_pool(ctx, &api, &name, live, replicas, step, &pool.name).await?;
            continue;
        };
        let creating = matches!(step, Step::CreatePool { pool: p } if p == &pool.name);
        if live.is_none() && !creating {
            continue;
        }
        if let (Some(spec), Some(live_spec)) =
            (sts.spec.as_mut(), live.and_then(|l| l.spec.as_ref()))
        {
            // volumeClaimTemplates are immutable: keep the live ones and grow the PVCs directly.
            spec.volume_claim_templates = live_spec.volume_claim_templates.clone();
            // Under the barrier the live template stays as it is.
            if config_hash.is_none() {
                spec.template = live_spec.template.clone();
            }
        }
        let pool_claims: Vec<PersistentVolumeClaim> = observation
            .claims
            .iter()
            .filter(|c| c.labels().get(labels::POOL) == Some(&pool.name))
            .cloned()
            .collect();
        volumes::grow(&pvcs, &pool_claims, &size, &ctx.writes).await;
        let (_, outcome) = apply::apply(&api, sts, live, &ctx.config.field_manager, &ctx.writes)
            .await
            .context(|| format!("applying StatefulSet {name}"))?;
        if outcome != Outcome::Unchanged {
            info!(statefulset = %name, replicas, ?outcome, "applied StatefulSet");
        }
    }
    Ok(())
}

async fn retire_pool(
    ctx: &Context,
    api: &Api<StatefulSet>,
    name: &str,
    live: Option<&StatefulSet>,
    replicas: i32,
    step: &Step,
    pool: &str,
) -> Result<(), Error> {
    let Some(live) = live else {
        return Ok(());
    };
    let live_replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let namespace = live.namespace().unwrap_or_default();
    let expect = |after: Option<String>| {
        let before = live.resource_version();
        let expectations = &ctx.writes.expectations;
        expectations.expect("StatefulSet", &namespace, name, before, after);
    };
    if matches!(step, Step::DeletePool { pool: p } if p == pool) && live_replicas == 0 {
        ctx.writes.record("StatefulSet");
        match api.delete(name, &Default::default()).await {
            Ok(gone) => {
                expect(gone.left().and_then(|s| s.resource_version()));
                info!(statefulset = %name, "deleted the StatefulSet of a removed pool");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting StatefulSet {name}"),
                    source,
                });
            }
        }
        return Ok(());
    }
    if replicas != live_replicas {
        ctx.writes.record("StatefulSet");
        let resized = api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .context(|| format!("resizing StatefulSet {name} of removed pool {pool}"))?;
        expect(resized.resource_version());
    }
    Ok(())
}

/// The parts of an operation that are not StatefulSet sizes: asking the pilot to start the
/// action, releasing a removed node's volume, deleting a drained node's pod.
async fn act_on_operation<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    observation: &Observation<DetailOf<K>>,
    step: &Step,
) -> Result<(), Error> {
    let Some(op) = step.operation() else {
        return Ok(());
    };
    let record = &op.operation;
    match &op.act {
        Act::StartAction(action) => {
            let pilot = PilotAddress {
                namespace: ns,
                cluster: &names.cluster,
                pod: &record.node,
            };
            let started = ctx
                .pilots
                .start_action(
                    pilot,
                    &record.action_id,
                    cluster.action_spec(*action, &observation.planner),
                )
                .await;
            match started {
                Ok(progress) => {
                    info!(action = %record.action_id, ?progress, "asked the pilot to run the action")
                }
                // The next reconcile asks again with the same ID (StartAction is idempotent).
                Err(e) => {
                    warn!(action = %record.action_id, error = %e, "the pilot did not take the action")
                }
            }
        }
        Act::ReleaseVolume { delete } => {
            let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
            let name = names.data_volume(&record.pool, record.ordinal);
            // Gone already (deleted by a previous reconcile): nothing left to release.
            if let Some(live) = observation.claims.iter().find(|c| c.name_any() == name) {
                volumes::release(&api, live, *delete, &now_rfc3339(), &ctx.writes).await?;
            }
        }
        Act::DeletePod { uid } => {
            let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
            if pods::delete_with_uid(&api, &observation.pods, &record.node, uid, &ctx.writes)
                .await?
            {
                info!(pod = %record.node, %uid, "deleted the drained node's pod");
            }
        }
        Act::Shrink | Act::Nothing => {}
    }
    Ok(())
}

/// The kind's cluster-scoped actions (level-triggered; idempotent by ID). A pilot that does not
/// take one now is asked again on the next reconcile.
async fn send_cluster_actions<K: ClusterKind>(
    cluster: &K,
    ctx: &Context,
    ns: &str,
    names: &Names,
    observation: &Observation<DetailOf<K>>,
    plan: &Plan,
) {
    // The minute: a set still not in force a minute later is asked for under a new ID.
    let now = now_rfc3339();
    let attempt = now.get(..16).unwrap_or(&now);
    let actions =
        cluster.cluster_actions(&observation.desired, &observation.planner, plan, attempt);
    for action in actions {
        let pilot = PilotAddress {
            namespace: ns,
            cluster: &names.cluster,
            pod: &action.pilot,
        };
        match ctx
            .pilots
            .start_action(pilot, &action.action_id, action.spec.clone())
            .await
        {
            Ok(progress) => {
                info!(action = %action.action_id, pilot = %action.pilot, ?progress, "cluster-scoped action")
            }
            Err(e) => {
                warn!(action = %action.action_id, pilot = %action.pilot, error = %e, "the pilot did not take the cluster-scoped action")
            }
        }
    }
}
