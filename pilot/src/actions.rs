//! Actions and their journal.
//!
//! Every action is addressed by the caller's ID and recorded in the journal on the data
//! volume (`<data>/stateward/actions/<id>.pb`, the `ActionState` message, written
//! atomically) before anything is done, and after every change. A restarted pilot loads
//! the journal, reports finished actions exactly as they ended, and resumes unfinished
//! ones by running the driver again, which starts from the database's current state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use prost::Message;
use stateward_proto::v1::{ActionPhase, ActionResult, ActionSpec, ActionState, ActionSummary};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::driver::{ActionRun, Driver, Progress};
use crate::fsutil::{now_ms, write_atomic};
use crate::metrics::PilotMetrics;

/// Journal entries of finished actions are kept this long, then pruned at startup.
const KEEP_FINISHED_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid action id {0:?}: 1-128 characters of [A-Za-z0-9._-]")]
    InvalidId(String),
    #[error("the action has no spec")]
    MissingSpec,
    #[error("action {0} exists with a different spec")]
    Conflict(String),
    #[error("action {0} is running; one action at a time")]
    Busy(String),
    #[error("this database does not support {0:?}")]
    Unsupported(String),
    #[error("journal: {0:#}")]
    Journal(anyhow::Error),
}

struct Entry {
    tx: watch::Sender<ActionState>,
}

