//! Cognito PostConfirmation trigger that records each confirmed user exactly once in
//! `public.users`, over verified TLS, with credentials from Secrets Manager.
//!
//! `main.rs` only wires these modules together; see the README for behaviour and configuration.

pub mod app;
pub mod config;
pub mod credentials;
pub mod db;
pub mod deadline;
pub mod event;
pub mod handler;
pub mod iam;
pub mod logging;
pub mod metrics;
pub mod park;
pub mod replay;
pub mod tls;
pub mod user;

pub use app::App;
pub use config::Config;
