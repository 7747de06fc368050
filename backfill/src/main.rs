//! `cognito-backfill`: see the crate docs and docs/backfill.md.

use std::process::ExitCode;

use aws_config::retry::RetryConfig;
use cognito_backfill::{CREDENTIALS_TIMEOUT, Database, Fatal, Options, parse_args, run};
use cognito_post_confirmation::{Config, credentials, tls};
use tokio_postgres_rustls::MakeRustlsConnect;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit 2 with the usage; --help prints it and exits 0 (clap).
    let options = parse_args(std::env::args_os()).unwrap_or_else(|error| error.exit());
    match backfill(&options).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(Fatal(error)) => {
            eprintln!("cognito-backfill: {error}");
            ExitCode::from(2)
        }
    }
}

async fn backfill(options: &Options) -> Result<u64, Fatal> {
    let config = Config::from_env().map_err(|e| Fatal(e.to_string()))?;
    // Throttled ListUsers calls (TooManyRequestsException) are retried by the SDK with exponential
    // backoff and jitter, up to 10 attempts per page.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(10))
        .load()
        .await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    // The function's own login: the secret (DB_SECRET_ID), or an IAM token (DB_AUTH).
    let login = credentials::Login::new(&config, &sdk).map_err(|e| Fatal(e.to_string()))?;
    let tls = tls::client_config(&config.extra_cas).map_err(|e| Fatal(e.to_string()))?;
    let tls = MakeRustlsConnect::new(tls);
    let mut database = Database::open(login, config, tls, CREDENTIALS_TIMEOUT).await?;
    let dry_run = options.dry_run;
    eprintln!(
        "cognito-backfill: pool {}, statuses {}{}",
        options.user_pool_id,
        options.statuses.join(","),
        if dry_run {
            ", dry run (nothing is written)"
        } else {
            ""
        }
    );
    let report = run(options, &cognito, &mut database, |report| {
        eprintln!("cognito-backfill: progress: {}", report.line(dry_run));
    })
    .await?;
    println!("users seen:       {}", report.seen);
    println!("already present:  {}", report.already_present);
    println!(
        "{}{}",
        if dry_run {
            "would insert:     "
        } else {
            "inserted:         "
        },
        report.inserted
    );
    println!("skipped:          {}", report.skipped_total());
    for (reason, count) in &report.skipped {
        println!("  {count:>6}  {reason}");
    }
    println!("failed:           {}", report.failed);
    Ok(report.failed)
}
