//! The PostConfirmation event: its shape checked against what the function reads, then parsed.
//!
//! Every error names a place in the event (a path built from the field names this module knows)
//! and the JSON type expected there, and nothing else. No text from the event, and no text from
//! serde (which quotes input values), can reach a message: the checks below build their messages
//! from fixed strings only, and a deserialisation error that slips past them is reported as a
//! fixed sentence.

use std::fmt;

use aws_lambda_events::event::cognito::{
    CognitoEventUserPoolsPostConfirmation, CognitoEventUserPoolsPostConfirmationTriggerSource,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Where in the event something is wrong, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Well-formed JSON that serde_json still refuses, even with its lone surrogates read as NULs
    /// ([`read`]): a number out of range, or nesting deeper than 128 levels.
    #[error(
        "the event is JSON this function cannot read (a number out of range, or nesting too deep)"
    )]
    Unreadable,
    #[error("the event is not a JSON object")]
    NotAnObject,
    #[error("`{0}` is missing")]
    Missing(Path),
    #[error("`{path}` must be {expected}")]
    WrongType { path: Path, expected: &'static str },
    #[error("`triggerSource` is not a PostConfirmation trigger source")]
    NotPostConfirmation,
    #[error("`triggerSource` is a PostConfirmation source this function does not know")]
    UnknownTriggerSource,
    #[error("the event does not have the shape of a PostConfirmation event")]
    Shape,
}

/// A dotted path of field names from a fixed list (`request.userAttributes`). A user attribute's
/// name is shown only when it looks like one (letters, digits, `_`, `:`, `-`, at most 64);
/// anything else shows as `[…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn path(known: &'static str) -> Path {
    Path(known.to_owned())
}

fn attribute_path(map: &'static str, key: &str) -> Path {
    let plausible = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'));
    if plausible {
        Path(format!("{map}.{key}"))
    } else {
        Path(format!("{map}[…]"))
    }
}

/// What the event asks for.
pub enum Trigger {
    /// `PostConfirmation_ConfirmSignUp` (also sent for AdminConfirmSignUp).
    SignUp(Box<CognitoEventUserPoolsPostConfirmation>),
    /// `PostConfirmation_ConfirmForgotPassword`.
    ForgotPassword,
}

/// Reads the event's JSON text. serde_json refuses an escaped lone surrogate (`"\ud800"`: half
/// of a UTF-16 pair, which no UTF-8 string can hold), and Cognito passes one on from what a client
/// sent: an app that cut a string between the two halves of an emoji, say. Such an event is read
/// again with each lone surrogate as a NUL, which no value the row takes may hold (so it is
/// refused as `InvalidUserAttributes`), and which anywhere else (client metadata, an attribute
/// the row does not take) changes nothing: a stray half character there must not lose the user.
pub fn read(json: &str) -> Result<Value, EventError> {
    serde_json::from_str(json)
        .or_else(|_| serde_json::from_str(&lone_surrogates_as_nul(json)))
        .map_err(|_| EventError::Unreadable)
}

/// `json`, well-formed JSON text, with each `\uXXXX` escape of a lone surrogate (a high one not
/// followed by a low one, or a low one not after a high one) written `\u0000` instead. In
/// well-formed JSON every backslash starts an escape inside a string, so no string tracking is
/// needed.
fn lone_surrogates_as_nul(json: &str) -> String {
    /// The code unit of a `\uXXXX` escape at byte `at`.
    fn unit(json: &str, at: usize) -> Option<u16> {
        let hex = json.get(at..at + 6)?.strip_prefix("\\u")?;
        u16::from_str_radix(hex, 16).ok()
    }
    let mut out = String::with_capacity(json.len());
    let (mut copied, mut at) = (0, 0);
    while let Some(found) = json.get(at..).and_then(|rest| rest.find('\\')) {
        let escape = at + found;
        let length = match unit(json, escape) {
            // A pair: both escapes stay.
            Some(0xD800..=0xDBFF) if matches!(unit(json, escape + 6), Some(0xDC00..=0xDFFF)) => 12,
            Some(0xD800..=0xDFFF) => {
                out.push_str(json.get(copied..escape).unwrap_or_default());
                out.push_str("\\u0000");
                copied = escape + 6;
                6
            }
            Some(_) => 6,
            // `\"`, `\\`, `\n`, ...: two characters.
            None => 2,
        };
        at = escape + length;
    }
    out.push_str(json.get(copied..).unwrap_or_default());
    out
}

