//! Backfill: records every confirmed Cognito user that has no row in `public.users`.
//!
//! It pages through the pool with `ListUsers`, maps each user with the trigger's own
//! [`NewUser::from_attributes`], and writes with the trigger's own idempotent INSERT
//! ([`db::insert_user`]), over the same verified TLS connection code and login. So it is
//! safe to run any number of times, and while the trigger is live: never a duplicate, never an
//! overwrite.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::Client as Cognito;
use aws_sdk_cognitoidentityprovider::error::DisplayErrorContext;
use aws_sdk_cognitoidentityprovider::types::{UserStatusType, UserType};
use cognito_post_confirmation::Config;
use cognito_post_confirmation::app::SERIALIZATION_RETRIES;
use cognito_post_confirmation::credentials::{Credentials, Login};
use cognito_post_confirmation::db::{self, ConnectError, Connection, Outcome};
use cognito_post_confirmation::user::NewUser;
use tokio_postgres::types::Type;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The statuses of users who have confirmed their account, recorded by default:
/// - `CONFIRMED`;
/// - `RESET_REQUIRED`: confirmed, but must reset the password before the next sign-in;
/// - `EXTERNAL_PROVIDER`: signed in through a federated identity provider, which confirmed them
///   (Cognito fires PostConfirmation at their first sign-in, so a missing row is a missed trigger);
/// - `COMPROMISED`: confirmed, then blocked by Cognito as a potential security risk.
///
/// Not by default: `UNCONFIRMED`, `FORCE_CHANGE_PASSWORD` (created by an administrator, never
/// signed in: they become `CONFIRMED` when they set a password), `ARCHIVED` and `UNKNOWN`.
pub const CONFIRMED_STATUSES: &[&str] = &[
    "CONFIRMED",
    "RESET_REQUIRED",
    "EXTERNAL_PROVIDER",
    "COMPROMISED",
];

/// Records every user of the pool who has confirmed the account and has no row in public.users,
/// exactly as the PostConfirmation trigger would have. Database settings and login come from the
/// same environment as the function (DB_SECRET_ID, or DB_AUTH and DB_USER; DB_HOST, DB_PORT,
/// DB_NAME, DB_CA_FILE, DB_CA_PEM).
/// Exits 1 if any user failed, 2 if the run could not start, the pool could not be listed or the
/// database refused the current credentials.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(name = "cognito-backfill")]
pub struct Options {
    /// The user pool to read (`ListUsers`).
    #[arg(long, value_name = "ID", value_parser = not_blank)]
    pub user_pool_id: String,
    /// Report what would be inserted; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Record users with this Cognito status (repeatable; replaces the default: CONFIRMED,
    /// RESET_REQUIRED, EXTERNAL_PROVIDER, COMPROMISED).
    #[arg(long = "status", value_name = "STATUS", value_parser = status)]
    pub statuses: Vec<String>,
    /// `ListUsers` page size.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=60))]
    pub page_size: i32,
    /// How long one `ListUsers` page may take, the SDK's retries included: not an option (tests
    /// shorten it), [`PAGE_TIMEOUT`].
    #[arg(skip = PAGE_TIMEOUT)]
    pub page_timeout: Duration,
}

/// How long one `ListUsers` page may take: the SDK has no read timeout of its own, so a Cognito
/// (or a proxy on the way) that accepts the connection and never answers would hold the run
/// forever. Long enough for the SDK's 10 attempts with backoff when Cognito throttles.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(300);

fn not_blank(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(value.to_owned())
}

/// One of Cognito's user statuses, in any case; a typo lists them.
fn status(value: &str) -> Result<String, String> {
    let status = value.to_ascii_uppercase();
    if UserStatusType::values().contains(&status.as_str()) {
        Ok(status)
    } else {
        Err(format!(
            "unknown status; Cognito's statuses are {}",
            UserStatusType::values().join(", ")
        ))
    }
}

/// Parses the command line (with the program name first), filling in the default statuses.
pub fn parse_args<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut options = <Options as clap::Parser>::try_parse_from(args)?;
    if options.statuses.is_empty() {
        options.statuses = CONFIRMED_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    }
    Ok(options)
}

/// The counts of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub seen: u64,
    pub already_present: u64,
    /// Rows written (with `--dry-run`: rows that would be written).
    pub inserted: u64,
    /// Users not recorded, by reason (a status not asked for, an unusable attribute).
    pub skipped: BTreeMap<String, u64>,
    pub failed: u64,
}

