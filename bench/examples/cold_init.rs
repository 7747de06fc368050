// A benchmark, never deployed: it panics with the reason when something it measures fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Profiling aid: the function's cold start, step by step, in a fresh process against a running
// local stack whose environment is in the process env (source the `local-stack up` env file).
use std::time::Instant;
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let t = Instant::now();
    let config = cognito_post_confirmation::Config::from_env().expect("config");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sdk_loaded = t.elapsed();
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let client_built = t.elapsed();
    let creds = cognito_post_confirmation::credentials::fetch(&client, &config)
        .await
        .expect("secret");
    let fetched = t.elapsed();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        cognito_post_confirmation::tls::client_config(&config.extra_cas).expect("tls"),
    );
    let trust = t.elapsed();
    let conn =
        cognito_post_confirmation::db::connect(&creds, &tls, std::time::Duration::from_secs(5))
            .await
            .expect("connect");
    let connected = t.elapsed();
    drop(conn);
    eprintln!(
        "sdk config {sdk_loaded:?}, client {client_built:?}, secret {fetched:?}, trust store {trust:?}, connect {connected:?}"
    );
}
