//! Status types shared by every database kind: defined once, in the core.

pub use stateward_core::operation::{Operation, OperationKind, Phase};
pub use stateward_core::status::{
    ClusterStatus, Condition, CurrentOperation, NodeStatus, OperationRecord, PoolStatus,
};
