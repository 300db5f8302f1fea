//! Caches of what the operator owns: reflector stores fed by label-selected watches, so a
//! reconcile reads without one API request, and objects the operator does not own (unrelated
//! Secrets, say) never enter memory.
//!
//! A read checks the operator's own writes first ([`crate::apply::Expectations`]): while a
//! cache does not show one yet, the read is [`Error::Stale`] and the reconcile waits for it,
//! so no decision is made on a view older than what the operator itself did.
//!
//! The StatefulSet and Pod watches are shared with the controllers (their events wake the
//! clusters that own the objects): one watch per kind for every database.
//!
//! The kinds a reconcile lists are indexed by cluster ([`super::index`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Error;
use super::index::ClusterIndex;
use crate::apply::WriteCounter;
use crate::labels;

/// Events a shared watch may hold for a slow controller before the watch waits for it.
const SHARED_BUFFER: usize = 256;

/// Objects per page of a watch's initial list. A page is parsed whole, managedFields included,
/// before they are stripped: with 500 clusters, kube's default of 500 put the heap's peak
/// ~23 MiB above its steady size (heaptrack); at 50 the peak is the steady size.
const LIST_PAGE_SIZE: u32 = 50;

/// The watch of every object the operator owns (by label), listed in small pages.
fn owned_watch() -> watcher::Config {
    paged(watcher::Config::default().labels(&labels::managed_selector()))
}

/// `config` with the initial list in pages of [`LIST_PAGE_SIZE`].
pub fn paged(config: watcher::Config) -> watcher::Config {
    config.page_size(LIST_PAGE_SIZE)
}

/// The stores a reconcile reads.
pub struct Caches {
    statefulsets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    /// The kinds a reconcile lists, by cluster.
    indexes: Indexes,
    config_maps: Store<ConfigMap>,
    services: Store<Service>,
    budgets: Store<PodDisruptionBudget>,
    /// The operator's Secrets in the watched namespaces.
    secrets: Store<Secret>,
    /// The credentials namespace's (each cluster's CA and the operator's client certificate).
    credentials: Store<Secret>,
    credentials_namespace: String,
    /// True when the app Secrets' watch covers the credentials namespace too.
    app_covers_credentials: bool,
    writes: Arc<WriteCounter>,
    client: kube::Client,
    /// Secrets a user named (not labelled, so not watched): read at most once per period.
    named: Mutex<HashMap<(String, String), NamedRead>>,
}

/// When a named Secret was read, and what the read found.
type NamedRead = (Instant, Option<Secret>);

/// A kind the caches hold.
pub trait Cached: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    fn store<'a>(caches: &'a Caches, namespace: &str) -> &'a Store<Self>;

    /// The store's names by cluster, for a kind a reconcile lists.
    fn index(_caches: &Caches) -> Option<&ClusterIndex> {
        None
    }

    /// The object as a reconcile reads it, from the form the store keeps.
    fn unpack(kept: &Self) -> Result<Self, Error> {
        Ok(kept.clone())
    }
}

macro_rules! cached {
    ($kind:ty, $field:ident) => {
        impl Cached for $kind {
            fn store<'a>(caches: &'a Caches, _namespace: &str) -> &'a Store<Self> {
                &caches.$field
            }
        }
    };
    ($kind:ty, $field:ident, indexed) => {
        impl Cached for $kind {
            fn store<'a>(caches: &'a Caches, _namespace: &str) -> &'a Store<Self> {
                &caches.$field
            }

            fn index(caches: &Caches) -> Option<&ClusterIndex> {
                Some(&caches.indexes.$field)
            }
        }
    };
}

/// The [`ClusterIndex`] of each kind a reconcile lists.
#[derive(Default)]
struct Indexes {
    statefulsets: Arc<ClusterIndex>,
    pods: Arc<ClusterIndex>,
    claims: Arc<ClusterIndex>,
}

impl Cached for StatefulSet {
    fn store<'a>(caches: &'a Caches, _namespace: &str) -> &'a Store<Self> {
        &caches.statefulsets
    }

    fn index(caches: &Caches) -> Option<&ClusterIndex> {
        Some(&caches.indexes.statefulsets)
    }

    fn unpack(kept: &Self) -> Result<Self, Error> {
        unpack_statefulset(kept)
    }
}
cached!(Pod, pods, indexed);
cached!(PersistentVolumeClaim, claims, indexed);
cached!(ConfigMap, config_maps);
cached!(Service, services);
cached!(PodDisruptionBudget, budgets);

