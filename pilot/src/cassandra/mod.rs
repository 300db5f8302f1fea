//! The Cassandra driver: observes and acts through the Jolokia agent in Cassandra's JVM
//! (JMX as JSON; no nodetool text is parsed) and a TCP check of the CQL port.
//!
//! - [`observe`]: the node's status;
//! - [`keyspaces`]: the schema's replication, and the replication guard before a
//!   decommission;
//! - [`decommission`], [`maintenance`] (drain, cleanup, upgradesstables): the actions;
//! - [`identity`]: the host ID recorded on the data volume;
//! - [`render`]: the configuration, rendered before Cassandra starts.

mod args;
mod auth;
mod decommission;
mod identity;
mod jolokia;
mod keyspaces;
mod maintenance;
mod observe;
pub mod render;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;
use stateward_proto::v1::action_spec::Action;
use stateward_proto::v1::{
    ActionKind, ActionResult, ActionSpec, CassandraKeyspace, CassandraOperationMode, DatabaseKind,
    NodeStatus,
};
use tracing::info;

pub use self::args::Args;
use self::auth::AuthState;
use self::identity::Identity;
use self::jolokia::{Jolokia, JolokiaError};
use crate::driver::{ActionRun, Driver, failed};
use crate::fsutil::{now_ms, state_dir};

const SS: &str = "org.apache.cassandra.db:type=StorageService";
const FD: &str = "org.apache.cassandra.net:type=FailureDetector";
const SNITCH: &str = "org.apache.cassandra.db:type=EndpointSnitchInfo";
const LOAD: &str = "org.apache.cassandra.metrics:type=Storage,name=Load";
const RUNTIME: &str = "java.lang:type=Runtime";
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Cassandra may not answer during an action before its outcome counts as
/// unknown, which fails the action (fail closed).
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);
const ACTION_POLL: Duration = Duration::from_millis(500);

pub struct Cassandra {
    jolokia: Jolokia,
    /// The address Cassandra gossips on, as it reports it in its ring views.
    address: String,
    cql: SocketAddr,
    identity: Identity,
    /// The last successful schema reading and when it was made.
    keyspaces: Mutex<Option<(Instant, Vec<CassandraKeyspace>)>>,
    auth: AuthState,
}

