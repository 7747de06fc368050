//! Cognito PostConfirmation trigger that records each confirmed user exactly once in
//! `public.users`, over verified TLS, with credentials from Secrets Manager.
//!
//! `main.rs` only wires these modules together; see the README for behaviour and configuration.

// Release builds abort on panic (`panic = "abort"`), so nothing on the invocation path may panic;
// these lints make that a CI failure rather than a convention.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod app;
pub mod config;
pub mod credentials;
pub mod db;
pub mod handler;
mod redact;
pub mod tls;
pub mod user;

pub use app::App;
pub use config::Config;
