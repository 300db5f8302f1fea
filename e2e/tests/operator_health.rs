//! The operator's `/readyz` on the local real cluster: ready once it leads and both controllers
//! have listed their clusters; an operator the API server refuses (a user without RBAC, by
//! impersonation: a fault the real API server produces on demand) stays alive but not ready,
//! and says why (the lease, or with leader election off the controllers' lists).
//!
//! Leader election between two operator processes: the second waits, ready, as a standby and
//! writes nothing; a clean shutdown of the leader hands over at once; a killed leader's lease
//! is respected until it expires, then taken.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::operator::{OperatorProcess, lease_holder, metrics, writes_but_the_lease};
use common::{install_crd, test_namespace, wait_for};

/// A user no RBAC rule names: the API server refuses it every list.
const UNPERMITTED_USER: &str = "stateward-e2e-unpermitted";

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// GET on the operator's endpoint: status code and body.
async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {raw:?}"))?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

/// A copy of `kubeconfig` whose users impersonate `user` (the admin may impersonate).
fn impersonating(kubeconfig: &Path, user: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let users = config["users"]
        .as_sequence_mut()
        .context("kubeconfig without users")?;
    for entry in users {
        let auth = entry["user"]
            .as_mapping_mut()
            .context("kubeconfig user without credentials")?;
        auth.insert("as".into(), user.into());
    }
    std::fs::write(out, serde_yaml::to_string(&config)?)?;
    Ok(out.to_path_buf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_controllers_caches() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "op-health").await?;
    let ns = space.name.clone();
    let target = cluster.layout().repo().join("target");

    // --- permitted: ready once both caches are synced ---
    let port = free_port()?;
    let log = target.join(format!("{ns}-operator.log"));
    let operator = OperatorProcess::start_with(
        &cluster,
        &ns,
        &log,
        cluster.kubeconfig(),
        &format!("127.0.0.1:{port}"),
    )?;
    let body = wait_for("/readyz to answer 200", Duration::from_secs(60), || async {
        let (code, body) = get(port, "/readyz").await.ok()?;
        (code == 200).then_some(body)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log_tail(20)))?;
    eprintln!("permitted operator /readyz:\n{body}");
    assert!(
        body.contains("CassandraCluster: synced") && body.contains("ElasticsearchCluster: synced"),
        "{body}"
    );

    // --- refused by the API server: alive, not ready, and the answer says which ---
    let kubeconfig = impersonating(
        cluster.kubeconfig(),
        UNPERMITTED_USER,
        &target.join(format!("{ns}-unpermitted.kubeconfig")),
    )?;
    for election in ["true", "false"] {
        let port = free_port()?;
        let log = target.join(format!("{ns}-unpermitted-{election}-operator.log"));
        let address = format!("127.0.0.1:{port}");
        let identity = format!("unpermitted-{election}");
        let env = [
            ("STATEWARD_LEADER_ELECTION", election),
            ("STATEWARD_METRICS_ADDR", address.as_str()),
            ("POD_NAME", identity.as_str()),
        ];
        let refused = OperatorProcess::spawn_env(&cluster, &ns, &log, &kubeconfig, &env)?;
        wait_for(
            "the API server's refusal in the operator's log",
            Duration::from_secs(60),
            || async {
                let text = std::fs::read_to_string(&log).ok()?;
                (text.contains("forbidden") && text.contains(UNPERMITTED_USER)).then_some(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", refused.log_tail(20)))?;
        let (code, body) = get(port, "/readyz").await?;
        eprintln!("unpermitted operator, leader election {election}: /readyz ({code}):\n{body}");
        assert_eq!(code, 503, "{body}");
        if election == "true" {
            assert!(
                body.contains("leader election: candidate (cannot read or write the lease")
                    && body.contains("forbidden"),
                "{body}"
            );
        } else {
            assert!(
                body.contains("CassandraCluster: starting")
                    && body.contains("ElasticsearchCluster: starting"),
                "{body}"
            );
        }
        assert_eq!(
            get(port, "/healthz").await?.0,
            200,
            "alive though not ready"
        );
    }
    Ok(())
}

/// A replica of two, with its own identity and HTTP port.
fn replica(
    cluster: &stateward_e2e::Cluster,
    ns: &str,
    log: &Path,
    identity: &str,
    port: u16,
) -> anyhow::Result<OperatorProcess> {
    let address = format!("127.0.0.1:{port}");
    let env = [("POD_NAME", identity), ("STATEWARD_METRICS_ADDR", &address)];
    OperatorProcess::start_env(cluster, ns, log, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let space = test_namespace(&cluster, &client, "op-leader").await?;
    let ns = space.name.clone();
    let log = space.operator_log.clone();
    let (port_a, port_b) = (free_port()?, free_port()?);

    // --- a leads, b waits ready and writes nothing ---
    let mut a = replica(&cluster, &ns, &log, "replica-a", port_a)?;
    wait_for("replica-a leading", Duration::from_secs(60), || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", a.log_tail(20)))?;
    let mut b = replica(&cluster, &ns, &log, "replica-b", port_b)?;
    let body = wait_for("replica-b ready", Duration::from_secs(60), || async {
        let (code, body) = get(port_b, "/readyz").await.ok()?;
        (code == 200).then_some(body)
    })
    .await?;
    eprintln!("standby /readyz:\n{body}");
    assert!(
        body.contains("leader election: standby (replica-a leads"),
        "{body}"
    );
    wait_for(
        "replica-a ready as leader",
        Duration::from_secs(60),
        || async {
            let (code, body) = get(port_a, "/readyz").await.ok()?;
            (code == 200 && body.contains("leader election: leading")).then_some(())
        },
    )
    .await?;
    // A cluster for the leader to act on: paused, so it only writes status.
    let manifest = format!(
        "apiVersion: stateward.io/v1alpha1\nkind: CassandraCluster\nmetadata:\n  name: idle\n  \
         namespace: {ns}\nspec:\n  version: \"5.0.9\"\n  replicas: 1\n  paused: true\n  nodePools:\n    - name: main\n      storage:\n        size: 1Gi\n"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let standby = metrics(port_b).await?;
    assert!(standby.contains("stateward_leader 0"), "{standby}");
    assert_eq!(writes_but_the_lease(&standby), vec![], "the standby wrote");
    assert!(metrics(port_a).await?.contains("stateward_leader 1"));

    // --- a clean shutdown frees the lease: b leads at its next look ---
    let stopped = std::time::Instant::now();
    let status = a.terminate()?;
    assert!(status.success(), "replica-a exited {status}");
    wait_for("replica-b leading", Duration::from_secs(10), || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await?;
    let handover = stopped.elapsed();
    wait_for(
        "replica-b ready as leader",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(port_b, "/readyz").await.ok()?;
            (code == 200 && body.contains("leading")).then_some(())
        },
    )
    .await?;

    // --- a killed leader: its lease holds until it expires, then the other replica takes it ---
    let port_a = free_port()?;
    let _a = replica(&cluster, &ns, &log, "replica-a", port_a)?;
    wait_for("replica-a standby", Duration::from_secs(60), || async {
        let (code, body) = get(port_a, "/readyz").await.ok()?;
        (code == 200 && body.contains("standby (replica-b leads")).then_some(())
    })
    .await?;
    let api: kube::Api<stateward_operator::api::cassandra::CassandraCluster> =
        kube::Api::namespaced(client.clone(), &ns);
    let observed = || async {
        let status = api.get("idle").await.ok()?.status?;
        status.observed_generation
    };
    let killed = std::time::Instant::now();
    b.kill()?;
    // A change while nobody leads: generation 2, which only a leader can observe.
    cluster.kubectl(&[
        "patch",
        "-n",
        &ns,
        "cass/idle",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ])?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        lease_holder(&client, &ns).await.as_deref(),
        Some("replica-b"),
        "a dead leader's lease is respected until it expires"
    );
    assert_eq!(
        observed().await,
        Some(1),
        "nobody acts while the lease is held by the dead"
    );
    wait_for("replica-a leading", Duration::from_secs(40), || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await?;
    let takeover = killed.elapsed();
    eprintln!(
        "lease handed over {:.1} s after a clean shutdown; taken {:.1} s after the leader was killed",
        handover.as_secs_f64(),
        takeover.as_secs_f64()
    );
    // The lease (15 s) was renewed at most 5 s before the kill.
    assert!(
        takeover >= Duration::from_secs(8),
        "taken too early: {takeover:?}"
    );
    // The new leader acts: it observes the change made while nobody led.
    wait_for(
        "the new leader's status",
        Duration::from_secs(30),
        || async { (observed().await == Some(2)).then_some(()) },
    )
    .await?;
    Ok(())
}
