//! The speed budget, measured in one run: cold start and warm latency of the release `bootstrap`
//! under a Lambda Runtime API against the local stack (TLS PostgreSQL 15 behind PgBouncer,
//! moto's Secrets Manager), its peak RSS and size, and the same run's baselines. See
//! `bench/run.sh`; figures are compared as ratios, never as absolute times.

// A benchmark, never deployed: it panics with the reason when something it measures fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod runtime_api;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognito_post_confirmation::{Config, credentials, db, iam, tls, user::NewUser};
use local_stack::Stack;
use runtime_api::RuntimeApi;
use serde_json::{Value, json};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Measures the function's cold start, warm latency, memory and size against same-run baselines
/// (see bench/run.sh, which builds what it needs and passes the paths).
#[derive(clap::Parser)]
#[command(name = "bench")]
struct Args {
    /// The release bootstrap for this machine.
    #[arg(long, default_value = "target/release/cognito-post-confirmation")]
    bootstrap: PathBuf,
    /// The arm64 bootstrap as deployed, whose size is reported.
    #[arg(long)]
    arm64_bootstrap: Option<PathBuf>,
    /// Another build of the function (an earlier commit, say) whose secret-mode cold start is
    /// measured alternately with this one's, as a same-run baseline.
    #[arg(long)]
    baseline_bootstrap: Option<PathBuf>,
    /// Warm invocations to measure.
    #[arg(long, default_value_t = 1000)]
    warm: usize,
    /// Cold starts to measure.
    #[arg(long, default_value_t = 15)]
    cold: usize,
    /// Connect-per-insert baseline samples.
    #[arg(long, default_value_t = 200)]
    connect_per_insert: usize,
}

/// A distinct sign-up event for user number `n` of a `kind` of measurement.
fn event(kind: &str, n: usize) -> Value {
    let sub = format!("{kind}-{n}-{}", std::process::id());
    local_stack::kit::sign_up_event(
        &sub,
        json!({"sub": sub, "email": format!("{sub}@example.com"), "name": "Ada Lovelace"}),
    )
}

fn user(kind: &str, n: usize) -> NewUser {
    let event = event(kind, n);
    let attributes =
        serde_json::from_value(event["request"]["userAttributes"].clone()).expect("attributes");
    NewUser::from_attributes(event["userName"].as_str(), &attributes).expect("user")
}

