//! Drain, cleanup and upgradesstables.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateward_proto::v1::{ActionResult, Verification};
use tracing::{info, warn};

use super::{ACTION_POLL, Cassandra, READ_TIMEOUT, SS, UNREACHABLE_LIMIT};
use crate::driver::{ActionRun, failed, verified};

/// How long a drain may take, the JMX call and the wait for DRAINED together.
const DRAIN_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long one keyspace's cleanup or upgradesstables call may take.
const KEYSPACE_CALL_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// What a drain does, given the node's operation mode when it starts.
#[derive(Debug, PartialEq)]
enum DrainStep {
    /// DRAINED already: only verify (a drain is idempotent).
    Verify,
    /// DRAINING: a drain is under way (asked before a pilot restart); wait for it.
    Follow,
    /// Call drain.
    Issue,
    /// Do nothing: the process is not the one the drain was asked for.
    Refuse(String),
}

/// Decides what a drain does. A drain concerns one run of the database process: when the
/// process started after the drain was accepted (the pod's database container restarted,
/// and a restarted pilot resumes the journalled action), draining the new process would
/// take a fresh node out of service, so the action fails instead; the caller asks again
/// if it still wants a drain.
fn drain_step(
    mode: &str,
    jvm_started_at_ms: Result<i64, String>,
    accepted_at_ms: i64,
) -> DrainStep {
    match mode {
        "DRAINED" => DrainStep::Verify,
        "DRAINING" => DrainStep::Follow,
        _ => match jvm_started_at_ms {
            Ok(started) if started <= accepted_at_ms => DrainStep::Issue,
            Ok(started) => DrainStep::Refuse(format!(
                "Cassandra restarted (JVM start {started} ms) after this drain was accepted \
                 ({accepted_at_ms} ms) and is {mode}: not draining the new process"
            )),
            Err(e) => DrainStep::Refuse(format!(
                "cannot tell whether Cassandra restarted since this drain was accepted: {e}"
            )),
        },
    }
}

