//! IAM database authentication tokens: the password for RDS / RDS Proxy with IAM authentication
//! (`rds-db`) and for Aurora DSQL (`dsql`). A token is a SigV4-presigned URL without its scheme,
//! valid for 15 minutes, made by the AWS SDK's own signer (`aws-sigv4`) with the execution role's
//! credentials; nothing is sent to AWS to make one.
//!
//! The query string is laid out as botocore lays it out (`generate_db_auth_token`, boto3's
//! `generate_db_connect_auth_token` / `generate_db_connect_admin_auth_token`), so the tokens are
//! byte for byte the reference implementation's (tests/golden/iam-tokens.json).

use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// How long a token is valid (the services' maximum, and the reference implementation's value).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A token is used for new connections until this long after it was made, then a new one is
/// made (it is valid for 15 minutes; a minute is kept for clock skew and a slow connect).
pub const TOKEN_REUSE: Duration = Duration::from_secs(14 * 60);

/// Logging in with IAM: makes a token for each new connection, reusing it while it is fresh.
pub struct IamLogin {
    action: Action,
    user: String,
    region: String,
    provider: SharedCredentialsProvider,
}

/// Why IAM authentication cannot work in this environment (fails the cold start).
#[derive(Debug, thiserror::Error)]
pub enum IamSetupError {
    #[error("AWS_REGION must be set for DB_AUTH={0} (the token is signed for a region)")]
    NoRegion(&'static str),
    #[error(
        "DB_AUTH={0} needs AWS credentials (in Lambda, the execution role's), and none are configured"
    )]
    NoCredentials(&'static str),
}

impl IamLogin {
    pub fn new(
        service: crate::config::IamService,
        user: &str,
        sdk: &SdkConfig,
    ) -> Result<Self, IamSetupError> {
        use crate::config::IamService;
        let (mode, action) = match service {
            IamService::Rds => ("rds-iam", Action::RdsConnect),
            IamService::Dsql => ("dsql-iam", Action::dsql_for(user)),
        };
        Ok(Self {
            action,
            user: user.to_owned(),
            region: sdk
                .region()
                .ok_or(IamSetupError::NoRegion(mode))?
                .to_string(),
            provider: sdk
                .credentials_provider()
                .ok_or(IamSetupError::NoCredentials(mode))?,
        })
    }

    /// Credentials for a new connection: `DB_HOST`, `DB_PORT` (5432), `DB_NAME` (`postgres`),
    /// `DB_USER` and a token made now with the execution role's current credentials.
    pub async fn credentials(
        &self,
        config: &crate::config::Config,
    ) -> Result<crate::credentials::Credentials, crate::credentials::CredentialsError> {
        use crate::credentials::CredentialsError;
        let failed = |message: String| CredentialsError::Token { message };
        let aws = self.provider.provide_credentials().await.map_err(|e| {
            failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
        })?;
        let host = config.host.clone().unwrap_or_default();
        let port = config.port.unwrap_or(crate::config::DEFAULT_DB_PORT);
        let made = Instant::now();
        let password = token(
            self.action,
            &host,
            port,
            &self.user,
            &self.region,
            &aws,
            SystemTime::now(),
        )
        .map_err(|e| failed(e.to_string()))?;
        Ok(crate::credentials::Credentials {
            user: self.user.clone(),
            password: password.into(),
            host,
            port,
            dbname: config
                .dbname
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_DB_NAME.to_owned()),
            renew_after: Some(made + TOKEN_REUSE),
        })
    }
}

/// What a token lets its bearer do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `rds-db:connect` as a database user, through RDS Proxy or to an RDS/Aurora instance.
    RdsConnect,
    /// `dsql:DbConnect`: a custom database role on an Aurora DSQL cluster.
    DsqlConnect,
    /// `dsql:DbConnectAdmin`: the `admin` role on an Aurora DSQL cluster.
    DsqlConnectAdmin,
}

