//! The operator's `/readyz` on the local real cluster: ready once both controllers have listed
//! their clusters; an operator the API server refuses (a user without RBAC, by impersonation:
//! a fault the real API server produces on demand) stays alive but not ready, and says why.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::operator::OperatorProcess;
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
    let port = free_port()?;
    let log = target.join(format!("{ns}-unpermitted-operator.log"));
    let refused = OperatorProcess::start_with(
        &cluster,
        &ns,
        &log,
        &kubeconfig,
        &format!("127.0.0.1:{port}"),
    )?;
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
    eprintln!("unpermitted operator /readyz ({code}):\n{body}");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("CassandraCluster: starting")
            && body.contains("ElasticsearchCluster: starting"),
        "{body}"
    );
    assert_eq!(
        get(port, "/healthz").await?.0,
        200,
        "alive though not ready"
    );
    Ok(())
}
