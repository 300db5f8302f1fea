//! Helpers shared by the operator end-to-end tests.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};
use stateward_e2e::Cluster;
use stateward_operator::api::cassandra::CassandraCluster;
use stateward_operator::api::elasticsearch::ElasticsearchCluster;

// Each test crate that includes `common` uses a part of these.
#[allow(dead_code)]
pub mod cql;
#[allow(dead_code)]
pub mod es;
#[allow(dead_code)]
pub mod operator;

/// Applies every CRD the operator serves and waits until each is established.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [CassandraCluster::crd(), ElasticsearchCluster::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("stateward-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        wait_for("CRD established", Duration::from_secs(30), || async {
            let crd = crds.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await?;
    }
    Ok(())
}

pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A test's own namespace: created now, deleted however the test ends (with the credentials of
/// its clusters), and where its operator's log goes.
#[allow(dead_code)] // each test binary compiles this module; not all of them use it
pub struct TestNamespace {
    pub name: String,
    pub operator_log: std::path::PathBuf,
    _guard: NamespaceGuard,
}

/// Creates the namespace `<prefix>-<pid>`.
#[allow(dead_code)] // each test binary compiles this module; not all of them use it
pub async fn test_namespace(
    cluster: &stateward_e2e::Cluster,
    client: &Client,
    prefix: &str,
) -> anyhow::Result<TestNamespace> {
    let name = format!("{prefix}-{}", std::process::id());
    let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
    namespace.metadata.name = Some(name.clone());
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &namespace)
        .await?;
    let operator_log = cluster
        .layout()
        .repo()
        .join("target")
        .join(format!("{name}-operator.log"));
    Ok(TestNamespace {
        _guard: NamespaceGuard {
            cluster: cluster.clone(),
            ns: name.clone(),
        },
        name,
        operator_log,
    })
}

/// Deletes the test namespace however the test ends (a failed assertion unwinds past `stop`).
pub struct NamespaceGuard {
    pub cluster: Cluster,
    pub ns: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
        // The test's operator may be gone before its clusters are: their credentials, which no
        // owner reference reaches, go with the namespace.
        let selector = format!("stateward.io/cluster-namespace={}", self.ns);
        let _ = self.cluster.kubectl(&[
            "delete",
            "secrets",
            "-n",
            operator::CREDENTIALS_NAMESPACE,
            "-l",
            &selector,
            "--ignore-not-found",
        ]);
        // And the lease of its operators.
        let _ = self.cluster.kubectl(&[
            "delete",
            "lease",
            "-n",
            operator::CREDENTIALS_NAMESPACE,
            &format!("stateward-operator-{}", self.ns),
            "--ignore-not-found",
        ]);
    }
}
