//! IAM database authentication end to end (#10): the local stack checks the token the function
//! sends (local-stack/iam_verifier.py: TLS only, a cleartext password, the SigV4 signature
//! recomputed with the same static credentials, host, action, user and age) and lets valid
//! logins through to PgBouncer. No secret exists: the SDK's endpoint is a dead port.

use std::collections::HashMap;
use std::time::Duration;

use cognito_post_confirmation::App;
use local_stack::Stack;
use local_stack::iam::IamVerifier;
use local_stack::kit::SECRET_KEY;

use crate::helpers::{TestApp, config_from, invoke, new_user};

fn verifier(test: &TestApp<'_>, mode: &str, key: &str, max_age: Duration) -> IamVerifier {
    IamVerifier::start(test.stack, &test.db, mode, key, max_age, 0)
}

/// The function's environment through `verifier`, and an SDK whose only working part is its
/// credentials: any Secrets Manager call would fail.
async fn iam_app(verifier: &IamVerifier) -> App {
    let env: HashMap<&'static str, String> = verifier.env.iter().cloned().collect();
    let sdk = local_stack::kit::sdk_config("http://127.0.0.1:9").await;
    App::init(config_from(&env), &sdk)
        .await
        .expect("cold start")
}

#[tokio::test]
async fn rds_iam_logs_in_with_a_token_the_stack_verifies_and_reads_no_secret() {
    let test = TestApp::new().await;
    let verifier = verifier(&test, "rds-iam", SECRET_KEY, Duration::from_secs(900));
    let app = iam_app(&verifier).await;
    invoke(&app, new_user()).await.expect("recorded");
    invoke(&app, new_user()).await.expect("recorded, warm");
    assert_eq!(test.count_users(), 2);
    assert_eq!(verifier.decisions(), [format!("accepted {}", test.db.role)]);
    assert_eq!(app.connections_opened(), 1);
}

#[tokio::test]
async fn dsql_iam_logs_in_with_a_dsql_token() {
    let test = TestApp::new().await;
    let verifier = verifier(&test, "dsql-iam", SECRET_KEY, Duration::from_secs(900));
    let app = iam_app(&verifier).await;
    invoke(&app, new_user()).await.expect("recorded");
    assert_eq!(test.count_users(), 1);
    assert_eq!(verifier.decisions(), [format!("accepted {}", test.db.role)]);
}

/// The token made at cold start is kept for new connections; once the verifier finds it expired,
/// the refused login makes the function sign a new one, and the sign-up goes through.
#[tokio::test]
async fn an_expired_token_is_refused_and_the_function_makes_a_new_one() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let verifier = verifier(&test, "rds-iam", SECRET_KEY, Duration::from_secs(2));
    let app = iam_app(&verifier).await;
    invoke(&app, new_user()).await.expect("recorded");
    std::thread::sleep(Duration::from_millis(2500));
    // The proxy restarts: the function's connection is gone and it must log in again.
    stack.bouncer.stop();
    stack.bouncer.start();
    invoke(&app, new_user())
        .await
        .expect("recorded with a new token");
    let decisions = verifier.decisions();
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert!(
        decisions[1].starts_with("rejected: expired"),
        "{decisions:?}"
    );
    assert_eq!(decisions[2], format!("accepted {}", test.db.role));
    assert_eq!(test.count_users(), 2);
}

/// A token signed with other credentials is refused, every time: the function reports
/// DatabaseConnectionError (making one new token, not looping) and writes nothing.
#[tokio::test]
async fn a_token_with_a_wrong_signature_is_refused() {
    let test = TestApp::new().await;
    let verifier = verifier(&test, "rds-iam", "not-the-key", Duration::from_secs(900));
    let app = iam_app(&verifier).await;
    std::thread::sleep(Duration::from_millis(1100));
    let error = invoke(&app, new_user()).await.expect_err("refused");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    let decisions = verifier.decisions();
    assert_eq!(
        decisions.len(),
        3,
        "the cold start's token, the same token again, one new token: {decisions:?}"
    );
    assert!(
        decisions.iter().all(|d| d == "rejected: bad signature"),
        "{decisions:?}"
    );
    assert_eq!(test.count_users(), 0);
}

/// A token altered on the way is refused; the function makes a new one and the sign-up goes
/// through.
#[tokio::test]
async fn a_tampered_token_is_refused_and_the_function_makes_a_new_one() {
    let test = TestApp::new().await;
    let verifier = IamVerifier::start(
        test.stack,
        &test.db,
        "rds-iam",
        SECRET_KEY,
        Duration::from_secs(900),
        2,
    );
    let app = iam_app(&verifier).await;
    // A new token differs from the cold start's only in a later second.
    std::thread::sleep(Duration::from_millis(1100));
    invoke(&app, new_user())
        .await
        .expect("recorded with a new token");
    assert_eq!(
        verifier.decisions(),
        [
            "rejected: bad signature".to_owned(),
            "rejected: bad signature".to_owned(),
            format!("accepted {}", test.db.role)
        ]
    );
    assert_eq!(test.count_users(), 1);
}
