//! Everything specific to Apache Cassandra. The skeleton (planner, apply, status conventions)
//! is shared with the other database kinds.

pub mod reconcile;
pub mod resources;
pub mod status;
