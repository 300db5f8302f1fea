//! The node's status: this node's description, its own copy of the cluster state and
//! health (no load on the master), then, once it is in a cluster with an elected master,
//! the allocation settings, the shards and the indices.

use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::{ElasticsearchIndex, ElasticsearchStatus, NodeStatus, ProcessState};

use super::model::{self, ClusterView, IndexRow, LocalNode};
use super::{DISK_SETTINGS, Elasticsearch, INDICES, MASTER_TIMEOUT, ReadError};

impl Elasticsearch {
    pub(super) async fn observe_node(&self) -> NodeStatus {
        let (local, cluster, health) =
            tokio::join!(self.local_node(), self.cluster(true), self.health(true));
        let local = match local {
            Ok(n) => n,
            Err(e) => return not_answering(&e),
        };
        let mut problems = Vec::new();
        let cluster = cluster.map_err(|e| {
            // A node without an elected master answers 503 (`state not recovered`).
            problems.push(format!("cluster state: {e}"));
            e.to_string()
        });
        let health = health
            .map_err(|e| problems.push(format!("cluster health: {e}")))
            .ok();
        let not_ready_reason = self.not_ready_reason(&local, cluster.as_ref());
        let cluster = cluster.ok();
        let joined = not_ready_reason.is_empty();
        let mut status = ElasticsearchStatus {
            node_id: local.id.clone(),
            roles: local.roles.clone(),
            cluster_name: local.cluster_name.clone(),
            cluster_health: health.map(|h| h.status).unwrap_or_default(),
            ..Default::default()
        };
        if let Some(c) = &cluster {
            self.fill_cluster(&mut status, &local, c, &mut problems);
        }
        let data_bytes = if joined {
            self.fill_allocation(&mut status, &local, cluster.as_ref(), &mut problems)
                .await
        } else {
            problems.push(
                "allocation settings, shards and indices not read: this node is not in a \
                 cluster with an elected master"
                    .into(),
            );
            None
        };
        NodeStatus {
            process_state: if joined {
                ProcessState::Running
            } else {
                ProcessState::Starting
            } as i32,
            // Ready means this node serves: a yellow or red cluster still lets its pods be
            // ready, otherwise a restart that needs the node back to heal it deadlocks.
            ready: joined,
            not_ready_reason,
            version: local.version.clone(),
            data_bytes,
            detail: Some(Detail::Elasticsearch(status)),
            problems,
            ..Default::default()
        }
    }

    /// Empty when this node is in a cluster with an elected master, under its own name.
    fn not_ready_reason(
        &self,
        local: &LocalNode,
        cluster: Result<&ClusterView, &String>,
    ) -> String {
        if local.name != self.node_name {
            return format!(
                "Elasticsearch reports node name {:?}, expected {:?}",
                local.name, self.node_name
            );
        }
        let c = match cluster {
            Ok(c) => c,
            Err(e) => return format!("not in a cluster with an elected master: {e}"),
        };
        match &c.master_id {
            None => "no elected master in this node's view (forming or joining a cluster)".into(),
            Some(m) if !c.nodes.contains_key(m) => {
                format!("the elected master {m} is not in this node's cluster state")
            }
            Some(_) if !c.nodes.contains_key(&local.id) => {
                "this node is not in its own cluster state's node list".into()
            }
            Some(_) => String::new(),
        }
    }

    fn fill_cluster(
        &self,
        s: &mut ElasticsearchStatus,
        local: &LocalNode,
        c: &ClusterView,
        problems: &mut Vec<String>,
    ) {
        let master = c.master_name().map(str::to_string);
        if master.is_some() {
            s.cluster_uuid = c.cluster_uuid.clone();
        }
        s.elected_master = c.master_id.as_deref() == Some(local.id.as_str());
        s.elected_master_name = master.unwrap_or_default();
        let mut names: Vec<String> = c.nodes.values().cloned().collect();
        names.sort();
        s.cluster_nodes = names;
        s.voting_config = c
            .voting_config
            .iter()
            .map(|id| {
                self.name_of(id).unwrap_or_else(|| {
                    problems.push(format!(
                        "the voting configuration holds node ID {id}, whose name is unknown"
                    ));
                    id.clone()
                })
            })
            .collect();
        s.voting_config.sort();
        s.voting_exclusions = c.voting_exclusion_names().into_iter().collect();
        s.voting_excluded = s.voting_exclusions.contains(&local.name);
    }

