//! PostgreSQL: opening a verified TLS connection and the one idempotent INSERT.
//!
//! Everything here is safe behind a transaction-pooling proxy (RDS Proxy, PgBouncer): the INSERT
//! goes out as one unnamed statement (`query_typed`: Parse/Bind/Execute/Sync in one round trip),
//! and no session state is ever set.

use std::fmt;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::credentials::Credentials;
use crate::user::NewUser;

/// Shown to the server as `application_name` (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "cognito-post-confirmation";

/// Inserts the user unless a row with the same `cognito_user_id` exists. `RETURNING` tells the two
/// apart; an existing row is never updated. `created_at` is `$5` when given (a parked user's), else
/// `current_timestamp` as the column's default: a `timestamptz` either way, which the `timestamp`
/// column takes in the session's time zone.
pub const INSERT_USER: &str = "INSERT INTO public.users (display_name, email, handle, cognito_user_id, created_at) \
     VALUES ($1, $2, $3, $4, coalesce($5, current_timestamp)) \
     ON CONFLICT (cognito_user_id) DO NOTHING \
     RETURNING 1";

/// What the INSERT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new row was written.
    Inserted,
    /// The user already had a row (a retried or repeated event); nothing was written.
    AlreadyPresent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Inserted => "inserted",
            Outcome::AlreadyPresent => "already_present",
        }
    }
}

/// An open connection. Dropping it closes the socket even with a request in flight, at the
/// runtime's next turn; [`Connection::close`] closes it before returning. tokio-postgres alone
/// would keep the connection open until pending requests are answered, so an INSERT abandoned at
/// its deadline (say, queued in the proxy while the database is down) could still commit much
/// later.
pub struct Connection {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Closes the socket, even with a request in flight, and returns once it is closed: a request
    /// still queued in the proxy is then discarded, not run when the database is back. (A dropped
    /// connection's socket stays open until the runtime runs again, which a frozen Lambda
    /// execution environment may not do for a long time.)
    pub async fn close(mut self) {
        self.driver.abort();
        // Ends at once: the task is dropped (closing the socket) the moment it is next scheduled.
        let _ = (&mut self.driver).await;
    }
}

impl std::ops::Deref for Connection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why [`connect`] opened no connection.
#[derive(Debug)]
pub enum ConnectError {
    /// The server or proxy refused the login ([`is_login_rejected`]): stale or wrong credentials.
    LoginRejected(Error),
    /// Anything else: no route, refused, TLS, the server shutting down.
    Failed(Error),
    /// Not connected within the time limit, TLS handshake and login included.
    TimedOut(Duration),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::LoginRejected(error) | ConnectError::Failed(error) => {
                describe(error).fmt(f)
            }
            ConnectError::TimedOut(limit) => write!(f, "no answer within {limit:?}"),
        }
    }
}

/// Opens a connection that requires TLS and verifies the server's certificate and host name
/// (the rustls connector always verifies), within `connect_timeout` from the TCP connect to the
/// end of the login: tokio-postgres alone bounds only the TCP connect, and a proxy that accepts
/// it and then stops answering would hold the rest forever. The connection's driver runs as a
/// background task.
pub async fn connect(
    credentials: &Credentials,
    tls: &MakeRustlsConnect,
    connect_timeout: Duration,
) -> Result<Connection, ConnectError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&credentials.host)
        .port(credentials.port)
        .user(&credentials.user)
        .password(credentials.password.expose_secret())
        .dbname(&credentials.dbname)
        .application_name(APPLICATION_NAME)
        .ssl_mode(SslMode::Require)
        .connect_timeout(connect_timeout);
    let (client, connection) =
        match tokio::time::timeout(connect_timeout, config.connect(tls.clone())).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) if is_login_rejected(&error) => {
                return Err(ConnectError::LoginRejected(error));
            }
            Ok(Err(error)) => return Err(ConnectError::Failed(error)),
            Err(_) => return Err(ConnectError::TimedOut(connect_timeout)),
        };
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %describe(&error), "database connection closed");
        }
    });
    Ok(Connection { client, driver })
}

/// Runs the idempotent INSERT for `user`, on its own (one round trip, autocommit).
pub async fn insert_user(client: &Client, user: &NewUser) -> Result<Outcome, Error> {
    outcome(client.query_typed(INSERT_USER, &params(user)).await?)
}

fn params(user: &NewUser) -> [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 5] {
    [
        (&user.display_name, Type::TEXT),
        (&user.email, Type::TEXT),
        (&user.handle, Type::TEXT),
        (&user.sub, Type::TEXT),
        (&user.created_at, Type::TIMESTAMPTZ),
    ]
}

fn outcome(rows: Vec<tokio_postgres::Row>) -> Result<Outcome, Error> {
    Ok(if rows.is_empty() {
        Outcome::AlreadyPresent
    } else {
        Outcome::Inserted
    })
}

/// Whether `error` means the connection itself failed (closed, reset, the server or proxy shutting
/// down) or reaches a server that takes no writes (25006: after a failover, the old writer, through
/// an endpoint whose DNS had not caught up), so that the same statement on a new connection may
/// succeed and this connection must not be used again.
pub fn is_connection_error(error: &Error) -> bool {
    match error.code() {
        None => error.as_db_error().is_none(),
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        }
    }
}

/// Whether the statement lost an optimistic-concurrency race (SQLSTATE 40001) and may simply be
/// run again.
pub fn is_serialization_failure(error: &Error) -> bool {
    error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

/// How long to wait before the `attempt`-th retry of a statement refused with SQLSTATE 40001: a
/// short, jittered pause (Aurora DSQL's advice), 10 ms per attempt plus up to 9 ms.
pub fn serialization_retry_pause(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 10));
    Duration::from_millis(10 * u64::from(attempt) + jitter)
}

/// Whether the server (or proxy) refused the login, which after a rotation means the credentials
/// we hold are stale. PgBouncer reports a failed login as a protocol error (08P01).
pub fn is_login_rejected(error: &Error) -> bool {
    matches!(
        error.code(),
        Some(code) if code.code().starts_with("28") || *code == SqlState::PROTOCOL_VIOLATION
    )
}

/// A description of a database error that is safe to log and to return: the server's message and
/// SQLSTATE, but not its DETAIL, which can quote row values (personal data).
pub fn describe(error: &Error) -> impl fmt::Display + '_ {
    Described(error)
}

struct Described<'a>(&'a Error);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(
                f,
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => match std::error::Error::source(self.0) {
                Some(source) => write!(f, "{}: {source}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}
