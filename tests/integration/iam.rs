//! IAM database authentication end to end (#10): the local stack checks the token the function
//! sends (local-stack/iam_verifier.py: TLS only, a cleartext password, the SigV4 signature
//! recomputed with the same static credentials, host, action, user and age) and lets valid
//! logins through to PgBouncer. No secret exists: the SDK's endpoint is a dead port.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use cognito_post_confirmation::App;
use local_stack::Stack;

use crate::helpers::{TestApp, config_from, invoke, sign_up, unique};

/// The credentials `local_stack::kit::sdk_config` gives the SDK.
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "test";

struct Verifier {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    log: PathBuf,
}

impl Verifier {
    /// `service` is `rds-db` or `dsql`; tokens older than `max_age` are refused as expired.
    fn start(test: &TestApp<'_>, service: &str, secret_key: &str, max_age: Duration) -> Verifier {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/local-stack/iam_verifier.py");
        let log = std::env::temp_dir().join(format!("iam-verifier-{}.log", unique()));
        let certs = &test.stack.certs;
        let authority = if service == "rds-db" {
            "localhost:{port}"
        } else {
            "localhost"
        };
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--cert", &certs.server_cert.to_string_lossy()])
            .args(["--key", &certs.server_key.to_string_lossy()])
            .args(["--backend-port", &test.stack.bouncer.port().to_string()])
            .args(["--backend-ca", &certs.ca_pem.to_string_lossy()])
            .args(["--backend-password", &test.db.app_password])
            .args(["--service", service, "--authority", authority])
            .args(["--region", "us-east-1", "--access-key", ACCESS_KEY])
            .args(["--secret-key", secret_key])
            .args(["--max-age", &max_age.as_secs_f64().to_string()])
            .args(["--log", &log.to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start local-stack/iam_verifier.py");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the verifier's port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected verifier output {line:?}"));
        Verifier {
            child,
            _stdin: stdin,
            port,
            log,
        }
    }

    /// Its decisions so far, one per login ("accepted <user>", "rejected: <reason>").
    fn decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The function's environment for `mode` through `verifier`, and an SDK whose only working part
/// is its credentials: any Secrets Manager call would fail.
async fn iam_app(test: &TestApp<'_>, mode: &str, verifier: &Verifier) -> App {
    let env: HashMap<&'static str, String> = HashMap::from([
        ("DB_AUTH", mode.to_owned()),
        ("DB_HOST", "localhost".to_owned()),
        ("DB_PORT", verifier.port.to_string()),
        ("DB_USER", test.db.role.clone()),
        ("DB_NAME", test.db.name.clone()),
        (
            "DB_CA_FILE",
            test.stack.certs.ca_pem.to_string_lossy().into_owned(),
        ),
    ]);
    let sdk = local_stack::kit::sdk_config("http://127.0.0.1:9").await;
    App::init(config_from(&env), &sdk)
        .await
        .expect("cold start")
}

fn new_user() -> serde_json::Value {
    let sub = format!("sub-{}", unique());
    sign_up(&sub, &format!("{sub}@example.com"), None, None)
}

#[tokio::test]
async fn rds_iam_logs_in_with_a_token_the_stack_verifies_and_reads_no_secret() {
    let test = TestApp::new().await;
    let verifier = Verifier::start(&test, "rds-db", SECRET_KEY, Duration::from_secs(900));
    let app = iam_app(&test, "rds-iam", &verifier).await;
    invoke(&app, new_user()).await.expect("recorded");
    invoke(&app, new_user()).await.expect("recorded, warm");
    assert_eq!(test.count_users(), 2);
    assert_eq!(verifier.decisions(), [format!("accepted {}", test.db.role)]);
    assert_eq!(app.connections_opened(), 1);
}

#[tokio::test]
async fn dsql_iam_logs_in_with_a_dsql_token() {
    let test = TestApp::new().await;
    let verifier = Verifier::start(&test, "dsql", SECRET_KEY, Duration::from_secs(900));
    let app = iam_app(&test, "dsql-iam", &verifier).await;
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
    let verifier = Verifier::start(&test, "rds-db", SECRET_KEY, Duration::from_secs(2));
    let app = iam_app(&test, "rds-iam", &verifier).await;
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
    let verifier = Verifier::start(&test, "rds-db", "not-the-key", Duration::from_secs(900));
    let app = iam_app(&test, "rds-iam", &verifier).await;
    std::thread::sleep(Duration::from_millis(1100));
    let error = invoke(&app, new_user()).await.expect_err("refused");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    let decisions = verifier.decisions();
    assert!(
        (2..=3).contains(&decisions.len()),
        "cold start, then at most one new token: {decisions:?}"
    );
    assert!(
        decisions.iter().all(|d| d == "rejected: bad signature"),
        "{decisions:?}"
    );
    assert_eq!(test.count_users(), 0);
}
