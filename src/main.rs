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

use cognito_post_confirmation::{App, Config, handler};
use lambda_runtime::{Error, run, service_fn, tracing};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let app = match cold_start().await {
        Ok(app) => app,
        Err(error) => {
            // Lambda reports the init failure; the log line says why, naming the variable.
            tracing::error!(%error, "cold start failed");
            return Err(error);
        }
    };
    run(service_fn(|event| handler::handle(&app, event))).await
}

async fn cold_start() -> Result<App, Error> {
    let config = Config::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(App::init(config, &sdk).await?)
}