impl Cached for Secret {
    fn store<'a>(caches: &'a Caches, namespace: &str) -> &'a Store<Self> {
        // Where the watched namespaces include the credentials namespace, the app store holds
        // its Secrets too (its selector is the wider one).
        if namespace == caches.credentials_namespace && !caches.app_covers_credentials {
            &caches.credentials
        } else {
            &caches.secrets
        }
    }
}

impl Caches {
    /// The store of `K` for `namespace`, unless a write of the object `name` (or, without a
    /// name, of any of that kind there) is not in it yet.
    fn fresh<K: Cached>(&self, namespace: &str, name: Option<&str>) -> Result<&Store<K>, Error> {
        let store = K::store(self, namespace);
        let version = |n: &str| {
            store
                .get(&ObjectRef::new(n).within(namespace))
                .and_then(|o| o.resource_version())
        };
        let kind = K::kind(&());
        match self
            .writes
            .expectations
            .unmet(&kind, namespace, name, version)
        {
            Some(what) => Err(Error::Stale(what)),
            None => Ok(store),
        }
    }

    /// The cached object, unless a write of it is not in the cache yet.
    pub fn get<K: Cached>(&self, namespace: &str, name: &str) -> Result<Option<K>, Error> {
        let store = self.fresh::<K>(namespace, Some(name))?;
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| K::unpack(&o))
            .transpose()
    }

    /// The cached objects of `namespace` carrying every label of `selector`, unless a write of
    /// one of that kind in that namespace is not in the cache yet.
    pub fn list<K: Cached>(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<K>, Error> {
        let store = self.fresh::<K>(namespace, None)?;
        let matches = |o: &K| {
            let labels = o.labels();
            o.meta().namespace.as_deref() == Some(namespace)
                && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        let candidates = match (K::index(self), selector.get(labels::CLUSTER)) {
            (Some(index), Some(cluster)) => index
                .names(namespace, cluster)
                .iter()
                .filter_map(|name| store.get(&ObjectRef::new(name).within(namespace)))
                .filter(|o| matches(o))
                .collect(),
            _ => store.state_filter(matches),
        };
        let mut found = candidates
            .iter()
            .map(|o| K::unpack(o))
            .collect::<Result<Vec<K>, Error>>()?;
        // The API lists by name; so do we, so the order does not depend on the cache.
        found.sort_by_key(|o| o.name_any());
        Ok(found)
    }

    /// A Secret a user named, which carries none of the operator's labels and so is not
    /// watched: read with one GET at most once per `period`.
    pub async fn named_secret(
        &self,
        namespace: &str,
        name: &str,
        period: Duration,
    ) -> Result<Option<Secret>, Error> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((at, secret)) = self
            .named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < period
        {
            return Ok(secret.clone());
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| Error::Kube {
                what: format!("reading Secret {namespace}/{name}"),
                source,
            })?;
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the clusters that name a Secret; entries of a period ago are dropped.
        named.retain(|_, (at, _)| at.elapsed() < period);
        named.insert(key, (Instant::now(), secret.clone()));
        Ok(secret)
    }

    /// Forgets what was read of a named Secret: the next read asks the API again.
    pub fn forget_named(&self, namespace: &str, name: &str) {
        self.named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Waits until every store holds its first list.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        let ready = futures::future::try_join5(
            self.statefulsets.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.claims.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.services.wait_until_ready(),
        );
        let rest = futures::future::try_join3(
            self.budgets.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.credentials.wait_until_ready(),
        );
        futures::future::try_join(ready, rest)
            .await
            .map(|_| ())
            .map_err(|_| Error::Cache("a watch stopped before its first list".into()))
    }

    /// Objects in each store, for the metrics endpoint.
    pub fn sizes(&self) -> [(&'static str, usize); 8] {
        [
            ("StatefulSet", self.statefulsets.len()),
            ("Pod", self.pods.len()),
            ("PersistentVolumeClaim", self.claims.len()),
            ("ConfigMap", self.config_maps.len()),
            ("Service", self.services.len()),
            ("PodDisruptionBudget", self.budgets.len()),
            ("Secret", self.secrets.len()),
            ("CredentialsSecret", self.credentials.len()),
        ]
    }
}

/// The events of the shared watches, as one controller reads them.
pub struct OwnedEvents {
    pub statefulsets: ReflectHandle<StatefulSet>,
    pub pods: ReflectHandle<Pod>,
}

/// The watches that fill the [`Caches`]; run them with [`Feeds::run`].
pub struct Feeds {
    statefulsets: Writer<StatefulSet>,
    pods: Writer<Pod>,
    statefulset_index: Arc<ClusterIndex>,
    pod_index: Arc<ClusterIndex>,
    watches: Vec<BoxFuture<'static, ()>>,
    apis: WatchedApis,
}

struct WatchedApis {
    statefulsets: Api<StatefulSet>,
    pods: Api<Pod>,
}

/// The caches and the watches that fill them: everything the operator owns in `namespace`
/// (every namespace when `None`), and the credentials namespace's Secrets.
pub fn caches(
    client: &kube::Client,
    namespace: Option<&str>,
    credentials_namespace: &str,
    writes: Arc<WriteCounter>,
) -> (Caches, Feeds) {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = owned_watch();
    let mut watches = Vec::new();
    let indexes = Indexes::default();
    let claims = feed(
        api(client, namespace),
        owned.clone(),
        Some(indexes.claims.clone()),
        &mut watches,
    );
    let config_maps = feed(api(client, namespace), owned.clone(), None, &mut watches);
    let services = feed(api(client, namespace), owned.clone(), None, &mut watches);
    let budgets = feed(api(client, namespace), owned.clone(), None, &mut watches);
    let secrets = feed(api(client, namespace), owned.clone(), None, &mut watches);
    let credentials_selector = format!(
        "{},{}=true",
        labels::managed_selector(),
        super::pki::CREDENTIALS
    );
    let credentials = feed(
        api(client, Some(credentials_namespace)),
        paged(watcher::Config::default().labels(&credentials_selector)),
        None,
        &mut watches,
    );
    let (statefulset_index, pod_index) = (indexes.statefulsets.clone(), indexes.pods.clone());
    let (statefulsets_store, statefulsets) = reflector::store_shared(SHARED_BUFFER);
    let (pods_store, pods) = reflector::store_shared(SHARED_BUFFER);
    let caches = Caches {
        statefulsets: statefulsets_store,
        pods: pods_store,
        claims,
        indexes,
        config_maps,
        services,
        budgets,
        secrets,
        credentials,
        credentials_namespace: credentials_namespace.to_string(),
        app_covers_credentials: namespace.is_none_or(|ns| ns == credentials_namespace),
        writes,
        client: client.clone(),
        named: Mutex::new(HashMap::new()),
    };
    let feeds = Feeds {
        statefulsets,
        pods,
        statefulset_index,
        pod_index,
        watches,
        apis: WatchedApis {
            statefulsets: api(client, namespace),
            pods: api(client, namespace),
        },
    };
    (caches, feeds)
}

/// A store fed by a watch of `api` (not shared with a controller), and `index` with it; the
/// watch is pushed on `watches`.
fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    index: Option<Arc<ClusterIndex>>,
    watches: &mut Vec<BoxFuture<'static, ()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let after = index.clone();
    watches.push(Box::pin(
        watcher(api, config)
            .default_backoff()
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .map(move |event| index_before(index.as_deref(), event))
            .reflect(writer)
            .map(move |event| index_after(after.as_deref(), event))
            .for_each(log_watch_error),
    ));
    store
}

