//! What every reconcile shares: the client, settings, event recorder, counters, and the latest
//! verified reports from the pilots.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::apply::WriteCounter;
use crate::config::OperatorConfig;
pub use crate::pilots::{NoPilotReports, PilotAddress, PilotReports};
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
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        writes: Arc<WriteCounter>,
        pilots: Arc<dyn PilotReports>,
        resync: std::time::Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: config.field_manager.clone(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            writes,
            pilots,
            resync,
            reconciles: Default::default(),
            readiness: Readiness::default(),
        }
    }
}
