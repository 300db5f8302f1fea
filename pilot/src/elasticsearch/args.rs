//! The `elasticsearch` subcommand's flags (beside the common ones).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::cli::CommonArgs;

#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Elasticsearch's data volume (`path.data`); the pilot keeps its journal in
    /// `<data-dir>/stateward/`.
    #[arg(
        long,
        env = "STATEWARD_DATA_DIR",
        default_value = "/usr/share/elasticsearch/data"
    )]
    pub data_dir: PathBuf,
    /// `path.logs` (the logs themselves go to the console; the JVM may still write here).
    #[arg(
        long,
        env = "STATEWARD_LOGS_DIR",
        default_value = "/usr/share/elasticsearch/logs"
    )]
    pub logs_dir: PathBuf,
    /// The address other nodes and clients reach this node on (the pod IP).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: IpAddr,
    /// `cluster.name`.
    #[arg(long, env = "STATEWARD_CLUSTER")]
    pub cluster: String,
    /// The node pool, written as `node.attr.pool`.
    #[arg(long, env = "STATEWARD_POOL")]
    pub pool: String,
    /// Comma-separated `node.roles` ("master,data,ingest"); empty or absent means a
    /// coordinating-only node (`node.roles: []`), which holds no data and never votes.
    #[arg(long, env = "STATEWARD_ROLES")]
    pub roles: Option<String>,
    /// Comma-separated `discovery.seed_hosts` (host or host:port; in a pod the headless
    /// Service's name, which resolves to every pod).
    #[arg(long, env = "STATEWARD_SEED_HOSTS")]
    pub seed_hosts: String,
    /// The operator's node configuration (JSON), or the directory of the mounted
    /// ConfigMap holding it as `elasticsearch.json`; absent means defaults.
    #[arg(long, env = "STATEWARD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// The Elasticsearch container's memory limit; the heap is derived from it.
    #[arg(long, env = "STATEWARD_MEMORY_LIMIT_BYTES")]
    pub memory_limit_bytes: Option<u64>,
    /// An explicit heap size ("512m", "2g"); wins over the memory limit.
    #[arg(long, env = "STATEWARD_HEAP_SIZE")]
    pub heap_size: Option<String>,
    /// Where to render the configuration (`ES_PATH_CONF` of the database container).
    #[arg(
        long,
        env = "ES_PATH_CONF",
        default_value = "/usr/share/elasticsearch/config"
    )]
    pub conf_dir: PathBuf,
    #[arg(long, env = "STATEWARD_HTTP_PORT", default_value_t = 9200)]
    pub http_port: u16,
    #[arg(long, env = "STATEWARD_TRANSPORT_PORT", default_value_t = 9300)]
    pub transport_port: u16,
    /// The address the pilot reaches Elasticsearch's HTTP port on: loopback in a pod.
    #[arg(long, env = "STATEWARD_HTTP_ADDRESS", default_value = "127.0.0.1")]
    pub http_address: IpAddr,
}

impl Args {
    /// The roles, trimmed, without empty entries.
    pub fn role_list(&self) -> Vec<String> {
        split_list(self.roles.as_deref().unwrap_or(""))
    }

    pub fn seed_host_list(&self) -> Vec<String> {
        split_list(&self.seed_hosts)
    }

    pub fn http_endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.http_address, self.http_port)
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `elasticsearch` subcommand's flags from `argv` (after the subcommand), for tests.
#[cfg(test)]
pub fn parse(argv: &[&str]) -> Args {
    use clap::Parser;
    let full = ["stateward-pilot", "elasticsearch"].iter().chain(argv);
    match crate::Cli::parse_from(full).command {
        crate::Command::Elasticsearch(args) => args,
        other => panic!("parsed another subcommand: {other:?}"),
    }
}
