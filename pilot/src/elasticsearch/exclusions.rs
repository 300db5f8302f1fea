//! The cluster-scoped exclusions. Both are level-triggered: the action carries the complete
//! desired set, the pilot makes the cluster hold exactly that set, then waits for the
//! cluster to act on it. Each round starts from what Elasticsearch reports, so a resumed
//! action (pilot restart) or a repeated one just continues.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use stateward_proto::v1::{ActionResult, Verification};

use super::model::{AllocationSettings, ClusterView, EXCLUDE_NAME, Shards};
use super::rest::{RestError, encode};
use super::{ACTION_POLL, Elasticsearch, Unreachable, failed_with, list};
use crate::driver::{ActionRun, verified};

/// How long shards may stand still (nothing relocating or initializing, the same counts)
/// while the exclusion is unmet before the action fails: Elasticsearch has stopped
/// moving them (a decider keeps them, or no node can take them), and waiting longer would
/// only block every other action on this pilot.
const STALL_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long the voting configuration may take to reflect the exclusions. The master
/// reconfigures within seconds; longer means it cannot (e.g. too few nodes left).
const VOTING_LIMIT: Duration = Duration::from_secs(5 * 60);
const SETTINGS_METHOD: &str =
    "GET _cluster/settings?flat_settings=true (a transient value wins over a persistent one)";
const VOTING_METHOD: &str = "GET _cluster/state/master_node,nodes,metadata from the elected master \
(metadata.cluster_coordination: voting_config_exclusions, last_committed_config)";

/// Remembers when the shards last changed while nothing moved.
struct Stall {
    signature: (u32, u32, u32, u32),
    since: Instant,
}

impl Stall {
    fn new() -> Self {
        Stall {
            signature: (u32::MAX, 0, 0, 0),
            since: Instant::now(),
        }
    }

    /// True once the shards have stood still (same remaining, relocating, initializing
    /// and unassigned counts, none relocating or initializing) for [`STALL_LIMIT`].
    fn stalled(&mut self, signature: (u32, u32, u32, u32)) -> bool {
        let moving = signature.1 > 0 || signature.2 > 0;
        if moving || signature != self.signature {
            self.signature = signature;
            self.since = Instant::now();
            return false;
        }
        self.since.elapsed() > STALL_LIMIT
    }
}

/// The checks of an allocation exclusion on one reading.
fn allocation_checks(
    desired: &BTreeSet<String>,
    settings: &AllocationSettings,
    shards: &Shards,
) -> Vec<Verification> {
    let mut checks = vec![Verification {
        check: if desired.is_empty() {
            format!("{EXCLUDE_NAME} is unset")
        } else {
            format!("{EXCLUDE_NAME} is exactly {}", list(desired))
        },
        method: SETTINGS_METHOD.into(),
        observed: settings
            .excluded_raw
            .clone()
            .unwrap_or_else(|| "(unset)".into()),
        passed: if desired.is_empty() {
            settings.excluded_raw.is_none()
        } else {
            settings.excluded == *desired
        },
    }];
    if desired.is_empty() {
        return checks;
    }
    let on_named: Vec<String> = desired
        .iter()
        .map(|n| (n, shards.on_node(n)))
        .filter(|(_, c)| *c > 0)
        .map(|(n, c)| format!("{n}: {c}"))
        .collect();
    checks.push(Verification {
        check: format!("no shard copy is on {}", list(desired)),
        method: "GET _cat/shards?format=json (a relocation counts on both ends)".into(),
        observed: if on_named.is_empty() {
            "no copy".into()
        } else {
            on_named.join(", ")
        },
        passed: on_named.is_empty(),
    });
    let (relocating, initializing, unassigned) = shards.moving();
    checks.push(Verification {
        check: "no shard of the cluster is relocating, initializing or unassigned".into(),
        method: "GET _cat/shards?format=json".into(),
        observed: format!(
            "{relocating} relocating, {initializing} initializing, {unassigned} unassigned"
        ),
        passed: relocating + initializing + unassigned == 0,
    });
    checks
}

