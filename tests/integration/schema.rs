//! sql/schema.sql run again on a table an earlier version made.

use local_stack::Stack;

use crate::helpers::{SCHEMA, TestApp, invoke, new_user, widest_value};

/// sql/schema.sql as versions before the hash index had it: a btree on `handle` in place of the
/// block that makes the hash index and drops that btree.
fn earlier_schema() -> String {
    let start = SCHEMA
        .find("DO $$\nBEGIN\n  IF to_regclass('public.users_handle_hash_idx') IS NULL")
        .expect("sql/schema.sql's handle index block");
    let end = start + SCHEMA[start..].find("\n$$;\n").expect("its end") + "\n$$;\n".len();
    let block = &SCHEMA[start..end];
    assert!(block.contains("DROP INDEX IF EXISTS public.users_handle_idx;"));
    format!(
        "{}CREATE INDEX IF NOT EXISTS users_handle_idx ON public.users (handle);\n{}",
        &SCHEMA[..start],
        &SCHEMA[end..]
    )
}

/// An invalid hash index, as a failed `CREATE INDEX CONCURRENTLY` of the README's upgrade leaves
/// it, stops the upgrade with an error saying so, and the btree is kept: dropping it would leave
/// `handle` with no usable index.
#[tokio::test]
async fn an_invalid_hash_index_stops_the_upgrade_and_keeps_the_btree() {
    let test = TestApp::with_schema(Stack::shared(), &earlier_schema()).await;
    test.query(
        "CREATE INDEX users_handle_hash_idx ON public.users USING hash (handle); \
         UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = 'public.users_handle_hash_idx'::regclass",
    );
    let error = test
        .stack
        .pg
        .admin_psql(&test.db.name, SCHEMA, &[])
        .expect_err("the invalid index is an error");
    assert!(
        format!("{error:#}").contains("users_handle_hash_idx is not valid"),
        "{error:#}"
    );
    // As an operator may run it: without ON_ERROR_STOP, so psql goes on after the error.
    let without_stop = format!("\\set ON_ERROR_STOP off\n{SCHEMA}");
    test.stack
        .pg
        .admin_psql(&test.db.name, &without_stop, &[])
        .expect("psql goes on");
    assert_eq!(
        test.query("SELECT count(*) FROM pg_class WHERE relname = 'users_handle_idx'"),
        ["1"],
        "the btree is kept"
    );
}

/// Earlier versions indexed `handle` with a btree, which refuses a row whose handle takes more
/// than 2704 bytes and so lost that user. Running the current file replaces it with the hash
/// index, keeps the rows, and then such a user is recorded.
#[tokio::test]
async fn rerunning_the_schema_replaces_the_btree_on_handle_and_long_handles_land() {
    let test = TestApp::with_schema(Stack::shared(), &earlier_schema()).await;
    let app = test.start().await;
    invoke(&app, new_user()).await.expect("recorded");
    let mut long_handle = new_user();
    let handle = widest_value();
    long_handle["request"]["userAttributes"]["preferred_username"] = handle.clone().into();
    let refused = invoke(&app, long_handle.clone())
        .await
        .expect_err("the btree refuses it");
    assert!(
        refused.cause().to_string().contains("54000"),
        "{}",
        refused.cause()
    );

    test.db.admin_psql(SCHEMA);
    assert_eq!(
        test.db.admin_psql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND indexdef LIKE '%(handle)'"
        ),
        "users_handle_hash_idx"
    );
    invoke(&app, long_handle).await.expect("recorded now");
    assert_eq!(test.count_users(), 2);
    assert_eq!(
        test.db.admin_psql(&format!(
            "SELECT count(*) FROM public.users WHERE handle = '{handle}'"
        )),
        "1"
    );
}

/// Run again beside a long transaction on the table (an application's batch job, a VACUUM), the
/// file takes no lock, so sign-ups go on; and a step that does need one (here the upgrade from the
/// btree) gives up after its 1 s `lock_timeout` instead of queueing every INSERT behind it.
#[tokio::test]
async fn rerunning_the_schema_beside_a_long_transaction_holds_no_sign_up_back() {
    for (schema, outcome) in [(SCHEMA.to_owned(), "done"), (earlier_schema(), "gave up")] {
        let test = TestApp::with_schema(Stack::shared(), &schema).await;
        let app = test.start().await;
        // An open transaction that wrote to the table holds ROW EXCLUSIVE until it ends.
        let holder = test.admin_session().await;
        holder
            .batch_execute("BEGIN; LOCK TABLE public.users IN ROW EXCLUSIVE MODE")
            .await
            .expect("the long transaction");

        let rerun = test.stack.pg.admin_psql(&test.db.name, SCHEMA, &[]);
        let got = match &rerun {
            Ok(_) => "done",
            Err(e) if format!("{e:#}").contains("lock timeout") => "gave up",
            Err(e) => panic!("sql/schema.sql: {e:#}"),
        };
        assert_eq!(got, outcome, "{rerun:?}");
        invoke(&app, new_user())
            .await
            .expect("a sign-up beside the transaction lands");
        assert_eq!(test.count_users(), 1);
        holder.batch_execute("COMMIT").await.expect("commit");
    }
}
