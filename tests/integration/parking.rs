//! No confirmed user lost while the database is down (#12): with `PARK_QUEUE_URL`, an outage parks
//! the user on SQS (moto's, over HTTP, through the real SDK) and answers Cognito with success;
//! the same function consuming the queue writes each user exactly once. SQS's event source
//! mapping is played by [`Esm`]: receive, invoke, delete what succeeded, offer the failures again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use cognito_post_confirmation::App;
use cognito_post_confirmation::park;
use cognito_post_confirmation::user::NewUser;
use futures::future::join_all;
use local_stack::Stack;
use serde_json::{Value, json};
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;

use crate::helpers::{
    TestApp, config_from, invoke, invoke_with_deadline, settled, sign_up, unique, widest_value,
};
use crate::logs::{assert_clean, capture};

/// A park queue with its dead-letter queue, on the stack's moto. (Every receive counts towards
/// `maxReceiveCount`, [`Queues::peek`]'s too.)
struct Queues {
    sqs: aws_sdk_sqs::Client,
    park_url: String,
    dead_letter_url: String,
}

/// The subscriber of the test's own SQS calls (`.with_subscriber(quiet())`): none. At TRACE the
/// SDK logs message bodies, and the log assertions are about what the function logs.
fn quiet() -> NoSubscriber {
    NoSubscriber::default()
}

impl Queues {
    async fn create(test: &TestApp<'_>, max_receives: usize) -> Queues {
        let sqs = aws_sdk_sqs::Client::new(&test.sdk);
        let name = format!("parked-{}", unique());
        let dead_letter_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .with_subscriber(quiet())
            .await
            .expect("create the dead-letter queue")
            .queue_url
            .expect("queue url");
        let dead_letter_arn = queue_arn(&sqs, &dead_letter_url).await;
        let redrive =
            json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receives});
        let park_url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .with_subscriber(quiet())
            .await
            .expect("create the park queue")
            .queue_url
            .expect("queue url");
        Queues {
            sqs,
            park_url,
            dead_letter_url,
        }
    }

    /// Up to 10 messages of `url`, invisible to others for 30 s.
    async fn receive(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .with_subscriber(quiet())
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
    }

    /// Receives what `url` holds now (without consuming it: it is visible again at once).
    async fn peek(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        loop {
            let batch = self.receive(url).await;
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        for message in &all {
            self.offer_again(url, message).await;
        }
        all
    }

    async fn offer_again(&self, url: &str, message: &aws_sdk_sqs::types::Message) {
        self.sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(message.receipt_handle().expect("receipt handle"))
            .visibility_timeout(0)
            .send()
            .with_subscriber(quiet())
            .await
            .expect("change visibility");
    }

    async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.park_url)
            .message_body(body)
            .send()
            .with_subscriber(quiet())
            .await
            .expect("send");
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .with_subscriber(quiet())
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .expect("queue arn")
}

/// Lambda's SQS event source mapping, for one pass over the queue: batches of up to 10, the
/// function invoked with each, the messages it did not report as failed deleted, the failed ones
/// visible again at once (instead of after the visibility timeout).
struct Esm;

impl Esm {
    /// Passes over the queue until it is empty or `passes` are done; the failed ids of every
    /// batch, in order.
    async fn run(app: &App, queues: &Queues, passes: usize) -> Vec<Vec<String>> {
        let mut reports = Vec::new();
        for _ in 0..passes {
            let messages = queues.receive(&queues.park_url).await;
            if messages.is_empty() {
                break;
            }
            let records: Vec<Value> = messages
                .iter()
                .map(|m| {
                    json!({
                        "messageId": m.message_id(),
                        "receiptHandle": m.receipt_handle(),
                        "body": m.body(),
                        "attributes": {},
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:parked",
                        "awsRegion": "us-east-1",
                    })
                })
                .collect();
            let response = invoke(app, json!({ "Records": records }))
                .await
                .expect("a replay invocation never fails as a whole");
            let failed: Vec<String> = response["batchItemFailures"]
                .as_array()
                .expect("a partial batch response")
                .iter()
                .map(|f| f["itemIdentifier"].as_str().expect("an id").to_owned())
                .collect();
            for message in &messages {
                if failed
                    .iter()
                    .any(|id| Some(id.as_str()) == message.message_id())
                {
                    queues.offer_again(&queues.park_url, message).await;
                } else {
                    queues
                        .sqs
                        .delete_message()
                        .queue_url(&queues.park_url)
                        .receipt_handle(message.receipt_handle().expect("receipt handle"))
                        .send()
                        .with_subscriber(quiet())
                        .await
                        .expect("delete");
                }
            }
            reports.push(failed);
        }
        reports
    }
}

