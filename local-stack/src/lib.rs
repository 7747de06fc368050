//! Real local stand-ins for the AWS pieces the Lambda talks to, for integration tests and local
//! runs: PostgreSQL 15 with TLS (RDS), PgBouncer 1.18 with TLS on both sides, SCRAM and
//! transaction pooling (RDS Proxy), moto's server (Secrets Manager, SQS) and an IAM token
//! verifier; and [`kit`], the helpers every test crate shares.
//!
//! ```no_run
//! let stack = local_stack::Stack::shared();         // started once per test process
//! let db = stack.new_database(local_stack::SCHEMA); // own database, role and secret
//! for (key, value) in db.env() {
//!     println!("{key}={value}");                    // DB_SECRET_ID, DB_PORT, DB_CA_FILE, ...
//! }
//! ```
//!
//! Needs PostgreSQL 15, PgBouncer and the `.venv` with moto (`scripts/install-deps.sh`). When run
//! as root, PostgreSQL and PgBouncer run as the `postgres` OS user (both refuse root). Nothing it
//! starts outlives the test process, even a killed one (see `process.rs`). Everything is
//! synchronous: from a `#[tokio::test]` it blocks that test's thread during set-up.

// Test support, never deployed: its helpers panic with the reason by design (a test that cannot
// start its stack has nothing to test), so the workspace's no-panic lints do not apply here.
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
