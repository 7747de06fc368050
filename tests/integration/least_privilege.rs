//! The function runs as the role `sql/app-role.sql` makes (every integration test does), and that
//! role can insert into and read `public.users` but do nothing else.

use crate::helpers::{TestApp, invoke, sign_up, unique};

#[tokio::test]
async fn the_function_role_can_insert_and_read_users_and_nothing_else() {
    let test = TestApp::new().await;
    test.query("CREATE TABLE public.billing (id int); INSERT INTO public.billing VALUES (1)");
    let app = test.start().await;
    let sub = format!("sub-{}", unique());
    invoke(&app, sign_up(&sub, "lp@example.com", None, None))
        .await
        .expect("the function inserts as the least-privilege role");
    assert_eq!(
        test.db
            .psql_as_app("SELECT count(*) FROM public.users")
            .as_deref(),
        Ok("1")
    );

    for sql in [
        "DELETE FROM public.users",
        "UPDATE public.users SET email = 'x@example.com'",
        "TRUNCATE public.users",
        "SELECT * FROM public.billing",
        "INSERT INTO public.billing VALUES (2)",
        "CREATE TABLE public.mine (id int)",
        "DROP TABLE public.users",
        "ALTER TABLE public.users ADD COLUMN x int",
        "CREATE ROLE intruder",
        "CREATE DATABASE intruder",
    ] {
        let error = test.db.psql_as_app(sql).expect_err(sql);
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{sql}: {error}"
        );
    }
    assert_eq!(test.count_users(), 1);
    assert_eq!(test.query("SELECT count(*) FROM public.billing"), vec!["1"]);
}

/// The function's `INSERT … ON CONFLICT (cognito_user_id) DO NOTHING` reads the arbiter column,
/// so the role needs SELECT as well as INSERT (sql/app-role.sql grants both, and says why).
#[tokio::test]
async fn insert_alone_is_not_enough_for_the_idempotent_insert() {
    let test = TestApp::new().await;
    test.query(&format!(
        "REVOKE SELECT ON public.users FROM \"{}\"",
        test.db.role
    ));
    let app = test.start().await;
    let error = invoke(
        &app,
        sign_up(&format!("sub-{}", unique()), "x@example.com", None, None),
    )
    .await
    .expect_err("no SELECT");
    assert_eq!(error.error_type(), "DatabaseError", "{error:?}");
    assert!(
        error.cause().to_string().contains("42501"),
        "{}",
        error.cause()
    );
    assert_eq!(test.count_users(), 0);
}
