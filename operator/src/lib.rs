//! Stateward operator: observe → plan (pure, `stateward-core`) → record → act, for each
//! database kind. `platform/` is the Kubernetes plumbing they share; `cassandra/` is one kind.

pub mod api;
pub mod apply;
pub mod cassandra;
pub mod cluster;
pub mod config;
pub mod context;
pub mod controller;
pub mod cpu_time;
pub mod elasticsearch;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod pilot_client;
pub mod pilots;
pub mod platform;
pub mod readiness;
pub mod shutdown;
pub mod tls;