/// Checks the event's shape and parses it.
pub fn parse(payload: &Value) -> Result<Trigger, EventError> {
    let event = payload.as_object().ok_or(EventError::NotAnObject)?;
    let source = match event.get("triggerSource") {
        None => return Err(EventError::Missing(path("triggerSource"))),
        Some(Value::String(source)) => source,
        Some(_) => return Err(wrong("triggerSource", "a string")),
    };
    if !source.starts_with("PostConfirmation_") {
        return Err(EventError::NotPostConfirmation);
    }
    for field in ["version", "region", "userPoolId", "userName"] {
        optional_string(event, field, field)?;
    }
    let caller = required_object(event, "callerContext", "callerContext")?;
    optional_string(caller, "awsSdkVersion", "callerContext.awsSdkVersion")?;
    optional_string(caller, "clientId", "callerContext.clientId")?;
    let request = required_object(event, "request", "request")?;
    string_map(request, "userAttributes", "request.userAttributes")?;
    string_map(request, "clientMetadata", "request.clientMetadata")?;
    required_object(event, "response", "response")?;

    let known = CognitoEventUserPoolsPostConfirmationTriggerSource::deserialize(&Value::String(
        source.clone(),
    ))
    .map_err(|_| EventError::UnknownTriggerSource)?;
    match known {
        CognitoEventUserPoolsPostConfirmationTriggerSource::ConfirmSignUp => {
            // The checks above cover every field this type reads; should it still refuse the
            // event, serde's message (which may quote a value) is dropped.
            CognitoEventUserPoolsPostConfirmation::deserialize(payload)
                .map(|event| Trigger::SignUp(Box::new(event)))
                .map_err(|_| EventError::Shape)
        }
        CognitoEventUserPoolsPostConfirmationTriggerSource::ConfirmForgotPassword => {
            Ok(Trigger::ForgotPassword)
        }
        _ => Err(EventError::UnknownTriggerSource),
    }
}

fn wrong(at: &'static str, expected: &'static str) -> EventError {
    EventError::WrongType {
        path: path(at),
        expected,
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    at: &'static str,
) -> Result<(), EventError> {
    match object.get(field) {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(wrong(at, "a string or null")),
    }
}

fn required_object<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    at: &'static str,
) -> Result<&'a Map<String, Value>, EventError> {
    match object.get(field) {
        None => Err(EventError::Missing(path(at))),
        Some(Value::Object(inner)) => Ok(inner),
        Some(_) => Err(wrong(at, "an object")),
    }
}

