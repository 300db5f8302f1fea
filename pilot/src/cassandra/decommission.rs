//! Decommission: the node streams its data to the others and leaves the ring. Success is
//! what the node shows afterwards (mode DECOMMISSIONED, no token owned), never the JMX
//! call returning.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateward_proto::v1::{ActionResult, Verification};
use tokio::task::JoinHandle;
use tracing::info;

use super::jolokia::JolokiaError;
use super::{ACTION_POLL, Cassandra, READ_TIMEOUT, SS, UNREACHABLE_LIMIT, norm_addr};
use crate::driver::{ActionRun, failed, verified};

/// How long after the call returned the node may still show another mode than LEAVING or
/// DECOMMISSIONED before the decommission counts as failed.
const RETURNED_GRACE: Duration = Duration::from_secs(30);

type Exec = JoinHandle<Result<Value, JolokiaError>>;

/// What became of the decommission call, as far as the pilot knows.
#[derive(Debug, Default)]
struct CallState {
    /// This pilot process issued the call (it may still run).
    issued: bool,
    /// When the call returned without an error.
    returned: Option<Instant>,
    /// The call's error.
    error: Option<String>,
}

/// The verdict on one reading of the operation mode while a decommission runs.
#[derive(Debug, PartialEq)]
enum Verdict {
    Done,
    Continue,
    Fail(String),
}

