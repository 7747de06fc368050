//! sql/schema.sql run again on a table an earlier version made.

use local_stack::Stack;

use crate::helpers::{SCHEMA, TestApp, invoke, new_user, widest_value};

/// Earlier versions indexed `handle` with a btree, which refuses a row whose handle takes more
/// than 2704 bytes and so lost that user. Running the current file replaces it with the hash
/// index, keeps the rows, and then such a user is recorded.
#[tokio::test]
async fn rerunning_the_schema_replaces_the_btree_on_handle_and_long_handles_land() {
    let earlier = SCHEMA
        .replace(
            "CREATE INDEX IF NOT EXISTS users_handle_hash_idx ON public.users USING hash (handle);",
            "CREATE INDEX IF NOT EXISTS users_handle_idx ON public.users (handle);",
        )
        .replace("DROP INDEX IF EXISTS public.users_handle_idx;", "");
    assert_eq!(
        earlier.matches("users_handle").count(),
        1,
        "the test no longer matches sql/schema.sql"
    );
    let test = TestApp::with_schema(Stack::shared(), &earlier).await;
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
