//! Stateward's end-to-end harness: a real single-node Kubernetes cluster on this machine
//! (`cargo dev up`), the images it runs, and helpers for tests.
//!
//! Tests call [`cluster::ensure_up`], which reuses a running cluster or brings one up, and
//! fails (never skips) when that is impossible.

pub mod addons;
pub mod cassandra_dist;
pub mod certs;
pub mod cluster;
pub mod cmd;
pub mod components;
pub mod configs;
pub mod elasticsearch_dist;
pub mod images;
pub mod kubectl;
pub mod lanes;
pub mod layout;
pub mod network;
pub mod prereqs;
pub mod process;

pub use cluster::{Cluster, ensure_up};
