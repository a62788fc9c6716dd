//! One integration-test binary. Every test runs on SQLite; the `postgres` variants run when
//! `TEST_POSTGRES_URL` is set (and must run under CI).

mod helpers;

mod cli;
mod ingest;
mod pipeline;
