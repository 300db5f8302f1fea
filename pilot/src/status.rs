//! Observes the node on a short interval and publishes every change, so watchers learn
//! of a failure within about one poll interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stateward_proto::v1::{NodeStatus, ProcessState};
use tokio::sync::watch;

use crate::actions::ActionManager;
use crate::driver::Driver;
use crate::fsutil::{disk_space, now_ms};

/// Who this pilot runs as, from the pod's environment; reported as is.
#[derive(Clone, Debug, Default)]
pub struct PodIdentity {
    pub node_name: String,
    pub pod_uid: String,
    pub template_revision: String,
}

impl PodIdentity {
    fn stamp(&self, s: &mut NodeStatus) {
        s.node_name = self.node_name.clone();
        s.pod_uid = self.pod_uid.clone();
        s.template_revision = self.template_revision.clone();
    }
}

#[derive(Clone)]
pub struct StatusHub {
    tx: Arc<watch::Sender<NodeStatus>>,
}

impl StatusHub {
    pub fn start<D: Driver>(
        driver: Arc<D>,
        actions: ActionManager<D>,
        pod: PodIdentity,
        data_dir: PathBuf,
        interval: Duration,
    ) -> Self {
        let instance = instance_id();
        let mut initial = NodeStatus {
            database: driver.kind() as i32,
            pilot_instance_id: instance.clone(),
            problems: vec!["not observed yet".into()],
            not_ready_reason: "not observed yet".into(),
            ..Default::default()
        };
        pod.stamp(&mut initial);
        let (tx, _) = watch::channel(initial);
        let tx = Arc::new(tx);
        let hub = StatusHub { tx: tx.clone() };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sequence = 0u64;
            loop {
                ticker.tick().await;
                let mut s = observe(driver.as_ref(), &tx, &mut sequence).await;
                pod.stamp(&mut s);
                s.database = driver.kind() as i32;
                s.pilot_instance_id = instance.clone();
                if let Some((free, total)) = disk_space(&data_dir) {
                    s.free_disk_bytes = Some(free);
                    s.total_disk_bytes = Some(total);
                }
                s.action_in_progress = actions.in_progress();
                s.observed_at_unix_ms = now_ms();
                publish(&tx, s, &mut sequence);
            }
        });
        hub
    }

    pub fn latest(&self) -> NodeStatus {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.tx.subscribe()
    }
}

/// One observation of the node; while a slow one goes on, a hung database is published as
/// not ready ([`stalled`]).
async fn observe<D: Driver>(
    driver: &D,
    tx: &watch::Sender<NodeStatus>,
    sequence: &mut u64,
) -> NodeStatus {
    let observation = tokio::time::timeout(OBSERVE_LIMIT, driver.observe());
    tokio::pin!(observation);
    let outcome = match tokio::time::timeout(STALL, &mut observation).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Slow: a hung database, or a slow part of a healthy one's observation (a login
            // check, a busy master). The cheapest question tells which; a hung one is said
            // now, while the observation goes on.
            let probe = tokio::time::timeout(PROBE_LIMIT, driver.process_answers());
            if !probe.await.unwrap_or(false) {
                let marked = stalled(&tx.borrow());
                publish(tx, marked, sequence);
            }
            observation.await
        }
    };
    outcome.unwrap_or_else(|_| NodeStatus {
        problems: vec!["observing the database timed out".into()],
        not_ready_reason: "observing the database timed out".into(),
        ..Default::default()
    })
}

/// How long one observation of the database may take before it counts as failed.
const OBSERVE_LIMIT: Duration = Duration::from_secs(5);

/// How long an observation may take before the pilot asks whether the database answers at
/// all, and how long that answer may take. A healthy node answers in milliseconds; a hung
/// (stopped) process never does, and the operator shows it within about the sum of these and
/// one poll interval (the goal is 2 s).
const STALL: Duration = Duration::from_millis(600);
const PROBE_LIMIT: Duration = Duration::from_millis(400);

