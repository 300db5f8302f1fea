//! The planner owns every restart: rolling restarts and a rolling upgrade of a real three-node
//! Cassandra 5.0 cluster on the local real Kubernetes, driven by the operator binary (a separate
//! process, so the test can SIGKILL it in the middle of a restart), under a QUORUM write load.
//!
//! The StatefulSets use `updateStrategy: OnDelete`: a pod template change becomes a `Restart` (an
//! `Upgrade` when `spec.version` changes) carried out one node at a time: the pilot drains the
//! node (verified DRAINED), the operator deletes the pod, the new pod's pilot reports Up/Normal
//! at the new revision (and version), then the next node.
//!
//! One scenario, in order, on one cluster:
//! 1. three nodes at `UPGRADE_FROM_VERSION` (5.0.8); keyspace `app` with RF 3;
//! 2. a writer inserts rows at QUORUM without pause, a sampler watches pod readiness, UIDs, the
//!    nodes' versions and `status.operation`, through steps 3 and 4;
//! 3. a `cassandraYaml` change: once the first node rejoins the operator is SIGKILLed, a new one
//!    resumes the same operation; one history record per node, every pod replaced once and at
//!    the StatefulSet's update revision, never two pods unready at once;
//! 4. `spec.version` 5.0.9: an upgrade, one node at a time, every node reports 5.0.9;
//! 5. every acknowledged write reads back at QUORUM;
//! 6. a `cassandraYaml` change made while a node decommissions waits for the decommission's
//!    record, then restarts the two remaining nodes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};
use stateward_e2e::Cluster;
use stateward_e2e::cassandra_dist::{CASSANDRA_VERSION, UPGRADE_FROM_VERSION};
use stateward_e2e::images::{CASSANDRA_REPOSITORY, cassandra_image};
use stateward_operator::api::cassandra::CassandraCluster;

mod common;
use common::cql::{cql_session, quorum};
use common::operator::{OperatorProcess, log_tail};
use common::{install_crd, test_namespace, wait_for};

const CLUSTER: &str = "ring";
const STATEFULSET: &str = "ring-main";
const NODES: [&str; 3] = ["ring-main-0", "ring-main-1", "ring-main-2"];
const REVISION_LABEL: &str = "controller-revision-hash";

fn cluster_manifest(version: &str) -> String {
    format!(
        r#"apiVersion: stateward.io/v1alpha1
kind: CassandraCluster
metadata:
  name: {CLUSTER}
spec:
  version: "{version}"
  replicas: 3
  nodePools:
    - name: main
      storage:
        size: 1Gi
      resources:
        requests:
          cpu: 100m
          memory: 1Gi
        limits:
          memory: 1Gi
"#
    )
}

/// What the test works with.
struct Ctx {
    cluster: Cluster,
    client: Client,
    ns: String,
    /// The CassandraCluster read as JSON, whatever the status' Rust types are named.
    api: Api<DynamicObject>,
    log: PathBuf,
    samples: Arc<Mutex<Samples>>,
}

impl Ctx {
    async fn object(&self) -> Option<DynamicObject> {
        self.api.get(CLUSTER).await.ok()
    }

    async fn status(&self) -> Option<Value> {
        self.object().await?.data.get("status").cloned()
    }

