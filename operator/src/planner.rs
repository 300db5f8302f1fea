//! The planner: a pure function from (spec, observed state) to the single next step.
//!
//! It never performs I/O, so every safety rule is property-tested over random states. The rules:
//! - a paused cluster is observed, never changed;
//! - only one node changes at a time, and only when every existing node is verified ready
//!   (pod ready through the pilot's readiness check and, when a pilot report exists, Up/Normal
//!   in the database's own view);
//! - anything unknown is a wait, with the reason spelt out for `kubectl describe`;
//! - a StatefulSet never shrinks here: removing a node needs a verified decommission first.

use std::collections::BTreeMap;

/// Desired shape of one node pool, derived from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPool {
    pub name: String,
    pub replicas: i32,
}

/// What the database's own view says of a node, as verified by its pilot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifiedState {
    /// Up and serving in its own view and its peers' (Cassandra: Up/Normal).
    UpNormal,
    /// Joining the cluster (bootstrapping, streaming data in).
    Joining,
    /// Leaving the cluster (decommission streaming out).
    Leaving,
    /// Left the cluster; holds no data of the ring.
    Decommissioned,
    /// The database process is down or unreachable by its pilot.
    Down,
}

/// One pod of a pool as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    pub ordinal: i32,
    /// Pod Ready condition (its readiness probe is the pilot's check).
    pub pod_ready: bool,
    /// The pilot's latest verified report; `None` when there is none (unreachable, not yet up).
    pub verified: Option<VerifiedState>,
}

impl ObservedNode {
    /// Ready to be counted on: pod ready and no pilot report contradicting Up/Normal.
    pub fn is_ready(&self) -> bool {
        self.pod_ready && matches!(self.verified, None | Some(VerifiedState::UpNormal))
    }
}

/// One pool's StatefulSet as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedPool {
    /// `spec.replicas` of the StatefulSet, or `None` when it does not exist yet.
    pub statefulset_replicas: Option<i32>,
    /// Whether the StatefulSet controller has caught up with the latest spec
    /// (`status.observedGeneration == metadata.generation`); decisions on a stale view wait.
    pub statefulset_current: bool,
    pub nodes: Vec<ObservedNode>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub pools: BTreeMap<String, ObservedPool>,
}

/// The single next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Paused: nothing will be changed.
    Paused,
    /// Create the pool's StatefulSet with zero replicas (then grow it one node at a time).
    CreatePool { pool: String },
    /// Grow the pool by one node.
    AddNode { pool: String, ordinal: i32 },
    /// Nothing can safely happen now; `reason` says why, `next` what comes after.
    Wait { reason: String, next: String },
    /// The spec asks for something the operator refuses (fails closed); nothing is touched.
    Blocked { reason: String, remedy: String },
    /// Everything matches the spec.
    Steady,
}

impl Step {
    /// Whether this step changes the database topology.
    pub fn is_disruptive(&self) -> bool {
        matches!(self, Step::AddNode { .. })
    }
}

/// StatefulSet replicas the act phase should apply for each pool, given a step: the observed
/// count, plus one for the pool gaining a node. Never lower than observed.
pub fn statefulset_replicas(observed: &Observed, step: &Step, pool: &str) -> i32 {
    let current = observed
        .pools
        .get(pool)
        .and_then(|p| p.statefulset_replicas)
        .unwrap_or(0);
    match step {
        Step::AddNode { pool: target, .. } if target == pool => current + 1,
        _ => current,
    }
}

