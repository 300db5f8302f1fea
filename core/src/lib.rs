//! Stateward's database-neutral core, pure and free of I/O (the build keeps it so: this crate
//! does not depend on a Kubernetes client, an async runtime or gRPC).
//!
//! - [`planner`]: the planner skeleton, one step at a time; [`leave`], [`roll`] and [`task`]
//!   carry the operations every database shares (a node leaving, restarts and upgrades, node
//!   tasks);
//! - [`database`]: the one trait a database implements, for the questions only it can answer;
//! - [`operation`]: typed operations, the machine-readable record in `status.operation`;
//! - [`status`] and [`words`]: the status model (conditions, phase, per-node state, history)
//!   and the words and Events people read, derived from the typed state;
//! - [`node_config`]: the operator→pilot node configuration and the settings Stateward owns.

pub mod database;
pub mod leave;
pub mod model;
pub mod node_config;
pub mod operation;
pub mod planner;
pub mod roll;
pub mod status;
pub mod task;
pub mod words;

pub use database::{Database, Gate, View};
