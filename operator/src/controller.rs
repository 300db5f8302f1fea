//! Wiring of the kube-runtime controllers: what is watched (only what the operator owns, by
//! label, so unrelated objects never enter the cache) and how failures are retried.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::cassandra::CassandraCluster;
use crate::api::elasticsearch::ElasticsearchCluster;
use crate::cluster::ClusterKind;
use crate::cluster::reconcile::{Error, reconcile};
use crate::context::Context;
use crate::labels;
use crate::pilots::{ClusterKey, PilotRegistry};
use crate::platform::cache::{Feeds, OwnedEvents};
use crate::readiness::ControllerState;
use crate::shutdown::Shutdown;

fn error_policy<K: ClusterKind>(cluster: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(cluster = %cluster.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Which controllers run, where a pilot's change is announced (`None`: nowhere, the
/// clusters' own watches and timers only), and what stops them.
pub struct Controllers {
    pub cassandra: bool,
    pub elasticsearch: bool,
    pub pilot_changes: Option<Arc<PilotRegistry>>,
    pub shutdown: Shutdown,
}

/// Fill the caches, then run the controllers until a shutdown is requested.
pub async fn run(ctx: Arc<Context>, feeds: Feeds, namespace: Option<String>, which: Controllers) {
    // Subscribed before the watches start, and only for controllers that run: a subscriber
    // nobody reads would stall the shared watches.
    let cassandra = which.cassandra.then(|| feeds.subscribe()).flatten();
    let elasticsearch = which.elasticsearch.then(|| feeds.subscribe()).flatten();
    let changes = |on: bool| {
        which
            .pilot_changes
            .as_ref()
            .filter(|_| on)
            .map(|p| p.subscribe())
    };
    let (cassandra_changes, elasticsearch_changes) =
        (changes(which.cassandra), changes(which.elasticsearch));
    let feeding = tokio::spawn(feeds.run());
    ctx.readiness.set(CACHES, ControllerState::Starting);
    for (runs, kind) in [
        (
            cassandra.is_some(),
            <CassandraCluster as kube::Resource>::kind(&()),
        ),
        (
            elasticsearch.is_some(),
            <ElasticsearchCluster as kube::Resource>::kind(&()),
        ),
    ] {
        if runs {
            ctx.readiness.set(&kind, ControllerState::Starting);
        }
    }
    // Planning on an empty cache would create what exists: nothing runs before every store
    // holds its first list.
    let filled = tokio::select! {
        filled = ctx.caches.wait_until_ready() => filled,
        () = which.shutdown.clone().requested() => {
            feeding.abort();
            return;
        }
    };
    if let Err(e) = filled {
        warn!(error = %e, "the caches never filled");
        ctx.readiness.set(CACHES, ControllerState::Stopped);
        return;
    }
    info!("caches of owned objects synced");
    ctx.readiness.set(CACHES, ControllerState::Synced);
    let shutdown = &which.shutdown;
    let cassandra = async {
        if let Some(owned) = cassandra {
            let stop = shutdown.clone();
            let (ctx, ns) = (ctx.clone(), namespace.clone());
            run_kind::<CassandraCluster>(ctx, ns, owned, cassandra_changes, stop).await
        }
    };
    let elasticsearch = async {
        if let Some(owned) = elasticsearch {
            let stop = shutdown.clone();
            let (ctx, ns) = (ctx.clone(), namespace.clone());
            run_kind::<ElasticsearchCluster>(ctx, ns, owned, elasticsearch_changes, stop).await
        }
    };
    tokio::join!(cassandra, elasticsearch);
    feeding.abort();
}

/// What `/readyz` calls the caches.
const CACHES: &str = "owned objects cache";

/// Run the controller of one database kind until a shutdown is requested; in-flight
/// reconciles finish first.
async fn run_kind<K: ClusterKind>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    owned: OwnedEvents,
    pilot_changes: Option<tokio::sync::broadcast::Receiver<ClusterKey>>,
    shutdown: Shutdown,
) {
    let clusters: Api<K> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    info!(namespace = ?namespace, kind = K::kind(&()).as_ref(), "starting controller");
    let kind = K::kind(&()).to_string();
    ctx.readiness.set(&kind, ControllerState::Starting);
    // Controller::new's watch, but without managedFields in the store: every writer of a
    // cluster (kubectl, the operator's status) adds an entry, and nothing here reads them.
    let (store, writer) = reflector::store();
    let watch = watcher(
        clusters,
        crate::platform::cache::paged(watcher::Config::default()),
    )
    .modify(|cluster: &mut K| cluster.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects();
    let controller = Controller::for_stream(watch, store);
    ctx.clusters.add(Box::new({
        let (store, kind) = (controller.store(), kind.clone());
        move || {
            store
                .state()
                .iter()
                .map(|cluster| sample(&kind, cluster.as_ref()))
                .collect()
        }
    }));
    let pilot_triggers = pilot_triggers(controller.store(), pilot_changes);
    let synced = tokio::spawn({
        let (store, ctx, kind) = (controller.store(), ctx.clone(), kind.clone());
        async move {
            // The store wakes only the latest of its waiters, and the controller waits on it
            // too: ask again every half second rather than once.
            loop {
                let wait = store.wait_until_ready();
                match tokio::time::timeout(Duration::from_millis(500), wait).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
            info!(kind, "cache of clusters synced");
            ctx.readiness.set(&kind, ControllerState::Synced);
        }
    });
    controller
        // A node's verified state changed (its pilot reported it): reconcile its cluster.
        .reconcile_on(pilot_triggers)
        .owns_shared_stream(owned.statefulsets)
        // Pods belong to StatefulSets, not to the cluster: map them back by label so that a
        // node becoming ready (or dying) triggers a reconcile at once.
        .watches_shared_stream(owned.pods, |pod: Arc<Pod>| {
            let cluster = pod.labels().get(labels::CLUSTER)?.clone();
            let ns = pod.namespace()?;
            // Only pods of this kind (the app label), so a same-named cluster of another kind
            // is not woken.
            if pod.labels().get(labels::NAME).map(String::as_str) != Some(K::APP_NAME) {
                return None;
            }
            Some(ObjectRef::<K>::new(&cluster).within(&ns))
        })
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async {
            match result {
                Ok(_) => {}
                // A cluster deleted while a reconcile of it was scheduled (its children's
                // deletion wakes it too): nothing to do but forget its pilots.
                Err(controller::Error::ObjectNotFound(object)) => {
                    debug!(%object, "scheduled reconcile of a cluster that is gone");
                    if let Some(ns) = &object.namespace {
                        ctx.pilots.forget(ns, &object.name);
                    }
                }
                Err(e) => warn!(error = %e, "controller event"),
            }
        })
        .await;
    synced.abort();
    ctx.readiness.set(&kind, ControllerState::Stopped);
}

fn sample<K: ClusterKind>(kind: &str, cluster: &K) -> crate::context::ClusterSample {
    let status = cluster.cluster_status();
    crate::context::ClusterSample {
        kind: kind.to_string(),
        phase: (status.and_then(|s| s.phase.clone())).unwrap_or_else(|| "Unknown".into()),
        operation: (status.and_then(|s| s.current_operation.as_ref()))
            .map(|op| (op.kind.clone(), op.phase.clone())),
    }
}

/// The clusters of kind `K` whose pilots reported a change; a receiver that lagged behind
/// reconciles every cluster it holds (it cannot know which it missed).
fn pilot_triggers<K: ClusterKind>(
    store: Store<K>,
    changes: Option<tokio::sync::broadcast::Receiver<ClusterKey>>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    futures::stream::iter(changes)
        .flat_map(tokio_stream::wrappers::BroadcastStream::new)
        .flat_map(move |change| {
            let refs: Vec<ObjectRef<K>> = match change {
                // Only a cluster of this kind: the other kind's controller hears it too.
                Ok((ns, name)) => {
                    let wanted = ObjectRef::<K>::new(&name).within(&ns);
                    store.get(&wanted).map(|_| wanted).into_iter().collect()
                }
                Err(_lagged) => store
                    .state()
                    .iter()
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect(),
            };
            futures::stream::iter(refs)
        })
}

/// Every `every` (the first time after at most a minute), delete the credentials of clusters
/// that no longer exist: they live in the credentials namespace, where no owner reference can
/// reach.
pub async fn sweep_credentials(ctx: Arc<Context>, namespace: Option<String>, every: Duration) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + every.min(Duration::from_secs(60)),
        every,
    );
    loop {
        tick.tick().await;
        let creds_ns = &ctx.config.credentials_namespace;
        // The app namespace is not used by the sweep.
        let stores =
            crate::platform::pki::SecretStores::new(&ctx.client, &ctx.caches, creds_ns, creds_ns);
        let (client, ns) = (ctx.client.clone(), namespace.clone());
        let live = move || {
            let (client, ns) = (client.clone(), ns.clone());
            Box::pin(async move { live_cluster_uids(client, ns.as_deref()).await })
                as futures::future::BoxFuture<'static, _>
        };
        match crate::platform::pki::sweep(&stores, live, namespace.as_deref(), &ctx.writes).await {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, "swept credentials of deleted clusters"),
            Err(e) => warn!(error = %e, "sweeping credentials of deleted clusters"),
        }
    }
}

/// The UIDs of every cluster of every kind (in `namespace` only, when given).
async fn live_cluster_uids(
    client: kube::Client,
    namespace: Option<&str>,
) -> Result<std::collections::BTreeSet<String>, Error> {
    let mut uids = std::collections::BTreeSet::new();
    uids.extend(uids_of::<CassandraCluster>(&client, namespace).await?);
    uids.extend(uids_of::<ElasticsearchCluster>(&client, namespace).await?);
    Ok(uids)
}

async fn uids_of<K: ClusterKind>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<String>, Error> {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            what: format!("listing {}s", K::kind(&())),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|m| m.metadata.uid)
        .collect())
}
