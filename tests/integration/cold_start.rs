//! Missing or invalid configuration fails the cold start of the real binary, naming the variable.

use std::process::Command;

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
    ]);
    // The process ends after its cold start: there is no Lambda Runtime API to serve here.
    assert!(output.contains("cold start complete"), "{output}");
    assert!(!output.contains("could not read"), "{output}");
    assert!(!output.contains("could not connect"), "{output}");
    assert!(!output.contains("timed out"), "{output}");
}