impl Report {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Why the run stopped (`error`) and what it had done until then.
    fn stopped(&self, error: impl std::fmt::Display, dry_run: bool) -> Fatal {
        Fatal(format!("{error}; stopped: {}", self.line(dry_run)))
    }

    /// The one-line progress summary.
    pub fn line(&self, dry_run: bool) -> String {
        format!(
            "seen {}, already present {}, {} {}, skipped {}, failed {}",
            self.seen,
            self.already_present,
            if dry_run { "would insert" } else { "inserted" },
            self.inserted,
            self.skipped_total(),
            self.failed
        )
    }
}

/// Why a run stopped before it finished.
#[derive(Debug)]
pub struct Fatal(pub String);

/// Why a user could not be recorded.
enum Failure {
    /// This user only: the run goes on.
    User(String),
    /// Every later user too (the database refuses the current credentials): the run stops.
    Run(Fatal),
}

/// How long getting credentials may take (what `cognito-backfill` gives [`Database::open`]): the
/// AWS SDK's first call of the run (resolving a profile, SSO, an assumed role) is part of it, on
/// an operator's machine rather than in Lambda.
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// A login refused with the current credentials too: no later user can be recorded either.
fn refused_for_good(refused: &str) -> Fatal {
    Fatal(format!(
        "{refused}, with the current credentials too: check the secret's password, or the IAM \
         policy and DB_USER"
    ))
}

fn could_not_connect(credentials: &Credentials, error: &ConnectError) -> String {
    format!(
        "could not connect to the database at {}:{}: {error}",
        credentials.host, credentials.port
    )
}

/// The database side: one connection, replaced once per user if it dies. The credentials are
/// kept for new connections as the function keeps them: an IAM token until shortly before it
/// expires, a password until a login is refused, which gets fresh credentials once (a rotated
/// secret, an expired token). So a run outlasts a rotation and a token's 15 minutes; a login
/// refused with fresh credentials too stops it.
pub struct Database {
    login: Login,
    config: Config,
    tls: MakeRustlsConnect,
    credentials: Option<Credentials>,
    connection: Option<Connection>,
    credentials_timeout: Duration,
}

impl Database {
    /// Connects, getting credentials within `credentials_timeout` each time it needs them
    /// ([`CREDENTIALS_TIMEOUT`] in `cognito-backfill`).
    pub async fn open(
        login: Login,
        config: Config,
        tls: MakeRustlsConnect,
        credentials_timeout: Duration,
    ) -> Result<Database, Fatal> {
        let mut database = Database {
            login,
            config,
            tls,
            credentials: None,
            connection: None,
            credentials_timeout,
        };
        let connection = database.connect().await.map_err(|failure| match failure {
            Failure::User(message) => Fatal(message),
            Failure::Run(fatal) => fatal,
        })?;
        database.connection = Some(connection);
        Ok(database)
    }

    async fn connect(&mut self) -> Result<Connection, Failure> {
        let credentials = match self.credentials.take().filter(Credentials::is_fresh) {
            Some(held) => held,
            None => self.fetch_credentials().await.map_err(Failure::User)?,
        };
        let refused = match db::connect(&credentials, &self.tls, self.config.connect_timeout).await
        {
            Ok(connection) => {
                self.credentials = Some(credentials);
                return Ok(connection);
            }
            Err(error @ ConnectError::LoginRejected(_)) => could_not_connect(&credentials, &error),
            Err(error) => {
                let message = could_not_connect(&credentials, &error);
                self.credentials = Some(credentials);
                return Err(Failure::User(message));
            }
        };
        // The secret was rotated, or the token expired: fresh credentials, once.
        let fresh = (self.fetch_credentials().await)
            .map_err(|error| Failure::User(format!("{refused}; then {error}")))?;
        // An unchanged password would be refused again: not tried.
        let result = match fresh.same_login(&credentials) {
            true => Err(Failure::Run(refused_for_good(&refused))),
            false => match db::connect(&fresh, &self.tls, self.config.connect_timeout).await {
                Ok(connection) => Ok(connection),
                Err(ConnectError::LoginRejected(_)) => {
                    Err(Failure::Run(refused_for_good(&refused)))
                }
                Err(error) => Err(Failure::User(could_not_connect(&fresh, &error))),
            },
        };
        self.credentials = Some(fresh);
        result
    }

    /// The secret read now, or a token made now, within the credentials timeout.
    async fn fetch_credentials(&self) -> Result<Credentials, String> {
        let limit = self.credentials_timeout;
        tokio::time::timeout(limit, self.login.credentials(&self.config))
            .await
            .map_err(|_| format!("getting the database credentials timed out after {limit:?}"))?
            .map_err(|error| error.to_string())
    }

