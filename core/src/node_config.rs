//! The node configuration the operator hands every pilot (a JSON file from the cluster's
//! ConfigMap), defined once for both programs.
//!
//! Compatibility: a pilot ignores fields it does not know, so a newer operator never stops an
//! older pilot; a field's meaning never changes once shipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// cassandra.yaml keys Stateward owns: they define a node's identity, its place in the ring or
/// how peers reach it. The API refuses them in `spec.config.cassandraYaml` (a CEL rule checked
/// against this list by a test), the operator drops them, and the pilot never takes them.
pub const RESERVED_CASSANDRA_YAML_KEYS: &[&str] = &[
    "cluster_name",
    "seed_provider",
    "listen_address",
    "listen_interface",
    "broadcast_address",
    "rpc_address",
    "rpc_interface",
    "broadcast_rpc_address",
    "endpoint_snitch",
    "num_tokens",
    "initial_token",
    "data_file_directories",
    "commitlog_directory",
    "saved_caches_directory",
    "hints_directory",
    "cdc_raw_directory",
    "storage_port",
    "native_transport_port",
];

/// Whether `key` is one Stateward owns in cassandra.yaml.
pub fn is_reserved_cassandra_yaml_key(key: &str) -> bool {
    RESERVED_CASSANDRA_YAML_KEYS.contains(&key)
}

/// The file name of the Cassandra node configuration inside the cluster's ConfigMap.
pub const CASSANDRA_CONFIG_FILE: &str = "cassandra.json";

/// What the operator tells a Cassandra pilot beyond its pod's environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CassandraNodeConfig {
    /// Tokens per node (cassandra.yaml `num_tokens`); the pilot's default (16) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_tokens: Option<u32>,
    /// Extra cassandra.yaml keys, merged over the pilot's defaults; reserved keys are dropped
    /// by both sides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cassandra_yaml: BTreeMap<String, serde_json::Value>,
    /// Extra JVM options, appended to jvm-server.options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jvm_options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_from_a_newer_operator_are_ignored() {
        let parsed: CassandraNodeConfig = serde_json::from_str(
            r#"{"numTokens": 8, "cassandraYaml": {"concurrent_reads": 64}, "someFutureField": {"x": 1}}"#,
        )
        .expect("a newer operator's file parses");
        assert_eq!(parsed.num_tokens, Some(8));
        assert_eq!(parsed.cassandra_yaml.len(), 1);
    }

    #[test]
    fn initial_token_is_reserved() {
        assert!(is_reserved_cassandra_yaml_key("initial_token"));
        assert!(!is_reserved_cassandra_yaml_key("concurrent_reads"));
    }
}
