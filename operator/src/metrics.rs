//! The operator's Prometheus metrics (`/metrics`, OpenMetrics text through `prometheus-client`).
//!
//! Two sorts: what is counted as it happens (reconcile durations and errors, here), and what is
//! read off the operator's state at each scrape (API requests, caches, leadership, clusters and
//! their operations, pilot connections), so that nothing is kept twice.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Seconds, from a millisecond to ten seconds: a cached reconcile takes about a millisecond, one
/// that waits on a pilot or the API up to a few seconds.
const RECONCILE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

/// Seconds of CPU, from 50 µs to 100 ms: a no-op reconcile costs a fraction of a millisecond.
const RECONCILE_CPU_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

fn reconcile_cpu_histogram() -> Histogram {
    Histogram::new(RECONCILE_CPU_BUCKETS)
}

/// What is counted as it happens.
#[derive(Debug)]
pub struct Metrics {
    reconcile_duration: Family<Labels, Histogram, fn() -> Histogram>,
    reconcile_cpu: Family<Labels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            reconcile_cpu: Family::new_with_constructor(reconcile_cpu_histogram),
            reconcile_errors: Family::default(),
        }
    }
}

impl Metrics {
    /// One reconcile of a cluster of `kind`: how long it took, the CPU time it used and, if it
    /// failed, why.
    pub fn reconciled(
        &self,
        kind: &str,
        took: Duration,
        cpu: Duration,
        error: Option<&'static str>,
    ) {
        let labels = vec![("kind", kind.to_string())];
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.reconcile_cpu
            .get_or_create(&labels)
            .observe(cpu.as_secs_f64());
        if let Some(cause) = error {
            self.reconcile_errors
                .get_or_create(&vec![("kind", kind.to_string()), ("cause", cause.into())])
                .inc();
        }
    }
}

/// Values read at scrape time, gathered by the caller.
pub struct Snapshot {
    pub reconciles: u64,
    pub leader: bool,
    pub writes: Vec<(String, u64)>,
    pub api_requests: Vec<((String, String), u64)>,
    pub cached_objects: Vec<(String, usize)>,
    /// kind, phase: clusters.
    pub clusters: Vec<((String, String), usize)>,
    /// kind, operation, phase: clusters with that operation in flight.
    pub operations: Vec<((String, String, String), usize)>,
    pub pilots: Vec<PilotSample>,
}

/// One pod's pilot as the operator sees it.
pub struct PilotSample {
    pub namespace: String,
    pub cluster: String,
    pub pod: String,
    /// Its stream is up and fresh: its reports are acted on.
    pub connected: bool,
    /// Since its last message (status or heartbeat), if one ever came.
    pub report_age: Option<Duration>,
}

