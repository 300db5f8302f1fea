//! The core planner with Elasticsearch's answers: never the last master, never a node that
//! still holds shard copies or a vote, never below what the indices' replicas need, every
//! unknown a wait — over random states and in examples.

use std::collections::BTreeSet;

use proptest::prelude::*;
use stateward_core::model::{DesiredPool, Health, NodeReport, Observed, ObservedPool, VolumeState};
use stateward_core::operation::{NodeAction, OperationKind};
use stateward_core::planner::{Act, Plan, RefusedChange, Step, WaitCause, plan};

use super::database::{
    Elasticsearch, ElasticsearchDetail, ElasticsearchNode, Exclusions, IndexReplication, PoolRoles,
    desired_exclusions,
};
use super::watermark::LowWatermark;

/// What the random states vary.
#[derive(Clone, Debug)]
struct Shape {
    nodes: i32,
    target: i32,
    replicas: u32,
    indices_known: bool,
    excluded: bool,
    voting_excluded: bool,
    leaving_shards: u32,
    leaving_in_voting_config: bool,
    leaving_is_master: bool,
    unassigned: u32,
}

fn es() -> Elasticsearch {
    Elasticsearch {
        pools: [(
            "a".to_string(),
            PoolRoles {
                master: true,
                data: true,
            },
        )]
        .into(),
    }
}

fn name(ordinal: i32) -> String {
    format!("es-a-{ordinal}")
}

fn node(s: &Shape, ordinal: i32) -> ElasticsearchNode {
    let leaving = ordinal == s.nodes - 1;
    let all: BTreeSet<String> = (0..s.nodes).map(name).collect();
    let mut voting: BTreeSet<String> = all.clone();
    if !s.leaving_in_voting_config {
        voting.remove(&name(s.nodes - 1));
    }
    let master = if s.leaving_is_master {
        name(s.nodes - 1)
    } else {
        name(0)
    };
    let leaving_name: BTreeSet<String> = [name(s.nodes - 1)].into();
    ElasticsearchNode {
        name: name(ordinal),
        ordinal,
        pod_ready: true,
        pod_uid: Some(format!("u{ordinal}")),
        revision: Some("r1".into()),
        identity: Some(format!("id{ordinal}")),
        report: Some(NodeReport {
            health: Some(Health::Healthy),
            version: Some("9.5.3".into()),
            revision: Some("r1".into()),
            data_bytes: Some(1_000_000),
            free_disk_bytes: Some(1_000_000_000),
            detail: ElasticsearchDetail {
                node_id: Some(format!("id{ordinal}")),
                cluster_uuid: Some("uuid".into()),
                roles: vec!["master".into(), "data".into()],
                elected_master: master == name(ordinal),
                elected_master_name: Some(master.clone()),
                health: Some("green".into()),
                shards: s
                    .indices_known
                    .then_some(if leaving { s.leaving_shards } else { 3 }),
                cluster_nodes: all.clone(),
                indices: s.indices_known.then(|| {
                    vec![IndexReplication {
                        name: "docs".into(),
                        replicas: s.replicas,
                        auto_expand: false,
                    }]
                }),
                voting_config: voting,
                moving_shards: s.indices_known.then_some(0),
                unassigned_shards: s.indices_known.then_some(s.unassigned),
                allocation_exclusions: if s.excluded {
                    leaving_name.clone()
                } else {
                    BTreeSet::new()
                },
                voting_exclusions: if s.voting_excluded {
                    leaving_name
                } else {
                    BTreeSet::new()
                },
                total_disk_bytes: Some(2_000_000_000),
                low_watermark: None,
            },
        }),
    }
}

fn observed(s: &Shape) -> Observed<ElasticsearchDetail> {
    let pool = ObservedPool {
        statefulset_replicas: Some(s.nodes),
        statefulset_current: true,
        update_revision: Some("r1".into()),
        nodes: (0..s.nodes).map(|o| node(s, o)).collect(),
        volumes: (0..s.nodes).map(|o| (o, VolumeState::default())).collect(),
    };
    Observed {
        pools: [("a".to_string(), pool)].into(),
        generation: 3,
        desired_version: "9.5.3".into(),
        ..Observed::default()
    }
}

