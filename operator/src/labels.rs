//! Labels and annotations the operator puts on what it owns. Watches select by these labels so
//! the operator never caches objects it does not own.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "stateward";
pub const CLUSTER: &str = "stateward.io/cluster";
pub const POOL: &str = "stateward.io/pool";
pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const CONFIG_HASH_ANNOTATION: &str = "stateward.io/config-hash";
/// The StatefulSet controller's pod label carrying the pod's ordinal.
/// On a PVC kept after its node's verified decommission (policy Retain): when it happened.
/// A new node is never started on such a volume.
pub const DECOMMISSIONED_ANNOTATION: &str = "stateward.io/decommissioned-at";
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// Selector of every object the operator manages, for its watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// Labels of everything a cluster owns; `app` is the database (`app.kubernetes.io/name`).
pub fn cluster(cluster: &str, app: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (NAME.to_string(), app.to_string()),
        (INSTANCE.to_string(), cluster.to_string()),
        (CLUSTER.to_string(), cluster.to_string()),
    ]
    .into()
}

pub fn cluster_selector(cluster: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (CLUSTER.to_string(), cluster.to_string()),
    ]
    .into()
}

pub fn pool(cluster_name: &str, app: &str, pool: &str) -> BTreeMap<String, String> {
    let mut labels = cluster(cluster_name, app);
    labels.insert(POOL.to_string(), pool.to_string());
    labels
}

pub fn pool_selector(cluster: &str, pool: &str) -> BTreeMap<String, String> {
    let mut labels = cluster_selector(cluster);
    labels.insert(POOL.to_string(), pool.to_string());
    labels
}

/// `key=value,...` form for label selectors in list calls and status.selector.
pub fn to_selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
