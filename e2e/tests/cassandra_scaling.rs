//! Verified scale-down and scale-up of a real three-node Cassandra 5.0 cluster on the local real
//! Kubernetes, driven by the operator binary (a separate process, so the test can SIGKILL it in
//! the middle of a decommission).
//!
//! One scenario, in order, on one cluster (each Cassandra node takes about a minute to join):
//! 1. three nodes; keyspace `app` with RF 2; rows written at QUORUM through CQL;
//! 2. `kubectl scale --replicas=1` is refused (RF 2 needs two nodes) and nothing changes;
//! 3. `kubectl scale --replicas=2`: while node 2 streams its data out the leading operator is
//!    killed; the standby replica (a second operator process, which has written nothing so far)
//!    takes the lease once it expires and resumes the same action ID, no other node leaves, the
//!    StatefulSet shrinks only after the verified decommission and the removed node's PVC is
//!    deleted; every row reads back at QUORUM;
//! 4. `kubectl scale --replicas=3`: one node joins, then nodes 0 and 1 run a cleanup each, one
//!    at a time; every row still reads back at QUORUM.
//!
//! Leaf certificates live six minutes here: the pilots load renewed ones while they run.
//!
//! Authentication is on (the default) throughout: after 1 and 4, logins without credentials
//! and as the default role are refused, the generated superuser logs in, and `system_auth`
//! has one replica per node (three). Every CQL session of the scenario is the superuser's.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::ListParams;
use kube::{Api, Client};
use stateward_operator::api::cassandra::{CassandraCluster, CassandraClusterStatus};

mod common;
use common::cql::{cql_session, pod_ips, quorum, session_as, superuser};
use common::operator::{
    OperatorProcess, counters, free_port, lease_holder, metrics, metrics_at, owned_reads_between,
    writes_but_the_lease,
};
use common::{install_crd, test_namespace, wait_for};

const CLUSTER: &str = "ring";
/// The second operator replica's identity in the leader election.
const STANDBY: &str = "scaling-standby";
const ROWS: i32 = 500;
/// Leaf certificates of six minutes (renewed after four): the scenario outlives the first ones,
/// so the pilots must take their renewed certificate while they run.
const SHORT_CERTIFICATES: &[(&str, &str)] =
    &[("STATEWARD_LEAF_CERTIFICATE_LIFETIME_SECONDS", "360")];