/// The checks of a voting exclusion on one reading of the master's cluster state.
/// `known` maps node IDs to names (this pilot's memory of nodes that left included).
fn voting_checks(
    desired: &BTreeSet<String>,
    c: &ClusterView,
    known: &BTreeMap<String, String>,
) -> Vec<Verification> {
    let current = c.voting_exclusion_names();
    let mut checks = vec![Verification {
        check: format!(
            "the voting configuration exclusions are exactly {}",
            list(desired)
        ),
        method: VOTING_METHOD.into(),
        observed: list(&current),
        passed: current == *desired,
    }];
    if desired.is_empty() {
        return checks;
    }
    let name = |id: &String| known.get(id).or_else(|| c.nodes.get(id)).cloned();
    // A named node whose ID is unknown could hide behind any unknown ID in the
    // configuration; only when every named node's ID is known can unknown IDs be ignored.
    let named_ids: BTreeSet<&String> = c
        .voting_exclusions
        .iter()
        .filter(|(id, n)| desired.contains(n) && id != "_absent_")
        .map(|(id, _)| id)
        .collect();
    let all_named_known = desired.iter().all(|n| {
        c.voting_exclusions
            .iter()
            .any(|(id, en)| en == n && id != "_absent_")
    });
    let mut seen = Vec::new();
    let mut passed = true;
    for id in &c.voting_config {
        match name(id) {
            Some(n) => {
                passed &= !desired.contains(&n) && !named_ids.contains(id);
                seen.push(n);
            }
            None => {
                passed &= all_named_known && !named_ids.contains(id);
                seen.push(format!("(unknown node ID {id})"));
            }
        }
    }
    passed &= !c.voting_config.is_empty();
    checks.push(Verification {
        check: format!(
            "no node of {} is in the last committed voting configuration",
            list(desired)
        ),
        method: VOTING_METHOD.into(),
        observed: list(&seen),
        passed,
    });
    let master = c.master_name();
    checks.push(Verification {
        check: format!("the elected master is not one of {}", list(desired)),
        method: VOTING_METHOD.into(),
        observed: master.unwrap_or("(no master elected)").to_string(),
        passed: master.is_some_and(|m| !desired.contains(m)),
    });
    checks
}

impl Elasticsearch {
    /// Sets the exclusion, then waits while the shards move off the named nodes.
    pub(super) async fn allocation_exclusion(
        &self,
        desired: BTreeSet<String>,
        run: &ActionRun,
    ) -> ActionResult {
        let mut clock = Unreachable::default();
        let mut stall = Stall::new();
        let mut initial: Option<u32> = None;
        let mut last = Vec::new();
        loop {
            let settings = match self.ensure_exclusion(&desired, run, &mut clock).await {
                Err(e) => return failed_with(e, last),
                Ok(None) => continue,
                Ok(Some(s)) => s,
            };
            if desired.is_empty() {
                // Clearing: nothing has to move, only the setting's absence counts.
                return verified(allocation_checks(&desired, &settings, &Shards::default()));
            }
            let shards = self.shards().await;
            if let Err(e) = clock.note(&shards) {
                return failed_with(e, last);
            }
            let shards = match shards {
                Ok(s) => s,
                Err(e) => {
                    run.progress(format!("reading the shards: {e}"), None);
                    tokio::time::sleep(ACTION_POLL).await;
                    continue;
                }
            };
            let checks = allocation_checks(&desired, &settings, &shards);
            if checks.iter().all(|c| c.passed) {
                return verified(checks);
            }
            let remaining: u32 = desired.iter().map(|n| shards.on_node(n)).sum();
            let (r, i, u) = shards.moving();
            let first = *initial.get_or_insert(remaining.max(1));
            run.progress(
                format!(
                    "{remaining} shard copies still on {}; {r} relocating, {i} initializing, \
                     {u} unassigned",
                    list(&desired)
                ),
                Some(100 * first.saturating_sub(remaining) / first),
            );
            if stall.stalled((remaining, r, i, u)) {
                return failed_with(
                    format!("no shard moved for {STALL_LIMIT:?} and the exclusion is not met"),
                    checks,
                );
            }
            last = checks;
            tokio::time::sleep(ACTION_POLL).await;
        }
    }

