//! CQL through the scylla driver against a CassandraCluster's pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;
use stateward_operator::api::cassandra::CassandraCluster;

/// IPs of the running (not terminating) pods of CassandraCluster `cluster`, by pod name.
pub async fn pod_ips(
    client: &Client,
    ns: &str,
    cluster: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("stateward.io/cluster={cluster}")))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
        .collect())
}

/// A CQL session whose contact points are the cluster's pods, logged in as the cluster's
/// superuser once its status shows authentication set up (or without credentials when the
/// cluster runs without authentication).
pub async fn cql_session(client: &Client, ns: &str, cluster: &str) -> anyhow::Result<Session> {
    let login = superuser(client, ns, cluster).await?;
    let login = login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    session_as(client, ns, cluster, login).await
}

/// A CQL session to the cluster's pods with these credentials (`None`: without any).
pub async fn session_as(
    client: &Client,
    ns: &str,
    cluster: &str,
    login: Option<(&str, &str)>,
) -> anyhow::Result<Session> {
    let nodes: Vec<String> = pod_ips(client, ns, cluster)
        .await?
        .into_iter()
        .map(|(_, ip)| format!("{ip}:9042"))
        .collect();
    let mut builder = SessionBuilder::new()
        .known_nodes(&nodes)
        .connection_timeout(Duration::from_secs(10));
    if let Some((user, password)) = login {
        builder = builder.user(user, password);
    }
    Ok(builder.build().await?)
}

/// The superuser's credentials from the Secret the status names, once the status shows
/// authentication ready (waits up to 5 minutes); `None` when authentication is off.
pub async fn superuser(
    client: &Client,
    ns: &str,
    cluster: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let clusters: Api<CassandraCluster> = Api::namespaced(client.clone(), ns);
    let auth = super::wait_for(
        "authentication set up",
        Duration::from_secs(300),
        || async {
            let auth = clusters.get(cluster).await.ok()?.status?.authentication?;
            (auth.mode == "Off" || auth.ready).then_some(auth)
        },
    )
    .await?;
    let Some(name) = auth.superuser_secret.filter(|_| auth.mode == "Password") else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&name)
        .await?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| -> anyhow::Result<String> {
        let value = data
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("Secret {name} has no {key}"))?;
        Ok(String::from_utf8(value.0.clone())?)
    };
    Ok(Some((text("username")?, text("password")?)))
}

/// `cql` at QUORUM with a 20 s request timeout.
pub fn quorum(cql: &str) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_consistency(Consistency::Quorum);
    statement.set_request_timeout(Some(Duration::from_secs(20)));
    statement
}
