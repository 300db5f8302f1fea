//! Everything specific to Apache Cassandra: its answers to the core's questions
//! (`database`), the objects that run it (`resources`), and its reconcile pipeline.

pub mod database;
pub mod reconcile;
pub mod resources;

#[cfg(test)]
mod planner_tests;