    /// The allocation settings once the exclusion holds exactly `desired`; `None` after a
    /// write or a failed read (the caller reads again: a write's answer is not the
    /// verdict); an error when Elasticsearch refuses the setting or stopped answering.
    async fn ensure_exclusion(
        &self,
        desired: &BTreeSet<String>,
        run: &ActionRun,
        clock: &mut Unreachable,
    ) -> Result<Option<AllocationSettings>, String> {
        let settings = self.settings().await;
        clock.note(&settings)?;
        let settings = match settings {
            Ok(s) => s,
            Err(e) => {
                run.progress(format!("reading the cluster settings: {e}"), None);
                tokio::time::sleep(ACTION_POLL).await;
                return Ok(None);
            }
        };
        let holds = if desired.is_empty() {
            settings.excluded_raw.is_none()
        } else {
            settings.excluded == *desired
        };
        if holds {
            return Ok(Some(settings));
        }
        run.progress(format!("setting {EXCLUDE_NAME} to {}", list(desired)), None);
        let value = (!desired.is_empty()).then(|| list(desired));
        match self.put_setting(EXCLUDE_NAME, value.as_deref()).await {
            Err(e) if e.is_refusal() => {
                return Err(format!("Elasticsearch refused the setting: {e}"));
            }
            Err(e) => run.progress(format!("writing {EXCLUDE_NAME}: {e}"), None),
            Ok(()) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(None)
    }

    /// Makes the voting configuration exclusions equal the set, then waits for the master
    /// to reconfigure without the named nodes.
    pub(super) async fn voting_exclusion(
        &self,
        desired: BTreeSet<String>,
        run: &ActionRun,
    ) -> ActionResult {
        let mut clock = Unreachable::default();
        let start = Instant::now();
        let mut last = Vec::new();
        loop {
            let cluster = self.cluster(false).await;
            if let Err(e) = clock.note(&cluster) {
                return failed_with(e, last);
            }
            match cluster {
                Err(e) => run.progress(format!("reading the master's cluster state: {e}"), None),
                Ok(c) if c.voting_exclusion_names() != desired => {
                    run.progress(
                        format!(
                            "voting exclusions are {}; making them {}",
                            list(c.voting_exclusion_names()),
                            list(&desired)
                        ),
                        None,
                    );
                    if let Err(e) = self.write_voting_exclusions(&c, &desired).await {
                        if e.is_refusal() {
                            return failed_with(format!("Elasticsearch refused: {e}"), last);
                        }
                        run.progress(format!("writing the voting exclusions: {e}"), None);
                    }
                    continue;
                }
                Ok(c) => {
                    let known = self
                        .known_names
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let checks = voting_checks(&desired, &c, &known);
                    if checks.iter().all(|c| c.passed) {
                        return verified(checks);
                    }
                    run.progress(
                        "waiting for the master to reconfigure the voting configuration",
                        None,
                    );
                    last = checks;
                }
            }
            if start.elapsed() > VOTING_LIMIT {
                return failed_with(
                    format!(
                        "the voting configuration did not reflect the exclusions within {VOTING_LIMIT:?}"
                    ),
                    last,
                );
            }
            tokio::time::sleep(ACTION_POLL).await;
        }
    }

    /// Clears the exclusions when they hold a name outside the set (Elasticsearch can only
    /// clear them all), then adds the missing names.
    async fn write_voting_exclusions(
        &self,
        c: &ClusterView,
        desired: &BTreeSet<String>,
    ) -> Result<(), RestError> {
        let mut current = c.voting_exclusion_names();
        if current.iter().any(|n| !desired.contains(n)) {
            // Not waiting for the excluded nodes to leave: they may still run, and the
            // desired ones are added back at once.
            self.rest
                .delete(
                    "/_cluster/voting_config_exclusions?wait_for_removal=false",
                    Duration::from_secs(40),
                )
                .await?;
            current.clear();
        }
        let missing: Vec<String> = desired.difference(&current).map(|n| encode(n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Elasticsearch records the exclusions at once, then waits (up to `timeout`) for the
        // reconfiguration; its answer is not the verdict, the state read next is.
        let path = format!(
            "/_cluster/voting_config_exclusions?node_names={}&timeout=30s",
            missing.join(",")
        );
        self.rest
            .post(&path, Duration::from_secs(45))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elasticsearch::model::ShardCopy;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn copy(node: &str, state: &str) -> ShardCopy {
        ShardCopy {
            index: "docs".into(),
            shard: "0".into(),
            primary: true,
            state: state.into(),
            node: Some(node.into()),
            target: None,
            store_bytes: None,
        }
    }

    #[test]
    fn allocation_is_verified_only_when_the_named_nodes_are_empty_and_nothing_moves() {
        let desired = set(&["node3"]);
        let settings = AllocationSettings {
            excluded: desired.clone(),
            excluded_raw: Some("node3".into()),
            enable: None,
        };
        let busy = Shards(vec![copy("node1", "STARTED"), copy("node3", "RELOCATING")]);
        let checks = allocation_checks(&desired, &settings, &busy);
        assert_eq!(
            checks.iter().map(|c| c.passed).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert_eq!(checks[1].observed, "node3: 1");
        let done = Shards(vec![copy("node1", "STARTED"), copy("node2", "STARTED")]);
        assert!(
            allocation_checks(&desired, &settings, &done)
                .iter()
                .all(|c| c.passed)
        );
        // The setting must read back exactly: a superset is not the desired set.
        let wider = AllocationSettings {
            excluded: set(&["node2", "node3"]),
            excluded_raw: Some("node2,node3".into()),
            enable: None,
        };
        assert!(!allocation_checks(&desired, &wider, &done)[0].passed);
        // Clearing: only the setting's absence counts.
        let cleared = allocation_checks(&set(&[]), &AllocationSettings::default(), &busy);
        assert_eq!(cleared.len(), 1);
        assert!(cleared[0].passed);
        assert!(!allocation_checks(&set(&[]), &settings, &done)[0].passed);
    }

    fn view(config: &[&str], exclusions: &[(&str, &str)], master: &str) -> ClusterView {
        ClusterView {
            master_id: Some(master.into()),
            nodes: [("id1", "node1"), ("id2", "node2"), ("id3", "node3")]
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            voting_config: config.iter().map(|s| s.to_string()).collect(),
            voting_exclusions: exclusions
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn voting_exclusion_needs_the_config_without_the_node_and_another_master() {
        let known = BTreeMap::new();
        let desired = set(&["node3"]);
        let passed = |c: &ClusterView| {
            voting_checks(&desired, c, &known)
                .iter()
                .map(|v| v.passed)
                .collect::<Vec<_>>()
        };
        let done = view(&["id1", "id2"], &[("id3", "node3")], "id1");
        assert_eq!(passed(&done), [true, true, true]);
        let still_voting = view(&["id1", "id2", "id3"], &[("id3", "node3")], "id1");
        assert_eq!(passed(&still_voting), [true, false, true]);
        let master = view(&["id1", "id3"], &[("id3", "node3")], "id3");
        assert_eq!(passed(&master), [true, false, false]);
        // A node excluded while absent: an unknown ID in the config may be it.
        let absent = view(&["id1", "idX"], &[("_absent_", "node3")], "id1");
        assert_eq!(passed(&absent), [true, false, true]);
        // With node3's ID known, another unknown ID is not node3.
        let other = view(&["id1", "idX"], &[("id3", "node3")], "id1");
        assert_eq!(passed(&other), [true, true, true]);
        let cleared = voting_checks(&set(&[]), &view(&["id1"], &[], "id1"), &known);
        assert_eq!(cleared.len(), 1);
        assert!(cleared[0].passed);
    }

    #[test]
    fn a_stall_is_nothing_moving_for_long() {
        let mut s = Stall::new();
        assert!(!s.stalled((3, 0, 0, 0)));
        let long_ago = |s: &Stall| s.since.checked_sub(STALL_LIMIT * 2).unwrap_or(s.since);
        s.since = long_ago(&s);
        assert!(s.stalled((3, 0, 0, 0)));
        assert!(!s.stalled((3, 1, 0, 0)));
        s.since = long_ago(&s);
        assert!(!s.stalled((3, 1, 0, 0)), "relocating shards are progress");
        assert!(!s.stalled((2, 0, 0, 0)));
    }
}
