//! Production's faults, driven for real: dropped connections, restarts, rotation, outages, locks,
//! an unreachable Secrets Manager. Each test that breaks something breaks its own stack.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cognito_post_confirmation::App;
use cognito_post_confirmation::app::ANSWER_AFTER_IDLE;
use local_stack::Stack;

use crate::helpers::{TestApp, invoke, invoke_with_deadline, new_user, settled, unique};

/// Cognito gives the whole call 5 s; a failure must be reported well inside that.
const COGNITO_BUDGET: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_connection_dropped_by_the_proxy_is_replaced_on_the_next_invocation() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let app = test.start().await;
    invoke(&app, new_user()).await.expect("first");
    // The proxy goes away and comes back between two warm invocations: the function's connection
    // is dead, though nothing has told it yet.
    stack.bouncer.stop();
    stack.bouncer.start();
    invoke(&app, new_user())
        .await
        .expect("after the proxy restarted");
    invoke(&app, new_user()).await.expect("and after that");
    assert_eq!(
        app.connections_opened(),
        2,
        "one at cold start, one after the restart"
    );
    assert_eq!(test.count_users(), 3);
}

/// Something between the function and the database (a firewall past its TCP idle timeout; a NAT
/// gateway or a load balancer would send a reset instead) forgets the connection while the
/// function is idle, and tells neither side: the INSERT sent on it gets no answer and no reset.
/// The connection sat unused long enough for that, so the function gives it up after
/// `ANSWER_AFTER_IDLE` (not `DB_STATEMENT_TIMEOUT_MS`) and writes the row on a new one.
#[tokio::test]
async fn a_connection_forgotten_while_idle_is_replaced_inside_the_deadline() {
    let test = TestApp::new().await;
    let statement_timeout = Duration::from_millis(2000);
    let (relay, app) = through_relay(&test, statement_timeout).await;
    invoke(&app, new_user()).await.expect("first");
    let app = app.with_forgettable_after(Duration::from_millis(200));

    std::thread::sleep(Duration::from_millis(300));
    relay.forget_open_connections();
    let started = Instant::now();
    invoke(&app, new_user())
        .await
        .expect("written on a new connection");
    let took = started.elapsed();
    assert!(
        took < statement_timeout,
        "gave the idle connection {ANSWER_AFTER_IDLE:?}, not the statement's cap: took {took:?}"
    );
    assert_eq!(
        app.connections_opened(),
        2,
        "the forgotten one was replaced"
    );
    invoke(&app, new_user()).await.expect("and after that");
    assert_eq!(app.connections_opened(), 2, "and the new one kept");
    assert_eq!(test.count_users(), 3);
}

/// The same, but nothing answers any more, new connections included: one new connection is
/// tried, not more, and the call fails with `Timeout` inside the deadline.
#[tokio::test]
async fn a_forgotten_connection_is_retried_once_and_the_failure_comes_inside_the_deadline() {
    let (accepted, _) = when_nothing_answers(Some(Duration::ZERO), Duration::from_secs(3)).await;
    assert_eq!(
        accepted, 3,
        "the cold start's connection, the cancel request, and one new connection"
    );
}

/// A connection used a moment ago that goes unanswered is a slow database or proxy, not a
/// forgotten connection: the function waits `DB_STATEMENT_TIMEOUT_MS` and opens no second one
/// (which would only add a session waiting on the same lock).
#[tokio::test]
async fn no_answer_on_a_connection_just_used_is_not_retried() {
    let (accepted, took) = when_nothing_answers(None, Duration::from_secs(3)).await;
    assert_eq!(
        accepted, 2,
        "the cold start's connection and the cancel request, no new connection"
    );
    assert!(
        took >= NOTHING_ANSWERS_CAP,
        "waited the whole DB_STATEMENT_TIMEOUT_MS ({NOTHING_ANSWERS_CAP:?}), not {ANSWER_AFTER_IDLE:?}: took {took:?}"
    );
}

/// A connection unused for long enough, but too little of the deadline left to try a new one
/// (less than the idle connection got): no second connection.
#[tokio::test]
async fn a_forgotten_connection_is_not_retried_without_time_for_it() {
    // 800 ms after the margin: the idle connection's 500 ms leave less than 500 ms.
    let (accepted, _) = when_nothing_answers(Some(Duration::ZERO), Duration::from_secs(1)).await;
    assert_eq!(
        accepted, 2,
        "the cold start's connection and the cancel request, no new connection"
    );
}