    async fn patch(&self, patch: Value) -> anyhow::Result<i64> {
        let obj = self
            .api
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("patch the CassandraCluster with {patch}"))?;
        obj.metadata
            .generation
            .context("the patched CassandraCluster has no generation")
    }

    async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("stateward.io/cluster={CLUSTER}")))
            .await?
            .items)
    }

    /// UID of every pod that exists and is not terminating, by name.
    async fn pod_uids(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(self
            .pods()
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
            .collect())
    }

    async fn statefulset(&self) -> anyhow::Result<StatefulSet> {
        Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns)
            .get(STATEFULSET)
            .await
            .with_context(|| format!("get StatefulSet {STATEFULSET}"))
    }

    /// Every pod's revision label equals the StatefulSet's update revision.
    async fn assert_pods_at_update_revision(&self, expected_pods: usize) -> anyhow::Result<String> {
        let sts = self.statefulset().await?;
        let update = sts
            .status
            .as_ref()
            .and_then(|s| s.update_revision.clone())
            .context("StatefulSet has no status.updateRevision")?;
        let pods = self.pods().await?;
        let revisions: BTreeMap<String, String> = pods
            .iter()
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                let rev = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REVISION_LABEL))
                    .cloned()
                    .unwrap_or_default();
                Some((name, rev))
            })
            .collect();
        ensure!(
            revisions.len() == expected_pods && revisions.values().all(|r| *r == update),
            "pods {revisions:?}, expected {expected_pods} pods all at updateRevision {update}"
        );
        Ok(update)
    }

    /// Events of `reason` on the cluster's objects, their notes/messages joined.
    fn events(&self, reason: &str) -> anyhow::Result<String> {
        self.cluster.kubectl(&[
            "get",
            "events",
            "-n",
            &self.ns,
            "--field-selector",
            &format!("reason={reason}"),
            "-o",
            "jsonpath={.items[*].note}{.items[*].message}",
        ])
    }

    /// What the cluster looks like now, for a failure message.
    async fn dump(&self) -> String {
        let mut out = String::new();
        match self.status().await {
            Some(s) => {
                for key in [
                    "phase",
                    "operation",
                    "currentOperation",
                    "nodes",
                    "history",
                    "conditions",
                ] {
                    out.push_str(&format!(
                        "status.{key}: {}\n",
                        serde_json::to_string_pretty(&s[key]).unwrap_or_default()
                    ));
                }
            }
            None => out.push_str("(no CassandraCluster status)\n"),
        }
        match self.pods().await {
            Ok(pods) => {
                for p in pods {
                    out.push_str(&format!(
                        "pod {} uid {} ready {} revision {} deleting {}\n",
                        p.metadata.name.clone().unwrap_or_default(),
                        p.metadata.uid.clone().unwrap_or_default(),
                        pod_ready(&p),
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(REVISION_LABEL))
                            .cloned()
                            .unwrap_or_default(),
                        p.metadata.deletion_timestamp.is_some(),
                    ));
                }
            }
            Err(err) => out.push_str(&format!("(pods: {err:#})\n")),
        }
        if let Ok(sts) = self.statefulset().await {
            let status = sts.status.unwrap_or_default();
            out.push_str(&format!(
                "StatefulSet updateRevision {:?} currentRevision {:?} replicas {}\n",
                status.update_revision, status.current_revision, status.replicas
            ));
        }
        if let Ok(samples) = self.samples.lock() {
            out.push_str("status.operation / currentOperation as sampled (last 20 changes):\n");
            let from = samples.operations.len().saturating_sub(20);
            for (elapsed, op) in &samples.operations[from..] {
                out.push_str(&format!("  +{elapsed:.1?} {op}\n"));
            }
        }
        out.push_str(&format!(
            "operator log ({}), last lines:\n{}\n",
            self.log.display(),
            log_tail(&self.log, 80)
        ));
        out
    }
}

fn operation(status: &Value) -> Option<&Value> {
    status.get("operation").filter(|op| !op.is_null())
}

fn current_operation(status: &Value) -> Option<&Value> {
    status.get("currentOperation").filter(|op| !op.is_null())
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn history(status: &Value) -> Vec<Value> {
    status
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn history_of(status: &Value, kind: &str) -> Vec<Value> {
    history(status)
        .into_iter()
        .filter(|r| text(r, "kind") == Some(kind))
        .collect()
}

fn condition_true(status: &Value, type_: &str) -> bool {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| text(c, "type") == Some(type_) && text(c, "status") == Some("True"))
        })
}

