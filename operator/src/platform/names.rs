//! Names of everything derived from a cluster, in one place so nothing drifts.

use kube::ResourceExt;

pub struct Names {
    pub cluster: String,
    pub namespace: String,
}

impl Names {
    pub fn of(cluster: &impl ResourceExt) -> Self {
        Names {
            cluster: cluster.name_any(),
            namespace: cluster.namespace().unwrap_or_else(|| "default".into()),
        }
    }
    /// Headless Service that gives every pod a stable DNS name (peer discovery, seeds).
    pub fn nodes_service(&self) -> String {
        format!("{}-nodes", self.cluster)
    }
    /// Client Service.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    pub fn statefulset(&self, pool: &str) -> String {
        format!("{}-{pool}", self.cluster)
    }
    pub fn pod(&self, pool: &str, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.statefulset(pool))
    }
    /// The data PVC the StatefulSet creates for a node (claim template `data`).
    pub fn data_volume(&self, pool: &str, ordinal: i32) -> String {
        format!("data-{}", self.pod(pool, ordinal))
    }
    pub fn pod_dns(&self, pool: &str, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc.cluster.local",
            self.pod(pool, ordinal),
            self.nodes_service(),
            self.namespace
        )
    }
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
    /// The superuser Secret the operator generates (when the user names none).
    pub fn generated_superuser_secret(&self) -> String {
        format!("{}-superuser", self.cluster)
    }
    pub fn pilot_tls_secret(&self) -> String {
        format!("{}-pilot-tls", self.cluster)
    }
    pub fn operator_client_secret(&self) -> String {
        format!("{}-operator-client", self.cluster)
    }
    /// The TLS name the operator expects on every pilot's certificate.
    pub fn pilot_tls_name(&self) -> String {
        format!("pilot.{}.{}", self.cluster, self.namespace)
    }
}
