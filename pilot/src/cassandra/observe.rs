//! The node's status: one bulk Jolokia read of StorageService, the failure detector, the
//! snitch and the load metric, plus a TCP check of the CQL port.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{
    CassandraOperationMode, CassandraPeer, CassandraStatus, NodeStatus, PeerLiveness, PeerState,
    ProcessState,
};

use super::{Cassandra, FD, LOAD, READ_TIMEOUT, SNITCH, SS, norm_addr, parse_mode};

/// StorageService attributes read on every observation.
const SS_ATTRIBUTES: &[&str] = &[
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
/// Other attributes: (name in [`Reading`], MBean, attribute).
const OTHER_ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("SimpleStates", FD, "SimpleStates"),
    ("Datacenter", SNITCH, "Datacenter"),
    ("Rack", SNITCH, "Rack"),
    ("Load", LOAD, "Count"),
];

/// One observation's attribute values, by name; an attribute that could not be read is
/// absent (and named in the problems).
struct Reading(BTreeMap<&'static str, Value>);

impl Reading {
    fn string(&self, k: &str) -> String {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn addresses(&self, k: &str) -> BTreeSet<String> {
        self.0
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(norm_addr).collect())
            .unwrap_or_default()
    }

    fn map(&self, k: &str) -> BTreeMap<String, String> {
        self.0
            .get(k)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Cassandra {
    pub(super) async fn observe_node(&self) -> NodeStatus {
        let (reading, mut problems) = match self.read_all().await {
            Ok(r) => r,
            Err(e) => {
                return NodeStatus {
                    process_state: ProcessState::NotRunning as i32,
                    not_ready_reason: format!("Cassandra does not answer: {e}"),
                    problems: vec![e],
                    ..Default::default()
                };
            }
        };
        let Some(mode_raw) = reading
            .0
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
        let me = norm_addr(&self.address);
        let ring = RingView::from_reading(&reading, &me);

        let host_id = reading.string("LocalHostId");
        let recorded_host_id = if mode == CassandraOperationMode::Normal && !host_id.is_empty() {
            self.identity.check(&host_id, &self.address, &mut problems)
        } else {
            self.identity.recorded()
        };
        let datacenter = reading.string("Datacenter");
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
        let cql_reachable = self.cql_reachable().await;
        let auth = if mode == CassandraOperationMode::Normal && cql_reachable {
            self.auth_status().await
        } else {
            None
        };
        let not_ready_reason = if mode != CassandraOperationMode::Normal {
            format!("operation mode is {mode_raw}")
        } else if !ring.self_live {
            "this node is not Up in its own view".to_string()
        } else if !cql_reachable {
            format!("CQL port {} does not accept connections", self.cql)
        } else if !problems.is_empty() {
            format!("unverified: {}", problems.join("; "))
        } else {
            String::new()
        };
        problems.extend(schema_problems);
        NodeStatus {
            process_state: process_state(mode) as i32,
            ready: not_ready_reason.is_empty(),
            not_ready_reason,
            version: reading.string("ReleaseVersion"),
            data_bytes: reading.0.get("Load").and_then(Value::as_u64),
            detail: Some(Detail::Cassandra(CassandraStatus {
                host_id,
                recorded_host_id,
                keyspaces_known: keyspaces.is_some(),
                keyspaces: keyspaces.unwrap_or_default(),
                datacenter,
                rack: reading.string("Rack"),
                cluster_name: reading.string("ClusterName"),
                operation_mode: mode as i32,
                operation_mode_raw: mode_raw,
                tokens: ring.tokens,
                schema_version: reading.string("SchemaVersion"),
                address: me,
                cql_reachable,
                peers: ring.peers,
                auth,
            })),
            problems,
            ..Default::default()
        }
    }

    async fn cql_reachable(&self) -> bool {
        let connect = tokio::net::TcpStream::connect(self.cql);
        matches!(
            tokio::time::timeout(Duration::from_millis(500), connect).await,
            Ok(Ok(_))
        )
    }

    /// Every attribute in one round trip, and a problem for each that could not be read.
    /// Fails only when Cassandra does not answer at all.
    async fn read_all(&self) -> Result<(Reading, Vec<String>), String> {
        let mut reqs: Vec<Value> = SS_ATTRIBUTES
            .iter()
            .map(|a| json!({"type": "read", "mbean": SS, "attribute": a}))
            .collect();
        reqs.extend(
            OTHER_ATTRIBUTES
                .iter()
                .map(|(_, mbean, a)| json!({"type": "read", "mbean": mbean, "attribute": a})),
        );
        let names = SS_ATTRIBUTES
            .iter()
            .copied()
            .chain(OTHER_ATTRIBUTES.iter().map(|(name, _, _)| *name));
        let replies = self
            .jolokia
            .bulk(&reqs, READ_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        let mut values = BTreeMap::new();
        for (name, reply) in names.zip(replies) {
            match reply {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        Ok((Reading(values), problems))
    }
}

/// This node's view of the ring.
struct RingView {
    peers: Vec<CassandraPeer>,
    /// The tokens this node owns, in token order.
    tokens: Vec<String>,
    /// Whether this node is Up in its own view.
    self_live: bool,
}

impl RingView {
    fn from_reading(r: &Reading, me: &str) -> Self {
        let live = r.addresses("LiveNodes");
        let unreachable = r.addresses("UnreachableNodes");
        let joining = r.addresses("JoiningNodes");
        let leaving = r.addresses("LeavingNodes");
        let moving = r.addresses("MovingNodes");
        let host_ids: BTreeMap<String, String> = r
            .map("EndpointToHostId")
            .into_iter()
            .map(|(a, h)| (norm_addr(&a), h))
            .collect();
        let token_map = r.map("TokenToEndpointMap");
        let fd_states: BTreeMap<String, String> = r
            .map("SimpleStates")
            .into_iter()
            .map(|(a, s)| (norm_addr(&a), s))
            .collect();
        let mut tokens: Vec<(i128, String)> = token_map
            .iter()
            .filter(|(_, ep)| norm_addr(ep) == me)
            .map(|(t, _)| (t.parse::<i128>().unwrap_or(0), t.clone()))
            .collect();
        tokens.sort();
        let ring: BTreeSet<String> = token_map.values().map(|e| norm_addr(e)).collect();

        let mut all: BTreeSet<&String> = BTreeSet::new();
        for set in [&live, &unreachable, &joining, &leaving, &moving, &ring] {
            all.extend(set.iter());
        }
        all.extend(host_ids.keys());
        let peers = all
            .into_iter()
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
                    is_self: a == me,
                    load_bytes: None,
                }
            })
            .collect();
        RingView {
            peers,
            tokens: tokens.into_iter().map(|(_, t)| t).collect(),
            self_live: live.contains(me),
        }
    }
}

fn process_state(mode: CassandraOperationMode) -> ProcessState {
    match mode {
        CassandraOperationMode::Starting | CassandraOperationMode::Joining => {
            ProcessState::Starting
        }
        CassandraOperationMode::Draining
        | CassandraOperationMode::Drained
        | CassandraOperationMode::Decommissioned => ProcessState::Stopping,
        _ => ProcessState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_view_from_a_reading() {
        let values = [
            ("LiveNodes", json!(["127.0.0.1", "127.0.0.2"])),
            ("UnreachableNodes", json!(["127.0.0.3"])),
            ("LeavingNodes", json!(["127.0.0.2"])),
            (
                "TokenToEndpointMap",
                json!({"-5": "127.0.0.1", "10": "127.0.0.2", "-20": "127.0.0.1", "7": "127.0.0.3"}),
            ),
            (
                "EndpointToHostId",
                json!({"/127.0.0.1": "h1", "/127.0.0.2": "h2", "/127.0.0.3": "h3"}),
            ),
        ];
        let r = Reading(values.into_iter().collect());
        let view = RingView::from_reading(&r, "127.0.0.1");
        assert!(view.self_live);
        assert_eq!(view.tokens, ["-20", "-5"]);
        let by_addr: BTreeMap<&str, &CassandraPeer> =
            view.peers.iter().map(|p| (p.address.as_str(), p)).collect();
        assert_eq!(by_addr.len(), 3);
        assert!(by_addr["127.0.0.1"].is_self);
        assert_eq!(by_addr["127.0.0.2"].state(), PeerState::Leaving);
        assert_eq!(by_addr["127.0.0.3"].liveness(), PeerLiveness::Down);
        assert_eq!(by_addr["127.0.0.3"].host_id, "h3");
    }
}
