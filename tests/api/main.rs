//! One integration-test binary. Every test runs on SQLite; the `postgres` variants run when
//! `TEST_POSTGRES_URL` is set (and must run under CI).

mod helpers;
mod smtp_sink;
mod stream_standin;

mod actions;
mod before_send;
mod chaos;
mod cli;
mod console;
mod detection;
mod email;
mod enforcement;
mod engine;
mod executor;
mod ingest;
mod openapi;
mod pipeline;
mod review_api;
mod review_load;
mod review_store;
mod stream_client;
