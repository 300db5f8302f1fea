//! The node-scoped actions: decommission (a check only: the data left earlier through the
//! cluster-scoped exclusions), drain before a restart, resume after it.

use std::time::{Duration, Instant};

use stateward_proto::v1::{ActionResult, Verification};

use super::model::{self, ALLOCATION_ENABLE, ClusterView, Health, LocalNode, Shards};
use super::{ACTION_POLL, Elasticsearch, MASTER_TIMEOUT, Unreachable, failed_with, list};
use crate::driver::{ActionRun, failed, verified};

/// How long a flush may take.
const FLUSH_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long the health may stay below the wanted one while no shard initializes or
/// relocates before a resume fails: recovery has stopped (a node is missing, or a
/// replica cannot be placed), and waiting longer would block every other action.
const RESUME_STALL_LIMIT: Duration = Duration::from_secs(10 * 60);
const SHARDS_METHOD: &str = "GET _cat/shards?format=json";
const STATE_METHOD: &str = "GET _cluster/state/master_node,nodes,metadata from the elected master";

/// The checks that this node can stop without losing anything, on one reading.
fn decommission_checks(local: &LocalNode, c: &ClusterView, shards: &Shards) -> Vec<Verification> {
    let held = shards.on_node(&local.name);
    let (relocating, initializing, unassigned) = shards.moving();
    let mut checks = vec![
        Verification {
            check: "this node holds no shard copy".into(),
            method: SHARDS_METHOD.into(),
            observed: format!("{held} shard copies on {}", local.name),
            passed: held == 0,
        },
        Verification {
            check: "no shard of the cluster is relocating, initializing or unassigned".into(),
            method: SHARDS_METHOD.into(),
            observed: format!(
                "{relocating} relocating, {initializing} initializing, {unassigned} unassigned"
            ),
            passed: relocating + initializing + unassigned == 0,
        },
    ];
    if local.is_master_eligible() {
        let master = c.master_name();
        checks.push(Verification {
            check: "this master-eligible node is not the elected master".into(),
            method: STATE_METHOD.into(),
            observed: master.unwrap_or("(no master elected)").to_string(),
            passed: master.is_some_and(|m| m != local.name),
        });
        let voting = c.voting_config.contains(&local.id);
        checks.push(Verification {
            check: "this node is not in the last committed voting configuration".into(),
            method: format!("{STATE_METHOD} (metadata.cluster_coordination.last_committed_config)"),
            observed: format!(
                "node ID {} {} in {}",
                local.id,
                if voting { "is" } else { "is not" },
                list(&c.voting_config)
            ),
            passed: !voting,
        });
    }
    checks
}

/// The lowest health a resume accepts.
fn wanted_health(min_health: &str) -> Result<&str, String> {
    match min_health {
        "" | "green" => Ok("green"),
        "yellow" => Ok("yellow"),
        other => Err(format!(
            "min_health {other:?}: expected \"green\" or \"yellow\""
        )),
    }
}

fn resume_checks(enable: Option<&str>, health: &Health, wanted: &str) -> Vec<Verification> {
    vec![
        Verification {
            check: format!("{ALLOCATION_ENABLE} is unset (all)"),
            method: "GET _cluster/settings?flat_settings=true".into(),
            observed: enable.unwrap_or("(unset)").to_string(),
            passed: enable.is_none(),
        },
        Verification {
            check: format!("the cluster health is {wanted} or better"),
            method: "GET _cluster/health from the elected master".into(),
            observed: format!(
                "{} ({} relocating, {} initializing, {} unassigned)",
                health.status, health.relocating, health.initializing, health.unassigned
            ),
            passed: model::health_rank(&health.status) >= model::health_rank(wanted),
        },
    ]
}