fn cluster_manifest() -> String {
    format!(
        r#"apiVersion: stateward.io/v1alpha1
kind: CassandraCluster
metadata:
  name: {CLUSTER}
spec:
  version: "5.0.9"
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

async fn status(api: &Api<CassandraCluster>) -> Option<CassandraClusterStatus> {
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

/// Every row, read at QUORUM, must be there with its value.
async fn assert_rows_readable(client: &Client, ns: &str) -> anyhow::Result<()> {
    let session = cql_session(client, ns, CLUSTER).await?;
    let result = session
        .query_unpaged(quorum("SELECT k, v FROM app.kv"), ())
        .await?
        .into_rows_result()?;
    let mut rows: Vec<(i32, String)> = result.rows::<(i32, String)>()?.collect::<Result<_, _>>()?;
    rows.sort();
    assert_eq!(rows.len(), ROWS as usize, "rows read back at QUORUM");
    for (i, (k, v)) in rows.iter().enumerate() {
        assert_eq!(*k, i as i32);
        assert_eq!(v, &format!("value-{k}"));
    }
    Ok(())
}

fn history_of<'a>(
    status: &'a CassandraClusterStatus,
    kind: &str,
) -> Vec<&'a stateward_operator::api::common::OperationRecord> {
    status.history.iter().filter(|r| r.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_and_up_with_verified_decommission() -> anyhow::Result<()> {
    if std::env::var_os("STATEWARD_E2E").is_none() {
        eprintln!("STATEWARD_E2E is not set: run through `cargo dev test`");
    }
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "scaling").await?;
    let ns = space.name.clone();
    let log = space.operator_log.clone();
    eprintln!("operator log: {}", log.display());
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let mut env = SHORT_CERTIFICATES.to_vec();
    env.push(("STATEWARD_METRICS_ADDR", address.as_str()));
    let mut operator = OperatorProcess::start_env(&cluster, &ns, &log, &env)?;
    let leader = format!("e2e-operator-{ns}");
    wait_for(
        "the first operator leading",
        Duration::from_secs(60),
        || async {
            (lease_holder(&client, &ns).await.as_deref() == Some(leader.as_str())).then_some(())
        },
    )
    .await?;
    // The second replica: a standby until the first dies.
    let standby_port = free_port()?;
    let standby_address = format!("127.0.0.1:{standby_port}");
    let mut standby_env = SHORT_CERTIFICATES.to_vec();
    standby_env.extend([
        ("STATEWARD_METRICS_ADDR", standby_address.as_str()),
        ("POD_NAME", STANDBY),
    ]);
    let standby = OperatorProcess::start_env(&cluster, &ns, &log, &standby_env)?;
    let api: Api<CassandraCluster> = Api::namespaced(client.clone(), &ns);

    // --- 1. three nodes, RF 2, rows at QUORUM ---
    cluster.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &cluster_manifest())?;
    let first_expiry = wait_for(
        "the pilots' certificate",
        Duration::from_secs(60),
        || async { pilot_certificate_expiry(&client, &ns).await },
    )
    .await?;
    wait_for("3 nodes Ready", Duration::from_secs(900), || async {
        let s = status(&api).await?;
        (s.phase.as_deref() == Some("Ready") && s.ready_replicas == 3).then_some(())
    })
    .await?;
    assert_logins(&client, &ns, &api, 3).await?;
    let session = cql_session(&client, &ns, CLUSTER).await?;
    session
        .query_unpaged(
            "CREATE KEYSPACE app WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 2}",
            (),
        )
        .await?;
    session
        .query_unpaged("CREATE TABLE app.kv (k int PRIMARY KEY, v text)", ())
        .await?;
    let insert = session
        .prepare(quorum("INSERT INTO app.kv (k, v) VALUES (?, ?)"))
        .await?;
    for k in 0..ROWS {
        session
            .execute_unpaged(&insert, (k, format!("value-{k}")))
            .await?;
    }
    drop(session);
    assert_rows_readable(&client, &ns).await?;
    // The pilots re-read the schema every 5 s; the operator decides on their readings (and the
    // leaving node's pilot re-checks afresh before it decommissions).
    tokio::time::sleep(Duration::from_secs(6)).await;

    // --- 1b. steady: the reconciles (the 30 s resync, pilot reports) read only caches ---
    assert_steady_reads_nothing(port).await?;

    // --- 2. below the replication factor: refused, nothing touched ---
    cluster.kubectl(&[
        "scale",
        "-n",
        &ns,
        &format!("cass/{CLUSTER}"),
        "--replicas=1",
    ])?;
    let refused = wait_for("scale to 1 refused", Duration::from_secs(120), || async {
        let s = status(&api).await?;
        let degraded = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "SpecRefused")?
            .message
            .clone();
        (s.phase.as_deref() == Some("Blocked")).then_some(degraded)
    })
    .await?;
    assert!(
        refused.contains("app (RF 2)"),
        "refusal names the keyspace: {refused}"
    );
    // Give a wrongly eager operator time to act, then check nothing changed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(statefulset_replicas(&client, &ns).await, Some(3));
    let s = status(&api).await.expect("status");
    assert_eq!(s.ready_replicas, 3);
    assert!(history_of(&s, "Decommission").is_empty());
    let events = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=Refused",
        "-o",
        "jsonpath={.items[*].note}{.items[*].message}",
    ])?;
    assert!(
        events.contains("replication factor"),
        "Refused event: {events}"
    );

    // --- 3. scale to 2; the operator dies mid-decommission and a new one finishes it ---
    cluster.kubectl(&[
        "scale",
        "-n",
        &ns,
        &format!("cass/{CLUSTER}"),
        "--replicas=2",
    ])?;
    let action_id = wait_for(
        "decommission streaming",
        Duration::from_secs(300),
        || async {
            let op = status(&api).await?.current_operation?;
            (op.kind == "Decommission" && op.phase == "Streaming").then_some(op)
        },
    )
    .await?;
    assert_eq!(action_id.node.as_deref(), Some("ring-main-2"));
    let action_id = action_id.action_id.expect("action ID recorded");
    let describe = cluster.kubectl(&["describe", "cass", "-n", &ns, CLUSTER])?;
    assert!(
        describe.contains("Decommission ring-main-2: Streaming"),
        "{describe}"
    );
    assert_operation_metrics(port).await?;
    let standby_writes = writes_but_the_lease(&metrics(standby_port).await?);
    assert_eq!(
        standby_writes,
        vec![],
        "the standby wrote while the leader led"
    );
    operator.kill()?;
    let killed = std::time::Instant::now();
    eprintln!("leading operator killed while {action_id} streams");
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Without a leader nothing shrinks, whatever Cassandra does meanwhile.
    assert_eq!(statefulset_replicas(&client, &ns).await, Some(3));
    assert_eq!(lease_holder(&client, &ns).await, Some(leader.clone()));
    wait_for("the standby leading", Duration::from_secs(40), || async {
        (lease_holder(&client, &ns).await.as_deref() == Some(STANDBY)).then_some(())
    })
    .await?;
    eprintln!(
        "the standby took the lease {:.1} s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    let mut operator = standby;

    let s = wait_for(
        "scale-down to 2 finished",
        Duration::from_secs(600),
        || async {
            let s = status(&api).await?;
            (s.phase.as_deref() == Some("Ready")
                && s.ready_replicas == 2
                && s.current_operation.is_none()
                && !history_of(&s, "Decommission").is_empty())
            .then_some(s)
        },
    )
    .await?;
    let decommissions = history_of(&s, "Decommission");
    assert_eq!(decommissions.len(), 1, "one node left: {:?}", s.history);
    assert_eq!(
        decommissions[0].action_id.as_deref(),
        Some(action_id.as_str())
    );
    assert_eq!(decommissions[0].node.as_deref(), Some("ring-main-2"));
    assert_eq!(decommissions[0].result, "Succeeded");
    assert_eq!(statefulset_replicas(&client, &ns).await, Some(2));
    let pods: Vec<String> = pod_ips(&client, &ns, CLUSTER)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(pods.len(), 2, "pods {pods:?}");
    assert!(
        s.nodes.iter().all(|n| n.state == "Up/Normal"),
        "{:?}",
        s.nodes
    );
    let pvcs: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        !pvcs.contains(&"data-ring-main-2".to_string()),
        "removed node's PVC deleted: {pvcs:?}"
    );
    assert!(pvcs.contains(&"data-ring-main-1".to_string()));
    let describe = cluster.kubectl(&["describe", "cass", "-n", &ns, CLUSTER])?;
    for expected in [
        "Decommission ring-main-2: Streaming",
        "Decommission ring-main-2: Removing",
    ] {
        assert!(
            describe.contains(expected),
            "describe lacks {expected}: {describe}"
        );
    }
    assert_rows_readable(&client, &ns).await?;

    // --- 4. scale to 3: one node joins, then cleanup on the nodes that were there ---
    cluster.kubectl(&[
        "scale",
        "-n",
        &ns,
        &format!("cass/{CLUSTER}"),
        "--replicas=3",
    ])?;
    let s = wait_for(
        "scale-up to 3 and cleanups",
        Duration::from_secs(900),
        || async {
            let s = status(&api).await?;
            (s.phase.as_deref() == Some("Ready")
                && s.ready_replicas == 3
                && s.current_operation.is_none()
                && s.pending_cleanup.is_empty()
                && history_of(&s, "Cleanup").len() >= 2)
                .then_some(s)
        },
    )
    .await?;
    let cleaned: Vec<(&str, &str)> = history_of(&s, "Cleanup")
        .iter()
        .map(|r| (r.node.as_deref().unwrap_or(""), r.result.as_str()))
        .collect();
    assert_eq!(
        cleaned,
        vec![("ring-main-0", "Succeeded"), ("ring-main-1", "Succeeded")],
        "{:?}",
        s.history
    );
    for record in history_of(&s, "Cleanup") {
        // The pilot's verification of the cleanup it ran, keyspace by keyspace.
        assert!(
            record.message.contains("cleanup of keyspace app completed"),
            "{record:?}"
        );
    }
    assert_eq!(history_of(&s, "Decommission").len(), 1);
    let describe = cluster.kubectl(&["describe", "cass", "-n", &ns, CLUSTER])?;
    for expected in [
        "ScaleUp ring-main-2: Running",
        "Cleanup ring-main-0: Starting",
        "Cleanup ring-main-1: Starting",
        "CleanupSucceeded",
    ] {
        assert!(
            describe.contains(expected),
            "describe lacks {expected}: {describe}"
        );
    }
    assert_rows_readable(&client, &ns).await?;
    assert_pilot_metrics(&client, &ns).await?;
    // The authentication data followed the datacenter down to two replicas and back to three.
    assert_logins(&client, &ns, &api, 3).await?;
    assert_certificates_renewed(&cluster, &client, &ns, first_expiry).await?;

    operator.kill()?;
    Ok(())
}

