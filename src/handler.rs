//! The Lambda handler: parse the Cognito event, record the user, return the event unchanged.

use std::fmt;
use std::time::Instant;

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::{Instrument, field, info, info_span};

use crate::app::{App, RecordError};
use crate::event::{self, EventError, Trigger};
use crate::metrics::Tally;
use crate::park::PARK_TIMEOUT;
use crate::replay;
use crate::user::{InvalidUser, NewUser};

/// What the event asks of us.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// `PostConfirmation_ConfirmSignUp` (also AdminConfirmSignUp): record this user.
    Record(NewUser),
    /// `PostConfirmation_ConfirmForgotPassword`: the user exists already; write nothing.
    Nothing,
}

/// Why an invocation failed, in full: what the operator reads in the log. Each variant has a
/// stable `errorType`. None of these messages holds a value from the event, a password or
/// personal data, but they do name hosts, ports and the secret: they are never returned to the
/// caller (see [`Failure`]).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("invalid PostConfirmation event: {0}")]
    InvalidEvent(#[from] EventError),
    #[error("invalid user attributes: {0}")]
    InvalidUser(#[from] InvalidUser),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl HandlerError {
    /// The stable `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::InvalidUser(_) => "InvalidUserAttributes",
            HandlerError::Record(RecordError::Credentials(_)) => "CredentialsError",
            HandlerError::Record(RecordError::Connect { .. }) => "DatabaseConnectionError",
            HandlerError::Record(RecordError::Insert { .. }) => "DatabaseError",
            HandlerError::Record(RecordError::Timeout { .. }) => "Timeout",
        }
    }

    /// The fixed sentence the caller sees for this error type.
    fn public_sentence(&self) -> &'static str {
        match self {
            HandlerError::InvalidEvent(_) => "The confirmation event was not understood.",
            HandlerError::InvalidUser(_) => {
                "The account lacks a required attribute or has one that cannot be stored."
            }
            HandlerError::Record(RecordError::Timeout { .. }) => {
                "Recording the account took too long. Please try again later."
            }
            HandlerError::Record(_) => {
                "The account could not be recorded just now. Please try again later."
            }
        }
    }
}

/// A failed invocation as the caller sees it. Cognito passes Lambda's `errorMessage` on to the app
/// ("PostConfirmation failed with error …"), that is, to anonymous users: so the message is a
/// fixed sentence per `errorType` and the request id that finds the log line, and nothing else.
/// [`Failure::cause`] is the full error, which is logged.
pub struct Failure {
    cause: HandlerError,
    request_id: String,
}

impl Failure {
    pub(crate) fn new(cause: HandlerError, request_id: &str) -> Self {
        Self {
            cause,
            request_id: request_id.to_owned(),
        }
    }

    pub fn error_type(&self) -> &'static str {
        self.cause.error_type()
    }

    /// The full error, for the log (and tests).
    pub fn cause(&self) -> &HandlerError {
        &self.cause
    }
}

/// The public message: `<sentence> (<errorType>, request <id>)`.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, request {})",
            self.cause.public_sentence(),
            self.error_type(),
            self.request_id
        )
    }
}

/// The runtime logs a handler's error with `Debug`; our own log line already has the detail.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Failure({}, request {})",
            self.error_type(),
            self.request_id
        )
    }
}

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Self {
        Diagnostic {
            error_type: failure.error_type().to_owned(),
            error_message: failure.to_string(),
        }
    }
}

/// Turns the raw event into what it asks for. Nothing is written unless this succeeds.
pub fn parse(payload: &Value) -> Result<Action, HandlerError> {
    match event::parse(payload)? {
        Trigger::SignUp(event) => {
            let header = &event.cognito_event_user_pools_header;
            let user = NewUser::from_attributes(
                header.user_name.as_deref(),
                &event.request.user_attributes,
            )?;
            Ok(Action::Record(user))
        }
        Trigger::ForgotPassword => Ok(Action::Nothing),
    }
}

