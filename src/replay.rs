//! Replay: the same function, invoked by the park queue's SQS event source mapping, writes each
//! parked user with the same idempotent INSERT and reports the messages that failed (partial
//! batch responses), which SQS offers again after the visibility timeout and, after the queue's
//! `maxReceiveCount`, moves to the dead-letter queue.

use std::time::{Instant, SystemTime};

use lambda_runtime::Context;
use serde_json::{Value, json};
use tracing::{Instrument, error, info, info_span, warn};

use crate::app::App;
use crate::handler::HandlerError;
use crate::metrics::Tally;
use crate::park;

/// The records of `payload` if it is an SQS event rather than a Cognito one. (Only the two
/// fields read are parsed: aws_lambda_events' SQS types would bring serde_with and chrono into
/// the binary for them.)
pub fn sqs_records(payload: &Value) -> Option<&[Value]> {
    let records = payload.get("Records")?.as_array()?;
    let source = records.first()?.get("eventSource")?.as_str()?;
    (source == "aws:sqs").then_some(records.as_slice())
}

/// Writes every parked user of the batch; the answer lists the messages to offer again.
///
/// A message that cannot be decoded, or whose INSERT the database refuses (any SQLSTATE: its
/// values, an operator's trigger, a limit), fails alone, and the next message is tried. A failure
/// to reach the database in time (connecting, the credentials, the deadline; the outage may not be
/// over) fails that message and leaves the rest of the batch unattempted: they are reported as
/// failed without touching the database, so the invocation ends at once.
pub async fn handle(app: &App, records: &[Value], context: &Context) -> Value {
    let span = info_span!("replay", request_id = %context.request_id);
    let mut tally = Tally::default();
    let response = replay(app, records, context, &mut tally)
        .instrument(span)
        .await;
    app.emit(&tally);
    response
}

async fn replay(app: &App, records: &[Value], context: &Context, tally: &mut Tally) -> Value {
    let deadline = app.deadline(context.deadline);
    let mut failures = Vec::new();
    let mut unreachable = false;
    let mut deferred = 0;
    for record in records {
        // An empty id makes Lambda fail the whole batch, which is the safe side.
        let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
        let id = field("messageId").to_owned();
        if unreachable {
            deferred += 1;
            failures.push(id);
            continue;
        }
        let (user, parked_at) = match park::decode(field("body")) {
            Ok(decoded) => decoded,
            Err(cause) => {
                warn!(message_id = %id, error = %cause, "a parked message cannot be decoded; it goes to the dead-letter queue after its last receive");
                tally.failed("UndecodableMessage");
                failures.push(id);
                continue;
            }
        };
        let parked_for_ms = SystemTime::now()
            .duration_since(parked_at)
            .map_or(0, |d| d.as_millis() as u64);
        let started = Instant::now();
        match app.record(&user, deadline).await {
            Ok(outcome) => {
                tally.wrote(outcome, started.elapsed());
                tally.replayed += 1;
                info!(sub = %user.sub, outcome = outcome.as_str(), parked_for_ms, "parked user replayed");
            }
            Err(error) => {
                unreachable = !error.is_refusal();
                let cause = HandlerError::Record(error);
                error!(sub = %user.sub, message_id = %id, error_type = cause.error_type(), error = %cause, "replaying a parked user failed; the message will be offered again");
                tally.failed(cause.error_type());
                failures.push(id);
            }
        }
    }
    if deferred > 0 {
        warn!(
            deferred,
            "the rest of the batch was not attempted; it will be offered again"
        );
    }
    batch_response(failures)
}

/// The partial batch response naming the messages that failed.
fn batch_response(failed_ids: Vec<String>) -> Value {
    let failures: Vec<Value> = failed_ids
        .into_iter()
        .map(|id| json!({"itemIdentifier": id}))
        .collect();
    json!({"batchItemFailures": failures})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_events_are_told_from_cognito_events() {
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        assert_eq!(sqs_records(&sqs).map(<[Value]>::len), Some(1));
        assert_eq!(sqs_records(&json!({"Records": []})), None);
        assert_eq!(
            sqs_records(&json!({"Records": [{"eventSource": "aws:s3"}]})),
            None
        );
        let cognito = crate::event::tests::sign_up_with(json!({"sub": "s", "email": "e@x"}));
        assert_eq!(sqs_records(&cognito), None);
    }

    #[test]
    fn the_batch_response_has_lambdas_field_names() {
        assert_eq!(
            batch_response(vec!["m-1".to_owned()]),
            json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
        assert_eq!(batch_response(vec![]), json!({"batchItemFailures": []}));
    }
}
