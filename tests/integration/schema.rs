//! sql/schema.sql run again on a table an earlier version made.

use local_stack::Stack;

use crate::helpers::{SCHEMA, TestApp, invoke, new_user, widest_value};

/// sql/schema.sql as versions before the hash index had it: a btree on `handle`, and nothing that
/// drops it.
fn earlier_schema() -> String {
    let earlier = SCHEMA
        .replace(
            "users_handle_hash_idx ON public.users USING hash (handle)",
            "users_handle_idx ON public.users (handle)",
        )
        .replace(
            "'public.users_handle_hash_idx'",
            "'public.users_handle_idx'",
        )
        .replace("DROP INDEX IF EXISTS public.users_handle_idx;", "");
    assert_eq!(
        earlier.matches("users_handle").count(),
        2,
        "the test no longer matches sql/schema.sql"
    );
    earlier
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
