//! Helpers shared by the test binaries: run `psql` as a client would.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;

/// Runs `sql` with `psql` against `conninfo` (a libpq connection string) with `password`.
/// Ok(stdout) or Err(stderr). Connection attempts give up after 5 s.
pub fn psql(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .args([
            conninfo,
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Asserts that `result` is an error containing `needle`.
#[track_caller]
pub fn assert_err_contains(result: Result<String, String>, needle: &str) {
    match result {
        Ok(out) => panic!("expected an error containing {needle:?}, got success: {out:?}"),
        Err(e) => assert!(e.contains(needle), "expected {needle:?} in error: {e}"),
    }
}

pub const SCHEMA: &str = "CREATE TABLE users (
    sub uuid PRIMARY KEY,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);";
