//! Server-side apply that writes only when something changed.
//!
//! A resync must cost no writes: the desired object is compared with the live one first. Two
//! checks, because each alone misses a case: the live object must contain every desired field
//! (catches drift made by others), and the hash of the desired object recorded on the live one
//! must match (catches fields removed from the desired object, which a containment check
//! cannot see).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const APPLIED_HASH_ANNOTATION: &str = "stateward.io/applied-hash";

/// Counts of API calls that change something, for the metrics endpoint and for tests that
/// prove a steady cluster costs no writes; and what each write is expected to show in the
/// caches, so that no decision is made on a cache older than the operator's own last write.
#[derive(Debug, Default)]
pub struct WriteCounter {
    writes: AtomicU64,
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub expectations: Expectations,
}

/// How long a write may take to show in a cache before it is given up on (with a warning): a
/// watch that lost the event relists, and the next reconcile reads the relisted object.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Object key of an expectation: kind, namespace, name.
type ObjectKey = (String, String, String);

/// Writes not yet seen in the caches, as ECK's expectations: a write is seen once the cached
/// object's resourceVersion is no longer the one the write was based on (or is the one it
/// returned). resourceVersions are compared only for equality, as Kubernetes asks.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: std::sync::Mutex<HashMap<ObjectKey, Expected>>,
}

#[derive(Debug, Clone)]
struct Expected {
    /// The version the write replaced (`None`: the object did not exist).
    before: Option<String>,
    /// The version the write returned (`None`: deleted).
    after: Option<String>,
    at: Instant,
}

impl Expectations {
    /// Records a write of `kind` `namespace/name` that replaced version `before` with `after`.
    pub fn expect(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        before: Option<String>,
        after: Option<String>,
    ) {
        if before == after {
            return;
        }
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(
            key,
            Expected {
                before,
                after,
                at: Instant::now(),
            },
        );
    }

    /// The first object of `kind` in `namespace` (named `name`, or any) whose cached version
    /// does not show the operator's last write yet; `cached` gives the cached resourceVersion
    /// of a name. Expectations met (or timed out) are forgotten.
    pub fn unmet(
        &self,
        kind: &str,
        namespace: &str,
        name: Option<&str>,
        cached: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut unmet = None;
        pending.retain(|(k, ns, n), expected| {
            if k != kind || ns != namespace || name.is_some_and(|wanted| wanted != n) {
                return true;
            }
            let now = cached(n);
            if now != expected.before || now == expected.after {
                return false;
            }
            if expected.at.elapsed() > EXPECTATION_TIMEOUT {
                tracing::warn!(kind, namespace, name = %n,
                    "a write did not show in the cache within 30 s; reading the cache as it is");
                return false;
            }
            unmet.get_or_insert_with(|| format!("{kind} {ns}/{n}"));
            true
        });
        unmet
    }
}

impl WriteCounter {
    /// Count one write of `what` (an object kind, "status" or "event").
    pub fn record(&self, what: &str) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        *by_kind.entry(what.to_string()).or_default() += 1;
    }
    pub fn total(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    /// Writes so far per kind.
    pub fn by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Apply `desired` with server-side apply unless `live` (the cached object) already matches it.
pub async fn apply<K>(
    api: &Api<K>,
    mut desired: K,
    live: Option<&K>,
    field_manager: &str,
    writes: &Arc<WriteCounter>,
) -> Result<(K, Outcome), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.name_any();
    let hash = desired_hash(&desired).map_err(kube::Error::SerdeError)?;
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
    if let Some(live) = live {
        let recorded = live.annotations().get(APPLIED_HASH_ANNOTATION);
        let desired_json = serde_json::to_value(&desired).map_err(kube::Error::SerdeError)?;
        let live_json = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
        if recorded == Some(&hash) && contains(&live_json, &desired_json) {
            return Ok((live.clone(), Outcome::Unchanged));
        }
    }
    let params = PatchParams::apply(field_manager).force();
    writes.record(K::kind(&Default::default()).as_ref());
    let applied = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
    writes.expectations.expect(
        K::kind(&()).as_ref(),
        &applied.namespace().unwrap_or_default(),
        &name,
        live.and_then(|l| l.resource_version()),
        applied.resource_version(),
    );
    let outcome = if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    Ok((applied, outcome))
}

fn desired_hash<K: Serialize>(desired: &K) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(desired)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..8]))
}

/// Whether `live` holds every field of `desired` with the same value (extra fields in `live`,
/// such as server defaults, are fine).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| dv.is_null() || l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_is_unmet_until_the_cache_moves_past_the_version_it_replaced() {
        let e = Expectations::default();
        fn v(rv: Option<&'static str>) -> impl Fn(&str) -> Option<String> {
            move |_| rv.map(str::to_string)
        }
        // Created: unmet while the cache has nothing, met once it shows any version.
        e.expect("Secret", "a", "ca", None, Some("5".into()));
        assert_eq!(
            e.unmet("Secret", "a", None, v(None)),
            Some("Secret a/ca".into())
        );
        assert_eq!(
            e.unmet("Secret", "b", None, v(None)),
            None,
            "other namespace"
        );
        assert_eq!(e.unmet("Pod", "a", None, v(None)), None, "other kind");
        assert_eq!(e.unmet("Secret", "a", Some("other"), v(None)), None);
        assert_eq!(e.unmet("Secret", "a", Some("ca"), v(Some("7"))), None);
        // Met expectations are forgotten.
        assert_eq!(e.unmet("Secret", "a", None, v(None)), None);
        // Updated: the old version is stale, the written or any later one is not.
        e.expect("StatefulSet", "a", "s", Some("1".into()), Some("2".into()));
        assert!(e.unmet("StatefulSet", "a", None, v(Some("1"))).is_some());
        assert!(e.unmet("StatefulSet", "a", None, v(Some("2"))).is_none());
        // Deleted: stale while the old version is cached.
        e.expect("Pod", "a", "p", Some("3".into()), None);
        assert!(e.unmet("Pod", "a", Some("p"), v(Some("3"))).is_some());
        assert!(e.unmet("Pod", "a", Some("p"), v(None)).is_none());
        // A write that changed nothing expects nothing.
        e.expect("Pod", "a", "q", Some("4".into()), Some("4".into()));
        assert!(e.unmet("Pod", "a", None, v(Some("4"))).is_none());
    }

    #[test]
    fn containment_ignores_server_defaults_but_not_changes() {
        let live = json!({"spec": {"replicas": 3, "serviceName": "x", "revisionHistoryLimit": 10},
                          "list": [{"a": 1, "b": 2}]});
        assert!(contains(
            &live,
            &json!({"spec": {"replicas": 3}, "list": [{"a": 1}]})
        ));
        assert!(!contains(&live, &json!({"spec": {"replicas": 4}})));
        assert!(!contains(&live, &json!({"list": [{"a": 1}, {"a": 2}]})));
        assert!(!contains(&live, &json!({"spec": {"missing": "x"}})));
    }
}
