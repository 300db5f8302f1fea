//! Where a cluster's credentials live, on the local real cluster: the CA's key and the
//! operator's client key only in the operator's credentials namespace, the app namespace with
//! nothing but the CA certificate and the pilots' leaf; a corrupted CA Secret is a Degraded
//! condition naming it, never a silent replacement; the credentials of a deleted cluster are
//! swept; a CA an earlier version kept in the app namespace is moved out of it, the same CA. The
//! cluster's images do not exist (its pods never start): the subject here is the
//! operator's handling of Secrets, which needs no running database.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use stateward_operator::api::cassandra::CassandraCluster;

mod common;
use common::operator::{CREDENTIALS_NAMESPACE, OperatorProcess};
use common::{install_crd, test_namespace, wait_for};

const CLUSTER: &str = "creds";

fn manifest(ns: &str) -> String {
    format!(
        r#"apiVersion: stateward.io/v1alpha1
kind: CassandraCluster
metadata:
  name: {CLUSTER}
  namespace: {ns}
spec:
  version: "5.0.9"
  replicas: 1
  paused: true
  image: stateward.local/absent:0
  pilotImage: stateward.local/absent-pilot:0
  nodePools:
    - name: main
      storage:
        size: 1Gi
"#
    )
}

async fn degraded(api: &Api<CassandraCluster>) -> Option<(String, String)> {
    let status = api.get(CLUSTER).await.ok()?.status?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")?;
    Some((c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_out_of_the_app_namespace() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "op-creds").await?;
    let ns = space.name.clone();
    let log = space.operator_log.clone();
    // Paused, nothing is created: the place to plant what an earlier version left in the app
    // namespace (the CA and the operator's client key, owned by the cluster).
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest(&ns))?;
    let api: Api<CassandraCluster> = Api::namespaced(client.clone(), &ns);
    let uid = api.get(CLUSTER).await?.metadata.uid.unwrap_or_default();
    let legacy = stateward_operator::tls::new_ca(CLUSTER)?;
    let app: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, data) in [
        (
            format!("{CLUSTER}-ca"),
            [("ca.crt", &legacy.cert_pem), ("ca.key", &legacy.key_pem)],
        ),
        (
            format!("{CLUSTER}-operator-client"),
            [("ca.crt", &legacy.cert_pem), ("tls.key", &legacy.key_pem)],
        ),
    ] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": { "app.kubernetes.io/managed-by": "stateward" },
                "ownerReferences": [{
                    "apiVersion": "stateward.io/v1alpha1",
                    "kind": "CassandraCluster",
                    "name": CLUSTER,
                    "uid": uid,
                }],
            },
            "stringData": { data[0].0: data[0].1, data[1].0: data[1].1 },
        }))?;
        app.create(&PostParams::default(), &secret).await?;
    }
    let mut operator = OperatorProcess::start(&cluster, &ns, &log)?;
    let unpause = serde_json::json!({ "spec": { "paused": false } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&unpause))
        .await?;
    let credentials: Api<Secret> = Api::namespaced(client.clone(), CREDENTIALS_NAMESPACE);
    let ca_name = format!("stateward-ca-{uid}");
    let client_name = format!("stateward-operator-client-{uid}");

    // --- issued: the keys that open the pilots live in the credentials namespace only ---
    wait_for("the cluster's Secrets", Duration::from_secs(60), || async {
        app.get_opt(&format!("{CLUSTER}-pilot-tls")).await.ok()??;
        credentials.get_opt(&client_name).await.ok()??;
        credentials.get_opt(&ca_name).await.ok()?
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(30)))?;
    for secret in app.list(&Default::default()).await? {
        let keys: Vec<&String> = secret.data.iter().flat_map(|d| d.keys()).collect();
        println!(
            "app namespace: Secret {:?} holds {keys:?}",
            secret.metadata.name
        );
        assert!(
            !keys.iter().any(|k| k.as_str() == "ca.key"),
            "no CA key in the app namespace: {:?}",
            secret.metadata.name
        );
    }
    for name in [
        format!("{CLUSTER}-ca"),
        format!("{CLUSTER}-operator-client"),
    ] {
        assert!(app.get_opt(&name).await?.is_none(), "{name} moved out");
    }
    let moved = credentials.get(&ca_name).await?;
    let moved_cert = moved.data.as_ref().and_then(|d| d.get("ca.crt")).cloned();
    assert_eq!(
        moved_cert,
        Some(ByteString(legacy.cert_pem.clone().into_bytes())),
        "the same CA, moved: the pilots keep trusting it"
    );

    // --- a corrupted CA: Degraded with the Secret's name, and the Secret left as it is ---
    let original = credentials.get(&ca_name).await?;
    let corrupted = serde_json::json!({ "data": { "ca.key": ByteString(b"garbage".to_vec()) } });
    credentials
        .patch(&ca_name, &PatchParams::default(), &Patch::Merge(&corrupted))
        .await?;
    let (reason, message) = wait_for("Degraded: UnusableCa", Duration::from_secs(90), || async {
        degraded(&api).await.filter(|(r, _)| r == "UnusableCa")
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(30)))?;
    println!("Degraded {reason}: {message}");
    assert!(message.contains(&ca_name), "names the Secret: {message}");
    let kept = credentials.get(&ca_name).await?;
    let key = kept.data.as_ref().and_then(|d| d.get("ca.key")).cloned();
    assert_eq!(key, Some(ByteString(b"garbage".to_vec())), "never replaced");

    // --- mended: the condition clears ---
    let restore = serde_json::json!({ "data": original.data });
    credentials
        .patch(&ca_name, &PatchParams::default(), &Patch::Merge(&restore))
        .await?;
    let mended = |fault: &'static str| {
        let api = api.clone();
        async move {
            let status = api.get(CLUSTER).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason != fault)
                .then_some(())
        }
    };
    wait_for(
        "Degraded no longer UnusableCa",
        Duration::from_secs(90),
        || mended("UnusableCa"),
    )
    .await?;

    // --- a missing CA while the pilots trust it: Degraded, and no new CA made ---
    credentials.delete(&ca_name, &Default::default()).await?;
    let (reason, message) = wait_for("Degraded: MissingCa", Duration::from_secs(90), || async {
        degraded(&api).await.filter(|(r, _)| r == "MissingCa")
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(30)))?;
    println!("Degraded {reason}: {message}");
    assert!(credentials.get_opt(&ca_name).await?.is_none(), "no new CA");
    let mut restored = original.clone();
    restored.metadata = kube::api::ObjectMeta {
        name: original.metadata.name.clone(),
        labels: original.metadata.labels.clone(),
        ..Default::default()
    };
    credentials
        .create(&PostParams::default(), &restored)
        .await?;
    wait_for(
        "Degraded no longer MissingCa",
        Duration::from_secs(90),
        || mended("MissingCa"),
    )
    .await?;

    // --- deleted: its credentials are swept (no owner reference crosses namespaces) ---
    cluster.kubectl(&["delete", "cass", CLUSTER, "-n", &ns, "--wait=true"])?;
    wait_for("the credentials swept", Duration::from_secs(60), || async {
        let ca = credentials.get_opt(&ca_name).await.ok()?;
        let client = credentials.get_opt(&client_name).await.ok()?;
        (ca.is_none() && client.is_none()).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(30)))?;
    println!("credentials of the deleted cluster swept from {CREDENTIALS_NAMESPACE}");
    operator.kill()?;
    Ok(())
}