/// The EMF lines an app wrote, parsed.
#[derive(Clone, Default)]
struct Metrics(Arc<Mutex<Vec<Value>>>);

impl Metrics {
    fn attach(&self, app: App) -> App {
        let lines = self.0.clone();
        app.with_metrics_sink(Arc::new(move |line: &str| {
            let document = serde_json::from_str(line).expect("a metric line is JSON");
            lines.lock().expect("metrics").push(document);
        }))
    }

    fn sum(&self, metric: &str) -> u64 {
        self.0
            .lock()
            .expect("metrics")
            .iter()
            .filter_map(|d| d.get(metric).and_then(Value::as_u64))
            .sum()
    }

    fn failed(&self, error_type: &str) -> u64 {
        self.0
            .lock()
            .expect("metrics")
            .iter()
            .filter(|d| d["ErrorType"] == error_type)
            .filter_map(|d| d["Failed"].as_u64())
            .sum()
    }

    fn text(&self) -> String {
        let documents = self.0.lock().expect("metrics");
        documents.iter().map(|d| format!("{d}\n")).collect()
    }
}

fn parked_env(test: &TestApp<'_>, queue_url: &str) -> HashMap<&'static str, String> {
    let mut env = test.env();
    env.insert("PARK_QUEUE_URL", queue_url.to_owned());
    env
}

/// The function, started with `queues`' park queue.
async fn parked_app(test: &TestApp<'_>, queues: &Queues) -> App {
    test.start_with(config_from(&parked_env(test, &queues.park_url)))
        .await
}

fn new_user(tag: &str) -> (String, Value) {
    let sub = format!("sub-{tag}-{}", unique());
    let email = format!("private.{sub}@example.com");
    let event = sign_up(&sub, &email, Some("parked_handle"), Some("Parked Name"));
    (sub, event)
}

fn rows_per_user(test: &TestApp<'_>) -> HashMap<String, usize> {
    let mut rows = HashMap::new();
    for sub in test.query("SELECT cognito_user_id FROM public.users") {
        *rows.entry(sub).or_default() += 1;
    }
    rows
}

#[tokio::test(flavor = "current_thread")]
async fn an_outage_parks_every_sign_up_and_the_replay_writes_each_exactly_once() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let queues = Queues::create(&test, 10).await;
    let metrics = Metrics::default();
    let env = parked_env(&test, &queues.park_url);
    // Three warm execution environments.
    let mut apps = Vec::new();
    for _ in 0..3 {
        let app = metrics.attach(test.start_with(config_from(&env)).await);
        let (_, event) = new_user("warm");
        invoke(&app, event).await.expect("before the outage");
        apps.push(app);
    }
    let (captured, _guard) = capture();

    stack.bouncer.stop();
    let burst: Vec<(String, Value)> = (0..12).map(|_| new_user("burst")).collect();
    let started = Instant::now();
    let answers = join_all(
        burst
            .iter()
            .enumerate()
            .map(|(i, (_, event))| invoke(&apps[i % apps.len()], event.clone())),
    )
    .await;
    for ((_, event), answer) in burst.iter().zip(answers) {
        let returned = answer.expect("a parked sign-up succeeds");
        assert_eq!(&returned, event, "Cognito gets its event back");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metrics.sum("Parked"), 12);
    assert_eq!(test.count_users(), 3, "nothing written during the outage");
    let parked = queues.peek(&queues.park_url).await;
    assert_eq!(parked.len(), 12);
    let mut parked_subs: Vec<String> = parked
        .iter()
        .map(|m| {
            park::decode(m.body().expect("body"))
                .expect("a parked user")
                .0
                .sub
        })
        .collect();
    parked_subs.sort();
    let mut burst_subs: Vec<String> = burst.iter().map(|(sub, _)| sub.clone()).collect();
    burst_subs.sort();
    assert_eq!(parked_subs, burst_subs);

    // Without a park queue that works, the error is returned as before.
    let mut broken = env.clone();
    broken.insert(
        "PARK_QUEUE_URL",
        format!("{}/123456789012/no-such-queue", stack.moto.endpoint()),
    );
    let unparked = test.start_with(config_from(&broken)).await;
    let error = invoke(&unparked, new_user("unparked").1)
        .await
        .expect_err("parking failed too");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");

    // Bad input is never parked, outage or not.
    let mut bad = new_user("bad").1;
    bad["request"]["userAttributes"]["email"] = json!("");
    let error = invoke(&apps[0], bad).await.expect_err("bad input");
    assert_eq!(error.error_type(), "InvalidUserAttributes");

    // While the outage lasts, a replay fails the batch fast, attempting one write only.
    let started = Instant::now();
    let reports = Esm::run(&apps[0], &queues, 1).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].len(), 10, "the whole batch is offered again");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        metrics.failed("DatabaseConnectionError"),
        1,
        "one write attempted, the rest of the batch deferred"
    );
    assert_eq!(queues.peek(&queues.park_url).await.len(), 12);

    // The database is back: the replay writes each parked user once. One message is delivered
    // twice (SQS is at-least-once), which must not double the user.
    stack.bouncer.start();
    queues.send(parked[0].body().expect("body")).await;
    let reports = Esm::run(&apps[1], &queues, 10).await;
    assert!(reports.iter().all(Vec::is_empty), "{reports:?}");
    assert!(queues.peek(&queues.park_url).await.is_empty());
    assert!(queues.peek(&queues.dead_letter_url).await.is_empty());
    let rows = rows_per_user(&test);
    assert_eq!(rows.len(), 15, "3 warm-up users and the 12 parked ones");
    assert!(rows.values().all(|&n| n == 1), "{rows:?}");
    for sub in &burst_subs {
        assert_eq!(rows.get(sub), Some(&1), "{sub}");
    }
    let columns = test.query(&format!(
        "SELECT email, handle, display_name FROM public.users WHERE cognito_user_id = '{}'",
        burst_subs[0]
    ));
    assert_eq!(
        columns,
        [format!(
            "private.{}@example.com|parked_handle|Parked Name",
            burst_subs[0]
        )]
    );
    assert_eq!(metrics.sum("Replayed"), 13);
    assert_eq!(metrics.sum("Inserted"), 3 + 12);
    assert_eq!(metrics.sum("AlreadyPresent"), 1);
    assert_eq!(metrics.failed("DatabaseConnectionError"), 1);

    // Nothing personal in the logs or the metrics of all this.
    let logs = captured.text();
    assert!(logs.contains("parked for replay"), "{logs}");
    assert!(logs.contains("parked user replayed"), "{logs}");
    let everything = format!("{logs}\n{}", metrics.text());
    for (sub, _) in &burst {
        assert_clean(
            &everything,
            &[&format!("private.{sub}"), "Parked Name", "parked_handle"],
        );
    }
    assert_clean(&everything, &[&test.db.app_password]);
}

