//! Whether the operator can act, for `/readyz`: the caches of owned objects and each
//! controller's cache of clusters say when their first list finished, and each controller
//! when it stops. Ready means everything started is synced and still running.
//!
//! With leader election, a standby that can read the lease is ready too (it is what takes over;
//! `helm --wait` waits for every replica); a replica that cannot read it is not.

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

/// Where this replica stands in the leader election (absent when it is off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Trying to take the lease; the reason it cannot yet.
    Candidate(String),
    /// Another replica (named) holds the lease.
    Standby(String),
    Leading,
}

impl Leadership {
    fn line(&self) -> String {
        match self {
            Leadership::Candidate(reason) => format!("leader election: candidate ({reason})\n"),
            Leadership::Standby(holder) => format!(
                "leader election: standby ({holder} leads; this replica takes over if it stops \
                 renewing the lease)\n"
            ),
            Leadership::Leading => "leader election: leading\n".into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Readiness {
    controllers: Mutex<BTreeMap<String, ControllerState>>,
    leadership: Mutex<Option<Leadership>>,
}

impl Readiness {
    pub fn set(&self, kind: &str, state: ControllerState) {
        self.controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_string(), state);
    }

    pub fn set_leadership(&self, leadership: Leadership) {
        *self.leadership.lock().unwrap_or_else(|p| p.into_inner()) = Some(leadership);
    }

    pub fn leading(&self) -> Option<bool> {
        let leadership = self.leadership.lock().unwrap_or_else(|p| p.into_inner());
        leadership.as_ref().map(|l| *l == Leadership::Leading)
    }

    /// Ready or not, and one line per controller saying why.
    pub fn report(&self) -> (bool, String) {
        let leadership = self
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let head = leadership
            .as_ref()
            .map(Leadership::line)
            .unwrap_or_default();
        match leadership {
            Some(Leadership::Candidate(_)) => return (false, head),
            Some(Leadership::Standby(_)) => return (true, head),
            Some(Leadership::Leading) | None => {}
        }
        let controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        if controllers.is_empty() {
            return (false, format!("{head}no controller started yet\n"));
        }
        let ready = controllers.values().all(|s| *s == ControllerState::Synced);
        let text = controllers
            .iter()
            .map(|(kind, state)| format!("{kind}: {}\n", state.word()))
            .collect::<String>();
        (ready, head + &text)
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

    #[test]
    fn a_standby_is_ready_a_candidate_is_not_and_a_leader_needs_its_controllers() {
        let r = Readiness::default();
        r.set_leadership(Leadership::Candidate("forbidden".into()));
        assert_eq!(
            r.report(),
            (false, "leader election: candidate (forbidden)\n".into())
        );
        r.set_leadership(Leadership::Standby("pod-a".into()));
        let (ready, text) = r.report();
        assert!(ready && text.contains("standby (pod-a leads"), "{text}");
        r.set_leadership(Leadership::Leading);
        assert!(!r.report().0, "no controller yet");
        r.set("CassandraCluster", ControllerState::Synced);
        assert_eq!(
            r.report(),
            (
                true,
                "leader election: leading\nCassandraCluster: synced\n".into()
            )
        );
        assert_eq!(r.leading(), Some(true));
    }
}