struct Inner<D> {
    driver: Arc<D>,
    metrics: Arc<PilotMetrics>,
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

pub struct ActionManager<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for ActionManager<D> {
    fn clone(&self) -> Self {
        ActionManager {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Driver> ActionManager<D> {
    /// Loads the journal and resumes unfinished actions.
    pub async fn open(
        driver: Arc<D>,
        dir: &Path,
        metrics: Arc<PilotMetrics>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut entries = HashMap::new();
        let mut unfinished = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "pb") {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            // A journal entry that cannot be read is an unknown: refuse to start rather
            // than forget an action that may be half done.
            let state = ActionState::decode(bytes.as_slice())
                .with_context(|| format!("decoding journal entry {}", path.display()))?;
            let phase = state.phase();
            if phase.is_terminal()
                && state
                    .finished_at_unix_ms
                    .is_some_and(|t| now_ms() - t > KEEP_FINISHED_MS)
            {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !phase.is_terminal() {
                unfinished.push(state.action_id.clone());
            }
            let (tx, _) = watch::channel(state.clone());
            entries.insert(state.action_id.clone(), Entry { tx });
        }
        let manager = ActionManager {
            inner: Arc::new(Inner {
                driver,
                metrics,
                dir: dir.to_path_buf(),
                entries: Mutex::new(entries),
            }),
        };
        for id in unfinished {
            info!(action = %id, "resuming an unfinished action from the journal");
            manager.spawn_run(id, true);
        }
        Ok(manager)
    }

    /// Starts an action, or returns the existing one with the same ID (idempotent).
    pub fn start(&self, id: &str, spec: Option<ActionSpec>) -> Result<ActionState, StartError> {
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(StartError::InvalidId(id.to_string()));
        }
        let spec = spec
            .filter(|s| s.action.is_some())
            .ok_or(StartError::MissingSpec)?;
        let mut entries = self.lock();
        if let Some(e) = entries.get(id) {
            let state = e.tx.borrow().clone();
            return if state.spec.as_ref() == Some(&spec) {
                Ok(state)
            } else {
                Err(StartError::Conflict(id.to_string()))
            };
        }
        if !self.inner.driver.supports(spec.kind()) {
            return Err(StartError::Unsupported(
                spec.kind().as_str_name().to_string(),
            ));
        }
        if let Some((busy, _)) = entries
            .iter()
            .find(|(_, e)| !e.tx.borrow().phase().is_terminal())
        {
            return Err(StartError::Busy(busy.clone()));
        }
        let now = now_ms();
        let state = ActionState {
            action_id: id.to_string(),
            kind: spec.kind() as i32,
            spec: Some(spec),
            phase: ActionPhase::Pending as i32,
            message: "accepted".into(),
            created_at_unix_ms: now,
            updated_at_unix_ms: now,
            ..Default::default()
        };
        // Recorded before anything runs: an action the caller was told about is never lost.
        self.persist(&state).map_err(StartError::Journal)?;
        let (tx, _) = watch::channel(state.clone());
        entries.insert(id.to_string(), Entry { tx });
        drop(entries);
        self.spawn_run(id.to_string(), false);
        Ok(state)
    }

    pub fn get(&self, id: &str) -> Option<ActionState> {
        self.lock().get(id).map(|e| e.tx.borrow().clone())
    }

    pub fn watch(&self, id: &str) -> Option<watch::Receiver<ActionState>> {
        self.lock().get(id).map(|e| e.tx.subscribe())
    }

    /// The running action, for the node status.
    pub fn in_progress(&self) -> Option<ActionSummary> {
        self.lock().values().find_map(|e| {
            let s = e.tx.borrow();
            (!s.phase().is_terminal()).then(|| ActionSummary {
                action_id: s.action_id.clone(),
                kind: s.kind,
                phase: s.phase,
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself
        // is always consistent (single inserts), so keep going.
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &ActionState) -> anyhow::Result<()> {
        let path = self.inner.dir.join(format!("{}.pb", state.action_id));
        write_atomic(&path, &state.encode_to_vec())
    }

    /// Applies `f` to the action's state, records it in the journal, then publishes it.
    fn update(&self, id: &str, f: impl FnOnce(&mut ActionState)) {
        let entries = self.lock();
        let Some(e) = entries.get(id) else { return };
        let mut state = e.tx.borrow().clone();
        f(&mut state);
        state.updated_at_unix_ms = now_ms();
        if let Err(err) = self.persist(&state) {
            // The watchers still learn the truth; the journal will be rewritten on the
            // next change. Logged loudly because a restart now would resume from older state.
            error!(action = %id, "writing the journal failed: {err:#}");
        }
        e.tx.send_replace(state);
    }

    fn spawn_run(&self, id: String, resumed: bool) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some((spec, accepted_at_unix_ms)) = this
                .get(&id)
                .and_then(|s| Some((s.spec?, s.created_at_unix_ms)))
            else {
                return;
            };
            this.update(&id, |s| {
                s.phase = ActionPhase::Running as i32;
                s.attempts += 1;
                s.message = if resumed {
                    "resumed after a pilot restart".into()
                } else {
                    "running".into()
                };
            });
            let progress: Progress = {
                let this = this.clone();
                let id = id.clone();
                Arc::new(move |message: String, percent: Option<u32>| {
                    this.update(&id, |s| {
                        s.message = message;
                        s.progress_percent = percent;
                    });
                })
            };
            // The driver runs on its own task so a panic in it becomes a failed action
            // instead of an action stuck RUNNING.
            let driver = this.inner.driver.clone();
            let run = ActionRun {
                progress,
                accepted_at_unix_ms,
            };
            let result = match tokio::spawn(async move { driver.run_action(spec, run).await }).await
            {
                Ok(r) => r,
                Err(e) => ActionResult {
                    success: false,
                    error: format!("the action's task failed: {e}"),
                    ..Default::default()
                },
            };
            this.finish(&id, result);
        });
    }

    /// Records the action's final result.
    fn finish(&self, id: &str, result: ActionResult) {
        if result.success {
            info!(action = %id, "action succeeded");
        } else {
            warn!(action = %id, error = %result.error, "action failed");
        }
        if let Some(state) = self.get(id) {
            let took = now_ms().saturating_sub(state.created_at_unix_ms);
            let kind = state
                .spec
                .as_ref()
                .map(ActionSpec::kind)
                .unwrap_or_default();
            let took = std::time::Duration::from_millis(u64::try_from(took).unwrap_or(0));
            self.inner
                .metrics
                .action_finished(kind, result.success, took);
        }
        self.update(id, |s| {
            s.phase = if result.success {
                ActionPhase::Succeeded
            } else {
                ActionPhase::Failed
            } as i32;
            s.message = if result.success {
                "verified".into()
            } else {
                result.error.clone()
            };
            s.finished_at_unix_ms = Some(now_ms());
            if result.success {
                s.progress_percent = Some(100);
            }
            s.result = Some(result);
        });
    }
}
