//! The backfill against moto's Cognito and the real local stack (TLS PostgreSQL behind PgBouncer,
//! credentials from moto's Secrets Manager), run as the real binary.

// A test crate: its helpers panic with the reason, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::Client as Cognito;
use aws_sdk_cognitoidentityprovider::types::{AttributeType, MessageActionType};
use cognito_backfill::{CREDENTIALS_TIMEOUT, Database, Fatal, parse_args};
use cognito_post_confirmation::app::SERIALIZATION_RETRIES;
use cognito_post_confirmation::credentials::Login;
use cognito_post_confirmation::user::NewUser;
use cognito_post_confirmation::{App, Config, handler, tls};
use lambda_context::invoke;
use local_stack::iam::IamVerifier;
use local_stack::kit::{SECRET_KEY, conflict_first, insert_attempts};
use local_stack::{Stack, TestDb};
use tokio_postgres_rustls::MakeRustlsConnect;

/// One test's world: a database and secret on a stack (the shared one unless a test stops a
/// server), and a user pool in moto.
struct World<'s> {
    stack: &'s Stack,
    db: TestDb<'s>,
    cognito: Cognito,
    pool: String,
}

/// Users by kind, as created in the pool.
#[derive(Default)]
struct Population {
    /// CONFIRMED with an email: each must end as exactly one row.
    confirmed: Vec<String>,
    /// FORCE_CHANGE_PASSWORD (created by an administrator, never signed in).
    unconfirmed: Vec<String>,
    /// CONFIRMED but without an email.
    no_email: Vec<String>,
}

