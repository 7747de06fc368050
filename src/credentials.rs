//! Database credentials: from Secrets Manager (the RDS secret JSON format), or an IAM token.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Auth, Config, DEFAULT_DB_NAME, DEFAULT_DB_PORT};
use crate::iam::{IamLogin, IamSetupError};

/// Where and as whom to connect. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    /// The secret's password, or an IAM auth token.
    pub password: SecretString,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    /// For an IAM token: when to make a new one for the next connection (before it expires).
    pub renew_after: Option<std::time::Instant>,
}

impl Credentials {
    /// Whether `other` logs in as the same user with the same password (after a refused login:
    /// the same means the secret itself is wrong, different means it was rotated).
    pub fn same_login(&self, other: &Credentials) -> bool {
        self.user == other.user && self.password.expose_secret() == other.password.expose_secret()
    }

    /// Whether these may still open a new connection: a password until it is refused, an IAM
    /// token until shortly before it expires.
    pub fn is_fresh(&self) -> bool {
        self.renew_after
            .is_none_or(|renew| std::time::Instant::now() < renew)
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
    #[error("could not make an IAM auth token: {message}")]
    Token { message: String },
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

/// Where the credentials for a new connection come from (`DB_AUTH`).
pub enum Login {
    Secret(Client),
    Iam(IamLogin),
}

impl Login {
    /// The login `config` asks for. With IAM authentication no Secrets Manager client exists, so
    /// it is never called.
    pub fn new(config: &Config, sdk: &SdkConfig) -> Result<Login, IamSetupError> {
        Ok(match &config.auth {
            Auth::Secret { .. } => Login::Secret(Client::new(sdk)),
            Auth::Iam { service, user } => Login::Iam(IamLogin::new(*service, user, sdk)?),
        })
    }

    /// Credentials for a new connection: the secret read now, or an IAM token made now.
    pub async fn credentials(&self, config: &Config) -> Result<Credentials, CredentialsError> {
        match self {
            Login::Secret(client) => fetch(client, config).await,
            Login::Iam(iam) => iam.credentials(config).await,
        }
    }
}

/// Reads the secret named by the configuration and applies the configuration's overrides.
pub async fn fetch(client: &Client, config: &Config) -> Result<Credentials, CredentialsError> {
    let secret_id = &config.secret_id().to_owned();
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
        secret_id: config.secret_id().to_owned(),
        reason,
    };
    // serde's messages quote the input (here: the password), so they are never used; a secret
    // that does not parse is examined again to say which field is wrong.
    let secret: RdsSecret =
        serde_json::from_str(json).map_err(|_| malformed(what_is_wrong(json)))?;
    let port = match (config.port, secret.port) {
        (Some(port), _) => port,
        (None, None) => DEFAULT_DB_PORT,
        (None, Some(Port::Number(port))) => port,
        (None, Some(Port::Text(text))) => text
            .trim()
            .parse()
            .map_err(|_| malformed(PORT_REASON.to_owned()))?,
    };
    let host = config
        .host
        .clone()
        .or(secret.host.filter(|h| !h.trim().is_empty()))
        .ok_or_else(|| CredentialsError::NoHost {
            secret_id: config.secret_id().to_owned(),
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
            .unwrap_or_else(|| DEFAULT_DB_NAME.to_owned()),
        renew_after: None,
    })
}

const PORT_REASON: &str = "`port` must be a port number, or a string holding one";

/// Why `json` is not an RDS secret, naming fields and types only, never a value.
fn what_is_wrong(json: &str) -> String {
    let value: Value = match serde_json::from_str(json) {
        Ok(value) => value,
        Err(error) => {
            return format!(
                "not valid JSON (line {}, column {})",
                error.line(),
                error.column()
            );
        }
    };
    let Some(secret) = value.as_object() else {
        return "it is not a JSON object".to_owned();
    };
    for field in ["username", "password"] {
        match secret.get(field) {
            None => return format!("`{field}` is missing"),
            Some(Value::String(_)) => {}
            Some(_) => return format!("`{field}` must be a string"),
        }
    }
    for field in ["host", "dbname"] {
        if !matches!(
            secret.get(field),
            None | Some(Value::Null | Value::String(_))
        ) {
            return format!("`{field}` must be a string");
        }
    }
    match secret.get("port") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p <= u64::from(u16::MAX)) => {}
        Some(_) => return PORT_REASON.to_owned(),
    }
    "it does not have the RDS secret format".to_owned()
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
    fn malformed_secrets_name_the_field_and_the_expected_type() {
        for (json, reason) in [
            ("{\"username\": \"hunter2", "not valid JSON (line 1, column"),
            (r#"["hunter2"]"#, "not a JSON object"),
            (r#"{"password":"hunter2"}"#, "`username` is missing"),
            (
                r#"{"username":"a","password":["hunter2"]}"#,
                "`password` must be a string",
            ),
            (
                r#"{"username":"a","password":"p","host":7}"#,
                "`host` must be a string",
            ),
            (
                r#"{"username":"a","password":"p","port":-1}"#,
                "`port` must be a port",
            ),
            (
                r#"{"username":"a","password":"p","port":"x\"y`"}"#,
                "`port` must be a port",
            ),
        ] {
            let message = parse(json, &config(&[])).unwrap_err().to_string();
            assert!(message.contains(reason), "{json}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let json = r#"{"username":"app","password":"hunter2","host":"h"}"#;
        let credentials = parse(json, &config(&[])).unwrap();
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