/// What an invocation answers: the Cognito event exactly as it arrived (Cognito requires it back
/// unchanged), or the park queue's batch response.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Answer {
    Event(Box<RawValue>),
    Batch(Value),
}

/// Handles one invocation: a Cognito event is answered with the event exactly as received, as
/// Cognito requires; an SQS event from the park queue is replayed ([`replay`]).
///
/// The runtime hands over the payload unparsed, and [`event::read`] reads it: parsed into a
/// `Value` by the runtime, an event holding an escaped lone surrogate (in a client metadata value,
/// say) failed there, before this code ran, with an error message for the caller that quoted the
/// field's path.
pub async fn handle(app: &App, event: LambdaEvent<Box<RawValue>>) -> Result<Answer, Failure> {
    let (raw, context) = event.into_parts();
    let payload = event::read(raw.get());
    if let Ok(payload) = &payload
        && let Some(records) = replay::sqs_records(payload)
    {
        return Ok(Answer::Batch(replay::handle(app, records, &context).await));
    }
    let span = info_span!(
        "post_confirmation",
        request_id = %context.request_id,
        sub = field::Empty
    );
    // The sub identifies the user in every line of this invocation, even when the event is
    // rejected later (it is an opaque id, not personal data; bounded in case of junk input).
    if let Some(sub) = payload.as_ref().ok().and_then(|payload| {
        payload
            .pointer("/request/userAttributes/sub")
            .and_then(Value::as_str)
    }) {
        let shown: String = sub.chars().take(128).collect();
        span.record("sub", shown.as_str());
    }
    let mut tally = Tally::default();
    let result = async {
        let outcome = match payload {
            Ok(payload) => run(app, &payload, &context, &mut tally)
                .await
                .map(|()| Answer::Event(raw)),
            Err(error) => Err(HandlerError::from(error)),
        };
        outcome.map_err(|cause| {
            tracing::error!(error_type = cause.error_type(), error = %cause, "invocation failed");
            tally.failed(cause.error_type());
            Failure::new(cause, &context.request_id)
        })
    }
    .instrument(span)
    .await;
    app.emit(&tally);
    result
}

