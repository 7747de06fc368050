//! Database credentials from Secrets Manager (the RDS secret JSON format).

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::Config;
use crate::redact::redact_values;

/// Where and as whom to connect. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: SecretString,
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

impl Credentials {
    /// Whether `other` carries the same password (used to tell a rotation from a wrong secret).
    pub fn same_password(&self, other: &Credentials) -> bool {
        self.password.expose_secret() == other.password.expose_secret()
    }
}

/// Why credentials could not be had. Messages never contain the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("could not read secret `{secret_id}` from Secrets Manager: {message}")]
    Fetch { secret_id: String, message: String },
    #[error("secret `{secret_id}` has no SecretString (binary secrets are not supported)")]
    NotAString { secret_id: String },
    #[error("secret `{secret_id}` is not RDS secret JSON: {reason}")]
    Malformed { secret_id: String, reason: String },
    #[error("no database host: set DB_HOST or put `host` in secret `{secret_id}`")]
    NoHost { secret_id: String },
}

#[derive(Deserialize)]
struct RdsSecret {
    username: String,
    password: SecretString,
    host: Option<String>,
    port: Option<Port>,
    dbname: Option<String>,
}

/// RDS writes `port` as a number; hand-made secrets often hold a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

/// Reads the secret named by the configuration and applies the configuration's overrides.
pub async fn fetch(client: &Client, config: &Config) -> Result<Credentials, CredentialsError> {
    let secret_id = &config.secret_id;
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|error| CredentialsError::Fetch {
            secret_id: secret_id.clone(),
            message: DisplayErrorContext(&error).to_string(),
        })?;
    let json = output
        .secret_string()
        .ok_or_else(|| CredentialsError::NotAString {
            secret_id: secret_id.clone(),
        })?;
    parse(json, config)
}

/// Parses RDS secret JSON and applies `DB_HOST`/`DB_PORT`/`DB_NAME`.
pub fn parse(json: &str, config: &Config) -> Result<Credentials, CredentialsError> {
    let malformed = |reason: String| CredentialsError::Malformed {
        secret_id: config.secret_id.clone(),
        reason,
    };
    let secret: RdsSecret =
        serde_json::from_str(json).map_err(|error| malformed(redact_values(&error.to_string())))?;
    let port = match (config.port, secret.port) {
        (Some(port), _) => port,
        (None, None) => 5432,
        (None, Some(Port::Number(port))) => port,
        (None, Some(Port::Text(text))) => text
            .trim()
            .parse()
            .map_err(|_| malformed("`port` is not a port number".to_owned()))?,
    };
    let host = config
        .host
        .clone()
        .or(secret.host.filter(|h| !h.trim().is_empty()))
        .ok_or_else(|| CredentialsError::NoHost {
            secret_id: config.secret_id.clone(),
        })?;
    if secret.username.trim().is_empty() {
        return Err(malformed("`username` is empty".to_owned()));
    }
    Ok(Credentials {
        user: secret.username,
        password: secret.password,
        host,
        port,
        dbname: config
            .dbname
            .clone()
            .or(secret.dbname.filter(|d| !d.trim().is_empty()))
            .unwrap_or_else(|| "postgres".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| {
            if name == "DB_SECRET_ID" {
                return Some("db/app".to_owned());
            }
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn reads_the_rds_secret_format() {
        let json = r#"{"engine":"postgres","username":"app","password":"pw","host":"db.internal","port":5432,"dbname":"main"}"#;
        let credentials = parse(json, &config(&[])).unwrap();
        assert_eq!(credentials.user, "app");
        assert_eq!(credentials.password.expose_secret(), "pw");
        assert_eq!(
            (
                credentials.host.as_str(),
                credentials.port,
                credentials.dbname.as_str()
            ),
            ("db.internal", 5432, "main")
        );
    }

    #[test]
    fn environment_overrides_win_and_defaults_fill_gaps() {
        let json = r#"{"username":"app","password":"pw","host":"db.internal","port":"5433"}"#;
        let credentials = parse(json, &config(&[])).unwrap();
        assert_eq!(
            (credentials.port, credentials.dbname.as_str()),
            (5433, "postgres")
        );
        let overridden = config(&[("DB_HOST", "proxy"), ("DB_PORT", "6432"), ("DB_NAME", "x")]);
        let credentials = parse(json, &overridden).unwrap();
        assert_eq!(
            (
                credentials.host.as_str(),
                credentials.port,
                credentials.dbname.as_str()
            ),
            ("proxy", 6432, "x")
        );
    }

    #[test]
    fn a_secret_without_host_needs_db_host() {
        let error = parse(r#"{"username":"app","password":"pw"}"#, &config(&[])).unwrap_err();
        assert!(matches!(error, CredentialsError::NoHost { .. }), "{error}");
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_values() {
        for json in [
            "not json hunter2",
            r#"{"username":"app"}"#,
            r#"{"username":"app","password":12345678}"#,
            r#"{"username":"app","password":"hunter2","port":"hunter2"}"#,
            r#"{"username":"hunter2","password":"hunter2","host":"h","port":{"x":"hunter2"}}"#,
            r#"{"username":" ","password":"hunter2","host":"h"}"#,
        ] {
            let error = parse(json, &config(&[])).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, CredentialsError::Malformed { .. }),
                "{message}"
            );
            assert!(
                !message.contains("hunter2") && !message.contains("12345678"),
                "{message}"
            );
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let json = r#"{"username":"app","password":"hunter2","host":"h"}"#;
        let credentials = parse(json, &config(&[])).unwrap();
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
