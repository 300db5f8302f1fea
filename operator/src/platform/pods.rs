//! Pods as the planner needs them: readiness, ordinal, revision, why one is not ready, and the
//! one pod write the operator makes (a delete, by UID).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};

use super::Error;
use crate::labels;

/// The StatefulSet controller's pod label naming the template revision the pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn ordinal_of(pod: &Pod, statefulset: &str) -> Option<i32> {
    pod.labels()
        .get(labels::POD_INDEX)
        .and_then(|i| i.parse().ok())
        .or_else(|| {
            pod.name_any()
                .strip_prefix(&format!("{statefulset}-"))
                .and_then(|i| i.parse().ok())
        })
}

pub fn revision_of(pod: &Pod) -> Option<String> {
    pod.labels().get(REVISION_LABEL).cloned()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not ready, in the words Kubernetes uses (for `kubectl describe`).
pub fn problem(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("pod terminating".into());
    }
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

/// Deletes a pod only if it is still the incarnation `uid` (a precondition the API server
/// checks), so a decision made about one pod never deletes its successor. Returns whether a
/// delete was sent.
pub async fn delete_with_uid(
    api: &Api<Pod>,
    pods: &[Pod],
    name: &str,
    uid: &str,
    writes: &crate::apply::WriteCounter,
) -> Result<bool, Error> {
    let live = pods.iter().find(|p| p.name_any() == name);
    // Already going (or gone): nothing to ask.
    if live
        .is_none_or(|p| p.uid().as_deref() != Some(uid) || p.metadata.deletion_timestamp.is_some())
    {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    writes.record("Pod");
    match api.delete(name, &params).await {
        Ok(gone) => {
            // The pod stays, terminating, until the kubelet stops it: a new version shows it.
            let after = gone.left().and_then(|p| p.resource_version());
            let (before, namespace) = live
                .map(|p| (p.resource_version(), p.namespace().unwrap_or_default()))
                .unwrap_or_default();
            writes
                .expectations
                .expect("Pod", &namespace, name, before, after);
            Ok(true)
        }
        // Gone, or already another incarnation: the planner sees it on the next reconcile.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            what: format!("deleting pod {name}"),
            source,
        }),
    }
}