/// The function as Lambda starts it: a fresh process with the Runtime API in its environment.
fn spawn_function(
    bootstrap: &PathBuf,
    api: &RuntimeApi,
    env: &[(&'static str, String)],
    log: &str,
) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(bootstrap)
        .env_clear()
        .envs(env.iter().cloned())
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "cognito-post-confirmation")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn the bootstrap")
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn add(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }
    fn p50(&self) -> Duration {
        self.quantile(0.50)
    }
    fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let started = Instant::now();
    let stack = Stack::start();
    let db = stack.new_database(local_stack::SCHEMA);
    eprintln!("bench: local stack up in {:.0} ms", ms(started.elapsed()));

    let env: Vec<(&str, String)> = db.env();
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .expect("config");
    let tls = MakeRustlsConnect::new(tls::client_config(&config.extra_cas).expect("tls"));
    let creds = credentials::parse(&db.secret_json(&db.app_password), &config).expect("creds");
    let limit = Duration::from_secs(10);

    // Baseline pieces of a cold start: one Secrets Manager read (moto) through the AWS SDK.
    let sdk = local_stack::kit::sdk_config(&stack.moto.endpoint()).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let mut secret_fetch = Samples::default();
    for i in 0..21 {
        let t = Instant::now();
        credentials::fetch(&secrets, &config).await.expect("secret");
        if i > 0 {
            secret_fetch.add(t.elapsed());
        }
    }

    // DB_AUTH=rds-iam: the same database behind the local IAM token verifier (a Python TLS
    // front to PgBouncer), no secret. Its environment: the secret's, less the secret.
    let verifier = local_stack::iam::IamVerifier::start(
        &stack,
        &db,
        "rds-iam",
        local_stack::kit::SECRET_KEY,
        Duration::from_secs(900),
        0,
    );
    let iam_env: Vec<(&'static str, String)> = env
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "DB_SECRET_ID" | "DB_HOST" | "DB_PORT" | "DB_NAME" | "DB_CA_FILE"
            ) && !k.starts_with("AWS_ENDPOINT_URL")
        })
        .cloned()
        .chain(verifier.env.iter().cloned())
        .collect();

    // Cold starts: a fresh process per sample, timed from spawn to the first answer; secret and
    // IAM (and the baseline build) alternate, so that drift in the machine's load hits them alike,
    // and take turns going first: the first of a round measured 3-5 % slower, whichever build.
    let mut cold = Samples::default();
    let mut cold_iam = Samples::default();
    let mut cold_baseline = Samples::default();
    let mut cold_rss = Vec::new();
    for n in 0..args.cold + 1 {
        let mut modes = vec![
            (&args.bootstrap, &env, &mut cold, "cold"),
            (&args.bootstrap, &iam_env, &mut cold_iam, "cold-iam"),
        ];
        if let Some(baseline) = &args.baseline_bootstrap {
            modes.push((baseline, &env, &mut cold_baseline, "cold-baseline"));
        }
        let turn = n % modes.len();
        modes.rotate_left(turn);
        for (bootstrap, mode_env, samples, kind) in modes {
            // A Runtime API per process: a killed process's pending `next` must not take an event.
            let api = RuntimeApi::start().await.expect("runtime API");
            let spawned = Instant::now();
            let log = format!("target/bench/{kind}.log");
            let mut child = spawn_function(bootstrap, &api, mode_env, &log);
            let done = api
                .invoke(&event(kind, n), limit)
                .await
                .expect("cold invocation");
            assert!(
                done.ok,
                "cold start failed ({kind}): {}",
                String::from_utf8_lossy(&done.body)
            );
            if n > 0 {
                // The first spawn pays for loading the binary from disk into the page cache.
                samples.add(done.completed - spawned);
                if kind != "cold-baseline" {
                    cold_rss.push(peak_rss_kib(child.id()));
                }
            }
            child.kill().ok();
            child.wait().ok();
        }
    }

    // Warm invocations and the bare persistent INSERT, in alternating blocks so that drift in
    // the machine's load hits both alike.
    let api = RuntimeApi::start().await.expect("runtime API");
    let mut child = spawn_function(&args.bootstrap, &api, &env, "target/bench/warm.log");
    let bare = db::connect(&creds, &tls, Duration::from_secs(5))
        .await
        .expect("baseline connection");
    for n in 0..50 {
        api.invoke(&event("warmup", n), limit)
            .await
            .expect("warm-up");
        db::insert_user(&bare, &user("bare-warmup", n))
            .await
            .expect("warm-up");
    }
    let mut warm = Samples::default();
    let mut persistent = Samples::default();
    let block = 100;
    let mut n = 0;
    while n < args.warm {
        for i in n..(n + block).min(args.warm) {
            let done = api.invoke(&event("warm", i), limit).await.expect("warm");
            assert!(
                done.ok,
                "warm invocation failed: {}",
                String::from_utf8_lossy(&done.body)
            );
            warm.add(done.completed - done.handed_out);
        }
        for i in n..(n + block).min(args.warm) {
            let t = Instant::now();
            let outcome = db::insert_user(&bare, &user("bare", i))
                .await
                .expect("bare");
            persistent.add(t.elapsed());
            assert_eq!(outcome, db::Outcome::Inserted);
        }
        n += block;
    }
    let warm_rss = peak_rss_kib(child.id());
    child.kill().ok();
    child.wait().ok();

    // What a handler that connects per call pays: TLS + SCRAM through PgBouncer, the INSERT, close.
    let mut per_call = Samples::default();
    for i in 0..args.connect_per_insert {
        let t = Instant::now();
        let connection = db::connect(&creds, &tls, Duration::from_secs(5))
            .await
            .expect("connect");
        db::insert_user(&connection, &user("percall", i))
            .await
            .expect("insert");
        drop(connection);
        per_call.add(t.elapsed());
    }

    // The same through the IAM verifier: a fresh token, connect (TLS + cleartext token, then the
    // verifier's own TLS + SCRAM to PgBouncer), the INSERT, close.
    let mut per_call_iam = Samples::default();
    let aws = aws_credential_types::Credentials::new(
        local_stack::kit::ACCESS_KEY,
        local_stack::kit::SECRET_KEY,
        None,
        None,
        "bench",
    );
    for i in 0..args.connect_per_insert {
        let t = Instant::now();
        let token = iam::token(
            iam::Action::RdsConnect,
            "localhost",
            verifier.port(),
            &db.role,
            local_stack::kit::REGION,
            &aws,
            std::time::SystemTime::now(),
        )
        .expect("token");
        let iam_creds = credentials::Credentials {
            password: token.into(),
            port: verifier.port(),
            ..creds.clone()
        };
        let connection = db::connect(&iam_creds, &tls, Duration::from_secs(5))
            .await
            .expect("connect through the verifier");
        db::insert_user(&connection, &user("percall-iam", i))
            .await
            .expect("insert");
        drop(connection);
        per_call_iam.add(t.elapsed());
    }

    let rows: u64 = db
        .admin_psql("SELECT count(*) FROM public.users")
        .trim()
        .parse()
        .expect("count");

    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).ok();
    let x86_size = size(&args.bootstrap);
    let arm_size = args.arm64_bootstrap.as_ref().and_then(size);
    let peak_rss = cold_rss
        .iter()
        .copied()
        .chain([warm_rss])
        .max()
        .unwrap_or(0);

    let warm_ratio = ms(warm.p50()) / ms(persistent.p50());
    let cold_ratio = ms(cold.p50()) / ms(per_call.p50());
    let cold_iam_ratio = ms(cold_iam.p50()) / ms(per_call_iam.p50());
    let mb = |b: u64| b as f64 / 1_000_000.0;
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };

    println!("\n== Speed budget (one run; {} rows written) ==", rows);
    println!("{:<52} {:>10} {:>10}", "measurement", "p50 ms", "p99 ms");
    let line = |name: &str, s: &Samples| {
        println!(
            "{:<52} {:>10.3} {:>10.3}",
            format!("{name} (n={})", s.0.len()),
            ms(s.p50()),
            ms(s.p99())
        )
    };
    line("function, warm invocation", &warm);
    line(
        "baseline: bare INSERT, persistent TLS connection",
        &persistent,
    );
    line("function, cold start (spawn -> first answer)", &cold);
    line("baseline: connect (TLS+SCRAM) + INSERT per call", &per_call);
    line(
        "part of cold start: one GetSecretValue (moto)",
        &secret_fetch,
    );
    line("function, DB_AUTH=rds-iam cold start", &cold_iam);
    if !cold_baseline.0.is_empty() {
        line("baseline: --baseline-bootstrap cold start", &cold_baseline);
        println!(
            "cold start this build / baseline build = {:.2}",
            ms(cold.p50()) / ms(cold_baseline.p50())
        );
    }
    line(
        "baseline: token + connect + INSERT per call (IAM)",
        &per_call_iam,
    );
    println!(
        "cold start rds-iam / secret = {:.2}; each over its connect-per-insert baseline: \
         rds-iam {cold_iam_ratio:.2}, secret {cold_ratio:.2} (the local IAM verifier is a \
         Python TLS front, so compare the ratios)",
        ms(cold_iam.p50()) / ms(cold.p50())
    );
    println!(
        "peak RSS of the function: {:.1} MB (cold {:.1} MB, warm after {} calls {:.1} MB)",
        peak_rss as f64 / 1024.0,
        cold_rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
        args.warm + 50,
        warm_rss as f64 / 1024.0
    );
    println!(
        "bootstrap size: x86_64 {} / arm64 {}",
        x86_size.map_or("?".into(), |b| format!("{:.2} MB", mb(b))),
        arm_size.map_or("not built".into(), |b| format!("{:.2} MB", mb(b)))
    );
    println!("\n== Targets ==");
    println!(
        "{} warm p50 / bare persistent INSERT p50 = {warm_ratio:.2} (target <= 2)",
        verdict(warm_ratio <= 2.0)
    );
    println!(
        "{} cold start p50 = {:.1} ms (target <= 25 ms, incl. the secret fetch)",
        verdict(ms(cold.p50()) <= 25.0),
        ms(cold.p50())
    );
    println!(
        "{} cold start p50 / connect-per-insert p50 = {cold_ratio:.2} (target <= 3)",
        verdict(cold_ratio <= 3.0)
    );
    println!(
        "{} peak RSS {:.1} MB (target <= 20 MB)",
        verdict(peak_rss as f64 / 1024.0 <= 20.0),
        peak_rss as f64 / 1024.0
    );
    if let Some(b) = arm_size {
        println!(
            "{} arm64 bootstrap {:.2} MB (target <= 6 MB)",
            verdict(mb(b) <= 6.0),
            mb(b)
        );
    }

    let results = json!({
        "warm_p50_ms": ms(warm.p50()), "warm_p99_ms": ms(warm.p99()),
        "bare_insert_p50_ms": ms(persistent.p50()), "bare_insert_p99_ms": ms(persistent.p99()),
        "cold_start_p50_ms": ms(cold.p50()), "cold_start_p99_ms": ms(cold.p99()),
        "connect_per_insert_p50_ms": ms(per_call.p50()),
        "secret_fetch_p50_ms": ms(secret_fetch.p50()),
        "cold_start_rds_iam_p50_ms": ms(cold_iam.p50()),
        "connect_per_insert_rds_iam_p50_ms": ms(per_call_iam.p50()),
        "cold_iam_ratio": cold_iam_ratio,
        "warm_ratio": warm_ratio, "cold_ratio": cold_ratio,
        "peak_rss_kib": peak_rss, "x86_64_bytes": x86_size, "arm64_bytes": arm_size,
        "rows": rows,
    });
    std::fs::write(
        "target/bench/results.json",
        serde_json::to_string_pretty(&results).expect("json"),
    )
    .expect("results.json");
    println!("\nresults: target/bench/results.json; function logs: target/bench/*.log");
}
