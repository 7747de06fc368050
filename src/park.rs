//! Parking: a user who could not be recorded because of an outage is put on an SQS queue
//! (`PARK_QUEUE_URL`) instead of failing the sign-up, and written later by the same function
//! consuming that queue ([`crate::replay`]). A confirmed user is never confirmed again, so without
//! this an outage would leave the user without a row until someone ran the backfill.
//!
//! The message holds exactly what the row needs. It is personal data: the queue is encrypted and
//! nothing of a message is ever logged but the `sub`.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::timeout_at;

use crate::user::NewUser;

/// Time kept back from the invocation's deadline to park the user when recording fails: an SQS
/// `SendMessage` in the same region takes tens of milliseconds, a first one with its TLS
/// handshake a little more.
pub const PARK_TIMEOUT: Duration = Duration::from_millis(500);

/// The body of a parked message (version 1), as JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Parked {
    v: u8,
    sub: String,
    email: String,
    handle: String,
    display_name: String,
    /// When the user was parked, in milliseconds since the Unix epoch.
    parked_at_ms: u64,
}

const VERSION: u8 = 1;

/// Why a message body is not a parked user. Deliberately without serde's text, which quotes
/// values from the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UndecodableMessage {
    #[error("the message body is not a version-{VERSION} parked user")]
    Shape,
    #[error("the parked user cannot be stored: {0}")]
    Invalid(#[from] crate::user::InvalidUser),
}

/// The message body for `user`. Every character outside printable ASCII is written as a JSON
/// `\u` escape, so the body holds only characters SQS accepts (it refuses, for instance,
/// U+FFFF, which a Cognito attribute may contain).
pub fn encode(user: &NewUser, parked_at: SystemTime) -> String {
    let parked = Parked {
        v: VERSION,
        sub: user.sub.clone(),
        email: user.email.clone(),
        handle: user.handle.clone(),
        display_name: user.display_name.clone(),
        parked_at_ms: crate::deadline::epoch_ms(parked_at),
    };
    // Serialising plain strings and a number cannot fail.
    let json = serde_json::to_string(&parked).unwrap_or_default();
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(ascii, "\\u{unit:04x}");
            }
        }
    }
    ascii
}

/// A parked message body back into the user to record, checked as the event's attributes are and
/// with `created_at` the time it was parked (capped at now), and that time.
pub fn decode(body: &str) -> Result<(NewUser, SystemTime), UndecodableMessage> {
    let parked: Parked = serde_json::from_str(body).map_err(|_| UndecodableMessage::Shape)?;
    if parked.v != VERSION {
        return Err(UndecodableMessage::Shape);
    }
    let mut user = NewUser::checked(
        &parked.sub,
        &parked.email,
        &parked.handle,
        &parked.display_name,
    )?;
    let parked_at = UNIX_EPOCH + Duration::from_millis(parked.parked_at_ms);
    // The row says when the user confirmed, as a direct write would, never a time to come.
    user.created_at = Some(parked_at.min(SystemTime::now()));
    Ok((user, parked_at))
}

/// The queue users are parked on.
pub struct Parking {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

/// Why a user could not be parked (the message names the queue, so it is only logged).
#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error("sending to the park queue {queue_url} failed: {message}")]
    Send { queue_url: String, message: String },
    #[error("sending to the park queue {queue_url} did not finish in time")]
    Timeout { queue_url: String },
}

impl Parking {
    pub fn new(sdk: &aws_config::SdkConfig, queue_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(sdk),
            queue_url,
        }
    }

    /// Puts `user` on the queue, finishing by `deadline`.
    pub async fn park(&self, user: &NewUser, deadline: Instant) -> Result<(), ParkError> {
        let send = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(encode(user, SystemTime::now()))
            .send();
        match timeout_at(deadline.into(), send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ParkError::Send {
                queue_url: self.queue_url.clone(),
                message: aws_sdk_sqs::error::DisplayErrorContext(&error).to_string(),
            }),
            Err(_) => Err(ParkError::Timeout {
                queue_url: self.queue_url.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(display_name: &str) -> NewUser {
        NewUser::checked("sub-1", "ada@example.com", "ada", display_name).unwrap()
    }

    #[test]
    fn a_parked_user_decodes_to_the_same_user_and_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        for name in ["Ada", "Zoë \"Q\" \\ Ω", "emoji 🦀", "\u{ffff}\u{2028}\t"] {
            let body = encode(&user(name), at);
            assert!(
                body.chars().all(|c| c.is_ascii() && !c.is_ascii_control()),
                "{body}"
            );
            let confirmed = NewUser {
                created_at: Some(at),
                ..user(name)
            };
            assert_eq!(decode(&body).unwrap(), (confirmed, at));
        }
        // A time to come (another environment's clock, a hand-made message) is not written.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let (user, parked_at) = decode(&encode(&user("Ada"), later)).unwrap();
        assert_eq!(
            parked_at,
            UNIX_EPOCH + Duration::from_millis(crate::deadline::epoch_ms(later))
        );
        assert!(user.created_at.unwrap() <= SystemTime::now());
    }

    #[test]
    fn anything_else_is_undecodable_and_the_error_quotes_nothing() {
        let good = encode(&user("Ada"), UNIX_EPOCH);
        let cases = [
            String::new(),
            "not json".to_owned(),
            "{\"sub\":\"secret-value\"}".to_owned(),
            good.replace("\"v\":1", "\"v\":2"),
            good.replace('}', ",\"extra\":\"secret-value\"}"),
            good.replace("\"Ada\"", "42"),
        ];
        for body in cases {
            let error = decode(&body).unwrap_err();
            assert_eq!(error, UndecodableMessage::Shape, "{body}");
            assert!(!error.to_string().contains("secret-value"));
        }
        let nul = good.replace("\"Ada\"", "\"A\\u0000da\"");
        assert!(matches!(
            decode(&nul),
            Err(UndecodableMessage::Invalid(
                crate::user::InvalidUser::ContainsNul("display_name")
            ))
        ));
        let blank = good.replace("\"ada@example.com\"", "\" \"");
        assert!(matches!(
            decode(&blank),
            Err(UndecodableMessage::Invalid(
                crate::user::InvalidUser::Missing("email")
            ))
        ));
    }
}
