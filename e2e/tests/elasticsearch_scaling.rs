//! Verified scale-down and a rolling restart of a real three-node Elasticsearch 9.5 cluster
//! (assembled from Maven Central) on the local real Kubernetes, driven by the operator binary
//! (a separate process, so the test can SIGKILL it while a node's shards move away).
//!
//! One scenario, in order, on one cluster:
//! 1. three nodes with every role; index `docs` with 3 shards × 1 replica and DOCS documents;
//! 2. the elected master is moved to node 2 (the node a scale-down removes), so its removal
//!    must hand the master role over;
//! 3. `kubectl scale --replicas=1` is refused (1 replica needs 2 data nodes): nothing changes,
//!    no exclusion is set;
//! 4. `kubectl scale --replicas=2`: once node 2 is excluded from allocation the operator is
//!    killed; a new one resumes; node 2 leaves only after it holds no shard and is out of the
//!    voting configuration, a new master is elected, both exclusions are cleared, health is
//!    green and every document is there;
//! 5. a setting changes: the nodes restart one at a time (allocation limited to primaries and
//!    a flush before each, restored after), the health never turns red, every document stays.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{Api, Client};
use serde_json::Value;
use stateward_operator::api::elasticsearch::{ElasticsearchCluster, ElasticsearchClusterStatus};

mod common;
use common::cql::pod_ips;
use common::es::ok;
use common::operator::OperatorProcess;
use common::{install_crd, test_namespace, wait_for};

const CLUSTER: &str = "search";
const DOCS: usize = 3000;

fn cluster_manifest() -> String {
    format!(
        r#"apiVersion: stateward.io/v1alpha1
kind: ElasticsearchCluster
metadata:
  name: {CLUSTER}
spec:
  version: "9.5.3"
  replicas: 3
  config:
    # The nodes' volumes share this machine's disk, whose fill level is not under test:
    # absolute watermarks, which the operator's scale-down check reads back from the pilots.
    elasticsearchYml:
      cluster.routing.allocation.disk.watermark.low: 1gb
      cluster.routing.allocation.disk.watermark.high: 512mb
      cluster.routing.allocation.disk.watermark.flood_stage: 256mb
  nodePools:
    - name: main
      heapSize: 256m
      storage:
        size: 1Gi
      resources:
        requests:
          cpu: 100m
          memory: 768Mi
        limits:
          memory: 768Mi
"#
    )
}

async fn status(api: &Api<ElasticsearchCluster>) -> Option<ElasticsearchClusterStatus> {
    api.get(CLUSTER).await.ok()?.status
}

async fn statefulset_replicas(client: &Client, ns: &str) -> Option<i32> {
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(&format!("{CLUSTER}-main"))
        .await
        .ok()?
        .spec?
        .replicas
}

/// `ip:9200` of the first running node that is not `except`.
async fn address(client: &Client, ns: &str, except: &str) -> anyhow::Result<String> {
    pod_ips(client, ns, CLUSTER)
        .await?
        .into_iter()
        .filter(|(name, _)| name != except)
        .map(|(_, ip)| format!("{ip}:9200"))
        .next()
        .ok_or_else(|| anyhow::anyhow!("no node of {CLUSTER} has an address"))
}

async fn count(at: &str) -> anyhow::Result<u64> {
    ok(at, "POST", "/docs/_refresh", None).await?;
    let body = ok(at, "GET", "/docs/_count", None).await?;
    body["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no count in {body}"))
}

