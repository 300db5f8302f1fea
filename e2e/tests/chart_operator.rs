//! The Helm chart as a platform team installs it, on the local real cluster: two operator pods
//! (the default), both Ready, one holding the Lease; deleting the leader's pod hands the lease
//! to the other at once (it frees the lease on SIGTERM), and the new leader acts with the
//! chart's own permissions (its caches list and watch, it writes a cluster's status).
//!
//! With the chart's ServiceMonitor and PodMonitor on, each is checked against prometheus-operator's
//! own CRDs (generated from its pinned API types) and resolved the way prometheus-operator
//! resolves it, down to the endpoints it would scrape, which must serve the metrics.
//!
//! Namespace-scoped (`watchNamespace`), so it runs beside the other tests. The only thing it
//! leaves cluster-wide is the monitoring.coreos.com CRDs, which no controller here acts on.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::Value;
use stateward_operator::api::cassandra::CassandraCluster;

mod common;
use common::operator::metrics_at;
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

/// Installs prometheus-operator's ServiceMonitor and PodMonitor CRDs and waits until the API
/// serves them (helm reads its capabilities from discovery).
fn install_monitoring_crds(cluster: &stateward_e2e::Cluster) -> anyhow::Result<()> {
    let dir = stateward_e2e::components::monitoring_crds(cluster.layout())?;
    for kind in ["servicemonitors", "podmonitors"] {
        let file = dir.join(format!("monitoring.coreos.com_{kind}.yaml"));
        let file = file.display().to_string();
        cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &file])?;
        let crd = format!("crd/{kind}.monitoring.coreos.com");
        cluster.kubectl(&["wait", "--for=condition=Established", &crd, "--timeout=60s"])?;
    }
    Ok(())
}

/// A monitor's `selector` (matchLabels and `Exists` expressions, all the chart uses) as a
/// label-selector string.
fn selector_string(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(expression["operator"], "Exists", "{expression}");
        terms.push(expression["key"].as_str().unwrap_or_default().to_string());
    }
    terms.join(",")
}

fn monitor(
    cluster: &stateward_e2e::Cluster,
    kind: &str,
    ns: &str,
    name: &str,
) -> anyhow::Result<Value> {
    let json = cluster.kubectl(&["get", kind, name, "-n", ns, "-o", "json"])?;
    serde_json::from_str(&json).with_context(|| format!("parse {kind} {name}"))
}

/// What a monitor selects: the port name of its first endpoint (under `endpoints_key`), its
/// label selector, and the namespaces it looks in.
fn monitor_scope(
    monitor: &Value,
    endpoints_key: &str,
) -> anyhow::Result<(String, String, Vec<String>)> {
    let spec = &monitor["spec"];
    let port_name = spec[endpoints_key][0]["port"]
        .as_str()
        .context("endpoint port")?
        .to_string();
    let namespaces = spec["namespaceSelector"]["matchNames"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ns| ns.as_str().map(str::to_string).context("namespace"))
        .collect::<anyhow::Result<_>>()?;
    Ok((port_name, selector_string(&spec["selector"]), namespaces))
}

/// The `ip:port` targets of a ServiceMonitor's first endpoint, found as prometheus-operator
/// finds them: Services in its namespaces matching its selector, then their EndpointSlices'
/// ready addresses on the Service port of that name.
async fn service_monitor_targets(
    client: &kube::Client,
    monitor: &Value,
) -> anyhow::Result<Vec<(String, u16)>> {
    let (port_name, selector, namespaces) = monitor_scope(monitor, "endpoints")?;
    let port_name = port_name.as_str();
    let mut targets = vec![];
    for ns in &namespaces {
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        for service in services
            .list(&ListParams::default().labels(&selector))
            .await?
        {
            let name = service.metadata.name.unwrap_or_default();
            let by_service = format!("kubernetes.io/service-name={name}");
            for slice in slices
                .list(&ListParams::default().labels(&by_service))
                .await?
            {
                let port = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(port_name));
                let Some(port) = port.and_then(|p| p.port) else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                    if ready {
                        targets.extend(endpoint.addresses.iter().map(|a| (a.clone(), port as u16)));
                    }
                }
            }
        }
    }
    Ok(targets)
}

