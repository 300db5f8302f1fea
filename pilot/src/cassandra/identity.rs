//! The node's identity on its data volume: the host ID recorded the first time the node
//! was NORMAL. A later different host ID means the node lost its identity (volume wiped
//! or swapped), which keeps it not ready until a human or the operator decides.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use serde_json::{Value, json};
use tracing::info;

use crate::fsutil::write_atomic;

pub struct Identity {
    path: PathBuf,
    /// The recorded host ID (cached; the file is the truth).
    recorded: Mutex<Option<String>>,
}

impl Identity {
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let recorded = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let id = v
                    .get("hostId")
                    .and_then(Value::as_str)
                    .context("identity.json has no hostId")?;
                Some(id.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(id) = &recorded {
            info!(host_id = %id, "identity recorded on the data volume");
        }
        Ok(Identity {
            path,
            recorded: Mutex::new(recorded),
        })
    }

    /// The recorded host ID; empty when none is.
    pub fn recorded(&self) -> String {
        self.lock().clone().unwrap_or_default()
    }

    /// Records `host_id` if none is yet; reports a different one in `problems`. Returns
    /// the recorded host ID.
    pub fn check(&self, host_id: &str, address: &str, problems: &mut Vec<String>) -> String {
        let mut recorded = self.lock();
        match recorded.as_deref() {
            Some(r) if r != host_id => {
                problems.push(format!(
                    "host ID {host_id} differs from {r} recorded on the data volume"
                ));
            }
            Some(_) => {}
            None => {
                let body = json!({"hostId": host_id, "address": address}).to_string();
                match write_atomic(&self.path, body.as_bytes()) {
                    Ok(()) => {
                        info!(host_id, "recorded this node's identity on the data volume");
                        *recorded = Some(host_id.to_string());
                    }
                    Err(e) => problems.push(format!("recording the host ID: {e:#}")),
                }
            }
        }
        recorded.clone().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned lock only means a panic elsewhere; the value is a plain Option.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_once_then_reports_a_different_host_id() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("stateward-identity-{}", std::process::id()));
        let path = dir.join("identity.json");
        let _ = std::fs::remove_dir_all(&dir);
        let id = Identity::load(path.clone())?;
        assert_eq!(id.recorded(), "");
        let mut problems = Vec::new();
        assert_eq!(id.check("h1", "10.0.0.1", &mut problems), "h1");
        assert!(problems.is_empty());
        let again = Identity::load(path)?;
        assert_eq!(again.check("h2", "10.0.0.1", &mut problems), "h1");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
