//! Whether the operator can act, for `/readyz`: the caches of owned objects and each
//! controller's cache of clusters say when their first list finished, and each controller
//! when it stops. Ready means everything started is synced and still running.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerState {
    /// Started; the first list of its resources has not completed (not reachable, not
    /// permitted, or the CRD is missing: the log says which).
    Starting,
    /// Its cache holds every cluster of its kind.
    Synced,
    /// Its loop ended (shutdown, or it failed for good).
    Stopped,
}

impl ControllerState {
    fn word(self) -> &'static str {
        match self {
            ControllerState::Starting => "starting (its first list is not complete)",
            ControllerState::Synced => "synced",
            ControllerState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Default)]
pub struct Readiness {
    controllers: Mutex<BTreeMap<String, ControllerState>>,
}

impl Readiness {
    pub fn set(&self, kind: &str, state: ControllerState) {
        self.controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_string(), state);
    }

    /// Ready or not, and one line per controller saying why.
    pub fn report(&self) -> (bool, String) {
        let controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        if controllers.is_empty() {
            return (false, "no controller started yet\n".into());
        }
        let ready = controllers.values().all(|s| *s == ControllerState::Synced);
        let text = controllers
            .iter()
            .map(|(kind, state)| format!("{kind}: {}\n", state.word()))
            .collect();
        (ready, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_started_controller_is_synced() {
        let r = Readiness::default();
        assert!(!r.report().0);
        r.set("CassandraCluster", ControllerState::Synced);
        r.set("ElasticsearchCluster", ControllerState::Starting);
        let (ready, text) = r.report();
        assert!(!ready);
        assert!(text.contains("ElasticsearchCluster: starting"), "{text}");
        r.set("ElasticsearchCluster", ControllerState::Synced);
        assert_eq!(
            r.report(),
            (
                true,
                "CassandraCluster: synced\nElasticsearchCluster: synced\n".into()
            )
        );
        r.set("CassandraCluster", ControllerState::Stopped);
        assert!(!r.report().0);
    }
}
