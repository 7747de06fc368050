//! The test kit shared by the function's tests, the backfill's tests and the benchmark: sample
//! events, the AWS SDK pointed at the local stack, and `psql` as a client would run it.

use std::process::Command;

use aws_credential_types::Credentials;
use serde_json::Value;

use crate::TestDb;

/// A sign-up confirmation like events/sign-up.json, for `user_name` with exactly `attributes`
/// (a JSON object of strings).
pub fn sign_up_event(user_name: &str, attributes: Value) -> Value {
    let sample = include_str!("../../events/sign-up.json");
    let mut event: Value = serde_json::from_str(sample).expect("events/sign-up.json");
    event["userName"] = user_name.into();
    event["request"]["userAttributes"] = attributes;
    event
}

/// The fixed credentials and region of [`sdk_config`] (what the IAM token verifier checks
/// tokens against, too).
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

/// The AWS SDK configuration for the local stack's moto at `endpoint`: region `us-east-1`, fixed
/// test credentials, nothing read from the developer's profile or environment.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "local",
        ))
        .load()
        .await
}

/// Runs `sql` with `psql` against `conninfo` (a libpq connection string) with `password`, with
/// none of the developer's `PG*` variables; connecting gives up after 5 s. Ok(stdout, trimmed) or
/// Err(the exit status and stderr).
pub fn psql(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    crate::process::without_libpq_env(&mut cmd)
        .args([conninfo, "-XqAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .envs([("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "5")]);
    let out = crate::process::run(cmd, "").map_err(|e| format!("{e:#}"))?;
    Ok(out.trim().to_owned())
}

/// Makes the next `n` INSERTs into `db`'s public.users fail with SQLSTATE 40001, as Aurora DSQL
/// does when a concurrent transaction committed first. [`insert_attempts`] counts every attempt
/// (a sequence: unlike a table, it is not rolled back with the failed INSERT).
pub fn conflict_first(db: &TestDb, n: u32) {
    db.admin_psql(&format!(
        "CREATE SEQUENCE public.insert_attempts;
         CREATE FUNCTION public.conflict_first() RETURNS trigger LANGUAGE plpgsql
           SECURITY DEFINER SET search_path = public AS $$
         BEGIN
           IF nextval('public.insert_attempts') <= {n} THEN
             RAISE EXCEPTION 'change conflicts with another transaction, please retry: (OC000)'
               USING ERRCODE = '40001';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER conflict_first BEFORE INSERT ON public.users
           FOR EACH ROW EXECUTE FUNCTION public.conflict_first();"
    ));
}

/// The INSERTs tried since [`conflict_first`].
pub fn insert_attempts(db: &TestDb) -> u32 {
    let last = db.admin_psql("SELECT last_value FROM public.insert_attempts");
    last.trim().parse().expect("a number")
}
