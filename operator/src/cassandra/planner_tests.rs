//! The core planner with Cassandra's answers: the rules that are Cassandra's own (replication
//! factors, disk room, the ring witness), over random states and in examples.

use std::collections::BTreeSet;

use proptest::prelude::*;
use stateward_core::model::{
    ActionProgress, DesiredPool, Health, InFlight, NodeReport, Observed, ObservedPool, VolumeState,
};
use stateward_core::operation::{NodeAction, Operation, OperationKind, Phase};
use stateward_core::planner::{Act, RefusedChange, Step, plan};

use super::database::{Cassandra, CassandraDetail, CassandraNode, KeyspaceReplication};
use stateward_core::Database;

fn keyspaces(user_rf: u32) -> Vec<KeyspaceReplication> {
    vec![
        KeyspaceReplication {
            name: "app".into(),
            replication_factor: user_rf,
            system: false,
        },
        KeyspaceReplication {
            name: "system_distributed".into(),
            replication_factor: 3,
            system: true,
        },
    ]
}

/// A verified Up/Normal node: host ID `h<ordinal>`, ring of `ring` nodes, 1 MB of data, 1 GB
/// free.
fn node(ordinal: i32, ring: i32, user_rf: u32) -> CassandraNode {
    let ring: BTreeSet<String> = (0..ring).map(|o| format!("h{o}")).collect();
    CassandraNode {
        name: format!("c-a-{ordinal}"),
        ordinal,
        pod_ready: true,
        pod_uid: Some(format!("u{ordinal}")),
        revision: Some("r1".into()),
        identity: Some(format!("h{ordinal}")),
        report: Some(NodeReport {
            health: Some(Health::Healthy),
            version: Some("5.0.9".into()),
            revision: Some("r1".into()),
            data_bytes: Some(1_000_000),
            free_disk_bytes: Some(1_000_000_000),
            detail: CassandraDetail {
                host_id: Some(format!("h{ordinal}")),
                ring: Some(ring),
                keyspaces: Some(keyspaces(user_rf)),
                auth: None,
            },
        }),
    }
}

fn healthy(replicas: i32, user_rf: u32) -> Observed<CassandraDetail> {
    let pool = ObservedPool {
        statefulset_replicas: Some(replicas),
        statefulset_current: true,
        update_revision: Some("r1".into()),
        nodes: (0..replicas).map(|o| node(o, replicas, user_rf)).collect(),
        volumes: (0..replicas).map(|o| (o, VolumeState::default())).collect(),
    };
    Observed {
        pools: [("a".to_string(), pool)].into(),
        generation: 7,
        desired_version: "5.0.9".into(),
        ..Observed::default()
    }
}

fn desired(replicas: i32) -> Vec<DesiredPool> {
    vec![DesiredPool::new("a", replicas)]
}

fn decommission(ordinal: i32, action: ActionProgress, phase: Phase) -> InFlight {
    InFlight {
        operation: Operation {
            kind: OperationKind::Decommission,
            phase,
            node: format!("c-a-{ordinal}"),
            pool: "a".into(),
            ordinal,
            action_id: format!("decommission-c-a-{ordinal}-g7"),
            generation: 7,
            started_at: "t".into(),
            target_revision: None,
            target_version: None,
            from_version: None,
            pod_uid: None,
            nodes: vec![],
            completed: vec![],
        },
        action,
    }
}

#[test]
fn below_a_user_keyspace_rf_is_refused_and_names_it() {
    let result = plan(&Cassandra, &desired(1), false, &healthy(3, 2));
    assert_eq!(result.step, Step::Steady);
    let refusal = result.refusal.expect("refused");
    assert_eq!(refusal.change, RefusedChange::ScaleDown);
    assert!(refusal.reason.contains("app (RF 2)"), "{}", refusal.reason);
}