impl Elasticsearch {
    /// Changes nothing: verifies, read afresh, that this node can stop without losing data.
    pub(super) async fn verify_decommission(&self, run: &ActionRun) -> ActionResult {
        let local = match self.local_node_patiently().await {
            Ok(n) => n,
            Err(e) => return failed(e),
        };
        run.progress(
            "checking that this node holds nothing the cluster needs",
            None,
        );
        let (cluster, shards) = tokio::join!(self.cluster(false), self.shards());
        match (cluster, shards) {
            (Ok(c), Ok(s)) => verified(decommission_checks(&local, &c, &s)),
            (c, s) => {
                let errors: Vec<String> = [c.err(), s.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect();
                failed(format!("cannot verify: {}", errors.join("; ")))
            }
        }
    }

    /// Limits allocation to primaries (replicas are not rebuilt elsewhere while the node
    /// restarts) and flushes.
    pub(super) async fn drain(&self, run: &ActionRun) -> ActionResult {
        if let Err(e) = self.local_node_patiently().await {
            return failed(e);
        }
        run.progress(format!("setting {ALLOCATION_ENABLE} to primaries"), None);
        if let Err(e) = self.put_setting(ALLOCATION_ENABLE, Some("primaries")).await {
            return failed(format!("setting {ALLOCATION_ENABLE}: {e}"));
        }
        run.progress("flushing every index", Some(50));
        let flush = self.flush().await;
        let settings = self.settings().await;
        let enable = settings.as_ref().map(|s| s.enable.clone());
        verified(vec![
            Verification {
                check: format!("{ALLOCATION_ENABLE} is primaries"),
                method: "GET _cluster/settings?flat_settings=true".into(),
                observed: match &enable {
                    Ok(v) => v.clone().unwrap_or_else(|| "(unset)".into()),
                    Err(e) => e.to_string(),
                },
                passed: enable
                    .as_ref()
                    .is_ok_and(|v| v.as_deref() == Some("primaries")),
            },
            Verification {
                check: "the flush failed on no shard copy".into(),
                method: "POST _flush (_shards of the answer)".into(),
                observed: match &flush {
                    Ok((t, ok, f)) => format!("{t} total, {ok} successful, {f} failed"),
                    Err(e) => e.clone(),
                },
                passed: flush.as_ref().is_ok_and(|(_, _, f)| *f == 0),
            },
        ])
    }

    /// `POST _flush` on every index: (total, successful, failed) shard copies.
    pub(super) async fn flush(&self) -> Result<(u64, u64, u64), String> {
        let v = self
            .rest
            .post("/_flush?expand_wildcards=all", FLUSH_LIMIT)
            .await
            .map_err(|e| format!("flush: {e}"))?;
        model::flush_shards(&v)
    }

    /// Clears the drain's setting and waits for the health to recover.
    pub(super) async fn resume(&self, min_health: &str, run: &ActionRun) -> ActionResult {
        let wanted = match wanted_health(min_health) {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        let mut clock = Unreachable::default();
        let mut still_since = Instant::now();
        let mut last = Vec::new();
        loop {
            let settings = self.settings().await;
            if let Err(e) = clock.note(&settings) {
                return failed_with(e, last);
            }
            let enable = match settings {
                Ok(s) => s.enable,
                Err(e) => {
                    run.progress(format!("reading the cluster settings: {e}"), None);
                    tokio::time::sleep(ACTION_POLL).await;
                    continue;
                }
            };
            if enable.is_some() {
                run.progress(format!("clearing {ALLOCATION_ENABLE}"), None);
                if let Err(e) = self.put_setting(ALLOCATION_ENABLE, None).await {
                    run.progress(format!("clearing {ALLOCATION_ENABLE}: {e}"), None);
                    tokio::time::sleep(ACTION_POLL).await;
                }
                continue;
            }
            // Elasticsearch waits server-side for the health; the answer says where it is.
            let path = format!(
                "/_cluster/health?wait_for_status={wanted}&timeout=10s&master_timeout={MASTER_TIMEOUT}"
            );
            let health = self.read(&path, model::health).await;
            if let Err(e) = clock.note(&health) {
                return failed_with(e, last);
            }
            let Ok(health) =
                health.map_err(|e| run.progress(format!("reading the health: {e}"), None))
            else {
                tokio::time::sleep(ACTION_POLL).await;
                continue;
            };
            let checks = resume_checks(None, &health, wanted);
            if checks.iter().all(|c| c.passed) {
                return verified(checks);
            }
            run.progress(
                format!("waiting for {wanted}: {}", checks[1].observed),
                None,
            );
            if health.initializing + health.relocating > 0 {
                still_since = Instant::now();
            } else if still_since.elapsed() > RESUME_STALL_LIMIT {
                return failed_with(
                    format!(
                        "the health stayed below {wanted} with nothing recovering for {RESUME_STALL_LIMIT:?}"
                    ),
                    checks,
                );
            }
            last = checks;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elasticsearch::model::ShardCopy;

    fn local(roles: &[&str]) -> LocalNode {
        LocalNode {
            id: "id3".into(),
            name: "node3".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            version: "9.1.5".into(),
            cluster_name: "c".into(),
        }
    }

    fn cluster(master: &str, config: &[&str]) -> ClusterView {
        ClusterView {
            master_id: Some(master.into()),
            nodes: [("id1", "node1"), ("id3", "node3")]
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            voting_config: config.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn shards(on: &[(&str, &str)]) -> Shards {
        Shards(
            on.iter()
                .map(|(node, state)| ShardCopy {
                    index: "docs".into(),
                    shard: "0".into(),
                    primary: false,
                    state: state.to_string(),
                    node: Some(node.to_string()),
                    target: None,
                    store_bytes: None,
                })
                .collect(),
        )
    }

    fn passed(checks: &[Verification]) -> Vec<bool> {
        checks.iter().map(|c| c.passed).collect()
    }

    #[test]
    fn decommission_refuses_a_node_with_shards_or_a_vote() {
        let master = local(&["data", "master"]);
        let empty = shards(&[("node1", "STARTED")]);
        let ok = decommission_checks(&master, &cluster("id1", &["id1"]), &empty);
        assert_eq!(passed(&ok), [true, true, true, true]);
        let holds = decommission_checks(
            &master,
            &cluster("id1", &["id1"]),
            &shards(&[("node3", "STARTED")]),
        );
        assert_eq!(passed(&holds), [false, true, true, true]);
        assert_eq!(holds[0].observed, "1 shard copies on node3");
        let voting = decommission_checks(&master, &cluster("id3", &["id1", "id3"]), &empty);
        assert_eq!(passed(&voting), [true, true, false, false]);
        let moving = decommission_checks(
            &master,
            &cluster("id1", &["id1"]),
            &shards(&[("node1", "INITIALIZING")]),
        );
        assert_eq!(passed(&moving), [true, false, true, true]);
        // A data-only node has no vote to check.
        let data = decommission_checks(&local(&["data"]), &cluster("id3", &["id3"]), &empty);
        assert_eq!(passed(&data), [true, true]);
    }

    #[test]
    fn resume_wants_the_setting_gone_and_enough_health() {
        let h = |status: &str| Health {
            status: status.into(),
            relocating: 0,
            initializing: 0,
            unassigned: 0,
        };
        assert_eq!(wanted_health(""), Ok("green"));
        assert_eq!(wanted_health("yellow"), Ok("yellow"));
        assert!(wanted_health("red").is_err());
        assert_eq!(
            passed(&resume_checks(None, &h("green"), "green")),
            [true, true]
        );
        assert_eq!(
            passed(&resume_checks(None, &h("yellow"), "green")),
            [true, false]
        );
        assert_eq!(
            passed(&resume_checks(None, &h("green"), "yellow")),
            [true, true]
        );
        assert_eq!(
            passed(&resume_checks(None, &h("red"), "yellow")),
            [true, false]
        );
        assert_eq!(
            passed(&resume_checks(Some("primaries"), &h("green"), "green")),
            [false, true]
        );
    }
}