/// `userAttributes` / `clientMetadata`: absent, null, or an object whose values are strings.
fn string_map(
    object: &Map<String, Value>,
    field: &str,
    at: &'static str,
) -> Result<(), EventError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => match map.iter().find(|(_, value)| !value.is_string()) {
            None => Ok(()),
            Some((key, _)) => Err(EventError::WrongType {
                path: attribute_path(at, key),
                expected: "a string",
            }),
        },
        Some(_) => Err(wrong(at, "an object of strings, or null")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lone_surrogates_are_read_as_nul_and_pairs_and_other_escapes_kept() {
        let cases = [
            (r#"{"a":"x\ud800y"}"#, r#"{"a":"x\u0000y"}"#),
            (r#"{"a":"\udc00"}"#, r#"{"a":"\u0000"}"#),
            (r#"{"a":"\ud800"}"#, r#"{"a":"\u0000"}"#),
            (
                r#"{"a":"\ud800\ud800\udc00"}"#,
                r#"{"a":"\u0000\ud800\udc00"}"#,
            ),
            (r#"{"\udfff":"é"}"#, r#"{"\u0000":"é"}"#),
            (
                r#"{"a":"\uD83D\uDE00\uDC00"}"#,
                r#"{"a":"\uD83D\uDE00\u0000"}"#,
            ),
            (r#"{"a":"\ud800\u0041"}"#, r#"{"a":"\u0000\u0041"}"#),
            (r#"{"a":"\ud800\\udc00"}"#, r#"{"a":"\u0000\\udc00"}"#),
            (r#"{"a":"\ud800\n"}"#, r#"{"a":"\u0000\n"}"#),
            // A pair split between a key and its value is two lone halves.
            (r#"{"\ud800":"\udc00"}"#, r#"{"\u0000":"\u0000"}"#),
        ];
        for (json, expected) in cases {
            assert!(serde_json::from_str::<Value>(json).is_err(), "{json}");
            let out = lone_surrogates_as_nul(json);
            assert_eq!(out, expected, "{json}");
            assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
        }
        // A pair, other escapes, and an escaped backslash before the letters "ud800".
        let unchanged = [r#"{"a":"\ud83d\ude00 \u00e9 \"\n"}"#, r#"{"a":"\\ud800"}"#];
        for json in unchanged {
            assert_eq!(lone_surrogates_as_nul(json), json);
        }
        let value = read(r#"{"a":"x\ud800y","b":"\ud83d\ude00"}"#).expect("read");
        assert_eq!(value, json!({"a": "x\0y", "b": "😀"}));
        assert_eq!(read(r#"{"a":1e400}"#), Err(EventError::Unreadable));
    }

    /// A sign-up confirmation with these user attributes (also used by the handler's tests).
    pub(crate) fn sign_up_with(attributes: Value) -> Value {
        json!({
            "version": "1",
            "region": "us-east-1",
            "userPoolId": "us-east-1_example",
            "userName": "cognito-user",
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "client"},
            "triggerSource": "PostConfirmation_ConfirmSignUp",
            "request": {"userAttributes": attributes},
            "response": {}
        })
    }

    fn sign_up() -> Value {
        sign_up_with(json!({"sub": "s-1", "email": "a@example.com"}))
    }

    /// Hostile strings: each one, or any long piece of it, in a message would be a leak.
    const MARK: &str = "LEAKED";
    fn hostile_strings() -> Vec<String> {
        vec![
            format!("{MARK}\"quoted\" {MARK}"),
            format!("a\\\"b{MARK}\\"),
            format!("`{MARK}` ``{MARK}"),
            format!("\u{41}\u{2028}{MARK}\u{0}\u{202e}"),
            format!("', expected a map {MARK}"),
            format!("{MARK}{}", "x".repeat(10_000)),
            format!("{MARK}@example.com"),
        ]
    }

    /// Wrong-typed values built from the hostile strings: every JSON type, nested.
    fn hostile_values() -> Vec<Value> {
        let mut values = vec![json!(12345678), json!(-1.5e300), json!(true), json!(null)];
        for text in hostile_strings() {
            values.push(json!(text.clone()));
            values.push(json!([text.clone(), {text.clone(): text.clone()}]));
            values.push(json!({text.clone(): text.clone(), "nested": {"deeper": [text]}}));
        }
        values
    }

    /// Every place the parser reads, as JSON pointers into the sample.
    const PLACES: &[&str] = &[
        "",
        "/version",
        "/triggerSource",
        "/region",
        "/userPoolId",
        "/userName",
        "/callerContext",
        "/callerContext/awsSdkVersion",
        "/callerContext/clientId",
        "/request",
        "/request/userAttributes",
        "/request/userAttributes/sub",
        "/request/userAttributes/email",
        "/request/clientMetadata",
        "/response",
    ];

    fn replace(event: &mut Value, pointer: &str, value: Value) {
        if pointer.is_empty() {
            *event = value;
            return;
        }
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut *event
        } else {
            event.pointer_mut(parent).unwrap()
        };
        parent
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value);
    }

    #[test]
    fn no_message_holds_a_value_from_the_event_whatever_is_put_wherever() {
        let mut checked = 0;
        for place in PLACES {
            for value in hostile_values() {
                let mut event = sign_up();
                replace(&mut event, place, value);
                if let Err(error) = parse(&event) {
                    let message = error.to_string();
                    assert!(!message.contains(MARK), "{place}: {message}");
                    assert!(message.len() < 200, "{place}: {message}");
                    checked += 1;
                }
            }
        }
        // Hostile keys: attribute names that are not plausible names are not shown either.
        for key in hostile_strings() {
            let mut event = sign_up();
            event["request"]["userAttributes"][&key] = json!(1);
            let message = parse(&event).err().expect("a number attribute").to_string();
            assert!(!message.contains(MARK), "{message}");
            assert!(message.contains("request.userAttributes[…]"), "{message}");
            checked += 1;
        }
        // Unicode escapes as they arrive, in JSON text: \u0022 is a quote, \u005c a backslash.
        let text = r#"{"triggerSource": "PostConfirmation_ConfirmSignUp", "callerContext": {},
            "request": {"userAttributes": {"email": {"LEAKED\u0022\u005c\u0060": "LEAKED\u2028"}}},
            "response": {}}"#;
        let event: Value = serde_json::from_str(text).unwrap();
        let message = parse(&event).err().expect("an object email").to_string();
        assert!(!message.contains(MARK), "{message}");
        assert_eq!(message, "`request.userAttributes.email` must be a string");
        assert!(checked > 100, "only {checked} cases failed to parse");
    }

    #[test]
    fn errors_name_the_path_and_the_expected_type() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("", json!([1]), "the event is not a JSON object"),
            (
                "/triggerSource",
                json!(7),
                "`triggerSource` must be a string",
            ),
            (
                "/userName",
                json!({"a": 1}),
                "`userName` must be a string or null",
            ),
            (
                "/callerContext",
                json!("x"),
                "`callerContext` must be an object",
            ),
            (
                "/callerContext/clientId",
                json!(1),
                "`callerContext.clientId` must be a string or null",
            ),
            ("/request", json!("x"), "`request` must be an object"),
            (
                "/request/userAttributes",
                json!([1]),
                "`request.userAttributes` must be an object of strings, or null",
            ),
            (
                "/request/userAttributes/email",
                json!(["a@example.com"]),
                "`request.userAttributes.email` must be a string",
            ),
            (
                "/request/clientMetadata",
                json!(1),
                "`request.clientMetadata` must be an object of strings, or null",
            ),
            ("/response", json!(null), "`response` must be an object"),
            (
                "/triggerSource",
                json!("PreSignUp_SignUp"),
                "`triggerSource` is not a PostConfirmation trigger source",
            ),
            (
                "/triggerSource",
                json!("PostConfirmation_Something"),
                "a PostConfirmation source this function does not know",
            ),
        ];
        for (place, value, expected) in cases {
            let mut event = sign_up();
            replace(&mut event, place, value);
            let message = parse(&event).err().expect(place).to_string();
            assert!(message.contains(expected), "{place}: {message}");
        }
        for missing in ["triggerSource", "callerContext", "request", "response"] {
            let mut event = sign_up();
            event.as_object_mut().unwrap().remove(missing);
            let error = parse(&event).err().expect(missing);
            assert_eq!(error.to_string(), format!("`{missing}` is missing"));
        }
    }

    #[test]
    fn nulls_and_absent_optional_fields_are_accepted() {
        let mut event = sign_up();
        for field in ["version", "region", "userPoolId"] {
            event[field] = json!(null);
        }
        event["request"]["clientMetadata"] = json!(null);
        event["callerContext"] = json!({});
        assert!(matches!(parse(&event), Ok(Trigger::SignUp(_))));
        event["triggerSource"] = json!("PostConfirmation_ConfirmForgotPassword");
        assert!(matches!(parse(&event), Ok(Trigger::ForgotPassword)));
    }
}