#[test]
fn a_refused_scale_down_does_not_block_a_restart() {
    let mut observed = healthy(3, 3);
    let pool = observed.pools.get_mut("a").expect("pool");
    pool.update_revision = Some("r2".into());
    let result = plan(&Cassandra, &desired(2), false, &observed);
    assert!(result.refusal.is_some(), "scale-down below RF 3 refused");
    let op = result.step.operation().expect("the restart goes ahead");
    assert_eq!(op.operation.kind, OperationKind::Restart);
    assert_eq!(op.operation.node, "c-a-2", "highest ordinal first");
}

#[test]
fn a_reused_decommissioned_volume_is_a_refused_scale_up() {
    let mut observed = healthy(2, 1);
    let pool = observed.pools.get_mut("a").expect("pool");
    pool.volumes.insert(
        2,
        VolumeState {
            decommissioned: true,
        },
    );
    let result = plan(&Cassandra, &desired(3), false, &observed);
    assert_eq!(result.step, Step::Steady);
    assert_eq!(
        result.refusal.expect("refused").change,
        RefusedChange::ScaleUp
    );
}

#[test]
fn system_keyspaces_over_the_remaining_nodes_force_the_decommission() {
    let result = plan(&Cassandra, &desired(2), false, &healthy(3, 2));
    let op = result.step.operation().expect("decommission starts");
    assert_eq!(
        op.act,
        Act::StartAction(NodeAction::Decommission { force: true })
    );
    let result = plan(&Cassandra, &desired(3), false, &healthy(4, 2));
    let op = result.step.operation().expect("decommission starts");
    assert_eq!(
        op.act,
        Act::StartAction(NodeAction::Decommission { force: false })
    );
}

#[test]
fn too_little_free_disk_is_refused() {
    let mut observed = healthy(3, 1);
    for n in &mut observed.pools.get_mut("a").expect("pool").nodes {
        if let Some(r) = n.report.as_mut() {
            r.free_disk_bytes = Some(100);
        }
    }
    let result = plan(&Cassandra, &desired(2), false, &observed);
    assert!(
        result
            .refusal
            .expect("refused")
            .reason
            .contains("bytes free")
    );
}

#[test]
fn unknown_replication_waits() {
    let mut observed = healthy(3, 1);
    if let Some(r) = observed.pools.get_mut("a").expect("pool").nodes[0]
        .report
        .as_mut()
    {
        r.detail.keyspaces = None;
    }
    let result = plan(&Cassandra, &desired(2), false, &observed);
    assert!(
        matches!(result.step, Step::Wait { .. }),
        "{:?}",
        result.step
    );
}

#[test]
fn shrinks_only_when_a_peer_ring_confirms() {
    let mut observed = healthy(3, 1);
    let succeeded = ActionProgress::Succeeded {
        verified: "v".into(),
    };
    observed.in_flight = Some(decommission(2, succeeded, Phase::Streaming));
    if let Some(r) = observed.pools.get_mut("a").expect("pool").nodes[2]
        .report
        .as_mut()
    {
        r.health = Some(Health::Left);
    }
    let step = plan(&Cassandra, &desired(2), false, &observed).step;
    assert_eq!(
        step.operation().expect("op").operation.phase,
        Phase::Verifying,
        "peers still list h2"
    );
    for n in &mut observed.pools.get_mut("a").expect("pool").nodes {
        if let Some(ring) = n.report.as_mut().and_then(|r| r.detail.ring.as_mut()) {
            ring.remove("h2");
        }
    }
    let step = plan(&Cassandra, &desired(2), false, &observed).step;
    assert_eq!(step.operation().expect("op").act, Act::Shrink);
}

#[test]
fn an_empty_peer_ring_proves_nothing() {
    let mut observed = healthy(3, 1);
    observed.in_flight = Some(decommission(
        2,
        ActionProgress::Succeeded {
            verified: "v".into(),
        },
        Phase::Streaming,
    ));
    let nodes = &mut observed.pools.get_mut("a").expect("pool").nodes;
    if let Some(r) = nodes[2].report.as_mut() {
        r.health = Some(Health::Left);
    }
    for n in nodes.iter_mut().take(2) {
        if let Some(r) = n.report.as_mut() {
            r.detail.ring = Some(BTreeSet::new());
        }
    }
    let step = plan(&Cassandra, &desired(2), false, &observed).step;
    assert_ne!(step.operation().expect("op").act, Act::Shrink);
}