/// When the certificate in the pilots' Secret expires (seconds since the epoch).
/// Over 35 s of a steady cluster with real pilots (more than one resync), the operator makes
/// no GET or LIST of anything it owns: its reads come from its caches.
async fn assert_steady_reads_nothing(port: u16) -> anyhow::Result<()> {
    let before = counters(&metrics(port).await?);
    tokio::time::sleep(Duration::from_secs(35)).await;
    let after = counters(&metrics(port).await?);
    let reconciles = |m: &std::collections::BTreeMap<String, u64>| {
        m.get("stateward_reconciles_total").copied().unwrap_or(0)
    };
    let ran = reconciles(&after) - reconciles(&before);
    let reads = owned_reads_between(&before, &after);
    let requests: Vec<_> = after
        .iter()
        .filter(|(k, n)| k.starts_with("stateward_api_requests") && before.get(*k) != Some(n))
        .collect();
    eprintln!("steady 35 s: {ran} reconciles; API requests that grew: {requests:?}");
    anyhow::ensure!(ran >= 1, "no reconcile ran in 35 s (the resync is 30 s)");
    anyhow::ensure!(
        reads.is_empty(),
        "steady reconciles read the API: {reads:?}"
    );
    Ok(())
}

async fn pilot_certificate_expiry(client: &Client, ns: &str) -> Option<i64> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{CLUSTER}-pilot-tls"))
        .await
        .ok()?;
    let pem = String::from_utf8(secret.data?.get("tls.crt")?.0.clone()).ok()?;
    stateward_operator::tls::not_after(&pem).ok()
}

