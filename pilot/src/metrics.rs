//! The pilot's Prometheus metrics (`/metrics` on the probe port, OpenMetrics text): how long its
//! actions took and how they ended, and its database's health as its last observation saw it.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stateward_proto::v1::{ActionKind, NodeStatus, ProcessState};

type Labels = Vec<(&'static str, String)>;

/// Seconds, from a second to six hours: a cleanup of a small node is seconds, a decommission
/// streaming a large one is hours.
const ACTION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0, 10800.0, 21600.0,
];

fn action_histogram() -> Histogram {
    Histogram::new(ACTION_BUCKETS)
}

#[derive(Debug)]
pub struct PilotMetrics {
    action_duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for PilotMetrics {
    fn default() -> Self {
        PilotMetrics {
            action_duration: Family::new_with_constructor(action_histogram),
        }
    }
}

/// `decommission` for `ACTION_KIND_DECOMMISSION`.
fn kind_label(kind: ActionKind) -> String {
    let name = kind.as_str_name();
    name.strip_prefix("ACTION_KIND_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn process_label(state: ProcessState) -> String {
    let name = state.as_str_name();
    name.strip_prefix("PROCESS_STATE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

impl PilotMetrics {
    /// An action finished (`succeeded` or not) `took` after the pilot accepted it.
    pub fn action_finished(&self, kind: ActionKind, succeeded: bool, took: Duration) {
        let result = if succeeded { "succeeded" } else { "failed" };
        let labels = vec![("kind", kind_label(kind)), ("result", result.to_string())];
        self.action_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text, with the database's health from `status` (the latest observation)
    /// at `now_unix_ms`.
    pub fn render(&self, status: &NodeStatus, now_unix_ms: i64) -> String {
        let mut registry = Registry::default();
        registry.register(
            "stateward_pilot_action_duration_seconds",
            "Actions from acceptance to their verified end, by kind and result",
            self.action_duration.clone(),
        );
        let gauge = |value: i64| {
            let g = Gauge::<i64>::default();
            g.set(value);
            g
        };
        registry.register(
            "stateward_pilot_node_ready",
            "Whether the node is ready by the database's own view (the readiness probe's answer)",
            gauge(i64::from(status.ready)),
        );
        let process = Family::<Labels, Gauge>::default();
        for state in [
            ProcessState::Unspecified,
            ProcessState::NotRunning,
            ProcessState::Starting,
            ProcessState::Running,
        ] {
            let labels = vec![("state", process_label(state))];
            process
                .get_or_create(&labels)
                .set(i64::from(status.process_state() == state));
        }
        registry.register(
            "stateward_pilot_database_process",
            "The database process's state (1 for the current one)",
            process,
        );
        registry.register(
            "stateward_pilot_problems",
            "Problems the last observation found",
            gauge(i64::try_from(status.problems.len()).unwrap_or(i64::MAX)),
        );
        let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        if status.observed_at_unix_ms > 0 {
            age.set((now_unix_ms - status.observed_at_unix_ms).max(0) as f64 / 1000.0);
        }
        registry.register(
            "stateward_pilot_observation_age_seconds",
            "Seconds since the pilot last observed its database",
            age,
        );
        for (name, help, value) in [
            (
                "stateward_pilot_data_bytes",
                "Bytes of data the node holds, by the database's own count",
                status.data_bytes,
            ),
            (
                "stateward_pilot_free_disk_bytes",
                "Free bytes on the data volume",
                status.free_disk_bytes,
            ),
        ] {
            if let Some(v) = value {
                registry.register(name, help, gauge(i64::try_from(v).unwrap_or(i64::MAX)));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_actions_and_health() {
        let metrics = PilotMetrics::default();
        metrics.action_finished(ActionKind::Decommission, true, Duration::from_secs(40));
        let status = NodeStatus {
            ready: true,
            process_state: ProcessState::Running as i32,
            observed_at_unix_ms: 10_000,
            data_bytes: Some(2048),
            ..Default::default()
        };
        let text = metrics.render(&status, 12_500);
        for line in [
            "stateward_pilot_action_duration_seconds_bucket{le=\"60.0\",kind=\"decommission\",result=\"succeeded\"} 1",
            "stateward_pilot_action_duration_seconds_count{kind=\"decommission\",result=\"succeeded\"} 1",
            "stateward_pilot_node_ready 1",
            "stateward_pilot_database_process{state=\"running\"} 1",
            "stateward_pilot_database_process{state=\"not_running\"} 0",
            "stateward_pilot_observation_age_seconds 2.5",
            "stateward_pilot_data_bytes 2048",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("free_disk"), "{text}");
    }
}
