//! Configuration from the environment, read once at cold start.
//!
//! Every variable is documented in the README ("Configuration"). A missing or invalid value fails
//! the cold start with a message that names the variable.

use std::path::PathBuf;
use std::time::Duration;

use crate::app::CANCEL_TIMEOUT;
use crate::tls::ExtraCas;

/// How the function logs in to the database (`DB_AUTH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `secret` (the default): user and password from the Secrets Manager secret `DB_SECRET_ID`
    /// (RDS secret JSON format).
    Secret { secret_id: String },
    /// `rds-iam` / `dsql-iam`: an IAM auth token for `DB_USER`; no secret.
    Iam { service: IamService, user: String },
}

/// Whose IAM authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IamService {
    /// RDS Proxy, or an RDS / Aurora PostgreSQL instance, with IAM authentication (`rds-iam`).
    Rds,
    /// Aurora DSQL (`dsql-iam`).
    Dsql,
}

/// What the function needs to know before it can connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `DB_AUTH` (with `DB_SECRET_ID` or `DB_USER`).
    pub auth: Auth,
    /// `DB_HOST`: overrides the secret's `host` (the RDS Proxy endpoint goes here); required with
    /// IAM authentication.
    pub host: Option<String>,
    /// `DB_PORT`: overrides the secret's `port`.
    pub port: Option<u16>,
    /// `DB_NAME`: overrides the secret's `dbname`.
    pub dbname: Option<String>,
    /// `DB_CA_FILE` / `DB_CA_PEM`: extra CAs to trust besides the built-in roots.
    pub extra_cas: ExtraCas,
    /// `DB_CONNECT_TIMEOUT_MS`: cap on fetching the secret and on opening a connection.
    pub connect_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: cap on the INSERT round trip.
    pub statement_timeout: Duration,
    /// `DEADLINE_MARGIN_MS`: time kept back from the invocation deadline to report an error.
    pub deadline_margin: Duration,
    /// `PARK_QUEUE_URL`: the SQS queue a user is parked on when the database cannot be reached
    /// (see [`crate::park`]); unset = no parking, failures are returned to Cognito.
    pub park_queue_url: Option<String>,
}

/// Configuration that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// The port and database used when neither the configuration nor the secret names one (also
/// Aurora DSQL's only database).
pub const DEFAULT_DB_PORT: u16 = 5432;
pub const DEFAULT_DB_NAME: &str = "postgres";

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(1800);
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_millis(200);