/// The `ip:port` targets of a PodMonitor's first endpoint: running pods in its namespaces
/// matching its selector, on the container port of that name.
async fn pod_monitor_targets(
    client: &kube::Client,
    monitor: &Value,
) -> anyhow::Result<Vec<(String, u16)>> {
    let (port_name, selector, namespaces) = monitor_scope(monitor, "podMetricsEndpoints")?;
    let port_name = port_name.as_str();
    let mut targets = vec![];
    for ns in &namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default().labels(&selector)).await? {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            // Init containers too: Prometheus's pod discovery lists their ports (with
            // __meta_kubernetes_pod_container_init), and the pilot is a native sidecar.
            let ports = pod.spec.iter().flat_map(|s| {
                let init = s.init_containers.iter().flatten();
                s.containers
                    .iter()
                    .chain(init)
                    .flat_map(|c| c.ports.iter().flatten())
            });
            let port = ports.clone().find(|p| p.name.as_deref() == Some(port_name));
            if let (Some(ip), Some(port)) = (ip, port) {
                targets.push((ip, port.container_port as u16));
            }
        }
    }
    Ok(targets)
}

/// Every target serves metrics containing `family`; returns how many answered.
async fn scrape_all(targets: &[(String, u16)], family: &str) -> Option<usize> {
    if targets.is_empty() {
        return None;
    }
    for (host, port) in targets {
        let text = metrics_at(host, *port).await.ok()?;
        if !text.contains(family) {
            return None;
        }
    }
    Some(targets.len())
}

/// The chart's monitors, as prometheus-operator would read them: the ServiceMonitor reaches
/// both operator replicas' /metrics, the PodMonitor the pilot of a running node.
async fn check_monitors(
    cluster: &stateward_e2e::Cluster,
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<()> {
    let service_monitor = monitor(cluster, "servicemonitor", ns, "sw-stateward")?;
    let endpoint = &service_monitor["spec"]["endpoints"][0];
    // Read back from the API: a field the CRD's schema did not know would have been pruned.
    assert_eq!(endpoint["interval"], "15s", "{service_monitor}");
    assert_eq!(endpoint["path"], "/metrics", "{service_monitor}");
    let scraped = wait_for(
        "the ServiceMonitor's targets serving metrics",
        Duration::from_secs(30),
        || async {
            let targets = service_monitor_targets(client, &service_monitor)
                .await
                .ok()?;
            scrape_all(&targets, "stateward_leader")
                .await
                .filter(|n| *n == 2)
        },
    )
    .await?;
    eprintln!("ServiceMonitor: {scraped} operator replicas scraped");

    // A running node for the PodMonitor: the paused cluster resumed (its pilot serves metrics
    // as soon as it runs, before Cassandra is up).
    let clusters: Api<CassandraCluster> = Api::namespaced(client.clone(), ns);
    let resume = serde_json::json!({"spec": {"paused": false}});
    clusters
        .patch("idle", &PatchParams::default(), &Patch::Merge(&resume))
        .await?;
    let pod_monitor = monitor(cluster, "podmonitor", ns, "sw-stateward-pilots")?;
    assert_eq!(
        pod_monitor["spec"]["namespaceSelector"]["matchNames"][0], ns,
        "{pod_monitor}"
    );
    let started = Instant::now();
    let scraped = wait_for(
        "the PodMonitor's targets serving metrics",
        Duration::from_secs(180),
        || async {
            let targets = pod_monitor_targets(client, &pod_monitor).await.ok()?;
            scrape_all(&targets, "stateward_pilot_").await
        },
    )
    .await?;
    eprintln!(
        "PodMonitor: {scraped} pilot scraped {:.1} s after the cluster resumed",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_runs_two_replicas_and_hands_over_the_lease() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    install_monitoring_crds(&cluster)?;
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
            "--set",
            &format!(
                "cassandra.image.repository={}",
                stateward_e2e::images::CASSANDRA_REPOSITORY
            ),
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.interval=15s",
            "--set",
            "metrics.podMonitor.enabled=true",
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

        // --- the monitors reach what they should scrape ---
        check_monitors(&cluster, &client, &ns).await?;
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
