//! Properties of the planner skeleton over random clusters, with a minimal database whose only
//! rule is "a node left when its own view says so": what holds here holds for every database.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stateward_core::database::{Database, Gate, View};
use stateward_core::model::{
    ActionProgress, DesiredPool, Health, InFlight, NodeReport, Observed, ObservedNode,
    ObservedPool, VolumeState,
};
use stateward_core::operation::{NodeAction, Operation, OperationKind, Phase};
use stateward_core::planner::{Act, Refusal, Step, plan, statefulset_replicas};

struct Toy;

impl Database for Toy {
    type Detail = ();
    fn state_word(&self, _: Option<Health>, _: bool) -> &'static str {
        "x"
    }
    fn refuse_leave(&self, _: View<'_, ()>, _: i32) -> Option<Refusal> {
        None
    }
    fn prepare_leave(&self, _: View<'_, ()>, _: &ObservedNode<()>) -> Gate {
        Gate::Go(NodeAction::Decommission { force: false })
    }
    fn verify_left(&self, _: View<'_, ()>, leaving: &ObservedNode<()>) -> Result<(), String> {
        (leaving.health() == Some(Health::Left))
            .then_some(())
            .ok_or_else(|| "not left".into())
    }
}

fn node(pool: &str, ordinal: i32, healthy: bool, revision: &str) -> ObservedNode<()> {
    ObservedNode {
        name: format!("{pool}-{ordinal}"),
        ordinal,
        pod_ready: healthy,
        pod_uid: Some(format!("uid-{pool}-{ordinal}-{revision}")),
        revision: Some(revision.into()),
        report: Some(NodeReport {
            health: Some(if healthy {
                Health::Healthy
            } else {
                Health::Down
            }),
            revision: Some(revision.into()),
            ..NodeReport::default()
        }),
        identity: Some(format!("id-{ordinal}")),
    }
}

fn arb_health() -> impl Strategy<Value = Option<Health>> {
    prop_oneof![
        4 => Just(Some(Health::Healthy)),
        1 => Just(Some(Health::Joining)),
        1 => Just(Some(Health::Leaving)),
        1 => Just(Some(Health::Left)),
        1 => Just(Some(Health::Down)),
        1 => Just(None),
    ]
}

fn arb_action() -> impl Strategy<Value = ActionProgress> {
    prop_oneof![
        Just(ActionProgress::NotStarted),
        Just(ActionProgress::Running {
            message: "m".into(),
            percent: None
        }),
        Just(ActionProgress::Succeeded {
            verified: "v".into()
        }),
        Just(ActionProgress::Failed { error: "e".into() }),
        Just(ActionProgress::Unknown { why: "w".into() }),
    ]
}

fn arb_phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Starting),
        Just(Phase::Waiting),
        Just(Phase::Streaming),
        Just(Phase::Verifying),
        Just(Phase::Removing),
        Just(Phase::ReleasingVolume),
        Just(Phase::Running),
        Just(Phase::Draining),
        Just(Phase::Deleting),
        Just(Phase::Rejoining),
        Just(Phase::Failed),
    ]
}

fn arb_kind() -> impl Strategy<Value = OperationKind> {
    prop_oneof![
        Just(OperationKind::Decommission),
        Just(OperationKind::Restart),
        Just(OperationKind::Upgrade),
        Just(OperationKind::Cleanup),
    ]
}

type Case = (Vec<DesiredPool>, bool, Observed<()>);

