//! Bad and unusual input: each case either lands exactly as given or fails clearly and writes
//! nothing.

use std::time::Duration;

use cognito_post_confirmation::handler::Answer;
use serde_json::{Value, json};

use crate::helpers::{TestApp, invoke, invoke_json, sign_up, unique, widest_value};

enum Expect {
    /// One row with exactly these handle and display name (email and sub as sent).
    Lands {
        handle: String,
        display_name: String,
    },
    /// An error of this type; no row.
    Fails(&'static str),
}

struct Case {
    name: &'static str,
    event: Value,
    expect: Expect,
}

fn lands(handle: &str, display_name: &str) -> Expect {
    Expect::Lands {
        handle: handle.to_owned(),
        display_name: display_name.to_owned(),
    }
}

fn with_attributes(
    mut event: Value,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Value {
    edit(
        event["request"]["userAttributes"]
            .as_object_mut()
            .expect("attributes"),
    );
    event
}

fn cases() -> Vec<Case> {
    let base = || {
        sign_up(
            &format!("sub-{}", unique()),
            "base@example.com",
            Some("base"),
            Some("Base"),
        )
    };
    let longest = "ü".repeat(2048);
    let widest = widest_value();
    let too_long = "a".repeat(2049);
    vec![
        Case {
            name: "missing sub",
            event: with_attributes(base(), |a| drop(a.remove("sub"))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "empty sub",
            event: with_attributes(base(), |a| drop(a.insert("sub".into(), json!("")))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "missing email",
            event: with_attributes(base(), |a| drop(a.remove("email"))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "empty email",
            event: with_attributes(base(), |a| drop(a.insert("email".into(), json!("")))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "values of Cognito's maximum length (2048)",
            event: with_attributes(base(), |a| {
                a.insert("name".into(), json!(longest));
                a.insert("preferred_username".into(), json!(longest));
            }),
            expect: lands(&longest, &longest),
        },
        Case {
            name: "a handle and name of 2048 incompressible four-byte characters",
            event: with_attributes(base(), |a| {
                a.insert("name".into(), json!(widest));
                a.insert("preferred_username".into(), json!(widest));
            }),
            expect: lands(&widest, &widest),
        },
        Case {
            name: "a value over the maximum",
            event: with_attributes(base(), |a| drop(a.insert("name".into(), json!(too_long)))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "non-ASCII names and handles",
            event: with_attributes(base(), |a| {
                a.insert("name".into(), json!("Zoë Ωmega 山田太郎 👩‍💻"));
                a.insert("preferred_username".into(), json!("zoë_山田"));
            }),
            expect: lands("zoë_山田", "Zoë Ωmega 山田太郎 👩‍💻"),
        },
        Case {
            name: "quotes and SQL metacharacters",
            event: with_attributes(base(), |a| {
                a.insert("name".into(), json!("Robert'); DROP TABLE users;--"));
                a.insert("preferred_username".into(), json!("o'brien\"\\%_$1"));
            }),
            expect: lands("o'brien\"\\%_$1", "Robert'); DROP TABLE users;--"),
        },
        Case {
            name: "a NUL character",
            event: with_attributes(base(), |a| drop(a.insert("name".into(), json!("a\u{0}b")))),
            expect: Expect::Fails("InvalidUserAttributes"),
        },
        Case {
            name: "an unknown trigger source",
            event: {
                let mut e = base();
                e["triggerSource"] = json!("PostConfirmation_ConfirmSomethingElse");
                e
            },
            expect: Expect::Fails("InvalidEvent"),
        },
        Case {
            name: "another trigger's event",
            event: {
                let mut e = base();
                e["triggerSource"] = json!("PreSignUp_SignUp");
                e
            },
            expect: Expect::Fails("InvalidEvent"),
        },
        Case {
            name: "extra unknown fields everywhere",
            event: {
                let mut e = with_attributes(base(), |a| {
                    a.insert("custom:plan".into(), json!("pro"));
                });
                e["newTopLevel"] = json!({"a": 1});
                e["request"]["somethingElse"] = json!([1]);
                e
            },
            expect: lands("base", "Base"),
        },
        Case {
            name: "a request that is not an object",
            event: {
                let mut e = base();
                e["request"] = json!(["sub", "email"]);
                e
            },
            expect: Expect::Fails("InvalidEvent"),
        },
        Case {
            name: "attributes that are not strings",
            event: with_attributes(base(), |a| drop(a.insert("email".into(), json!(42)))),
            expect: Expect::Fails("InvalidEvent"),
        },
        Case {
            name: "not an object at all",
            event: json!("PostConfirmation_ConfirmSignUp"),
            expect: Expect::Fails("InvalidEvent"),
        },
    ]
}

#[tokio::test]
async fn each_bad_input_lands_exactly_or_fails_clearly_and_writes_nothing() {
    for case in cases() {
        let test = TestApp::new().await;
        let app = test.start().await;
        let result = invoke(&app, case.event.clone()).await;
        match case.expect {
            Expect::Lands {
                handle,
                display_name,
            } => {
                let returned = result.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert_eq!(
                    returned, case.event,
                    "{}: event returned unchanged",
                    case.name
                );
                let sub = case.event["request"]["userAttributes"]["sub"]
                    .as_str()
                    .expect("sub");
                let rows = test
                    .query("SELECT cognito_user_id, email, handle, display_name FROM public.users");
                assert_eq!(
                    rows,
                    vec![format!("{sub}|base@example.com|{handle}|{display_name}")],
                    "{}",
                    case.name
                );
            }
            Expect::Fails(error_type) => {
                let error = result.expect_err(case.name);
                assert_eq!(error.error_type(), error_type, "{}: {error}", case.name);
                assert_eq!(test.count_users(), 0, "{}: wrote nothing", case.name);
            }
        }
    }
}

/// An escaped lone surrogate (`"\ud800"`, half of an emoji a client app cut in two), which
/// serde_json refuses. Parsed by the runtime, it failed there, before the function ran, with a
/// message for the caller naming the field. Now: where the row does not look (client metadata, an
/// attribute it does not take) it changes nothing, and the event comes back byte for byte; in a
/// value the row takes, it is refused like a NUL, with the fixed message. A number too large for
/// serde_json is `InvalidEvent`.
#[tokio::test]
async fn a_lone_surrogate_loses_no_user_and_is_refused_only_where_the_row_takes_it() {
    let marked = |pointer: &str, text: &str| {
        let mut event = sign_up(&format!("sub-{}", unique()), "s@example.com", None, None);
        event["request"]["clientMetadata"] = json!({"promo-code-7": "ok"});
        event["request"]["userAttributes"]["locale"] = json!("en");
        event["request"]["userAttributes"]["name"] = json!("Ada");
        *event.pointer_mut(pointer).expect("field") = json!("MARK");
        event.to_string().replace("\"MARK\"", text)
    };
    let cases = [
        (
            "/request/clientMetadata/promo-code-7",
            r#""x\ud800y""#,
            None,
        ),
        ("/request/userAttributes/locale", r#""\udc00""#, None),
        (
            "/request/userAttributes/email",
            r#""a\ud83d@example.com""#,
            Some("InvalidUserAttributes"),
        ),
        (
            "/request/userAttributes/name",
            r#""\ud83dAda""#,
            Some("InvalidUserAttributes"),
        ),
        (
            "/request/clientMetadata/promo-code-7",
            "1e400",
            Some("InvalidEvent"),
        ),
    ];
    for (pointer, text, fails) in cases {
        let test = TestApp::new().await;
        let app = test.start().await;
        let json = marked(pointer, text);
        assert!(
            serde_json::from_str::<Value>(&json).is_err(),
            "serde_json refuses {json}"
        );
        let result = invoke_json(&app, &json, Duration::from_secs(5)).await;
        match fails {
            None => {
                let answer = result.unwrap_or_else(|e| panic!("{pointer} {text}: {e}"));
                assert!(matches!(answer, Answer::Event(_)), "{pointer}: {answer:?}");
                // What lambda_runtime sends back: serde_json::to_vec of the answer.
                let sent = serde_json::to_vec(&answer).expect("serialised");
                assert_eq!(
                    sent,
                    json.as_bytes(),
                    "{pointer}: the event comes back as it came"
                );
                assert_eq!(test.count_users(), 1, "{pointer} {text}");
            }
            Some(error_type) => {
                let failure = result.expect_err(pointer);
                assert_eq!(failure.error_type(), error_type, "{pointer} {text}");
                let message = failure.to_string();
                for private in [
                    "promo",
                    "clientMetadata",
                    "email",
                    "name",
                    "surrogate",
                    "1e400",
                ] {
                    assert!(!message.contains(private), "{pointer}: {message}");
                }
                assert_eq!(test.count_users(), 0, "{pointer} {text}");
            }
        }
    }
}

/// The product's decision: `handle` is not unique. A second user choosing a taken
/// `preferred_username` is still recorded, and the first user's row is never touched.
#[tokio::test]
async fn two_users_with_the_same_handle_are_both_recorded_and_the_first_is_untouched() {
    let test = TestApp::new().await;
    let app = test.start().await;
    let first = format!("first-{}", unique());
    let second = format!("second-{}", unique());
    invoke(
        &app,
        sign_up(&first, "first@example.com", Some("sam"), Some("Sam One")),
    )
    .await
    .expect("first");
    let before = test.query(&format!(
        "SELECT uuid, email, handle, display_name, created_at FROM public.users WHERE cognito_user_id = '{first}'"
    ));
    invoke(
        &app,
        sign_up(&second, "second@example.com", Some("sam"), Some("Sam Two")),
    )
    .await
    .expect("second");
    let after = test.query(&format!(
        "SELECT uuid, email, handle, display_name, created_at FROM public.users WHERE cognito_user_id = '{first}'"
    ));
    assert_eq!(before, after);
    assert_eq!(
        test.query("SELECT cognito_user_id, handle FROM public.users ORDER BY email"),
        vec![format!("{first}|sam"), format!("{second}|sam")]
    );
}