/// `DB_STATEMENT_TIMEOUT_MS` in [`when_nothing_answers`]: three times [`ANSWER_AFTER_IDLE`], so
/// that which of the two caps an INSERT got shows.
const NOTHING_ANSWERS_CAP: Duration = Duration::from_millis(1500);

/// After one invocation through a [`Relay`] (INSERT capped at [`NOTHING_ANSWERS_CAP`],
/// connections forgettable after `forgettable_after` if given), nothing answers any more: the
/// next invocation, with `budget`, must fail with `Timeout` inside it and write nothing. Returns
/// how many connections the relay accepted in all, and how long the failing invocation took.
async fn when_nothing_answers(
    forgettable_after: Option<Duration>,
    budget: Duration,
) -> (usize, Duration) {
    let test = TestApp::new().await;
    let (relay, mut app) = through_relay(&test, NOTHING_ANSWERS_CAP).await;
    // Set after the first invocation, which would otherwise get only ANSWER_AFTER_IDLE on the
    // cold start's connection: a slow machine would then open a second one.
    invoke(&app, new_user()).await.expect("first");
    if let Some(idle) = forgettable_after {
        app = app.with_forgettable_after(idle);
    }

    relay.forget_everything();
    let started = Instant::now();
    let error = invoke_with_deadline(&app, new_user(), budget)
        .await
        .expect_err("nothing answers");
    let took = started.elapsed();
    assert_eq!(error.error_type(), "Timeout", "{error}");
    assert!(took < budget, "took {took:?}");
    assert_eq!(test.count_users(), 1);
    (relay.settled_accepted().await, took)
}

/// A cold start through a [`Relay`] to PostgreSQL, the INSERT capped at `statement_timeout`.
async fn through_relay(test: &TestApp<'_>, statement_timeout: Duration) -> (Relay, App) {
    let relay = Relay::to(test.stack.pg.port());
    let mut env = test.env();
    env.insert("DB_PORT", relay.port.to_string());
    let cap = statement_timeout.as_millis().to_string();
    env.insert("DB_STATEMENT_TIMEOUT_MS", cap);
    let app = test.start_with(crate::helpers::config_from(&env)).await;
    (relay, app)
}

