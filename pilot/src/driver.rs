//! The one seam between the database-neutral pilot and a database driver (one
//! subdirectory per database, picked in `main.rs`).

use std::future::Future;
use std::sync::Arc;

use stateward_proto::v1::{
    ActionKind, ActionResult, ActionSpec, DatabaseKind, NodeStatus, Verification,
};

/// Reports an action's progress: a message for humans and an optional percentage.
pub type Progress = Arc<dyn Fn(String, Option<u32>) + Send + Sync>;

/// What a driver learns about the run of an action besides its spec.
#[derive(Clone)]
pub struct ActionRun {
    pub progress: Progress,
    /// When the pilot accepted the action (journal time, ms since the epoch). A driver
    /// compares it with the database process's start to tell whether the process it
    /// finds is the one the action was asked for.
    pub accepted_at_unix_ms: i64,
}

impl ActionRun {
    pub fn progress(&self, message: impl Into<String>, percent: Option<u32>) {
        (self.progress)(message.into(), percent);
    }
}

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
        run: ActionRun,
    ) -> impl Future<Output = ActionResult> + Send;

    /// Brings the database to a state where stopping it loses nothing (e.g. a drain).
    /// Nothing to do if the database does not run or is already there.
    fn prepare_stop(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// An action that failed before (or without) any verification of its end state.
pub fn failed(error: impl Into<String>) -> ActionResult {
    ActionResult {
        success: false,
        verifications: vec![],
        error: error.into(),
    }
}

/// The verdict of an action's checks: success only if there is at least one check and
/// every one passed.
pub fn verified(checks: Vec<Verification>) -> ActionResult {
    let failed_checks: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    ActionResult {
        success: !checks.is_empty() && failed_checks.is_empty(),
        error: if failed_checks.is_empty() {
            String::new()
        } else {
            format!("not verified: {}", failed_checks.join("; "))
        },
        verifications: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(passed: bool) -> Verification {
        Verification {
            check: format!("passed={passed}"),
            passed,
            ..Default::default()
        }
    }

    #[test]
    fn verdict_needs_checks_and_all_passed() {
        assert!(!verified(vec![]).success);
        assert!(verified(vec![check(true), check(true)]).success);
        let r = verified(vec![check(true), check(false)]);
        assert!(!r.success);
        assert_eq!(r.error, "not verified: passed=false");
    }
}