/// Nodes the pilots report Up/Normal and ready.
fn nodes_up(status: &Value) -> usize {
    status
        .get("nodes")
        .and_then(Value::as_array)
        .map(|ns| {
            ns.iter()
                .filter(|n| {
                    text(n, "state") == Some("Up/Normal")
                        && n.get("ready").and_then(Value::as_bool) == Some(true)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Pilot-reported version by node name.
fn node_versions(status: &Value) -> BTreeMap<String, Option<String>> {
    status
        .get("nodes")
        .and_then(Value::as_array)
        .map(|ns| {
            ns.iter()
                .filter_map(|n| {
                    Some((
                        text(n, "name")?.to_string(),
                        text(n, "version").map(str::to_string),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The operator has acted on `generation`, runs nothing, and the cluster is Ready.
fn settled(obj: &DynamicObject, generation: i64) -> Option<&Value> {
    let status = obj.data.get("status")?;
    (status.get("observedGeneration").and_then(Value::as_i64) >= Some(generation)
        && operation(status).is_none()
        && current_operation(status).is_none()
        && text(status, "phase") == Some("Ready"))
    .then_some(status)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What the background sampler saw.
#[derive(Default)]
struct Samples {
    /// The scenario step the samples belong to.
    step: &'static str,
    /// Per step: the most pods not Ready at one time, and which.
    max_unready: BTreeMap<&'static str, (usize, Vec<String>)>,
    /// Every distinct UID each pod name had, in order.
    uids: BTreeMap<String, Vec<String>>,
    /// Last known pilot-reported version per node, each time it changed.
    versions: Vec<BTreeMap<String, String>>,
    /// `{operation, currentOperation}` each time it changed, with the time since sampling began.
    operations: Vec<(Duration, Value)>,
    errors: u64,
}

/// Every ~250 ms: pod readiness and UIDs, node versions and the operation, until `stop`.
async fn sample(ctx: Arc<SamplerCtx>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.ns)
            .list(&ListParams::default().labels(&format!("stateward.io/cluster={CLUSTER}")))
            .await;
        let status = ctx.api.get(CLUSTER).await.map(|o| o.data["status"].clone());
        let Ok(mut samples) = ctx.samples.lock() else {
            return;
        };
        match pods {
            Ok(pods) => {
                let by_name: BTreeMap<String, &Pod> = pods
                    .items
                    .iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, p)))
                    .collect();
                // A node whose pod is missing or terminating is as unavailable as an unready one.
                let unready: Vec<String> = NODES
                    .iter()
                    .filter(|n| !by_name.get(**n).is_some_and(|p| pod_ready(p)))
                    .map(|n| n.to_string())
                    .collect();
                let step = samples.step;
                let max = samples.max_unready.entry(step).or_default();
                if unready.len() > max.0 {
                    *max = (unready.len(), unready);
                }
                for (name, pod) in &by_name {
                    if let Some(uid) = &pod.metadata.uid {
                        let seen = samples.uids.entry(name.clone()).or_default();
                        if seen.last() != Some(uid) {
                            seen.push(uid.clone());
                        }
                    }
                }
            }
            Err(_) => samples.errors += 1,
        }
        match status {
            Ok(status) => {
                let mut versions = samples.versions.last().cloned().unwrap_or_default();
                for (name, version) in node_versions(&status) {
                    // No version while a node is down: it keeps the one it had.
                    if let Some(v) = version {
                        versions.insert(name, v);
                    }
                }
                if samples.versions.last() != Some(&versions) {
                    samples.versions.push(versions);
                }
                let op = json!({
                    "operation": status.get("operation"),
                    "currentOperation": status.get("currentOperation"),
                });
                if samples.operations.last().map(|(_, v)| v) != Some(&op) {
                    samples.operations.push((start.elapsed(), op));
                }
            }
            Err(_) => samples.errors += 1,
        }
    }
}

struct SamplerCtx {
    client: Client,
    ns: String,
    api: Api<DynamicObject>,
    samples: Arc<Mutex<Samples>>,
}

/// What the background writer did.
#[derive(Default)]
struct Writes {
    acknowledged: Vec<i64>,
    failed: u64,
    last_error: Option<String>,
}

/// Inserts rows with increasing ids at QUORUM, one at a time and without pause, until `stop`.
async fn write(
    client: Client,
    ns: String,
    writes: Arc<Mutex<Writes>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    async fn connect(
        client: &Client,
        ns: &str,
    ) -> anyhow::Result<(
        scylla::client::session::Session,
        scylla::statement::prepared::PreparedStatement,
    )> {
        let session = cql_session(client, ns, CLUSTER).await?;
        let mut insert = session
            .prepare(quorum("INSERT INTO app.writes (id, v) VALUES (?, ?)"))
            .await?;
        // The same row each time: the driver may retry it on another node.
        insert.set_is_idempotent(true);
        Ok((session, insert))
    }
    let (mut session, mut insert) = connect(&client, &ns).await?;
    let mut id: i64 = 0;
    let mut failed_in_a_row = 0u32;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let result = session
            .execute_unpaged(&insert, (id, format!("value-{id}")))
            .await;
        {
            let Ok(mut w) = writes.lock() else {
                bail!("writes log poisoned");
            };
            match result {
                Ok(_) => {
                    w.acknowledged.push(id);
                    failed_in_a_row = 0;
                    continue;
                }
                Err(err) => {
                    w.failed += 1;
                    w.last_error = Some(err.to_string());
                }
            }
        }
        failed_in_a_row += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if failed_in_a_row >= 50 {
            // Every contact point may have been replaced: start over from today's pods.
            if let Ok(fresh) = connect(&client, &ns).await {
                (session, insert) = fresh;
                failed_in_a_row = 0;
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_owns_every_restart() -> anyhow::Result<()> {
    if std::env::var("STATEWARD_E2E").as_deref() != Ok("1") {
        eprintln!("STATEWARD_E2E is not 1: skipping (run through `cargo dev test`)");
        return Ok(());
    }
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "restarts").await?;
    let ns = space.name.clone();
    let log = space.operator_log.clone();
    eprintln!("operator log: {}", log.display());
    let resource = CassandraCluster::api_resource();
    let ctx = Ctx {
        api: Api::namespaced_with(client.clone(), &ns, &resource),
        cluster,
        client,
        ns,
        log,
        samples: Arc::default(),
    };
    let mut operator = OperatorProcess::start(&ctx.cluster, &ctx.ns, &ctx.log)?;
    let result = scenario(&ctx, &mut operator).await;
    if let Err(err) = &result {
        eprintln!("FAILED: {err:#}\n{}", ctx.dump().await);
    }
    let killed = operator.kill().context("stop the operator");
    result?;
    killed
}

async fn scenario(ctx: &Ctx, operator: &mut OperatorProcess) -> anyhow::Result<()> {
    let began = Instant::now();

    // --- 1. three nodes at the upgrade-from version, RF 3 ---
    let step = Instant::now();
    ctx.cluster.kubectl_stdin(
        &["apply", "-n", &ctx.ns, "-f", "-"],
        &cluster_manifest(UPGRADE_FROM_VERSION),
    )?;
    let s = wait_for(
        "Available with 3 nodes Up/Normal",
        Duration::from_secs(900),
        || async {
            let s = ctx.status().await?;
            (condition_true(&s, "Available") && nodes_up(&s) == 3).then_some(s)
        },
    )
    .await?;
    let versions = node_versions(&s);
    ensure!(
        versions.len() == 3
            && versions
                .values()
                .all(|v| v.as_deref() == Some(UPGRADE_FROM_VERSION)),
        "nodes at {UPGRADE_FROM_VERSION}: {versions:?}"
    );
    let session = cql_session(&ctx.client, &ctx.ns, CLUSTER).await?;
    session
        .query_unpaged(
            "CREATE KEYSPACE app WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 3}",
            (),
        )
        .await?;
    session
        .query_unpaged(
            "CREATE TABLE app.writes (id bigint PRIMARY KEY, v text)",
            (),
        )
        .await?;
    let sts = ctx.statefulset().await?;
    let strategy = sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.clone());
    ensure!(
        strategy.as_deref() == Some("OnDelete"),
        "StatefulSet updateStrategy {strategy:?}, expected OnDelete"
    );
    println!(
        "step 1 (3 nodes at {UPGRADE_FROM_VERSION}, keyspace app RF 3): {:.1?}",
        step.elapsed()
    );

    // --- 2. a writer at QUORUM and a sampler, through steps 3 and 4 ---
    let writes = Arc::new(Mutex::new(Writes::default()));
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(
        ctx.client.clone(),
        ctx.ns.clone(),
        writes.clone(),
        stop_writer.clone(),
    ));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    set_step(ctx, "restart")?;
    let sampler = tokio::spawn(sample(
        Arc::new(SamplerCtx {
            client: ctx.client.clone(),
            ns: ctx.ns.clone(),
            api: ctx.api.clone(),
            samples: ctx.samples.clone(),
        }),
        stop_sampler.clone(),
    ));
    wait_for(
        "the writer's first rows",
        Duration::from_secs(60),
        || async {
            let w = writes.lock().ok()?;
            (w.acknowledged.len() >= 10).then_some(())
        },
    )
    .await?;

    wait_for(
        "the sampler's first sample of the 3 pods",
        Duration::from_secs(60),
        || async { uid_counts(ctx).ok().filter(|c| c.len() == 3).map(|_| ()) },
    )
    .await?;

    // --- 3. a config change: a rolling restart; the operator dies mid-way, a new one resumes ---
    let step = Instant::now();
    let uids_before = ctx.pod_uids().await?;
    let uid_counts_before = uid_counts(ctx)?;
    let acknowledged_before = acknowledged(&writes)?;
    let generation = ctx
        .patch(json!({"spec": {"config": {"cassandraYaml": {"concurrent_reads": "48"}}}}))
        .await?;
    let seen = wait_for(
        "Restart rejoining or a first node completed",
        Duration::from_secs(900),
        || async {
            let s = ctx.status().await?;
            let op = operation(&s)?;
            (text(op, "kind") == Some("Restart")
                && (text(op, "phase") == Some("Rejoining") || !strings(op, "completed").is_empty()))
            .then(|| op.clone())
        },
    )
    .await?;
    operator.kill()?;
    let at_kill = ctx
        .status()
        .await
        .as_ref()
        .and_then(operation)
        .cloned()
        .unwrap_or(seen);
    println!(
        "operator SIGKILLed at +{:.1?} during {}",
        step.elapsed(),
        serde_json::to_string(&at_kill)?
    );
    *operator = OperatorProcess::start(&ctx.cluster, &ctx.ns, &ctx.log)?;
    let s = wait_for(
        "the rolling restart finished",
        Duration::from_secs(1500),
        || async {
            let obj = ctx.object().await?;
            let s = settled(&obj, generation)?;
            (history_of(s, "Restart").len() >= 3).then(|| s.clone())
        },
    )
    .await?;
    let targets = strings(&at_kill, "nodes");
    let all_nodes: BTreeSet<String> = NODES.iter().map(|n| n.to_string()).collect();
    ensure!(
        targets.iter().cloned().collect::<BTreeSet<String>>() == all_nodes,
        "status.operation.nodes {targets:?}, expected every node"
    );
    let killed_node = text(&at_kill, "node").unwrap_or_default().to_string();
    ensure!(
        text(&at_kill, "podUid") == uids_before.get(&killed_node).map(String::as_str),
        "status.operation.podUid names the pod being replaced: {at_kill}, pods before: \
         {uids_before:?}"
    );
    let restarts = history_of(&s, "Restart");
    let restarted: Vec<&str> = restarts.iter().filter_map(|r| text(r, "node")).collect();
    ensure!(
        restarts.len() == 3 && restarted == targets,
        "one Restart record per node, in the operation's order {targets:?}: {restarts:?}"
    );
    for record in &restarts {
        ensure!(
            text(record, "result") == Some("Succeeded")
                && text(record, "message").is_some_and(|m| m.contains("drained")),
            "Restart record Succeeded, its message names the drain: {record}"
        );
    }
    let update_revision = ctx.assert_pods_at_update_revision(3).await?;
    ensure!(
        text(&at_kill, "targetRevision") == Some(update_revision.as_str()),
        "status.operation.targetRevision {:?} is the StatefulSet's updateRevision {update_revision}",
        text(&at_kill, "targetRevision")
    );
    check_resumed(ctx, "Restart", &at_kill)?;
    check_replaced_once(ctx, &uid_counts_before, &NODES)?;
    check_one_unready_at_a_time(ctx, "restart")?;
    check_progress_seen(ctx, "Restart", "/3 nodes restarted")?;
    let events = ctx.events("RestartSucceeded")?;
    for node in NODES {
        ensure!(
            events.contains(node),
            "RestartSucceeded event for {node}: {events}"
        );
    }
    ensure!(
        !ctx.events("Restart")?.is_empty(),
        "Restart events on the CassandraCluster"
    );
    ensure!(
        acknowledged(&writes)? > acknowledged_before,
        "the writer made progress during the restart"
    );
    println!(
        "step 3 (rolling restart, operator killed once): {:.1?}",
        step.elapsed()
    );

    // --- 4. the upgrade, one node at a time ---
    let step = Instant::now();
    set_step(ctx, "upgrade")?;
    let uid_counts_before = uid_counts(ctx)?;
    let versions_from = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?
        .versions
        .len()
        .saturating_sub(1);
    let acknowledged_before = acknowledged(&writes)?;
    let generation = ctx
        .patch(json!({"spec": {"version": CASSANDRA_VERSION}}))
        .await?;
    let s = wait_for(
        "the upgrade finished",
        Duration::from_secs(1500),
        || async {
            let obj = ctx.object().await?;
            let s = settled(&obj, generation)?;
            (history_of(s, "Upgrade").len() >= 3 && text(s, "version") == Some(CASSANDRA_VERSION))
                .then(|| s.clone())
        },
    )
    .await?;
    let upgrades = history_of(&s, "Upgrade");
    let upgraded: BTreeSet<&str> = upgrades.iter().filter_map(|r| text(r, "node")).collect();
    ensure!(
        upgrades.len() == 3 && upgraded == NODES.into_iter().collect::<BTreeSet<&str>>(),
        "one Upgrade record per node: {upgrades:?}"
    );
    for record in &upgrades {
        ensure!(
            text(record, "result") == Some("Succeeded")
                && text(record, "message").is_some_and(|m| m.contains(CASSANDRA_VERSION)),
            "Upgrade record Succeeded, its message names {CASSANDRA_VERSION}: {record}"
        );
    }
    let versions = node_versions(&s);
    ensure!(
        versions.len() == 3
            && versions
                .values()
                .all(|v| v.as_deref() == Some(CASSANDRA_VERSION)),
        "status.nodes[].version all {CASSANDRA_VERSION}: {versions:?}"
    );
    ctx.assert_pods_at_update_revision(3).await?;
    for pod in ctx.pods().await? {
        let images: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter_map(|c| c.image.clone())
            .filter(|i| i.starts_with(CASSANDRA_REPOSITORY))
            .collect();
        ensure!(
            images == vec![cassandra_image(CASSANDRA_VERSION)],
            "pod {:?} runs {images:?}",
            pod.metadata.name
        );
    }
    ensure!(
        ctx.samples
            .lock()
            .map_err(|_| anyhow::anyhow!("samples poisoned"))?
            .operations
            .iter()
            .any(|(_, v)| text(&v["operation"], "kind") == Some("Upgrade")
                && text(&v["operation"], "targetVersion") == Some(CASSANDRA_VERSION)),
        "an Upgrade operation with targetVersion {CASSANDRA_VERSION} was seen"
    );
    check_versions_one_at_a_time(ctx, versions_from)?;
    check_progress_seen(ctx, "Upgrade", "/3 nodes upgraded")?;
    check_replaced_once(ctx, &uid_counts_before, &NODES)?;
    check_one_unready_at_a_time(ctx, "upgrade")?;
    let events = ctx.events("UpgradeSucceeded")?;
    for node in NODES {
        ensure!(
            events.contains(node),
            "UpgradeSucceeded event for {node}: {events}"
        );
    }
    ensure!(
        acknowledged(&writes)? > acknowledged_before,
        "the writer made progress during the upgrade"
    );
    println!(
        "step 4 (upgrade {UPGRADE_FROM_VERSION} -> {CASSANDRA_VERSION}): {:.1?}",
        step.elapsed()
    );

    // --- 5. every acknowledged write reads back at QUORUM ---
    let step = Instant::now();
    stop_writer.store(true, Ordering::Relaxed);
    stop_sampler.store(true, Ordering::Relaxed);
    writer.await.context("writer task")??;
    sampler.await.context("sampler task")?;
    let session = cql_session(&ctx.client, &ctx.ns, CLUSTER).await?;
    let mut select = quorum("SELECT id FROM app.writes");
    select.set_page_size(5000);
    let mut rows = session
        .query_iter(select, ())
        .await?
        .rows_stream::<(i64,)>()?;
    let mut found = HashSet::new();
    while let Some(row) = rows.next().await {
        found.insert(row?.0);
    }
    let (acknowledged, failed, last_error) = {
        let w = writes
            .lock()
            .map_err(|_| anyhow::anyhow!("writes poisoned"))?;
        (w.acknowledged.clone(), w.failed, w.last_error.clone())
    };
    let missing: Vec<i64> = acknowledged
        .iter()
        .copied()
        .filter(|id| !found.contains(id))
        .collect();
    let (unready_restart, unready_upgrade) = {
        let samples = ctx
            .samples
            .lock()
            .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
        let max = |step| samples.max_unready.get(step).map(|m| m.0).unwrap_or(0);
        (max("restart"), max("upgrade"))
    };
    println!(
        "writes: acknowledged {}, failed {failed} (last error {last_error:?}), read back {}, \
         missing {}; max pods not Ready at once: restart {unready_restart}, upgrade \
         {unready_upgrade}",
        acknowledged.len(),
        found.len(),
        missing.len()
    );
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged rows missing at QUORUM, first {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(20)]
    );
    println!("step 5 (read back): {:.1?}", step.elapsed());

    // --- 6. a restart waits for a decommission under way ---
    let step = Instant::now();
    // RF 3 cannot live on two nodes (the operator refuses such a scale-down); RF 2 can.
    session
        .query_unpaged(
            "ALTER KEYSPACE app WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 2}",
            (),
        )
        .await?;
    drop(session);
    // The pilots re-read the schema every 5 s and nothing in the API shows their reading; the
    // operator decides on it (as in cassandra_scaling).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let remaining = ["ring-main-0", "ring-main-1"];
    let uids_before: BTreeMap<String, String> = ctx
        .pod_uids()
        .await?
        .into_iter()
        .filter(|(n, _)| remaining.contains(&n.as_str()))
        .collect();
    ensure!(
        uids_before.len() == 2,
        "pods before the scale-down: {uids_before:?}"
    );
    ctx.cluster.kubectl(&[
        "scale",
        "-n",
        &ctx.ns,
        &format!("cass/{CLUSTER}"),
        "--replicas=2",
    ])?;
    let leaving = wait_for(
        "Decommission streaming",
        Duration::from_secs(600),
        || async {
            let s = ctx.status().await?;
            [operation(&s), current_operation(&s)]
                .into_iter()
                .flatten()
                .find(|op| {
                    text(op, "kind") == Some("Decommission")
                        && text(op, "phase") == Some("Streaming")
                })
                .and_then(|op| text(op, "node").map(str::to_string))
        },
    )
    .await?;
    ensure!(leaving == "ring-main-2", "the node leaving is {leaving}");
    let generation = ctx
        .patch(json!({"spec": {"config": {"cassandraYaml": {"concurrent_reads": "40"}}}}))
        .await?;
    // Until the decommission is recorded nothing else may start: no Restart, no pod replaced.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let s = ctx.status().await.unwrap_or_default();
        if history_of(&s, "Decommission")
            .iter()
            .any(|r| text(r, "node") == Some(leaving.as_str()))
        {
            break;
        }
        for op in [operation(&s), current_operation(&s)].into_iter().flatten() {
            ensure!(
                text(op, "kind") != Some("Restart"),
                "a Restart started before the decommission of {leaving} was recorded: {op}"
            );
        }
        let uids: BTreeMap<String, String> = ctx
            .pod_uids()
            .await?
            .into_iter()
            .filter(|(n, _)| remaining.contains(&n.as_str()))
            .collect();
        ensure!(
            uids == uids_before,
            "a remaining pod was replaced before the decommission of {leaving} was recorded: \
             {uids:?}, before {uids_before:?}"
        );
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for the Decommission record of {leaving}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "decommission of {leaving} recorded at +{:.1?}",
        step.elapsed()
    );
    let s = wait_for(
        "the restart of the remaining nodes finished",
        Duration::from_secs(1200),
        || async {
            let obj = ctx.object().await?;
            let s = settled(&obj, generation)?;
            (restarts_after_decommission(s).len() >= 2).then(|| s.clone())
        },
    )
    .await?;
    let after = restarts_after_decommission(&s);
    let nodes: BTreeSet<&str> = after.iter().filter_map(|r| text(r, "node")).collect();
    ensure!(
        after.len() == 2 && nodes == remaining.into_iter().collect::<BTreeSet<&str>>(),
        "one Restart per remaining node, after the Decommission record: {:?}",
        history(&s)
    );
    for record in &after {
        ensure!(
            text(record, "result") == Some("Succeeded"),
            "Restart record Succeeded: {record}"
        );
    }
    let decommissions = history_of(&s, "Decommission");
    ensure!(
        decommissions.len() == 1 && text(&decommissions[0], "result") == Some("Succeeded"),
        "one Decommission, Succeeded: {decommissions:?}"
    );
    ctx.assert_pods_at_update_revision(2).await?;
    let uids_after = ctx.pod_uids().await?;
    for (name, uid) in &uids_before {
        ensure!(
            uids_after.get(name).is_some_and(|u| u != uid),
            "{name} was restarted: uid before {uid}, now {:?}",
            uids_after.get(name)
        );
    }
    println!(
        "step 6 (restart after a decommission): {:.1?}",
        step.elapsed()
    );
    println!("scenario: {:.1?}", began.elapsed());
    Ok(())
}

fn set_step(ctx: &Ctx, step: &'static str) -> anyhow::Result<()> {
    ctx.samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?
        .step = step;
    Ok(())
}

fn acknowledged(writes: &Mutex<Writes>) -> anyhow::Result<usize> {
    Ok(writes
        .lock()
        .map_err(|_| anyhow::anyhow!("writes poisoned"))?
        .acknowledged
        .len())
}

/// How many distinct UIDs the sampler has seen per pod name so far.
fn uid_counts(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, usize>> {
    Ok(ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?
        .uids
        .iter()
        .map(|(name, uids)| (name.clone(), uids.len()))
        .collect())
}

/// Each of `nodes` got exactly one new pod since `before`.
fn check_replaced_once(
    ctx: &Ctx,
    before: &BTreeMap<String, usize>,
    nodes: &[&str],
) -> anyhow::Result<()> {
    let now = uid_counts(ctx)?;
    let samples = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    for node in nodes {
        let (was, is) = (
            before.get(*node).copied().unwrap_or(0),
            now.get(*node).copied().unwrap_or(0),
        );
        ensure!(
            is == was + 1,
            "{node}'s pod replaced exactly once, UIDs seen: {:?}",
            samples.uids.get(*node)
        );
    }
    Ok(())
}

fn check_one_unready_at_a_time(ctx: &Ctx, step: &'static str) -> anyhow::Result<()> {
    let samples = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    let (max, pods) = samples.max_unready.get(step).cloned().unwrap_or_default();
    ensure!(
        max <= 1,
        "during the {step} {max} pods were not Ready at once: {pods:?}"
    );
    Ok(())
}

/// Every sampled `kind` operation had the startedAt and targetRevision seen when the operator
/// was killed (the new operator resumed it), and the operation moved on after the kill.
fn check_resumed(ctx: &Ctx, kind: &str, at_kill: &Value) -> anyhow::Result<()> {
    let samples = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    let ops: Vec<&Value> = samples
        .operations
        .iter()
        .map(|(_, v)| &v["operation"])
        .filter(|op| text(op, "kind") == Some(kind))
        .collect();
    for op in &ops {
        ensure!(
            text(op, "startedAt") == text(at_kill, "startedAt")
                && text(op, "targetRevision") == text(at_kill, "targetRevision"),
            "one {kind} operation, resumed after the operator restart: saw {op}, at the kill \
             {at_kill}"
        );
    }
    let killed_at = ops.iter().position(|op| {
        text(op, "node") == text(at_kill, "node") && text(op, "phase") == text(at_kill, "phase")
    });
    ensure!(
        killed_at.is_some_and(|i| i + 1 < ops.len()),
        "the {kind} operation moved on after the operator restart: {ops:?}"
    );
    Ok(())
}

/// Some sampled `currentOperation` of `kind` counted its nodes, like "1/3 nodes restarted" (in
/// `progress`, or in `summary` while `progress` carries the pilot's report of the drain).
fn check_progress_seen(ctx: &Ctx, kind: &str, counted: &str) -> anyhow::Result<()> {
    let samples = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    let words: Vec<String> = samples
        .operations
        .iter()
        .map(|(_, v)| &v["currentOperation"])
        .filter(|op| text(op, "kind") == Some(kind))
        .flat_map(|op| [text(op, "progress"), text(op, "summary")])
        .flatten()
        .map(str::to_string)
        .collect();
    ensure!(
        words.iter().any(|w| w.contains(counted)),
        "currentOperation of the {kind} counting \"{counted}\": {words:?}"
    );
    Ok(())
}

/// From sample `from` on, consecutive version readings differ in at most one node.
fn check_versions_one_at_a_time(ctx: &Ctx, from: usize) -> anyhow::Result<()> {
    let samples = ctx
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    let seen = samples.versions.get(from..).unwrap_or_default();
    for pair in seen.windows(2) {
        let changed: Vec<&String> = pair[1]
            .iter()
            .filter(|(name, v)| pair[0].get(*name) != Some(*v))
            .map(|(name, _)| name)
            .collect();
        ensure!(
            changed.len() <= 1,
            "versions changed on {changed:?} at once: {:?} -> {:?}",
            pair[0],
            pair[1]
        );
    }
    // The first reading is the one before the upgrade; then one change per node.
    ensure!(
        seen.len() == 4,
        "three version changes sampled, one per node: {seen:?}"
    );
    Ok(())
}

/// Restart records after the (last) Decommission record, oldest first.
fn restarts_after_decommission(status: &Value) -> Vec<Value> {
    let all = history(status);
    let Some(decommission) = all
        .iter()
        .rposition(|r| text(r, "kind") == Some("Decommission"))
    else {
        return Vec::new();
    };
    all.into_iter()
        .skip(decommission + 1)
        .filter(|r| text(r, "kind") == Some("Restart"))
        .collect()
}
