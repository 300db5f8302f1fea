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

#[derive(Clone)]
pub struct StatusHub {
    tx: Arc<watch::Sender<NodeStatus>>,
}

impl StatusHub {
    pub fn start<D: Driver>(
        driver: Arc<D>,
        actions: ActionManager<D>,
        node_name: String,
        data_dir: PathBuf,
        interval: Duration,
    ) -> Self {
        let instance = instance_id();
        let initial = NodeStatus {
            node_name: node_name.clone(),
            database: driver.kind() as i32,
            pilot_instance_id: instance.clone(),
            problems: vec!["not observed yet".into()],
            not_ready_reason: "not observed yet".into(),
            ..Default::default()
        };
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
                s.node_name = node_name.clone();
                s.database = driver.kind() as i32;
                s.pilot_instance_id = instance.clone();
                if let Some((free, total)) = disk_space(&data_dir) {
                    s.free_disk_bytes = Some(free);
                    s.total_disk_bytes = Some(total);
                }
                s.action_in_progress = actions.in_progress();
                s.observed_at_unix_ms = now_ms();
                tx.send_if_modified(|cur| {
                    // Free disk wobbles by a few KiB all the time; only a change of 1 MiB
                    // or more counts, so the stream carries state changes, not noise.
                    let mut cmp = s.clone();
                    cmp.observed_at_unix_ms = cur.observed_at_unix_ms;
                    cmp.sequence = cur.sequence;
                    if cmp
                        .free_disk_bytes
                        .zip(cur.free_disk_bytes)
                        .is_some_and(|(a, b)| a.abs_diff(b) < 1 << 20)
                    {
                        cmp.free_disk_bytes = cur.free_disk_bytes;
                    }
                    let changed = cmp != *cur || sequence == 0;
                    if changed {
                        sequence += 1;
                        s.sequence = sequence;
                        *cur = s;
                    } else {
                        // Keep the timestamp fresh for GetStatus without waking watchers.
                        cur.observed_at_unix_ms = s.observed_at_unix_ms;
                    }
                    changed
                });
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

/// A random-enough ID for this pilot process (no RNG crate needed: time and pid).
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