/// Decide the next step.
pub fn plan(desired: &[DesiredPool], paused: bool, observed: &Observed) -> Step {
    if paused {
        return Step::Paused;
    }

    // Pools are created first (with zero nodes) so that every StatefulSet exists before nodes
    // join: creating one is not disruptive.
    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .and_then(|o| o.statefulset_replicas)
            .is_none()
    }) {
        return Step::CreatePool {
            pool: pool.name.clone(),
        };
    }

    // Decisions on a StatefulSet whose controller has not caught up would be made on stale
    // pod counts.
    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .is_some_and(|o| !o.statefulset_current)
    }) {
        return Step::Wait {
            reason: format!(
                "StatefulSet of pool {} has not yet observed its latest spec",
                pool.name
            ),
            next: "re-plan once the StatefulSet controller catches up".into(),
        };
    }

    if let Some(pool) = desired.iter().find(|p| {
        observed
            .pools
            .get(&p.name)
            .and_then(|o| o.statefulset_replicas)
            .is_some_and(|current| current > p.replicas)
    }) {
        let current = observed.pools[&pool.name].statefulset_replicas.unwrap_or(0);
        return Step::Blocked {
            reason: format!(
                "pool {} has {} nodes and the spec asks for {}: removing a node needs a verified \
                 decommission, which this operator version does not perform",
                pool.name, current, pool.replicas
            ),
            remedy: format!(
                "set the replicas of pool {} back to {current}; data stays where it is",
                pool.name
            ),
        };
    }

    // Every pod the StatefulSets should have must exist and be ready before anything changes.
    for pool in desired {
        let Some(obs) = observed.pools.get(&pool.name) else {
            continue;
        };
        let expected = obs.statefulset_replicas.unwrap_or(0);
        for ordinal in 0..expected {
            match obs.nodes.iter().find(|n| n.ordinal == ordinal) {
                None => {
                    return Step::Wait {
                        reason: format!("node {ordinal} of pool {} has no pod yet", pool.name),
                        next: "wait for the StatefulSet to create the pod".into(),
                    };
                }
                Some(node) if !node.is_ready() => {
                    return Step::Wait {
                        reason: format!("node {} is not ready ({})", node.name, describe(node)),
                        next: "wait until every node is Up/Normal before changing the topology"
                            .into(),
                    };
                }
                Some(_) => {}
            }
        }
    }

    for pool in desired {
        let current = observed
            .pools
            .get(&pool.name)
            .and_then(|o| o.statefulset_replicas)
            .unwrap_or(0);
        if current < pool.replicas {
            return Step::AddNode {
                pool: pool.name.clone(),
                ordinal: current,
            };
        }
    }
    Step::Steady
}

