//! The one seam between the database-neutral pilot and a database: Cassandra implements
//! it now, Elasticsearch next.

use std::future::Future;
use std::sync::Arc;

use stateward_proto::v1::{ActionKind, ActionResult, ActionSpec, DatabaseKind, NodeStatus};

/// Reports an action's progress: a message for humans and an optional percentage.
pub type Progress = Arc<dyn Fn(String, Option<u32>) + Send + Sync>;

pub trait Driver: Send + Sync + 'static {
    fn kind(&self) -> DatabaseKind;

    /// Observes the node now. Fills the database-dependent fields of [`NodeStatus`]
    /// (process state, readiness, version, data bytes, detail, problems); the pilot fills
    /// the rest. Never fails: what cannot be observed is reported in `problems`.
    fn observe(&self) -> impl Future<Output = NodeStatus> + Send;

    /// True if the database process answers at all (liveness).
    fn process_answers(&self) -> impl Future<Output = bool> + Send;

    /// Whether this driver implements `kind`.
    fn supports(&self, kind: ActionKind) -> bool;

    /// Runs an action to its verified end. Must be safe to call again for the same spec
    /// after a pilot restart (the journal resumes unfinished actions by calling it again):
    /// it starts from what the database reports now, not from what the pilot remembers.
    fn run_action(
        &self,
        spec: ActionSpec,
        progress: Progress,
    ) -> impl Future<Output = ActionResult> + Send;

    /// Brings the database to a state where stopping it loses nothing (Cassandra: drain).
    /// Nothing to do if the database does not run.
    fn prepare_stop(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}
