//! The Cassandra driver: observes and acts through the Jolokia agent in Cassandra's JVM
//! (JMX as JSON; no nodetool text is parsed) and a TCP check of the CQL port.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stateward_proto::v1::action_spec::Action;
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{
    ActionKind, ActionResult, ActionSpec, CassandraKeyspace, CassandraOperationMode, CassandraPeer,
    CassandraStatus, DatabaseKind, NodeStatus, PeerLiveness, PeerState, ProcessState, Verification,
};
use tracing::{info, warn};

use crate::cli::CassandraArgs;
use crate::driver::{Driver, Progress};
use crate::fsutil::write_atomic;
use crate::jolokia::{Jolokia, JolokiaError};

const SS: &str = "org.apache.cassandra.db:type=StorageService";
const FD: &str = "org.apache.cassandra.net:type=FailureDetector";
const SNITCH: &str = "org.apache.cassandra.db:type=EndpointSnitchInfo";
const LOAD: &str = "org.apache.cassandra.metrics:type=Storage,name=Load";
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Cassandra may not answer during an action before its outcome counts as
/// unknown, which fails the action (fail closed).
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);
const ACTION_POLL: Duration = Duration::from_millis(500);
/// The schema changes rarely and reading it costs one JMX call per keyspace: it is read at
/// most this often, and a reading older than [`KEYSPACES_STALE`] counts as unknown.
const KEYSPACES_REFRESH: Duration = Duration::from_secs(5);
const KEYSPACES_STALE: Duration = Duration::from_secs(30);
/// Cassandra's replicated system keyspaces. `NonSystemKeyspaces` lists them beside the user
/// keyspaces in 5.0; these names tell them apart.
const REPLICATED_SYSTEM_KEYSPACES: &[&str] =
    &["system_auth", "system_distributed", "system_traces"];

pub struct Cassandra {
    jolokia: Jolokia,
    /// The address Cassandra gossips on, as it reports it in its ring views.
    address: String,
    cql: SocketAddr,
    identity_path: PathBuf,
    /// The host ID recorded on the data volume (cached; the file is the truth).
    recorded_host_id: Mutex<Option<String>>,
    /// The last successful schema reading and when it was made.
    keyspaces: Mutex<Option<(Instant, Vec<CassandraKeyspace>)>>,
}