    /// Records `user` (or, for a dry run, checks whether it would be), reconnecting once if the
    /// connection has died or the statement got no answer within `DB_STATEMENT_TIMEOUT_MS`, and
    /// trying again up to [`SERIALIZATION_RETRIES`] times when Aurora DSQL refuses the INSERT
    /// with SQLSTATE 40001 (the trigger wrote at the same moment).
    async fn record(&mut self, user: &NewUser, dry_run: bool) -> Result<Outcome, Failure> {
        let (mut reconnected, mut serialization_retries) = (false, 0);
        loop {
            let connection = match self.connection.take() {
                Some(connection) if !connection.is_closed() => connection,
                _ => self.connect().await?,
            };
            let statement = async {
                if dry_run {
                    exists(&connection, &user.sub).await.map(|present| {
                        if present {
                            Outcome::AlreadyPresent
                        } else {
                            Outcome::Inserted
                        }
                    })
                } else {
                    db::insert_user(&connection, user).await
                }
            };
            let limit = self.config.statement_timeout;
            // Out of time, the connection is closed, so a statement still queued in the proxy is
            // discarded; whatever it did on the server, the INSERT on a new connection writes the
            // row at most once.
            let Ok(result) = tokio::time::timeout(limit, statement).await else {
                connection.close().await;
                if reconnected {
                    let message = format!("the database did not answer within {limit:?}");
                    return Err(Failure::User(message));
                }
                reconnected = true;
                continue;
            };
            let error = match result {
                Ok(outcome) => {
                    self.connection = Some(connection);
                    return Ok(outcome);
                }
                Err(error) => error,
            };
            if db::is_connection_error(&error) {
                if reconnected {
                    return Err(Failure::User(db::describe(&error).to_string()));
                }
                reconnected = true;
                continue;
            }
            self.connection = Some(connection);
            if db::is_serialization_failure(&error) && serialization_retries < SERIALIZATION_RETRIES
            {
                serialization_retries += 1;
                tokio::time::sleep(db::serialization_retry_pause(serialization_retries)).await;
                continue;
            }
            return Err(Failure::User(db::describe(&error).to_string()));
        }
    }
}

