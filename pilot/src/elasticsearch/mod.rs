//! The Elasticsearch driver: observes and acts through the node's REST API on loopback,
//! JSON only (no `_cat` text is parsed: every `_cat` call asks for `format=json`).
//!
//! - [`observe`]: the node's status;
//! - [`exclusions`]: the cluster-scoped allocation and voting exclusions;
//! - [`maintenance`]: decommission (verify only), drain, resume, and the flush before a stop;
//! - [`model`]: the REST answers, parsed;
//! - [`render`]: the configuration, rendered before Elasticsearch starts.

mod args;
mod exclusions;
mod maintenance;
mod model;
mod observe;
pub mod render;
mod rest;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use stateward_proto::v1::action_spec::Action;
use stateward_proto::v1::{
    ActionKind, ActionResult, ActionSpec, DatabaseKind, NodeStatus, Verification,
};
use tracing::info;

pub use self::args::Args;
use self::model::{AllocationSettings, ClusterView, Health, LocalNode, Shards};
use self::rest::{Rest, RestError};
use crate::driver::{ActionRun, Driver, failed};

const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read that needs the elected master waits for one on the Elasticsearch side;
/// below [`READ_TIMEOUT`], so Elasticsearch answers (with an error) before the pilot gives up.
const MASTER_TIMEOUT: &str = "2s";
/// How long Elasticsearch may not answer during an action before its outcome counts as
/// unknown, which fails the action (fail closed).
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);
const ACTION_POLL: Duration = Duration::from_secs(1);

const NODES_LOCAL: &str =
    "/_nodes/_local?filter_path=cluster_name,nodes.*.name,nodes.*.roles,nodes.*.version";
const STATE_FILTER: &str = "filter_path=cluster_uuid,master_node,nodes.*.name,metadata.cluster_uuid,\
metadata.cluster_coordination,metadata.indices.*.settings.index.auto_expand_replicas";
const SETTINGS: &str = "/_cluster/settings?flat_settings=true&include_defaults=false";
/// The disk threshold, defaults included (nested form: `filter_path` cannot name a flat key).
pub(crate) const DISK_SETTINGS: &str = "/_cluster/settings?include_defaults=true&\
filter_path=*.cluster.routing.allocation.disk.threshold_enabled,*.cluster.routing.allocation.disk.watermark.low";
const SHARDS: &str = "/_cat/shards?format=json&bytes=b&h=index,shard,prirep,state,node,store";
const INDICES: &str =
    "/_cat/indices?format=json&bytes=b&expand_wildcards=all&h=index,pri,rep,store.size";

/// A read that failed: Elasticsearch did not answer, answered an error, or answered
/// something unexpected.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("{0}")]
    Parse(String),
}

impl ReadError {
    fn is_unreachable(&self) -> bool {
        matches!(self, ReadError::Rest(e) if e.is_unreachable())
    }
}

pub struct Elasticsearch {
    rest: Rest,
    node_name: String,
    /// Node ID → name of every node seen in this pilot's life: node IDs are persistent, so
    /// a voting configuration that still names a node that left can be read by name.
    known_names: Mutex<BTreeMap<String, String>>,
}

impl Elasticsearch {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        Ok(Elasticsearch {
            rest: Rest::new(args.http_endpoint()),
            node_name: args.common.node_name.clone(),
            known_names: Mutex::new(BTreeMap::new()),
        })
    }

    async fn read<T>(
        &self,
        path: &str,
        parse: fn(&Value) -> Result<T, String>,
    ) -> Result<T, ReadError> {
        let v = self.rest.get(path, READ_TIMEOUT).await?;
        parse(&v).map_err(ReadError::Parse)
    }

    async fn local_node(&self) -> Result<LocalNode, ReadError> {
        self.read(NODES_LOCAL, model::local_node).await
    }

    /// The cluster state: this node's own copy (`local`, for the status: no load on the
    /// master, and what this node believes), or the elected master's (for an action's
    /// verdict).
    async fn cluster(&self, local: bool) -> Result<ClusterView, ReadError> {
        let path = if local {
            format!("/_cluster/state/master_node,nodes,metadata?local=true&{STATE_FILTER}")
        } else {
            format!(
                "/_cluster/state/master_node,nodes,metadata?master_timeout={MASTER_TIMEOUT}&{STATE_FILTER}"
            )
        };
        let view = self.read(&path, model::cluster_view).await?;
        let mut known = self.known_names.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(view.nodes.iter().map(|(k, v)| (k.clone(), v.clone())));
        known.extend(
            view.voting_exclusions
                .iter()
                .filter(|(id, _)| id != "_absent_" && !id.is_empty())
                .cloned(),
        );
        Ok(view)
    }

    fn name_of(&self, id: &str) -> Option<String> {
        self.known_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    async fn settings(&self) -> Result<AllocationSettings, ReadError> {
        let path = format!("{SETTINGS}&master_timeout={MASTER_TIMEOUT}");
        self.read(&path, model::allocation_settings).await
    }

    async fn shards(&self) -> Result<Shards, ReadError> {
        let path = format!("{SHARDS}&master_timeout={MASTER_TIMEOUT}");
        self.read(&path, model::shards).await
    }

    async fn health(&self, local: bool) -> Result<Health, ReadError> {
        let path = if local {
            "/_cluster/health?local=true".to_string()
        } else {
            format!("/_cluster/health?master_timeout={MASTER_TIMEOUT}")
        };
        self.read(&path, model::health).await
    }

    /// This node's description, waiting up to [`UNREACHABLE_LIMIT`] for Elasticsearch to
    /// answer (an action started right after a restart of either container).
    async fn local_node_patiently(&self) -> Result<LocalNode, String> {
        let start = Instant::now();
        loop {
            match self.local_node().await {
                Ok(n) => return Ok(n),
                Err(e) if start.elapsed() > UNREACHABLE_LIMIT => {
                    return Err(format!("Elasticsearch does not answer: {e}"));
                }
                Err(_) => tokio::time::sleep(ACTION_POLL).await,
            }
        }
    }

    /// Sets (or with `None` removes) a persistent cluster setting.
    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<(), RestError> {
        let body = serde_json::json!({ "persistent": { key: value } });
        self.rest
            .put(
                "/_cluster/settings?master_timeout=30s",
                body,
                Duration::from_secs(40),
            )
            .await
            .map(|_| ())
    }
}