impl Cassandra {
    pub fn new(args: &CassandraArgs) -> anyhow::Result<Self> {
        let identity_path = args.common.state_dir().join("identity.json");
        let recorded = match std::fs::read_to_string(&identity_path) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", identity_path.display()))?;
                let id = v
                    .get("hostId")
                    .and_then(Value::as_str)
                    .context("identity.json has no hostId")?;
                Some(id.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", identity_path.display()));
            }
        };
        if let Some(id) = &recorded {
            info!(host_id = %id, "identity recorded on the data volume");
        }
        Ok(Cassandra {
            jolokia: Jolokia::new("127.0.0.1", args.jolokia_port),
            address: args.pod_ip.to_string(),
            cql: SocketAddr::new(args.pod_ip, args.cql_port),
            identity_path,
            recorded_host_id: Mutex::new(recorded),
            keyspaces: Mutex::new(None),
        })
    }

    async fn mode(&self) -> Result<String, JolokiaError> {
        let v = self.jolokia.read(SS, "OperationMode", READ_TIMEOUT).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Records the host ID the first time the node is NORMAL; afterwards reports a
    /// different one as a problem (the node lost its identity: data volume replaced or
    /// wiped), which keeps it not ready until a human or the operator decides.
    fn check_identity(&self, host_id: &str, problems: &mut Vec<String>) -> String {
        let mut recorded = self
            .recorded_host_id
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match recorded.as_deref() {
            Some(r) if r != host_id => {
                problems.push(format!(
                    "host ID {host_id} differs from {r} recorded on the data volume"
                ));
            }
            Some(_) => {}
            None => {
                let body = json!({"hostId": host_id, "address": self.address}).to_string();
                match write_atomic(&self.identity_path, body.as_bytes()) {
                    Ok(()) => {
                        info!(host_id, "recorded this node's identity on the data volume");
                        *recorded = Some(host_id.to_string());
                    }
                    Err(e) => problems.push(format!("recording the host ID: {e:#}")),
                }
            }
        }
        recorded.clone().unwrap_or_default()
    }

    /// Keyspaces and their replication in `datacenter`, re-read when the cached reading is
    /// older than [`KEYSPACES_REFRESH`]. `None` when no recent reading exists (unknown).
    async fn keyspaces(
        &self,
        datacenter: &str,
        problems: &mut Vec<String>,
    ) -> Option<Vec<CassandraKeyspace>> {
        let cached = self
            .keyspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((at, list)) = &cached
            && at.elapsed() < KEYSPACES_REFRESH
        {
            return Some(list.clone());
        }
        match self.read_keyspaces(datacenter).await {
            Ok(list) => {
                *self.keyspaces.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), list.clone()));
                Some(list)
            }
            Err(e) => {
                problems.push(format!("reading keyspace replication: {e}"));
                cached
                    .filter(|(at, _)| at.elapsed() < KEYSPACES_STALE)
                    .map(|(_, list)| list)
            }
        }
    }

    async fn read_keyspaces(&self, datacenter: &str) -> Result<Vec<CassandraKeyspace>, String> {
        let listed = self
            .jolokia
            .read(SS, "NonSystemKeyspaces", READ_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let user: Vec<String> = listed
            .as_array()
            .ok_or_else(|| format!("NonSystemKeyspaces: unexpected value {listed}"))?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let names: Vec<(String, bool)> = user
            .into_iter()
            .chain(REPLICATED_SYSTEM_KEYSPACES.iter().map(|k| k.to_string()))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .map(|k| {
                let system = REPLICATED_SYSTEM_KEYSPACES.contains(&k.as_str());
                (k, system)
            })
            .collect();
        let reqs: Vec<Value> = names
            .iter()
            .map(|(k, _)| {
                json!({"type": "exec", "mbean": SS,
                       "operation": "getKeyspaceReplicationInfo", "arguments": [k]})
            })
            .collect();
        let replies = self
            .jolokia
            .bulk(&reqs, READ_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        names
            .into_iter()
            .zip(replies)
            .map(|((name, system), reply)| {
                let info = reply.map_err(|e| format!("replication of keyspace {name}: {e}"))?;
                let info = info.as_str().unwrap_or_default();
                let (strategy, replication_factor) = parse_replication(info, datacenter)
                    .ok_or_else(|| {
                        format!("replication of keyspace {name}: cannot read {info:?}")
                    })?;
                Ok(CassandraKeyspace {
                    name,
                    replication_factor,
                    strategy,
                    system,
                })
            })
            .collect()
    }

    /// Refuses (fails closed) unless every user keyspace keeps a node per replica in this
    /// datacenter once this node has left, by a schema and ring read now.
    async fn check_user_replication(&self) -> Result<(), String> {
        let datacenter = self
            .jolokia
            .read(SNITCH, "Datacenter", READ_TIMEOUT)
            .await
            .map_err(|e| format!("reading the datacenter: {e}"))?;
        let datacenter = datacenter.as_str().unwrap_or_default().to_string();
        let keyspaces = self.read_keyspaces(&datacenter).await?;
        let ring = self
            .jolokia
            .read(SS, "TokenToEndpointMap", READ_TIMEOUT)
            .await
            .map_err(|e| format!("reading the ring: {e}"))?;
        let members: BTreeSet<String> = ring
            .as_object()
            .ok_or_else(|| format!("TokenToEndpointMap: unexpected value {ring}"))?
            .values()
            .filter_map(Value::as_str)
            .map(norm_addr)
            .collect();
        let remaining = members.len().saturating_sub(1);
        let too_few: Vec<String> = keyspaces
            .iter()
            .filter(|k| !k.system && k.replication_factor as usize > remaining)
            .map(|k| format!("{} (RF {})", k.name, k.replication_factor))
            .collect();
        if too_few.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "refusing to decommission: {remaining} nodes would remain in the ring, fewer than \
                 the replication factor of keyspace {} in {datacenter}",
                too_few.join(", ")
            ))
        }
    }

    async fn observe_inner(&self) -> NodeStatus {
        let attrs = [
            "OperationMode",
            "LiveNodes",
            "UnreachableNodes",
            "JoiningNodes",
            "LeavingNodes",
            "MovingNodes",
            "LocalHostId",
            "EndpointToHostId",
            "TokenToEndpointMap",
            "ReleaseVersion",
            "SchemaVersion",
            "ClusterName",
            "NativeTransportRunning",
        ];
        let mut reqs: Vec<Value> = attrs
            .iter()
            .map(|a| json!({"type": "read", "mbean": SS, "attribute": a}))
            .collect();
        reqs.push(json!({"type": "read", "mbean": FD, "attribute": "SimpleStates"}));
        reqs.push(json!({"type": "read", "mbean": SNITCH, "attribute": "Datacenter"}));
        reqs.push(json!({"type": "read", "mbean": SNITCH, "attribute": "Rack"}));
        reqs.push(json!({"type": "read", "mbean": LOAD, "attribute": "Count"}));
        let names: Vec<&str> = attrs
            .iter()
            .copied()
            .chain(["SimpleStates", "Datacenter", "Rack", "Load"])
            .collect();

        let replies = match self.jolokia.bulk(&reqs, READ_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                return NodeStatus {
                    process_state: ProcessState::NotRunning as i32,
                    not_ready_reason: format!("Cassandra does not answer: {e}"),
                    problems: vec![e.to_string()],
                    ..Default::default()
                };
            }
        };
        let mut problems = Vec::new();
        let mut v: BTreeMap<&str, Value> = BTreeMap::new();
        for (name, reply) in names.iter().zip(replies) {
            match reply {
                Ok(value) => {
                    v.insert(*name, value);
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        let Some(mode_raw) = v
            .get("OperationMode")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            // The JVM answers but StorageService is not registered yet: early startup.
            return NodeStatus {
                process_state: ProcessState::Starting as i32,
                not_ready_reason: "Cassandra is starting (StorageService not available yet)".into(),
                problems,
                ..Default::default()
            };
        };
        let mode = parse_mode(&mode_raw);
        let strings = |k: &str| -> BTreeSet<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(norm_addr).collect())
                .unwrap_or_default()
        };
        let map = |k: &str| -> BTreeMap<String, String> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let live = strings("LiveNodes");
        let unreachable = strings("UnreachableNodes");
        let joining = strings("JoiningNodes");
        let leaving = strings("LeavingNodes");
        let moving = strings("MovingNodes");
        let host_ids: BTreeMap<String, String> = map("EndpointToHostId")
            .into_iter()
            .map(|(a, h)| (norm_addr(&a), h))
            .collect();
        let token_map = map("TokenToEndpointMap");
        let fd_states: BTreeMap<String, String> = map("SimpleStates")
            .into_iter()
            .map(|(a, s)| (norm_addr(&a), s))
            .collect();
        let me = norm_addr(&self.address);
        let mut tokens: Vec<(i128, String)> = token_map
            .iter()
            .filter(|(_, ep)| norm_addr(ep) == me)
            .map(|(t, _)| (t.parse::<i128>().unwrap_or(0), t.clone()))
            .collect();
        tokens.sort();
        let ring: BTreeSet<String> = token_map.values().map(|e| norm_addr(e)).collect();

        let mut all: BTreeSet<String> = BTreeSet::new();
        for set in [&live, &unreachable, &joining, &leaving, &moving, &ring] {
            all.extend(set.iter().cloned());
        }
        all.extend(host_ids.keys().cloned());
        let peers = all
            .iter()
            .map(|a| {
                let liveness = if live.contains(a) {
                    PeerLiveness::Up
                } else if unreachable.contains(a) {
                    PeerLiveness::Down
                } else {
                    match fd_states.get(a).map(String::as_str) {
                        Some("UP") => PeerLiveness::Up,
                        Some("DOWN") => PeerLiveness::Down,
                        _ => PeerLiveness::Unspecified,
                    }
                };
                let state = if leaving.contains(a) {
                    PeerState::Leaving
                } else if joining.contains(a) {
                    PeerState::Joining
                } else if moving.contains(a) {
                    PeerState::Moving
                } else if ring.contains(a) {
                    PeerState::Normal
                } else {
                    PeerState::Unspecified
                };
                CassandraPeer {
                    address: a.clone(),
                    host_id: host_ids.get(a).cloned().unwrap_or_default(),
                    liveness: liveness as i32,
                    state: state as i32,
                    is_self: *a == me,
                    load_bytes: None,
                }
            })
            .collect::<Vec<_>>();

        let host_id = string("LocalHostId");
        let recorded_host_id = if mode == CassandraOperationMode::Normal && !host_id.is_empty() {
            self.check_identity(&host_id, &mut problems)
        } else {
            self.recorded_host_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default()
        };
        let datacenter = string("Datacenter");
        // A schema that cannot be read leaves the keyspaces unknown (scale-downs wait) but says
        // nothing of whether the node serves clients: kept out of the readiness verdict.
        let mut schema_problems = Vec::new();
        let keyspaces = if matches!(
            mode,
            CassandraOperationMode::Normal | CassandraOperationMode::Leaving
        ) && !datacenter.is_empty()
        {
            self.keyspaces(&datacenter, &mut schema_problems).await
        } else {
            None
        };
        let cql_reachable = matches!(
            tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(self.cql)
            )
            .await,
            Ok(Ok(_))
        );
        let not_ready_reason = if mode != CassandraOperationMode::Normal {
            format!("operation mode is {mode_raw}")
        } else if !live.contains(&me) {
            "this node is not Up in its own view".to_string()
        } else if !cql_reachable {
            format!("CQL port {} does not accept connections", self.cql)
        } else if !problems.is_empty() {
            format!("unverified: {}", problems.join("; "))
        } else {
            String::new()
        };
        problems.extend(schema_problems);
        let process_state = match mode {
            CassandraOperationMode::Starting | CassandraOperationMode::Joining => {
                ProcessState::Starting
            }
            CassandraOperationMode::Draining
            | CassandraOperationMode::Drained
            | CassandraOperationMode::Decommissioned => ProcessState::Stopping,
            _ => ProcessState::Running,
        };
        NodeStatus {
            process_state: process_state as i32,
            ready: not_ready_reason.is_empty(),
            not_ready_reason,
            version: string("ReleaseVersion"),
            data_bytes: v.get("Load").and_then(Value::as_u64),
            detail: Some(Detail::Cassandra(CassandraStatus {
                host_id,
                recorded_host_id,
                keyspaces_known: keyspaces.is_some(),
                keyspaces: keyspaces.unwrap_or_default(),
                datacenter,
                rack: string("Rack"),
                cluster_name: string("ClusterName"),
                operation_mode: mode as i32,
                operation_mode_raw: mode_raw,
                tokens: tokens.into_iter().map(|(_, t)| t).collect(),
                schema_version: string("SchemaVersion"),
                address: me,
                cql_reachable,
                peers,
            })),
            problems,
            ..Default::default()
        }
    }

    async fn decommission(&self, force: bool, progress: &Progress) -> ActionResult {
        let initial = match self.mode_patiently().await {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        let mut exec = None;
        match initial.as_str() {
            "NORMAL" => {
                // The last check before the point of no return, on a fresh schema reading: the
                // operator decided on a reading up to seconds old, and `force` skips Cassandra's
                // own replication check (needed for its system keyspaces only).
                if let Err(refusal) = self.check_user_replication().await {
                    return failed(refusal);
                }
                progress(format!("starting decommission (force={force})"), None);
                let jolokia = self.jolokia.clone();
                // The JMX call blocks until the node has left (minutes to hours); it runs
                // on its own task while the mode is watched. Its return is only a hint:
                // success is what the node's state shows afterwards.
                exec = Some(tokio::spawn(async move {
                    jolokia
                        .exec(
                            SS,
                            "decommission(boolean)",
                            vec![json!(force)],
                            Duration::from_secs(7 * 24 * 3600),
                        )
                        .await
                }));
            }
            "LEAVING" => progress("decommission already under way; watching it".into(), None),
            "DECOMMISSIONED" => progress("already decommissioned; verifying".into(), None),
            other => {
                return failed(format!(
                    "cannot decommission a node in operation mode {other}"
                ));
            }
        }
        let mut exec_error: Option<String> = None;
        let mut exec_returned: Option<Instant> = None;
        let mut unreachable_since: Option<Instant> = None;
        let mut last_mode = String::new();
        loop {
            if let Some(task) = exec.take_if(|t| t.is_finished()) {
                match task.await {
                    Ok(Ok(_)) => exec_returned = Some(Instant::now()),
                    Ok(Err(e)) => exec_error = Some(e.to_string()),
                    Err(e) => exec_error = Some(format!("decommission task: {e}")),
                }
            }
            match self.mode().await {
                Ok(m) => {
                    unreachable_since = None;
                    if m != last_mode {
                        info!(mode = %m, "decommission: operation mode");
                        if m == "LEAVING" {
                            progress(
                                "leaving the ring: streaming data to the other nodes".into(),
                                None,
                            );
                        }
                        last_mode = m.clone();
                    }
                    match m.as_str() {
                        "DECOMMISSIONED" => break,
                        "DECOMMISSION_FAILED" => {
                            return failed(format!(
                                "Cassandra reports DECOMMISSION_FAILED{}",
                                exec_error.map(|e| format!(": {e}")).unwrap_or_default()
                            ));
                        }
                        "LEAVING" => {}
                        other => {
                            if let Some(e) = &exec_error {
                                return failed(format!(
                                    "decommission refused or failed: {e} (mode {other})"
                                ));
                            }
                            let issued = exec.is_some() || exec_returned.is_some();
                            if !issued {
                                return failed(format!(
                                    "decommission stopped: the node is {other} again"
                                ));
                            }
                            if exec_returned.is_some_and(|t| t.elapsed() > Duration::from_secs(30))
                            {
                                return failed(format!(
                                    "decommission returned but the node is {other}"
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNREACHABLE_LIMIT {
                        return failed(format!(
                            "Cassandra stopped answering during decommission, outcome unknown: {e}"
                        ));
                    }
                }
            }
            tokio::time::sleep(ACTION_POLL).await;
        }
        progress("decommissioned; verifying".into(), Some(95));
        let mut checks = Vec::new();
        let mode = self.mode().await;
        checks.push(Verification {
            check: "this node's operation mode is DECOMMISSIONED".into(),
            method: format!("Jolokia read {SS} OperationMode"),
            observed: mode
                .as_ref()
                .map(String::clone)
                .unwrap_or_else(|e| e.to_string()),
            passed: mode.as_deref().is_ok_and(|m| m == "DECOMMISSIONED"),
        });
        let me = norm_addr(&self.address);
        let ring = self
            .jolokia
            .read(SS, "TokenToEndpointMap", READ_TIMEOUT)
            .await;
        let (observed, passed) = match &ring {
            Ok(Value::Object(m)) => {
                let owned = m
                    .values()
                    .filter(|e| e.as_str().is_some_and(|e| norm_addr(e) == me))
                    .count();
                (
                    format!("{owned} of {} tokens owned by {me}", m.len()),
                    owned == 0,
                )
            }
            Ok(other) => (format!("unexpected value {other}"), false),
            Err(e) => (e.to_string(), false),
        };
        checks.push(Verification {
            check: "this node owns no token in its own ring view".into(),
            method: format!("Jolokia read {SS} TokenToEndpointMap"),
            observed,
            passed,
        });
        verified(checks)
    }

    async fn drain(&self, progress: &Progress) -> ActionResult {
        let initial = match self.mode_patiently().await {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        if initial != "DRAINED" {
            progress(
                "draining: flushing memtables, stopping client and gossip traffic".into(),
                None,
            );
            // Like decommission, the call's return is not the verdict; the mode is.
            if let Err(e) = self
                .jolokia
                .exec(SS, "drain", vec![], Duration::from_secs(30 * 60))
                .await
            {
                warn!("drain call: {e}");
            }
        }
        let mode = self.mode().await;
        verified(vec![Verification {
            check: "this node's operation mode is DRAINED".into(),
            method: format!("Jolokia read {SS} OperationMode"),
            observed: mode
                .as_ref()
                .map(String::clone)
                .unwrap_or_else(|e| e.to_string()),
            passed: mode.as_deref().is_ok_and(|m| m == "DRAINED"),
        }])
    }

    async fn cleanup(
        &self,
        keyspaces: Vec<String>,
        jobs: u32,
        progress: &Progress,
    ) -> ActionResult {
        let keyspaces = if keyspaces.is_empty() {
            match self
                .jolokia
                .read(SS, "NonSystemKeyspaces", READ_TIMEOUT)
                .await
            {
                // What `nodetool cleanup` covers: every keyspace that is not node-local, the
                // replicated system ones (system_auth, ...) included.
                Ok(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                Ok(other) => {
                    return failed(format!("NonSystemKeyspaces: unexpected value {other}"));
                }
                Err(e) => return failed(format!("listing keyspaces: {e}")),
            }
        } else {
            keyspaces
        };
        if keyspaces.is_empty() {
            // No replicated keyspace: nothing holds data this node could have stopped owning.
            return verified(vec![Verification {
                check: "no replicated keyspace holds data to clean up".into(),
                method: format!("Jolokia read {SS} NonSystemKeyspaces"),
                observed: "none".into(),
                passed: true,
            }]);
        }
        let mut checks = Vec::new();
        let n = keyspaces.len().max(1);
        for (i, ks) in keyspaces.iter().enumerate() {
            progress(
                format!("cleaning up keyspace {ks}"),
                Some((i * 100 / n) as u32),
            );
            let r = self
                .jolokia
                .exec(
                    SS,
                    "forceKeyspaceCleanup(int,java.lang.String,[Ljava.lang.String;)",
                    vec![json!(jobs), json!(ks), json!([])],
                    Duration::from_secs(24 * 3600),
                )
                .await;
            let (observed, passed) = match &r {
                Ok(v) => (format!("returned {v}"), v.as_i64() == Some(0)),
                Err(e) => (e.to_string(), false),
            };
            checks.push(Verification {
                check: format!("cleanup of keyspace {ks} completed"),
                method: format!("Jolokia exec {SS} forceKeyspaceCleanup, status 0 means success"),
                observed,
                passed,
            });
        }
        verified(checks)
    }

    /// The operation mode, waiting up to [`UNREACHABLE_LIMIT`] for Cassandra to answer
    /// (an action started right after a restart of either container).
    async fn mode_patiently(&self) -> Result<String, String> {
        let start = Instant::now();
        loop {
            match self.mode().await {
                Ok(m) => return Ok(m),
                Err(e) if start.elapsed() > UNREACHABLE_LIMIT => {
                    return Err(format!("Cassandra does not answer: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

impl Driver for Cassandra {
    fn kind(&self) -> DatabaseKind {
        DatabaseKind::Cassandra
    }

    async fn observe(&self) -> NodeStatus {
        self.observe_inner().await
    }

    async fn process_answers(&self) -> bool {
        self.jolokia
            .read("java.lang:type=Runtime", "Uptime", READ_TIMEOUT)
            .await
            .is_ok()
    }

    fn supports(&self, kind: ActionKind) -> bool {
        matches!(
            kind,
            ActionKind::Decommission | ActionKind::Drain | ActionKind::Cleanup
        )
    }

    async fn run_action(&self, spec: ActionSpec, progress: Progress) -> ActionResult {
        match spec.action {
            Some(Action::Decommission(d)) => self.decommission(d.force, &progress).await,
            Some(Action::Drain(_)) => self.drain(&progress).await,
            Some(Action::Cleanup(c)) => self.cleanup(c.keyspaces, c.jobs, &progress).await,
            other => failed(format!("Cassandra does not support {other:?}")),
        }
    }

    async fn prepare_stop(&self) -> anyhow::Result<()> {
        let mode = match self.mode().await {
            Ok(m) => m,
            Err(JolokiaError::Unreachable { .. }) => return Ok(()),
            Err(e) => bail!("reading the operation mode: {e}"),
        };
        if matches!(mode.as_str(), "DRAINED" | "DECOMMISSIONED") {
            return Ok(());
        }
        info!(%mode, "draining Cassandra before it stops");
        let noop: Progress = std::sync::Arc::new(|_: String, _: Option<u32>| {});
        let r = self.drain(&noop).await;
        if r.success {
            Ok(())
        } else {
            bail!("drain not verified: {}", r.error)
        }
    }
}

/// Reads `StorageService.getKeyspaceReplicationInfo`, e.g. `SimpleStrategy {replication_factor=2}`
/// or `NetworkTopologyStrategy {dc1=3, dc2=2}`, into the strategy and the replication factor
/// in `datacenter`. `None` for anything not understood (the caller treats it as unknown).
fn parse_replication(info: &str, datacenter: &str) -> Option<(String, u32)> {
    let (strategy, options) = info.trim().split_once(' ').unwrap_or((info.trim(), "{}"));
    let options: BTreeMap<&str, &str> = options
        .trim()
        .strip_prefix('{')?
        .strip_suffix('}')?
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim(), v.trim()))
        })
        .collect::<Option<_>>()?;
    // "3/1" is three replicas of which one transient: all three hold data in this DC.
    let count = |v: &str| v.split('/').next()?.trim().parse::<u32>().ok();
    let short = strategy.rsplit('.').next().unwrap_or(strategy);
    let rf = match short {
        "SimpleStrategy" => count(options.get("replication_factor")?)?,
        "NetworkTopologyStrategy" => match options.get(datacenter) {
            Some(v) => count(v)?,
            None => 0,
        },
        "LocalStrategy" => 1,
        _ => return None,
    };
    Some((short.to_string(), rf))
}

fn parse_mode(raw: &str) -> CassandraOperationMode {
    match raw {
        "STARTING" => CassandraOperationMode::Starting,
        "JOINING" => CassandraOperationMode::Joining,
        "NORMAL" => CassandraOperationMode::Normal,
        "LEAVING" => CassandraOperationMode::Leaving,
        "DECOMMISSIONED" => CassandraOperationMode::Decommissioned,
        "DECOMMISSION_FAILED" => CassandraOperationMode::DecommissionFailed,
        "DRAINING" => CassandraOperationMode::Draining,
        "DRAINED" => CassandraOperationMode::Drained,
        "MOVING" => CassandraOperationMode::Moving,
        _ => CassandraOperationMode::Other,
    }
}

/// Cassandra spells endpoints several ways ("/10.0.0.1", "10.0.0.1:7000", "host/10.0.0.1");
/// reduce them to the bare IP.
fn norm_addr(raw: &str) -> String {
    let s = raw.rsplit('/').next().unwrap_or(raw);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match s.split_once(':') {
        Some((ip, port)) if !port.contains(':') => ip.to_string(),
        _ => s.to_string(),
    }
}

fn failed(error: impl Into<String>) -> ActionResult {
    ActionResult {
        success: false,
        verifications: vec![],
        error: error.into(),
    }
}

fn verified(checks: Vec<Verification>) -> ActionResult {
    let failed_checks: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    ActionResult {
        success: !checks.is_empty() && failed_checks.is_empty(),
        error: if failed_checks.is_empty() {
            String::new()
        } else {
            format!("not verified: {}", failed_checks.join("; "))
        },
        verifications: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replication_info() {
        assert_eq!(
            parse_replication("SimpleStrategy {replication_factor=2}", "dc1"),
            Some(("SimpleStrategy".into(), 2))
        );
        assert_eq!(
            parse_replication("NetworkTopologyStrategy {dc1=3, dc2=1}", "dc1"),
            Some(("NetworkTopologyStrategy".into(), 3))
        );
        assert_eq!(
            parse_replication("NetworkTopologyStrategy {dc2=1}", "dc1"),
            Some(("NetworkTopologyStrategy".into(), 0))
        );
        assert_eq!(
            parse_replication("NetworkTopologyStrategy {dc1=3/1}", "dc1"),
            Some(("NetworkTopologyStrategy".into(), 3))
        );
        assert_eq!(parse_replication("EverywhereStrategy {}", "dc1"), None);
        assert_eq!(parse_replication("SimpleStrategy {}", "dc1"), None);
        assert_eq!(parse_replication("garbage", "dc1"), None);
    }

    #[test]
    fn normalises_addresses() {
        assert_eq!(norm_addr("/127.0.0.2"), "127.0.0.2");
        assert_eq!(norm_addr("127.0.0.2:7000"), "127.0.0.2");
        assert_eq!(norm_addr("host/10.1.2.3:7000"), "10.1.2.3");
        assert_eq!(norm_addr("[::1]:7000"), "::1");
        assert_eq!(norm_addr("::1"), "::1");
    }
}
