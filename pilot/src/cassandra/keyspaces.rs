//! The schema's replication, as the node reports it, and the replication guard a
//! decommission passes first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateward_proto::v1::CassandraKeyspace;
use tracing::info;

use super::{Cassandra, READ_TIMEOUT, SNITCH, SS, norm_addr};

/// The schema changes rarely and reading it costs one JMX call per keyspace: it is read at
/// most this often, and a reading older than [`KEYSPACES_STALE`] counts as unknown.
const KEYSPACES_REFRESH: Duration = Duration::from_secs(5);
const KEYSPACES_STALE: Duration = Duration::from_secs(30);
/// Cassandra's replicated system keyspaces. `NonSystemKeyspaces` lists them beside the user
/// keyspaces in 5.0; these names tell them apart.
const REPLICATED_SYSTEM_KEYSPACES: &[&str] =
    &["system_auth", "system_distributed", "system_traces"];
/// What Cassandra's snitches answer for an endpoint whose datacenter they do not know.
const UNKNOWN_DC: &str = "UNKNOWN_DC";

impl Cassandra {
    /// Keyspaces and their replication in `datacenter`, re-read when the cached reading is
    /// older than [`KEYSPACES_REFRESH`]. `None` when no recent reading exists (unknown).
    pub(super) async fn keyspaces(
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
        let names: BTreeSet<String> = listed
            .as_array()
            .ok_or_else(|| format!("NonSystemKeyspaces: unexpected value {listed}"))?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .chain(REPLICATED_SYSTEM_KEYSPACES.iter().map(|k| k.to_string()))
            .collect();
        let reqs: Vec<Value> = names
            .iter()
            .map(|k| {
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
            .map(|(name, reply)| {
                let info = reply.map_err(|e| format!("replication of keyspace {name}: {e}"))?;
                let info = info.as_str().unwrap_or_default();
                let (strategy, replication_factor) = parse_replication(info, datacenter)
                    .ok_or_else(|| {
                        format!("replication of keyspace {name}: cannot read {info:?}")
                    })?;
                Ok(CassandraKeyspace {
                    system: REPLICATED_SYSTEM_KEYSPACES.contains(&name.as_str()),
                    name,
                    replication_factor,
                    strategy,
                })
            })
            .collect()
    }

    /// This node's datacenter as its snitch reports it, read now; an error when it is unknown
    /// (empty or `UNKNOWN_DC`), so no decision is made for a datacenter that is not this one.
    pub(super) async fn local_datacenter(&self) -> Result<String, String> {
        let datacenter = self
            .jolokia
            .read(SNITCH, "Datacenter", READ_TIMEOUT)
            .await
            .map_err(|e| format!("reading the datacenter: {e}"))?;
        match datacenter.as_str() {
            Some(dc) if !dc.is_empty() && dc != UNKNOWN_DC => Ok(dc.to_string()),
            _ => Err(format!("this node's datacenter is unknown ({datacenter})")),
        }
    }

    /// Refuses (fails closed) unless every user keyspace keeps a node per replica in this
    /// datacenter once this node has left, by a schema and ring read now.
    pub(super) async fn check_user_replication(&self) -> Result<(), String> {
        let datacenter = self
            .local_datacenter()
            .await
            .map_err(|e| format!("refusing to decommission: {e}"))?;
        let keyspaces = self.read_keyspaces(&datacenter).await?;
        let members = self.ring_datacenters().await?;
        let remaining = remaining_in_datacenter(&members, &self.address, &datacenter)
            .map_err(|e| format!("refusing to decommission: {e}"))?;
        info!(
            %datacenter,
            remaining,
            ring_members = members.len(),
            "replication guard: ring members of this datacenter that remain"
        );
        match replication_refusal(&keyspaces, remaining, &datacenter) {
            None => Ok(()),
            Some(refusal) => Err(refusal),
        }
    }

    /// Every ring member (as Cassandra spells it, with its port) and its datacenter as this
    /// node's snitch reports it, or why that could not be read.
    async fn ring_datacenters(&self) -> Result<Vec<(String, Result<String, String>)>, String> {
        let ring = self
            .jolokia
            .read(SS, "TokenToEndpointWithPortMap", READ_TIMEOUT)
            .await
            .map_err(|e| format!("reading the ring: {e}"))?;
        let members: BTreeSet<String> = ring
            .as_object()
            .ok_or_else(|| format!("TokenToEndpointWithPortMap: unexpected value {ring}"))?
            .values()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        // With the port: the snitch looks the endpoint up in gossip by address and port.
        let reqs: Vec<Value> = members
            .iter()
            .map(|m| {
                json!({"type": "exec", "mbean": SNITCH,
                       "operation": "getDatacenter(java.lang.String)", "arguments": [m]})
            })
            .collect();
        let replies = self
            .jolokia
            .bulk(&reqs, READ_TIMEOUT)
            .await
            .map_err(|e| format!("reading the ring members' datacenters: {e}"))?;
        Ok(members
            .into_iter()
            .zip(replies)
            .map(|(m, reply)| {
                let dc = reply.map_err(|e| e.to_string()).and_then(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(format!("unexpected value {other}")),
                });
                (m, dc)
            })
            .collect())
    }
}

/// How many ring members of `datacenter` remain once `leaving` has left. Members of other
/// datacenters do not count: a replication factor is per datacenter. Fails closed when
/// any member's datacenter is unknown, since it might be this one.
pub fn remaining_in_datacenter(
    members: &[(String, Result<String, String>)],
    leaving: &str,
    datacenter: &str,
) -> Result<usize, String> {
    let leaving = norm_addr(leaving);
    let mut remaining = BTreeSet::new();
    for (member, dc) in members {
        let address = norm_addr(member);
        if address == leaving {
            continue;
        }
        match dc {
            Ok(dc) if dc.is_empty() || dc == UNKNOWN_DC => {
                return Err(format!("the datacenter of ring member {member} is unknown"));
            }
            Ok(dc) => {
                if dc == datacenter {
                    remaining.insert(address);
                }
            }
            Err(e) => {
                return Err(format!(
                    "the datacenter of ring member {member} cannot be read: {e}"
                ));
            }
        }
    }
    Ok(remaining.len())
}

/// Why a decommission that leaves `remaining` nodes in `datacenter` must not start: a user
/// keyspace would have more replicas there than nodes. Cassandra's replicated system
/// keyspaces do not count (with fewer nodes, every remaining node holds a copy).
pub fn replication_refusal(
    keyspaces: &[CassandraKeyspace],
    remaining: usize,
    datacenter: &str,
) -> Option<String> {
    let too_few: Vec<String> = keyspaces
        .iter()
        .filter(|k| !k.system && k.replication_factor as usize > remaining)
        .map(|k| format!("{} (RF {})", k.name, k.replication_factor))
        .collect();
    (!too_few.is_empty()).then(|| {
        format!(
            "refusing to decommission: {remaining} nodes would remain in datacenter \
             {datacenter}, fewer than the replication factor there of keyspace {}",
            too_few.join(", ")
        )
    })
}

/// Reads `StorageService.getKeyspaceReplicationInfo`, e.g. `SimpleStrategy {replication_factor=2}`
/// or `NetworkTopologyStrategy {dc1=3, dc2=2}`, into the strategy and the replication factor
/// in `datacenter`. `None` for anything not understood (the caller treats it as unknown).
pub fn parse_replication(info: &str, datacenter: &str) -> Option<(String, u32)> {
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

    fn member(addr: &str, dc: &str) -> (String, Result<String, String>) {
        (addr.to_string(), Ok(dc.to_string()))
    }

    fn keyspace(name: &str, rf: u32, system: bool) -> CassandraKeyspace {
        CassandraKeyspace {
            name: name.into(),
            replication_factor: rf,
            strategy: "NetworkTopologyStrategy".into(),
            system,
        }
    }

    #[test]
    fn counts_only_this_datacenter_without_the_leaving_node() {
        let ring = [
            member("10.0.0.1:7000", "dc1"),
            member("10.0.0.2:7000", "dc1"),
            member("10.0.0.3:7000", "dc1"),
            member("10.1.0.1:7000", "dc2"),
        ];
        assert_eq!(remaining_in_datacenter(&ring, "10.0.0.3", "dc1"), Ok(2));
        // A node whose address is not in the ring leaves all members counted.
        assert_eq!(remaining_in_datacenter(&ring, "10.9.9.9", "dc1"), Ok(3));
        assert_eq!(remaining_in_datacenter(&ring, "10.1.0.1", "dc2"), Ok(0));
    }

    #[test]
    fn two_datacenters_do_not_hide_a_too_small_one() {
        // dc1 keeps one node after the decommission; dc2's three nodes must not make up
        // for it (the guard used to count all four and let RF 2 in dc1 pass).
        let ring = [
            member("/10.0.0.1:7000", "dc1"),
            member("/10.0.0.2:7000", "dc1"),
            member("/10.1.0.1:7000", "dc2"),
            member("/10.1.0.2:7000", "dc2"),
            member("/10.1.0.3:7000", "dc2"),
        ];
        let remaining = remaining_in_datacenter(&ring, "10.0.0.2", "dc1");
        assert_eq!(remaining, Ok(1));
        let keyspaces = [keyspace("app", 2, false), keyspace("system_auth", 3, true)];
        let refusal = replication_refusal(&keyspaces, 1, "dc1");
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("app (RF 2)") && !r.contains("system_auth")),
            "{refusal:?}"
        );
        // The same keyspace, read in dc2 (RF 2 there too), passes with three dc2 nodes
        // of which two remain.
        assert_eq!(remaining_in_datacenter(&ring, "10.1.0.3", "dc2"), Ok(2));
        assert_eq!(replication_refusal(&keyspaces, 2, "dc2"), None);
    }

    #[test]
    fn an_unknown_datacenter_fails_closed() {
        let ring = [
            member("10.0.0.1:7000", "dc1"),
            (
                "10.0.0.2:7000".to_string(),
                Err("no such MBean".to_string()),
            ),
        ];
        assert!(remaining_in_datacenter(&ring, "10.0.0.1", "dc1").is_err());
        let ring = [
            member("10.0.0.1:7000", "dc1"),
            member("10.0.0.2:7000", UNKNOWN_DC),
        ];
        assert!(remaining_in_datacenter(&ring, "10.0.0.1", "dc1").is_err());
        let ring = [member("10.0.0.1:7000", "dc1"), member("10.0.0.2:7000", "")];
        assert!(remaining_in_datacenter(&ring, "10.0.0.1", "dc1").is_err());
        // The leaving node's own entry is never read for the count.
        let ring = [
            ("10.0.0.1:7000".to_string(), Err("whatever".to_string())),
            member("10.0.0.2:7000", "dc1"),
        ];
        assert_eq!(remaining_in_datacenter(&ring, "10.0.0.1", "dc1"), Ok(1));
    }

    #[test]
    fn a_keyspace_without_replicas_here_never_refuses() {
        assert_eq!(
            replication_refusal(&[keyspace("elsewhere", 0, false)], 0, "dc1"),
            None
        );
        assert!(replication_refusal(&[keyspace("app", 1, false)], 0, "dc1").is_some());
    }
}
