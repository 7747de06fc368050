//! Every sample event in `events/` (the ones people invoke by hand) does what the README says.

use std::collections::BTreeSet;

use crate::helpers::{TestApp, event_file, invoke};

enum Expect {
    Row {
        sub: &'static str,
        email: &'static str,
        handle: &'static str,
        display_name: &'static str,
    },
    NoRow,
    Error(&'static str),
    /// An SQS event from the park queue: answered with no failed message, and the parked user's row.
    Replayed {
        sub: &'static str,
        email: &'static str,
        handle: &'static str,
        display_name: &'static str,
    },
}

const SAMPLES: &[(&str, Expect)] = &[
    (
        "sign-up.json",
        Expect::Row {
            sub: "8f4e2b1a-4c2d-4e4b-9a55-0d1c2b3a4f50",
            email: "ada@example.com",
            handle: "ada",
            display_name: "Ada Lovelace",
        },
    ),
    ("forgot-password.json", Expect::NoRow),
    (
        "sign-up-minimal.json",
        Expect::Row {
            sub: "3c9d7e61-2f0a-4d8b-8b1e-5a6f7c8d9e01",
            email: "grace@example.com",
            handle: "grace",
            display_name: "grace",
        },
    ),
    (
        "sign-up-missing-email.json",
        Expect::Error("InvalidUserAttributes"),
    ),
    (
        "parked-user.json",
        Expect::Replayed {
            sub: "b7c8d9e0-0000-4000-8000-00000000a11d",
            email: "parked.user@example.com",
            handle: "parked_user",
            display_name: "Parked User",
        },
    ),
];

#[test]
fn every_file_in_events_has_an_expectation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let files: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("events/")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    let covered: BTreeSet<String> = SAMPLES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(files, covered, "add new sample events to SAMPLES");
}

#[tokio::test]
async fn every_sample_event_behaves_as_documented() {
    for (file, expect) in SAMPLES {
        let test = TestApp::new().await;
        let app = test.start().await;
        let event = event_file(file);
        let result = invoke(&app, event.clone()).await;
        match expect {
            Expect::Row {
                sub,
                email,
                handle,
                display_name,
            } => {
                assert_eq!(result.expect(file), event, "{file}: returns the event");
                assert_eq!(
                    test.query(
                        "SELECT cognito_user_id, email, handle, display_name FROM public.users"
                    ),
                    vec![format!("{sub}|{email}|{handle}|{display_name}")],
                    "{file}"
                );
            }
            Expect::NoRow => {
                assert_eq!(result.expect(file), event, "{file}: returns the event");
                assert_eq!(test.count_users(), 0, "{file}");
            }
            Expect::Error(error_type) => {
                let error = result.expect_err(file);
                assert_eq!(error.error_type(), *error_type, "{file}: {error}");
                assert_eq!(test.count_users(), 0, "{file}");
            }
            Expect::Replayed {
                sub,
                email,
                handle,
                display_name,
            } => {
                assert_eq!(
                    result.expect(file),
                    serde_json::json!({"batchItemFailures": []}),
                    "{file}: no failed message"
                );
                assert_eq!(
                    test.query(
                        "SELECT cognito_user_id, email, handle, display_name FROM public.users"
                    ),
                    vec![format!("{sub}|{email}|{handle}|{display_name}")],
                    "{file}"
                );
            }
        }
    }
}