fn planned(s: &Shape) -> (Plan, Exclusions) {
    let desired = vec![DesiredPool::new("a", s.target)];
    let obs = observed(s);
    let p = plan(&es(), &desired, false, &obs);
    let exclusions = desired_exclusions(&es(), &desired, &obs, &p);
    (p, exclusions)
}

fn removal_started(p: &Plan) -> bool {
    p.step.operation().is_some_and(|op| {
        op.operation.kind == OperationKind::Decommission
            && matches!(
                op.act,
                Act::StartAction(NodeAction::Decommission { .. }) | Act::Shrink
            )
    })
}

fn ready_to_leave() -> Shape {
    Shape {
        nodes: 3,
        target: 2,
        replicas: 1,
        indices_known: true,
        excluded: true,
        voting_excluded: true,
        leaving_shards: 0,
        leaving_in_voting_config: false,
        leaving_is_master: false,
        unassigned: 0,
    }
}

#[test]
fn a_scale_down_first_excludes_the_node_then_waits_for_its_shards() {
    let shape = Shape {
        excluded: false,
        voting_excluded: false,
        leaving_shards: 4,
        leaving_in_voting_config: true,
        ..ready_to_leave()
    };
    let (p, exclusions) = planned(&shape);
    assert!(
        matches!(
            &p.step,
            Step::Wait {
                cause: WaitCause::Evacuating,
                ..
            }
        ),
        "{:?}",
        p.step
    );
    assert_eq!(exclusions.allocation, [name(2)].into());
    assert_eq!(exclusions.voting, [name(2)].into());
}

#[test]
fn an_evacuated_node_out_of_the_vote_is_removed() {
    let (p, _) = planned(&ready_to_leave());
    assert!(removal_started(&p), "{:?}", p.step);
}

#[test]
fn the_elected_master_hands_over_before_it_leaves() {
    let (p, _) = planned(&Shape {
        leaving_is_master: true,
        ..ready_to_leave()
    });
    assert!(
        matches!(&p.step, Step::Wait { cause: WaitCause::MasterHandoff, reason, .. } if reason.contains("elected master")),
        "{:?}",
        p.step
    );
}

#[test]
fn too_few_data_nodes_for_the_replicas_is_refused_and_nothing_is_excluded() {
    let (p, exclusions) = planned(&Shape {
        target: 1,
        excluded: false,
        voting_excluded: false,
        leaving_shards: 3,
        ..ready_to_leave()
    });
    let refusal = p.refusal.expect("refused");
    assert_eq!(refusal.change, RefusedChange::ScaleDown);
    assert!(
        refusal.reason.contains("docs (1 replica(s))"),
        "{}",
        refusal.reason
    );
    assert_eq!(exclusions, Exclusions::default());
}

/// The leaving node holds 300 MB; each of the two that stay has 1 GB free of 2 GB.
fn planned_with_watermark(watermark: Option<LowWatermark>) -> Plan {
    let shape = ready_to_leave();
    let desired = vec![DesiredPool::new("a", shape.target)];
    let mut obs = observed(&shape);
    for n in obs.pools.values_mut().flat_map(|p| p.nodes.iter_mut()) {
        if let Some(r) = n.report.as_mut() {
            r.data_bytes = Some(300_000_000);
            r.detail.low_watermark = watermark;
        }
    }
    plan(&es(), &desired, false, &obs)
}

#[test]
fn the_disk_check_follows_the_watermark_the_nodes_report() {
    // Default (85% used): 1 GB - 300 MB reserve = 700 MB room per node, enough.
    assert_eq!(planned_with_watermark(None).refusal, None);
    // 900 MB must stay free: 2 × 100 MB room is less than 300 MB.
    let refusal = planned_with_watermark(Some(LowWatermark::FreeBytes(900_000_000)))
        .refusal
        .expect("refused");
    assert_eq!(refusal.change, RefusedChange::ScaleDown);
    assert!(
        refusal.reason.contains("(900000000 bytes free)") && refusal.reason.contains("200000000"),
        "{}",
        refusal.reason
    );
    // 96% used: 2 × (1 GB - 80 MB) room, enough; disabled: the free space itself counts.
    assert_eq!(
        planned_with_watermark(Some(LowWatermark::UsedShare(9600))).refusal,
        None
    );
    assert_eq!(
        planned_with_watermark(Some(LowWatermark::Disabled)).refusal,
        None
    );
}

