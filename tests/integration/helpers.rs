//! Test support: a real local stack (TLS PostgreSQL 15, PgBouncer in transaction mode, moto's
//! Secrets Manager) shared by the whole binary, and a fresh database and secret per test.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use cognito_post_confirmation::handler::{self, Answer, Failure};
use cognito_post_confirmation::{App, Config};
use lambda_runtime::{Context, LambdaEvent};
use local_stack::{Stack, TestDb};
use serde_json::Value;
use serde_json::value::RawValue;

pub use local_stack::SCHEMA;

/// One test's world: its own database and secret on the shared stack.
pub struct TestApp<'s> {
    pub stack: &'s Stack,
    pub db: TestDb<'s>,
    pub sdk: SdkConfig,
}

impl TestApp<'static> {
    /// A new database and secret on the stack shared by all tests.
    pub async fn new() -> TestApp<'static> {
        TestApp::on(Stack::shared()).await
    }
}

impl<'s> TestApp<'s> {
    /// A new database and secret on `stack` (a test's own stack, for tests that break it).
    pub async fn on(stack: &'s Stack) -> TestApp<'s> {
        TestApp::with_schema(stack, SCHEMA).await
    }

    /// A new database made by `schema_sql` (instead of sql/schema.sql) and secret on `stack`.
    pub async fn with_schema(stack: &'s Stack, schema_sql: &str) -> TestApp<'s> {
        init_logs();
        let db = stack.new_database(schema_sql);
        let sdk = local_stack::kit::sdk_config(&stack.moto.endpoint()).await;
        TestApp { stack, db, sdk }
    }

    /// The configuration the function would read from its environment in this test.
    pub fn env(&self) -> HashMap<&'static str, String> {
        HashMap::from([
            ("DB_SECRET_ID", self.db.secret_id.clone()),
            (
                "DB_CA_FILE",
                self.stack.certs.ca_pem.to_string_lossy().into_owned(),
            ),
        ])
    }

    pub fn config(&self) -> Config {
        config_from(&self.env())
    }

    /// A cold start of one execution environment.
    pub async fn start(&self) -> App {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> App {
        App::init(config, &self.sdk).await.expect("cold start")
    }

    /// `SELECT` on this test's database as the superuser, one line per row, `|` between columns.
    pub fn query(&self, sql: &str) -> Vec<String> {
        self.db
            .admin_psql(sql)
            .lines()
            .map(str::to_owned)
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// A superuser session in the test's database over PostgreSQL's unix socket, for what a
    /// `psql` process cannot do: hold a transaction open while the test goes on.
    pub async fn admin_session(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.stack.pg.socket_dir())
            .port(self.stack.pg.port())
            .user("postgres")
            .dbname(&self.db.name)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("an admin session");
        tokio::spawn(async move { drop(connection.await) });
        client
    }

    pub fn count_users(&self) -> usize {
        self.query("SELECT count(*) FROM public.users")[0]
            .parse()
            .expect("a count")
    }
}

pub fn config_from(env: &HashMap<&'static str, String>) -> Config {
    Config::from_lookup(|name| env.get(name).cloned()).expect("valid test configuration")
}

/// Invokes the handler as the Lambda runtime would, with Cognito's 5-second deadline.
pub async fn invoke(app: &App, event: Value) -> Result<Value, Failure> {
    invoke_with_deadline(app, event, Duration::from_secs(5)).await
}

pub async fn invoke_with_deadline(
    app: &App,
    event: Value,
    budget: Duration,
) -> Result<Value, Failure> {
    let answer = invoke_json(app, &event.to_string(), budget).await?;
    Ok(serde_json::to_value(answer).expect("the answer is JSON"))
}

/// Invokes the handler with `json` as the runtime hands it over: text the handler reads itself.
pub async fn invoke_json(app: &App, json: &str, budget: Duration) -> Result<Answer, Failure> {
    let event = RawValue::from_string(json.to_owned()).expect("well-formed JSON");
    let mut context = Context::default();
    context.request_id = format!("req-{}", unique());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    context.deadline = now_ms + budget.as_millis() as u64;
    handler::handle(app, LambdaEvent::new(event, context)).await
}

pub fn event_file(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A sign-up confirmation for a new, unique user.
pub fn sign_up(
    sub: &str,
    email: &str,
    preferred_username: Option<&str>,
    name: Option<&str>,
) -> Value {
    let mut attributes = serde_json::json!({"sub": sub, "email": email, "email_verified": "true"});
    if let Some(handle) = preferred_username {
        attributes["preferred_username"] = handle.into();
    }
    if let Some(name) = name {
        attributes["name"] = name.into();
    }
    local_stack::kit::sign_up_event(&format!("user-{sub}"), attributes)
}

/// A sign-up confirmation for a new user with only `sub` and `email`.
pub fn new_user() -> Value {
    let sub = format!("sub-{}", unique());
    sign_up(&sub, &format!("{sub}@example.com"), None, None)
}

/// 2048 distinct four-byte characters (8 KiB) that do not compress: Cognito's longest value, in
/// a script where it takes the most bytes (more than a btree index entry may hold).
pub fn widest_value() -> String {
    (0..2048)
        .filter_map(|i| char::from_u32(0x20000 + i * 7919 % 0xA6D0))
        .collect()
}

/// What `count` gives once two reads `every` apart agree (a count something else is still
/// catching up on), or its last read after `within`.
pub async fn settled<F, Fut>(mut count: F, every: Duration, within: Duration) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let until = std::time::Instant::now() + within;
    let mut last = count().await;
    loop {
        tokio::time::sleep(every).await;
        let now = count().await;
        if now == last || std::time::Instant::now() > until {
            return now;
        }
        last = now;
    }
}

/// A process-unique suffix.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The function's logs in each test's captured output (shown when it fails); `RUST_LOG` filters.
fn init_logs() {
    use tracing_subscriber::{EnvFilter, fmt};
    let _ = fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}
