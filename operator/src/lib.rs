//! Stateward operator: observe → plan (pure) → act → record, for each database kind.

pub mod api;
pub mod apply;
pub mod cassandra;
pub mod config;
pub mod context;
pub mod controller;
pub mod http;
pub mod labels;
pub mod pilot_client;
pub mod pilots;
pub mod planner;
pub mod tls;
