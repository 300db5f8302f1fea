//! The `cassandra` subcommand's flags (beside the common ones).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::cli::CommonArgs;

#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Cassandra's data volume; the pilot keeps its journal in `<data-dir>/stateward/`.
    #[arg(long, env = "STATEWARD_DATA_DIR", default_value = "/var/lib/cassandra")]
    pub data_dir: PathBuf,
    /// The address Cassandra listens on for gossip and CQL (the pod IP).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: IpAddr,
    /// Cassandra's cluster_name.
    #[arg(long, env = "STATEWARD_CLUSTER")]
    pub cluster: String,
    #[arg(long, env = "STATEWARD_DATACENTER", default_value = "dc1")]
    pub datacenter: String,
    #[arg(long, env = "STATEWARD_RACK", default_value = "rack1")]
    pub rack: String,
    /// Comma-separated seed DNS names or IPs (the headless Service's name resolves to
    /// every ready pod).
    #[arg(long, env = "STATEWARD_SEEDS")]
    pub seeds: String,
    /// The Cassandra container's memory limit; the heap is derived from it.
    #[arg(long, env = "STATEWARD_MEMORY_LIMIT_BYTES")]
    pub memory_limit_bytes: Option<u64>,
    /// An explicit heap size ("512M", "2G"); wins over the memory limit.
    #[arg(long, env = "STATEWARD_HEAP_SIZE")]
    pub heap_size: Option<String>,
    /// The operator's node configuration (JSON, see pilot/README.md), or the directory of
    /// the mounted ConfigMap holding it as `cassandra.json`; absent means defaults.
    #[arg(long, env = "STATEWARD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Where to render Cassandra's configuration (CASSANDRA_CONF of the database container).
    #[arg(long, env = "CASSANDRA_CONF", default_value = "/etc/cassandra")]
    pub conf_dir: PathBuf,
    /// The Jolokia JVM agent jar shipped in the pilot image; copied into the conf dir.
    #[arg(
        long,
        env = "STATEWARD_JOLOKIA_AGENT",
        default_value = "/usr/share/stateward/jolokia-agent.jar"
    )]
    pub jolokia_agent: PathBuf,
    /// The port the Jolokia agent listens on (on 127.0.0.1).
    #[arg(long, env = "STATEWARD_JOLOKIA_PORT", default_value_t = 8778)]
    pub jolokia_port: u16,
    #[arg(long, env = "STATEWARD_STORAGE_PORT", default_value_t = 7000)]
    pub storage_port: u16,
    #[arg(long, env = "STATEWARD_CQL_PORT", default_value_t = 9042)]
    pub cql_port: u16,
    /// Where the superuser Secret is mounted (files `username` and `password`); read when the
    /// node configuration turns authentication on.
    #[arg(
        long,
        env = "STATEWARD_SUPERUSER_DIR",
        default_value = "/etc/stateward/superuser"
    )]
    pub superuser_dir: PathBuf,
}

/// The `cassandra` subcommand's flags from `argv` (after the subcommand), for tests.
#[cfg(test)]
pub fn parse(argv: &[&str]) -> Args {
    use clap::Parser;
    let full = ["stateward-pilot", "cassandra"].iter().chain(argv);
    let crate::Command::Cassandra(args) = crate::Cli::parse_from(full).command else {
        panic!("parsed another subcommand");
    };
    args
}