/// The function's `Timeout` in template.yaml (4 s). A connect and an INSERT, each at its cap, plus
/// the margin must fit in it, or a slow but healthy database would be cut off.
pub const FUNCTION_TIMEOUT_MS: u64 = 4000;
/// The database role's `statement_timeout` (sql/app-role.sql, 3 s). The function's own cap on the
/// INSERT must not exceed it, or the server would cancel first and the caps would not say what
/// happens.
pub const ROLE_STATEMENT_TIMEOUT_MS: u64 = 3000;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let auth = match get("DB_AUTH").as_deref().map(str::trim) {
            None | Some("secret") => {
                if get("DB_USER").is_some() {
                    return Err(invalid(
                        "DB_USER",
                        "is read only with DB_AUTH=rds-iam or dsql-iam; with a secret, its \
                         `username` is the user",
                    ));
                }
                Auth::Secret {
                    secret_id: get("DB_SECRET_ID").ok_or(ConfigError::Missing("DB_SECRET_ID"))?,
                }
            }
            Some(mode @ ("rds-iam" | "dsql-iam")) => {
                if get("DB_SECRET_ID").is_some() {
                    return Err(invalid(
                        "DB_SECRET_ID",
                        &format!("must not be set with DB_AUTH={mode}: no secret is read"),
                    ));
                }
                if get("DB_HOST").is_none() {
                    return Err(ConfigError::Missing("DB_HOST"));
                }
                // No secret names the database, and "postgres" is DSQL's only one, not RDS's.
                if mode == "rds-iam" && get("DB_NAME").is_none() {
                    return Err(ConfigError::Missing("DB_NAME"));
                }
                Auth::Iam {
                    service: if mode == "rds-iam" {
                        IamService::Rds
                    } else {
                        IamService::Dsql
                    },
                    user: get("DB_USER")
                        .map(|user| user.trim().to_owned())
                        .ok_or(ConfigError::Missing("DB_USER"))?,
                }
            }
            Some(_) => {
                return Err(invalid(
                    "DB_AUTH",
                    "expected secret (the default), rds-iam or dsql-iam",
                ));
            }
        };
        let port = get("DB_PORT")
            .map(|value| match value.trim().parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(invalid("DB_PORT", "expected a port number from 1 to 65535")),
            })
            .transpose()?;
        let millis = |var: &'static str, default: Duration, min: u64, max: u64| {
            let Some(value) = get(var) else {
                return Ok(default);
            };
            match value.trim().parse::<u64>() {
                Ok(ms) if (min..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
                _ => Err(invalid(
                    var,
                    &format!("expected milliseconds from {min} to {max}"),
                )),
            }
        };
        let connect_timeout = millis(
            "DB_CONNECT_TIMEOUT_MS",
            DEFAULT_CONNECT_TIMEOUT,
            100,
            FUNCTION_TIMEOUT_MS,
        )?;
        let statement_timeout = millis(
            "DB_STATEMENT_TIMEOUT_MS",
            DEFAULT_STATEMENT_TIMEOUT,
            100,
            ROLE_STATEMENT_TIMEOUT_MS,
        )?;
        // At least the cancel request's time limit plus as much again to answer.
        let min_margin = 2 * CANCEL_TIMEOUT.as_millis() as u64;
        let deadline_margin = millis(
            "DEADLINE_MARGIN_MS",
            DEFAULT_DEADLINE_MARGIN,
            min_margin,
            1000,
        )?;
        let park_queue_url = get("PARK_QUEUE_URL")
            .map(|url| {
                let url = url.trim().to_owned();
                if url.starts_with("https://") || url.starts_with("http://") {
                    Ok(url)
                } else {
                    Err(invalid(
                        "PARK_QUEUE_URL",
                        "expected the queue's URL, https://sqs.<region>.amazonaws.com/<account>/<name>",
                    ))
                }
            })
            .transpose()?;
        // With a park queue, the time kept to park a user comes on top.
        let parking = if park_queue_url.is_some() {
            crate::park::PARK_TIMEOUT
        } else {
            Duration::ZERO
        };
        let sum = (connect_timeout + statement_timeout + deadline_margin + parking).as_millis();
        if sum > u128::from(FUNCTION_TIMEOUT_MS) {
            let parked = if parking.is_zero() {
                String::new()
            } else {
                format!(" plus {} ms to park a user", parking.as_millis())
            };
            return Err(invalid(
                "DB_CONNECT_TIMEOUT_MS + DB_STATEMENT_TIMEOUT_MS + DEADLINE_MARGIN_MS",
                &format!(
                    "they add up to {sum} ms{parked}; a connect and an INSERT at their caps \
                     must fit in the function's {FUNCTION_TIMEOUT_MS} ms timeout"
                ),
            ));
        }
        Ok(Self {
            auth,
            host: get("DB_HOST"),
            port,
            dbname: get("DB_NAME"),
            extra_cas: ExtraCas {
                file: get("DB_CA_FILE").map(PathBuf::from),
                pem: get("DB_CA_PEM"),
            },
            connect_timeout,
            statement_timeout,
            deadline_margin,
            park_queue_url,
        })
    }
}

impl Config {
    /// The secret's id, or "" with IAM authentication (for messages).
    pub fn secret_id(&self) -> &str {
        match &self.auth {
            Auth::Secret { secret_id } => secret_id,
            Auth::Iam { .. } => "",
        }
    }
}

fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn only_the_secret_id_is_required() {
        let config = config(&[("DB_SECRET_ID", "db/app")]).unwrap();
        assert_eq!(config.secret_id(), "db/app");
        assert_eq!(
            config.auth,
            Auth::Secret {
                secret_id: "db/app".into()
            }
        );
        assert_eq!(config.host, None);
        assert_eq!(config.port, None);
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
    }

    #[test]
    fn missing_or_empty_secret_id_names_the_variable() {
        for pairs in [&[][..], &[("DB_SECRET_ID", "  ")][..]] {
            let error = config(pairs).unwrap_err();
            assert_eq!(error, ConfigError::Missing("DB_SECRET_ID"));
            assert_eq!(error.to_string(), "DB_SECRET_ID must be set");
        }
    }

    #[test]
    fn overrides_are_read() {
        let config = config(&[
            (
                "DB_SECRET_ID",
                "arn:aws:secretsmanager:eu-west-1:1:secret:x",
            ),
            ("DB_HOST", "proxy.example"),
            ("DB_PORT", "6432"),
            ("DB_NAME", "app"),
            ("DB_CA_FILE", "/opt/ca.pem"),
            ("DB_CA_PEM", "-----BEGIN CERTIFICATE-----"),
            ("DB_CONNECT_TIMEOUT_MS", "700"),
            ("DB_STATEMENT_TIMEOUT_MS", "900"),
        ])
        .unwrap();
        assert_eq!(config.host.as_deref(), Some("proxy.example"));
        assert_eq!(config.port, Some(6432));
        assert_eq!(config.dbname.as_deref(), Some("app"));
        assert_eq!(config.extra_cas.file, Some(PathBuf::from("/opt/ca.pem")));
        assert_eq!(
            config.extra_cas.pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(config.connect_timeout, Duration::from_millis(700));
        assert_eq!(config.statement_timeout, Duration::from_millis(900));
        assert_eq!(config.park_queue_url, None);
    }

    #[test]
    fn iam_modes_need_host_and_user_and_no_secret() {
        for (mode, service) in [("rds-iam", IamService::Rds), ("dsql-iam", IamService::Dsql)] {
            let minimal = [
                ("DB_AUTH", mode),
                ("DB_HOST", "db.example"),
                ("DB_USER", "app"),
            ];
            let config = match service {
                // With RDS nothing else names the database: DB_NAME is required.
                IamService::Rds => {
                    let error = super::tests::config(&minimal).unwrap_err();
                    assert_eq!(error, ConfigError::Missing("DB_NAME"));
                    assert_eq!(error.to_string(), "DB_NAME must be set");
                    let config = config(&[minimal.as_slice(), &[("DB_NAME", "app")]].concat());
                    let config = config.unwrap();
                    assert_eq!(config.dbname.as_deref(), Some("app"));
                    config
                }
                // DSQL has one database, `postgres`, the default.
                IamService::Dsql => {
                    let config = config(&minimal).unwrap();
                    assert_eq!(config.dbname, None);
                    config
                }
            };
            assert_eq!(
                config.auth,
                Auth::Iam {
                    service,
                    user: "app".into()
                }
            );
            assert_eq!(config.port, None);
            let error = super::tests::config(&[("DB_AUTH", mode), ("DB_USER", "app")]);
            assert_eq!(error, Err(ConfigError::Missing("DB_HOST")));
            let error =
                super::tests::config(&[("DB_AUTH", mode), ("DB_HOST", "h"), ("DB_NAME", "d")]);
            assert_eq!(error, Err(ConfigError::Missing("DB_USER")));
            let error = super::tests::config(&[
                ("DB_AUTH", mode),
                ("DB_HOST", "h"),
                ("DB_USER", "app"),
                ("DB_SECRET_ID", "db/app"),
            ])
            .unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("DB_SECRET_ID is invalid: must not be set")
            );
        }
    }

    #[test]
    fn a_wrong_or_contradictory_login_configuration_names_the_variable() {
        let error = config(&[("DB_AUTH", "iam"), ("DB_SECRET_ID", "s")]).unwrap_err();
        assert!(
            error.to_string().starts_with("DB_AUTH is invalid"),
            "{error}"
        );
        let error = config(&[("DB_SECRET_ID", "s"), ("DB_USER", "app")]).unwrap_err();
        assert!(
            error.to_string().starts_with("DB_USER is invalid"),
            "{error}"
        );
        let error = config(&[("DB_AUTH", "secret")]).unwrap_err();
        assert_eq!(error, ConfigError::Missing("DB_SECRET_ID"));
    }

    #[test]
    fn the_park_queue_is_a_url() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/parked-users";
        let config = config(&[("DB_SECRET_ID", "s"), ("PARK_QUEUE_URL", url)]).unwrap();
        assert_eq!(config.park_queue_url.as_deref(), Some(url));
    }

    #[test]
    fn invalid_numbers_name_the_variable() {
        for (var, value) in [
            ("DB_PORT", "0"),
            ("DB_PORT", "70000"),
            ("DB_PORT", "five"),
            ("DB_CONNECT_TIMEOUT_MS", "0"),
            ("DB_CONNECT_TIMEOUT_MS", "99"),
            ("DB_STATEMENT_TIMEOUT_MS", "-1"),
            // Above the role's statement_timeout: the server would cancel first.
            ("DB_STATEMENT_TIMEOUT_MS", "3001"),
            ("DEADLINE_MARGIN_MS", "600000"),
            // Less than the cancel request's 100 ms and time to answer.
            ("DEADLINE_MARGIN_MS", "150"),
            // A queue name or ARN instead of its URL.
            ("PARK_QUEUE_URL", "parked-users"),
            (
                "PARK_QUEUE_URL",
                "arn:aws:sqs:eu-west-1:123456789012:parked-users",
            ),
        ] {
            let error = config(&[("DB_SECRET_ID", "s"), (var, value)]).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { var: v, .. } if *v == var),
                "{var}={value} gave {error:?}"
            );
            assert!(error.to_string().starts_with(var), "{error}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut pairs = vec![("DB_SECRET_ID", "s")];
        for var in [
            "DB_HOST",
            "DB_PORT",
            "DB_NAME",
            "DB_CA_FILE",
            "DB_CA_PEM",
            "DB_CONNECT_TIMEOUT_MS",
            "DB_STATEMENT_TIMEOUT_MS",
            "DEADLINE_MARGIN_MS",
            "PARK_QUEUE_URL",
            "DB_AUTH",
            "DB_USER",
        ] {
            pairs.push((var, ""));
        }
        assert_eq!(
            config(&pairs).unwrap(),
            config(&[("DB_SECRET_ID", "s")]).unwrap()
        );
    }

    #[test]
    fn timeouts_that_do_not_fit_the_function_timeout_together_are_refused() {
        // Each is in range, but a connect and an INSERT at their caps would outlast 4 s.
        let error = config(&[
            ("DB_SECRET_ID", "s"),
            ("DB_CONNECT_TIMEOUT_MS", "2000"),
            ("DB_STATEMENT_TIMEOUT_MS", "2000"),
        ])
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("DB_CONNECT_TIMEOUT_MS + DB_STATEMENT_TIMEOUT_MS"),
            "{message}"
        );
        assert!(message.contains("4200 ms"), "{message}");
        // With a park queue, parking's 500 ms count too: the defaults fit, 2 s INSERTs do not.
        let park = (
            "PARK_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/1/parked",
        );
        config(&[("DB_SECRET_ID", "s"), park]).unwrap();
        let error = config(&[
            ("DB_SECRET_ID", "s"),
            park,
            ("DB_STATEMENT_TIMEOUT_MS", "2000"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("4200 ms plus 500 ms to park"),
            "{error}"
        );
        // The template's largest values fit, with parking.
        config(&[
            ("DB_SECRET_ID", "s"),
            park,
            ("DB_CONNECT_TIMEOUT_MS", "1500"),
            ("DB_STATEMENT_TIMEOUT_MS", "1800"),
        ])
        .unwrap();
    }

    /// The limits are copies of numbers that live elsewhere; they must not drift apart.
    #[test]
    fn the_limits_match_the_template_and_the_database_role() {
        let template = include_str!("../template.yaml");
        assert!(
            template.contains(&format!("      Timeout: {}\n", FUNCTION_TIMEOUT_MS / 1000)),
            "template.yaml's Timeout is not FUNCTION_TIMEOUT_MS"
        );
        let role = include_str!("../sql/app-role.sql");
        assert!(
            role.contains(&format!(
                "SET statement_timeout = %L', :'app_role', '{}s')",
                ROLE_STATEMENT_TIMEOUT_MS / 1000
            )),
            "sql/app-role.sql's statement_timeout is not ROLE_STATEMENT_TIMEOUT_MS"
        );
    }
}
