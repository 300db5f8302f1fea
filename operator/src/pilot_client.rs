//! The operator's side of the pilot contract (`stateward.pilot.v1`).
//!
//! [`PilotHub`] keeps one `WatchStatus` stream per pod, reconnecting with exponential
//! backoff (backon), and exposes the latest verified status of every pod. Each change
//! (a new status, a lost or regained stream) is announced on a broadcast channel so the
//! controller can trigger a reconcile within about a second of a node failing, instead
//! of waiting for its next poll. [`PilotHub::run_action`] starts an action by ID and
//! waits for its verified end; it is safe to call again with the same ID (after an
//! operator restart, say): the pilot returns the same action's state.
//!
//! Fail closed: a pod whose stream is down, or whose last message is older than three
//! heartbeats, is reported as not connected, and callers must not treat its last status
//! as current.
//!
//! Dependencies: stateward-proto, tonic (tls-ring), tokio, backon, tracing, futures,
//! thiserror.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures::StreamExt;
use stateward_proto::v1::pilot_client::PilotClient;
use stateward_proto::v1::{
    ActionSpec, ActionState, GetActionRequest, NodeStatus, PeerState, StartActionRequest,
    WatchActionRequest, WatchStatusRequest, node_status::Detail, watch_status_response::Event,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, info, warn};

/// Heartbeat the operator asks pilots for; a stream silent for three of them is dead.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);

/// Limit of one unary call (connect included) made from a reconcile.
const ONE_CALL: Duration = Duration::from_secs(5);

/// Identifies a pod: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

/// How to reach one pod's pilot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PilotTarget {
    pub pod: PodKey,
    /// `https://<pod IP>:7443`.
    pub endpoint: String,
    /// The TLS name every pilot certificate of the cluster carries:
    /// [`stateward_proto::pilot_server_name`]`(cluster, namespace)`.
    pub server_name: String,
}

/// The operator's client credentials (PEM), from the cluster's CA Secret.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: String,
    /// Must carry the DNS SAN [`stateward_proto::OPERATOR_CLIENT_IDENTITY`].
    pub cert_pem: String,
    pub key_pem: String,
}

/// What the operator knows about one pod's pilot.
#[derive(Debug, Clone)]
pub struct PodView {
    /// The latest status the pilot streamed; kept while disconnected, for diagnosis only.
    pub status: Option<NodeStatus>,
    /// True while the stream is up and its last message is fresh.
    pub connected: bool,
    /// Why the stream is down, if it is.
    pub last_error: Option<String>,
    /// When the last message (status or heartbeat) arrived.
    pub last_message_at: Option<Instant>,
}

