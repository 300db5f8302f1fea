//! The custom resources Stateward serves (`stateward.io/v1alpha1`).

pub mod cassandra;
pub mod common;
pub mod elasticsearch;

pub use cassandra::{CassandraCluster, CassandraClusterSpec, CassandraClusterStatus};
pub use elasticsearch::{
    ElasticsearchCluster, ElasticsearchClusterSpec, ElasticsearchClusterStatus,
};

use kube::CustomResourceExt;

/// Every CRD the operator serves, as multi-document YAML (what `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let crds = [CassandraCluster::crd(), ElasticsearchCluster::crd()];
    crds.iter().try_fold(String::new(), |mut out, crd| {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
        Ok(out)
    })
}