type WatchEvent<K> = Result<watcher::Event<K>, watcher::Error>;

/// `event`, once `index` holds what it brings (before the store does).
fn index_before<K: Resource>(index: Option<&ClusterIndex>, event: WatchEvent<K>) -> WatchEvent<K> {
    if let (Some(index), Ok(e)) = (index, &event) {
        index.before_store(e);
    }
    event
}

/// `event`, once `index` lets go of what it took away (after the store did).
fn index_after<K: Resource>(index: Option<&ClusterIndex>, event: WatchEvent<K>) -> WatchEvent<K> {
    if let (Some(index), Ok(e)) = (index, &event) {
        index.after_store(e);
    }
    event
}

impl Feeds {
    /// The StatefulSet and Pod events, for one controller: subscribe once per controller that
    /// runs (a subscriber nobody reads would stall the shared watch).
    pub fn subscribe(&self) -> Option<OwnedEvents> {
        Some(OwnedEvents {
            statefulsets: self.statefulsets.subscribe()?,
            pods: self.pods.subscribe()?,
        })
    }

    /// Runs every watch until the process ends (each retries with backoff on its own).
    pub async fn run(self) {
        let owned = owned_watch();
        let (sts_index, pod_index) = (self.statefulset_index, self.pod_index);
        let (sts_after, pod_after) = (sts_index.clone(), pod_index.clone());
        let statefulsets = watcher(self.apis.statefulsets, owned.clone())
            .default_backoff()
            .modify(pack_statefulset)
            .map(move |event| index_before(Some(&sts_index), event))
            .reflect_shared(self.statefulsets)
            .map(move |event| index_after(Some(&sts_after), event))
            .for_each(log_watch_error);
        let pods = watcher(self.apis.pods, owned)
            .default_backoff()
            .modify(slim_pod)
            .map(move |event| index_before(Some(&pod_index), event))
            .reflect_shared(self.pods)
            .map(move |event| index_after(Some(&pod_after), event))
            .for_each(log_watch_error);
        let mut all = self.watches;
        all.push(Box::pin(statefulsets));
        all.push(Box::pin(pods));
        futures::future::join_all(all).await;
    }
}

