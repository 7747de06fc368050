//! Real local stand-ins for what the Lambda talks to, for the tests and local runs: PostgreSQL 15
//! with TLS (RDS), PgBouncer in transaction mode with TLS on both sides (RDS Proxy), moto's server
//! (Secrets Manager, SQS) and an IAM token verifier; and [`kit`], the helpers every test crate
//! shares. `Stack::shared()` starts one stack per test process, `stack.new_database(SCHEMA)` gives
//! a test its own database, role and secret, and `db.env()` the function's environment for it.
//!
//! Needs what `scripts/install-deps.sh` installs. As root, PostgreSQL and PgBouncer run as the
//! `postgres` OS user. Nothing it starts outlives the test process, even a killed one (see
//! `process.rs`). Everything is synchronous: in a `#[tokio::test]` it blocks that thread.

// Test support: its helpers panic with the reason (see `or_panic`), so the no-panic lints are off.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod certs;
pub mod iam;
pub mod kit;
mod moto;
mod pgbouncer;
mod postgres;
mod process;
mod stack;

pub use certs::Certs;
pub use moto::Moto;
pub use pgbouncer::PgBouncer;
pub use postgres::Postgres;
pub use process::Server;
pub use stack::{Stack, TestDb};

/// The project's schema (sql/schema.sql), as the tests and `local-stack up` apply it.
pub const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// The function's role (sql/app-role.sql; psql variable `app_role`), as each test database has it.
pub const APP_ROLE_SQL: &str = include_str!("../../sql/app-role.sql");

/// A directory for one test's files (certificates, say), `kind` in its name: removed when dropped,
/// and by the janitor if the test process is killed first. Panics on failure.
pub fn scratch_dir(kind: &str) -> tempfile::TempDir {
    or_panic(process::instance_dir(kind), "creating a scratch directory")
}

/// Panics with the reason (a failing server's log included): a test that cannot set up has
/// nothing to test.
#[track_caller]
fn or_panic<T>(result: anyhow::Result<T>, what: impl std::fmt::Display) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("local-stack: {what} failed: {e:?}"),
    }
}