async fn index_documents(at: &str) -> anyhow::Result<()> {
    ok(
        at,
        "PUT",
        "/docs",
        Some(r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#),
    )
    .await?;
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(500) {
        let mut bulk = String::new();
        for i in chunk {
            bulk.push_str(&format!(
                "{{\"index\":{{\"_id\":\"{i}\"}}}}\n{{\"n\":{i},\"text\":\"document {i}\"}}\n"
            ));
        }
        let answer = ok(at, "POST", "/docs/_bulk", Some(&bulk)).await?;
        anyhow::ensure!(
            answer["errors"] == Value::Bool(false),
            "bulk errors: {answer}"
        );
    }
    Ok(())
}

async fn health(at: &str) -> anyhow::Result<String> {
    let body = ok(at, "GET", "/_cluster/health", None).await?;
    Ok(body["status"].as_str().unwrap_or_default().to_string())
}

async fn elected_master(at: &str) -> anyhow::Result<String> {
    let state = ok(at, "GET", "/_cluster/state/master_node,nodes", None).await?;
    let id = state["master_node"].as_str().unwrap_or_default();
    Ok(state["nodes"][id]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The persistent exclusion setting and the voting exclusions, as the cluster holds them.
async fn exclusions(at: &str) -> anyhow::Result<(String, Vec<String>)> {
    let settings = ok(at, "GET", "/_cluster/settings?flat_settings=true", None).await?;
    let allocation = settings["persistent"]["cluster.routing.allocation.exclude._name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let state = ok(
        at,
        "GET",
        "/_cluster/state/metadata?filter_path=metadata.cluster_coordination",
        None,
    )
    .await?;
    let voting = state["metadata"]["cluster_coordination"]["voting_config_exclusions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node_name"].as_str().map(str::to_string))
        .collect();
    Ok((allocation, voting))
}

/// Makes node 2 the elected master: the other two leave the voting configuration (which hands
/// the role over), then the exclusions are removed again.
async fn move_master_to_node_2(client: &Client, ns: &str) -> anyhow::Result<()> {
    let at = address(client, ns, "").await?;
    let target = format!("{CLUSTER}-main-2");
    if elected_master(&at).await? != target {
        ok(
            &at,
            "POST",
            &format!(
                "/_cluster/voting_config_exclusions?node_names={CLUSTER}-main-0,{CLUSTER}-main-1"
            ),
            None,
        )
        .await?;
        wait_for("node 2 elected master", Duration::from_secs(60), || async {
            (elected_master(&at).await.ok()? == target).then_some(())
        })
        .await?;
        ok(
            &at,
            "DELETE",
            "/_cluster/voting_config_exclusions?wait_for_removal=false",
            None,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_with_verified_evacuation_and_a_rolling_restart() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "es-scaling").await?;
    let ns = space.name.clone();
    let log = space.operator_log.clone();
    eprintln!("operator log: {}", log.display());
    let mut operator = OperatorProcess::start(&cluster, &ns, &log)?;
    let api: Api<ElasticsearchCluster> = Api::namespaced(client.clone(), &ns);

    // --- 1. three nodes, an index with one replica ---
    cluster.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &cluster_manifest())?;
    wait_for(
        "3 nodes Ready and green",
        Duration::from_secs(600),
        || async {
            let s = status(&api).await?;
            (s.phase.as_deref() == Some("Ready")
                && s.ready_replicas == 3
                && s.health.as_deref() == Some("green"))
            .then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(40)))?;
    let s = status(&api).await.unwrap_or_default();
    assert!(
        s.cluster_uuid.is_some(),
        "status records the cluster UUID: {s:?}"
    );
    assert_eq!(s.nodes.iter().filter(|n| n.elected_master).count(), 1);
    let at = address(&client, &ns, "").await?;
    index_documents(&at).await?;
    assert_eq!(count(&at).await?, DOCS as u64);
    wait_for("green with the index", Duration::from_secs(120), || async {
        (health(&at).await.ok()? == "green").then_some(())
    })
    .await?;

    // --- 2. the node to remove is the elected master ---
    move_master_to_node_2(&client, &ns).await?;

    // --- 3. a scale-down the replicas cannot survive is refused ---
    cluster.kubectl(&["scale", "esc", CLUSTER, "-n", &ns, "--replicas=1"])?;
    // Right after the master moved, a pilot may not have read the indices yet: the refusal
    // then names the quorum, and names the index once the indices are known.
    let refused = wait_for(
        "scale to 1 refused for the index's replicas",
        Duration::from_secs(60),
        || async {
            let s = status(&api).await?;
            let degraded = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "SpecRefused")?
                .message
                .clone();
            (s.phase.as_deref() == Some("Blocked") && degraded.contains("docs (1 replica(s))"))
                .then_some(degraded)
        },
    )
    .await?;
    // Give a wrongly eager operator time to act, then check nothing changed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("refused: {refused}");
    assert_eq!(statefulset_replicas(&client, &ns).await, Some(3));
    assert_eq!(exclusions(&at).await?, (String::new(), vec![]));
    let events = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=Refused,type=Warning",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "a Warning Event says so");

    // --- 4. scale to 2: evacuation, operator killed, resumed, master handed over ---
    cluster.kubectl(&["scale", "esc", CLUSTER, "-n", &ns, "--replicas=2"])?;
    let leaving = format!("{CLUSTER}-main-2");
    wait_for(
        "node 2 excluded from allocation",
        Duration::from_secs(120),
        || async { (exclusions(&at).await.ok()?.0 == leaving).then_some(()) },
    )
    .await?;
    operator.kill()?;
    eprintln!("operator killed while {leaving} is evacuated");
    assert_eq!(statefulset_replicas(&client, &ns).await, Some(3));
    let mut operator = OperatorProcess::start(&cluster, &ns, &log)?;
    wait_for("node 2 removed", Duration::from_secs(600), || async {
        let s = status(&api).await?;
        let done = s
            .history
            .iter()
            .any(|r| r.kind == "Decommission" && r.result == "Succeeded");
        (done && statefulset_replicas(&client, &ns).await == Some(2) && s.ready_replicas == 2)
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(60)))?;
    let at = address(&client, &ns, &leaving).await?;
    let master = elected_master(&at).await?;
    assert_ne!(master, leaving, "a new master was elected");
    wait_for(
        "both exclusions cleared",
        Duration::from_secs(120),
        || async { (exclusions(&at).await.ok()? == (String::new(), vec![])).then_some(()) },
    )
    .await?;
    wait_for("green on 2 nodes", Duration::from_secs(120), || async {
        (health(&at).await.ok()? == "green").then_some(())
    })
    .await?;
    assert_eq!(
        count(&at).await?,
        DOCS as u64,
        "every document is still there"
    );
    let s = status(&api).await.unwrap_or_default();
    let removals: Vec<_> = s
        .history
        .iter()
        .filter(|r| r.kind == "Decommission")
        .collect();
    assert_eq!(removals.len(), 1, "exactly one removal: {removals:?}");
    let describe = cluster.kubectl(&["describe", "esc", "-n", &ns, CLUSTER])?;
    for expected in ["Waiting", "from shard allocation", "DecommissionSucceeded"] {
        assert!(
            describe.contains(expected),
            "describe lacks {expected}: {describe}"
        );
    }

    // --- 5. a setting change restarts the nodes one at a time, health kept ---
    cluster.kubectl(&[
        "patch",
        "esc",
        CLUSTER,
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"config":{"elasticsearchYml":{"indices.memory.index_buffer_size":"15%"}}}}"#,
    ])?;
    let turned_red = std::sync::atomic::AtomicBool::new(false);
    let vote_moved = std::sync::atomic::AtomicBool::new(false);
    wait_for("both nodes restarted", Duration::from_secs(900), || {
        let (api, client, ns) = (&api, &client, &ns);
        let (turned_red, vote_moved) = (&turned_red, &vote_moved);
        async move {
            if let Ok(at) = address(client, ns, "").await {
                if let Ok(h) = health(&at).await
                    && h == "red"
                {
                    turned_red.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok((_, voting)) = exclusions(&at).await
                    && !voting.is_empty()
                {
                    vote_moved.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let s = status(api).await?;
            let restarts = s
                .history
                .iter()
                .filter(|r| r.kind == "Restart" && r.result == "Succeeded")
                .count();
            (restarts == 2 && s.operation.is_none() && s.ready_replicas == 2).then_some(())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(60)))?;
    assert!(
        !turned_red.load(std::sync::atomic::Ordering::Relaxed),
        "the health never turned red during the restart"
    );
    // Two master-eligible nodes are no majority without either one: the vote moved before the
    // voting node stopped (a voting exclusion, seen in the cluster while a node restarted).
    assert!(
        vote_moved.load(std::sync::atomic::Ordering::Relaxed),
        "a voting exclusion was in force during the restart"
    );
    let at = address(&client, &ns, "").await?;
    wait_for(
        "green after the restart",
        Duration::from_secs(120),
        || async { (health(&at).await.ok()? == "green").then_some(()) },
    )
    .await?;
    assert_eq!(
        count(&at).await?,
        DOCS as u64,
        "every document survived the restart"
    );
    let settings = ok(&at, "GET", "/_cluster/settings?flat_settings=true", None).await?;
    assert!(
        settings["persistent"]
            .get("cluster.routing.allocation.enable")
            .is_none(),
        "allocation restored after the restart: {settings}"
    );
    operator.kill()?;
    Ok(())
}