/// A pod as the caches keep it: metadata and status. The reconcile reads a pod's labels,
/// UID, deletion and status (readiness, IP, container states), never its spec, which the
/// StatefulSet's template already holds; in memory (k8s-openapi's types) a node's pod spec
/// cost ~30 KB, the largest share of the caches at 500 clusters.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.spec = None;
}

/// Where a cached StatefulSet keeps its spec, as JSON. Only in the operator's memory: the
/// caches never hand out a StatefulSet with it ([`unpack_statefulset`]).
const PACKED_SPEC: &str = "stateward.io/cached-spec";

/// A StatefulSet as the caches keep it: no managedFields, and the spec as its JSON text. In
/// memory (k8s-openapi's types, every optional field inline) a pod template cost ~27 KB for
/// ~7 KB of JSON; at 500 clusters the templates were the largest share of the heap.
fn pack_statefulset(sts: &mut StatefulSet) {
    sts.managed_fields_mut().clear();
    let Some(spec) = sts.spec.take() else {
        return;
    };
    match serde_json::to_string(&spec) {
        Ok(json) => {
            sts.annotations_mut().insert(PACKED_SPEC.to_string(), json);
        }
        // Never happens for a type that was just deserialized; kept whole if it does.
        Err(_) => sts.spec = Some(spec),
    }
}

/// The StatefulSet as the API served it (managedFields aside), from its packed form. A spec
/// that does not parse back fails the read: the reconcile waits rather than decide on a
/// StatefulSet without its spec.
fn unpack_statefulset(kept: &StatefulSet) -> Result<StatefulSet, Error> {
    let mut sts = kept.clone();
    let Some(json) = sts.annotations_mut().remove(PACKED_SPEC) else {
        return Ok(sts);
    };
    if sts.annotations().is_empty() {
        // The API omits an empty map; so do we, so drift checks see what they saw before.
        sts.metadata.annotations = None;
    }
    sts.spec = Some(serde_json::from_str(&json).map_err(|e| {
        Error::Cache(format!(
            "StatefulSet {}: the cached spec does not parse: {e}",
            sts.name_any()
        ))
    })?);
    Ok(sts)
}

/// A watch error (the watch retries with backoff by itself): said once per failure.
fn log_watch_error<K>(
    event: Result<watcher::Event<K>, watcher::Error>,
) -> futures::future::Ready<()> {
    if let Err(e) = event {
        tracing::warn!(error = %e, "watch of the operator's objects failed; retrying");
    }
    futures::future::ready(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statefulset(annotations: Option<BTreeMap<String, String>>) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "c-dc1", "namespace": "a", "resourceVersion": "7",
                "annotations": annotations,
                "managedFields": [{"manager": "stateward", "operation": "Apply"}],
            },
            "spec": {
                "replicas": 3,
                "serviceName": "c",
                "selector": {"matchLabels": {"app": "c"}},
                "template": {
                    "metadata": {"labels": {"app": "c"}},
                    "spec": {"containers": [{"name": "cassandra", "image": "cassandra:5"}]},
                },
            },
            "status": {"replicas": 3, "readyReplicas": 2},
        }))
        .expect("a StatefulSet")
    }

    #[test]
    fn a_statefulset_reads_back_as_served_without_managed_fields() {
        for annotations in [None, Some(BTreeMap::from([("a".into(), "b".into())]))] {
            let served = statefulset(annotations);
            let mut kept = served.clone();
            pack_statefulset(&mut kept);
            assert!(kept.spec.is_none(), "the store keeps the spec packed");
            let mut expected = served;
            expected.managed_fields_mut().clear();
            assert_eq!(unpack_statefulset(&kept).expect("unpacks"), expected);
        }
    }

    #[test]
    fn a_spec_that_does_not_parse_fails_the_read() {
        let mut kept = statefulset(None);
        kept.spec = None;
        kept.annotations_mut()
            .insert(PACKED_SPEC.into(), "{\"replicas\": \"three\"}".into());
        assert!(matches!(unpack_statefulset(&kept), Err(Error::Cache(_))));
    }
}