/// An INSERT that hangs (the proxy frozen) ends at its cap or at the deadline less the time kept
/// for parking, and the user is parked inside Cognito's budget, even a short one.
#[tokio::test]
async fn a_hung_proxy_still_leaves_time_to_park() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let queues = Queues::create(&test, 5).await;
    let app = parked_app(&test, &queues).await;
    invoke(&app, new_user("warm").1).await.expect("warm");
    stack.bouncer.pause();
    for budget in [Duration::from_secs(5), Duration::from_millis(1200)] {
        let started = Instant::now();
        invoke_with_deadline(&app, new_user("hung").1, budget)
            .await
            .expect("parked");
        assert!(started.elapsed() < budget, "{:?}", started.elapsed());
    }
    stack.bouncer.resume();
    assert_eq!(queues.peek(&queues.park_url).await.len(), 2);
}

/// A replayed row says when the user confirmed (the time they were parked), as a direct write
/// would, not when the replay ran (an outage, or a redrive from the dead-letter queue days later).
#[tokio::test]
async fn a_replayed_row_keeps_the_time_the_user_confirmed() {
    let test = TestApp::new().await;
    let queues = Queues::create(&test, 5).await;
    let app = parked_app(&test, &queues).await;
    let (sub, event) = new_user("direct");
    invoke(&app, event).await.expect("recorded now");
    let late = format!("{sub}-late");
    let user = NewUser::checked(&late, "late@example.com", "late", "Late").expect("a user");
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let ms = an_hour_ago
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    queues.send(&park::encode(&user, an_hour_ago)).await;
    assert_eq!(Esm::run(&app, &queues, 5).await, [Vec::<String>::new()]);
    let created = |sub: &str| {
        test.query(&format!(
            "SELECT created_at = to_timestamp({ms} / 1000.0)::timestamp, \
                    created_at > now()::timestamp - interval '1 minute' \
             FROM public.users WHERE cognito_user_id = '{sub}'"
        ))
    };
    assert_eq!(
        created(&late),
        ["t|f"],
        "the time it was parked, to the millisecond"
    );
    assert_eq!(
        created(&sub),
        ["f|t"],
        "a direct write: the time of the INSERT"
    );
}