async fn run(
    app: &App,
    payload: &Value,
    context: &Context,
    tally: &mut Tally,
) -> Result<(), HandlerError> {
    let user = match parse(payload)? {
        Action::Nothing => {
            info!("forgot-password confirmation: nothing to record");
            return Ok(());
        }
        Action::Record(user) => user,
    };
    let deadline = app.deadline(context.deadline);
    let started = Instant::now();
    tracing::debug!(
        budget_ms = deadline.saturating_duration_since(started).as_millis() as u64,
        lambda_deadline_ms = context.deadline,
        "time left for this invocation"
    );
    // With a park queue, the write ends early enough to park the user in what is left.
    let write_by = if app.parks() {
        deadline.checked_sub(PARK_TIMEOUT).unwrap_or(started)
    } else {
        deadline
    };
    let recorded = if app.parks() && write_by <= started {
        // Less time left than parking needs: do not start a write that would eat into it.
        Err(RecordError::Timeout {
            stage: "starting the write (no time left to write and still park)",
            elapsed_ms: 0,
        })
    } else {
        app.record(&user, write_by).await
    };
    let error = match recorded {
        Ok(outcome) => {
            tally.wrote(outcome, started.elapsed());
            info!(
                outcome = outcome.as_str(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "user recorded"
            );
            return Ok(());
        }
        Err(error) => error,
    };
    if !error.is_outage() {
        return Err(error.into());
    }
    match app.park(&user, deadline).await {
        None => Err(error.into()),
        Some(Ok(())) => {
            tally.parked += 1;
            let cause = HandlerError::from(error);
            tracing::warn!(
                error_type = cause.error_type(),
                error = %cause,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the user could not be recorded now and was parked for replay"
            );
            Ok(())
        }
        Some(Err(park_error)) => {
            tracing::error!(error = %park_error, "the user could not be parked either");
            Err(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialsError;
    use serde_json::json;

    use crate::event::tests::sign_up_with as sign_up;

    #[test]
    fn sign_up_becomes_a_user_to_record() {
        let event = sign_up(json!({"sub": "s-1", "email": "a@example.com"}));
        let Action::Record(user) = parse(&event).unwrap() else {
            panic!("expected a user to record")
        };
        assert_eq!(user.sub, "s-1");
        assert_eq!(user.handle, "cognito-user");
    }

    #[test]
    fn forgot_password_records_nothing() {
        let mut event = sign_up(json!({"sub": "s-1", "email": "a@example.com"}));
        event["triggerSource"] = json!("PostConfirmation_ConfirmForgotPassword");
        assert_eq!(parse(&event).unwrap(), Action::Nothing);
    }

    #[test]
    fn malformed_events_are_invalid_events_and_missing_email_an_attribute_error() {
        let mut event = sign_up(json!({"sub": "s", "email": ["ada@example.com"]}));
        assert_eq!(parse(&event).unwrap_err().error_type(), "InvalidEvent");
        event["request"]["userAttributes"] = json!({"sub": "s"});
        let error = parse(&event).unwrap_err();
        assert_eq!(error.error_type(), "InvalidUserAttributes");
        assert!(error.to_string().contains("`email`"));
    }

    /// One error of every type, each carrying what the operator needs and a stranger must not
    /// see: a host and port, a secret ARN (with the account id), an SDK error chain, SQL text.
    fn one_of_each() -> Vec<HandlerError> {
        let host = "db-proxy.proxy-abc.eu-west-1.rds.amazonaws.com:5432".to_owned();
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123".to_owned();
        vec![
            EventError::NotAnObject.into(),
            InvalidUser::Missing("email").into(),
            RecordError::Credentials(CredentialsError::Fetch {
                secret_id: arn.clone(),
                message: "dispatch failure: io error: connection refused (os error 111)".into(),
            })
            .into(),
            RecordError::Connect {
                endpoint: host.clone(),
                message: "FATAL 28P01: password authentication failed for user \"app\"".into(),
            }
            .into(),
            RecordError::Insert {
                message: "ERROR 42501: permission denied for table users".into(),
                code: Some("42501".into()),
            }
            .into(),
            RecordError::Timeout {
                stage: "connecting to the database",
                elapsed_ms: 1500,
            }
            .into(),
        ]
    }

    #[test]
    fn what_the_caller_sees_is_a_fixed_sentence_per_error_type_and_the_request_id() {
        let sentences = [
            "The confirmation event was not understood.",
            "The account lacks a required attribute or has one that cannot be stored.",
            "The account could not be recorded just now. Please try again later.",
            "The account could not be recorded just now. Please try again later.",
            "The account could not be recorded just now. Please try again later.",
            "Recording the account took too long. Please try again later.",
        ];
        let mut seen_types = Vec::new();
        for (cause, sentence) in one_of_each().into_iter().zip(sentences) {
            let detail = cause.to_string();
            let failure = Failure {
                cause,
                request_id: "4f8e1c2a-req".to_owned(),
            };
            let error_type = failure.error_type();
            seen_types.push(error_type);
            let diagnostic = Diagnostic::from(failure);
            let message = diagnostic.error_message;
            assert_eq!(diagnostic.error_type, error_type);
            assert_eq!(
                message,
                format!("{sentence} ({error_type}, request 4f8e1c2a-req)")
            );
            for secret in [
                "db-proxy",
                "5432",
                "123456789012",
                "secretsmanager",
                "os error",
                "28P01",
                "app",
                "permission",
                "email",
                "1500",
                "connecting",
            ] {
                assert!(!message.contains(secret), "{error_type}: {message}");
            }
            assert!(message.len() < 120, "{message}");
            assert_ne!(message, detail);
        }
        assert_eq!(
            seen_types,
            [
                "InvalidEvent",
                "InvalidUserAttributes",
                "CredentialsError",
                "DatabaseConnectionError",
                "DatabaseError",
                "Timeout"
            ]
        );
    }
}
