//! Command line; every flag has an environment fallback, which is how the operator's pod
//! sets them (and how local tests run several pilots side by side).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "stateward-pilot", version, about = "Stateward pilot sidecar")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a Cassandra node.
    Cassandra(CassandraArgs),
}

/// Flags every database's pilot has.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// This node's name (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub node_name: String,
    /// The pod's namespace (for logs only).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// The gRPC (mutual TLS) listen address.
    #[arg(long, env = "STATEWARD_GRPC_LISTEN", default_value = "0.0.0.0:7443")]
    pub grpc_listen: SocketAddr,
    /// The probe (plain HTTP) listen address.
    #[arg(long, env = "STATEWARD_PROBE_LISTEN", default_value = "0.0.0.0:7080")]
    pub probe_listen: SocketAddr,
    /// Directory with ca.crt, tls.crt and tls.key (the pilot's server certificate).
    #[arg(long, env = "STATEWARD_TLS_DIR", default_value = "/etc/stateward/tls")]
    pub tls_dir: PathBuf,
    /// The database's data volume; the pilot keeps its journal in `<data-dir>/stateward/`.
    #[arg(long, env = "STATEWARD_DATA_DIR", default_value = "/var/lib/cassandra")]
    pub data_dir: PathBuf,
    /// How often the node is observed.
    #[arg(long, env = "STATEWARD_POLL_INTERVAL_MS", default_value_t = 250)]
    pub poll_interval_ms: u64,
    /// How long draining on SIGTERM may take.
    #[arg(long, env = "STATEWARD_DRAIN_TIMEOUT_SECONDS", default_value_t = 120)]
    pub drain_timeout_seconds: u64,
}

impl CommonArgs {
    /// The pilot's own state (journal, identity) on the data volume.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("stateward")
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }
}

#[derive(Debug, Clone, Args)]
pub struct CassandraArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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
    /// The operator's settings (JSON, see pilot/README.md); absent means defaults.
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
}