/// The scenario outlived the first leaf certificate: the operator issued a new one, a node that
/// ran throughout loaded it without a restart, and the operator still reaches every pilot (the
/// status is current).
async fn assert_certificates_renewed(
    cluster: &stateward_e2e::cluster::Cluster,
    client: &Client,
    ns: &str,
    first_expiry: i64,
) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let expiry = pilot_certificate_expiry(client, ns)
        .await
        .ok_or_else(|| anyhow::anyhow!("no pilot certificate"))?;
    println!(
        "first pilot certificate expired at {first_expiry}, the current one at {expiry}, now {now}"
    );
    anyhow::ensure!(
        now > first_expiry,
        "the scenario ended before the first certificate expired"
    );
    anyhow::ensure!(
        expiry > first_expiry,
        "the pilots' certificate was not renewed"
    );
    let log = cluster.kubectl(&[
        "logs",
        "-n",
        ns,
        &format!("{CLUSTER}-main-0"),
        "-c",
        "pilot",
    ])?;
    anyhow::ensure!(
        log.contains("loaded the renewed TLS certificate"),
        "ring-main-0's pilot did not load the renewed certificate"
    );
    Ok(())
}

/// Authentication is on by default: logins without credentials and as the default role are
/// refused, the generated superuser logs in, and `system_auth` has `replication` replicas.
async fn assert_logins(
    client: &Client,
    ns: &str,
    api: &Api<CassandraCluster>,
    replication: i32,
) -> anyhow::Result<()> {
    let auth = wait_for(
        "system_auth replication",
        Duration::from_secs(300),
        || async {
            let auth = status(api).await?.authentication?;
            (auth.ready && auth.replication == Some(replication)).then_some(auth)
        },
    )
    .await?;
    println!("authentication: {auth:?}");
    assert_eq!(auth.mode, "Password");
    assert_eq!(auth.superuser_secret.as_deref(), Some("ring-superuser"));
    let (user, _) = superuser(client, ns, CLUSTER)
        .await?
        .ok_or_else(|| anyhow::anyhow!("authentication is off"))?;
    assert_eq!(user, "ring-superuser");
    for (who, login) in [
        ("no credentials", None),
        ("the default role", Some(("cassandra", "cassandra"))),
    ] {
        match session_as(client, ns, CLUSTER, login).await {
            Ok(_) => anyhow::bail!("a login with {who} was accepted"),
            Err(e) => println!("a login with {who} is refused: {e}"),
        }
    }
    cql_session(client, ns, CLUSTER).await?;
    Ok(())
}

