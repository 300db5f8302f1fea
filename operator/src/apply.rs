//! Server-side apply that writes only when something changed.
//!
//! A resync must cost no writes: the desired object is compared with the live one first. Two
//! checks, because each alone misses a case: the live object must contain every desired field
//! (catches drift made by others), and the hash of the desired object recorded on the live one
//! must match (catches fields removed from the desired object, which a containment check
//! cannot see).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const APPLIED_HASH_ANNOTATION: &str = "stateward.io/applied-hash";

/// Counts of API calls that change something, for the metrics endpoint and for tests that
/// prove a steady cluster costs no writes.
#[derive(Debug, Default)]
pub struct WriteCounter {
    writes: AtomicU64,
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
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

/// Apply `desired` with server-side apply unless the live object already matches it.
pub async fn apply<K>(
    api: &Api<K>,
    mut desired: K,
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
    let live = api.get_opt(&name).await?;
    if let Some(live) = &live {
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
