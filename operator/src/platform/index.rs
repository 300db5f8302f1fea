//! The names of a store's objects by namespace and cluster label, so a reconcile reads its own
//! cluster's objects without scanning every cluster's: at 500 clusters in one namespace the
//! scans of the Pod, StatefulSet and PVC stores took most of a reconcile's CPU time.
//!
//! The index is a hint the store confirms: a read takes each indexed name from the store and
//! checks its labels there. So it only has to hold *at least* what the store holds. Names are
//! added before an event reaches the store ([`ClusterIndex::before_store`]) and removed after
//! ([`ClusterIndex::after_store`]); between the two it may name an object the store lacks,
//! which the read skips, but never lacks one the store holds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::labels;

/// Namespace and name of an object, or namespace and cluster of a group.
type Key = (String, String);

#[derive(Default)]
pub struct ClusterIndex {
    state: RwLock<IndexState>,
}

#[derive(Default)]
struct IndexState {
    names: HashMap<Key, BTreeSet<String>>,
    cluster_of: HashMap<Key, String>,
    /// Objects of a relist in progress: at its end, every other object is gone.
    relisted: Option<HashSet<Key>>,
}

/// Namespace, name and cluster label of `object`, if it has all three.
fn keys<K: ResourceExt>(object: &K) -> Option<(Key, String)> {
    let cluster = object.labels().get(labels::CLUSTER)?.clone();
    let namespace = object.meta().namespace.clone()?;
    Some(((namespace, object.name_any()), cluster))
}

impl ClusterIndex {
    /// The names in `namespace` labelled as `cluster`'s (possibly a few the store no longer
    /// holds, never fewer than it holds).
    pub fn names(&self, namespace: &str, cluster: &str) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .names
            .get(&(namespace.to_string(), cluster.to_string()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds what `event` brings, before the store sees it.
    pub fn before_store<K: ResourceExt>(&self, event: &Event<K>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => state.relisted = Some(HashSet::new()),
            Event::Apply(object) | Event::InitApply(object) => {
                let Some((object_key, cluster)) = keys(object) else {
                    return;
                };
                if let (Event::InitApply(_), Some(relisted)) = (event, &mut state.relisted) {
                    relisted.insert(object_key.clone());
                }
                let group = (object_key.0, cluster);
                state.names.entry(group).or_default().insert(object_key.1);
            }
            Event::Delete(_) | Event::InitDone => {}
        }
    }

    /// Removes what `event` took away, after the store has seen it.
    pub fn after_store<K: ResourceExt>(&self, event: &Event<K>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                let Some((object_key, cluster)) = keys(object) else {
                    return;
                };
                // A changed cluster label: the name leaves its former group.
                if let Some(former) = state.cluster_of.insert(object_key.clone(), cluster.clone())
                    && former != cluster
                {
                    state.remove(&object_key, &former);
                }
            }
            Event::Delete(object) => {
                let Some((object_key, _)) = keys(object) else {
                    return;
                };
                if let Some(cluster) = state.cluster_of.remove(&object_key) {
                    state.remove(&object_key, &cluster);
                }
            }
            Event::InitDone => {
                let Some(relisted) = state.relisted.take() else {
                    return;
                };
                let gone: Vec<(Key, String)> = state
                    .cluster_of
                    .iter()
                    .filter(|(object_key, _)| !relisted.contains(*object_key))
                    .map(|(object_key, cluster)| (object_key.clone(), cluster.clone()))
                    .collect();
                for (object_key, cluster) in gone {
                    state.cluster_of.remove(&object_key);
                    state.remove(&object_key, &cluster);
                }
            }
            Event::Init => {}
        }
    }
}

impl IndexState {
    fn remove(&mut self, (namespace, name): &Key, cluster: &str) {
        let group = (namespace.clone(), cluster.to_string());
        if let Some(names) = self.names.get_mut(&group) {
            names.remove(name);
            if names.is_empty() {
                self.names.remove(&group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, cluster: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "a",
                         "labels": {labels::CLUSTER: cluster}},
        }))
        .expect("a pod")
    }

    fn both(index: &ClusterIndex, event: Event<Pod>) {
        index.before_store(&event);
        index.after_store(&event);
    }

    #[test]
    fn names_follow_applies_deletes_and_label_changes() {
        let index = ClusterIndex::default();
        both(&index, Event::Apply(pod("c-0", "c")));
        both(&index, Event::Apply(pod("c-1", "c")));
        both(&index, Event::Apply(pod("d-0", "d")));
        assert_eq!(index.names("a", "c"), ["c-0", "c-1"]);
        assert_eq!(index.names("b", "c"), Vec::<String>::new());

        // Between the two halves, the index holds both what was and what will be.
        let halfway = |event: Event<Pod>, cluster: &str, between: &[&str], after: &[&str]| {
            index.before_store(&event);
            assert_eq!(index.names("a", cluster), between, "before the store");
            index.after_store(&event);
            assert_eq!(index.names("a", cluster), after, "after the store");
        };
        halfway(
            Event::Delete(pod("c-0", "c")),
            "c",
            &["c-0", "c-1"],
            &["c-1"],
        );
        halfway(
            Event::Apply(pod("c-1", "d")),
            "d",
            &["c-1", "d-0"],
            &["c-1", "d-0"],
        );
        assert_eq!(index.names("a", "c"), Vec::<String>::new());
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_lists_only_at_its_end() {
        let index = ClusterIndex::default();
        both(&index, Event::Apply(pod("c-0", "c")));
        both(&index, Event::Apply(pod("c-1", "c")));
        both(&index, Event::Init);
        both(&index, Event::InitApply(pod("c-1", "c")));
        both(&index, Event::InitApply(pod("c-2", "c")));
        assert_eq!(index.names("a", "c"), ["c-0", "c-1", "c-2"]);
        both(&index, Event::InitDone);
        assert_eq!(index.names("a", "c"), ["c-1", "c-2"]);
    }
}