/// The leader's metrics mid-decommission: the operation in flight, three pilots connected,
/// reconciles timed.
async fn assert_operation_metrics(port: u16) -> anyhow::Result<()> {
    let streaming = "stateward_operations_in_flight{kind=\"CassandraCluster\",\
                     operation=\"Decommission\",phase=\"Streaming\"}";
    let timed = "stateward_reconcile_duration_seconds_count{kind=\"CassandraCluster\"}";
    let shown = wait_for(
        "the decommission in the leader's metrics",
        Duration::from_secs(30),
        || async {
            let values = counters(&metrics(port).await.ok()?);
            let connected = values
                .iter()
                .filter(|(name, n)| name.starts_with("stateward_pilot_connected{") && **n == 1)
                .count();
            (values.get(streaming) == Some(&1)
                && connected == 3
                && values.get(timed).is_some_and(|n| *n > 0))
            .then_some(())
        },
    )
    .await;
    shown.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Each pilot's metrics (its probe port): the node ready and Cassandra running; node 0's
/// cleanup counted as a verified success.
async fn assert_pilot_metrics(client: &Client, ns: &str) -> anyhow::Result<()> {
    for (pod, ip) in pod_ips(client, ns, CLUSTER).await? {
        let text = metrics_at(&ip, stateward_proto::PILOT_PROBE_PORT).await?;
        for line in [
            "stateward_pilot_node_ready 1",
            "stateward_pilot_database_process{state=\"running\"} 1",
        ] {
            anyhow::ensure!(text.contains(line), "{pod}: no {line} in\n{text}");
        }
        if pod.ends_with("-0") {
            // In the pilot's memory: this pilot ran the cleanup (it was not restarted since).
            let cleanups = "stateward_pilot_action_duration_seconds_count\
                            {kind=\"cleanup\",result=\"succeeded\"}";
            let counted = counters(&text).get(cleanups).copied();
            anyhow::ensure!(
                counted == Some(1),
                "{pod}: {cleanups} = {counted:?} in\n{text}"
            );
        }
    }
    Ok(())
}
