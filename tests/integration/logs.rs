//! The logs of an invocation carry the request id and the sub, and never personal data or secrets.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{self as subscriber, filter::LevelFilter};

use crate::helpers::{TestApp, invoke, sign_up, unique};

#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("log buffer").clone()).expect("utf-8 logs")
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Captures everything, at TRACE, in the JSON format Lambda's log controls select.
pub(crate) fn capture() -> (Captured, tracing::dispatcher::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = subscriber::fmt()
        .json()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(captured.clone())
        .finish();
    let guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    (captured, guard)
}

pub(crate) fn assert_clean(logs: &str, forbidden: &[&str]) {
    for word in forbidden {
        assert!(!logs.contains(word), "logs contain {word:?}:\n{logs}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn invocation_logs_hold_request_id_and_sub_but_no_personal_data_or_secrets() {
    let test = TestApp::new().await;
    let sub = format!("sub-{}", unique());
    let email = format!("private.{}@example.com", unique());
    let name = "Zelda Secretname";
    let handle = "zelda_handle_private";
    let (captured, _guard) = capture();

    let app = test.start().await;
    let before = captured.text().len();
    invoke(&app, sign_up(&sub, &email, Some(handle), Some(name)))
        .await
        .expect("sign-up");
    let all = captured.text();
    let invocation = &all[before..];

    assert!(
        !invocation.trim().is_empty(),
        "the invocation logged nothing"
    );
    for line in invocation.lines() {
        assert!(
            line.contains("\"request_id\":\"req-"),
            "no request id: {line}"
        );
        assert!(
            line.contains(&format!("\"sub\":\"{sub}\"")),
            "no sub: {line}"
        );
    }
    assert!(
        invocation.contains("\"outcome\":\"inserted\""),
        "{invocation}"
    );
    assert_clean(
        &all,
        &[&email, name, handle, &test.db.app_password, "password="],
    );
}

#[tokio::test(flavor = "current_thread")]
async fn failure_logs_hold_no_password_either() {
    let test = TestApp::new().await;
    // The secret now holds a wrong password: the login fails, the secret is read again, still
    // wrong, and the error is reported.
    let wrong = format!("wrong-password-{}", unique());
    test.db.put_secret_password(&wrong);
    let (captured, _guard) = capture();
    let app = test.start().await;
    let email = format!("private.{}@example.com", unique());
    let error = invoke(
        &app,
        sign_up(
            &format!("sub-{}", unique()),
            &email,
            None,
            Some("Private Name"),
        ),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    let message = error.to_string();
    let logs = captured.text();
    assert_clean(
        &format!("{logs}\n{message}"),
        &[&wrong, &test.db.app_password, &email, "Private Name"],
    );
    assert!(logs.contains("invocation failed"), "{logs}");
    assert_eq!(test.count_users(), 0);
}
