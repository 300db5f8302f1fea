//! The Helm chart as a platform team installs it, on the local real cluster: two operator pods
//! (the default), both Ready, one holding the Lease; deleting the leader's pod hands the lease
//! to the other at once (it frees the lease on SIGTERM), and the new leader acts with the
//! chart's own permissions (its caches list and watch, it writes a cluster's status).
//!
//! Namespace-scoped (`watchNamespace`), so it leaves nothing cluster-wide behind and runs beside
//! the other tests.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use stateward_operator::api::cassandra::CassandraCluster;

mod common;
use common::{install_crd, test_namespace, wait_for};

const RELEASE: &str = "sw";

fn helm(cluster: &stateward_e2e::Cluster, args: &[&str]) -> anyhow::Result<String> {
    let helm = stateward_e2e::components::helm().binary(cluster.layout(), "helm");
    let out = Command::new(&helm)
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(args)
        .output()
        .with_context(|| format!("run {}", helm.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "helm {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The holder of the release's Lease (the pod that leads), if any.
async fn holder(leases: &Api<Lease>) -> Option<String> {
    let list = leases.list(&ListParams::default()).await.ok()?;
    let lease = list.items.into_iter().find(|l| {
        l.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.ends_with("-leader"))
    })?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// The names of the operator's pods that are Ready and not terminating.
async fn ready_operator_pods(pods: &Api<Pod>) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return vec![];
    };
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_runs_two_replicas_and_hands_over_the_lease() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "chart").await?;
    let ns = space.name.clone();
    let chart = cluster.layout().repo().join("charts/stateward");
    let watch = format!("watchNamespace={ns}");
    let installed = helm(
        &cluster,
        &[
            "install",
            RELEASE,
            &chart.display().to_string(),
            "--namespace",
            &ns,
            "--set",
            &watch,
            "--set",
            "image.repository=stateward.local/operator,image.tag=dev,image.pullPolicy=Never",
            "--set",
            "pilot.image.repository=stateward.local/pilot,pilot.image.tag=dev",
            "--wait",
            "--timeout=3m",
        ],
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let result = async {
        installed?;
        // --wait: both replicas Ready, the standby included.
        let ready = ready_operator_pods(&pods).await;
        assert_eq!(ready.len(), 2, "two Ready operator pods: {ready:?}");
        let leader = wait_for("a leader", Duration::from_secs(30), || holder(&leases)).await?;
        assert!(ready.contains(&leader), "{leader} leads, one of {ready:?}");
        let standby = ready
            .iter()
            .find(|p| **p != leader)
            .cloned()
            .context("standby")?;
        let log = cluster.kubectl(&["logs", "-n", &ns, &standby])?;
        assert!(log.contains("standby: another replica leads"), "{log}");

        // --- the leader's pod deleted (SIGTERM): it frees the lease, and another pod (the
        // standby, or the Deployment's replacement if it looks first) leads at once ---
        let deleted = Instant::now();
        cluster.kubectl(&["delete", "pod", "-n", &ns, &leader, "--wait=false"])?;
        let next = wait_for("another pod leading", Duration::from_secs(10), || async {
            holder(&leases).await.filter(|h| *h != leader)
        })
        .await?;
        eprintln!(
            "lease handed from {leader} to {next} (standby: {standby}) {:.1} s after the pod's deletion",
            deleted.elapsed().as_secs_f64()
        );
        // Within 10 s: the lease was freed (left to expire it would hold for 15 s).

        // --- the new leader acts with the chart's permissions ---
        let manifest = format!(
            "apiVersion: stateward.io/v1alpha1\nkind: CassandraCluster\nmetadata:\n  \
             name: idle\n  namespace: {ns}\nspec:\n  version: \"5.0.9\"\n  replicas: 1\n  \
             paused: true\n  nodePools:\n    - name: main\n      storage:\n        size: 1Gi\n"
        );
        cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
        let clusters: Api<CassandraCluster> = Api::namespaced(client.clone(), &ns);
        wait_for("the cluster's status", Duration::from_secs(60), || async {
            let status = clusters.get("idle").await.ok()?.status?;
            (status.observed_generation == Some(1)).then_some(())
        })
        .await?;
        // The Deployment replaces the deleted pod: two Ready again, the new one a standby.
        wait_for(
            "two Ready replicas again",
            Duration::from_secs(120),
            || async { (ready_operator_pods(&pods).await.len() == 2).then_some(()) },
        )
        .await?;
        assert_eq!(holder(&leases).await, Some(next));
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        let _ = cluster
            .kubectl(&["get", "pods,events", "-n", &ns, "-o", "wide"])
            .map(|t| eprintln!("{t}"));
    }
    let _ = helm(&cluster, &["uninstall", RELEASE, "--namespace", &ns]);
    result
}
