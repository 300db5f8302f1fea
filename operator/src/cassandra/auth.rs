//! Authentication (pure): how far its setup is, from the pilots' logins and schema readings,
//! and the one cluster-scoped action that moves it on.

use sha2::{Digest, Sha256};
use stateward_core::model::Observed;
use stateward_core::planner::{Plan, Step};
use stateward_core::status::AuthenticationStatus;
use stateward_proto::v1::{ActionSpec, CassandraAuthAction, action_spec};

use super::database::{CassandraDetail, CassandraNode};
use crate::cluster::ClusterAction;

/// More copies of the roles than this only slow logins and role changes down.
const MAX_AUTH_REPLICATION: u32 = 3;

/// Every node of the cluster, of the spec's pools and of pools being retired alike: status and
/// action judge the same nodes.
fn nodes(observed: &Observed<CassandraDetail>) -> Vec<&CassandraNode> {
    observed
        .pools
        .values()
        .flat_map(|p| p.nodes.iter())
        .collect()
}

/// `system_auth` replicas for the datacenter's nodes as they are (not as the spec asks: a
/// scale-down may be refused, and one under way has not removed its node yet): every node, up
/// to three.
pub fn auth_replication(observed: &Observed<CassandraDetail>) -> u32 {
    u32::try_from(nodes(observed).len())
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
    /// Nothing can be done now: nodes not all running, not yet with PasswordAuthenticator, or
    /// readings that do not tell (the action is not sent on a guess).
    Waiting(String),
}

/// What one running node's report shows.
enum NodeVerdict {
    SetUp,
    /// A conclusive reading of something the action sets up.
    Missing(String),
    /// Nothing the action can do, or a reading that does not tell.
    Unclear(String),
}

fn verdict(node: &CassandraNode, replication: u32) -> NodeVerdict {
    let name = &node.name;
    let Some(detail) = node.report.as_ref().map(|r| &r.detail) else {
        return NodeVerdict::Unclear(format!("{name} has no report"));
    };
    let Some(auth) = &detail.auth else {
        return NodeVerdict::Unclear(format!(
            "{name} does not require a login yet (restart with PasswordAuthenticator pending)"
        ));
    };
    let Some(rf) = detail
        .keyspaces
        .as_ref()
        .and_then(|ks| ks.iter().find(|k| k.name == "system_auth"))
        .map(|k| k.replication_factor)
    else {
        return NodeVerdict::Unclear(format!("{name}: system_auth's replication not read"));
    };
    if !auth.checks_complete {
        return NodeVerdict::Unclear(format!("{name}: {}", auth.problem));
    }
    if !auth.anonymous_refused {
        return NodeVerdict::Unclear(format!("{name} accepts a login without credentials"));
    }
    if auth.default_role_login {
        NodeVerdict::Missing(format!("{name} accepts the default role cassandra"))
    } else if !auth.superuser_login {
        NodeVerdict::Missing(format!("{name} does not accept the superuser"))
    } else if rf != replication {
        NodeVerdict::Missing(format!(
            "{name} shows {rf} system_auth replicas, {replication} wanted"
        ))
    } else {
        NodeVerdict::SetUp
    }
}

/// Judged on the running nodes only: a node that restarts cannot be checked, and takes
/// nothing away from what the others show. The action waits for every node to run.
pub fn progress(observed: &Observed<CassandraDetail>, replication: u32) -> Progress {
    let all = nodes(observed);
    let running: Vec<&CassandraNode> = all
        .iter()
        .copied()
        .filter(|n| n.is_verified_healthy())
        .collect();
    if running.is_empty() {
        return Progress::Waiting("no node runs yet".into());
    }
    let mut missing = Vec::new();
    let mut unclear = Vec::new();
    for node in &running {
        match verdict(node, replication) {
            NodeVerdict::SetUp => {}
            NodeVerdict::Missing(why) => missing.push(why),
            NodeVerdict::Unclear(why) => unclear.push(why),
        }
    }
    let Some(first) = missing.first().or(unclear.first()) else {
        return Progress::Ready;
    };
    if let Some(node) = all.iter().find(|n| !n.is_verified_healthy()) {
        return Progress::Waiting(format!("{first}; waiting for {} to run", node.name));
    }
    if missing.is_empty() {
        Progress::Waiting(first.clone())
    } else {
        Progress::Needed(first.clone())
    }
}