/// A secret the function cannot log in with is not the user's fault, whether its password does
/// not match the database or it is not RDS secret JSON at all (`CredentialsError`): with a park
/// queue the user is parked (Cognito sees success), each replay fails the same way, and once the
/// secret is fixed the replay writes the row.
#[tokio::test]
async fn a_broken_secret_parks_the_user_and_the_replay_writes_once_it_is_fixed() {
    for (case, unusable) in [("a wrong password", false), ("not RDS secret JSON", true)] {
        let test = TestApp::new().await;
        let queues = Queues::create(&test, 5).await;
        let broken = match unusable {
            true => "not the RDS secret format".to_owned(),
            false => test.db.secret_json(&format!("wrong-{}", unique())),
        };
        let put = (test.stack.moto).put_secret_value(&test.db.secret_id, &broken);
        put.expect("secret replaced");
        let app = parked_app(&test, &queues).await;
        let (sub, event) = new_user("broken-secret");
        invoke(&app, event).await.expect(case);
        assert_eq!(test.count_users(), 0, "{case}");
        assert_eq!(queues.peek(&queues.park_url).await.len(), 1, "{case}");
        let reports = Esm::run(&app, &queues, 1).await;
        assert_eq!(
            reports.concat().len(),
            1,
            "{case}: the replay fails while the secret is broken"
        );
        test.db.put_secret_password(&test.db.app_password);
        assert_eq!(
            Esm::run(&app, &queues, 5).await,
            [Vec::<String>::new()],
            "{case}"
        );
        assert_eq!(rows_per_user(&test), HashMap::from([(sub, 1)]), "{case}");
        assert!(queues.peek(&queues.park_url).await.is_empty(), "{case}");
    }
}

/// With less time left than parking needs (a late cold start, say), no write is started: the
/// user is parked at once, inside the budget, and nothing reaches the database.
#[tokio::test]
async fn too_little_time_to_write_and_park_parks_without_writing() {
    let test = TestApp::new().await;
    let queues = Queues::create(&test, 5).await;
    let app = parked_app(&test, &queues).await;
    // 500 ms are kept to park and 200 ms (DEADLINE_MARGIN_MS) to answer: 690 ms leave no write,
    // and under 500 ms to park. A first such call warms the SQS client (whether it parks in time
    // on a loaded machine does not matter here).
    let budget = Duration::from_millis(690);
    let _ = invoke_with_deadline(&app, new_user("warm-up").1, budget).await;
    let (sub, event) = new_user("late");
    invoke_with_deadline(&app, event, budget)
        .await
        .expect("parked");
    let parked = queues.peek(&queues.park_url).await;
    let bodies: Vec<&str> = parked.iter().filter_map(|m| m.body()).collect();
    assert!(
        bodies.iter().any(|body| body.contains(&sub)),
        "{}",
        bodies.len()
    );
    // An INSERT sent before parking would have committed by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(test.count_users(), 0, "no write was started");
}