/// The status of a database that does not answer: what the pilot itself fills (identity,
/// disk, action) kept from the last status, and what the database fills reset as for one
/// that does not run (the contract's NOT_RUNNING covers a hung process). A pause that long
/// (a long GC, say) is one for clients too.
fn stalled(last: &NodeStatus) -> NodeStatus {
    let why = format!(
        "the database has not answered for {:.1} s",
        (STALL + PROBE_LIMIT).as_secs_f32()
    );
    NodeStatus {
        process_state: ProcessState::NotRunning as i32,
        ready: false,
        not_ready_reason: why.clone(),
        problems: vec![why],
        version: String::new(),
        data_bytes: None,
        detail: None,
        observed_at_unix_ms: now_ms(),
        ..last.clone()
    }
}

/// Publishes `s` if it differs from the current status in anything but the timestamps
/// (and free disk wobble); otherwise only refreshes the current one's timestamp.
fn publish(tx: &watch::Sender<NodeStatus>, mut s: NodeStatus, sequence: &mut u64) {
    tx.send_if_modified(|cur| {
        let changed = *sequence == 0 || differs(&s, cur);
        if changed {
            *sequence += 1;
            s.sequence = *sequence;
            *cur = s;
        } else {
            // Keep the timestamp fresh for GetStatus without waking watchers.
            cur.observed_at_unix_ms = s.observed_at_unix_ms;
        }
        changed
    });
}

fn differs(new: &NodeStatus, cur: &NodeStatus) -> bool {
    let mut cmp = new.clone();
    cmp.observed_at_unix_ms = cur.observed_at_unix_ms;
    cmp.sequence = cur.sequence;
    // Free disk wobbles by a few KiB all the time; only a change of 1 MiB or more counts,
    // so the stream carries state changes, not noise.
    if cmp
        .free_disk_bytes
        .zip(cur.free_disk_bytes)
        .is_some_and(|(a, b)| a.abs_diff(b) < 1 << 20)
    {
        cmp.free_disk_bytes = cur.free_disk_bytes;
    }
    cmp != *cur
}

/// A random-enough ID for this pilot process (no RNG crate needed: time and pid).
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_changes_count() {
        let cur = NodeStatus {
            free_disk_bytes: Some(10 << 20),
            observed_at_unix_ms: 1,
            sequence: 4,
            ..Default::default()
        };
        let mut new = cur.clone();
        new.observed_at_unix_ms = 2;
        new.sequence = 0;
        new.free_disk_bytes = Some((10 << 20) + 4096);
        assert!(!differs(&new, &cur));
        new.pod_uid = "uid-2".into();
        assert!(differs(&new, &cur));
    }

    #[test]
    fn a_stall_reports_the_database_not_running_and_keeps_the_pilots_part() {
        let last = NodeStatus {
            ready: true,
            process_state: ProcessState::Running as i32,
            version: "5.0.9".into(),
            pod_uid: "u1".into(),
            free_disk_bytes: Some(1 << 30),
            sequence: 3,
            ..Default::default()
        };
        let s = stalled(&last);
        assert!(!s.ready);
        assert_eq!(s.process_state(), ProcessState::NotRunning);
        assert_eq!(
            s.not_ready_reason,
            "the database has not answered for 1.0 s"
        );
        assert_eq!(s.problems, vec![s.not_ready_reason.clone()]);
        assert_eq!((s.version.as_str(), s.data_bytes), ("", None));
        assert_eq!(
            (s.pod_uid.as_str(), s.free_disk_bytes),
            ("u1", Some(1 << 30))
        );
        assert!(differs(&s, &last));
    }

    #[test]
    fn the_pod_identity_is_stamped() {
        let pod = PodIdentity {
            node_name: "n0".into(),
            pod_uid: "u1".into(),
            template_revision: "r1".into(),
        };
        let mut s = NodeStatus::default();
        pod.stamp(&mut s);
        assert_eq!(
            (
                s.node_name.as_str(),
                s.pod_uid.as_str(),
                s.template_revision.as_str()
            ),
            ("n0", "u1", "r1")
        );
    }
}