async fn exists(connection: &Connection, sub: &str) -> Result<bool, tokio_postgres::Error> {
    let rows = connection
        .query_typed(
            "SELECT 1 FROM public.users WHERE cognito_user_id = $1",
            &[(&sub, Type::TEXT)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Pages through the pool and records what is missing. `progress` is called every
/// `PROGRESS_USERS` users or `PROGRESS_INTERVAL`, whichever comes first.
pub async fn run(
    options: &Options,
    cognito: &Cognito,
    database: &mut Database,
    mut progress: impl FnMut(&Report),
) -> Result<Report, Fatal> {
    const PROGRESS_USERS: u64 = 1000;
    const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
    let mut report = Report::default();
    let mut token: Option<String> = None;
    let mut last_progress = Instant::now();
    loop {
        // The SDK retries throttling (TooManyRequestsException) with exponential backoff and
        // jitter; see main.rs for the retry configuration.
        let request = cognito
            .list_users()
            .user_pool_id(&options.user_pool_id)
            .limit(options.page_size)
            .set_pagination_token(token.take())
            .send();
        let pool = &options.user_pool_id;
        let page = tokio::time::timeout(options.page_timeout, request)
            .await
            .map_err(|_| {
                let limit = options.page_timeout;
                let error = format!("ListUsers on `{pool}` got no answer within {limit:?}");
                report.stopped(error, options.dry_run)
            })?
            .map_err(|e| {
                Fatal(format!(
                    "ListUsers on `{pool}` failed: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        for cognito_user in page.users() {
            report.seen += 1;
            if let Err(Fatal(error)) =
                record_one(options, database, cognito_user, &mut report).await
            {
                return Err(report.stopped(error, options.dry_run));
            }
            if report.seen % PROGRESS_USERS == 0 || last_progress.elapsed() >= PROGRESS_INTERVAL {
                progress(&report);
                last_progress = Instant::now();
            }
        }
        match page.pagination_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(report),
        }
    }
}

/// Why a user with `status` is not recorded, or `None` if it is.
fn skip_reason(options: &Options, status: Option<&UserStatusType>) -> Option<String> {
    match status.map(UserStatusType::as_str) {
        // Nothing says this user confirmed: reported as such, never guessed.
        None => Some("no status".to_owned()),
        Some(status) if !options.statuses.iter().any(|s| s == status) => {
            Some(format!("status {status}"))
        }
        Some(_) => None,
    }
}

/// Records one listed user; an error only when the whole run must stop.
async fn record_one(
    options: &Options,
    database: &mut Database,
    cognito_user: &UserType,
    report: &mut Report,
) -> Result<(), Fatal> {
    if let Some(reason) = skip_reason(options, cognito_user.user_status()) {
        *report.skipped.entry(reason).or_default() += 1;
        return Ok(());
    }
    let attributes: HashMap<String, String> = cognito_user
        .attributes()
        .iter()
        .filter_map(|a| Some((a.name().to_owned(), a.value()?.to_owned())))
        .collect();
    let user = match NewUser::from_attributes(cognito_user.username(), &attributes) {
        Ok(user) => user,
        Err(reason) => {
            // A confirmed user who gets no row: named by `sub` (an opaque id), so the operator can
            // find each one; the reason names the attribute, never its value.
            let sub = attributes.get("sub").filter(|sub| !sub.is_empty());
            let sub: String =
                sub.map_or("(none)".to_owned(), |sub| sub.chars().take(128).collect());
            eprintln!("backfill: sub {sub} skipped: {reason}");
            *report.skipped.entry(reason.to_string()).or_default() += 1;
            return Ok(());
        }
    };
    match database.record(&user, options.dry_run).await {
        Ok(Outcome::Inserted) => report.inserted += 1,
        Ok(Outcome::AlreadyPresent) => report.already_present += 1,
        Err(Failure::User(error)) => {
            report.failed += 1;
            eprintln!("backfill: sub {} failed: {error}", user.sub);
        }
        Err(Failure::Run(fatal)) => return Err(fatal),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options, String> {
        parse_args(std::iter::once(&"cognito-backfill").chain(list)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_every_confirmed_status_and_full_pages() {
        let options = args(&["--user-pool-id", "us-east-1_x"]).unwrap();
        assert_eq!(
            options.statuses,
            vec![
                "CONFIRMED",
                "RESET_REQUIRED",
                "EXTERNAL_PROVIDER",
                "COMPROMISED"
            ]
        );
        for status in CONFIRMED_STATUSES {
            assert!(UserStatusType::values().contains(status), "{status}");
        }
        assert_eq!(options.page_size, 60);
        assert!(!options.dry_run);
    }

    #[test]
    fn users_are_skipped_by_status_and_a_missing_status_is_named() {
        let options = args(&["--user-pool-id", "p"]).unwrap();
        for recorded in [
            "CONFIRMED",
            "RESET_REQUIRED",
            "EXTERNAL_PROVIDER",
            "COMPROMISED",
        ] {
            let status = UserStatusType::from(recorded);
            assert_eq!(skip_reason(&options, Some(&status)), None, "{recorded}");
        }
        let pending = UserStatusType::from("FORCE_CHANGE_PASSWORD");
        assert_eq!(
            skip_reason(&options, Some(&pending)).as_deref(),
            Some("status FORCE_CHANGE_PASSWORD")
        );
        assert_eq!(skip_reason(&options, None).as_deref(), Some("no status"));
    }

    #[test]
    fn statuses_repeat_and_flags_parse() {
        let options = args(&[
            "--user-pool-id",
            "p",
            "--dry-run",
            "--status",
            "confirmed",
            "--status",
            "EXTERNAL_PROVIDER",
            "--page-size",
            "10",
        ])
        .unwrap();
        assert!(options.dry_run);
        assert_eq!(options.statuses, vec!["CONFIRMED", "EXTERNAL_PROVIDER"]);
        assert_eq!(options.page_size, 10);
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for (list, reason) in [
            (&[][..], "--user-pool-id <ID>"),
            (&["--user-pool-id"][..], "a value is required"),
            (&["--user-pool-id", " "][..], "must not be empty"),
            (&["--user-pool-id", "p", "--page-size", "61"][..], "1..=60"),
            (
                &["--user-pool-id", "p", "--page-size", "x"][..],
                "invalid digit",
            ),
            (
                &["--user-pool-id", "p", "--nope"][..],
                "unexpected argument '--nope'",
            ),
            (
                &["--user-pool-id", "p", "--status", "CONFIRMD"][..],
                "invalid value 'CONFIRMD' for '--status <STATUS>': unknown status; Cognito's \
                 statuses are ARCHIVED, COMPROMISED, CONFIRMED, EXTERNAL_PROVIDER, \
                 FORCE_CHANGE_PASSWORD, RESET_REQUIRED, UNCONFIRMED, UNKNOWN",
            ),
        ] {
            let error = args(list).unwrap_err();
            assert!(error.contains(reason), "{list:?}: {error}");
        }
    }
}
