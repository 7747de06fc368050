//! The function's log set-up: what `lambda_runtime`'s default subscriber does (standard output,
//! no time stamps or targets, JSON lines under Lambda's JSON log format), filtered by level and
//! target with `tracing-subscriber`'s `Targets` instead of its `EnvFilter`. `EnvFilter` brings a
//! regex engine for field filters the function never needs, and that engine was the difference
//! between the arm64 binary being over or under its 6 MB budget (README, "Performance").

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the subscriber: JSON lines when `AWS_LAMBDA_LOG_FORMAT` is `JSON` (Lambda sets it from
/// the template's `LoggingConfig`), text otherwise; the filter is [`filter`] of
/// `AWS_LAMBDA_LOG_LEVEL`, else of `RUST_LOG`. A value it does not understand is logged (as a
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
        Err(problem) => (
            Targets::new().with_default(LevelFilter::INFO),
            Some(problem),
        ),
    };
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout);
    // Err only if a subscriber is already installed (a test's): keep that one.
    let _ = if json {
        fmt.json().finish().with(filter).try_init()
    } else {
        fmt.finish().with(filter).try_init()
    };
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The filter for a log level setting: a level (`TRACE` to `ERROR`, any case; Lambda's `FATAL`
/// counts as `ERROR`, `OFF` silences) or `RUST_LOG`'s `target=level` directives, comma-separated,
/// with INFO for targets not named (a bare word is a target at TRACE, as in `RUST_LOG`). Unset
/// means INFO; what does not parse is an error that names it.
pub fn filter(setting: Option<&str>) -> Result<Targets, String> {
    let info = Targets::new().with_default(LevelFilter::INFO);
    let Some(setting) = setting.map(str::trim) else {
        return Ok(info);
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

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

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