impl Action {
    /// DSQL's `admin` user needs the admin action, every other user the plain one.
    pub fn dsql_for(user: &str) -> Self {
        if user == "admin" {
            Action::DsqlConnectAdmin
        } else {
            Action::DsqlConnect
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing the database auth token failed: {0}")]
pub struct TokenError(String);

/// The token for `user` at `host:port` in `region`, signed with `credentials` at `now`.
pub fn token(
    action: Action,
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let (service, authority, mut query) = match action {
        Action::RdsConnect => (
            "rds-db",
            format!("{host}:{port}"),
            vec![
                ("Action".to_owned(), "connect".to_owned()),
                ("DBUser".to_owned(), user.to_owned()),
            ],
        ),
        Action::DsqlConnect | Action::DsqlConnectAdmin => {
            let name = if action == Action::DsqlConnectAdmin {
                "DbConnectAdmin"
            } else {
                "DbConnect"
            };
            (
                "dsql",
                host.to_owned(),
                vec![("Action".to_owned(), name.to_owned())],
            )
        }
    };
    let url = format!("https://{authority}/?{}", encode_query(&query));
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = aws_sigv4::http_request::SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once(("host", authority.as_str())),
        // botocore signs the hash of the empty body, not UNSIGNED-PAYLOAD.
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| TokenError(e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| TokenError(e.to_string()))?
        .into_parts();
    // botocore's order: the request's own parameters, then the signer's, the signature last.
    let (_, signed) = instructions.into_parts();
    let mut signature = None;
    let mut rest = Vec::new();
    for (name, value) in signed {
        match name {
            "X-Amz-Signature" => signature = Some(value.into_owned()),
            _ => rest.push((name.to_owned(), value.into_owned())),
        }
    }
    let order = |name: &str| {
        [
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Security-Token",
        ]
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
    };
    rest.sort_by_key(|(name, _)| order(name));
    query.extend(rest);
    let signature = signature.ok_or_else(|| TokenError("the signer gave no signature".into()))?;
    query.push(("X-Amz-Signature".to_owned(), signature));
    Ok(format!("{authority}/?{}", encode_query(&query)))
}

/// `name=value&…`, each percent-encoded as SigV4 requires (RFC 3986 unreserved characters kept).
fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// tests/golden/iam_tokens.py's output: botocore's tokens for fixed inputs and clock.
    const GOLDEN: &str = include_str!("../tests/golden/iam-tokens.json");

    #[test]
    fn tokens_equal_the_reference_implementations_byte_for_byte() {
        let golden: Value = serde_json::from_str(GOLDEN).unwrap();
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(golden["at_unix_seconds"].as_u64().unwrap());
        let cases = golden["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let credentials = Credentials::new(
                golden["access_key"].as_str().unwrap(),
                golden["secret_key"].as_str().unwrap(),
                case["session_token"].as_str().map(str::to_owned),
                None,
                "golden",
            );
            let user = case["user"].as_str().unwrap();
            let action = match case["mode"].as_str().unwrap() {
                "rds-iam" => Action::RdsConnect,
                _ => Action::dsql_for(user),
            };
            let made = token(
                action,
                case["host"].as_str().unwrap(),
                case["port"].as_u64().unwrap() as u16,
                user,
                case["region"].as_str().unwrap(),
                &credentials,
                at,
            )
            .unwrap();
            assert_eq!(made, case["token"].as_str().unwrap(), "{}", case["name"]);
        }
    }

    #[test]
    fn iam_login_without_a_region_or_credentials_fails_naming_what_is_missing() {
        use crate::config::IamService;
        let no_region = SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "a", "b", None, None, "test",
            )))
            .build();
        let error = IamLogin::new(IamService::Rds, "app", &no_region)
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "AWS_REGION must be set for DB_AUTH=rds-iam (the token is signed for a region)"
        );
        let no_credentials = SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        let error = IamLogin::new(IamService::Dsql, "app", &no_credentials)
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .starts_with("DB_AUTH=dsql-iam needs AWS credentials"),
            "{error}"
        );
    }

    #[test]
    fn only_dsqls_admin_gets_the_admin_action() {
        assert_eq!(Action::dsql_for("admin"), Action::DsqlConnectAdmin);
        assert_eq!(Action::dsql_for("Admin"), Action::DsqlConnect);
        assert_eq!(Action::dsql_for("app"), Action::DsqlConnect);
    }
}
