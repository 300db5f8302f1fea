//! What every reconcile shares: the client, settings, event recorder, counters, and the latest
//! verified reports from the pilots.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use stateward_proto::v1::ActionSpec;

use crate::apply::WriteCounter;
use crate::config::OperatorConfig;
use crate::pilot_client::ClientTls;
use crate::pilots::PodAddress;
use crate::planner::{ActionProgress, KeyspaceReplication, VerifiedState};

/// A node's state as its pilot verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub state: VerifiedState,
    pub version: Option<String>,
    pub host_id: Option<String>,
    /// Host IDs of the nodes in this node's ring view.
    pub ring: Option<BTreeSet<String>>,
    pub data_bytes: Option<u64>,
    pub free_disk_bytes: Option<u64>,
    /// The schema's keyspaces with their replication in the node's datacenter.
    pub keyspaces: Option<Vec<KeyspaceReplication>>,
}

/// Identifies a pod's pilot: namespace, cluster and pod name.
#[derive(Clone, Copy, Debug)]
pub struct PilotAddress<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub pod: &'a str,
}

/// Source of pilot reports (the pilot client keeps one watch stream per pod).
pub trait PilotReports: Send + Sync {
    /// The latest verified report of a pod, or `None` when there is none (never reached, or the
    /// stream is down): callers treat `None` as unknown.
    fn report(&self, namespace: &str, pod: &str) -> Option<NodeReport>;

    /// Keep one watch stream to the pilot of each of `pods` (and drop the others of the
    /// cluster), authenticating with the cluster's operator client certificate.
    fn track(&self, _namespace: &str, _cluster: &str, _tls: ClientTls, _pods: &[PodAddress]) {}

    /// What the pod's pilot says of an action, one call; unknown when it cannot be asked.
    fn action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
    ) -> BoxFuture<'a, ActionProgress>;

    /// Asks the pod's pilot to start an action (idempotent by ID), without waiting for its end.
    fn start_action<'a>(
        &'a self,
        pilot: PilotAddress<'a>,
        action_id: &'a str,
        spec: ActionSpec,
    ) -> BoxFuture<'a, Result<ActionProgress, String>>;
}

/// Used until pilots are connected: every node is unknown to the pilot view.
pub struct NoPilotReports;

impl PilotReports for NoPilotReports {
    fn report(&self, _namespace: &str, _pod: &str) -> Option<NodeReport> {
        None
    }

    fn action<'a>(
        &'a self,
        _pilot: PilotAddress<'a>,
        _action_id: &'a str,
    ) -> BoxFuture<'a, ActionProgress> {
        Box::pin(async {
            ActionProgress::Unknown {
                why: "no pilot connection".into(),
            }
        })
    }

    fn start_action<'a>(
        &'a self,
        _pilot: PilotAddress<'a>,
        _action_id: &'a str,
        _spec: ActionSpec,
    ) -> BoxFuture<'a, Result<ActionProgress, String>> {
        Box::pin(async { Err("no pilot connection".to_string()) })
    }
}

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
        }
    }
}
