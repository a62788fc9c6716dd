//! chatguard: a self-hosted moderation worker for Stream Chat.
//!
//! A webhook flows through the modules in this order: [`server`] accepts the connection,
//! [`ingest`] verifies and stores it, [`queue`] hands it to a worker, [`pipeline`] runs it
//! through [`engine`] (scores) and [`policy`] (decides) and records the decision with the Stream
//! calls it implies, which [`actions`] carries out durably; [`store`] keeps everything, and
//! [`api`] serves health, metrics and the moderators' review API.

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
pub mod pipeline;
pub mod policy;
pub mod queue;
pub mod reload;
pub mod server;
pub mod store;
pub mod telemetry;