impl PodView {
    /// The status, but only if it is current (stream up, fresh): the one to act on.
    pub fn current(&self) -> Option<&NodeStatus> {
        let fresh = self
            .last_message_at
            .is_some_and(|t| t.elapsed() < HEARTBEAT * 3);
        if self.connected && fresh {
            self.status.as_ref()
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PilotError {
    #[error("connecting to the pilot at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("pilot call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the pilot's action stream ended before the action finished")]
    StreamEnded,
    #[error("action {0} did not finish within {1:?}")]
    Timeout(String, Duration),
}

impl PilotError {
    /// Worth retrying: the pilot or the network may come back, and StartAction is
    /// idempotent. Refusals that retrying cannot change are not.
    fn transient(&self) -> bool {
        match self {
            PilotError::Connect { .. } | PilotError::StreamEnded => true,
            PilotError::Rpc(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Internal
                    | tonic::Code::FailedPrecondition
            ),
            PilotError::Timeout(..) => false,
        }
    }
}

struct Watcher {
    target: PilotTarget,
    task: JoinHandle<()>,
}

struct Inner {
    tls: RwLock<ClientTls>,
    /// Grows with every [`PilotHub::set_tls`]: a channel made with older credentials is
    /// replaced.
    tls_generation: AtomicU64,
    views: RwLock<HashMap<PodKey, PodView>>,
    watchers: Mutex<HashMap<PodKey, Watcher>>,
    /// One HTTP/2 connection per pod, shared by its watch stream and every action call (tonic
    /// reconnects it when it breaks).
    channels: Mutex<HashMap<PodKey, PodChannel>>,
    changes: broadcast::Sender<PodKey>,
}

struct PodChannel {
    endpoint: String,
    tls_generation: u64,
    channel: Channel,
}

/// What of a pod's view a reconcile acts on or shows: a change of it wakes the cluster.
fn significant(view: &PodView) -> (bool, Option<NodeStatus>) {
    let coarse = |b: Option<u64>| b.map(stateward_core::status::coarse_bytes);
    let status = view.status.clone().map(|mut s| {
        s.observed_at_unix_ms = 0;
        s.sequence = 0;
        s.data_bytes = coarse(s.data_bytes);
        s.free_disk_bytes = coarse(s.free_disk_bytes);
        s.total_disk_bytes = coarse(s.total_disk_bytes);
        match s.detail.as_mut() {
            Some(Detail::Cassandra(c)) => {
                for peer in &mut c.peers {
                    peer.load_bytes = coarse(peer.load_bytes);
                }
            }
            Some(Detail::Elasticsearch(e)) => {
                for index in &mut e.indices {
                    index.store_bytes = stateward_core::status::coarse_bytes(index.store_bytes);
                }
            }
            None => {}
        }
        s
    });
    (view.connected, status)
}

/// One watch stream per pod and the latest view of each.
#[derive(Clone)]
pub struct PilotHub {
    inner: Arc<Inner>,
}

impl PilotHub {
    pub fn new(tls: ClientTls) -> Self {
        // Its one reader forwards "this cluster changed" whatever it receives (a lag included),
        // so a few slots suffice; every slot is allocated up front, for each cluster.
        let (changes, _) = broadcast::channel(4);
        PilotHub {
            inner: Arc::new(Inner {
                tls: RwLock::new(tls),
                tls_generation: AtomicU64::new(0),
                views: RwLock::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                changes,
            }),
        }
    }

    /// Replaces the client credentials (certificate rotation); new connections use them.
    pub fn set_tls(&self, tls: ClientTls) {
        let mut current = self.inner.tls.write().unwrap_or_else(|p| p.into_inner());
        let same = current.ca_pem == tls.ca_pem
            && current.cert_pem == tls.cert_pem
            && current.key_pem == tls.key_pem;
        if !same {
            *current = tls;
            self.inner.tls_generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Announces the pod whose view changed: trigger a reconcile of its cluster. A
    /// lagging receiver should reconcile everything it watches.
    pub fn subscribe(&self) -> broadcast::Receiver<PodKey> {
        self.inner.changes.subscribe()
    }

    /// Every watched pod's view (for metrics).
    pub fn views(&self) -> Vec<(PodKey, PodView)> {
        let views = self.inner.views.read().unwrap_or_else(|p| p.into_inner());
        views.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn view(&self, pod: &PodKey) -> Option<PodView> {
        self.inner
            .views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pod)
            .cloned()
    }

    /// Keeps a watch stream to `target`; idempotent, restarts it if the address changed
    /// (a recreated pod has a new IP).
    pub fn ensure_watch(&self, target: PilotTarget) {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watchers.get(&target.pod) {
            if w.target == target && !w.task.is_finished() {
                return;
            }
            w.task.abort();
        }
        let hub = self.clone();
        let t = target.clone();
        let task = tokio::spawn(async move { hub.watch_loop(t).await });
        watchers.insert(target.pod.clone(), Watcher { target, task });
    }

    /// Stops watching pods for which `keep` is false (deleted pods) and forgets them.
    pub fn retain(&self, keep: impl Fn(&PodKey) -> bool) {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        watchers.retain(|k, w| {
            let k2 = keep(k);
            if !k2 {
                w.task.abort();
            }
            k2
        });
        self.inner
            .views
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// True only if every pod in `witnesses` has a current status in which `address`
    /// is no longer part of the ring (absent, or present without a ring state). Used to
    /// verify a decommission from the peers' side; fails closed on any unknown.
    pub fn ring_excludes(&self, address: &str, witnesses: &[PodKey]) -> bool {
        !witnesses.is_empty()
            && witnesses.iter().all(|w| {
                let Some(view) = self.view(w) else {
                    return false;
                };
                let Some(Detail::Cassandra(c)) = view.current().and_then(|s| s.detail.as_ref())
                else {
                    return false;
                };
                !c.peers
                    .iter()
                    .any(|p| p.address == address && p.state() != PeerState::Unspecified)
            })
    }

    /// Where the pod's pilot is watched (its current address), if it is.
    pub fn target(&self, pod: &PodKey) -> Option<PilotTarget> {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pod)
            .map(|w| w.target.clone())
    }

    /// The state of an action by ID, one call; `None` when the pilot never received it.
    pub async fn get_action(
        &self,
        target: &PilotTarget,
        action_id: &str,
    ) -> Result<Option<ActionState>, PilotError> {
        let call = async {
            let mut client = self.connect(target).await?;
            match client
                .get_action(GetActionRequest {
                    action_id: action_id.to_string(),
                })
                .await
            {
                Ok(state) => Ok(Some(state.into_inner())),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                Err(status) => Err(PilotError::Rpc(status)),
            }
        };
        tokio::time::timeout(ONE_CALL, call)
            .await
            .map_err(|_| PilotError::Timeout(action_id.to_string(), ONE_CALL))?
    }

    /// Starts an action (or returns the one already started with this ID), one call, without
    /// waiting for its end: the caller follows it with [`PilotHub::get_action`].
    pub async fn start_action(
        &self,
        target: &PilotTarget,
        action_id: &str,
        spec: ActionSpec,
    ) -> Result<ActionState, PilotError> {
        let call = async {
            let mut client = self.connect(target).await?;
            Ok(client
                .start_action(StartActionRequest {
                    action_id: action_id.to_string(),
                    spec: Some(spec),
                })
                .await?
                .into_inner())
        };
        tokio::time::timeout(ONE_CALL, call)
            .await
            .map_err(|_| PilotError::Timeout(action_id.to_string(), ONE_CALL))?
    }

    /// Starts action `action_id` on the pod (or finds it already started) and waits for
    /// its terminal state, retrying connection losses with backoff. The returned state
    /// is SUCCEEDED or FAILED; read its `result` for what was verified.
    pub async fn run_action(
        &self,
        target: &PilotTarget,
        action_id: &str,
        spec: ActionSpec,
        timeout: Duration,
    ) -> Result<ActionState, PilotError> {
        let attempt = || async {
            let mut client = self.connect(target).await?;
            let state = client
                .start_action(StartActionRequest {
                    action_id: action_id.to_string(),
                    spec: Some(spec.clone()),
                })
                .await?
                .into_inner();
            if state.phase().is_terminal() {
                return Ok(state);
            }
            let mut stream = client
                .watch_action(WatchActionRequest {
                    action_id: action_id.to_string(),
                })
                .await?
                .into_inner();
            while let Some(state) = stream.next().await {
                let state = state?;
                debug!(action = action_id, phase = ?state.phase(), message = %state.message, "action progress");
                if state.phase().is_terminal() {
                    return Ok(state);
                }
            }
            Err(PilotError::StreamEnded)
        };
        let retried = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(15))
                    .with_jitter()
                    .without_max_times(),
            )
            .when(PilotError::transient)
            .notify(|e, d| {
                warn!(
                    action = action_id,
                    "action call failed, retrying in {d:?}: {e}"
                )
            });
        tokio::time::timeout(timeout, retried)
            .await
            .map_err(|_| PilotError::Timeout(action_id.to_string(), timeout))?
    }

    /// A client on the pod's one connection: made (and connected) when there is none yet, or
    /// when the pod's address or the credentials changed.
    async fn connect(&self, target: &PilotTarget) -> Result<PilotClient<Channel>, PilotError> {
        let generation = self.inner.tls_generation.load(Ordering::Relaxed);
        if let Some(existing) = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.pod)
            .filter(|c| c.endpoint == target.endpoint && c.tls_generation == generation)
        {
            return Ok(PilotClient::new(existing.channel.clone()));
        }
        let tls = self
            .inner
            .tls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let err = |source| PilotError::Connect {
            endpoint: target.endpoint.clone(),
            source,
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .domain_name(target.server_name.clone());
        let channel = Endpoint::from_shared(target.endpoint.clone())
            .map_err(err)?
            .tls_config(config)
            .map_err(err)?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(err)?;
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                target.pod.clone(),
                PodChannel {
                    endpoint: target.endpoint.clone(),
                    tls_generation: generation,
                    channel: channel.clone(),
                },
            );
        Ok(PilotClient::new(channel))
    }

    /// Applies `f` to the pod's view; announces the change only when something a reconcile
    /// acts on or shows changed (figures that move all the time, such as a node's load, only
    /// when they moved by about 1%).
    fn update(&self, pod: &PodKey, f: impl FnOnce(&mut PodView)) {
        let changed = {
            let mut views = self.inner.views.write().unwrap_or_else(|p| p.into_inner());
            let view = views.entry(pod.clone()).or_insert(PodView {
                status: None,
                connected: false,
                last_error: None,
                last_message_at: None,
            });
            let before = significant(view);
            f(view);
            significant(view) != before
        };
        if changed {
            // No receiver is fine: nobody is waiting for changes yet.
            let _ = self.inner.changes.send(pod.clone());
        }
    }

    async fn watch_loop(&self, target: PilotTarget) {
        let backoff_builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times();
        let mut backoff = backoff_builder.build();
        loop {
            let mut got_message = false;
            // Boxed, so a task waiting out its backoff holds a pointer, not the ~4 KB of a
            // connection attempt's state (one task per pod, hundreds of them unreachable at
            // scale).
            let err = Box::pin(self.watch_once(&target, &mut got_message)).await;
            if got_message {
                // The stream worked; the next reconnect starts from the shortest delay.
                backoff = backoff_builder.build();
            }
            let msg = err.to_string();
            debug!(pod = %target.pod.name, "pilot watch ended: {msg}");
            self.update(&target.pod, |v| {
                v.connected = false;
                v.last_error = Some(msg);
            });
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream's life; returns why it ended.
    async fn watch_once(&self, target: &PilotTarget, got_message: &mut bool) -> PilotError {
        let mut client = match self.connect(target).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let req = WatchStatusRequest {
            heartbeat_interval_ms: HEARTBEAT.as_millis() as u32,
        };
        let mut stream = match client.watch_status(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => return e.into(),
        };
        info!(pod = %target.pod.name, "watching pilot");
        loop {
            // Three missed heartbeats: the pilot, its pod or the network is gone.
            let next = match tokio::time::timeout(HEARTBEAT * 3, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    return PilotError::Rpc(tonic::Status::deadline_exceeded(
                        "no heartbeat for 3 intervals",
                    ));
                }
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return e.into(),
                None => return PilotError::StreamEnded,
            };
            *got_message = true;
            match msg.event {
                Some(Event::Status(status)) => self.update(&target.pod, |v| {
                    v.status = Some(status);
                    v.connected = true;
                    v.last_error = None;
                    v.last_message_at = Some(Instant::now());
                }),
                Some(Event::Heartbeat(_)) => {
                    let mut views = self.inner.views.write().unwrap_or_else(|p| p.into_inner());
                    if let Some(v) = views.get_mut(&target.pod) {
                        v.last_message_at = Some(Instant::now());
                    }
                }
                None => {}
            }
        }
    }
}
