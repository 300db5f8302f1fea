//! The custom resources Stateward serves (`stateward.io/v1alpha1`).

pub mod cassandra;
pub mod common;

pub use cassandra::{CassandraCluster, CassandraClusterSpec, CassandraClusterStatus};

use kube::CustomResourceExt;

/// Every CRD the operator serves, as multi-document YAML (what `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [CassandraCluster::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
