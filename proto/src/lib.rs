//! gRPC contract between the operator and the pilots; generated from `stateward/pilot/v1/*.proto`.
//!
//! The `.proto` file is the documentation of every message and field; this crate only
//! compiles it (client and server) and adds a few helpers both sides share.

/// `stateward.pilot.v1`: the pilot service, its status and its actions.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    tonic::include_proto!("stateward.pilot.v1");

    impl ActionPhase {
        /// True for SUCCEEDED and FAILED: the action will not change any more.
        pub fn is_terminal(self) -> bool {
            matches!(self, ActionPhase::Succeeded | ActionPhase::Failed)
        }
    }

    impl ActionSpec {
        /// The kind of action this spec describes.
        pub fn kind(&self) -> ActionKind {
            use action_spec::Action;
            match &self.action {
                Some(Action::Decommission(_)) => ActionKind::Decommission,
                Some(Action::Drain(_)) => ActionKind::Drain,
                Some(Action::Cleanup(_)) => ActionKind::Cleanup,
                Some(Action::Backup(_)) => ActionKind::Backup,
                Some(Action::Restore(_)) => ActionKind::Restore,
                Some(Action::UpgradeSstables(_)) => ActionKind::UpgradeSstables,
                Some(Action::AllocationExclusion(_)) => ActionKind::AllocationExclusion,
                Some(Action::VotingExclusion(_)) => ActionKind::VotingExclusion,
                Some(Action::Resume(_)) => ActionKind::Resume,
                Some(Action::CassandraAuth(_)) => ActionKind::CassandraAuth,
                None => ActionKind::Unspecified,
            }
        }
    }
}

/// The DNS SAN the operator's client certificate carries; pilots accept no other client.
pub const OPERATOR_CLIENT_IDENTITY: &str = "stateward-operator";

/// The TLS server name the operator uses to reach a pilot of `cluster` in `namespace`
/// (every pilot's server certificate carries it as a DNS SAN).
pub fn pilot_server_name(cluster: &str, namespace: &str) -> String {
    format!("pilot.{cluster}.{namespace}")
}

/// Default gRPC port of the pilot (mTLS).
pub const PILOT_GRPC_PORT: u16 = 7443;
/// Default HTTP port of the pilot's probe endpoints.
pub const PILOT_PROBE_PORT: u16 = 7080;
