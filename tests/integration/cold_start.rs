//! Missing or invalid configuration fails the cold start of the real binary, naming the variable.

use std::process::Command;

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
