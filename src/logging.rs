//! The function's log set-up: what `lambda_runtime`'s default subscriber does (standard output,
//! no targets, JSON lines under Lambda's JSON log format), filtered by level and
//! target with `tracing-subscriber`'s `Targets` instead of its `EnvFilter`. `EnvFilter` brings a
//! regex engine for field filters the function never needs, and that engine was the difference
//! between the arm64 binary being over or under its 6 MB budget (README, "Performance").

use std::str::FromStr;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs [`subscriber`] on standard output: JSON lines when `AWS_LAMBDA_LOG_FORMAT` is `JSON`
/// (Lambda sets it from the template's `LoggingConfig`), text otherwise; the filter is [`filter`]
/// of `AWS_LAMBDA_LOG_LEVEL`, else of `RUST_LOG`. A setting that does not parse is logged (as a
/// warning) and INFO is used.
pub fn init() {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let level = var("AWS_LAMBDA_LOG_LEVEL").or_else(|| var("RUST_LOG"));
    let (filter, problem) = match filter(level.as_deref()) {
        Ok(filter) => (filter, None),
        Err(problem) => (info(), Some(problem)),
    };
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("json"));
    // Err only if a subscriber is already installed (a test's): keep that one.
    let _ = subscriber(filter, json, std::io::stdout).try_init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The function's subscriber, writing to `writer`: no targets, as `lambda_runtime`'s own; what
/// `filter` enables, except [`is_dependency_trace`]. JSON lines carry an RFC 3339 `timestamp`:
/// Lambda's log-level filter counts a line without a valid one as INFO, and would drop the
/// function's warnings and errors under `WARN` or `ERROR`. Text lines have none (CloudWatch adds
/// its own).
pub fn subscriber<W>(filter: Targets, json: bool, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt()
        // The builder's own filter is INFO, applied besides ours: open it, `filter` decides.
        .with_max_level(LevelFilter::TRACE)
        .with_target(false)
        .with_writer(writer);
    let no_dependency_trace = filter_fn(|metadata| !is_dependency_trace(metadata));
    if json {
        Box::new(fmt.json().finish().with(filter).with(no_dependency_trace))
    } else {
        let fmt = fmt.without_time();
        Box::new(fmt.finish().with(filter).with(no_dependency_trace))
    }
}

/// Whether a line is another crate's TRACE line, never written whatever the level: at TRACE
/// `lambda_runtime` logs every event it receives, raw, and the AWS SDK every request it sends,
/// body included (a parked user's email and name). The README promises no personal data in the
/// logs; the template's levels stop at DEBUG, but Lambda's own settings do not.
pub fn is_dependency_trace(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::TRACE && !metadata.target().starts_with(env!("CARGO_CRATE_NAME"))
}

/// The filter for a log level setting: a level (`TRACE` to `ERROR`, any case; Lambda's `FATAL`
/// counts as `ERROR`, `OFF` silences) or `RUST_LOG`'s `target=level` directives, comma-separated,
/// with INFO for targets not named (a bare word is a target at TRACE, as in `RUST_LOG`). Unset
/// means INFO; what does not parse is an error that names it.
pub fn filter(setting: Option<&str>) -> Result<Targets, String> {
    let Some(setting) = setting.map(str::trim) else {
        return Ok(info());
    };
    let setting = if setting.eq_ignore_ascii_case("fatal") {
        "error"
    } else {
        setting
    };
    let targets = Targets::from_str(setting)
        .map_err(|_| format!("log level {setting:?} not understood; logging at INFO"))?;
    Ok(match targets.default_level() {
        Some(_) => targets,
        None => targets.with_default(LevelFilter::INFO),
    })
}

