//! Aurora DSQL's differences, on the local PostgreSQL: its schema file, and its optimistic
//! concurrency (a conflicting commit fails with SQLSTATE 40001; the INSERT is tried again;
//! `local_stack::kit::conflict_first` plays the conflicts).

use cognito_post_confirmation::app::SERIALIZATION_RETRIES;
use local_stack::Stack;
use local_stack::kit::{conflict_first, insert_attempts};

use crate::helpers::{TestApp, invoke, new_user, widest_value};

const DSQL_SCHEMA: &str = include_str!("../../sql/dsql-schema.sql");

#[tokio::test]
async fn a_serialization_failure_is_retried_and_the_user_recorded_once() {
    let test = TestApp::new().await;
    conflict_first(&test.db, 2);
    let app = test.start().await;
    invoke(&app, new_user())
        .await
        .expect("recorded on the third try");
    assert_eq!(insert_attempts(&test.db), 3);
    assert_eq!(test.count_users(), 1);
}

#[tokio::test]
async fn serialization_failures_are_retried_a_bounded_number_of_times() {
    let test = TestApp::new().await;
    conflict_first(&test.db, 100);
    let app = test.start().await;
    let error = invoke(&app, new_user())
        .await
        .expect_err("always conflicts");
    assert_eq!(error.error_type(), "DatabaseError", "{error}");
    assert!(
        error.cause().to_string().contains("40001"),
        "{}",
        error.cause()
    );
    assert_eq!(insert_attempts(&test.db), 1 + SERIALIZATION_RETRIES);
    assert_eq!(test.count_users(), 0);
}

/// sql/dsql-schema.sql uses nothing DSQL lacks, and gives PostgreSQL the same table as
/// sql/schema.sql: the same columns, types, defaults and unique key. Only the index on `handle`
/// differs: a hash index there, none here (DSQL's btree keys are limited to 1 KiB). The function
/// records users in it, Cognito's widest handle included.
#[tokio::test]
async fn the_dsql_schema_makes_the_same_table_and_uses_nothing_dsql_lacks() {
    let code: String = DSQL_SCHEMA
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let statements = code.split(';').filter(|s| !s.trim().is_empty()).count();
    assert_eq!(
        statements, 2,
        "one DDL statement each, each its own transaction"
    );
    let upper = code.to_uppercase();
    for unsupported in [
        "DO $$",
        "PLPGSQL",
        "TRIGGER",
        "SEQUENCE",
        "REFERENCES",
        "BEGIN",
    ] {
        assert!(!upper.contains(unsupported), "{unsupported}");
    }
    assert_eq!(
        upper.matches("CREATE INDEX").count(),
        upper.matches("CREATE INDEX ASYNC").count(),
        "DSQL builds secondary indexes asynchronously only"
    );

    let dsql = TestApp::with_schema(
        Stack::shared(),
        &DSQL_SCHEMA.replace("INDEX ASYNC", "INDEX"),
    )
    .await;
    let postgres = TestApp::new().await;
    let describe = "SELECT column_name, data_type, is_nullable, column_default \
                    FROM information_schema.columns WHERE table_name = 'users' \
                    ORDER BY column_name; \
                    SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint \
                    WHERE conrelid = 'public.users'::regclass ORDER BY conname; \
                    SELECT indexname, indexdef FROM pg_indexes \
                    WHERE tablename = 'users' AND indexdef NOT LIKE '%(handle)' \
                    ORDER BY indexname";
    assert_eq!(
        postgres.db.admin_psql(describe),
        dsql.db.admin_psql(describe)
    );
    let on_handle = "SELECT indexname, indexdef FROM pg_indexes \
                     WHERE tablename = 'users' AND indexdef LIKE '%(handle)'";
    assert_eq!(dsql.db.admin_psql(on_handle), "");
    assert_eq!(
        postgres.db.admin_psql(on_handle),
        "users_handle_hash_idx|CREATE INDEX users_handle_hash_idx ON public.users \
         USING hash (handle)"
    );
    let app = dsql.start().await;
    invoke(&app, new_user()).await.expect("recorded");
    invoke(&app, new_user()).await.expect("recorded");
    let mut long_handle = new_user();
    long_handle["request"]["userAttributes"]["preferred_username"] = widest_value().into();
    invoke(&app, long_handle).await.expect("recorded");
    assert_eq!(dsql.count_users(), 3);
}
