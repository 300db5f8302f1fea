//! Everything specific to Apache Cassandra: its answers to the core's questions
//! (`database`), the objects that run it (`resources`), its part in the shared reconcile
//! (`kind`), and the setup of authentication (`auth`).

pub mod auth;
pub mod database;
pub mod kind;
pub mod resources;

#[cfg(test)]
mod planner_tests;