#[tokio::test]
async fn a_replay_of_a_user_who_already_has_a_row_succeeds_and_writes_nothing() {
    let test = TestApp::new().await;
    let queues = Queues::create(&test, 5).await;
    let metrics = Metrics::default();
    let app = metrics.attach(
        parked_app(&test, &queues)
            .await
            .with_metrics_level(Some("WARN")),
    );
    let (sub, event) = new_user("present");
    invoke(&app, event).await.expect("recorded at sign-up");
    // The INSERT committed, but its answer was lost, so the user was parked as well.
    let user = NewUser::checked(&sub, "other@example.com", "other", "Other").expect("a user");
    queues.send(&park::encode(&user, SystemTime::now())).await;
    let reports = Esm::run(&app, &queues, 5).await;
    assert_eq!(reports, [Vec::<String>::new()]);
    assert!(queues.peek(&queues.park_url).await.is_empty());
    assert_eq!(test.count_users(), 1);
    let email = test.query("SELECT email FROM public.users");
    assert_eq!(
        email,
        [format!("private.{sub}@example.com")],
        "the row is never updated"
    );
    assert_eq!(metrics.sum("AlreadyPresent"), 1);
    assert_eq!(metrics.sum("Replayed"), 1);
    // Under LogLevel WARN, every line of both paths carries it, so Lambda's filter keeps them.
    for line in metrics.0.lock().expect("metrics").iter() {
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn poison_messages_end_in_the_dead_letter_queue_and_the_rest_of_the_batch_is_written() {
    const MAX_RECEIVES: usize = 3;
    let test = TestApp::new().await;
    let queues = Queues::create(&test, MAX_RECEIVES).await;
    let metrics = Metrics::default();
    let app = metrics.attach(parked_app(&test, &queues).await);
    let (sub, _) = new_user("good");
    let good = NewUser::checked(&sub, "good@example.com", "good", "Good").expect("a user");
    let poison = [
        "not json".to_owned(),
        json!({"v": 1, "sub": "s", "email": "e"}).to_string(),
        park::encode(&good, SystemTime::now()).replace("\"Good\"", "\"Go\\u0000od\""),
    ];
    for body in &poison {
        queues.send(body).await;
    }
    queues.send(&park::encode(&good, SystemTime::now())).await;

    let reports = Esm::run(&app, &queues, 20).await;
    let failures: usize = reports.iter().map(Vec::len).sum();
    assert_eq!(failures, poison.len() * MAX_RECEIVES, "{reports:?}");
    assert!(queues.peek(&queues.park_url).await.is_empty());
    let mut dead: Vec<String> = queues
        .peek(&queues.dead_letter_url)
        .await
        .iter()
        .map(|m| m.body().expect("body").to_owned())
        .collect();
    dead.sort();
    let mut expected = poison.to_vec();
    expected.sort();
    assert_eq!(dead, expected);
    assert_eq!(rows_per_user(&test).get(&sub), Some(&1));
    assert_eq!(
        metrics.failed("UndecodableMessage"),
        (poison.len() * MAX_RECEIVES) as u64
    );
    assert_eq!(metrics.sum("Replayed"), 1);
}

/// An INSERT refused for its values (SQLSTATE class 22/23) would be refused again: such a user is
/// never parked. In a replay, a message whose INSERT the database refuses, for any reason, fails
/// alone while the rest of the batch is written. The second refusal here is a handle too big for a
/// btree index on `handle` (54000; an earlier version's index, which an upgrade that gave up
/// keeps): that user is parked, since class 54 is also what a database out of transaction ids
/// answers. The refusal's DETAIL ("Failing row contains (..., refused@example.com, ...)") is in
/// neither the error nor the logs.
#[tokio::test]
async fn a_user_refused_for_its_data_is_not_parked_and_fails_alone_in_a_replay() {
    let test = TestApp::new().await;
    let queues = Queues::create(&test, 5).await;
    let app = parked_app(&test, &queues).await;
    test.db.admin_psql(
        "ALTER TABLE public.users ADD CONSTRAINT refuse_one \
         CHECK (email <> 'refused@example.com'); \
         CREATE INDEX users_handle_btree ON public.users (handle)",
    );
    let (captured, _guard) = capture();
    let (sub, _) = new_user("refused");
    let event = sign_up(&sub, "refused@example.com", None, None);
    let error = invoke(&app, event).await.expect_err("refused for its data");
    assert_eq!(error.error_type(), "DatabaseError", "{error}");
    let cause = format!("{} {:?}", error.cause(), error.cause());
    assert!(cause.contains("23514"), "the SQLSTATE is named: {cause}");
    assert!(!cause.contains("refused@example.com"), "{cause}");
    assert!(queues.peek(&queues.park_url).await.is_empty(), "not parked");

    let (long_sub, _) = new_user("long");
    let long_handle = widest_value();
    let event = sign_up(&long_sub, "long@example.com", Some(&long_handle), None);
    invoke(&app, event).await.expect("parked");
    assert_eq!(queues.peek(&queues.park_url).await.len(), 1, "parked");

    // The batch: the parked user first, then the refused one, then one the database takes.
    let refused = NewUser::checked(&sub, "refused@example.com", "r", "R").expect("a user");
    let (good_sub, _) = new_user("good");
    let good = NewUser::checked(&good_sub, "good@example.com", "g", "G").expect("a user");
    queues
        .send(&park::encode(&refused, SystemTime::now()))
        .await;
    queues.send(&park::encode(&good, SystemTime::now())).await;
    let reports = Esm::run(&app, &queues, 1).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].len(), 2, "only the refused messages fail");
    let rows = rows_per_user(&test);
    assert_eq!(rows.get(&good_sub), Some(&1));
    assert_eq!(rows.get(&sub), None);
    assert_eq!(rows.get(&long_sub), None);
    let logs = captured.text();
    for code in ["23514", "54000"] {
        assert!(logs.contains(code), "the failures were logged:\n{logs}");
    }
    assert!(!logs.contains("not attempted"), "{logs}");
    assert_clean(
        &logs,
        &[
            "refused@example.com",
            "long@example.com",
            "good@example.com",
        ],
    );
}