fn describe(node: &ObservedNode) -> String {
    match (node.pod_ready, node.verified) {
        (_, Some(VerifiedState::Down)) => "pilot reports the database down".into(),
        (_, Some(VerifiedState::Joining)) => "joining the ring".into(),
        (_, Some(VerifiedState::Leaving)) => "leaving the ring".into(),
        (_, Some(VerifiedState::Decommissioned)) => "decommissioned".into(),
        (false, _) => "pod not ready".into(),
        (true, _) => "not verified Up/Normal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(pool: &str, ordinal: i32, ready: bool) -> ObservedNode {
        ObservedNode {
            name: format!("c-{pool}-{ordinal}"),
            ordinal,
            pod_ready: ready,
            verified: ready.then_some(VerifiedState::UpNormal),
        }
    }

    fn pool_with(replicas: i32, ready: i32) -> ObservedPool {
        ObservedPool {
            statefulset_replicas: Some(replicas),
            statefulset_current: true,
            nodes: (0..replicas).map(|o| node("a", o, o < ready)).collect(),
        }
    }

    fn desired(replicas: i32) -> Vec<DesiredPool> {
        vec![DesiredPool {
            name: "a".into(),
            replicas,
        }]
    }

    #[test]
    fn creates_missing_pool_first() {
        let step = plan(&desired(3), false, &Observed::default());
        assert_eq!(step, Step::CreatePool { pool: "a".into() });
    }

    #[test]
    fn adds_one_node_when_all_ready() {
        let observed = Observed {
            pools: [("a".to_string(), pool_with(2, 2))].into(),
        };
        assert_eq!(
            plan(&desired(3), false, &observed),
            Step::AddNode {
                pool: "a".into(),
                ordinal: 2
            }
        );
    }

    #[test]
    fn waits_for_unready_node() {
        let observed = Observed {
            pools: [("a".to_string(), pool_with(2, 1))].into(),
        };
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn refuses_scale_down() {
        let observed = Observed {
            pools: [("a".to_string(), pool_with(3, 3))].into(),
        };
        assert!(matches!(
            plan(&desired(2), false, &observed),
            Step::Blocked { .. }
        ));
    }

    #[test]
    fn pilot_report_overrides_pod_readiness() {
        let mut pool = pool_with(2, 2);
        pool.nodes[1].verified = Some(VerifiedState::Down);
        let observed = Observed {
            pools: [("a".to_string(), pool)].into(),
        };
        assert!(matches!(
            plan(&desired(3), false, &observed),
            Step::Wait { .. }
        ));
    }

    fn arb_node(ordinal: i32) -> impl Strategy<Value = ObservedNode> {
        (
            any::<bool>(),
            prop::option::of(prop_oneof![
                Just(VerifiedState::UpNormal),
                Just(VerifiedState::Joining),
                Just(VerifiedState::Leaving),
                Just(VerifiedState::Decommissioned),
                Just(VerifiedState::Down),
            ]),
        )
            .prop_map(move |(pod_ready, verified)| ObservedNode {
                name: format!("n-{ordinal}"),
                ordinal,
                pod_ready,
                verified,
            })
    }

    fn arb_pool() -> impl Strategy<Value = ObservedPool> {
        (prop::option::of(0..6i32), any::<bool>(), any::<bool>())
            .prop_flat_map(|(replicas, current, missing_pod)| {
                let n = replicas.unwrap_or(0);
                let nodes = (0..n).map(arb_node).collect::<Vec<_>>();
                (Just(replicas), Just(current), Just(missing_pod), nodes)
            })
            .prop_map(|(replicas, current, missing_pod, mut nodes)| {
                if missing_pod && !nodes.is_empty() {
                    nodes.pop();
                }
                ObservedPool {
                    statefulset_replicas: replicas,
                    statefulset_current: current,
                    nodes,
                }
            })
    }

    fn arb_case() -> impl Strategy<Value = (Vec<DesiredPool>, bool, Observed)> {
        (
            prop::collection::vec(0..6i32, 1..4),
            any::<bool>(),
            prop::collection::vec(prop::option::of(arb_pool()), 4),
        )
            .prop_map(|(replicas, paused, pools)| {
                let desired = replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| DesiredPool {
                        name: format!("p{i}"),
                        replicas: *r,
                    })
                    .collect::<Vec<_>>();
                let pools = pools
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.map(|p| (format!("p{i}"), p)))
                    .collect();
                (desired, paused, Observed { pools })
            })
    }

    proptest! {
        #[test]
        fn paused_never_changes_anything((desired, _paused, observed) in arb_case()) {
            prop_assert_eq!(plan(&desired, true, &observed), Step::Paused);
        }

        #[test]
        fn adds_only_when_every_node_is_ready((desired, paused, observed) in arb_case()) {
            if let Step::AddNode { pool, ordinal } = plan(&desired, paused, &observed) {
                for (name, obs) in &observed.pools {
                    let expected = obs.statefulset_replicas.unwrap_or(0);
                    // Pools no longer in the spec are not the planner's to wait for.
                    if desired.iter().any(|d| &d.name == name) {
                        prop_assert!(obs.statefulset_current);
                        for o in 0..expected {
                            let node = obs.nodes.iter().find(|n| n.ordinal == o);
                            prop_assert!(node.is_some_and(ObservedNode::is_ready));
                        }
                    }
                }
                let obs = &observed.pools[&pool];
                prop_assert_eq!(Some(ordinal), obs.statefulset_replicas);
                let want = desired.iter().find(|d| d.name == pool).map(|d| d.replicas);
                prop_assert!(want.is_some_and(|w| w > ordinal));
            }
        }

        #[test]
        fn never_shrinks_and_grows_by_at_most_one_node((desired, paused, observed) in arb_case()) {
            let step = plan(&desired, paused, &observed);
            let mut grown = 0;
            for d in &desired {
                let before = observed.pools.get(&d.name).and_then(|p| p.statefulset_replicas).unwrap_or(0);
                let after = statefulset_replicas(&observed, &step, &d.name);
                prop_assert!(after >= before);
                grown += after - before;
            }
            prop_assert!(grown <= 1);
        }

        #[test]
        fn unknown_or_unready_state_never_yields_a_topology_change(
            (desired, paused, mut observed) in arb_case(),
        ) {
            // Make one existing node unready: no topology change may follow.
            let target = observed.pools.iter_mut().find(|(name, p)| {
                desired.iter().any(|d| &&d.name == name) && !p.nodes.is_empty()
            });
            if let Some((_, pool)) = target {
                pool.nodes[0].pod_ready = false;
                prop_assert!(!plan(&desired, paused, &observed).is_disruptive());
            }
        }

        #[test]
        fn converges_when_nodes_come_up(replicas in prop::collection::vec(0..5i32, 1..3)) {
            let desired: Vec<_> = replicas.iter().enumerate()
                .map(|(i, r)| DesiredPool { name: format!("p{i}"), replicas: *r }).collect();
            let mut observed = Observed::default();
            for _ in 0..64 {
                match plan(&desired, false, &observed) {
                    Step::Steady => break,
                    Step::CreatePool { pool } => {
                        observed.pools.insert(pool, ObservedPool {
                            statefulset_replicas: Some(0), statefulset_current: true, nodes: vec![] });
                    }
                    Step::AddNode { pool, ordinal } => {
                        let p = observed.pools.get_mut(&pool).expect("pool exists");
                        p.statefulset_replicas = Some(ordinal + 1);
                        p.nodes.push(node(&pool, ordinal, true));
                    }
                    other => prop_assert!(false, "unexpected step {:?}", other),
                }
            }
            prop_assert_eq!(plan(&desired, false, &observed), Step::Steady);
            for d in &desired {
                prop_assert_eq!(observed.pools[&d.name].statefulset_replicas, Some(d.replicas));
            }
        }
    }
}