fn arb_pool() -> impl Strategy<Value = ObservedPool<()>> {
    (
        0..4i32,
        prop::collection::vec(
            (any::<bool>(), arb_health(), any::<bool>(), any::<bool>()),
            0..5,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(replicas, pods, current, exists)| {
            let nodes = pods
                .into_iter()
                .enumerate()
                .map(|(o, (ready, health, outdated, reported))| {
                    let revision = if outdated { "r1" } else { "r2" };
                    let mut n = node("p", o as i32, ready, revision);
                    n.report = reported.then(|| NodeReport {
                        health,
                        revision: Some(revision.into()),
                        version: Some("5.0.9".into()),
                        ..NodeReport::default()
                    });
                    n
                })
                .collect::<Vec<_>>();
            ObservedPool {
                statefulset_replicas: exists.then_some(replicas),
                statefulset_current: current,
                update_revision: Some("r2".into()),
                volumes: (0..replicas).map(|o| (o, VolumeState::default())).collect(),
                nodes,
            }
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0..5i32, 1..3),
        any::<bool>(),
        prop::collection::vec(arb_pool(), 1..3),
        prop::option::of((
            arb_kind(),
            arb_phase(),
            0..3i32,
            arb_action(),
            any::<bool>(),
        )),
    )
        .prop_map(|(replicas, paused, pools, op)| {
            let desired: Vec<DesiredPool> = replicas
                .iter()
                .enumerate()
                .map(|(i, r)| DesiredPool::new(format!("p{i}"), *r))
                .collect();
            let pools: BTreeMap<String, ObservedPool<()>> = pools
                .into_iter()
                .enumerate()
                .map(|(i, mut p)| {
                    let name = format!("p{i}");
                    for n in &mut p.nodes {
                        n.name = format!("{name}-{}", n.ordinal);
                    }
                    (name, p)
                })
                .collect();
            let mut observed = Observed {
                pools,
                generation: 7,
                desired_version: "5.0.9".into(),
                ..Observed::default()
            };
            observed.in_flight = op.map(|(kind, phase, ordinal, action, same_gen)| {
                let node = format!("p0-{ordinal}");
                let uid = observed
                    .find_node(&node)
                    .and_then(|(_, n)| n.pod_uid.clone())
                    .or(Some("gone".into()));
                InFlight {
                    operation: Operation {
                        kind,
                        phase,
                        node: node.clone(),
                        pool: "p0".into(),
                        ordinal,
                        action_id: format!("a-{node}"),
                        generation: if same_gen { 7 } else { 6 },
                        started_at: "t".into(),
                        target_revision: Some("r2".into()),
                        target_version: None,
                        from_version: None,
                        pod_uid: uid,
                        nodes: vec![node],
                        completed: vec![],
                    },
                    action,
                }
            });
            (desired, paused, observed)
        })
}

fn all_verified(desired: &[DesiredPool], observed: &Observed<()>) -> bool {
    observed.nodes_of(desired).all(|n| n.is_verified_healthy())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn paused_never_changes_anything((desired, _paused, observed) in arb_case()) {
        prop_assert_eq!(plan(&Toy, &desired, true, &observed).step, Step::Paused);
    }

    /// While an operation is recorded it is carried on: no other node, no new operation, no
    /// template change (the barrier).
    #[test]
    fn an_operation_in_flight_comes_first((desired, paused, observed) in arb_case()) {
        let step = plan(&Toy, &desired, paused, &observed).step;
        if let Some(op) = &observed.in_flight {
            prop_assert!(!step.allows_template_change() || step == Step::Paused);
            if step != Step::Paused {
                let Step::Operation(next) = &step else {
                    return Err(TestCaseError::fail(format!("{step:?}")));
                };
                prop_assert_eq!(next.operation.kind, op.operation.kind);
                prop_assert_eq!(&next.operation.node, &op.operation.node);
                prop_assert_eq!(&next.operation.action_id, &op.operation.action_id);
            }
        }
    }

    /// A node is added only when every existing node is ready and nothing else runs.
    #[test]
    fn adds_only_when_every_node_is_ready((desired, paused, observed) in arb_case()) {
        if let Step::AddNode { pool, ordinal } = plan(&Toy, &desired, paused, &observed).step {
            prop_assert!(observed.in_flight.is_none());
            for d in &desired {
                let obs = &observed.pools[&d.name];
                prop_assert!(obs.statefulset_current);
                for o in 0..obs.statefulset_replicas.unwrap_or(0) {
                    prop_assert!(obs.node(o).is_some_and(ObservedNode::is_ready));
                }
            }
            prop_assert_eq!(Some(ordinal), observed.pools[&pool].statefulset_replicas);
        }
    }

    /// Starting anything that touches a node (a drain, a decommission, a task) needs every node
    /// proven healthy by its pilot: never two nodes down by our hand.
    #[test]
    fn never_starts_on_unknown_state((desired, paused, observed) in arb_case()) {
        let step = plan(&Toy, &desired, paused, &observed).step;
        if let Step::Operation(op) = &step
            && let Act::StartAction(action) = op.act
            && (observed.in_flight.is_none() || action == NodeAction::Drain)
        {
            prop_assert!(all_verified(&desired, &observed), "{:?}", step);
        }
    }

    /// A pod is deleted only after its drain succeeded, and only the incarnation that was
    /// drained.
    #[test]
    fn deletes_a_pod_only_after_its_verified_drain((desired, paused, observed) in arb_case()) {
        let step = plan(&Toy, &desired, paused, &observed).step;
        if let Step::Operation(op) = &step
            && let Act::DeletePod { uid } = &op.act
        {
            let in_flight = observed.in_flight.as_ref().expect("a delete continues an operation");
            prop_assert!(in_flight.operation.kind.is_roll());
            prop_assert_eq!(Some(uid), in_flight.operation.pod_uid.as_ref());
            let drained = matches!(in_flight.action, ActionProgress::Succeeded { .. })
                || matches!(in_flight.operation.phase, Phase::Deleting | Phase::Rejoining);
            prop_assert!(drained, "not drained: {:?}", in_flight);
        }
    }

    /// A restarted node counts as back only at the pool's current revision, verified healthy.
    #[test]
    fn restart_continues_only_after_a_verified_return((desired, paused, observed) in arb_case()) {
        let step = plan(&Toy, &desired, paused, &observed).step;
        if let (Step::Operation(op), Some(in_flight)) = (&step, &observed.in_flight)
            && in_flight.operation.kind.is_roll()
            && op.finished.iter().any(|f| f.succeeded)
        {
            let (pool, node) = observed.find_node(&in_flight.operation.node).expect("node back");
            prop_assert!(node.is_verified_healthy());
            prop_assert_eq!(node.revision.as_deref(), observed.pools[pool].update_revision.as_deref());
            prop_assert_ne!(node.pod_uid.as_ref(), in_flight.operation.pod_uid.as_ref());
        }
    }

    /// A StatefulSet shrinks only by the node whose removal its own view verified.
    #[test]
    fn never_shrinks_before_verification((desired, paused, observed) in arb_case()) {
        let step = plan(&Toy, &desired, paused, &observed).step;
        for d in &desired {
            let before = observed.replicas(&d.name);
            let after = statefulset_replicas(&observed, &step, &d.name);
            if after < before {
                let op = observed.in_flight.as_ref().expect("shrink only inside an operation");
                prop_assert_eq!(op.operation.kind, OperationKind::Decommission);
                let succeeded = matches!(op.action, ActionProgress::Succeeded { .. });
                prop_assert!(succeeded);
                let (_, leaving) = observed.find_node(&op.operation.node).expect("observed");
                prop_assert_eq!(leaving.health(), Some(Health::Left));
                prop_assert_eq!(after, op.operation.ordinal);
            }
        }
    }
}

/// Simulates a healthy pool of `n` nodes whose template changed: the planner restarts each node
/// exactly once, one at a time, each drained before its pod is deleted.
fn simulate_restart(n: i32, upgrade: bool) -> Result<(), TestCaseError> {
    let desired = vec![DesiredPool::new("p0", n)];
    let mut pool = ObservedPool {
        statefulset_replicas: Some(n),
        statefulset_current: true,
        update_revision: Some("r2".into()),
        nodes: (0..n).map(|o| node("p0", o, true, "r1")).collect(),
        volumes: BTreeMap::new(),
    };
    for node in &mut pool.nodes {
        if let Some(r) = node.report.as_mut() {
            r.version = Some("5.0.8".into());
        }
    }
    let mut observed = Observed {
        pools: [("p0".to_string(), pool)].into(),
        generation: 3,
        desired_version: if upgrade { "5.0.9" } else { "5.0.8" }.into(),
        ..Observed::default()
    };
    let mut restarted = Vec::new();
    let mut drained: Option<String> = None;
    for _ in 0..200 {
        let step = plan(&Toy, &desired, false, &observed).step;
        let down = observed.pools["p0"]
            .nodes
            .iter()
            .filter(|n| !n.is_verified_healthy())
            .count();
        prop_assert!(down <= 1, "two nodes down at once");
        match step {
            Step::Steady => break,
            Step::Operation(op) => {
                let record = op.operation.clone();
                let mut action = observed
                    .in_flight
                    .as_ref()
                    .map(|i| i.action.clone())
                    .unwrap_or(ActionProgress::NotStarted);
                match &op.act {
                    Act::StartAction(NodeAction::Drain) => {
                        drained = Some(record.node.clone());
                        action = ActionProgress::Succeeded {
                            verified: "DRAINED".into(),
                        };
                    }
                    Act::DeletePod { uid } => {
                        prop_assert_eq!(
                            drained.as_deref(),
                            Some(record.node.as_str()),
                            "deleted before drain"
                        );
                        let p = observed.pools.get_mut("p0").expect("pool");
                        let n = p
                            .nodes
                            .iter_mut()
                            .find(|n| n.name == record.node)
                            .expect("node");
                        prop_assert_eq!(n.pod_uid.as_ref(), Some(uid));
                        *n = node("p0", n.ordinal, true, "r2");
                        if let Some(r) = n.report.as_mut() {
                            r.version = Some(observed.desired_version.clone());
                        }
                    }
                    other => prop_assert_eq!(other, &Act::Nothing),
                }
                for f in &op.finished {
                    prop_assert!(f.succeeded);
                    restarted.push(f.node.clone());
                    action = ActionProgress::NotStarted;
                }
                observed.in_flight = (!op.ends).then_some(InFlight {
                    operation: record,
                    action,
                });
            }
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
    }
    let expected: Vec<String> = (0..n).rev().map(|o| format!("p0-{o}")).collect();
    prop_assert_eq!(
        &restarted,
        &expected,
        "each node once, highest ordinal first"
    );
    prop_assert!(observed.in_flight.is_none());
    Ok(())
}

proptest! {
    #[test]
    fn restarts_converge_one_node_at_a_time(n in 1..6i32, upgrade in any::<bool>()) {
        simulate_restart(n, upgrade)?;
    }
}