/// SQS that does not answer (moto frozen) while the database is down: parking gives up at the
/// deadline and the original error goes back to Cognito, inside its budget.
#[tokio::test]
async fn an_unanswering_queue_returns_the_original_error_in_time() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let queues = Queues::create(&test, 5).await;
    let app = parked_app(&test, &queues).await;
    invoke(&app, new_user("warm").1).await.expect("warm");
    stack.bouncer.stop();
    stack.moto.pause();
    let budget = Duration::from_millis(2000);
    let started = Instant::now();
    let (sub, event) = new_user("unparked");
    let error = invoke_with_deadline(&app, event, budget)
        .await
        .expect_err("neither recorded nor parked");
    let took = started.elapsed();
    stack.moto.resume();
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(took < budget, "took {took:?}");
    // A send abandoned at the deadline may still land once SQS answers again (here moto reads
    // the buffered request when it resumes): then the replay writes the user, once. Never twice.
    // Counted once moto has had time to read that request: two counts half a second apart agree.
    let count = || async { queues.peek(&queues.park_url).await.len() };
    let landed = settled(count, Duration::from_millis(500), Duration::from_secs(10)).await;
    assert!(landed <= 1, "{landed} messages");
    stack.bouncer.start();
    let reports = Esm::run(&app, &queues, 3).await;
    assert!(reports.iter().all(Vec::is_empty), "{reports:?}");
    assert!(queues.peek(&queues.park_url).await.is_empty());
    assert_eq!(rows_per_user(&test).get(&sub).copied().unwrap_or(0), landed);
}