/// Tracks how long Elasticsearch has not answered during an action.
#[derive(Default)]
struct Unreachable(Option<Instant>);

impl Unreachable {
    /// Records a reading; returns an error once Elasticsearch has not answered for longer
    /// than [`UNREACHABLE_LIMIT`].
    fn note<T>(&mut self, r: &Result<T, ReadError>) -> Result<(), String> {
        match r {
            Err(e) if e.is_unreachable() => {
                if self.0.get_or_insert_with(Instant::now).elapsed() > UNREACHABLE_LIMIT {
                    return Err(format!(
                        "Elasticsearch did not answer for {UNREACHABLE_LIMIT:?}: {e}"
                    ));
                }
            }
            _ => self.0 = None,
        }
        Ok(())
    }
}

/// Fails an action after its checks were made: the last checks are kept as evidence.
fn failed_with(error: impl Into<String>, checks: Vec<Verification>) -> ActionResult {
    ActionResult {
        success: false,
        verifications: checks,
        error: error.into(),
    }
}

/// The node names of an exclusion action: trimmed, without empty entries or duplicates.
fn name_set(names: &[String]) -> std::collections::BTreeSet<String> {
    names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(",")
    }
}

impl Driver for Elasticsearch {
    fn kind(&self) -> DatabaseKind {
        DatabaseKind::Elasticsearch
    }

    async fn observe(&self) -> NodeStatus {
        self.observe_node().await
    }

    async fn process_answers(&self) -> bool {
        self.local_node().await.is_ok()
    }

    fn supports(&self, kind: ActionKind) -> bool {
        matches!(
            kind,
            ActionKind::Decommission
                | ActionKind::Drain
                | ActionKind::Resume
                | ActionKind::AllocationExclusion
                | ActionKind::VotingExclusion
        )
    }

    async fn run_action(&self, spec: ActionSpec, run: ActionRun) -> ActionResult {
        match spec.action {
            // `force` is Cassandra's: Elasticsearch's decommission changes nothing.
            Some(Action::Decommission(_)) => self.verify_decommission(&run).await,
            Some(Action::Drain(_)) => self.drain(&run).await,
            Some(Action::Resume(r)) => self.resume(&r.min_health, &run).await,
            Some(Action::AllocationExclusion(a)) => {
                self.allocation_exclusion(name_set(&a.node_names), &run)
                    .await
            }
            Some(Action::VotingExclusion(v)) => {
                self.voting_exclusion(name_set(&v.node_names), &run).await
            }
            other => failed(format!("Elasticsearch does not support {other:?}")),
        }
    }

    async fn prepare_stop(&self) -> anyhow::Result<()> {
        match self.local_node().await {
            Err(e) if e.is_unreachable() => return Ok(()),
            Err(e) => anyhow::bail!("reading the local node: {e}"),
            Ok(_) => {}
        }
        info!("flushing Elasticsearch before it stops");
        let (total, ok, failed) = self.flush().await.map_err(anyhow::Error::msg)?;
        if failed > 0 {
            anyhow::bail!("flush failed on {failed} of {total} shard copies ({ok} flushed)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supports_exactly_what_it_implements() -> anyhow::Result<()> {
        let args = args::parse(&[
            "--node-name=es-0",
            "--pod-ip=10.0.0.7",
            "--cluster=c1",
            "--pool=p",
            "--seed-hosts=c1-discovery",
        ]);
        let es = Elasticsearch::new(&args)?;
        for kind in [
            ActionKind::Decommission,
            ActionKind::Drain,
            ActionKind::Resume,
            ActionKind::AllocationExclusion,
            ActionKind::VotingExclusion,
        ] {
            assert!(es.supports(kind), "{kind:?}");
        }
        for kind in [
            ActionKind::Cleanup,
            ActionKind::UpgradeSstables,
            ActionKind::Backup,
            ActionKind::Restore,
        ] {
            assert!(!es.supports(kind), "{kind:?}");
        }
        assert_eq!(args.http_endpoint().to_string(), "127.0.0.1:9200");
        assert!(args.role_list().is_empty());
        Ok(())
    }

    #[test]
    fn name_sets_are_trimmed_and_deduplicated() {
        let s = name_set(&[" es-2".into(), "es-1".into(), "".into(), "es-2".into()]);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["es-1", "es-2"]);
        assert_eq!(list(Vec::<String>::new()), "(none)");
    }
}
