//! Every confirmed sign-up ends as exactly one row.

use std::time::Duration;

use cognito_post_confirmation::App;
use futures::future::join_all;
use local_stack::Stack;
use serde_json::json;

use crate::helpers::{TestApp, event_file, invoke, sign_up, unique};

#[tokio::test]
async fn sign_up_inserts_one_row_with_every_column() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let sub = format!("sub-{}", unique());
    invoke(
        &app,
        sign_up(&sub, "lin@example.com", Some("lin"), Some("Lin Ma")),
    )
    .await
    .expect("sign-up");
    let rows = test.query(
        "SELECT cognito_user_id, email, handle, display_name, uuid IS NOT NULL, \
         created_at > now() - interval '1 minute' FROM public.users",
    );
    assert_eq!(rows, vec![format!("{sub}|lin@example.com|lin|Lin Ma|t|t")]);
}

#[tokio::test]
async fn the_same_event_three_times_leaves_one_row() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let event = sign_up(&format!("sub-{}", unique()), "r@example.com", None, None);
    for attempt in 0..3 {
        let returned = invoke(&app, event.clone()).await.expect("retry succeeds");
        assert_eq!(returned, event, "attempt {attempt}");
    }
    // A retry may also land on another execution environment (a cold start).
    let other = test.start().await;
    invoke(&other, event).await.expect("retry elsewhere");
    assert_eq!(test.count_users(), 1);
}

#[tokio::test]
async fn forgot_password_after_sign_up_changes_nothing() {
    let test = TestApp::new().await;
    let app = test.start().await;
    invoke(&app, event_file("sign-up.json"))
        .await
        .expect("sign-up");
    let before =
        test.query("SELECT uuid, created_at, email, handle, display_name FROM public.users");
    let mut forgot = event_file("forgot-password.json");
    forgot["request"]["userAttributes"]["email"] = json!("changed@example.com");
    invoke(&app, forgot).await.expect("forgot password");
    let after =
        test.query("SELECT uuid, created_at, email, handle, display_name FROM public.users");
    assert_eq!(before, after);
}

#[tokio::test]
async fn the_event_is_returned_unchanged_including_unknown_fields() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let mut event = sign_up(&format!("sub-{}", unique()), "u@example.com", None, None);
    event["somethingNew"] = json!({"nested": [1, 2, 3]});
    event["request"]["clientMetadata"] = json!({"source": "web"});
    event["request"]["futureField"] = json!(true);
    event["response"] = json!({"unexpected": "kept"});
    let returned = invoke(&app, event.clone()).await.expect("sign-up");
    assert_eq!(returned, event);
}

#[tokio::test]
async fn missing_email_fails_and_writes_nothing() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let mut event = sign_up(&format!("sub-{}", unique()), "x@example.com", None, None);
    event["request"]["userAttributes"]
        .as_object_mut()
        .expect("attributes")
        .remove("email");
    let error = invoke(&app, event).await.expect_err("no email");
    assert_eq!(error.error_type(), "InvalidUserAttributes");
    assert!(error.cause().to_string().contains("`email`"), "{error}");
    assert_eq!(test.count_users(), 0);
}

/// Twenty execution environments at once through PgBouncer, whose pool is smaller than that, each
/// recording two users: server connections are shared between clients, so a named prepared
/// statement would collide (`prepared statement "s0" already exists`). On a stack of its own, so
/// the load does not slow the other tests down.
#[tokio::test]
async fn twenty_concurrent_environments_all_land_through_the_proxy() {
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    let environments = (0..20).map(|environment| {
        let test = &test;
        async move {
            let app = test.start().await;
            for n in 0..2 {
                let sub = format!("env{environment}-user{n}-{}", unique());
                let email = format!("{sub}@example.com");
                invoke(&app, sign_up(&sub, &email, None, None))
                    .await
                    .unwrap_or_else(|e| panic!("{sub}: {e}"));
            }
        }
    });
    join_all(environments).await;
    assert_eq!(test.count_users(), 40);
}

/// A burst: 2,000 distinct sign-ups from 50 concurrent execution environments through a PgBouncer
/// pool smaller than 50, every event delivered twice (as Cognito's retries do).
#[tokio::test]
async fn a_burst_of_two_thousand_sign_ups_each_delivered_twice_lands_exactly_once() {
    const ENVIRONMENTS: usize = 50;
    const USERS_EACH: usize = 40;
    let stack = Stack::start();
    let test = TestApp::on(&stack).await;
    // The environments start first (in Lambda each has a CPU of its own for that; here they
    // share one thread), then all of them take sign-ups at once.
    // One after another, the cold starts can take a minute on a loaded machine, and a connection
    // idle that long gets only 500 ms for its first INSERT (and a second connection after it):
    // not what this test is about, so every connection counts as just used.
    let mut apps = Vec::new();
    for _ in 0..ENVIRONMENTS {
        apps.push(test.start().await.with_forgettable_after(Duration::MAX));
    }
    let environments = apps
        .iter()
        .enumerate()
        .map(|(environment, app)| async move {
            let mut errors = Vec::new();
            for n in 0..USERS_EACH {
                let sub = format!("burst-{environment}-{n}-{}", unique());
                let event = sign_up(&sub, &format!("{sub}@example.com"), None, None);
                for delivery in 0..2 {
                    if let Err(e) = invoke(app, event.clone()).await {
                        errors.push(format!("{sub} delivery {delivery}: {e}"));
                    }
                }
            }
            errors
        });
    let errors: Vec<String> = join_all(environments).await.into_iter().flatten().collect();
    assert_eq!(errors, Vec::<String>::new());
    // Each environment kept its one connection: the proxy queued transactions, nobody reconnected.
    let opened: Vec<u64> = apps.iter().map(App::connections_opened).collect();
    assert_eq!(opened, vec![1; ENVIRONMENTS]);
    assert_eq!(test.count_users(), ENVIRONMENTS * USERS_EACH);
    assert_eq!(
        test.query("SELECT count(DISTINCT cognito_user_id) FROM public.users"),
        vec![(ENVIRONMENTS * USERS_EACH).to_string()]
    );
}