/// The OpenMetrics text of `metrics` and `snapshot`.
pub fn render(metrics: &Metrics, snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register(
        "stateward_reconcile_duration_seconds",
        "Reconcile duration, by cluster kind",
        metrics.reconcile_duration.clone(),
    );
    registry.register(
        "stateward_reconcile_cpu_seconds",
        "CPU time of a reconcile (its polls), by cluster kind",
        metrics.reconcile_cpu.clone(),
    );
    registry.register(
        "stateward_reconcile_errors",
        "Reconciles that failed, by cluster kind and cause",
        metrics.reconcile_errors.clone(),
    );
    let reconciles = Counter::<u64>::default();
    reconciles.inc_by(snapshot.reconciles);
    registry.register("stateward_reconciles", "Reconciles run", reconciles);
    let leader = Gauge::<i64>::default();
    leader.set(i64::from(snapshot.leader));
    registry.register(
        "stateward_leader",
        "Whether this replica acts: 1 leading (or leader election off), 0 standby or candidate",
        leader,
    );
    register_counters(&mut registry, "stateward_writes", "API writes, by kind", {
        let rows = snapshot.writes.into_iter();
        rows.map(|(kind, n)| (vec![("kind", kind)], n)).collect()
    });
    register_counters(
        &mut registry,
        "stateward_api_requests",
        "Requests to the Kubernetes API, by verb and resource",
        (snapshot.api_requests.into_iter())
            .map(|((verb, resource), n)| (vec![("verb", verb), ("resource", resource)], n))
            .collect(),
    );
    register_gauges(
        &mut registry,
        "stateward_cached_objects",
        "Objects the operator owns, in its caches, by kind",
        (snapshot.cached_objects.into_iter())
            .map(|(kind, n)| (vec![("kind", kind)], as_i64(n)))
            .collect(),
    );
    register_clusters(&mut registry, snapshot.clusters, snapshot.operations);
    register_pilots(&mut registry, snapshot.pilots);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

fn register_clusters(
    registry: &mut Registry,
    clusters: Vec<((String, String), usize)>,
    operations: Vec<((String, String, String), usize)>,
) {
    register_gauges(
        registry,
        "stateward_clusters",
        "Clusters, by kind and phase",
        (clusters.into_iter())
            .map(|((kind, phase), n)| (vec![("kind", kind), ("phase", phase)], as_i64(n)))
            .collect(),
    );
    register_gauges(
        registry,
        "stateward_operations_in_flight",
        "Clusters with an operation in flight, by kind, operation and phase",
        (operations.into_iter())
            .map(|((kind, operation, phase), n)| {
                let labels = vec![("kind", kind), ("operation", operation), ("phase", phase)];
                (labels, as_i64(n))
            })
            .collect(),
    );
}

fn register_pilots(registry: &mut Registry, pilots: Vec<PilotSample>) {
    let connected = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for pilot in pilots {
        let labels = vec![
            ("namespace", pilot.namespace),
            ("cluster", pilot.cluster),
            ("pod", pilot.pod),
        ];
        connected
            .get_or_create(&labels)
            .set(i64::from(pilot.connected));
        if let Some(a) = pilot.report_age {
            age.get_or_create(&labels).set(a.as_secs_f64());
        }
    }
    registry.register(
        "stateward_pilot_connected",
        "Whether the pilot's status stream is up and fresh (its reports are acted on)",
        connected,
    );
    registry.register(
        "stateward_pilot_report_age_seconds",
        "Seconds since the pilot's last message (status or heartbeat)",
        age,
    );
}

fn register_counters(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let family = Family::<Labels, Counter>::default();
    for (labels, n) in rows {
        family.get_or_create(&labels).inc_by(n);
    }
    registry.register(name, help, family);
}

fn register_gauges(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, n) in rows {
        family.get_or_create(&labels).set(n);
    }
    registry.register(name, help, family);
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Snapshot {
        Snapshot {
            reconciles: 0,
            leader: true,
            writes: vec![],
            api_requests: vec![],
            cached_objects: vec![],
            clusters: vec![],
            operations: vec![],
            pilots: vec![],
        }
    }

    #[test]
    fn renders_counters_histograms_and_scrape_time_values() {
        let metrics = Metrics::default();
        let cpu = Duration::from_micros(200);
        metrics.reconciled("CassandraCluster", Duration::from_micros(800), cpu, None);
        metrics.reconciled(
            "CassandraCluster",
            Duration::from_millis(30),
            cpu,
            Some("api_conflict"),
        );
        let snapshot = Snapshot {
            reconciles: 2,
            api_requests: vec![(("get".into(), "secrets".into()), 3)],
            operations: vec![(
                (
                    "CassandraCluster".into(),
                    "Decommission".into(),
                    "Streaming".into(),
                ),
                1,
            )],
            pilots: vec![PilotSample {
                namespace: "ns".into(),
                cluster: "ring".into(),
                pod: "ring-main-0".into(),
                connected: true,
                report_age: Some(Duration::from_millis(1500)),
            }],
            ..empty()
        };
        let text = render(&metrics, snapshot);
        for line in [
            "stateward_reconciles_total 2",
            "stateward_leader 1",
            "stateward_api_requests_total{verb=\"get\",resource=\"secrets\"} 3",
            "stateward_reconcile_duration_seconds_bucket{le=\"0.001\",kind=\"CassandraCluster\"} 1",
            "stateward_reconcile_duration_seconds_count{kind=\"CassandraCluster\"} 2",
            "stateward_reconcile_cpu_seconds_bucket{le=\"0.00025\",kind=\"CassandraCluster\"} 2",
            "stateward_reconcile_errors_total{kind=\"CassandraCluster\",cause=\"api_conflict\"} 1",
            "stateward_operations_in_flight{kind=\"CassandraCluster\",operation=\"Decommission\",phase=\"Streaming\"} 1",
            "stateward_pilot_connected{namespace=\"ns\",cluster=\"ring\",pod=\"ring-main-0\"} 1",
            "stateward_pilot_report_age_seconds{namespace=\"ns\",cluster=\"ring\",pod=\"ring-main-0\"} 1.5",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
