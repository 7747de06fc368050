//! The function runs as the role `sql/app-role.sql` makes (every integration test does), and that
//! role can insert into `public.users` the columns the function writes and read its
//! `cognito_user_id`, but do nothing else (not even choose a row's `uuid`).

use std::time::{Duration, Instant};

use local_stack::APP_ROLE_SQL;

use crate::helpers::{TestApp, invoke, sign_up, unique};

#[tokio::test]
async fn the_function_role_can_insert_users_and_read_their_ids_and_nothing_else() {
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
    assert_eq!(
        test.db
            .psql_as_app("SELECT cognito_user_id FROM public.users")
            .as_deref(),
        Ok(sub.as_str())
    );

    for sql in [
        "SELECT email FROM public.users",
        "SELECT display_name, handle FROM public.users",
        "SELECT * FROM public.users",
        "DELETE FROM public.users",
        "UPDATE public.users SET email = 'x@example.com'",
        "TRUNCATE public.users",
        "INSERT INTO public.users (uuid, display_name, handle, email, cognito_user_id) \
         VALUES (gen_random_uuid(), 'n', 'h', 'e@example.com', 'chosen-uuid')",
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

/// sql/app-role.sql run again takes back what was granted since: the role ends with exactly its
/// rights, not more.
#[tokio::test]
async fn rerunning_app_role_sql_takes_back_wider_grants() {
    let test = TestApp::new().await;
    let role = &test.db.role;
    test.query(&format!(
        "GRANT SELECT, UPDATE ON public.users TO \"{role}\"; \
         GRANT SELECT (email) ON public.users TO \"{role}\""
    ));
    test.db
        .psql_as_app("SELECT email FROM public.users")
        .expect("granted for now");
    test.stack
        .pg
        .admin_psql(&test.db.name, APP_ROLE_SQL, &[("app_role", role)])
        .expect("sql/app-role.sql again");
    for sql in [
        "SELECT email FROM public.users",
        "UPDATE public.users SET email = ''",
    ] {
        let error = test.db.psql_as_app(sql).expect_err(sql);
        assert!(error.contains("permission denied"), "{sql}: {error}");
    }
    test.db
        .psql_as_app("SELECT cognito_user_id FROM public.users")
        .expect("still granted");
}

/// A role the function's role was made a member of lends it its rights through SET ROLE, however
/// NOINHERIT the function's role is: running sql/app-role.sql again takes every membership back,
/// but `rds_iam`, which RDS needs for IAM logins.
#[tokio::test]
async fn rerunning_app_role_sql_takes_back_memberships_but_rds_iam() {
    let test = TestApp::new().await;
    let role = &test.db.role;
    let reader = format!("{role}_reader");
    test.query(&format!(
        "CREATE ROLE \"{reader}\"; GRANT SELECT ON public.users TO \"{reader}\"; \
         GRANT \"{reader}\", pg_read_all_data TO \"{role}\"; \
         DO $$ BEGIN CREATE ROLE rds_iam; EXCEPTION WHEN duplicate_object THEN END $$; \
         GRANT rds_iam TO \"{role}\""
    ));
    for sql in [
        format!("SET ROLE \"{reader}\"; SELECT email FROM public.users"),
        "SET ROLE pg_read_all_data; SELECT email FROM public.users".to_owned(),
    ] {
        test.db.psql_as_app(&sql).expect("a member for now");
    }
    test.stack
        .pg
        .admin_psql(&test.db.name, APP_ROLE_SQL, &[("app_role", role)])
        .expect("sql/app-role.sql again");
    for target in [reader.as_str(), "pg_read_all_data"] {
        let sql = format!("SET ROLE \"{target}\"; SELECT email FROM public.users");
        let error = test.db.psql_as_app(&sql).expect_err(&sql);
        assert!(error.contains("permission denied to set role"), "{error}");
    }
    let memberships = test.query(&format!(
        "SELECT string_agg(r.rolname, ',') FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = '\"{role}\"'::regrole"
    ));
    assert_eq!(memberships, ["rds_iam"]);
}

/// Before PostgreSQL 15 every role (PUBLIC) may create in schema public, which nothing done to
/// one role can take away: sql/app-role.sql refuses such a database, says what to run, and
/// changes nothing; once PUBLIC has lost it, it goes through and its role cannot create.
#[tokio::test]
async fn app_role_sql_refuses_a_database_where_everyone_may_create() {
    let test = TestApp::new().await;
    test.query("GRANT CREATE ON SCHEMA public TO PUBLIC");
    let role = format!("{}_new", test.db.name);
    // As an operator may run it: without psql's ON_ERROR_STOP, which the file sets itself.
    let without_stop = format!("\\set ON_ERROR_STOP off\n{APP_ROLE_SQL}");
    let refused = test
        .stack
        .pg
        .admin_psql(&test.db.name, &without_stop, &[("app_role", &role)])
        .expect_err("PUBLIC may create");
    let message = format!("{refused:#}");
    assert!(
        message.contains("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        "{message}"
    );
    let exists = format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'");
    assert_eq!(test.query(&exists), vec!["0"], "nothing was changed");

    test.query("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    test.stack
        .pg
        .admin_psql(&test.db.name, APP_ROLE_SQL, &[("app_role", &role)])
        .expect("goes through now");
    assert_eq!(test.query(&exists), vec!["1"]);
    let rights = test.query(&format!(
        "SET ROLE \"{role}\"; \
         SELECT has_schema_privilege('public', 'CREATE'), has_table_privilege('public.users', 'SELECT')"
    ));
    assert_eq!(
        rights,
        vec!["f|f"],
        "it may neither create nor read whole rows"
    );
}

/// Re-running sql/app-role.sql on a live database never leaves the function's role without its
/// rights, not even between the file's REVOKEs and its GRANTs: the file is one transaction. Here
/// the re-run is held between the two (an uncommitted GRANT on schema public makes the file's
/// REVOKE on that schema wait for it), and a sign-up made meanwhile lands.
#[tokio::test]
async fn a_rerun_of_app_role_sql_never_leaves_the_role_without_its_rights() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let admin = test.admin_session().await;
    let blocker = test.admin_session().await;
    // Roles are the cluster's, shared by every test database: one of this test's own.
    let held_back = format!("{}_held_back", test.db.name);
    blocker
        .batch_execute(&format!(
            "CREATE ROLE \"{held_back}\"; BEGIN; GRANT USAGE ON SCHEMA public TO \"{held_back}\""
        ))
        .await
        .expect("the blocking transaction");
    let (stack, name, role) = (test.stack, test.db.name.clone(), test.db.role.clone());
    let rerun = std::thread::spawn(move || {
        stack
            .pg
            .admin_psql(&name, APP_ROLE_SQL, &[("app_role", &role)])
    });
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE 'REVOKE ALL ON SCHEMA public%'";
    let started = Instant::now();
    while admin
        .query_one(waiting, &[])
        .await
        .expect("pg_stat_activity")
        .get::<_, i64>(0)
        != 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the re-run never waited at its REVOKE on schema public"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    invoke(
        &app,
        sign_up(&format!("sub-{}", unique()), "mid@example.com", None, None),
    )
    .await
    .expect("a sign-up during the re-run lands");
    blocker.batch_execute("ROLLBACK").await.expect("rollback");
    rerun
        .join()
        .expect("the re-run's thread")
        .expect("sql/app-role.sql again");
    invoke(
        &app,
        sign_up(
            &format!("sub-{}", unique()),
            "after@example.com",
            None,
            None,
        ),
    )
    .await
    .expect("a sign-up after the re-run lands");
    assert_eq!(test.count_users(), 2);
}
