//! The CassandraCluster API and operator core on the local real cluster: CRD validation at
//! `kubectl apply`, the shape of what the operator builds, propagation of edits, `kubectl scale`,
//! and a steady resync that costs no write.
//!
//! The operator runs in this test process (the same library the binary runs), so the test can
//! read its write counter.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use stateward_e2e::Cluster;
use stateward_operator::api::cassandra::CassandraCluster;
use stateward_operator::apply::WriteCounter;
use stateward_operator::config::OperatorConfig;
use stateward_operator::context::{Context, NoPilotReports};
use stateward_operator::controller::Controllers;
use stateward_operator::platform::requests::counted_client;

mod common;
use common::{NamespaceGuard, install_crd, wait_for};

struct Harness {
    _namespace: NamespaceGuard,
    cluster: Cluster,
    client: Client,
    ns: String,
    writes: Arc<WriteCounter>,
    ctx: Arc<Context>,
    operator: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let cluster = stateward_e2e::ensure_up()?;
        let client = cluster.kube_client().await?;
        install_crd(&client).await?;
        let ns = format!("{name}-{}", std::process::id());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(ns.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;

        let config = OperatorConfig {
            cassandra_image_repository: "stateward.local/cassandra".into(),
            pilot_image: "stateward.local/pilot:dev".into(),
            // Where the credentials live is not this test's subject (operator_credentials).
            credentials_namespace: ns.clone(),
            ..OperatorConfig::default()
        };
        // The operator's client counts its requests: a steady reconcile must make none.
        let (operator_client, requests) = counted_client(cluster.kube_config().await?)?;
        let (ctx, feeds) = Context::new(
            operator_client,
            requests,
            config,
            Arc::new(NoPilotReports),
            // A short resync so the test sees many no-op reconciles.
            Duration::from_secs(1),
            Some(&ns),
        );
        let ctx = Arc::new(ctx);
        let writes = ctx.writes.clone();
        let operator = tokio::spawn(stateward_operator::controller::run(
            ctx.clone(),
            feeds,
            Some(ns.clone()),
            Controllers {
                cassandra: true,
                elasticsearch: false,
                pilot_changes: None,
                shutdown: stateward_operator::shutdown::Shutdown::never(),
            },
        ));
        Ok(Harness {
            _namespace: NamespaceGuard {
                cluster: cluster.clone(),
                ns: ns.clone(),
            },
            cluster,
            client,
            ns,
            writes,
            ctx,
            operator,
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn stop(self) {
        self.operator.abort();
    }
}

fn cluster_yaml(name: &str, replicas: i32) -> String {
    format!(
        r#"apiVersion: stateward.io/v1alpha1
kind: CassandraCluster
metadata:
  name: {name}
spec:
  version: "5.0.9"
  replicas: {replicas}
  nodePools:
  - name: main
    storage:
      size: 1Gi
    resources:
      requests: {{cpu: 100m, memory: 1Gi}}
      limits: {{memory: 1Gi}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_builds_the_cluster_and_a_steady_resync_writes_nothing() -> anyhow::Result<()> {
    let h = Harness::start("sw-op").await?;
    let result = async {
        // --- a 3-node cluster: shape of every owned object ---
        h.cluster
            .kubectl_stdin(&["apply", "-n", &h.ns, "-f", "-"], &cluster_yaml("demo", 3))?;
        let statefulsets: Api<StatefulSet> = h.api();
        let sts = wait_for("StatefulSet demo-main", Duration::from_secs(60), || async {
            statefulsets.get_opt("demo-main").await.ok().flatten()
        })
        .await?;
        let spec = sts.spec.clone().expect("sts spec");
        assert_eq!(spec.service_name.as_deref(), Some("demo-nodes"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        assert_eq!(spec.volume_claim_templates.as_ref().map(Vec::len), Some(1));
        let pod = spec.template.spec.clone().expect("pod spec");
        assert_eq!(pod.init_containers.as_ref().expect("pilot")[0].restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod.containers[0].name, "cassandra");
        assert!(spec.template.metadata.as_ref().and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.contains_key("stateward.io/config-hash")));
        assert_eq!(sts.metadata.owner_references.as_ref().map(|o| o[0].kind.as_str()), Some("CassandraCluster"));

        let services: Api<Service> = h.api();
        let headless = services.get("demo-nodes").await?;
        let hs = headless.spec.expect("svc spec");
        assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
        assert_eq!(hs.publish_not_ready_addresses, Some(true));
        let client_svc = services.get("demo").await?.spec.expect("svc spec");
        assert!(client_svc.ports.expect("ports").iter().any(|p| p.port == 9042));
        let pdb = h.api::<PodDisruptionBudget>().get("demo").await?;
        assert_eq!(
            pdb.spec.and_then(|s| s.max_unavailable),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        h.api::<ConfigMap>().get("demo-config").await?;
        let uid = Api::<CassandraCluster>::namespaced(h.client.clone(), &h.ns)
            .get("demo")
            .await?
            .metadata
            .uid
            .unwrap_or_default();
        // This test's credentials namespace is its own namespace (see Harness::start).
        for secret in [
            format!("stateward-ca-{uid}"),
            "demo-pilot-tls".to_string(),
            format!("stateward-operator-client-{uid}"),
        ] {
            h.api::<Secret>().get(&secret).await?;
        }

        // One node at a time: the first node is not verified ready, so no second one yet.
        let clusters: Api<CassandraCluster> = h.api();
        let status = wait_for("status with desired 3", Duration::from_secs(60), || async {
            let c = clusters.get("demo").await.ok()?;
            let s = c.status?;
            (s.pools.first()?.desired == 3 && s.current_operation.is_some()).then_some(s)
        })
        .await?;
        wait_for("the first node added", Duration::from_secs(60), || async {
            let sts = statefulsets.get("demo-main").await.ok()?;
            (sts.spec?.replicas? == 1).then_some(())
        })
        .await?;
        // The first node is not verified ready yet: no second node may follow.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let sts = statefulsets.get("demo-main").await?;
        assert_eq!(sts.spec.and_then(|s| s.replicas), Some(1), "exactly one node added first");
        assert!(status.conditions.iter().any(|c| c.type_ == "Progressing" && c.status == "True"));
        println!("status while the first node starts: {:?}", status.current_operation);

        // --- editing resources propagates to the pod template ---
        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"nodePools": [{"name": "main", "storage": {"size": "1Gi"},
                    "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}}}]}})),
            )
            .await?;
        wait_for("resources in the StatefulSet", Duration::from_secs(60), || async {
            let sts = statefulsets.get("demo-main").await.ok()?;
            let limits = sts.spec?.template.spec?.containers[0].resources.clone()?.limits?;
            (limits.get("memory")?.0 == "1536Mi").then_some(())
        })
        .await?;

        // --- growing storage never wedges the operator (volumeClaimTemplates are immutable;
        // the PVCs are grown instead, which local-path refuses without stopping anything) ---
        let grown = clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"nodePools": [{"name": "main", "storage": {"size": "2Gi"}}]}})),
            )
            .await?;
        let generation = grown.metadata.generation;
        wait_for("status of the grown spec", Duration::from_secs(60), || async {
            let c = clusters.get("demo").await.ok()?;
            (c.status?.observed_generation == generation).then_some(())
        })
        .await?;

        // --- kubectl scale goes through the scale subresource ---
        h.cluster.kubectl(&["scale", "-n", &h.ns, "cass/demo", "--replicas=5"])?;
        wait_for("desired 5 in status", Duration::from_secs(60), || async {
            let s = clusters.get("demo").await.ok()?.status?;
            (s.pools.first()?.desired == 5 && s.ready.as_deref()?.ends_with("/5")).then_some(())
        })
        .await?;
        let c = clusters.get("demo").await?;
        assert_eq!(c.spec.replicas, Some(5));

        // --- printer columns and explain ---
        let table = h.cluster.kubectl(&["get", "cass", "-n", &h.ns])?;
        println!("{table}");
        for column in ["READY", "VERSION", "PHASE", "AGE"] {
            assert!(table.contains(column), "missing column {column} in:\n{table}");
        }
        let explain = h.cluster.kubectl(&["explain", "cass.spec.nodePools"])?;
        assert!(explain.contains("Groups of identical nodes"), "{explain}");

        // --- a steady cluster (zero nodes) costs no write on resync ---
        h.cluster
            .kubectl_stdin(&["apply", "-n", &h.ns, "-f", "-"], &cluster_yaml("idle", 0))?;
        wait_for("idle cluster Ready", Duration::from_secs(60), || async {
            let s = clusters.get("idle").await.ok()?.status?;
            (s.phase.as_deref() == Some("Ready")).then_some(())
        })
        .await?;
        // Remove the busy cluster: its starting pod legitimately changes status.
        clusters.delete("demo", &DeleteParams::default()).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let reconciles_before = h.ctx.reconciles.load(std::sync::atomic::Ordering::Relaxed);
        let before = h.writes.total();
        let kinds_before = h.writes.by_kind();
        let requests_before = h.ctx.requests.snapshot();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = h.writes.total();
        println!("writes per kind before: {kinds_before:?}\nafter: {:?}", h.writes.by_kind());
        let reconciles = h.ctx.reconciles.load(std::sync::atomic::Ordering::Relaxed) - reconciles_before;
        println!("reconciles during 8 s: {reconciles}; writes: {}", after - before);
        assert!(reconciles >= 4, "the resyncs did not happen ({reconciles} reconciles)");
        assert_eq!(after, before, "a steady resync must not write");
        // Reads come from the caches: not one request (the watches' own streams aside).
        let requests: Vec<_> = h
            .ctx
            .requests
            .snapshot()
            .into_iter()
            .filter(|(key, n)| key.0 != "watch" && requests_before.get(key) != Some(n))
            .map(|((verb, resource), n)| {
                let was = requests_before.get(&(verb.clone(), resource.clone())).copied();
                (verb, resource, n - was.unwrap_or(0))
            })
            .collect();
        println!("API requests during the {reconciles} steady reconciles: {requests:?}");
        assert!(requests.is_empty(), "a steady reconcile made API requests: {requests:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    h.stop().await;
    result
}

/// A merge patch of the `edits` cluster that the API server must accept.
async fn accept(clusters: &Api<CassandraCluster>, patch: serde_json::Value) -> anyhow::Result<()> {
    clusters
        .patch("edits", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A merge patch of the `edits` cluster that the API server must reject with `expect`.
async fn assert_rejected(
    clusters: &Api<CassandraCluster>,
    what: &str,
    patch: serde_json::Value,
    expect: &str,
) -> anyhow::Result<()> {
    let err = clusters
        .patch("edits", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("{what} was accepted"))?;
    assert!(
        err.to_string().contains(expect),
        "{what}: expected {expect:?} in {err}"
    );
    println!("rejected {what}: {expect}");
    Ok(())
}

/// A spec change refused because of what the status shows. The status is the operator's to
/// write (here the cluster is paused, but it still reports), so the change is a dry run,
/// repeated until it ran against the status patched here rather than one rewritten meanwhile.
async fn refused_against_status(
    clusters: &Api<CassandraCluster>,
    status: serde_json::Value,
    spec: serde_json::Value,
    expect: &str,
) -> anyhow::Result<()> {
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    for _ in 0..5 {
        clusters
            .patch_status(
                "edits",
                &PatchParams::default(),
                &Patch::Merge(status.clone()),
            )
            .await?;
        match clusters
            .patch("edits", &dry_run, &Patch::Merge(spec.clone()))
            .await
        {
            Err(e) if e.to_string().contains(expect) => {
                println!("rejected against the status: {expect}");
                return Ok(());
            }
            Err(e) => anyhow::bail!("expected {expect:?}, got: {e}"),
            Ok(_) => continue,
        }
    }
    anyhow::bail!("never refused ({expect}): {spec}")
}

/// Every invalid example under e2e/testdata/invalid is rejected by `kubectl apply`, with the
/// message its first line promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_examples_are_rejected_at_apply_time() -> anyhow::Result<()> {
    let h = Harness::start("sw-invalid").await?;
    let result = async {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/invalid");
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        assert!(files.len() >= 8, "corpus too small");
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .ok_or_else(|| anyhow::anyhow!("{} lacks a '# expect:' line", file.display()))?;
            let err = match h
                .cluster
                .kubectl_stdin(&["apply", "-n", &h.ns, "-f", "-"], &text)
            {
                Ok(out) => anyhow::bail!("{} was accepted: {out}", file.display()),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(expect),
                "{}: expected {expect:?} in:\n{err}",
                file.display()
            );
            println!(
                "rejected {}: {expect}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
        }

        // Transition rules: changes that are invalid only relative to the stored object.
        h.cluster.kubectl_stdin(
            &["apply", "-n", &h.ns, "-f", "-"],
            &cluster_yaml("edits", 0),
        )?;
        let clusters: Api<CassandraCluster> = h.api();
        let pool = |extra: serde_json::Value| {
            let mut p = json!({"name": "main", "storage": {"size": "1Gi"}});
            if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    p.insert(k.clone(), v.clone());
                }
            }
            json!({"spec": {"nodePools": [p]}})
        };
        let cases = [
            (
                "shrinking storage",
                pool(json!({"storage": {"size": "512Mi"}})),
                "storage.size cannot shrink",
            ),
            (
                "changing the rack",
                pool(json!({"rack": "r2"})),
                "the rack of an existing node pool cannot change",
            ),
            (
                "changing the storage class",
                pool(json!({"storage": {"size": "1Gi", "storageClassName": "other"}})),
                "storageClassName of an existing node pool cannot change",
            ),
            (
                "removing the last pool",
                json!({"spec": {"nodePools": []}}),
                "should have at least 1 items",
            ),
        ];
        for (what, patch, expect) in cases {
            assert_rejected(&clusters, what, patch, expect).await?;
        }

        // Downgrade: compared against the version the cluster runs (status.version).
        accept(&clusters, json!({"spec": {"paused": true}})).await?;
        clusters
            .patch_status(
                "edits",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"version": "5.0.9"}})),
            )
            .await?;
        assert_rejected(
            &clusters,
            "downgrade 5.0.9 -> 5.0.8",
            json!({"spec": {"version": "5.0.8"}}),
            "Cassandra does not support downgrades",
        )
        .await?;

        // A pool is removed only once scaled to 0 (paused: nothing is acted on meanwhile).
        let other_pool = json!({"spec": {"replicas": null, "nodePools": [
            {"name": "other", "storage": {"size": "1Gi"}}
        ]}});
        accept(&clusters, json!({"spec": {"replicas": 2}})).await?;
        const POOL_RULE: &str = "a node pool can be removed only after its nodes have left";
        assert_rejected(
            &clusters,
            "removing a pool that still has nodes",
            other_pool.clone(),
            POOL_RULE,
        )
        .await?;
        accept(&clusters, json!({"spec": {"replicas": 0}})).await?;
        // Scaled to 0 in the spec but a pod still shown in status.pools: still refused.
        refused_against_status(
            &clusters,
            json!({"status": {"pools": [
                {"name": "main", "desired": 0, "replicas": 1, "readyReplicas": 1}
            ]}}),
            other_pool.clone(),
            POOL_RULE,
        )
        .await?;
        println!("rejected removing a pool whose status still shows a node: {POOL_RULE}");
        clusters
            .patch_status(
                "edits",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"pools": [
                    {"name": "main", "desired": 0, "replicas": 0, "readyReplicas": 0}
                ]}})),
            )
            .await?;
        accept(&clusters, other_pool).await?;
        println!("accepted removing a pool with no node left");

        // An upgrade in flight only moves forward, even to a version still >= status.version.
        refused_against_status(
            &clusters,
            json!({"status": {"version": "5.0.8", "operation": {
                "kind": "Upgrade", "phase": "Draining", "node": "edits-other-0", "pool": "other",
                "ordinal": 0, "actionId": "drain-edits-other-0-r1", "generation": 1,
                "startedAt": "2026-01-01T00:00:00Z", "targetVersion": "5.0.9"
            }}}),
            json!({"spec": {"version": "5.0.8"}}),
            "spec.version cannot go back while an upgrade runs",
        )
        .await?;

        Ok::<_, anyhow::Error>(())
    }
    .await;
    h.stop().await;
    result
}
