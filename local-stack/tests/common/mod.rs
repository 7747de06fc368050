//! Helpers shared by the local-stack test binaries.
#![allow(dead_code)] // each test binary uses a different subset

/// Asserts that `result` is an error containing `needle`.
#[track_caller]
pub fn assert_err_contains(result: Result<String, String>, needle: &str) {
    match result {
        Ok(out) => panic!("expected an error containing {needle:?}, got success: {out:?}"),
        Err(e) => assert!(e.contains(needle), "expected {needle:?} in error: {e}"),
    }
}
