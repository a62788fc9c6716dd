//! chatguard: a self-hosted moderation worker for Stream Chat.
//!
//! A webhook flows through the modules in this order: [`ingest`] verifies and stores it, [`queue`]
//! hands it to a worker, [`engine`] scores it, [`policy`] decides, [`actions`] says what is (or
//! would be) done, [`store`] keeps the decision log, and [`api`] serves health, metrics and the moderators' review API.

pub mod actions;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod engine;
pub mod error;
pub mod group_commit;
pub mod ingest;
pub mod policy;
pub mod queue;
pub mod reload;
pub mod store;
pub mod telemetry;
