//! Flags every database's pilot has; every flag has an environment fallback, which is how
//! the operator's pod sets them (and how local tests run several pilots side by side).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// This node's name (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub node_name: String,
    /// The pod's namespace (for logs only).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// The pod's UID (downward API `metadata.uid`), reported so a caller can tell pod
    /// incarnations of the same name apart.
    #[arg(long, env = "POD_UID", default_value = "")]
    pub pod_uid: String,
    /// The pod's `controller-revision-hash` label (downward API): the StatefulSet
    /// template revision it was created from, reported as is.
    #[arg(long, env = "STATEWARD_TEMPLATE_REVISION", default_value = "")]
    pub template_revision: String,
    /// The gRPC (mutual TLS) listen address.
    #[arg(long, env = "STATEWARD_GRPC_LISTEN", default_value = "0.0.0.0:7443")]
    pub grpc_listen: SocketAddr,
    /// The probe (plain HTTP) listen address.
    #[arg(long, env = "STATEWARD_PROBE_LISTEN", default_value = "0.0.0.0:7080")]
    pub probe_listen: SocketAddr,
    /// Directory with ca.crt, tls.crt and tls.key (the pilot's server certificate).
    #[arg(long, env = "STATEWARD_TLS_DIR", default_value = "/etc/stateward/tls")]
    pub tls_dir: PathBuf,
    /// How often the node is observed.
    #[arg(long, env = "STATEWARD_POLL_INTERVAL_MS", default_value_t = 250)]
    pub poll_interval_ms: u64,
    /// How long preparing the database to stop (a drain) on SIGTERM may take.
    #[arg(long, env = "STATEWARD_DRAIN_TIMEOUT_SECONDS", default_value_t = 120)]
    pub drain_timeout_seconds: u64,
}

impl CommonArgs {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }
}
