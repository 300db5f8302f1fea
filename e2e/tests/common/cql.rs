//! CQL through the scylla driver against a CassandraCluster's pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;

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

/// A CQL session whose contact points are the cluster's pods.
pub async fn cql_session(client: &Client, ns: &str, cluster: &str) -> anyhow::Result<Session> {
    let nodes: Vec<String> = pod_ips(client, ns, cluster)
        .await?
        .into_iter()
        .map(|(_, ip)| format!("{ip}:9042"))
        .collect();
    Ok(SessionBuilder::new()
        .known_nodes(&nodes)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await?)
}

/// `cql` at QUORUM with a 20 s request timeout.
pub fn quorum(cql: &str) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_consistency(Consistency::Quorum);
    statement.set_request_timeout(Some(Duration::from_secs(20)));
    statement
}
