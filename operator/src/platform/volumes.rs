//! Data volumes: growing them, and releasing a removed node's after its verified removal.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Error, KubeContext};
use crate::apply::WriteCounter;
use crate::labels;

/// Deletes the removed node's PVC (`live`, as cached), or keeps it marked as a decommissioned
/// node's data.
pub async fn release(
    api: &Api<PersistentVolumeClaim>,
    live: &PersistentVolumeClaim,
    delete: bool,
    now: &str,
    writes: &WriteCounter,
) -> Result<(), Error> {
    let name = &live.name_any();
    let namespace = live.namespace().unwrap_or_default();
    let expect = |after: Option<String>| {
        writes.expectations.expect(
            "PersistentVolumeClaim",
            &namespace,
            name,
            live.resource_version(),
            after,
        )
    };
    writes.record("PersistentVolumeClaim");
    if delete {
        match api.delete(name, &Default::default()).await {
            Ok(gone) => {
                expect(gone.left().and_then(|p| p.resource_version()));
                info!(pvc = %name, "deleted the removed node's volume");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting PVC {name}"),
                    source,
                });
            }
        }
    } else {
        let patch = json!({"metadata": {"annotations": {
            labels::DECOMMISSIONED_ANNOTATION: now
        }}});
        let marked = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .context(|| format!("marking PVC {name} as decommissioned"))?;
        expect(marked.resource_version());
    }
    Ok(())
}

/// Ask for a larger volume on every given PVC smaller than `size`. Growth needs a StorageClass
/// that allows expansion; a refusal is reported and never stops the reconcile.
pub async fn grow(
    api: &Api<PersistentVolumeClaim>,
    claims: &[PersistentVolumeClaim],
    size: &str,
    writes: &WriteCounter,
) {
    let Ok(wanted) = parse_quantity(size) else {
        return;
    };
    for pvc in claims {
        let current = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| parse_quantity(&q.0).ok());
        if current.is_some_and(|c| c >= wanted) {
            continue;
        }
        let name = pvc.name_any();
        writes.record("PersistentVolumeClaim");
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(grown) => writes.expectations.expect(
                "PersistentVolumeClaim",
                &grown.namespace().unwrap_or_default(),
                &name,
                pvc.resource_version(),
                grown.resource_version(),
            ),
            Err(e) => warn!(pvc = %name, error = %e, "volume expansion refused"),
        }
    }
}

/// Bytes of a Kubernetes quantity with a binary or decimal suffix (enough for volume sizes).
pub(crate) fn parse_quantity(q: &str) -> Result<u128, ()> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: u128 = number.parse().map_err(|_| ())?;
    let factor: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(()),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert!(parse_quantity("2Gi") > parse_quantity("1500Mi"));
        assert_eq!(parse_quantity("10G"), Ok(10_000_000_000));
        assert!(parse_quantity("1.5Gi").is_err());
    }
}
