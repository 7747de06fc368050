//! The Lambda handler: parse the Cognito event, record the user, return the event unchanged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::cognito::{
    CognitoEventUserPoolsPostConfirmation, CognitoEventUserPoolsPostConfirmationTriggerSource,
};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde::Deserialize;
use serde_json::Value;
use tracing::{Instrument, field, info, info_span};

use crate::app::{App, RecordError};
use crate::redact::redact_values;
use crate::user::{InvalidUser, NewUser};

/// What the event asks of us.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// `PostConfirmation_ConfirmSignUp` (also AdminConfirmSignUp): record this user.
    Record(NewUser),
    /// `PostConfirmation_ConfirmForgotPassword`: the user exists already; write nothing.
    Nothing,
}

/// Why an invocation failed. Each variant has a stable `errorType` for Lambda and Cognito.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("invalid PostConfirmation event: {0}")]
    InvalidEvent(String),
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
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Turns the raw event into what it asks for. Nothing is written unless this succeeds.
pub fn parse(payload: &Value) -> Result<Action, HandlerError> {
    let invalid = |reason: &str| HandlerError::InvalidEvent(reason.to_owned());
    let object = payload
        .as_object()
        .ok_or_else(|| invalid("the event is not a JSON object"))?;
    match object.get("triggerSource") {
        Some(Value::String(source)) if source.starts_with("PostConfirmation_") => {}
        Some(Value::String(source)) => {
            let shown: String = source.chars().take(64).collect();
            return Err(HandlerError::InvalidEvent(format!(
                "unsupported triggerSource `{shown}` (this function handles PostConfirmation only)"
            )));
        }
        Some(_) => return Err(invalid("`triggerSource` is not a string")),
        None => return Err(invalid("`triggerSource` is missing")),
    }
    if !object.get("request").is_some_and(Value::is_object) {
        return Err(invalid("`request` is missing or not an object"));
    }
    let event: CognitoEventUserPoolsPostConfirmation =
        CognitoEventUserPoolsPostConfirmation::deserialize(payload)
            .map_err(|error| HandlerError::InvalidEvent(redact_values(&error.to_string())))?;
    let header = event.cognito_event_user_pools_header;
    match header.trigger_source {
        Some(CognitoEventUserPoolsPostConfirmationTriggerSource::ConfirmSignUp) => {
            let user = NewUser::from_attributes(
                header.user_name.as_deref(),
                &event.request.user_attributes,
            )?;
            Ok(Action::Record(user))
        }
        Some(CognitoEventUserPoolsPostConfirmationTriggerSource::ConfirmForgotPassword) => {
            Ok(Action::Nothing)
        }
        _ => Err(invalid("unsupported triggerSource")),
    }
}

/// Handles one invocation and returns the event exactly as received, as Cognito requires.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let (payload, context) = event.into_parts();
    let span = info_span!(
        "post_confirmation",
        request_id = %context.request_id,
        sub = field::Empty
    );
    // The sub identifies the user in every line of this invocation, even when the event is
    // rejected later (it is an opaque id, not personal data; bounded in case of junk input).
    if let Some(sub) = payload
        .pointer("/request/userAttributes/sub")
        .and_then(Value::as_str)
    {
        let shown: String = sub.chars().take(128).collect();
        span.record("sub", shown.as_str());
    }
    async {
        let result = run(app, &payload, &context).await;
        if let Err(error) = &result {
            tracing::error!(error_type = error.error_type(), %error, "invocation failed");
        }
        result.map(|()| payload)
    }
    .instrument(span)
    .await
}

async fn run(app: &App, payload: &Value, context: &Context) -> Result<(), HandlerError> {
    let user = match parse(payload)? {
        Action::Nothing => {
            info!("forgot-password confirmation: nothing to record");
            return Ok(());
        }
        Action::Record(user) => user,
    };
    let deadline = deadline(context, app.deadline_margin());
    tracing::debug!(
        budget_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
        lambda_deadline_ms = context.deadline,
        "time left for this invocation"
    );
    let started = Instant::now();
    let outcome = app.record(&user, deadline).await?;
    info!(
        outcome = outcome.as_str(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "user recorded"
    );
    Ok(())
}

/// Lambda's deadline is milliseconds since the Unix epoch; anything before 2001-09-09 is not one.
/// (`cargo lambda watch` 1.9 sends its timeout, `600000`, instead; other tools send 0.)
const EARLIEST_PLAUSIBLE_DEADLINE_MS: u64 = 1_000_000_000_000;

/// The instant by which the invocation must have answered: Lambda's deadline less `margin`. A
/// context without a usable deadline leaves only the configured caps.
fn deadline(context: &Context, margin: Duration) -> Instant {
    let now = Instant::now();
    let far = now + Duration::from_secs(60);
    if context.deadline < EARLIEST_PLAUSIBLE_DEADLINE_MS {
        return far;
    }
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(context.deadline.saturating_sub(epoch_ms));
    now + left.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign_up(attributes: Value) -> Value {
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
    fn malformed_events_are_invalid_with_a_reason() {
        let cases = [
            (json!([1, 2]), "not a JSON object"),
            (json!({"request": {}}), "`triggerSource` is missing"),
            (
                {
                    let mut e = sign_up(json!({}));
                    e["triggerSource"] = json!("PreSignUp_SignUp");
                    e
                },
                "unsupported triggerSource `PreSignUp_SignUp`",
            ),
            (
                {
                    let mut e = sign_up(json!({}));
                    e["triggerSource"] = json!("PostConfirmation_Something");
                    e
                },
                "unknown variant",
            ),
            (
                {
                    let mut e = sign_up(json!({}));
                    e["request"] = json!("ada@example.com");
                    e
                },
                "`request` is missing or not an object",
            ),
            (
                sign_up(json!({"sub": "s", "email": ["ada@example.com"]})),
                "invalid type",
            ),
        ];
        for (event, expected) in cases {
            let error = parse(&event).unwrap_err();
            assert_eq!(error.error_type(), "InvalidEvent", "{error}");
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("ada@example.com"), "{message}");
        }
    }

    #[test]
    fn missing_email_is_an_attribute_error() {
        let error = parse(&sign_up(json!({"sub": "s"}))).unwrap_err();
        assert_eq!(error.error_type(), "InvalidUserAttributes");
        assert!(error.to_string().contains("`email`"));
    }

    #[test]
    fn deadline_keeps_the_margin_and_tolerates_a_missing_or_relative_deadline() {
        let mut context = Context::default();
        let now = Instant::now();
        assert!(deadline(&context, Duration::from_millis(200)) > now + Duration::from_secs(30));
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        context.deadline = epoch_ms + 5_000;
        let at = deadline(&context, Duration::from_millis(200));
        assert!(at <= Instant::now() + Duration::from_millis(4_800));
        assert!(at >= now + Duration::from_millis(4_500));
        context.deadline = epoch_ms.saturating_sub(1_000);
        assert!(deadline(&context, Duration::from_millis(200)) <= Instant::now());
        // cargo lambda watch sends its timeout in place of a deadline.
        context.deadline = 600_000;
        assert!(deadline(&context, Duration::from_millis(200)) > now + Duration::from_secs(30));
    }
}
