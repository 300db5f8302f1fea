//! Recording: the conditional status write (intent before acting) and the Events of a step.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use stateward_core::planner::Plan;
use stateward_core::status::ClusterStatus;
use stateward_core::words::{EventIntent, events};
use tracing::{info, warn};

use super::Error;
use crate::apply::WriteCounter;

/// Where a status is written and Events are published.
pub struct Recording<'a, K: Resource> {
    pub api: &'a Api<K>,
    pub object: &'a K,
    pub previous: Option<&'a ClusterStatus>,
    pub field_manager: &'a str,
    pub recorder: &'a Recorder,
    pub writes: &'a WriteCounter,
}

/// Write the status when it changed, then publish an Event for every new step and finished
/// operation. Returns false when the object this reconcile planned on was stale (the
/// conditional write was refused): nothing is announced and nothing may be done.
pub async fn record<K>(
    r: Recording<'_, K>,
    plan: &Plan,
    next: &ClusterStatus,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let name = r.object.name_any();
    let ns = r.object.namespace().unwrap_or_default();
    if r.previous != Some(next) {
        r.writes.record("status");
        // Server-side apply, not a merge patch: a field left out of the new status (an
        // operation that finished) must disappear. The resourceVersion makes the write
        // conditional: a reconcile that ran on a cached copy older than the last recorded
        // intent must not overwrite that intent.
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": { "resourceVersion": r.object.meta().resource_version },
            "status": next,
        });
        match r
            .api
            .patch_status(
                &name,
                &PatchParams::apply(r.field_manager).force(),
                &Patch::Apply(patch),
            )
            .await
        {
            Ok(written) => r.writes.expectations.expect(
                K::kind(&()).as_ref(),
                &ns,
                &name,
                r.object.resource_version(),
                written.resource_version(),
            ),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                info!(cluster = %name, "planned on a stale copy; re-planning");
                return Ok(false);
            }
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("updating status of {ns}/{name}"),
                    source,
                });
            }
        }
    }
    for intent in events(r.previous, next, plan) {
        r.writes.record("Event");
        let event = to_event(&intent, &ns);
        if let Err(e) = r.recorder.publish(&event, &r.object.object_ref(&())).await {
            // An Event that cannot be written must not stop the reconcile.
            warn!(error = %e, "publishing event failed");
        }
    }
    Ok(true)
}

fn to_event(intent: &EventIntent, ns: &str) -> Event {
    Event {
        type_: if intent.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: intent.reason.clone(),
        note: Some(intent.note.clone()),
        action: intent.action.clone(),
        secondary: intent.node.as_deref().map(|n| pod_reference(ns, n)),
    }
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