/// INFO for every target: the level when none is set or the setting does not parse.
fn info() -> Targets {
    Targets::new().with_default(LevelFilter::INFO)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use aws_smithy_types::date_time::Format;

    use super::*;

    /// What a subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_or(Ok(0), |mut out| out.write(bytes))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Captured;
        fn make_writer(&self) -> Captured {
            self.clone()
        }
    }

    /// What [`subscriber`] writes for `setting` while `emit` runs.
    fn logs(setting: &str, json: bool, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let filter = filter(Some(setting)).expect("understood");
        tracing::subscriber::with_default(subscriber(filter, json, captured.clone()), emit);
        let bytes = captured.0.lock().map(|out| out.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn every_level_the_setting_asks_for_is_written() {
        let emit = || {
            tracing::trace!("t-line");
            tracing::debug!("d-line");
            tracing::info!("i-line");
        };
        let trace = logs("TRACE", false, emit);
        assert!(trace.contains("TRACE t-line"), "{trace}");
        assert!(trace.contains("DEBUG d-line"), "{trace}");
        let debug = logs("debug", false, emit);
        assert!(
            !debug.contains("t-line") && debug.contains("d-line"),
            "{debug}"
        );
        let directives = logs("warn,cognito_post_confirmation=debug", false, emit);
        assert!(directives.contains("d-line"), "{directives}");
        let warn = logs("WARN", false, emit);
        assert_eq!(warn, "");
    }

    #[test]
    fn json_lines_when_asked() {
        let out = logs("INFO", true, || tracing::info!(sub = "s-1", "recorded"));
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(line["level"], "INFO");
        let timestamp = line["timestamp"].as_str().expect("a timestamp");
        let parsed = aws_smithy_types::DateTime::from_str(timestamp, Format::DateTime);
        assert!(parsed.is_ok(), "not RFC 3339: {timestamp}");
        assert_eq!(line["fields"]["message"], "recorded");
        assert_eq!(line["fields"]["sub"], "s-1");
    }

    #[test]
    fn raw_events_and_request_bodies_are_never_written() {
        let out = logs("TRACE", true, || {
            tracing::trace!(
                target: "lambda_runtime::layers::api_response",
                body = r#"{"email":"ada@example.com"}"#,
                "raw JSON event received from Lambda"
            );
            tracing::trace!(
                target: "aws_smithy_runtime::client::orchestrator",
                request = r#"SdkBody { inner: Once { inner: Some(b"{..\"Grace Hopper\"..}") } }"#,
                "transmitting request"
            );
            tracing::debug!(target: "lambda_runtime::runtime", "runtime debug line");
            tracing::trace!("our own trace line");
        });
        assert!(!out.contains("ada@example.com"), "{out}");
        assert!(!out.contains("Grace Hopper"), "{out}");
        assert!(out.contains("runtime debug line"), "{out}");
        assert!(out.contains("our own trace line"), "{out}");
    }

    fn enables(setting: Option<&str>, target: &str, level: Level) -> bool {
        filter(setting)
            .expect("understood")
            .would_enable(target, &level)
    }

    #[test]
    fn unset_is_info() {
        assert!(enables(None, "cognito_post_confirmation", Level::INFO));
        assert!(!enables(None, "cognito_post_confirmation", Level::DEBUG));
    }

    #[test]
    fn lambda_levels_in_any_case() {
        assert!(enables(Some("DEBUG"), "aws_config", Level::DEBUG));
        assert!(!enables(Some("DEBUG"), "aws_config", Level::TRACE));
        assert!(enables(Some("warn"), "x", Level::WARN));
        assert!(!enables(Some("WARN"), "x", Level::INFO));
        assert!(enables(Some(" ERROR "), "x", Level::ERROR));
        assert!(!enables(Some("off"), "x", Level::ERROR));
    }

    #[test]
    fn lambda_fatal_is_error() {
        assert!(enables(Some("FATAL"), "x", Level::ERROR));
        assert!(!enables(Some("FATAL"), "x", Level::WARN));
    }

    #[test]
    fn rust_log_directives_with_info_for_the_rest() {
        let setting = Some("cognito_post_confirmation=debug,aws_smithy_runtime=warn");
        assert!(enables(
            setting,
            "cognito_post_confirmation::db",
            Level::DEBUG
        ));
        assert!(!enables(setting, "aws_smithy_runtime::client", Level::INFO));
        assert!(enables(setting, "lambda_runtime", Level::INFO));
        assert!(!enables(setting, "lambda_runtime", Level::DEBUG));
        assert!(enables(
            Some("debug,tokio_postgres=warn"),
            "x",
            Level::DEBUG
        ));
    }

    #[test]
    fn a_setting_it_does_not_understand_is_named() {
        let error = filter(Some("db=loud")).expect_err("not a level");
        assert_eq!(
            error,
            r#"log level "db=loud" not understood; logging at INFO"#
        );
        assert!(filter(Some("a=info=debug")).is_err());
    }
}
