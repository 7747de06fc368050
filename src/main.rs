use std::ffi::OsString;

use cognito_post_confirmation::{App, Config, handler, logging};
use lambda_runtime::{Error, run, service_fn};

fn main() -> Result<(), Error> {
    forget_empty_endpoint_urls();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), Error> {
    logging::init();
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

/// An empty `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` means "not set", as an empty value
/// of every variable of ours does. template.yaml declares `AWS_ENDPOINT_URL_SECRETS_MANAGER`
/// empty so that `sam local invoke --env-vars` can point it at a local Secrets Manager; the AWS
/// SDK itself would take the empty string for an endpoint.
fn forget_empty_endpoint_urls() {
    let empty: Vec<OsString> = std::env::vars_os()
        .filter(|(key, value)| {
            key.to_str()
                .is_some_and(|key| key.starts_with("AWS_ENDPOINT_URL"))
                && value.to_str().is_some_and(|value| value.trim().is_empty())
        })
        .map(|(key, _)| key)
        .collect();
    for key in empty {
        // SAFETY: this runs first in `main`, before the runtime or any other thread exists, so
        // nothing can read the environment while it changes.
        unsafe { std::env::remove_var(key) };
    }
}
