//! What every reconcile shares: the client, settings, event recorder, counters, and the latest
//! verified reports from the pilots.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::apply::WriteCounter;
use crate::config::OperatorConfig;
use crate::metrics::Metrics;
pub use crate::pilots::{NoPilotReports, PilotAddress, PilotReports};
use crate::platform::cache::{self, Caches, Feeds};
use crate::platform::requests::ApiRequests;
use crate::readiness::Readiness;

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: Recorder,
    pub writes: Arc<WriteCounter>,
    pub pilots: Arc<dyn PilotReports>,
    /// How often a steady cluster is re-checked (level-triggered resync).
    pub resync: std::time::Duration,
    /// Reconciles run so far (metrics; tests use it to prove resyncs happened).
    pub reconciles: std::sync::atomic::AtomicU64,
    /// What `/readyz` answers.
    pub readiness: Readiness,
    /// What the operator owns, as its watches see it: what a reconcile reads.
    pub caches: Caches,
    /// API requests made, by verb and resource (metrics; tests prove a steady reconcile reads
    /// nothing).
    pub requests: Arc<ApiRequests>,
    /// Reconcile durations and errors.
    pub metrics: Metrics,
    /// The controllers' caches of clusters, as metrics read them at each scrape.
    pub clusters: ClusterSamplers,
}

/// One cluster as metrics show it.
pub struct ClusterSample {
    pub kind: String,
    pub phase: String,
    /// The operation in flight and its phase.
    pub operation: Option<(String, String)>,
}

type Sampler = Box<dyn Fn() -> Vec<ClusterSample> + Send + Sync>;

/// One sampler per running controller, over its cache of clusters.
#[derive(Default)]
pub struct ClusterSamplers(std::sync::Mutex<Vec<Sampler>>);

impl ClusterSamplers {
    pub fn add(&self, sampler: Sampler) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sampler);
    }

    pub fn samples(&self) -> Vec<ClusterSample> {
        let samplers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        samplers.iter().flat_map(|s| s()).collect()
    }
}

impl Context {
    /// The context, and the watches that fill its caches (run them with
    /// [`crate::controller::run`]). `client` should count its requests into `requests`
    /// ([`crate::platform::requests::counted_client`]); `namespace` is the watched one.
    pub fn new(
        client: Client,
        requests: Arc<ApiRequests>,
        config: OperatorConfig,
        pilots: Arc<dyn PilotReports>,
        resync: std::time::Duration,
        namespace: Option<&str>,
    ) -> (Self, Feeds) {
        let writes = Arc::new(WriteCounter::default());
        let (caches, feeds) = cache::caches(
            &client,
            namespace,
            &config.credentials_namespace,
            writes.clone(),
        );
        let reporter = Reporter {
            controller: config.field_manager.clone(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            writes,
            pilots,
            resync,
            reconciles: Default::default(),
            readiness: Readiness::default(),
            caches,
            requests,
            metrics: Metrics::default(),
            clusters: ClusterSamplers::default(),
        };
        (ctx, feeds)
    }
}
