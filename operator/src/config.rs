//! Operator-wide settings (flags / environment), shared by every reconcile.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// Repository of the Cassandra image; the tag is the cluster's version.
    pub cassandra_image_repository: String,
    /// Repository of the Elasticsearch image; the tag is the cluster's version.
    pub elasticsearch_image_repository: String,
    /// Default pilot image.
    pub pilot_image: String,
    pub image_pull_policy: String,
    /// Field manager for server-side apply: one writer for every field the operator owns.
    pub field_manager: String,
    /// Where each cluster's CA and the operator's client credentials live: the operator's own
    /// namespace, never an app's.
    pub credentials_namespace: String,
    /// How long the pilots' and the operator's leaf certificates are valid; each is issued
    /// again once a third of it is left.
    pub leaf_certificate_lifetime: std::time::Duration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            cassandra_image_repository: "docker.io/library/cassandra".into(),
            elasticsearch_image_repository: "docker.elastic.co/elasticsearch/elasticsearch".into(),
            pilot_image: "ghcr.io/stateward/pilot:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            field_manager: "stateward-operator".into(),
            credentials_namespace: "stateward-system".into(),
            leaf_certificate_lifetime: std::time::Duration::from_secs(90 * 86_400),
        }
    }
}

impl OperatorConfig {
    /// The pilot idles at a few MiB; the limit leaves room for a restore stream later.
    pub fn pilot_resources(&self) -> ResourceRequirements {
        ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("20m".into())),
                    ("memory".to_string(), Quantity("32Mi".into())),
                ]
                .into(),
            ),
            limits: Some([("memory".to_string(), Quantity("128Mi".into()))].into()),
            ..ResourceRequirements::default()
        }
    }
}