#[test]
fn the_last_master_is_never_removed() {
    let (p, _) = planned(&Shape {
        target: 0,
        replicas: 0,
        ..ready_to_leave()
    });
    let refusal = p.refusal.expect("refused");
    assert!(
        refusal.reason.contains("last master-eligible"),
        "{}",
        refusal.reason
    );
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        (1..=4i32, 0..=4i32, 0..=2u32, any::<bool>(), any::<bool>()),
        (
            any::<bool>(),
            0..=3u32,
            any::<bool>(),
            any::<bool>(),
            0..=1u32,
        ),
    )
        .prop_map(
            |(
                (nodes, target, replicas, indices_known, excluded),
                (voting_excluded, leaving_shards, in_config, is_master, unassigned),
            )| Shape {
                nodes,
                target: target.min(nodes),
                replicas,
                indices_known,
                excluded,
                voting_excluded,
                leaving_shards,
                leaving_in_voting_config: in_config,
                leaving_is_master: is_master,
                unassigned,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A node is removed only when it holds no shard copy, no copy is unassigned, it is
    /// excluded from allocation and from the vote, it is not the elected master, the remaining
    /// data nodes can hold every index's copies and a master-eligible node remains.
    #[test]
    fn a_node_leaves_only_when_nothing_is_lost(s in shapes()) {
        let (p, _) = planned(&s);
        if removal_started(&p) {
            prop_assert!(s.indices_known);
            prop_assert_eq!(s.leaving_shards, 0);
            prop_assert_eq!(s.unassigned, 0);
            prop_assert!(s.excluded && s.voting_excluded);
            prop_assert!(!s.leaving_in_voting_config && !s.leaving_is_master);
            prop_assert!(s.target >= 1);
            prop_assert!((s.replicas as i32) < s.nodes - 1);
        }
    }

    /// Unknown replication or shards never refuse and never remove: they wait.
    #[test]
    fn every_unknown_is_a_wait(s in shapes()) {
        let s = Shape { indices_known: false, ..s };
        let (p, _) = planned(&s);
        prop_assert!(!removal_started(&p));
        if s.target < s.nodes && p.refusal.is_none() {
            let waits = matches!(p.step, Step::Wait { .. });
            prop_assert!(waits, "{:?}", p.step);
        }
    }

    /// Exclusions name only the node being removed, and nothing when the scale-down is refused.
    #[test]
    fn exclusions_name_only_the_leaving_node(s in shapes()) {
        let (p, exclusions) = planned(&s);
        if p.refusal.is_some() || s.target >= s.nodes {
            prop_assert_eq!(exclusions, Exclusions::default());
        } else {
            let leaving: BTreeSet<String> = [name(s.nodes - 1)].into();
            prop_assert_eq!(&exclusions.allocation, &leaving);
            prop_assert_eq!(&exclusions.voting, &leaving);
        }
    }
}

/// A restart: drain (allocation limited to primaries, flush) → pod deleted → back at the new
/// revision in the same cluster → resume (allocation restored, health recovered) under a new
/// action ID → the next node.
#[test]
fn a_restart_resumes_allocation_before_the_next_node() {
    use stateward_core::model::{ActionProgress, InFlight};
    use stateward_core::operation::Phase;

    let shape = Shape {
        target: 3,
        ..ready_to_leave()
    };
    let desired = vec![DesiredPool::new("a", 3)];
    let mut obs = observed(&Shape {
        excluded: false,
        voting_excluded: false,
        leaving_in_voting_config: true,
        ..shape
    });
    let pool = obs.pools.get_mut("a").expect("pool");
    pool.update_revision = Some("r2".into());
    let p = plan(&es(), &desired, false, &obs);
    let Step::Operation(start) = &p.step else {
        panic!("a restart starts: {:?}", p.step);
    };
    assert_eq!(start.operation.kind, OperationKind::Restart);
    assert_eq!(start.operation.node, name(2), "highest ordinal first");
    let mut op = start.operation.clone();

    // Drained and deleted: the new pod is back at r2, healthy, in the same cluster.
    op.phase = Phase::Rejoining;
    let pool = obs.pools.get_mut("a").expect("pool");
    let back = pool
        .nodes
        .iter_mut()
        .find(|n| n.ordinal == 2)
        .expect("node");
    back.pod_uid = Some("u2-new".into());
    back.revision = Some("r2".into());
    if let Some(r) = back.report.as_mut() {
        r.revision = Some("r2".into());
    }
    obs.in_flight = Some(InFlight {
        operation: op.clone(),
        action: ActionProgress::Succeeded {
            verified: "drained".into(),
        },
    });
    let p = plan(&es(), &desired, false, &obs);
    let Step::Operation(resume) = &p.step else {
        panic!("resume: {:?}", p.step);
    };
    assert_eq!(resume.operation.phase, Phase::Resuming);
    assert_eq!(resume.act, Act::StartAction(NodeAction::Resume));
    assert_ne!(resume.operation.action_id, op.action_id, "a new action ID");

    // Resumed: node 2 is done, node 1 is next.
    obs.in_flight = Some(InFlight {
        operation: resume.operation.clone(),
        action: ActionProgress::Succeeded {
            verified: "allocation restored; green".into(),
        },
    });
    let p = plan(&es(), &desired, false, &obs);
    let Step::Operation(next) = &p.step else {
        panic!("next node: {:?}", p.step);
    };
    assert_eq!(next.operation.node, name(1));
    assert_eq!(next.operation.completed, vec![name(2)]);
    assert_eq!(next.operation.phase, Phase::Waiting);
}

/// A restarted node that reports another cluster UUID bootstrapped a cluster of its own: it is
/// never counted as back.
#[test]
fn a_node_back_in_another_cluster_is_not_back() {
    use stateward_core::model::{ActionProgress, InFlight};
    use stateward_core::operation::Phase;

    let shape = Shape {
        target: 3,
        ..ready_to_leave()
    };
    let desired = vec![DesiredPool::new("a", 3)];
    let mut obs = observed(&shape);
    obs.pools.get_mut("a").expect("pool").update_revision = Some("r2".into());
    let Step::Operation(start) = plan(&es(), &desired, false, &obs).step else {
        panic!("a restart starts");
    };
    let mut op = start.operation.clone();
    op.phase = Phase::Rejoining;
    let pool = obs.pools.get_mut("a").expect("pool");
    let back = pool
        .nodes
        .iter_mut()
        .find(|n| n.ordinal == 2)
        .expect("node");
    back.pod_uid = Some("u2-new".into());
    back.revision = Some("r2".into());
    if let Some(r) = back.report.as_mut() {
        r.revision = Some("r2".into());
        r.detail.cluster_uuid = Some("another".into());
    }
    obs.in_flight = Some(InFlight {
        operation: op,
        action: ActionProgress::Succeeded {
            verified: "drained".into(),
        },
    });
    let Step::Operation(step) = plan(&es(), &desired, false, &obs).step else {
        panic!("still the restart");
    };
    assert_eq!(step.operation.phase, Phase::Rejoining);
    assert!(
        step.waiting
            .as_deref()
            .is_some_and(|w| w.contains("cluster another")),
        "{:?}",
        step.waiting
    );
}

/// Two nodes of a restart in flight, before anything is done to the first one (`es-a-1`),
/// with every node's report edited by `edit`.
fn restart_of_two(edit: impl Fn(&mut ElasticsearchDetail)) -> Observed<ElasticsearchDetail> {
    use stateward_core::model::{ActionProgress, InFlight};

    let shape = Shape {
        nodes: 2,
        target: 2,
        excluded: false,
        voting_excluded: false,
        ..ready_to_leave()
    };
    let desired = vec![DesiredPool::new("a", 2)];
    let mut obs = observed(&shape);
    obs.pools.get_mut("a").expect("pool").update_revision = Some("r2".into());
    let Step::Operation(start) = plan(&es(), &desired, false, &obs).step else {
        panic!("a restart starts");
    };
    obs.in_flight = Some(InFlight {
        operation: start.operation.clone(),
        action: ActionProgress::NotStarted,
    });
    for node in &mut obs.pools.get_mut("a").expect("pool").nodes {
        if let Some(report) = node.report.as_mut() {
            edit(&mut report.detail);
        }
    }
    obs
}

/// With two master-eligible nodes Elasticsearch keeps one alone in the voting configuration:
/// before that node stops, its vote moves to the other one (an exclusion, verified), and only
/// then is it drained; the next node's vote moves back in turn.
#[test]
fn a_restart_moves_a_lone_vote_before_the_node_stops() {
    let desired = vec![DesiredPool::new("a", 2)];
    let alone = |d: &mut ElasticsearchDetail| {
        d.voting_config = [name(1)].into();
        d.elected_master = d.node_id.as_deref() == Some("id1");
        d.elected_master_name = Some(name(1));
    };
    let obs = restart_of_two(alone);
    let p = plan(&es(), &desired, false, &obs);
    let Step::Operation(step) = &p.step else {
        panic!("the restart waits: {:?}", p.step);
    };
    assert_eq!(step.operation.node, name(1));
    assert_eq!(step.act, Act::Nothing, "not drained yet");
    assert!(
        step.waiting
            .as_deref()
            .is_some_and(|w| w.contains("excluding it from the vote")),
        "{:?}",
        step.waiting
    );
    let exclusions = desired_exclusions(&es(), &desired, &obs, &p);
    assert_eq!(exclusions.voting, [name(1)].into());
    assert!(exclusions.allocation.is_empty());

    // Excluded, but the configuration not yet committed without it: still waits.
    let obs = restart_of_two(|d| {
        alone(d);
        d.voting_exclusions = [name(1)].into();
    });
    let p = plan(&es(), &desired, false, &obs);
    let waiting = p.step.operation().and_then(|s| s.waiting.clone());
    assert!(
        waiting
            .as_deref()
            .is_some_and(|w| w.contains("committed voting configuration")),
        "{waiting:?}"
    );

    // Handed over: node 0 alone votes and is master; node 1 is drained, its exclusion kept.
    let obs = restart_of_two(|d| {
        d.voting_config = [name(0)].into();
        d.voting_exclusions = [name(1)].into();
        d.elected_master = d.node_id.as_deref() == Some("id0");
        d.elected_master_name = Some(name(0));
    });
    let p = plan(&es(), &desired, false, &obs);
    let act = p.step.operation().map(|s| s.act.clone());
    assert_eq!(act, Some(Act::StartAction(NodeAction::Drain)));
    let exclusions = desired_exclusions(&es(), &desired, &obs, &p);
    assert_eq!(
        exclusions.voting,
        [name(1)].into(),
        "kept while it restarts"
    );

    // The restart moved on to node 0, now the lone voter: its vote moves back to node 1.
    let mut obs = obs;
    if let Some(f) = obs.in_flight.as_mut() {
        f.operation.node = name(0);
        f.operation.ordinal = 0;
        f.operation.completed = vec![name(1)];
    }
    let p = plan(&es(), &desired, false, &obs);
    let exclusions = desired_exclusions(&es(), &desired, &obs, &p);
    assert_eq!(exclusions.voting, [name(0)].into());
}

/// A restart never stops a node while the cluster is less healthy than it can be: a replica
/// still recovering could be the only in-sync copy of a primary on the node.
#[test]
fn a_restart_waits_for_green_before_a_node_stops() {
    let desired = vec![DesiredPool::new("a", 2)];
    for (health, drained) in [
        ("yellow", false),
        ("red", false),
        ("", false),
        ("green", true),
    ] {
        let obs = restart_of_two(|d| {
            d.health = (!health.is_empty()).then(|| health.to_string());
        });
        let p = plan(&es(), &desired, false, &obs);
        let step = p.step.operation().expect("the restart");
        assert_eq!(
            step.act == Act::StartAction(NodeAction::Drain),
            drained,
            "{health}: {:?}",
            step.waiting
        );
        if !drained {
            assert!(step.waiting.is_some(), "{health}: says why");
        }
        let exclusions = desired_exclusions(&es(), &desired, &obs, &p);
        assert!(exclusions.voting.is_empty(), "both nodes vote: no handover");
    }
}