impl Cassandra {
    /// Verified by operation mode DRAINED.
    pub(super) async fn drain(&self, run: &ActionRun) -> ActionResult {
        let mode = match self.mode_patiently().await {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        let started = self.jvm_started_at().await;
        match drain_step(&mode, started, run.accepted_at_unix_ms) {
            DrainStep::Verify => info!("drain: already DRAINED; verifying"),
            DrainStep::Refuse(why) => return failed(why),
            DrainStep::Follow => run.progress("a drain is under way; waiting for it", None),
            DrainStep::Issue => {
                run.progress(
                    "draining: flushing memtables, stopping client and gossip traffic",
                    None,
                );
                // Like decommission, the call's return is not the verdict; the mode is.
                if let Err(e) = self.jolokia.exec(SS, "drain", vec![], DRAIN_LIMIT).await {
                    warn!("drain call: {e}");
                }
            }
        }
        self.wait_while_draining().await;
        let mode = self.mode().await;
        verified(vec![Verification {
            check: "this node's operation mode is DRAINED".into(),
            method: format!("Jolokia read {SS} OperationMode"),
            observed: mode
                .as_ref()
                .map(String::clone)
                .unwrap_or_else(|e| e.to_string()),
            passed: mode.as_deref().is_ok_and(|m| m == "DRAINED"),
        }])
    }

    /// Returns once the node is no longer DRAINING (or stopped answering for long, or the
    /// drain took too long); the caller verifies the mode.
    async fn wait_while_draining(&self) {
        let start = Instant::now();
        let mut unreachable_since: Option<Instant> = None;
        while start.elapsed() < DRAIN_LIMIT {
            match self.mode().await {
                Ok(m) if m == "DRAINING" => unreachable_since = None,
                Ok(_) => return,
                Err(_) => {
                    if unreachable_since.get_or_insert_with(Instant::now).elapsed()
                        > UNREACHABLE_LIMIT
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(ACTION_POLL).await;
        }
    }

    /// `forceKeyspaceCleanup` per keyspace; by default every keyspace that is not
    /// node-local, as `nodetool cleanup` (the replicated system ones included).
    pub(super) async fn cleanup(
        &self,
        keyspaces: Vec<String>,
        jobs: u32,
        run: &ActionRun,
    ) -> ActionResult {
        let keyspaces = match self.keyspaces_or(keyspaces, "NonSystemKeyspaces").await {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        if keyspaces.is_empty() {
            // No replicated keyspace: nothing holds data this node could have stopped owning.
            return verified(vec![Verification {
                check: "no replicated keyspace holds data to clean up".into(),
                method: format!("Jolokia read {SS} NonSystemKeyspaces"),
                observed: "none".into(),
                passed: true,
            }]);
        }
        self.per_keyspace(
            &keyspaces,
            run,
            KeyspaceCall {
                what: "cleanup",
                operation: "forceKeyspaceCleanup(int,java.lang.String,[Ljava.lang.String;)",
                arguments: &|ks| vec![json!(jobs), json!(ks), json!([])],
            },
        )
        .await
    }

    /// `upgradeSSTables` per keyspace, rewriting only SSTables not already in the current
    /// format; by default every keyspace, the system ones included, as
    /// `nodetool upgradesstables`.
    pub(super) async fn upgrade_sstables(
        &self,
        keyspaces: Vec<String>,
        jobs: u32,
        run: &ActionRun,
    ) -> ActionResult {
        let keyspaces = match self.keyspaces_or(keyspaces, "Keyspaces").await {
            Ok(k) if k.is_empty() => return failed("Cassandra lists no keyspace"),
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        self.per_keyspace(
            &keyspaces,
            run,
            KeyspaceCall {
                what: "upgradesstables",
                // excludeCurrentVersion=true: SSTables already current are left alone,
                // so running it again (or resuming it) redoes nothing.
                operation: "upgradeSSTables(java.lang.String,boolean,int,[Ljava.lang.String;)",
                arguments: &|ks| vec![json!(ks), json!(true), json!(jobs), json!([])],
            },
        )
        .await
    }

    /// `given` if not empty, else the list in StorageService's `attribute`.
    async fn keyspaces_or(
        &self,
        given: Vec<String>,
        attribute: &str,
    ) -> Result<Vec<String>, String> {
        if !given.is_empty() {
            return Ok(given);
        }
        match self.jolokia.read(SS, attribute, READ_TIMEOUT).await {
            Ok(Value::Array(a)) => Ok(a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()),
            Ok(other) => Err(format!("{attribute}: unexpected value {other}")),
            Err(e) => Err(format!("listing keyspaces ({attribute}): {e}")),
        }
    }

    /// Runs `call` for each keyspace in turn and records one verification per keyspace:
    /// passed when Cassandra returned status 0.
    async fn per_keyspace(
        &self,
        keyspaces: &[String],
        run: &ActionRun,
        call: KeyspaceCall<'_>,
    ) -> ActionResult {
        let mut checks = Vec::new();
        let n = keyspaces.len().max(1);
        for (i, ks) in keyspaces.iter().enumerate() {
            run.progress(
                format!("{} of keyspace {ks}", call.what),
                Some((i * 100 / n) as u32),
            );
            let r = self
                .jolokia
                .exec(
                    SS,
                    call.operation,
                    (call.arguments)(ks),
                    KEYSPACE_CALL_LIMIT,
                )
                .await;
            let (observed, passed) = match &r {
                Ok(v) => (format!("returned {v}"), v.as_i64() == Some(0)),
                Err(e) => (e.to_string(), false),
            };
            checks.push(Verification {
                check: format!("{} of keyspace {ks} completed", call.what),
                method: format!(
                    "Jolokia exec {SS} {}, status 0 means success",
                    call.operation
                ),
                observed,
                passed,
            });
        }
        verified(checks)
    }
}

/// One StorageService operation run per keyspace.
struct KeyspaceCall<'a> {
    what: &'static str,
    operation: &'static str,
    arguments: &'a (dyn Fn(&str) -> Vec<Value> + Sync),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_is_idempotent_and_never_drains_a_newer_process() {
        let accepted = 1_000;
        assert_eq!(
            drain_step("DRAINED", Ok(5_000), accepted),
            DrainStep::Verify
        );
        assert_eq!(
            drain_step("DRAINED", Err("?".into()), accepted),
            DrainStep::Verify
        );
        assert_eq!(drain_step("DRAINING", Ok(500), accepted), DrainStep::Follow);
        assert_eq!(drain_step("NORMAL", Ok(500), accepted), DrainStep::Issue);
        assert_eq!(
            drain_step("NORMAL", Ok(accepted), accepted),
            DrainStep::Issue
        );
        assert!(matches!(
            drain_step("NORMAL", Ok(5_000), accepted),
            DrainStep::Refuse(why) if why.contains("restarted")
        ));
        assert!(matches!(
            drain_step("NORMAL", Err("timeout".into()), accepted),
            DrainStep::Refuse(_)
        ));
    }
}
