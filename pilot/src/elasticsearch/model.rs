//! What the REST answers say, parsed into plain types (pure, tested against captured
//! answers). Anything missing or of an unexpected shape is an error, never a default.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use stateward_proto::v1::ElasticsearchDiskThreshold;

/// The setting that keeps shards off named nodes.
pub const EXCLUDE_NAME: &str = "cluster.routing.allocation.exclude._name";
/// The setting a drain limits to primaries.
pub const ALLOCATION_ENABLE: &str = "cluster.routing.allocation.enable";

/// This node as `_nodes/_local` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalNode {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub version: String,
    pub cluster_name: String,
}

impl LocalNode {
    pub fn is_master_eligible(&self) -> bool {
        self.roles.iter().any(|r| r == "master")
    }
}

pub fn local_node(v: &Value) -> Result<LocalNode, String> {
    let nodes = v
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or("_nodes/_local: no `nodes` object")?;
    let mut it = nodes.iter();
    let (Some((id, node)), None) = (it.next(), it.next()) else {
        return Err(format!("_nodes/_local: {} nodes, expected 1", nodes.len()));
    };
    let text = |k: &str| node.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(LocalNode {
        id: id.clone(),
        name: text("name").ok_or("_nodes/_local: no node name")?,
        roles: node
            .get("roles")
            .and_then(Value::as_array)
            .ok_or("_nodes/_local: no roles")?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        version: text("version").unwrap_or_default(),
        cluster_name: v
            .get("cluster_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// The cluster as one node's cluster state shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Empty while no cluster UUID is known ("_na_").
    pub cluster_uuid: String,
    pub master_id: Option<String>,
    /// Node ID → name of every node in the cluster.
    pub nodes: BTreeMap<String, String>,
    /// Node IDs of the last committed voting configuration.
    pub voting_config: Vec<String>,
    /// (node ID, node name) of each voting configuration exclusion; the ID is "_absent_"
    /// for a node that was not in the cluster when it was excluded.
    pub voting_exclusions: Vec<(String, String)>,
    /// `index.auto_expand_replicas` by index, where set.
    pub auto_expand: BTreeMap<String, String>,
}

impl ClusterView {
    pub fn master_name(&self) -> Option<&str> {
        self.master_id
            .as_ref()
            .and_then(|id| self.nodes.get(id))
            .map(String::as_str)
    }

    pub fn voting_exclusion_names(&self) -> BTreeSet<String> {
        self.voting_exclusions
            .iter()
            .map(|(_, n)| n.clone())
            .collect()
    }
}

pub fn cluster_view(v: &Value) -> Result<ClusterView, String> {
    let metadata = v.get("metadata").ok_or("_cluster/state: no metadata")?;
    let uuid = metadata
        .get("cluster_uuid")
        .or_else(|| v.get("cluster_uuid"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let coordination = metadata
        .get("cluster_coordination")
        .ok_or("_cluster/state: no metadata.cluster_coordination")?;
    // filter_path drops empty arrays: a missing list is an empty one.
    let ids = |k: &str| -> Vec<String> {
        coordination
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let exclusions = coordination
        .get("voting_config_exclusions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (s("node_id"), s("node_name"))
                })
                .collect()
        })
        .unwrap_or_default();
    let nodes = v
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or("_cluster/state: no nodes")?
        .iter()
        .map(|(id, n)| {
            let name = n.get("name").and_then(Value::as_str).unwrap_or_default();
            (id.clone(), name.to_string())
        })
        .collect();
    let auto_expand = metadata
        .get("indices")
        .and_then(Value::as_object)
        .map(|indices| {
            indices
                .iter()
                .filter_map(|(name, ix)| {
                    let ae = ix
                        .pointer("/settings/index/auto_expand_replicas")?
                        .as_str()?;
                    (ae != "false").then(|| (name.clone(), ae.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ClusterView {
        cluster_uuid: if uuid == "_na_" { "" } else { uuid }.to_string(),
        master_id: v
            .get("master_node")
            .and_then(Value::as_str)
            .map(str::to_string),
        nodes,
        voting_config: ids("last_committed_config"),
        voting_exclusions: exclusions,
        auto_expand,
    })
}

/// The allocation settings in force: a transient value wins over a persistent one, as in
/// Elasticsearch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllocationSettings {
    /// The node names in `cluster.routing.allocation.exclude._name`; empty when unset.
    pub excluded: BTreeSet<String>,
    /// The raw setting; `None` when unset.
    pub excluded_raw: Option<String>,
    /// `cluster.routing.allocation.enable`; `None` when unset (Elasticsearch: "all").
    pub enable: Option<String>,
}

pub fn allocation_settings(v: &Value) -> Result<AllocationSettings, String> {
    let section = |k: &str| -> Result<&serde_json::Map<String, Value>, String> {
        v.get(k)
            .and_then(Value::as_object)
            .ok_or_else(|| format!("_cluster/settings: no `{k}` object"))
    };
    let persistent = section("persistent")?;
    let transient = section("transient")?;
    let get = |k: &str| transient.get(k).or_else(|| persistent.get(k));
    let raw = match get(EXCLUDE_NAME) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        // A list setting written as a JSON array reads back as one.
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(other) => return Err(format!("{EXCLUDE_NAME}: unexpected value {other}")),
    };
    let excluded = raw
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(AllocationSettings {
        excluded,
        excluded_raw: raw,
        enable: get(ALLOCATION_ENABLE)
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The disk threshold in force, from `_cluster/settings?include_defaults=true` in nested
/// form (see [`DISK_SETTINGS`](super::DISK_SETTINGS)): transient wins over persistent, which
/// wins over the defaults (these include what elasticsearch.yml sets).
pub fn disk_threshold(v: &Value) -> Result<ElasticsearchDiskThreshold, String> {
    let lookup = |leaf: &[&str]| -> Option<&Value> {
        ["transient", "persistent", "defaults"]
            .iter()
            .find_map(|scope| {
                let disk = ["cluster", "routing", "allocation", "disk"];
                disk.iter()
                    .chain(leaf)
                    .try_fold(v.get(scope)?, |node, key| node.get(key))
            })
    };
    let enabled = match lookup(&["threshold_enabled"]) {
        Some(Value::String(s)) => s
            .parse::<bool>()
            .map_err(|_| format!("disk.threshold_enabled: not a boolean: {s:?}"))?,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("disk.threshold_enabled: unexpected value {other}")),
        None => return Err("disk.threshold_enabled: not in the cluster settings".into()),
    };
    let low_watermark = lookup(&["watermark", "low"])
        .and_then(Value::as_str)
        .ok_or("disk.watermark.low: not in the cluster settings")?
        .to_string();
    Ok(ElasticsearchDiskThreshold {
        enabled,
        low_watermark,
    })
}

/// One shard copy from `_cat/shards`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardCopy {
    pub index: String,
    pub shard: String,
    pub primary: bool,
    pub state: String,
    /// The node holding it (the source of a relocation); `None` when unassigned.
    pub node: Option<String>,
    /// The node a relocating copy moves to.
    pub target: Option<String>,
    pub store_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shards(pub Vec<ShardCopy>);

impl Shards {
    /// Copies on `node`, a relocation's source and target both counting: either holds data.
    pub fn on_node(&self, node: &str) -> u32 {
        self.0
            .iter()
            .filter(|c| c.node.as_deref() == Some(node) || c.target.as_deref() == Some(node))
            .count() as u32
    }

    pub fn in_state(&self, state: &str) -> u32 {
        self.0.iter().filter(|c| c.state == state).count() as u32
    }

    /// (relocating, initializing, unassigned) copies of the cluster.
    pub fn moving(&self) -> (u32, u32, u32) {
        (
            self.in_state("RELOCATING"),
            self.in_state("INITIALIZING"),
            self.in_state("UNASSIGNED"),
        )
    }

    /// Bytes stored on `node` (copies it holds, not those coming to it).
    pub fn store_on(&self, node: &str) -> u64 {
        self.0
            .iter()
            .filter(|c| c.node.as_deref() == Some(node))
            .filter_map(|c| c.store_bytes)
            .sum()
    }
}

/// `_cat/shards?format=json&bytes=b&h=index,shard,prirep,state,node,store`. A relocating
/// copy's node reads "source -> ip id target".
pub fn shards(v: &Value) -> Result<Shards, String> {
    let rows = v.as_array().ok_or("_cat/shards: not a JSON array")?;
    let mut copies = Vec::with_capacity(rows.len());
    for row in rows {
        let s = |k: &str| row.get(k).and_then(Value::as_str);
        let (node, target) = match s("node") {
            None => (None, None),
            Some(n) => match n.split_once(" -> ") {
                Some((src, rest)) => (
                    Some(src.trim().to_string()),
                    rest.split_whitespace().last().map(str::to_string),
                ),
                None => (Some(n.trim().to_string()), None),
            },
        };
        copies.push(ShardCopy {
            index: s("index").ok_or("_cat/shards: a row without index")?.into(),
            shard: s("shard").unwrap_or_default().into(),
            primary: s("prirep") == Some("p"),
            state: s("state").ok_or("_cat/shards: a row without state")?.into(),
            node,
            target,
            store_bytes: s("store").and_then(|b| b.parse().ok()),
        });
    }
    Ok(Shards(copies))
}

/// One row of `_cat/indices?format=json&bytes=b&h=index,pri,rep,store.size`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub name: String,
    pub primaries: u32,
    pub replicas: u32,
    pub store_bytes: u64,
}

pub fn indices(v: &Value) -> Result<Vec<IndexRow>, String> {
    let rows = v.as_array().ok_or("_cat/indices: not a JSON array")?;
    rows.iter()
        .map(|row| {
            let s = |k: &str| row.get(k).and_then(Value::as_str);
            let name = s("index").ok_or("_cat/indices: a row without index")?;
            let num = |k: &str| -> Result<u32, String> {
                s(k).and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("_cat/indices: index {name}: no {k}"))
            };
            Ok(IndexRow {
                name: name.to_string(),
                primaries: num("pri")?,
                replicas: num("rep")?,
                // A closed index has no store size.
                store_bytes: s("store.size").and_then(|x| x.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// `_cluster/health`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: String,
    pub relocating: u64,
    pub initializing: u64,
    pub unassigned: u64,
}

pub fn health(v: &Value) -> Result<Health, String> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Health {
        status: v
            .get("status")
            .and_then(Value::as_str)
            .ok_or("_cluster/health: no status")?
            .to_string(),
        relocating: n("relocating_shards"),
        initializing: n("initializing_shards"),
        unassigned: n("unassigned_shards"),
    })
}

/// Health colours in order, worst first.
pub fn health_rank(status: &str) -> Option<u8> {
    match status {
        "red" => Some(0),
        "yellow" => Some(1),
        "green" => Some(2),
        _ => None,
    }
}

/// `POST _flush`'s shard summary: (total, successful, failed).
pub fn flush_shards(v: &Value) -> Result<(u64, u64, u64), String> {
    let shards = v.get("_shards").ok_or("_flush: no _shards")?;
    let n = |k: &str| {
        shards
            .get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("_flush: no _shards.{k}"))
    };
    Ok((n("total")?, n("successful")?, n("failed")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Answers captured from Elasticsearch 9.5.3 (the e2e distribution), one node, with an
    // index `docs` (2 shards, 1 replica: replicas unassigned), an index `auto`
    // (auto_expand_replicas 0-1), a voting exclusion of an absent node and both allocation
    // settings set; the request paths are the driver's own.
    const NODES_LOCAL: &str = r#"{"cluster_name":"capture","nodes":{"r-IVJt8vRhCE6kU1RfzHRA":{"name":"cap-1","version":"9.5.3","roles":["data","ingest","master"]}}}"#;
    const STATE: &str = r#"{"cluster_uuid":"aClw2MQnTdOV61WfJlUGQQ","master_node":"r-IVJt8vRhCE6kU1RfzHRA","nodes":{"r-IVJt8vRhCE6kU1RfzHRA":{"name":"cap-1"}},"metadata":{"cluster_uuid":"aClw2MQnTdOV61WfJlUGQQ","cluster_coordination":{"term":1,"last_committed_config":["r-IVJt8vRhCE6kU1RfzHRA"],"last_accepted_config":["r-IVJt8vRhCE6kU1RfzHRA"],"voting_config_exclusions":[{"node_id":"_absent_","node_name":"gone-1"}]},"indices":{"auto":{"settings":{"index":{"auto_expand_replicas":"0-1"}}}}}}"#;
    const SETTINGS: &str = r#"{"persistent":{"cluster.routing.allocation.enable":"primaries","cluster.routing.allocation.exclude._name":"gone-1,gone-2"},"transient":{}}"#;
    const SHARDS: &str = r#"[{"index":"docs","shard":"0","prirep":"p","state":"STARTED","node":"cap-1","store":"0"},{"index":"docs","shard":"0","prirep":"r","state":"UNASSIGNED","node":null,"store":null},{"index":"docs","shard":"1","prirep":"p","state":"STARTED","node":"cap-1","store":"227"},{"index":"docs","shard":"1","prirep":"r","state":"UNASSIGNED","node":null,"store":null},{"index":"auto","shard":"0","prirep":"p","state":"STARTED","node":"cap-1","store":"227"}]"#;
    const INDICES: &str = r#"[{"index":"docs","pri":"2","rep":"1","store.size":"227"},{"index":"auto","pri":"1","rep":"0","store.size":"227"}]"#;
    const HEALTH: &str = r#"{"cluster_name":"capture","status":"yellow","timed_out":false,"number_of_nodes":1,"number_of_data_nodes":1,"active_primary_shards":3,"active_shards":3,"relocating_shards":0,"initializing_shards":0,"unassigned_shards":2,"unassigned_primary_shards":0,"delayed_unassigned_shards":0,"number_of_pending_tasks":0,"number_of_in_flight_fetch":0,"task_max_waiting_in_queue_millis":0,"active_shards_percent_as_number":60.0}"#;
    /// `_cluster/health?local=true` of a node that has not found its masters yet.
    const HEALTH_NO_MASTER: &str = r#"{"cluster_name":"capture2","status":"red","timed_out":false,"number_of_nodes":1,"number_of_data_nodes":1,"active_primary_shards":0,"active_shards":0,"relocating_shards":0,"initializing_shards":0,"unassigned_shards":0,"unassigned_primary_shards":0,"delayed_unassigned_shards":0,"number_of_pending_tasks":0,"number_of_in_flight_fetch":0,"task_max_waiting_in_queue_millis":0,"active_shards_percent_as_number":"NaN"}"#;
    const FLUSH: &str = r#"{"_shards":{"total":5,"successful":3,"failed":0}}"#;

    fn parse(text: &str) -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn local_node_from_nodes_info() -> Result<(), String> {
        let n = local_node(&parse(NODES_LOCAL)?)?;
        assert_eq!(n.id, "r-IVJt8vRhCE6kU1RfzHRA");
        assert_eq!(n.name, "cap-1");
        assert_eq!(n.version, "9.5.3");
        assert_eq!(n.cluster_name, "capture");
        assert_eq!(n.roles, ["data", "ingest", "master"]);
        assert!(n.is_master_eligible());
        assert!(local_node(&json!({"nodes": {}})).is_err());
        Ok(())
    }

    #[test]
    fn cluster_view_from_the_cluster_state() -> Result<(), String> {
        let c = cluster_view(&parse(STATE)?)?;
        assert_eq!(c.cluster_uuid, "aClw2MQnTdOV61WfJlUGQQ");
        assert_eq!(c.master_name(), Some("cap-1"));
        assert_eq!(c.voting_config, ["r-IVJt8vRhCE6kU1RfzHRA"]);
        assert_eq!(
            c.voting_exclusions,
            [("_absent_".to_string(), "gone-1".to_string())]
        );
        assert_eq!(c.auto_expand.get("auto").map(String::as_str), Some("0-1"));
        assert!(!c.auto_expand.contains_key("docs"));
        // Before the cluster formed: no master, no UUID, empty lists dropped by filter_path.
        let fresh = json!({"cluster_uuid": "_na_", "nodes": {"id1": {"name": "node1"}},
            "metadata": {"cluster_uuid": "_na_", "cluster_coordination": {"term": 0}}});
        let c = cluster_view(&fresh)?;
        assert_eq!(
            (c.cluster_uuid.as_str(), c.master_id.as_deref()),
            ("", None)
        );
        assert!(c.voting_config.is_empty() && c.voting_exclusions.is_empty());
        Ok(())
    }

    #[test]
    fn allocation_settings_transient_wins() -> Result<(), String> {
        let s = allocation_settings(&parse(SETTINGS)?)?;
        assert_eq!(s.excluded.iter().collect::<Vec<_>>(), ["gone-1", "gone-2"]);
        assert_eq!(s.excluded_raw.as_deref(), Some("gone-1,gone-2"));
        assert_eq!(s.enable.as_deref(), Some("primaries"));
        let v =
            json!({"persistent": {EXCLUDE_NAME: "node3"}, "transient": {EXCLUDE_NAME: ["a", "b"]}});
        assert_eq!(allocation_settings(&v)?.excluded.len(), 2);
        let empty = allocation_settings(&json!({"persistent": {}, "transient": {}}))?;
        assert_eq!(empty, AllocationSettings::default());
        assert!(allocation_settings(&json!({})).is_err());
        Ok(())
    }

    #[test]
    fn disk_threshold_in_order_of_precedence() -> Result<(), String> {
        // As Elasticsearch 9.5.3 answered with the watermarks set in elasticsearch.yml.
        let yml = parse(
            r#"{"persistent":{},"transient":{},"defaults":{"cluster":{"routing":{"allocation":
            {"disk":{"threshold_enabled":"true","watermark":{"low":"2gb"}}}}}}}"#,
        )?;
        let t = disk_threshold(&yml)?;
        assert!(t.enabled);
        assert_eq!(t.low_watermark, "2gb");
        let set = parse(
            r#"{"persistent":{"cluster":{"routing":{"allocation":{"disk":{"watermark":{"low":"90%"}}}}}},
            "transient":{"cluster":{"routing":{"allocation":{"disk":{"threshold_enabled":"false"}}}}},
            "defaults":{"cluster":{"routing":{"allocation":{"disk":{"threshold_enabled":"true"}}}}}}"#,
        )?;
        let t = disk_threshold(&set)?;
        assert!(!t.enabled);
        assert_eq!(t.low_watermark, "90%");
        assert!(disk_threshold(&parse(r#"{"persistent":{},"transient":{}}"#)?).is_err());
        Ok(())
    }

    #[test]
    fn shards_indices_health_and_flush_as_captured() -> Result<(), String> {
        let s = shards(&parse(SHARDS)?)?;
        assert_eq!(s.on_node("cap-1"), 3);
        assert_eq!(s.moving(), (0, 0, 2));
        assert_eq!(s.store_on("cap-1"), 454);
        let ix = indices(&parse(INDICES)?)?;
        assert_eq!(
            (ix[0].name.as_str(), ix[0].primaries, ix[0].replicas),
            ("docs", 2, 1)
        );
        assert_eq!(ix[1].store_bytes, 227);
        let h = health(&parse(HEALTH)?)?;
        assert_eq!((h.status.as_str(), h.unassigned), ("yellow", 2));
        assert_eq!(health(&parse(HEALTH_NO_MASTER)?)?.status, "red");
        assert_eq!(flush_shards(&parse(FLUSH)?)?, (5, 3, 0));
        assert!(health_rank("green") > health_rank("yellow"));
        assert!(health_rank("yellow") > health_rank("red"));
        assert_eq!(health_rank("purple"), None);
        Ok(())
    }

    #[test]
    fn shards_count_relocations_on_both_ends() -> Result<(), String> {
        let v = json!([
            {"index": "docs", "shard": "0", "prirep": "p", "state": "STARTED", "node": "node1", "store": "1000"},
            {"index": "docs", "shard": "0", "prirep": "r", "state": "RELOCATING",
             "node": "node3 -> 127.0.0.2 Xk1fDq node2", "store": "900"},
            {"index": "docs", "shard": "1", "prirep": "r", "state": "UNASSIGNED", "node": null, "store": null},
            {"index": "docs", "shard": "2", "prirep": "r", "state": "INITIALIZING", "node": "node2", "store": "0"}
        ]);
        let s = shards(&v)?;
        assert_eq!(s.on_node("node3"), 1);
        assert_eq!(s.on_node("node2"), 2);
        assert_eq!(s.on_node("node1"), 1);
        assert_eq!(s.moving(), (1, 1, 1));
        assert_eq!(s.store_on("node3"), 900);
        assert!(s.0[0].primary && !s.0[1].primary);
        Ok(())
    }
}
