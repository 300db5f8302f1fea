//! Wiring of the kube-runtime controllers: what is watched (only what the operator owns, by
//! label, so unrelated objects never enter the cache) and how failures are retried.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::api::cassandra::CassandraCluster;
use crate::api::elasticsearch::ElasticsearchCluster;
use crate::cluster::ClusterKind;
use crate::cluster::reconcile::{Error, reconcile};
use crate::context::Context;
use crate::labels;
use crate::pilots::ClusterKey;
use crate::readiness::ControllerState;

fn error_policy<K: ClusterKind>(cluster: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(cluster = %cluster.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Run the CassandraCluster controller until a shutdown signal.
pub async fn run_cassandra(
    ctx: Arc<Context>,
    namespace: Option<String>,
    pilot_changes: Option<tokio::sync::broadcast::Receiver<ClusterKey>>,
) {
    run::<CassandraCluster>(ctx, namespace, pilot_changes).await
}

/// Run the ElasticsearchCluster controller until a shutdown signal.
pub async fn run_elasticsearch(
    ctx: Arc<Context>,
    namespace: Option<String>,
    pilot_changes: Option<tokio::sync::broadcast::Receiver<ClusterKey>>,
) {
    run::<ElasticsearchCluster>(ctx, namespace, pilot_changes).await
}

/// Run the controller of one database kind until a shutdown signal.
pub async fn run<K: ClusterKind>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    pilot_changes: Option<tokio::sync::broadcast::Receiver<ClusterKey>>,
) {
    let client = ctx.client.clone();
    let (clusters, statefulsets, pods): (Api<K>, Api<StatefulSet>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let owned = watcher::Config::default().labels(&labels::managed_selector());
    info!(namespace = ?namespace, kind = K::kind(&()).as_ref(), "starting controller");
    // Any pilot's change reconciles every cluster: cheap at our scale, and kube-runtime's
    // targeted `reconcile_on` is still behind an unstable feature.
    let pilot_triggers = futures::stream::iter(pilot_changes)
        .flat_map(tokio_stream::wrappers::BroadcastStream::new)
        .map(|_| ());
    let kind = K::kind(&()).to_string();
    ctx.readiness.set(&kind, ControllerState::Starting);
    let controller = Controller::new(clusters, watcher::Config::default());
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
        // A node's verified state changed (a pilot reported it): act on it at once.
        .reconcile_all_on(pilot_triggers)
        .owns(statefulsets, owned.clone())
        // Pods belong to StatefulSets, not to the cluster: map them back by label so that a
        // node becoming ready (or dying) triggers a reconcile at once.
        .watches(pods, owned, |pod: Pod| {
            let cluster = pod.labels().get(labels::CLUSTER)?.clone();
            let ns = pod.namespace()?;
            // Only pods of this kind (the app label), so a same-named cluster of another kind
            // is not woken.
            if pod.labels().get(labels::NAME).map(String::as_str) != Some(K::APP_NAME) {
                return None;
            }
            Some(ObjectRef::<K>::new(&cluster).within(&ns))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "controller event");
            }
        })
        .await;
    synced.abort();
    ctx.readiness.set(&kind, ControllerState::Stopped);
}

/// Every `every` (the first time after at most a minute), delete the credentials of clusters
/// that no longer exist: they live in the credentials namespace, where no owner reference can
/// reach.
pub async fn sweep_credentials(ctx: Arc<Context>, namespace: Option<String>, every: Duration) {
    let credentials = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        ctx.client.clone(),
        &ctx.config.credentials_namespace,
    );
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + every.min(Duration::from_secs(60)),
        every,
    );
    loop {
        tick.tick().await;
        let (client, ns) = (ctx.client.clone(), namespace.clone());
        let live = move || {
            let (client, ns) = (client.clone(), ns.clone());
            Box::pin(async move { live_cluster_uids(client, ns.as_deref()).await })
                as futures::future::BoxFuture<'static, _>
        };
        match crate::platform::pki::sweep(&credentials, live, namespace.as_deref(), &ctx.writes)
            .await
        {
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