#[test]
fn a_major_upgrade_owes_upgradesstables_a_patch_one_does_not() {
    assert_eq!(
        Cassandra.after_upgrade("4.1.9", "5.0.9"),
        Some(OperationKind::UpgradeSSTables)
    );
    assert_eq!(Cassandra.after_upgrade("5.0.8", "5.0.9"), None);
}

#[test]
fn a_removed_pool_is_emptied_then_deleted() {
    let mut observed = healthy(2, 1);
    let retiring = ObservedPool {
        statefulset_replicas: Some(0),
        statefulset_current: true,
        ..ObservedPool::default()
    };
    observed.pools.insert("old".into(), retiring);
    let mut pools = desired(2);
    pools.push(DesiredPool {
        name: "old".into(),
        replicas: 0,
        retiring: true,
    });
    let step = plan(&Cassandra, &pools, false, &observed).step;
    assert_eq!(step, Step::DeletePool { pool: "old".into() });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A decommission never starts below a user keyspace's replication factor.
    #[test]
    fn never_decommissions_below_replication_factor(from in 1..6i32, to in 0..6i32, rf in 1..4u32) {
        let result = plan(&Cassandra, &desired(to.min(from)), false, &healthy(from, rf));
        if let Some(op) = result.step.operation() {
            prop_assert_eq!(op.operation.kind, OperationKind::Decommission);
            prop_assert!(i64::from(rf) <= i64::from(to.min(from)));
        }
    }

    /// Scaling down a healthy cluster reaches the target through verified decommissions, one
    /// node at a time, with a simulated Cassandra.
    #[test]
    fn scale_down_converges(from in 2..6i32, to in 1..6i32, rf in 1..4u32) {
        let to = to.min(from);
        let wanted = desired(to);
        let mut observed = healthy(from, rf);
        let mut removed = 0;
        for _ in 0..300 {
            let result = plan(&Cassandra, &wanted, false, &observed);
            let Step::Operation(op) = result.step else {
                prop_assert!(matches!(result.step, Step::Steady), "{:?}", result.step);
                break;
            };
            let record = op.operation.clone();
            let pool = observed.pools.get_mut("a").expect("pool");
            let mut action = observed.in_flight.as_ref().map(|i| i.action.clone()).unwrap_or(ActionProgress::NotStarted);
            match op.act {
                Act::StartAction(NodeAction::Decommission { .. }) => {
                    let host = format!("h{}", record.ordinal);
                    for n in &mut pool.nodes {
                        if let Some(r) = n.report.as_mut() {
                            if n.ordinal == record.ordinal {
                                r.health = Some(Health::Left);
                            }
                            if let Some(ring) = r.detail.ring.as_mut() {
                                ring.remove(&host);
                            }
                        }
                    }
                    action = ActionProgress::Succeeded { verified: "v".into() };
                }
                Act::Shrink => {
                    pool.statefulset_replicas = Some(record.ordinal);
                    removed += 1;
                }
                Act::ReleaseVolume { .. } => {
                    pool.volumes.remove(&record.ordinal);
                }
                _ if record.phase == Phase::Removing => {
                    pool.nodes.retain(|n| n.ordinal != record.ordinal);
                }
                _ => {}
            }
            observed.in_flight = (!op.ends).then_some(InFlight { operation: record, action });
        }
        if i64::from(rf) <= i64::from(to) {
            prop_assert_eq!(removed, from - to);
            prop_assert_eq!(observed.pools["a"].statefulset_replicas, Some(to));
        } else {
            prop_assert_eq!(removed, 0);
        }
    }
}
