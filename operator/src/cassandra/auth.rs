//! Authentication (pure): how far its setup is, from the pilots' logins and schema readings,
//! and the one cluster-scoped action that moves it on.

use sha2::{Digest, Sha256};
use stateward_core::model::{DesiredPool, Observed};
use stateward_core::planner::{Plan, Step};
use stateward_core::status::AuthenticationStatus;
use stateward_proto::v1::{ActionSpec, CassandraAuthAction, action_spec};

use super::database::{CassandraDetail, CassandraNode};
use crate::cluster::ClusterAction;

/// More copies of the roles than this only slow logins and role changes down.
const MAX_AUTH_REPLICATION: u32 = 3;

/// `system_auth` replicas for the datacenter's nodes as they are (not as the spec asks: a
/// scale-down may be refused, and one under way has not removed its node yet): every node, up
/// to three.
pub fn auth_replication(observed: &Observed<CassandraDetail>, desired: &[DesiredPool]) -> u32 {
    u32::try_from(observed.nodes_of(desired).count())
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_AUTH_REPLICATION)
}

/// Where authentication stands on the running nodes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every running node refuses anonymous and default-role logins, accepts the superuser,
    /// and has the wanted `system_auth` replication.
    Ready,
    /// The setup action can move it on; the reason says what is missing.
    Needed(String),
    /// Nothing can be done now (nodes not all running, or not yet with PasswordAuthenticator).
    Waiting(String),
}

fn node_problem(node: &CassandraNode, replication: u32) -> Option<String> {
    let detail = &node.report.as_ref()?.detail;
    let Some(auth) = &detail.auth else {
        return Some(format!(
            "{} does not require a login yet (restart with PasswordAuthenticator pending)",
            node.name
        ));
    };
    let rf = detail
        .keyspaces
        .as_ref()
        .and_then(|ks| ks.iter().find(|k| k.name == "system_auth"))
        .map(|k| k.replication_factor);
    let problem = if !auth.anonymous_refused {
        "accepts a login without credentials"
    } else if auth.default_role_login {
        "accepts the default role cassandra"
    } else if !auth.superuser_login {
        "does not accept the superuser yet"
    } else if rf != Some(replication) {
        "has another system_auth replication"
    } else {
        return None;
    };
    let detail = if auth.problem.is_empty() {
        String::new()
    } else {
        format!(" ({})", auth.problem)
    };
    Some(format!("{} {problem}{detail}", node.name))
}

/// Judged on the running nodes only: a node that restarts cannot be checked, and takes
/// nothing away from what the others show. The action waits for every node to run.
pub fn progress(
    observed: &Observed<CassandraDetail>,
    desired: &[DesiredPool],
    replication: u32,
) -> Progress {
    let nodes: Vec<&CassandraNode> = observed.nodes_of(desired).collect();
    let running: Vec<&CassandraNode> = nodes
        .iter()
        .copied()
        .filter(|n| n.is_verified_healthy())
        .collect();
    if running.is_empty() {
        return Progress::Waiting("no node runs yet".into());
    }
    let problems: Vec<String> = running
        .iter()
        .filter_map(|n| node_problem(n, replication))
        .collect();
    let Some(first) = problems.first() else {
        return Progress::Ready;
    };
    if let Some(node) = nodes.iter().find(|n| !n.is_verified_healthy()) {
        return Progress::Waiting(format!("{first}; waiting for {} to run", node.name));
    }
    let any_requires_login = running
        .iter()
        .any(|n| n.report.as_ref().is_some_and(|r| r.detail.auth.is_some()));
    if any_requires_login {
        Progress::Needed(first.clone())
    } else {
        Progress::Waiting(first.clone())
    }
}

/// The status of authentication as the spec asks for it and the nodes show it.
pub fn status(
    enabled: bool,
    secret: &str,
    observed: &Observed<CassandraDetail>,
    desired: &[DesiredPool],
) -> AuthenticationStatus {
    if !enabled {
        return AuthenticationStatus {
            mode: "Off".into(),
            message: Some(
                "spec.authentication.enabled is false: any client that reaches port 9042 is in"
                    .into(),
            ),
            ..AuthenticationStatus::default()
        };
    }
    let replication = auth_replication(observed, desired);
    let seen = observed
        .nodes_of(desired)
        .filter_map(|n| n.report.as_ref()?.detail.keyspaces.as_ref())
        .flat_map(|ks| ks.iter().filter(|k| k.name == "system_auth"))
        .map(|k| k.replication_factor)
        .min();
    let (ready, message) = match progress(observed, desired, replication) {
        Progress::Ready => (true, None),
        Progress::Needed(why) => (false, Some(format!("setting up: {why}"))),
        Progress::Waiting(why) => (false, Some(why)),
    };
    AuthenticationStatus {
        mode: "Password".into(),
        superuser_secret: Some(secret.to_string()),
        ready,
        replication: seen.and_then(|rf| i32::try_from(rf).ok()),
        message,
    }
}