/// The status of authentication as the spec asks for it and the nodes show it.
pub fn status(
    enabled: bool,
    secret: &str,
    observed: &Observed<CassandraDetail>,
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
    let replication = auth_replication(observed);
    let seen = nodes(observed)
        .into_iter()
        .filter_map(|n| n.report.as_ref()?.detail.keyspaces.as_ref())
        .flat_map(|ks| ks.iter().filter(|k| k.name == "system_auth"))
        .map(|k| k.replication_factor)
        .min();
    let (ready, message) = match progress(observed, replication) {
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
    plan: &Plan,
    attempt: &str,
) -> Option<ClusterAction> {
    if !enabled || plan.step != Step::Steady {
        return None;
    }
    let replication = auth_replication(observed);
    let Progress::Needed(_) = progress(observed, replication) else {
        return None;
    };
    let pilot = nodes(observed)
        .into_iter()
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

    fn cluster(nodes: Vec<CassandraNode>) -> Observed<CassandraDetail> {
        let mut observed = Observed::default();
        observed.pools.insert(
            "main".into(),
            ObservedPool {
                nodes,
                ..ObservedPool::default()
            },
        );
        observed
    }

    fn set_up() -> Option<LoginsSeen> {
        Some(LoginsSeen {
            anonymous_refused: true,
            superuser_login: true,
            default_role_login: false,
            checks_complete: true,
            problem: String::new(),
        })
    }

    fn fresh() -> Option<LoginsSeen> {
        Some(LoginsSeen {
            anonymous_refused: true,
            default_role_login: true,
            checks_complete: true,
            ..LoginsSeen::default()
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
            let observed = cluster((0..nodes).map(|i| node(i, None, 1)).collect());
            assert_eq!(auth_replication(&observed), rf, "{nodes}");
        }
    }

    #[test]
    fn a_fresh_cluster_with_the_default_role_gets_the_setup_action() {
        let observed = cluster(vec![node(0, fresh(), 1), node(1, fresh(), 1)]);
        let a = action(true, &observed, &steady(), "t1").expect("an action");
        assert_eq!(a.pilot, "demo-main-0");
        assert_eq!(
            a.spec.action,
            Some(action_spec::Action::CassandraAuth(CassandraAuthAction {
                system_auth_replication: 2
            }))
        );
        let again = action(true, &observed, &steady(), "t1").expect("an action");
        assert_eq!(
            a.action_id, again.action_id,
            "the same minute, the same action"
        );
        let later = action(true, &observed, &steady(), "t2").expect("an action");
        assert_ne!(a.action_id, later.action_id, "a new minute, a new try");
        assert!(!status(true, "s", &observed).ready);
    }

    #[test]
    fn nothing_is_sent_when_ready_disabled_busy_or_before_the_restart() {
        let ready = cluster(vec![node(0, set_up(), 2), node(1, set_up(), 2)]);
        assert_eq!(progress(&ready, 2), Progress::Ready);
        assert!(action(true, &ready, &steady(), "t").is_none());
        let s = status(true, "demo-superuser", &ready);
        assert!(
            s.ready && s.mode == "Password" && s.replication == Some(2),
            "{s:?}"
        );

        // The cluster grew: the replication follows.
        let grown = cluster(vec![
            node(0, set_up(), 2),
            node(1, set_up(), 2),
            node(2, set_up(), 2),
        ]);
        assert!(action(true, &grown, &steady(), "t").is_some());

        let before_restart = cluster(vec![node(0, None, 1), node(1, None, 1)]);
        assert!(matches!(progress(&before_restart, 2), Progress::Waiting(_)));
        assert!(action(true, &before_restart, &steady(), "t").is_none());
        assert!(action(false, &before_restart, &steady(), "t").is_none());
        assert_eq!(status(false, "s", &before_restart).mode, "Off");

        // A node that restarts takes nothing away from a cluster set up...
        let mut restarting = cluster(vec![node(0, set_up(), 2), node(1, set_up(), 2)]);
        if let Some(pool) = restarting.pools.get_mut("main") {
            pool.nodes[0].pod_ready = false;
        }
        assert_eq!(progress(&restarting, 2), Progress::Ready);
        // ...and the setup waits for every node to run.
        let mut unready = cluster(vec![node(0, fresh(), 1), node(1, fresh(), 1)]);
        if let Some(pool) = unready.pools.get_mut("main") {
            pool.nodes[0].pod_ready = false;
        }
        assert!(matches!(progress(&unready, 2), Progress::Waiting(_)));
        assert!(action(true, &unready, &steady(), "t").is_none());

        let busy = Plan {
            step: Step::Wait {
                cause: stateward_core::planner::WaitCause::NodeNotReady,
                reason: String::new(),
                next: String::new(),
            },
            refusal: None,
        };
        let needs = cluster(vec![node(0, fresh(), 1), node(1, fresh(), 1)]);
        assert!(action(true, &needs, &busy, "t").is_none());
    }

    #[test]
    fn readings_that_do_not_tell_wait_instead_of_acting() {
        let timed_out = Some(LoginsSeen {
            problem: "the login checks did not finish within 2.5s".into(),
            ..LoginsSeen::default()
        });
        let observed = cluster(vec![node(0, timed_out.clone(), 2), node(1, timed_out, 2)]);
        match progress(&observed, 2) {
            Progress::Waiting(why) => assert!(why.contains("did not finish"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(action(true, &observed, &steady(), "t").is_none());

        let mut unread = cluster(vec![node(0, fresh(), 1), node(1, fresh(), 1)]);
        for n in unread.pools.values_mut().flat_map(|p| p.nodes.iter_mut()) {
            if let Some(r) = n.report.as_mut() {
                r.detail.keyspaces = None;
            }
        }
        assert!(matches!(progress(&unread, 2), Progress::Waiting(_)));
    }
}