fn judge(mode: &str, call: &CallState) -> Verdict {
    match mode {
        "DECOMMISSIONED" => Verdict::Done,
        "DECOMMISSION_FAILED" => Verdict::Fail(format!(
            "Cassandra reports DECOMMISSION_FAILED{}",
            call.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
        "LEAVING" => Verdict::Continue,
        other => {
            if let Some(e) = &call.error {
                Verdict::Fail(format!(
                    "decommission refused or failed: {e} (mode {other})"
                ))
            } else if !call.issued {
                // Found LEAVING at the start, now something else: not ours to wait for.
                Verdict::Fail(format!("decommission stopped: the node is {other} again"))
            } else if call.returned.is_some_and(|t| t.elapsed() > RETURNED_GRACE) {
                Verdict::Fail(format!("decommission returned but the node is {other}"))
            } else {
                // Called moments ago: the mode has not changed yet.
                Verdict::Continue
            }
        }
    }
}

impl Cassandra {
    pub(super) async fn decommission(&self, force: bool, run: &ActionRun) -> ActionResult {
        let initial = match self.mode_patiently().await {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        let exec = match initial.as_str() {
            "NORMAL" => {
                // The last check before the point of no return, on a fresh schema reading: the
                // operator decided on a reading up to seconds old, and `force` skips Cassandra's
                // own replication check (needed for its system keyspaces only).
                if let Err(refusal) = self.check_user_replication().await {
                    return failed(refusal);
                }
                run.progress(format!("starting decommission (force={force})"), None);
                Some(self.spawn_decommission(force))
            }
            "LEAVING" => {
                run.progress("decommission already under way; watching it", None);
                None
            }
            "DECOMMISSIONED" => {
                run.progress("already decommissioned; verifying", None);
                None
            }
            other => {
                return failed(format!(
                    "cannot decommission a node in operation mode {other}"
                ));
            }
        };
        if initial != "DECOMMISSIONED"
            && let Err(e) = self.watch_decommission(exec, run).await
        {
            return failed(e);
        }
        run.progress("decommissioned; verifying", Some(95));
        self.verify_decommissioned().await
    }

    /// The JMX call blocks until the node has left (minutes to hours); it runs on its own
    /// task while the mode is watched. Its return is only a hint.
    fn spawn_decommission(&self, force: bool) -> Exec {
        let jolokia = self.jolokia.clone();
        tokio::spawn(async move {
            jolokia
                .exec(
                    SS,
                    "decommission(boolean)",
                    vec![json!(force)],
                    Duration::from_secs(7 * 24 * 3600),
                )
                .await
        })
    }

    /// Watches the operation mode until the node is DECOMMISSIONED, or why not.
    async fn watch_decommission(
        &self,
        mut exec: Option<Exec>,
        run: &ActionRun,
    ) -> Result<(), String> {
        let mut call = CallState {
            issued: exec.is_some(),
            ..Default::default()
        };
        let mut unreachable_since: Option<Instant> = None;
        let mut last_mode = String::new();
        loop {
            if let Some(task) = exec.take_if(|t| t.is_finished()) {
                match task.await {
                    Ok(Ok(_)) => call.returned = Some(Instant::now()),
                    Ok(Err(e)) => call.error = Some(e.to_string()),
                    Err(e) => call.error = Some(format!("decommission task: {e}")),
                }
            }
            match self.mode().await {
                Ok(m) => {
                    unreachable_since = None;
                    if m != last_mode {
                        info!(mode = %m, "decommission: operation mode");
                        if m == "LEAVING" {
                            run.progress(
                                "leaving the ring: streaming data to the other nodes",
                                None,
                            );
                        }
                        last_mode = m.clone();
                    }
                    match judge(&m, &call) {
                        Verdict::Done => return Ok(()),
                        Verdict::Fail(e) => return Err(e),
                        Verdict::Continue => {}
                    }
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNREACHABLE_LIMIT {
                        return Err(format!(
                            "Cassandra stopped answering during decommission, outcome unknown: {e}"
                        ));
                    }
                }
            }
            tokio::time::sleep(ACTION_POLL).await;
        }
    }

    async fn verify_decommissioned(&self) -> ActionResult {
        let mode = self.mode().await;
        let mut checks = vec![Verification {
            check: "this node's operation mode is DECOMMISSIONED".into(),
            method: format!("Jolokia read {SS} OperationMode"),
            observed: mode
                .as_ref()
                .map(String::clone)
                .unwrap_or_else(|e| e.to_string()),
            passed: mode.as_deref().is_ok_and(|m| m == "DECOMMISSIONED"),
        }];
        let me = norm_addr(&self.address);
        let ring = self
            .jolokia
            .read(SS, "TokenToEndpointMap", READ_TIMEOUT)
            .await;
        let (observed, passed) = match &ring {
            Ok(Value::Object(m)) => {
                let owned = m
                    .values()
                    .filter(|e| e.as_str().is_some_and(|e| norm_addr(e) == me))
                    .count();
                (
                    format!("{owned} of {} tokens owned by {me}", m.len()),
                    owned == 0,
                )
            }
            Ok(other) => (format!("unexpected value {other}"), false),
            Err(e) => (e.to_string(), false),
        };
        checks.push(Verification {
            check: "this node owns no token in its own ring view".into(),
            method: format!("Jolokia read {SS} TokenToEndpointMap"),
            observed,
            passed,
        });
        verified(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_the_mode_against_the_call() {
        let none = CallState::default();
        let issued = CallState {
            issued: true,
            ..Default::default()
        };
        assert_eq!(judge("DECOMMISSIONED", &none), Verdict::Done);
        assert_eq!(judge("LEAVING", &none), Verdict::Continue);
        assert!(matches!(
            judge("DECOMMISSION_FAILED", &issued),
            Verdict::Fail(_)
        ));
        // Just called: NORMAL for a moment is expected.
        assert_eq!(judge("NORMAL", &issued), Verdict::Continue);
        // Resumed (not issued here) and back to NORMAL: stopped.
        assert!(matches!(judge("NORMAL", &none), Verdict::Fail(_)));
        let refused = CallState {
            issued: true,
            error: Some("refused".into()),
            ..Default::default()
        };
        assert!(matches!(judge("NORMAL", &refused), Verdict::Fail(e) if e.contains("refused")));
        let returned_long_ago = CallState {
            issued: true,
            returned: Instant::now().checked_sub(RETURNED_GRACE * 2),
            ..Default::default()
        };
        if returned_long_ago.returned.is_some() {
            assert!(matches!(
                judge("NORMAL", &returned_long_ago),
                Verdict::Fail(_)
            ));
        }
    }
}
