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
    "authenticator",
    "authorizer",
    "role_manager",
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
    /// Password authentication and role-based authorization (PasswordAuthenticator,
    /// CassandraAuthorizer, CassandraRoleManager); absent or false: AllowAll.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authentication: bool,
}

/// elasticsearch.yml settings Stateward owns: a node's identity, roles, addresses, discovery,
/// paths and security (which needs x-pack, absent from the build the tests can run). The API
/// refuses them (and any key that nests them or is nested under them) in
/// `spec.config.elasticsearchYml`; the operator drops them; the pilot never takes them.
pub const RESERVED_ELASTICSEARCH_YML_KEYS: &[&str] = &[
    "cluster.name",
    "node.name",
    "node.roles",
    "node.attr.pool",
    "network.host",
    "network.bind_host",
    "network.publish_host",
    "http.port",
    "http.host",
    "transport.port",
    "transport.host",
    "discovery.seed_hosts",
    "discovery.seed_providers",
    "discovery.type",
    "cluster.initial_master_nodes",
    "path.data",
    "path.logs",
    "path.home",
    "path.repo",
    "cluster.routing.allocation.exclude._name",
    "cluster.routing.allocation.enable",
    "xpack.security.enabled",
];

/// Whether `key` (dotted, as in elasticsearch.yml) is, nests, or sits under a key Stateward
/// owns ("discovery" nests "discovery.seed_hosts"; "path.data.x" sits under "path.data").
pub fn is_reserved_elasticsearch_yml_key(key: &str) -> bool {
    RESERVED_ELASTICSEARCH_YML_KEYS.iter().any(|r| {
        key == *r
            || r.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'))
            || key
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The file name of the Elasticsearch node configuration inside the cluster's ConfigMap.
pub const ELASTICSEARCH_CONFIG_FILE: &str = "elasticsearch.json";

/// What the operator tells an Elasticsearch pilot beyond its pod's environment (cluster name,
/// node name, pool, roles and the discovery host come by environment).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchNodeConfig {
    /// Extra elasticsearch.yml settings (dotted keys), merged over the pilot's defaults;
    /// reserved keys are dropped by both sides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub elasticsearch_yml: BTreeMap<String, serde_json::Value>,
    /// Extra JVM options, appended to jvm.options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jvm_options: Vec<String>,
    /// The master-eligible node names of the very first formation of a new cluster; empty once
    /// any node reported the cluster formed. The pilot writes `cluster.initial_master_nodes`
    /// only when this is set *and* its data volume holds no cluster state yet, so a restarted
    /// or added node never bootstraps a second cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_master_nodes: Vec<String>,
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
    fn elasticsearch_reserved_keys_cover_nesting_both_ways() {
        assert!(is_reserved_elasticsearch_yml_key("node.roles"));
        assert!(is_reserved_elasticsearch_yml_key("discovery"));
        assert!(is_reserved_elasticsearch_yml_key("path.data.extra"));
        assert!(!is_reserved_elasticsearch_yml_key(
            "indices.memory.index_buffer_size"
        ));
        assert!(!is_reserved_elasticsearch_yml_key("node.attr.zone"));
    }

    #[test]
    fn initial_token_is_reserved() {
        assert!(is_reserved_cassandra_yaml_key("initial_token"));
        assert!(!is_reserved_cassandra_yaml_key("concurrent_reads"));
    }
}