    /// The allocation settings, shards and indices; returns the bytes this node stores.
    async fn fill_allocation(
        &self,
        s: &mut ElasticsearchStatus,
        local: &LocalNode,
        cluster: Option<&ClusterView>,
        problems: &mut Vec<String>,
    ) -> Option<u64> {
        let indices_path = format!("{INDICES}&master_timeout={MASTER_TIMEOUT}");
        let disk_path = format!("{DISK_SETTINGS}&master_timeout={MASTER_TIMEOUT}");
        let (settings, disk, shards, indices) = tokio::join!(
            self.settings(),
            self.read(&disk_path, model::disk_threshold),
            self.shards(),
            self.read(&indices_path, model::indices)
        );
        match disk {
            Ok(d) => s.disk_threshold = Some(d),
            Err(e) => problems.push(format!("disk threshold settings: {e}")),
        }
        match settings {
            Ok(a) => {
                s.allocation_excluded = a.excluded.contains(&local.name);
                s.allocation_exclusions = a.excluded.into_iter().collect();
                s.allocation_enable = a.enable.unwrap_or_else(|| "all".into());
            }
            Err(e) => problems.push(format!("cluster settings: {e}")),
        }
        let (shards, indices) = match (shards, indices) {
            (Ok(sh), Ok(ix)) => (sh, ix),
            (sh, ix) => {
                for e in [sh.err(), ix.err()].into_iter().flatten() {
                    problems.push(format!("shards and indices: {e}"));
                }
                return None;
            }
        };
        s.shard_count = shards.on_node(&local.name);
        (
            s.relocating_shards,
            s.initializing_shards,
            s.unassigned_shards,
        ) = shards.moving();
        s.indices = index_list(indices, cluster);
        s.indices_known = true;
        Some(shards.store_on(&local.name))
    }
}

fn index_list(rows: Vec<IndexRow>, cluster: Option<&ClusterView>) -> Vec<ElasticsearchIndex> {
    let mut list: Vec<ElasticsearchIndex> = rows
        .into_iter()
        .map(|r| ElasticsearchIndex {
            auto_expand_replicas: cluster
                .and_then(|c| c.auto_expand.get(&r.name))
                .cloned()
                .unwrap_or_default(),
            name: r.name,
            primaries: r.primaries,
            replicas: r.replicas,
            store_bytes: r.store_bytes,
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

fn not_answering(e: &ReadError) -> NodeStatus {
    if e.is_unreachable() {
        NodeStatus {
            process_state: ProcessState::NotRunning as i32,
            not_ready_reason: format!("Elasticsearch does not answer: {e}"),
            problems: vec![e.to_string()],
            ..Default::default()
        }
    } else {
        // It answers, with an error: still starting (or broken, which `problems` shows).
        NodeStatus {
            process_state: ProcessState::Starting as i32,
            not_ready_reason: format!("Elasticsearch answers with an error: {e}"),
            problems: vec![format!("_nodes/_local: {e}")],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_carry_auto_expand_from_the_cluster_state() {
        let mut c = ClusterView::default();
        c.auto_expand.insert(".tasks".into(), "0-1".into());
        let rows = vec![
            IndexRow {
                name: "docs".into(),
                primaries: 3,
                replicas: 1,
                store_bytes: 10,
            },
            IndexRow {
                name: ".tasks".into(),
                primaries: 1,
                replicas: 0,
                store_bytes: 5,
            },
        ];
        let list = index_list(rows, Some(&c));
        assert_eq!(list[0].name, ".tasks");
        assert_eq!(list[0].auto_expand_replicas, "0-1");
        assert_eq!(list[1].auto_expand_replicas, "");
        assert_eq!((list[1].primaries, list[1].replicas), (3, 1));
    }
}
