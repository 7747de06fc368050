//! Metrics as CloudWatch Embedded Metric Format (EMF) lines on standard output: CloudWatch Logs
//! turns them into metrics, with no API call on the hot path.
//!
//! One line per invocation with the counts and the write latencies, plus one line per error type
//! that failed (dimension `ErrorType`). Namespace [`NAMESPACE`], dimension `FunctionName` (Lambda's
//! `AWS_LAMBDA_FUNCTION_NAME`, `local` outside Lambda). The lines hold no personal data: counts,
//! milliseconds, the function name and error type names.
//!
//! Lambda's log-level filter reads a line without a `level` (or without a valid RFC 3339
//! `timestamp`) as INFO, and at `WARN` and above would drop the metrics (and with them the alarms
//! on parked and failed users). So under a stricter `AWS_LAMBDA_LOG_LEVEL` the lines carry that
//! level and a timestamp ([`level_kept`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde_json::{Value, json};

use crate::db::Outcome;

pub const NAMESPACE: &str = "CognitoPostConfirmation";

/// Where metric lines go: standard output in Lambda, a buffer in tests.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Writes each line to standard output, whole.
pub fn stdout() -> Sink {
    Arc::new(|line: &str| {
        let mut out = std::io::stdout().lock();
        // A metric that cannot be written must not fail the invocation.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })
}

/// What one invocation did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Rows written (from a sign-up or a replayed message).
    pub inserted: u32,
    /// Users who already had a row (a retried event, a replay of a user written since).
    pub already_present: u32,
    /// Users parked on the queue instead of failing the sign-up.
    pub parked: u32,
    /// Parked messages whose user now has a row (deleted from the queue).
    pub replayed: u32,
    /// Failures by error type.
    pub failed: BTreeMap<&'static str, u32>,
    /// Duration of each successful database write, in milliseconds.
    pub write_ms: Vec<f64>,
}

impl Tally {
    pub fn wrote(&mut self, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Inserted => self.inserted += 1,
            Outcome::AlreadyPresent => self.already_present += 1,
        }
        self.write_ms.push(took.as_secs_f64() * 1000.0);
    }

    pub fn failed(&mut self, error_type: &'static str) {
        *self.failed.entry(error_type).or_default() += 1;
    }

    /// The EMF documents for this tally, one JSON object per line; with `level`, each carries it
    /// and `timestamp` (RFC 3339, for Lambda's log-level filter).
    pub fn lines(&self, function_name: &str, level: Option<&str>, at: SystemTime) -> Vec<String> {
        let timestamp = crate::deadline::epoch_ms(at);
        let directive = |dimensions: &[&str], metrics: &[(&str, &str)]| {
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimensions],
                    "Metrics": metrics
                        .iter()
                        .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                }],
            })
        };
        let mut counts = vec![
            ("Inserted", "Count"),
            ("AlreadyPresent", "Count"),
            ("Parked", "Count"),
            ("Replayed", "Count"),
        ];
        if !self.write_ms.is_empty() {
            counts.push(("WriteLatency", "Milliseconds"));
        }
        let mut main = json!({
            "_aws": directive(&["FunctionName"], &counts),
            "FunctionName": function_name,
            "Inserted": self.inserted,
            "AlreadyPresent": self.already_present,
            "Parked": self.parked,
            "Replayed": self.replayed,
        });
        if let (false, Some(document)) = (self.write_ms.is_empty(), main.as_object_mut()) {
            // EMF takes up to 100 values of one metric per document; a batch is at most 10.
            let values: Vec<Value> = self
                .write_ms
                .iter()
                .take(100)
                .map(|&ms| json!(ms))
                .collect();
            document.insert("WriteLatency".to_owned(), Value::Array(values));
        }
        let mut documents = vec![main];
        for (error_type, count) in &self.failed {
            documents.push(json!({
                "_aws": directive(&["FunctionName", "ErrorType"], &[("Failed", "Count")]),
                "FunctionName": function_name,
                "ErrorType": error_type,
                "Failed": count,
            }));
        }
        if let Some(level) = level {
            let rfc3339 = DateTime::from(at).fmt(Format::DateTime).ok();
            for document in documents.iter_mut().filter_map(Value::as_object_mut) {
                document.insert("level".to_owned(), json!(level));
                document.insert("timestamp".to_owned(), json!(rfc3339));
            }
        }
        documents.iter().map(Value::to_string).collect()
    }
}

