//! Integration tests: the handler against a real TLS PostgreSQL behind PgBouncer (transaction
//! pooling, TLS on both sides), with credentials from moto's Secrets Manager. Every test gets its
//! own database and secret.

mod helpers;

mod bad_input;
mod cold_start;
mod events;
mod exactly_once;
mod faults;
mod least_privilege;
mod logs;
mod tls;
