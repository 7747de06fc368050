//! Integration tests: the handler against a real TLS PostgreSQL behind PgBouncer (transaction
//! pooling, TLS on both sides), with credentials from moto's Secrets Manager. Every test gets its
//! own database and secret.

// A test crate: its helpers panic with the reason, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod helpers;

mod bad_input;
mod cold_start;
mod dsql;
mod events;
mod exactly_once;
mod faults;
mod iam;
mod least_privilege;
mod logs;
mod parking;
mod schema;
mod tls;