/// The `level` the metric lines need for Lambda to keep them under the log level `setting`
/// (`AWS_LAMBDA_LOG_LEVEL`): the setting itself when it is stricter than INFO, else none.
pub fn level_kept(setting: Option<&str>) -> Option<&'static str> {
    match setting?.trim().to_ascii_uppercase().as_str() {
        "WARN" => Some("WARN"),
        "ERROR" => Some("ERROR"),
        "FATAL" => Some("FATAL"),
        _ => None,
    }
}

/// The function's name as Lambda sets it, or `local`.
pub fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn the_lines_are_emf_documents_with_the_counts() {
        let mut tally = Tally::default();
        tally.wrote(Outcome::Inserted, Duration::from_micros(1500));
        tally.wrote(Outcome::AlreadyPresent, Duration::from_millis(2));
        tally.replayed = 2;
        tally.failed("Timeout");
        tally.failed("Timeout");
        tally.failed("UndecodableMessage");
        let at = UNIX_EPOCH + Duration::from_millis(1_764_000_000_000);
        let lines = tally.lines("fn", None, at);
        assert_eq!(lines.len(), 3);
        let docs: Vec<Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let main = &docs[0];
        assert_eq!(main["_aws"]["Timestamp"], 1_764_000_000_000u64);
        let directive = &main["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(main["FunctionName"], "fn");
        assert_eq!(main["Inserted"], 1);
        assert_eq!(main["AlreadyPresent"], 1);
        assert_eq!(main["Parked"], 0);
        assert_eq!(main["Replayed"], 2);
        assert_eq!(main["WriteLatency"], json!([1.5, 2.0]));
        assert!(main.get("level").is_none(), "{main}");
        assert!(main.get("timestamp").is_none(), "{main}");
        // Every metric the directive names is a member of the document, and the reverse.
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(main.get(name).is_some(), "{name}");
        }
        assert_eq!(docs[1]["ErrorType"], "Timeout");
        assert_eq!(docs[1]["Failed"], 2);
        assert_eq!(
            docs[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName", "ErrorType"]])
        );
        assert_eq!(docs[2]["ErrorType"], "UndecodableMessage");
        assert_eq!(docs[2]["Failed"], 1);
    }

    /// Lambda reads a line without `level` as INFO and drops it under WARN and stricter: there,
    /// every line carries the level that keeps it.
    #[test]
    fn under_a_strict_log_level_every_line_carries_it() {
        let cases = [
            (None, None),
            (Some("TRACE"), None),
            (Some("DEBUG"), None),
            (Some("INFO"), None),
            (Some("WARN"), Some("WARN")),
            (Some(" error "), Some("ERROR")),
            (Some("FATAL"), Some("FATAL")),
        ];
        for (setting, kept) in cases {
            assert_eq!(level_kept(setting), kept, "{setting:?}");
        }
        let mut tally = Tally {
            parked: 1,
            ..Tally::default()
        };
        tally.failed("Timeout");
        let lines = tally.lines("fn", Some("FATAL"), UNIX_EPOCH);
        assert_eq!(lines.len(), 2);
        for line in lines {
            let document: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(document["level"], "FATAL", "{document}");
            assert_eq!(document["timestamp"], "1970-01-01T00:00:00Z", "{document}");
        }
    }

    #[test]
    fn without_writes_there_is_no_latency_metric() {
        let lines = Tally::default().lines("fn", None, UNIX_EPOCH);
        assert_eq!(lines.len(), 1);
        let main: Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(main.get("WriteLatency").is_none());
        let names: Vec<&str> = main["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Inserted", "AlreadyPresent", "Parked", "Replayed"]);
    }
}
