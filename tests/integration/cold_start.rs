//! Missing or invalid configuration fails the cold start of the real binary, naming the variable.

use std::process::Command;
use std::time::Duration;

use crate::helpers::TestApp;

fn cold_start(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cognito-post-confirmation"))
        .env_clear()
        .envs([
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            // Nothing listens here: the secret fetch fails at once, the cold start goes on.
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
        .envs(env.iter().copied())
        .output()
        .expect("the function binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn missing_or_invalid_configuration_fails_the_cold_start_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "DB_SECRET_ID must be set"),
        (
            &[("DB_SECRET_ID", "s"), ("DB_PORT", "abc")],
            "DB_PORT is invalid",
        ),
        (
            &[("DB_SECRET_ID", "s"), ("DB_STATEMENT_TIMEOUT_MS", "0")],
            "DB_STATEMENT_TIMEOUT_MS is invalid",
        ),
        (
            &[("DB_SECRET_ID", "s"), ("DB_CA_FILE", "/nonexistent/ca.pem")],
            "DB_CA_FILE `/nonexistent/ca.pem` cannot be read",
        ),
    ];
    for (env, expected) in cases {
        let (succeeded, output) = cold_start(env);
        assert!(!succeeded, "{env:?} started");
        assert!(output.contains(expected), "{env:?}: {output}");
    }
}

/// template.yaml declares every variable the function reads, most of them empty, so that
/// `sam local invoke --env-vars` can set them; a deployed stack must behave as if they were not
/// there. Here the global `AWS_ENDPOINT_URL` leads to the local Secrets Manager: had the empty
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER` been taken as an endpoint, the secret could not be read,
/// and had an empty `DB_*` variable been taken as a value, the configuration would be refused.
#[tokio::test]
async fn the_templates_empty_variables_count_as_unset_even_the_sdks_endpoint() {
    let test = TestApp::new().await;
    let ca = test.stack.certs.ca_pem.to_string_lossy().into_owned();
    let endpoint = test.stack.moto.endpoint();
    let (_, output) = cold_start(&[
        ("DB_SECRET_ID", &test.db.secret_id),
        ("DB_CA_FILE", &ca),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", ""),
        ("DB_HOST", ""),
        ("DB_PORT", ""),
        ("DB_NAME", ""),
        ("DB_CA_PEM", ""),
        ("DB_CONNECT_TIMEOUT_MS", ""),
        ("DB_STATEMENT_TIMEOUT_MS", ""),
        ("DEADLINE_MARGIN_MS", ""),
        ("PARK_QUEUE_URL", ""),
        ("AWS_ENDPOINT_URL_SQS", ""),
    ]);
    // The process ends after its cold start: there is no Lambda Runtime API to serve here.
    assert!(output.contains("cold start complete"), "{output}");
    assert!(
        !output.contains("could not get the database credentials"),
        "{output}"
    );
    assert!(!output.contains("could not connect"), "{output}");
    assert!(!output.contains("timed out"), "{output}");
}

/// The real binary's logs follow Lambda's logging controls (src/logging.rs): JSON lines under
/// `AWS_LAMBDA_LOG_FORMAT=JSON` (with the timestamp Lambda's level filter needs), text otherwise;
/// `AWS_LAMBDA_LOG_LEVEL` (Lambda's `FATAL` and `DEBUG` included) over `RUST_LOG`; a level it
/// does not understand is named, and INFO is used.
#[tokio::test]
async fn the_binary_logs_as_lambdas_logging_controls_say() {
    let test = TestApp::new().await;
    let ca = test.stack.certs.ca_pem.to_string_lossy().into_owned();
    let endpoint = test.stack.moto.endpoint();
    let run = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("DB_SECRET_ID", test.db.secret_id.as_str()),
            ("DB_CA_FILE", &ca),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &endpoint),
        ];
        env.extend_from_slice(extra);
        cold_start(&env).1
    };
    const DONE: &str = "cold start complete";

    let json = run(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]);
    let line = json.lines().find(|l| l.contains(DONE)).expect(DONE);
    let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    let text = run(&[]);
    let line = text.lines().find(|l| l.contains(DONE)).expect(DONE);
    assert!(line.trim_start().starts_with("INFO"), "{line}");

    // After its cold start the process ends: there is no Lambda Runtime API here.
    const AFTER: &str = "Missing AWS_LAMBDA_FUNCTION_NAME";
    for quiet in [
        vec![("AWS_LAMBDA_LOG_LEVEL", "ERROR")],
        vec![("AWS_LAMBDA_LOG_LEVEL", "FATAL")],
        vec![("RUST_LOG", "warn")],
        vec![("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "debug")],
    ] {
        let out = run(&quiet);
        assert!(
            out.contains(AFTER) && !out.contains(DONE),
            "{quiet:?}: {out}"
        );
    }
    assert!(run(&[("RUST_LOG", "aws_config=warn")]).contains(DONE));
    let debug = run(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]);
    assert!(debug.lines().any(|l| l.starts_with("DEBUG ")), "{debug}");
    assert!(!debug.lines().any(|l| l.starts_with("TRACE ")), "{debug}");

    let odd = run(&[("AWS_LAMBDA_LOG_LEVEL", "db=loud")]);
    let named = r#"WARN log level "db=loud" not understood; logging at INFO"#;
    assert!(odd.contains(named), "{odd}");
    assert!(odd.contains(DONE), "{odd}");
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Cognito's 5 s cover the cold start too. After an init that waited its whole cap for a frozen
/// Secrets Manager, the invocation it was made for ends by the init's start + 4.5 s less the
/// margin (about 2.8 s from now), not by Lambda's 4 s from now; the next one has Lambda's 4 s.
#[tokio::test]
async fn the_first_invocation_gets_what_the_cold_start_left_of_cognitos_limit() {
    let stack = local_stack::Stack::start();
    let test = TestApp::on(&stack).await;
    stack.moto.pause();
    let began = std::time::Instant::now();
    let app = test.start().await;
    stack.moto.resume();
    let init = began.elapsed();
    assert!(
        init >= Duration::from_millis(1400),
        "the init took {init:?}"
    );

    let first = app.deadline(epoch_ms() + 4000);
    let now = std::time::Instant::now();
    let left = first.saturating_duration_since(now);
    assert!(
        // (50 ms for the moments between the test's clock and the init's own; without the cap
        // it would be 3.8 s)
        left <= Duration::from_millis(4350).saturating_sub(init),
        "the first invocation may take {left:?} after a {init:?} init"
    );
    let warm = app.deadline(epoch_ms() + 4000);
    assert!(
        warm.saturating_duration_since(now) >= Duration::from_millis(3700),
        "a warm invocation has Lambda's deadline less the margin"
    );
    crate::helpers::invoke(
        &app,
        crate::helpers::sign_up("sub-budget", "b@example.com", None, None),
    )
    .await
    .expect("recorded once Secrets Manager answers");
    assert_eq!(test.count_users(), 1);
}
