//! What must hold before an Elasticsearch node stops for a restart (pure).
//!
//! - The cluster is as healthy as it can be (green, or yellow where some index can never be
//!   green): a node stopping while a replica is still recovering could take a primary's last
//!   in-sync copy down with it.
//! - The node's vote is handed over when the other members of the committed voting
//!   configuration would not be a majority without it. With two master-eligible nodes
//!   Elasticsearch keeps one of them alone in the configuration: stopping that one leaves the
//!   cluster without a master until it is back. A voting exclusion moves the vote to the other
//!   node first; it is cleared once the restart of that node ends (see `desired_exclusions`).

use stateward_core::database::View;
use stateward_core::model::Observed;
use stateward_core::operation::OperationKind;

use super::database::{
    Elasticsearch, ElasticsearchDetail, ElasticsearchNode, PoolRoles, cluster_health,
    handoff_pending, resume_health, witness,
};

/// Health words, worst first; `None` for a word not understood (never good enough).
fn rank(health: &str) -> Option<u8> {
    match health {
        "red" => Some(0),
        "yellow" => Some(1),
        "green" => Some(2),
        _ => None,
    }
}

/// Why `node` may not stop yet for its restart, if it may not.
pub(super) fn not_ready(
    es: &Elasticsearch,
    view: View<'_, ElasticsearchDetail>,
    node: &ElasticsearchNode,
) -> Option<String> {
    let required = resume_health(es, view);
    let Some(health) = cluster_health(view.observed) else {
        return Some("no node has reported the cluster's health".into());
    };
    if rank(&health).is_none_or(|r| Some(r) < rank(required)) {
        return Some(format!(
            "the cluster's health is {health}; {} restarts once it is {required}, so that no \
             shard's last in-sync copy stops with it",
            node.name
        ));
    }
    // Yellow passes only where some index can never be green; a copy still recovering would
    // hide behind it, so nothing may be moving either.
    if required != "green" {
        match witness(view, None).and_then(|w| w.moving_shards) {
            None => return Some("no node has reported the shards moving".into()),
            Some(0) => {}
            Some(n) => {
                return Some(format!(
                    "{n} shard copies are relocating or initializing; {} restarts once none is",
                    node.name
                ));
            }
        }
    }
    vote_pending(es, view, node)
}

/// Whether `node`'s vote must move before it stops: it is in the committed voting
/// configuration, the other members are no majority without it, and another master-eligible
/// node verified healthy can take the vote.
fn vote_must_move(
    es: &Elasticsearch,
    view: View<'_, ElasticsearchDetail>,
    node: &ElasticsearchNode,
) -> bool {
    let Some(seen) = witness(view, None) else {
        return false;
    };
    let config = &seen.voting_config;
    if !config.contains(&node.name) || (config.len() - 1) * 2 > config.len() {
        return false;
    }
    view.desired.iter().any(|pool| {
        view.observed.pools.get(&pool.name).is_some_and(|obs| {
            obs.nodes.iter().any(|n| {
                n.name != node.name
                    && n.is_verified_healthy()
                    && es.node_roles(&pool.name, n).master
            })
        })
    })
}

/// What the vote's handover still waits for, as the other nodes see it.
fn vote_pending(
    es: &Elasticsearch,
    view: View<'_, ElasticsearchDetail>,
    node: &ElasticsearchNode,
) -> Option<String> {
    let Some(peer) = witness(view, Some(&node.name)) else {
        // Fail closed: without another node's view the handover cannot be proven.
        return vote_must_move(es, view, node).then(|| {
            format!(
                "no node but {} has reported the voting configuration",
                node.name
            )
        });
    };
    if !peer.voting_exclusions.contains(&node.name) {
        return vote_must_move(es, view, node).then(|| {
            format!(
                "the other master-eligible nodes are no majority of the voting configuration \
                 without {}: excluding it from the vote before its restart",
                node.name
            )
        });
    }
    // Excluded: what is left is the scale-down's handover (committed without it, another master).
    let voter = PoolRoles {
        master: true,
        data: false,
    };
    handoff_pending(voter, peer, node)
}

/// The node of a restart in flight whose vote is (or must be) excluded while it restarts.
pub(super) fn restarting_voter(
    es: &Elasticsearch,
    view: View<'_, ElasticsearchDetail>,
    observed: &Observed<ElasticsearchDetail>,
) -> Option<String> {
    let op = &observed.in_flight.as_ref()?.operation;
    if !matches!(op.kind, OperationKind::Restart | OperationKind::Upgrade) {
        return None;
    }
    // Once excluded it stays so until the restart of this node ends: the committed
    // configuration without it no longer says the vote was needed.
    let excluded = witness(view, None).is_some_and(|w| w.voting_exclusions.contains(&op.node));
    let needed = observed
        .find_node(&op.node)
        .is_some_and(|(_, n)| vote_must_move(es, view, n));
    (excluded || needed).then(|| op.node.clone())
}
