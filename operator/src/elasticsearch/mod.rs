//! Everything specific to Elasticsearch: its answers to the core's questions (`database`), the
//! objects that run it (`resources`), and its part in the shared reconcile (`kind`).

pub mod database;
pub mod kind;
pub mod resources;
mod restart;
pub mod watermark;

#[cfg(test)]
mod planner_tests;
