//! Observes the node on a short interval and publishes every change, so watchers learn
//! of a failure within about one poll interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stateward_proto::v1::NodeStatus;
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
                let mut s =
                    match tokio::time::timeout(Duration::from_secs(5), driver.observe()).await {
                        Ok(s) => s,
                        Err(_) => NodeStatus {
                            problems: vec!["observing the database timed out".into()],
                            not_ready_reason: "observing the database timed out".into(),
                            ..Default::default()
                        },
                    };
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