impl<'s> World<'s> {
    async fn new() -> World<'static> {
        World::on(Stack::shared()).await
    }

    async fn on(stack: &'s Stack) -> World<'s> {
        let db = stack.new_database(local_stack::SCHEMA);
        let cognito = Cognito::new(&local_stack::kit::sdk_config(&stack.moto.endpoint()).await);
        let pool = cognito
            .create_user_pool()
            .pool_name(&db.name)
            .send()
            .await
            .expect("user pool")
            .user_pool()
            .and_then(|p| p.id())
            .expect("pool id")
            .to_owned();
        World {
            stack,
            db,
            cognito,
            pool,
        }
    }

    async fn add_user(&self, username: &str, attributes: &[(&str, &str)], confirm: bool) {
        self.cognito
            .admin_create_user()
            .user_pool_id(&self.pool)
            .username(username)
            .set_user_attributes(Some(
                attributes
                    .iter()
                    .map(|(k, v)| {
                        AttributeType::builder()
                            .name(*k)
                            .value(*v)
                            .build()
                            .expect("attribute")
                    })
                    .collect(),
            ))
            .message_action(MessageActionType::Suppress)
            .send()
            .await
            .expect("AdminCreateUser");
        if confirm {
            self.cognito
                .admin_set_user_password()
                .user_pool_id(&self.pool)
                .username(username)
                .password("Correct-Horse-9")
                .permanent(true)
                .send()
                .await
                .expect("AdminSetUserPassword");
        }
    }

    /// `confirmed` confirmed users with an email (every third with a name, every other with a
    /// preferred_username), `unconfirmed` administrator-created ones, `no_email` confirmed ones
    /// without an email.
    async fn populate(&self, confirmed: usize, unconfirmed: usize, no_email: usize) -> Population {
        let mut population = Population::default();
        for n in 0..confirmed {
            let username = format!("user{n:04}");
            let email = format!("{username}@example.com");
            let handle = format!("handle{n}");
            let name = format!("Name {n}");
            let mut attributes = vec![("email", email.as_str())];
            if n % 2 == 0 {
                attributes.push(("preferred_username", handle.as_str()));
            }
            if n % 3 == 0 {
                attributes.push(("name", name.as_str()));
            }
            self.add_user(&username, &attributes, true).await;
            population.confirmed.push(username);
        }
        for n in 0..unconfirmed {
            let username = format!("pending{n:04}");
            let email = format!("{username}@example.com");
            self.add_user(&username, &[("email", email.as_str())], false)
                .await;
            population.unconfirmed.push(username);
        }
        for n in 0..no_email {
            let username = format!("noemail{n:04}");
            self.add_user(&username, &[("name", "No Email")], true)
                .await;
            population.no_email.push(username);
        }
        population
    }

    /// Every user's Cognito attributes (including the generated `sub`), by username.
    async fn attributes(&self) -> HashMap<String, HashMap<String, String>> {
        let mut all = HashMap::new();
        let mut token = None;
        loop {
            let page = self
                .cognito
                .list_users()
                .user_pool_id(&self.pool)
                .set_pagination_token(token)
                .send()
                .await
                .expect("ListUsers");
            for user in page.users() {
                let attributes = user
                    .attributes()
                    .iter()
                    .filter_map(|a| Some((a.name().to_owned(), a.value()?.to_owned())))
                    .collect();
                all.insert(user.username().expect("username").to_owned(), attributes);
            }
            match page.pagination_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return all,
            }
        }
    }

    /// The backfill binary, configured for this world (the function's environment plus moto's
    /// Cognito), for this pool.
    fn backfill_command(&self, extra: &[&str]) -> Command {
        self.backfill_command_with(self.db.env(), extra)
    }

    /// The backfill binary with the function's environment `env` (moto's Cognito added).
    fn backfill_command_with(&self, env: Vec<(&str, String)>, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cognito-backfill"));
        command
            .env_clear()
            .envs(env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER",
                self.stack.moto.endpoint(),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--user-pool-id", &self.pool])
            .args(extra);
        command
    }

    fn backfill(&self, extra: &[&str]) -> Output {
        self.backfill_command(extra)
            .output()
            .expect("cognito-backfill runs")
    }

    /// The function's environment when it logs in through `verifier` with an IAM token: no
    /// secret, the test credentials and region the verifier checks tokens against.
    fn iam_env(&self, verifier: &IamVerifier) -> Vec<(&'static str, String)> {
        let mut env = self.db.env();
        env.retain(|(key, _)| *key != "DB_SECRET_ID");
        env.retain(|(key, _)| !verifier.env.iter().any(|(set, _)| set == key));
        env.extend(verifier.env.iter().cloned());
        env
    }

    fn query(&self, sql: &str) -> Vec<String> {
        self.db
            .admin_psql(sql)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn rows(&self) -> usize {
        self.query("SELECT count(*) FROM public.users")[0]
            .parse()
            .expect("count")
    }

    /// The function itself, as an execution environment of this world.
    async fn trigger(&self) -> App {
        App::init(
            config(&self.db.env()),
            &local_stack::kit::sdk_config(&self.stack.moto.endpoint()).await,
        )
        .await
        .expect("cold start")
    }

    /// A backfill run's database side, opened with the function's environment `env`.
    async fn open_database(&self, env: &[(&str, String)]) -> Database {
        let opened = self.try_open_database(env, CREDENTIALS_TIMEOUT).await;
        opened.expect("connected")
    }

    /// [`World::open_database`], getting credentials within `credentials_timeout`.
    async fn try_open_database(
        &self,
        env: &[(&str, String)],
        credentials_timeout: Duration,
    ) -> Result<Database, Fatal> {
        let config = config(env);
        let sdk = local_stack::kit::sdk_config(&self.stack.moto.endpoint()).await;
        let login = Login::new(&config, &sdk).expect("login");
        let tls = MakeRustlsConnect::new(tls::client_config(&config.extra_cas).expect("TLS"));
        Database::open(login, config, tls, credentials_timeout).await
    }

    /// Runs the backfill over this pool on `database`.
    async fn run_on(&self, database: &mut Database) -> Result<cognito_backfill::Report, Fatal> {
        let options = parse_args(["cognito-backfill", "--user-pool-id", &self.pool]).expect("args");
        cognito_backfill::run(&options, &self.cognito, database, |_| {}).await
    }
}

/// The function's configuration from the environment `env`.
fn config(env: &[(&str, String)]) -> Config {
    Config::from_lookup(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
        .expect("config")
}

/// A PostConfirmation event for a user as Cognito would send it.
fn sign_up_event(username: &str, attributes: &HashMap<String, String>) -> serde_json::Value {
    local_stack::kit::sign_up_event(username, serde_json::json!(attributes))
}

mod lambda_context {
    use super::*;
    use lambda_runtime::{Context, LambdaEvent};

    pub async fn invoke(app: &App, event: serde_json::Value) {
        let mut context = Context::default();
        context.request_id = "backfill-test".to_owned();
        let event = serde_json::value::to_raw_value(&event).expect("JSON");
        handler::handle(app, LambdaEvent::new(event, context))
            .await
            .expect("the trigger records the user");
    }
}

/// How old a token the IAM verifier accepts, when age is not what a test is about.
const MAX_AGE: Duration = Duration::from_secs(900);

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn count(output: &Output, label: &str) -> u64 {
    let text = stdout(output);
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no `{label}` in:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[tokio::test]
async fn records_every_confirmed_user_once_across_pages_and_repeated_runs() {
    let world = World::new().await;
    let population = world.populate(180, 40, 30).await;
    let attributes = world.attributes().await;

    // Some users were recorded by the trigger already.
    let trigger = world.trigger().await;
    for username in population.confirmed.iter().take(60) {
        invoke(&trigger, sign_up_event(username, &attributes[username])).await;
    }
    let recorded_before =
        world.query("SELECT cognito_user_id, created_at FROM public.users ORDER BY 1");

    let first = world.backfill(&["--page-size", "25"]);
    assert!(first.status.success(), "{first:?}");
    assert_eq!(count(&first, "users seen:"), 250);
    assert_eq!(count(&first, "already present:"), 60);
    assert_eq!(count(&first, "inserted:"), 120);
    assert_eq!(count(&first, "skipped:"), 70);
    assert_eq!(count(&first, "failed:"), 0);
    let text = stdout(&first);
    assert!(
        text.contains("    40  status FORCE_CHANGE_PASSWORD"),
        "{text}"
    );
    assert!(
        text.contains("    30  the `email` attribute is missing or empty"),
        "{text}"
    );
    // Each confirmed user who gets no row is named by `sub`, for the operator to follow up.
    let errors = String::from_utf8_lossy(&first.stderr);
    for username in &population.no_email {
        let sub = &attributes[username]["sub"];
        let line =
            format!("backfill: sub {sub} skipped: the `email` attribute is missing or empty");
        assert!(errors.contains(&line), "{line} in:\n{errors}");
    }
    assert_eq!(
        errors.matches(" skipped: ").count(),
        population.no_email.len()
    );
    assert!(!errors.contains("noemail"), "no username: {errors}");

    // Exactly one row per confirmed user with an email, mapped as the trigger maps it, and the
    // rows the trigger wrote untouched.
    assert_eq!(world.rows(), 180);
    for username in &population.confirmed {
        let expected =
            NewUser::from_attributes(Some(username), &attributes[username]).expect("user");
        assert_eq!(
            world.query(&format!(
                "SELECT email, handle, display_name FROM public.users WHERE cognito_user_id = '{}'",
                expected.sub
            )),
            vec![format!(
                "{}|{}|{}",
                expected.email, expected.handle, expected.display_name
            )]
        );
    }
    let subs: Vec<String> = population
        .confirmed
        .iter()
        .take(60)
        .map(|u| attributes[u]["sub"].clone())
        .collect();
    let still = world.query(&format!(
        "SELECT cognito_user_id, created_at FROM public.users WHERE cognito_user_id IN ('{}') ORDER BY 1",
        subs.join("','")
    ));
    assert_eq!(still, recorded_before);

    let second = world.backfill(&[]);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(count(&second, "already present:"), 180);
    assert_eq!(count(&second, "inserted:"), 0);
    assert_eq!(world.rows(), 180);
    // The users it skipped (never signed in; no email) have no row, after either run.
    let skipped: Vec<String> = population
        .unconfirmed
        .iter()
        .chain(&population.no_email)
        .map(|u| attributes[u]["sub"].clone())
        .collect();
    assert_eq!(skipped.len(), 70);
    assert_eq!(
        world.query(&format!(
            "SELECT count(*) FROM public.users WHERE cognito_user_id IN ('{}')",
            skipped.join("','")
        )),
        vec!["0"]
    );
}

#[tokio::test]
async fn a_dry_run_reports_and_writes_nothing_and_statuses_can_be_added() {
    let world = World::new().await;
    world.populate(30, 10, 0).await;
    let dry = world.backfill(&["--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    assert_eq!(count(&dry, "would insert:"), 30);
    assert_eq!(world.rows(), 0);

    let wider = world.backfill(&["--status", "CONFIRMED", "--status", "FORCE_CHANGE_PASSWORD"]);
    assert!(wider.status.success(), "{wider:?}");
    assert_eq!(count(&wider, "inserted:"), 40);
    assert_eq!(world.rows(), 40);
}

/// A user who confirmed and must now reset the password (`RESET_REQUIRED`) has confirmed: the
/// default run records them.
#[tokio::test]
async fn users_who_must_reset_their_password_are_recorded_by_default() {
    let world = World::new().await;
    let population = world.populate(3, 0, 0).await;
    // Cognito resets a password only for a user with a verified email.
    world
        .cognito
        .admin_update_user_attributes()
        .user_pool_id(&world.pool)
        .username(&population.confirmed[0])
        .user_attributes(
            AttributeType::builder()
                .name("email_verified")
                .value("true")
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("AdminUpdateUserAttributes");
    world
        .cognito
        .admin_reset_user_password()
        .user_pool_id(&world.pool)
        .username(&population.confirmed[0])
        .send()
        .await
        .expect("AdminResetUserPassword");
    let statuses: Vec<String> = world
        .cognito
        .list_users()
        .user_pool_id(&world.pool)
        .send()
        .await
        .expect("ListUsers")
        .users()
        .iter()
        .filter_map(|u| u.user_status().map(|s| s.as_str().to_owned()))
        .collect();
    assert!(
        statuses.iter().any(|s| s == "RESET_REQUIRED"),
        "{statuses:?}"
    );
    let output = world.backfill(&[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(count(&output, "inserted:"), 3);
    assert_eq!(count(&output, "skipped:"), 0);
    assert_eq!(world.rows(), 3);
}

#[tokio::test]
async fn running_while_the_trigger_inserts_the_same_users_leaves_one_row_each() {
    let world = World::new().await;
    let population = world.populate(150, 0, 0).await;
    let attributes = world.attributes().await;
    let trigger = world.trigger().await;

    let mut command = world.backfill_command(&["--page-size", "10"]);
    let backfill =
        tokio::task::spawn_blocking(move || command.output().expect("cognito-backfill runs"));
    // Meanwhile the trigger records the same users, from the last one backwards.
    for username in population.confirmed.iter().rev() {
        invoke(&trigger, sign_up_event(username, &attributes[username])).await;
    }
    let output = backfill.await.expect("backfill");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(count(&output, "failed:"), 0);
    assert_eq!(
        count(&output, "inserted:") + count(&output, "already present:"),
        150
    );
    assert_eq!(world.rows(), 150);
    assert_eq!(
        world.query("SELECT count(DISTINCT cognito_user_id) FROM public.users"),
        vec!["150"]
    );
}

/// With `DB_AUTH=rds-iam` or `dsql-iam` the backfill logs in as the function does, with an IAM
/// token (the stack's verifier checks it), and reads no secret.
#[tokio::test]
async fn logs_in_with_an_iam_token_in_both_iam_modes() {
    let world = World::new().await;
    world.populate(4, 0, 0).await;
    for (mode, expected) in [("rds-iam", 4), ("dsql-iam", 0)] {
        let verifier = IamVerifier::start(world.stack, &world.db, mode, SECRET_KEY, MAX_AGE, 0);
        let output = world
            .backfill_command_with(world.iam_env(&verifier), &[])
            .output()
            .expect("cognito-backfill runs");
        assert!(output.status.success(), "{mode}: {output:?}");
        assert_eq!(count(&output, "inserted:"), expected, "{mode}");
        assert_eq!(count(&output, "already present:"), 4 - expected, "{mode}");
        assert_eq!(
            verifier.decisions(),
            [format!("accepted {}", world.db.role)],
            "{mode}"
        );
    }
    assert_eq!(world.rows(), 4);
}

/// On an operator's machine the AWS credentials come from a profile: `credential_process` (the
/// one checked end to end here: the IAM token is signed with what it prints) and SSO both work,
/// neither refused for want of an SDK feature.
#[tokio::test]
async fn takes_its_aws_credentials_from_a_profile() {
    let world = World::new().await;
    world.populate(2, 0, 0).await;
    let dir = local_stack::scratch_dir("profile");
    let called = dir.path().join("called");
    let config = dir.path().join("config");
    let script = format!(
        "touch {}; echo '{{\"Version\": 1, \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"{SECRET_KEY}\"}}'",
        called.display()
    );
    std::fs::write(dir.path().join("creds.sh"), script).expect("creds.sh");
    let sso_cache = dir.path().join(".aws/sso/cache");
    std::fs::write(
        &config,
        format!(
            "[profile operator]\nregion = us-east-1\ncredential_process = sh {}/creds.sh\n\n\
             [profile sso]\nregion = us-east-1\nsso_start_url = https://example.invalid/start\n\
             sso_region = us-east-1\nsso_account_id = 111122223333\nsso_role_name = Operator\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let verifier = IamVerifier::start(world.stack, &world.db, "rds-iam", SECRET_KEY, MAX_AGE, 0);
    let with_profile = |profile: &str| {
        let mut env = world.iam_env(&verifier);
        env.retain(|(key, _)| !key.starts_with("AWS_ACCESS_KEY") && !key.starts_with("AWS_SECRET"));
        env.extend([
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", profile.to_owned()),
            ("HOME", dir.path().display().to_string()),
        ]);
        world
            .backfill_command_with(env, &[])
            .output()
            .expect("cognito-backfill runs")
    };

    let output = with_profile("operator");
    assert!(output.status.success(), "{output:?}");
    assert!(called.exists(), "the credential process ran");
    assert_eq!(count(&output, "inserted:"), 2);
    assert_eq!(
        verifier.decisions(),
        [format!("accepted {}", world.db.role)]
    );

    // No SSO login was made (no cached token): refused for that, not for a missing feature.
    std::fs::create_dir_all(&sso_cache).expect("sso cache");
    let output = with_profile("sso");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("cargo feature"), "{stderr}");
    assert!(
        stderr.contains(".aws/sso/cache"),
        "the SSO provider looked for its login: {stderr}"
    );
    assert_eq!(world.rows(), 2);
}

/// Tokens live 15 minutes, a backfill may run longer: when the token it holds is refused on a
/// new connection, it makes a new one (this verifier refuses tokens older than 3 s).
#[tokio::test]
async fn an_expired_token_is_replaced_on_the_next_connection() {
    let world = World::new().await;
    world.populate(3, 0, 0).await;
    let max_age = Duration::from_secs(3);
    let verifier = IamVerifier::start(world.stack, &world.db, "rds-iam", SECRET_KEY, max_age, 0);
    let mut database = world.open_database(&world.iam_env(&verifier)).await;

    // The token grows too old for the verifier, and the connection drops.
    std::thread::sleep(max_age + Duration::from_secs(1));
    verifier.stop();
    verifier.start();

    let report = world.run_on(&mut database).await.expect("the run finishes");
    assert_eq!((report.inserted, report.failed), (3, 0), "{report:?}");
    let decisions = verifier.decisions();
    let accepted = format!("accepted {}", world.db.role);
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[0], accepted);
    assert!(decisions[1].starts_with("rejected"), "{decisions:?}");
    assert_eq!(decisions[2], accepted);
    assert_eq!(world.rows(), 3);
}

/// A password rotated during a run: the next connection's login is refused, the backfill reads
/// the secret again and goes on. A secret that cannot be read then fails the user (the run goes
/// on); one that no longer matches the database stops the run at the next connection, rather
/// than failing every remaining user with a refused login.
#[tokio::test]
async fn a_rotated_password_is_read_again_and_a_wrong_one_stops_the_run() {
    let stack = Stack::start(); // its PgBouncer is restarted, to drop the backfill's connection
    let world = World::on(&stack).await;
    world.populate(3, 0, 0).await;
    let mut database = world.open_database(&world.db.env()).await;

    world.db.rotate_password("rotated-during-the-backfill");
    stack.bouncer.stop();
    stack.bouncer.start();
    let report = world.run_on(&mut database).await.expect("the run finishes");
    assert_eq!((report.inserted, report.failed), (3, 0), "{report:?}");
    assert_eq!(world.rows(), 3);

    // Rotated again, but the secret cannot be read back: each user fails, and the run goes on.
    world.db.rotate_password("rotated-again");
    (stack
        .moto
        .put_secret_value(&world.db.secret_id, "not the RDS secret format"))
    .expect("secret replaced");
    world
        .add_user("late", &[("email", "late@example.com")], true)
        .await;
    stack.bouncer.stop();
    stack.bouncer.start();
    let report = world.run_on(&mut database).await.expect("the run finishes");
    assert_eq!((report.seen, report.failed), (4, 4), "{report:?}");
    assert_eq!(world.rows(), 3);

    // A readable secret with a password the database no longer takes.
    world.db.put_secret_password("rotated-during-the-backfill");
    let stopped = world.run_on(&mut database).await;
    let Err(Fatal(error)) = stopped else {
        panic!("the run went on with a wrong secret: {stopped:?}")
    };
    assert!(
        error.contains("with the current credentials too"),
        "{error}"
    );
    assert!(error.contains("stopped: seen 1,"), "{error}");
    assert!(
        !error.contains("rotated"),
        "the password is never shown: {error}"
    );
    assert_eq!(world.rows(), 3);
}

/// A proxy that accepts connections and then stops answering (here: PgBouncer frozen with
/// SIGSTOP) holds no step of a run for longer than its timeouts: not the connection at the start
/// (exit 2), not an INSERT on an open connection, not the reconnect after it (each user fails and
/// the run goes on). Once the proxy answers again, a run records them.
#[tokio::test]
async fn a_database_that_stops_answering_fails_within_the_timeouts_and_never_hangs() {
    let stack = Stack::start(); // its PgBouncer is frozen
    let world = World::on(&stack).await;
    world.populate(2, 0, 0).await;
    let mut env = world.db.env();
    env.push(("DB_CONNECT_TIMEOUT_MS", "700".to_owned()));
    env.push(("DB_STATEMENT_TIMEOUT_MS", "900".to_owned()));
    let mut database = world.open_database(&env).await;
    let hung = Duration::from_secs(30);

    stack.bouncer.pause();
    let mut command = world.backfill_command_with(env.clone(), &[]);
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    while child.try_wait().expect("wait").is_none() {
        assert!(started.elapsed() < hung, "the backfill hung connecting");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no answer within 700ms"), "{stderr}");

    let run = tokio::time::timeout(hung, world.run_on(&mut database)).await;
    let report = run.expect("the run hung").expect("the run finishes");
    assert_eq!((report.seen, report.failed), (2, 2), "{report:?}");

    // Thawed, PgBouncer may still pass on the INSERT the first run abandoned (it was sent before
    // the connection was dropped): that user is then already present. Either way, one row each.
    stack.bouncer.resume();
    let report = world.run_on(&mut database).await.expect("the run finishes");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.inserted + report.already_present, 2, "{report:?}");
    assert_eq!(world.rows(), 2);
}

/// AWS that accepts the connection and never answers (here: moto frozen with SIGSTOP; the SDK
/// has no read timeout of its own) holds a run no longer than its timeouts: Secrets Manager at
/// the start (the credentials timeout), Cognito's `ListUsers` (the page timeout). Each stops the
/// run with a message that says what got no answer, and nothing is written.
#[tokio::test]
async fn aws_that_stops_answering_stops_the_run_within_its_timeouts() {
    let stack = Stack::start(); // its moto is frozen
    let world = World::on(&stack).await;
    world.populate(1, 0, 0).await; // a user a run would record
    let env = world.db.env();
    let mut database = world.open_database(&env).await;
    let mut options =
        parse_args(["cognito-backfill", "--user-pool-id", &world.pool]).expect("args");
    let limit = Duration::from_millis(800);
    options.page_timeout = limit;
    let hung = Duration::from_secs(30);
    stack.moto.pause();
    let opened = tokio::time::timeout(hung, world.try_open_database(&env, limit)).await;
    let run = cognito_backfill::run(&options, &world.cognito, &mut database, |_| {});
    let ran = tokio::time::timeout(hung, run).await;
    stack.moto.resume();

    let Err(Fatal(error)) = opened.expect("opening the database hung") else {
        panic!("connected without the secret")
    };
    assert_eq!(
        error,
        "getting the database credentials timed out after 800ms"
    );
    let Err(Fatal(error)) = ran.expect("the run hung") else {
        panic!("listed the users without Cognito")
    };
    let pool = &world.pool;
    assert_eq!(
        error,
        format!(
            "ListUsers on `{pool}` got no answer within 800ms; stopped: seen 0, already present 0, \
             inserted 0, skipped 0, failed 0"
        )
    );
    assert_eq!(world.rows(), 0);
}

/// Aurora DSQL refuses an INSERT that conflicts with a concurrent commit (SQLSTATE 40001): the
/// backfill tries it again, a bounded number of times, then counts the user as failed.
#[tokio::test]
async fn a_serialization_failure_is_retried_a_bounded_number_of_times() {
    let world = World::new().await;
    world.populate(2, 0, 0).await;
    // The first user conflicts on every try; the second on its first two.
    let conflicts = 1 + SERIALIZATION_RETRIES + 2;
    conflict_first(&world.db, conflicts);
    let output = world.backfill(&[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(count(&output, "inserted:"), 1);
    assert_eq!(count(&output, "failed:"), 1);
    assert_eq!(insert_attempts(&world.db), conflicts + 1);
    assert_eq!(world.rows(), 1);
}

#[tokio::test]
async fn a_pool_that_does_not_exist_fails_clearly() {
    let world = World {
        pool: "us-east-1_doesnotexist".to_owned(),
        ..World::new().await
    };
    let output = world.backfill(&[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ListUsers on `us-east-1_doesnotexist` failed"),
        "{stderr}"
    );
    assert!(stderr.contains("ResourceNotFound"), "{stderr}");
}

#[tokio::test]
async fn bad_arguments_exit_2_with_usage() {
    let world = World::new().await;
    world.populate(1, 0, 0).await; // a user a run would record
    let output = world.backfill(&["--page-size", "500"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("500 is not in 1..=60") && stderr.contains("try '--help'"),
        "{stderr}"
    );
    assert_eq!(world.rows(), 0);

    let typo = world.backfill(&["--status", "CONFIRMD"]);
    assert_eq!(typo.status.code(), Some(2), "{typo:?}");
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains(
            "invalid value 'CONFIRMD' for '--status <STATUS>': unknown status; Cognito's statuses \
             are ARCHIVED, COMPROMISED,"
        ),
        "{stderr}"
    );
    assert_eq!(world.rows(), 0);
}

/// A configuration the function would refuse (here: no DB_SECRET_ID and no DB_AUTH) stops the run
/// before it starts: exit 2, the variable named, nothing written.
#[tokio::test]
async fn a_bad_configuration_exits_2_naming_the_variable() {
    let world = World::new().await;
    world.populate(1, 0, 0).await; // a user a run would record
    let env: Vec<_> = (world.db.env().into_iter())
        .filter(|(key, _)| *key != "DB_SECRET_ID")
        .collect();
    let output = world
        .backfill_command_with(env, &[])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("cognito-backfill: "), "{stderr}");
    assert!(stderr.contains("DB_SECRET_ID"), "{stderr}");
    assert_eq!(world.rows(), 0);
}

/// `--help` behaves as in the other tools (clap): the usage on standard output, exit 0.
#[test]
fn help_prints_the_usage_and_succeeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_cognito-backfill"))
        .arg("--help")
        .output()
        .expect("cognito-backfill runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("Usage: cognito-backfill"), "{text}");
    assert!(text.contains("--status <STATUS>"), "{text}");
}
