//! Backfill: records every confirmed Cognito user that has no row in `public.users`.
//!
//! It pages through the pool with `ListUsers`, maps each user with the trigger's own
//! [`NewUser::from_attributes`], and writes with the trigger's own idempotent INSERT
//! ([`db::insert_user`]), over the same verified TLS connection code and credentials. So it is
//! safe to run any number of times, and while the trigger is live: never a duplicate, never an
//! overwrite.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::Client as Cognito;
use aws_sdk_cognitoidentityprovider::error::DisplayErrorContext;
use aws_sdk_cognitoidentityprovider::types::{UserStatusType, UserType};
use cognito_post_confirmation::credentials::Credentials;
use cognito_post_confirmation::db::{self, Connection, Outcome};
use cognito_post_confirmation::user::NewUser;
use tokio_postgres::types::Type;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What to do; see `cognito-backfill --help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub user_pool_id: String,
    pub dry_run: bool,
    /// Cognito user statuses to record (default: [`CONFIRMED_STATUSES`]).
    pub statuses: Vec<String>,
    /// `ListUsers` page size, 1 to 60.
    pub page_size: i32,
}

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

pub const USAGE: &str =
    "usage: cognito-backfill --user-pool-id ID [--dry-run] [--status STATUS]... [--page-size 1-60]

Records every user of the pool who has confirmed the account (status CONFIRMED, RESET_REQUIRED,
EXTERNAL_PROVIDER or COMPROMISED; or each --status given instead) and who has no row in
public.users, exactly as the PostConfirmation trigger would have. --status takes one of Cognito's
statuses: ARCHIVED, COMPROMISED, CONFIRMED, EXTERNAL_PROVIDER, FORCE_CHANGE_PASSWORD,
RESET_REQUIRED, UNCONFIRMED, UNKNOWN. Database settings come from the same environment as the
function (DB_SECRET_ID, DB_HOST, DB_PORT, DB_NAME, DB_CA_FILE, DB_CA_PEM).
Exits 1 if any user failed, 2 if the run could not start or the pool could not be listed.";

/// Parses the command line (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut user_pool_id = None;
    let mut dry_run = false;
    let mut statuses = Vec::new();
    let mut page_size = 60;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--user-pool-id" => user_pool_id = Some(value("--user-pool-id")?),
            "--dry-run" => dry_run = true,
            "--status" => {
                let status = value("--status")?.to_ascii_uppercase();
                if !UserStatusType::values().contains(&status.as_str()) {
                    return Err(format!(
                        "unknown --status `{status}`; Cognito's statuses are {}",
                        UserStatusType::values().join(", ")
                    ));
                }
                statuses.push(status);
            }
            "--page-size" => {
                page_size = value("--page-size")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=60).contains(n))
                    .ok_or("--page-size must be a number from 1 to 60")?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let user_pool_id = user_pool_id
        .filter(|id| !id.trim().is_empty())
        .ok_or("--user-pool-id is required")?;
    if statuses.is_empty() {
        statuses = CONFIRMED_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    }
    Ok(Options {
        user_pool_id,
        dry_run,
        statuses,
        page_size,
    })
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

/// The database side: one connection, replaced once per user if it dies.
pub struct Database {
    credentials: Credentials,
    tls: MakeRustlsConnect,
    timeout: Duration,
    connection: Option<Connection>,
}

impl Database {
    pub async fn open(
        credentials: Credentials,
        tls: MakeRustlsConnect,
        timeout: Duration,
    ) -> Result<Database, Fatal> {
        let mut database = Database {
            credentials,
            tls,
            timeout,
            connection: None,
        };
        database.connection = Some(database.connect().await?);
        Ok(database)
    }

    async fn connect(&self) -> Result<Connection, Fatal> {
        db::connect(&self.credentials, &self.tls, self.timeout)
            .await
            .map_err(|e| {
                Fatal(format!(
                    "could not connect to the database at {}:{}: {}",
                    self.credentials.host,
                    self.credentials.port,
                    db::describe(&e)
                ))
            })
    }

    /// Records `user` (or, for a dry run, checks whether it would be), reconnecting once if the
    /// connection has died.
    async fn record(&mut self, user: &NewUser, dry_run: bool) -> Result<Outcome, String> {
        for attempt in 0..2 {
            let connection = match self.connection.take() {
                Some(connection) if !connection.is_closed() => connection,
                _ => self.connect().await.map_err(|Fatal(e)| e)?,
            };
            let result = if dry_run {
                exists(&connection, &user.sub).await.map(|present| {
                    if present {
                        Outcome::AlreadyPresent
                    } else {
                        Outcome::Inserted
                    }
                })
            } else {
                db::insert_user(&connection, user).await
            };
            match result {
                Ok(outcome) => {
                    self.connection = Some(connection);
                    return Ok(outcome);
                }
                Err(error) if attempt == 0 && db::is_connection_error(&error) => continue,
                Err(error) => {
                    if !db::is_connection_error(&error) {
                        self.connection = Some(connection);
                    }
                    return Err(db::describe(&error).to_string());
                }
            }
        }
        Err("the connection failed twice".to_owned())
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
        let page = cognito
            .list_users()
            .user_pool_id(&options.user_pool_id)
            .limit(options.page_size)
            .set_pagination_token(token.take())
            .send()
            .await
            .map_err(|e| {
                Fatal(format!(
                    "ListUsers on `{}` failed: {}",
                    options.user_pool_id,
                    DisplayErrorContext(&e)
                ))
            })?;
        for cognito_user in page.users() {
            report.seen += 1;
            record_one(options, database, cognito_user, &mut report).await;
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

async fn record_one(
    options: &Options,
    database: &mut Database,
    cognito_user: &UserType,
    report: &mut Report,
) {
    if let Some(reason) = skip_reason(options, cognito_user.user_status()) {
        *report.skipped.entry(reason).or_default() += 1;
        return;
    }
    let attributes: HashMap<String, String> = cognito_user
        .attributes()
        .iter()
        .filter_map(|a| Some((a.name().to_owned(), a.value()?.to_owned())))
        .collect();
    let user = match NewUser::from_attributes(cognito_user.username(), &attributes) {
        Ok(user) => user,
        Err(reason) => {
            *report.skipped.entry(reason.to_string()).or_default() += 1;
            return;
        }
    };
    match database.record(&user, options.dry_run).await {
        Ok(Outcome::Inserted) => report.inserted += 1,
        Ok(Outcome::AlreadyPresent) => report.already_present += 1,
        Err(error) => {
            report.failed += 1;
            eprintln!("backfill: sub {} failed: {error}", user.sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options, String> {
        parse_args(list.iter().map(|s| s.to_string()))
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
            (&[][..], "--user-pool-id is required"),
            (&["--user-pool-id"][..], "needs a value"),
            (&["--user-pool-id", "p", "--page-size", "61"][..], "1 to 60"),
            (&["--user-pool-id", "p", "--page-size", "x"][..], "1 to 60"),
            (&["--user-pool-id", "p", "--nope"][..], "unknown argument"),
            (
                &["--user-pool-id", "p", "--status", "CONFIRMD"][..],
                "unknown --status `CONFIRMD`; Cognito's statuses are ARCHIVED, COMPROMISED, \
                 CONFIRMED, EXTERNAL_PROVIDER, FORCE_CHANGE_PASSWORD, RESET_REQUIRED, \
                 UNCONFIRMED, UNKNOWN",
            ),
        ] {
            let error = args(list).unwrap_err();
            assert!(error.contains(reason), "{list:?}: {error}");
        }
    }
}