impl Cassandra {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let identity = Identity::load(state_dir(&args.data_dir).join("identity.json"))?;
        let settings = render::load_settings(args.config_file.as_deref())?;
        Ok(Cassandra {
            auth: AuthState::new(settings.authentication, args.superuser_dir.clone()),
            jolokia: Jolokia::new("127.0.0.1", args.jolokia_port),
            address: args.pod_ip.to_string(),
            cql: SocketAddr::new(args.pod_ip, args.cql_port),
            identity,
            keyspaces: Mutex::new(None),
        })
    }

    async fn mode(&self) -> Result<String, JolokiaError> {
        let v = self.jolokia.read(SS, "OperationMode", READ_TIMEOUT).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The operation mode, waiting up to [`UNREACHABLE_LIMIT`] for Cassandra to answer
    /// (an action started right after a restart of either container).
    async fn mode_patiently(&self) -> Result<String, String> {
        let start = Instant::now();
        loop {
            match self.mode().await {
                Ok(m) => return Ok(m),
                Err(e) if start.elapsed() > UNREACHABLE_LIMIT => {
                    return Err(format!("Cassandra does not answer: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// When Cassandra's JVM started (ms since the epoch).
    async fn jvm_started_at(&self) -> Result<i64, String> {
        let v = self
            .jolokia
            .read(RUNTIME, "StartTime", READ_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        v.as_i64()
            .ok_or_else(|| format!("{RUNTIME} StartTime: unexpected value {v}"))
    }
}

impl Driver for Cassandra {
    fn kind(&self) -> DatabaseKind {
        DatabaseKind::Cassandra
    }

    async fn observe(&self) -> NodeStatus {
        self.observe_node().await
    }

    async fn process_answers(&self) -> bool {
        self.jolokia
            .read(RUNTIME, "Uptime", READ_TIMEOUT)
            .await
            .is_ok()
    }

    fn supports(&self, kind: ActionKind) -> bool {
        matches!(
            kind,
            ActionKind::Decommission
                | ActionKind::Drain
                | ActionKind::Cleanup
                | ActionKind::UpgradeSstables
                | ActionKind::CassandraAuth
        )
    }

    async fn run_action(&self, spec: ActionSpec, run: ActionRun) -> ActionResult {
        match spec.action {
            Some(Action::Decommission(d)) => self.decommission(d.force, &run).await,
            Some(Action::Drain(_)) => self.drain(&run).await,
            Some(Action::Cleanup(c)) => self.cleanup(c.keyspaces, c.jobs, &run).await,
            Some(Action::UpgradeSstables(u)) => {
                self.upgrade_sstables(u.keyspaces, u.jobs, &run).await
            }
            Some(Action::CassandraAuth(a)) => {
                self.setup_auth(a.system_auth_replication, &run).await
            }
            other => failed(format!("Cassandra does not support {other:?}")),
        }
    }

    async fn prepare_stop(&self) -> anyhow::Result<()> {
        let mode = match self.mode().await {
            Ok(m) => m,
            Err(JolokiaError::Unreachable { .. }) => return Ok(()),
            Err(e) => bail!("reading the operation mode: {e}"),
        };
        // Nothing left to flush: stopping now loses nothing, and draining again would
        // only wait.
        if matches!(mode.as_str(), "DRAINED" | "DECOMMISSIONED") {
            info!(%mode, "Cassandra needs no drain before it stops");
            return Ok(());
        }
        info!(%mode, "draining Cassandra before it stops");
        let run = ActionRun {
            progress: std::sync::Arc::new(|_: String, _: Option<u32>| {}),
            accepted_at_unix_ms: now_ms(),
        };
        let r = self.drain(&run).await;
        if r.success {
            Ok(())
        } else {
            bail!("drain not verified: {}", r.error)
        }
    }
}

fn parse_mode(raw: &str) -> CassandraOperationMode {
    match raw {
        "STARTING" => CassandraOperationMode::Starting,
        "JOINING" => CassandraOperationMode::Joining,
        "NORMAL" => CassandraOperationMode::Normal,
        "LEAVING" => CassandraOperationMode::Leaving,
        "DECOMMISSIONED" => CassandraOperationMode::Decommissioned,
        "DECOMMISSION_FAILED" => CassandraOperationMode::DecommissionFailed,
        "DRAINING" => CassandraOperationMode::Draining,
        "DRAINED" => CassandraOperationMode::Drained,
        "MOVING" => CassandraOperationMode::Moving,
        _ => CassandraOperationMode::Other,
    }
}

/// Cassandra spells endpoints several ways ("/10.0.0.1", "10.0.0.1:7000", "host/10.0.0.1");
/// reduce them to the bare IP.
fn norm_addr(raw: &str) -> String {
    let s = raw.rsplit('/').next().unwrap_or(raw);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match s.split_once(':') {
        Some((ip, port)) if !port.contains(':') => ip.to_string(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_addresses() {
        assert_eq!(norm_addr("/127.0.0.2"), "127.0.0.2");
        assert_eq!(norm_addr("127.0.0.2:7000"), "127.0.0.2");
        assert_eq!(norm_addr("host/10.1.2.3:7000"), "10.1.2.3");
        assert_eq!(norm_addr("[::1]:7000"), "::1");
        assert_eq!(norm_addr("::1"), "::1");
    }

    #[test]
    fn supports_the_node_scoped_actions_it_implements() -> anyhow::Result<()> {
        let args = args::parse(&[
            "--node-name=n0",
            "--pod-ip=10.0.0.7",
            "--cluster=c1",
            "--seeds=10.0.0.8",
            "--data-dir=/nonexistent/stateward-test",
        ]);
        let c = Cassandra::new(&args)?;
        for kind in [
            ActionKind::Decommission,
            ActionKind::Drain,
            ActionKind::Cleanup,
            ActionKind::UpgradeSstables,
            ActionKind::CassandraAuth,
        ] {
            assert!(c.supports(kind), "{kind:?}");
        }
        for kind in [
            ActionKind::AllocationExclusion,
            ActionKind::VotingExclusion,
            ActionKind::Backup,
            ActionKind::Restore,
        ] {
            assert!(!c.supports(kind), "{kind:?}");
        }
        Ok(())
    }
}