/// The setup action, while nothing else runs and a node requires logins but something is
/// missing. Sent to the first running node; its ID changes with the replication asked for and
/// every minute (`attempt`), so a failed try (Cassandra creates its default role a few seconds
/// after the first start) is made again.
pub fn action(
    enabled: bool,
    observed: &Observed<CassandraDetail>,
    desired: &[DesiredPool],
    plan: &Plan,
    attempt: &str,
) -> Option<ClusterAction> {
    if !enabled || plan.step != Step::Steady {
        return None;
    }
    let replication = auth_replication(observed, desired);
    let Progress::Needed(_) = progress(observed, desired, replication) else {
        return None;
    };
    let pilot = observed
        .nodes_of(desired)
        .find(|n| n.report.as_ref().is_some_and(|r| r.detail.auth.is_some()))?;
    let mut hasher = Sha256::new();
    hasher.update(attempt.as_bytes());
    hasher.update(replication.to_be_bytes());
    Some(ClusterAction {
        pilot: pilot.name.clone(),
        action_id: format!("auth-{}", hex::encode(&hasher.finalize()[..8])),
        spec: ActionSpec {
            action: Some(action_spec::Action::CassandraAuth(CassandraAuthAction {
                system_auth_replication: replication,
            })),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use stateward_core::model::{Health, NodeReport, ObservedNode, ObservedPool};

    use super::*;
    use crate::cassandra::database::{KeyspaceReplication, LoginsSeen};

    fn node(ordinal: i32, auth: Option<LoginsSeen>, rf: u32) -> CassandraNode {
        ObservedNode {
            name: format!("demo-main-{ordinal}"),
            ordinal,
            pod_ready: true,
            pod_uid: None,
            revision: None,
            identity: None,
            report: Some(NodeReport {
                health: Some(Health::Healthy),
                version: None,
                revision: None,
                data_bytes: None,
                free_disk_bytes: None,
                detail: CassandraDetail {
                    host_id: None,
                    ring: Some(BTreeSet::new()),
                    keyspaces: Some(vec![KeyspaceReplication {
                        name: "system_auth".into(),
                        replication_factor: rf,
                        system: true,
                    }]),
                    auth,
                },
            }),
        }
    }

    fn cluster(nodes: Vec<CassandraNode>) -> (Observed<CassandraDetail>, Vec<DesiredPool>) {
        let desired = vec![DesiredPool::new("main", nodes.len() as i32)];
        let mut observed = Observed::default();
        observed.pools.insert(
            "main".into(),
            ObservedPool {
                nodes,
                ..ObservedPool::default()
            },
        );
        (observed, desired)
    }

    fn set_up() -> Option<LoginsSeen> {
        Some(LoginsSeen {
            anonymous_refused: true,
            superuser_login: true,
            default_role_login: false,
            problem: String::new(),
        })
    }

    fn steady() -> Plan {
        Plan {
            step: Step::Steady,
            refusal: None,
        }
    }

    #[test]
    fn replication_follows_the_nodes_there_are_up_to_three() {
        for (nodes, rf) in [(0, 1), (1, 1), (2, 2), (3, 3), (7, 3)] {
            let (observed, _) = cluster((0..nodes).map(|i| node(i, None, 1)).collect());
            // What the spec asks for does not count (a refused scale-down to one node).
            let desired = [DesiredPool::new("main", 1)];
            assert_eq!(auth_replication(&observed, &desired), rf, "{nodes}");
        }
    }

    #[test]
    fn a_fresh_cluster_with_the_default_role_gets_the_setup_action() {
        let fresh = Some(LoginsSeen {
            anonymous_refused: true,
            default_role_login: true,
            ..LoginsSeen::default()
        });
        let (observed, desired) = cluster(vec![node(0, fresh.clone(), 1), node(1, fresh, 1)]);
        let a = action(true, &observed, &desired, &steady(), "t1").expect("an action");
        assert_eq!(a.pilot, "demo-main-0");
        assert_eq!(
            a.spec.action,
            Some(action_spec::Action::CassandraAuth(CassandraAuthAction {
                system_auth_replication: 2
            }))
        );
        let again = action(true, &observed, &desired, &steady(), "t1").expect("an action");
        assert_eq!(
            a.action_id, again.action_id,
            "the same minute, the same action"
        );
        let later = action(true, &observed, &desired, &steady(), "t2").expect("an action");
        assert_ne!(a.action_id, later.action_id, "a new minute, a new try");
        assert!(!status(true, "s", &observed, &desired).ready);
    }

    #[test]
    fn nothing_is_sent_when_ready_disabled_busy_or_before_the_restart() {
        let (ready, desired) = cluster(vec![node(0, set_up(), 2), node(1, set_up(), 2)]);
        assert_eq!(progress(&ready, &desired, 2), Progress::Ready);
        assert!(action(true, &ready, &desired, &steady(), "t").is_none());
        let s = status(true, "demo-superuser", &ready, &desired);
        assert!(
            s.ready && s.mode == "Password" && s.replication == Some(2),
            "{s:?}"
        );

        // The cluster grew: the replication follows.
        let (grown, desired3) = cluster(vec![
            node(0, set_up(), 2),
            node(1, set_up(), 2),
            node(2, set_up(), 2),
        ]);
        assert!(action(true, &grown, &desired3, &steady(), "t").is_some());

        let (fresh, desired) = cluster(vec![node(0, None, 1), node(1, None, 1)]);
        assert!(matches!(
            progress(&fresh, &desired, 2),
            Progress::Waiting(_)
        ));
        assert!(action(true, &fresh, &desired, &steady(), "t").is_none());
        assert!(action(false, &fresh, &desired, &steady(), "t").is_none());
        assert_eq!(status(false, "s", &fresh, &desired).mode, "Off");

        let (mut unready, desired) = cluster(vec![node(0, None, 1), node(1, None, 1)]);
        if let Some(pool) = unready.pools.get_mut("main") {
            pool.nodes[0].pod_ready = false;
            pool.nodes[1].report.as_mut().expect("report").detail.auth = set_up();
        }
        assert!(matches!(
            progress(&unready, &desired, 2),
            Progress::Waiting(_)
        ));
        let busy = Plan {
            step: Step::Wait {
                cause: stateward_core::planner::WaitCause::NodeNotReady,
                reason: String::new(),
                next: String::new(),
            },
            refusal: None,
        };
        let (needs, desired) = cluster(vec![node(0, set_up(), 1), node(1, set_up(), 1)]);
        assert!(action(true, &needs, &desired, &busy, "t").is_none());
    }
}