/// A TCP relay to a local port that can forget its connections without telling either side, as
/// a firewall past its idle timeout does: what is sent on a forgotten connection is dropped, and
/// nothing is closed or reset (until one side closes).
struct Relay {
    port: u16,
    /// Connections accepted before the `forgotten` one was bumped are forgotten.
    forgotten: Arc<AtomicUsize>,
    everything: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    fn to(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let relay = Relay {
            port: listener.local_addr().expect("addr").port(),
            forgotten: Arc::default(),
            everything: Arc::default(),
            accepted: Arc::default(),
        };
        let (forgotten, everything, accepted) = (
            relay.forgotten.clone(),
            relay.everything.clone(),
            relay.accepted.clone(),
        );
        // The threads end with the test binary; each connection's end with its sockets.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let generation = forgotten.load(Ordering::SeqCst);
                let both = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ];
                for (mut from, mut to) in both {
                    let (forgotten, everything) = (forgotten.clone(), everything.clone());
                    std::thread::spawn(move || {
                        let mut buffer = [0; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            let remembered = forgotten.load(Ordering::SeqCst) == generation
                                && !everything.load(Ordering::SeqCst);
                            if remembered && to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        // Closed on one side: close the other (tidiness; the test is over then).
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        relay
    }

    /// Every connection open now is forgotten; new ones are relayed.
    fn forget_open_connections(&self) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
    }

    /// Every connection, open now or made later, is forgotten.
    fn forget_everything(&self) {
        self.everything.store(true, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// [`Relay::accepted`] once it stays the same for 250 ms: the relay counts a connection when
    /// its thread gets to it, after the client's connect has returned.
    async fn settled_accepted(&self) -> usize {
        let every = Duration::from_millis(250);
        settled(|| async { self.accepted() }, every, Duration::from_secs(5)).await
    }
}

/// Straight to PostgreSQL, as to an RDS instance without a proxy: a restart ends the function's
/// connection (behind PgBouncer it would not: the proxy reconnects on its own), so the next
/// invocation must notice and open a new one.
#[tokio::test]
async fn a_database_restart_is_survived_without_restarting_the_function() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let mut env = test.env();
    env.insert("DB_PORT", stack.pg.port().to_string());
    let app = test.start_with(crate::helpers::config_from(&env)).await;
    invoke(&app, new_user()).await.expect("first");
    assert_eq!(app.connections_opened(), 1);
    stack.pg.stop();
    stack.pg.start();
    invoke(&app, new_user())
        .await
        .expect("after the database restarted");
    assert_eq!(app.connections_opened(), 2, "the function reconnected");
    invoke(&app, new_user()).await.expect("and after that");
    assert_eq!(app.connections_opened(), 2, "and kept the new connection");
    assert_eq!(test.count_users(), 3);
}

/// After a failover or a blue/green switchover, a connection made straight to a cluster endpoint
/// whose DNS had not caught up reaches the old writer, which takes no writes now (SQLSTATE 25006).
/// The function gives that connection up and tries once more on a new one, rather than keeping
/// it and failing every later invocation of the execution environment. Here the role's sessions
/// are read-only while the cold start connects, and writable afterwards.
#[tokio::test]
async fn a_connection_to_a_server_that_takes_no_writes_is_replaced() {
    let test = TestApp::new().await;
    let app = start_read_only(&test).await;
    test.query(&format!(
        "ALTER ROLE \"{}\" RESET default_transaction_read_only",
        test.db.role
    ));
    invoke(&app, new_user())
        .await
        .expect("written on a new connection");
    assert_eq!(
        app.connections_opened(),
        2,
        "the read-only one was replaced"
    );
    invoke(&app, new_user()).await.expect("and after that");
    assert_eq!(app.connections_opened(), 2, "and the new one kept");
    assert_eq!(test.count_users(), 2);
}

/// The same, but the new connection reaches a server that takes no writes too (DNS has not caught
/// up yet): one new connection, not more, and the call fails as an outage that names 25006.
#[tokio::test]
async fn a_second_connection_that_takes_no_writes_fails_as_an_outage() {
    let test = TestApp::new().await;
    let app = start_read_only(&test).await;
    let error = invoke(&app, new_user()).await.expect_err("read-only twice");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    let cause = error.cause().to_string();
    assert!(cause.contains("25006"), "{cause}");
    assert_eq!(
        app.connections_opened(),
        2,
        "the cold start's and one new one"
    );
    assert_eq!(test.count_users(), 0);
}

/// A cold start straight to PostgreSQL with the test role's sessions made read-only, as on a
/// server that takes no writes (until the caller resets `default_transaction_read_only`).
async fn start_read_only(test: &TestApp<'_>) -> App {
    let mut env = test.env();
    env.insert("DB_PORT", test.stack.pg.port().to_string());
    test.query(&format!(
        "ALTER ROLE \"{}\" SET default_transaction_read_only = on",
        test.db.role
    ));
    test.start_with(crate::helpers::config_from(&env)).await
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_next_invocation_after_recovery_succeeds() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let app = test.start().await;
    invoke(&app, new_user()).await.expect("first");

    stack.bouncer.stop();
    let started = Instant::now();
    let error = invoke(&app, new_user()).await.expect_err("proxy down");
    let took = started.elapsed();
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    // At once: refused, not given up on after the connect timeout.
    let connect_timeout = test.config().connect_timeout;
    assert!(took < connect_timeout, "took {took:?}");

    stack.bouncer.start();
    invoke(&app, new_user()).await.expect("after recovery");
    assert_eq!(test.count_users(), 2);
}

/// RDS Proxy stays up while the database behind it is down (a failover, a restart): the proxy
/// accepts the login and queues the transaction (PgBouncer's query_wait_timeout, like RDS Proxy's
/// ConnectionBorrowTimeout, is 120 s). The invocation's own deadline must end the wait.
#[tokio::test]
async fn the_database_down_behind_a_live_proxy_times_out_inside_the_deadline() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let app = test.start().await;
    invoke(&app, new_user()).await.expect("first");

    stack.pg.stop();
    let started = Instant::now();
    let unlucky = new_user();
    let error = invoke(&app, unlucky.clone())
        .await
        .expect_err("database down");
    let took = started.elapsed();
    // The README promises Timeout here: the proxy accepts the login and holds the transaction.
    assert_eq!(
        error.error_type(),
        "Timeout",
        "{error:?}: {}",
        error.cause()
    );
    assert!(took < COGNITO_BUDGET, "took {took:?}");

    stack.pg.start();
    // PgBouncer, like RDS Proxy, takes a moment to log in to the database again
    // (server_login_retry); "back" means reachable through the proxy.
    wait_until_reachable_through_the_proxy(&test);
    invoke(&app, new_user())
        .await
        .expect("after the database came back");
    // The function closed its connection, so the proxy threw the queued INSERT away instead of
    // running it once the database was back.
    let sub = unlucky["request"]["userAttributes"]["sub"]
        .as_str()
        .expect("sub");
    let unlucky_rows = format!("SELECT count(*) FROM public.users WHERE cognito_user_id = '{sub}'");
    assert_eq!(
        test.query(&unlucky_rows),
        vec!["0"],
        "the queued INSERT ran"
    );
    // The backfill's (or a parked replay's) INSERT of that user lands it exactly once.
    invoke(&app, unlucky).await.expect("the retry");
    assert_eq!(test.count_users(), 3);
    assert_eq!(
        test.query("SELECT count(DISTINCT cognito_user_id) FROM public.users"),
        vec!["3"]
    );
}

fn wait_until_reachable_through_the_proxy(test: &TestApp<'_>) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if test.db.psql_as_app("SELECT 1").is_ok() {
            return;
        }
        assert!(
            Instant::now() < until,
            "the proxy never served the database again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_cold_start_during_an_outage_recovers_without_a_restart() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    stack.bouncer.stop();
    let app = test.start().await; // must not fail: the outage may end before the first call
    let error = invoke(&app, new_user()).await.expect_err("proxy down");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    stack.bouncer.start();
    invoke(&app, new_user()).await.expect("after recovery");
    assert_eq!(test.count_users(), 1);
}

/// A server that accepts connections and never answers (a black hole): the connect is bounded
/// by `DB_CONNECT_TIMEOUT_MS` (here, inside a 2 s budget), not by the kernel's TCP timeouts. (The
/// deadline's bound, shorter than the connect cap: `parking.rs`, the hung proxy.)
#[tokio::test]
async fn a_server_that_never_answers_times_out_inside_the_deadline() {
    let test = TestApp::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let mut env = test.env();
    env.insert("DB_PORT", port.to_string());
    let app = test.start_with(crate::helpers::config_from(&env)).await;
    let started = Instant::now();
    let error = invoke_with_deadline(&app, new_user(), Duration::from_secs(2))
        .await
        .expect_err("black hole");
    let took = started.elapsed();
    assert_eq!(error.error_type(), "Timeout", "{error}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(listener);
}

#[tokio::test]
async fn nothing_listening_fails_fast_with_a_connection_error() {
    let test = TestApp::new().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.local_addr().expect("addr").port()
    };
    let mut env = test.env();
    env.insert("DB_PORT", port.to_string());
    let config = crate::helpers::config_from(&env);
    let connect_timeout = config.connect_timeout;
    let app = test.start_with(config).await;
    let started = Instant::now();
    let error = invoke(&app, new_user()).await.expect_err("refused");
    let took = started.elapsed();
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(took < connect_timeout, "refused at once, took {took:?}");
    // The operator's log names the endpoint; what Cognito shows the app names nothing.
    assert!(
        error
            .cause()
            .to_string()
            .contains(&format!("localhost:{port}")),
        "{error}"
    );
    let public = error.to_string();
    let (sentence, reference) = public
        .split_once(" (")
        .expect("sentence (type, request id)");
    assert_eq!(
        sentence,
        "The account could not be recorded just now. Please try again later."
    );
    assert!(
        reference.starts_with("DatabaseConnectionError, request req-"),
        "{public}"
    );
}

#[tokio::test]
async fn a_blocked_insert_times_out_at_the_deadline_is_rolled_back_and_the_next_invocation_is_healthy()
 {
    // Its own stack: the cancel request the function sends can take PgBouncer 1.18 down (see
    // below), and the shared one serves every other test.
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let app = test.start().await;
    let user = new_user();

    // Another session holds a lock on the table, so the INSERT blocks.
    let admin = format!(
        "host={} port={} user=postgres dbname={}",
        stack.pg.socket_dir().display(),
        stack.pg.port(),
        test.db.name
    );
    let mut locker = Command::new("psql")
        .arg(admin)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut stdin = locker.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "BEGIN; LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
    )
    .expect("lock");
    stdin.flush().expect("flush");
    wait_for_lock(&test);

    let started = Instant::now();
    let error = invoke_with_deadline(&app, user.clone(), Duration::from_millis(1500))
        .await
        .expect_err("blocked");
    let took = started.elapsed();
    assert_eq!(error.error_type(), "Timeout", "{error}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // The abandoned INSERT ends on the server while the lock is still held: the role's
    // statement_timeout (sql/app-role.sql) cancels it and rolls it back.
    wait_until_no_insert_is_running(&test);
    // Release the lock; the cancelled INSERT must not have landed, and Cognito's retry lands once.
    writeln!(stdin, "ROLLBACK;").expect("unlock");
    drop(stdin);
    locker.wait().expect("psql exits");
    assert_eq!(
        test.count_users(),
        0,
        "the cancelled INSERT was rolled back"
    );
    // PgBouncer 1.18 (Debian's) sometimes dies of the cancel request the function sent (fixed
    // in 1.19: pgbouncer#801, #822); RDS Proxy does not. Bring the stand-in back (the test's
    // output says so) so that what is tested is the function.
    if !stack.bouncer.is_running() {
        eprintln!("PgBouncer died after the cancel request (1.18 bug); restarting it");
        stack.bouncer.start();
    }
    invoke(&app, user.clone())
        .await
        .expect("retry after the lock");
    invoke(&app, user).await.expect("second retry");
    assert_eq!(test.count_users(), 1);
}

fn wait_until_no_insert_is_running(test: &TestApp<'_>) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let running = test.query(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' \
             AND state <> 'idle' AND query LIKE 'INSERT INTO public.users%'",
            test.db.role
        ));
        if running == vec!["0".to_owned()] {
            return;
        }
        assert!(
            Instant::now() < until,
            "the abandoned INSERT is still running on the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_lock(test: &TestApp<'_>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let held = test.query(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        );
        if held == vec!["1".to_owned()] {
            return;
        }
        assert!(Instant::now() < until, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A warm function on `stack` (one user written), then a rotation as Secrets Manager's rotation
/// function does it (the database first, then the secret), then the proxy restarted: it drops
/// idle clients, so the next call must log in again. Returns the new password.
async fn warm_then_rotated(stack: &Stack) -> (TestApp<'_>, App, String) {
    let test = TestApp::on(stack).await;
    let app = test.start().await;
    invoke(&app, new_user()).await.expect("before rotation");
    let rotated = format!("rotated-{}", unique());
    test.db.rotate_password(&rotated);
    stack.bouncer.stop();
    stack.bouncer.start();
    (test, app, rotated)
}

#[tokio::test]
async fn a_rotated_password_is_picked_up_from_the_secret() {
    let stack = Stack::start(); // its PgBouncer is restarted
    let (test, app, _) = warm_then_rotated(&stack).await;
    invoke(&app, new_user()).await.expect("after rotation");
    assert_eq!(test.count_users(), 2);
}

#[tokio::test]
async fn a_wrong_password_in_the_secret_fails_clearly_without_retrying() {
    let test = TestApp::new().await;
    let wrong = format!("wrong-{}", unique());
    test.db.put_secret_password(&wrong);
    // Through a relay, to count the logins tried.
    let relay = Relay::to(test.stack.bouncer.port());
    let mut env = test.env();
    env.insert("DB_PORT", relay.port.to_string());
    let app = test.start_with(crate::helpers::config_from(&env)).await;
    let error = invoke(&app, new_user()).await.expect_err("wrong password");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(!error.to_string().contains(&wrong));
    assert!(!format!("{:?}", error.cause()).contains(&wrong));
    assert_eq!(
        relay.settled_accepted().await,
        2,
        "one login at cold start, one by the invocation; the secret re-read gives the same password, so no more"
    );
    // Fixed in the secret: the next invocation picks it up.
    let right = test.db.app_password.clone();
    test.db.put_secret_password(&right);
    invoke(&app, new_user())
        .await
        .expect("after the secret was fixed");
    assert_eq!(
        relay.settled_accepted().await,
        4,
        "the held password once more, then the re-read one"
    );
    assert_eq!(test.count_users(), 1);
}

/// A secret the function cannot use (a rotation that wrote the wrong shape) is `CredentialsError`,
/// whatever the timing: the held password is refused after the rotation, and the secret read
/// again is not RDS secret JSON. The operator's message names the secret and what is wrong, never
/// the value; Cognito's names neither.
#[tokio::test]
async fn an_unusable_secret_after_a_rotation_is_a_credentials_error() {
    let stack = Stack::start(); // its PgBouncer is restarted
    let (test, app, rotated) = warm_then_rotated(&stack).await;
    let unusable = format!(
        r#"{{"username": "{}", "password": ["{rotated}"]}}"#,
        test.db.role
    );
    (stack.moto.put_secret_value(&test.db.secret_id, &unusable)).expect("secret replaced");

    let error = invoke(&app, new_user()).await.expect_err("unusable secret");
    assert_eq!(error.error_type(), "CredentialsError", "{error}");
    let cause = error.cause().to_string();
    let named = format!("secret `{}` is not RDS secret JSON", test.db.secret_id);
    assert!(cause.starts_with(&named), "{cause}");
    assert!(!cause.contains(&rotated), "{cause}");
    let public = error.to_string();
    assert!(
        public.starts_with(
            "The account could not be recorded just now. Please try again later. \
             (CredentialsError, request req-"
        ),
        "{public}"
    );
    assert!(!public.contains(&test.db.secret_id), "{public}");
    assert_eq!(test.count_users(), 1);
}

/// Secrets Manager stops answering just when a warm function must read the secret again (the
/// proxy refused the held password after a rotation; the SDK has no read timeout of its own):
/// the call fails with `Timeout` naming the read, inside the budget, with nothing written. Once
/// Secrets Manager answers, the next call reads the rotated secret and writes.
#[tokio::test]
async fn a_secrets_manager_that_stops_answering_after_a_rotation_fails_the_call_in_time() {
    let stack = Stack::start(); // its moto is frozen, its PgBouncer restarted
    let (test, app, _) = warm_then_rotated(&stack).await;
    stack.moto.pause();
    let started = Instant::now();
    let frozen = tokio::time::timeout(Duration::from_secs(30), invoke(&app, new_user())).await;
    let took = started.elapsed();
    stack.moto.resume();

    let error = frozen
        .expect("the call hung")
        .expect_err("no secret to read");
    assert_eq!(error.error_type(), "Timeout", "{error}");
    let cause = error.cause().to_string();
    assert!(
        cause.contains("getting the database credentials"),
        "{cause}"
    );
    assert!(took < COGNITO_BUDGET, "took {took:?}");
    assert_eq!(test.count_users(), 1);
    invoke(&app, new_user())
        .await
        .expect("Secrets Manager back");
    assert_eq!(test.count_users(), 2);
}

#[tokio::test]
async fn secrets_manager_unreachable_at_cold_start_is_retried_by_the_next_invocation() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    stack.moto.stop();
    let started = Instant::now();
    let app = test.start().await;
    assert!(
        started.elapsed() < COGNITO_BUDGET,
        "cold start took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let error = invoke(&app, new_user())
        .await
        .expect_err("no Secrets Manager");
    assert!(
        matches!(error.error_type(), "CredentialsError" | "Timeout"),
        "{error}"
    );
    assert!(
        started.elapsed() < COGNITO_BUDGET,
        "took {:?}",
        started.elapsed()
    );

    stack.moto.start();
    // moto comes back empty; Secrets Manager would come back with the secret.
    let secret = test.db.secret_json(&test.db.app_password);
    stack
        .moto
        .create_secret(&test.db.secret_id, &secret)
        .expect("re-create the secret");
    invoke(&app, new_user())
        .await
        .expect("after Secrets Manager came back");
    assert_eq!(test.count_users(), 1);
}
