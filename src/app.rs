//! The state one execution environment keeps between invocations: the Secrets Manager client,
//! the TLS configuration, the credentials and the open connection. Built once at cold start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use tokio::sync::Mutex;
use tokio::time::timeout_at;
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{info, warn};

use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError, Login};
use crate::db::{self, ConnectError, Connection, Outcome};
use crate::deadline::{self, ColdStart};
use crate::iam::IamSetupError;
use crate::metrics::{self, Sink, Tally};
use crate::park::{ParkError, Parking};
use crate::tls::{self, TlsError};
use crate::user::NewUser;

/// How long a last-resort cancel request may take; it comes out of the deadline margin
/// (`DEADLINE_MARGIN_MS`, default 200 ms), or with a park queue out of the time kept to park.
pub(crate) const CANCEL_TIMEOUT: Duration = Duration::from_millis(100);

/// How often an INSERT refused with SQLSTATE 40001 (a serialization failure: Aurora DSQL's
/// optimistic concurrency when a concurrent transaction committed first) is tried again, always
/// inside the deadline. The INSERT is idempotent, so trying again is safe.
pub const SERIALIZATION_RETRIES: u32 = 3;

/// How long a connection must have sat unused before no answer on it is taken for a connection
/// something on the way forgot without a reset (a firewall such as AWS Network Firewall drops a
/// forgotten connection's packets; a NAT gateway or a load balancer resets it), not for a slow
/// database: the shortest TCP idle timeout AWS Network Firewall or a security group's connection
/// tracking can be given.
pub const FORGETTABLE_AFTER: Duration = Duration::from_secs(60);

/// How long the first INSERT on such a connection may go unanswered (at most
/// `DB_STATEMENT_TIMEOUT_MS`) before the function tries once on a new connection, if at least as
/// long is left before the deadline: a hundred times an INSERT through the proxy.
pub const ANSWER_AFTER_IDLE: Duration = Duration::from_millis(500);

/// Everything a warm invocation reuses.
pub struct App {
    config: Config,
    login: Login,
    tls: MakeRustlsConnect,
    state: Mutex<State>,
    /// When the cold start ran; the first invocation shares Cognito's limit with it.
    cold_start: ColdStart,
    first_invocation: AtomicBool,
    connections_opened: AtomicU64,
    /// [`FORGETTABLE_AFTER`], unless a test asks for less.
    forgettable_after: Duration,
    /// The park queue, when `PARK_QUEUE_URL` is set.
    parking: Option<Parking>,
    metrics: Sink,
    function_name: String,
    /// The `level` of the metric lines ([`metrics::level_kept`]).
    metrics_level: Option<&'static str>,
}

#[derive(Default)]
struct State {
    credentials: Option<Credentials>,
    client: Option<Connection>,
    /// When `client` last finished an INSERT or was opened.
    last_used: Option<Instant>,
}

/// Why a cold start cannot produce a working function (configuration, not the network).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("loading the TLS trust store failed: {0}")]
    TrustStoreTask(String),
    #[error(transparent)]
    Iam(#[from] IamSetupError),
}

/// Why a user could not be recorded. None of these messages holds personal data or secrets.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("could not connect to the database at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("the INSERT failed: {message}")]
    Insert {
        message: String,
        /// The SQLSTATE, when the server answered with one.
        code: Option<String>,
    },
    #[error("timed out after {elapsed_ms} ms while {stage} (deadline or cap reached)")]
    Timeout {
        stage: &'static str,
        elapsed_ms: u128,
    },
}

impl RecordError {
    /// Whether the failure is the database's or the network's, not the data's: everything but an
    /// INSERT refused for its values (SQLSTATE class 22, data exception, or 23, integrity
    /// constraint violation), which would be refused again on replay. (Class 54 is not the data's
    /// alone: a value too big for a btree index entry gets 54000, but so does every INSERT while
    /// the database stops assigning transaction ids to avoid wraparound.)
    pub fn is_outage(&self) -> bool {
        match self {
            RecordError::Insert {
                code: Some(code), ..
            } => !(code.starts_with("22") || code.starts_with("23")),
            _ => true,
        }
    }

    /// Whether the database answered the INSERT with a refusal (an SQLSTATE) rather than not
    /// being reached in time: the next user's INSERT may well succeed, whatever this one's cause
    /// (its values, an operator's trigger, a limit). After any other failure, the next one would
    /// only wait for the same outage.
    pub fn is_refusal(&self) -> bool {
        matches!(self, RecordError::Insert { code: Some(_), .. })
    }
}

impl App {
    /// The instant by which an invocation with Lambda deadline `lambda_deadline_ms` must have
    /// answered (see [`crate::deadline`]): Lambda's deadline, and for the first invocation also
    /// what the cold start left of Cognito's limit, less `DEADLINE_MARGIN_MS`.
    pub fn deadline(&self, lambda_deadline_ms: u64) -> Instant {
        let first = self.first_invocation.swap(false, Ordering::Relaxed);
        deadline::invocation_deadline(
            lambda_deadline_ms,
            self.config.deadline_margin,
            first.then_some(self.cold_start),
        )
    }

    /// How many database connections this execution environment has opened (one, unless the
    /// proxy or database dropped one, one unused for a while went unanswered, or a login was
    /// refused and retried).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.load(Ordering::Relaxed)
    }

    /// Builds the clients and, overlapping the trust store's load with the secret's fetch, warms
    /// up the connection. Reading the secret and connecting share one cap,
    /// `DB_CONNECT_TIMEOUT_MS`. Only configuration errors fail; a database or Secrets Manager
    /// that is unreachable now is logged, and the first invocation tries again.
    pub async fn init(config: Config, sdk: &SdkConfig) -> Result<Self, InitError> {
        let began = Instant::now();
        let deadline = began + config.connect_timeout;
        let login = Login::new(&config, sdk)?;
        let parking = config
            .park_queue_url
            .clone()
            .map(|url| Parking::new(sdk, url));
        let extra_cas = config.extra_cas.clone();
        let trust_store = tokio::task::spawn_blocking(move || tls::client_config(&extra_cas));
        let fetch = timeout_at(deadline.into(), login.credentials(&config));
        let (trust_store, fetched) = tokio::join!(trust_store, fetch);
        let tls_config = trust_store.map_err(|e| InitError::TrustStoreTask(e.to_string()))??;
        let mut app = App {
            tls: MakeRustlsConnect::new(tls_config),
            login,
            state: Mutex::new(State::default()),
            config,
            cold_start: ColdStart {
                began,
                ended: began,
            },
            first_invocation: AtomicBool::new(true),
            connections_opened: AtomicU64::new(0),
            forgettable_after: FORGETTABLE_AFTER,
            parking,
            metrics: metrics::stdout(),
            function_name: metrics::function_name(),
            metrics_level: metrics::level_kept(
                std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
            ),
        };
        match fetched {
            Ok(Ok(credentials)) => {
                let connected = app.connect(&credentials, deadline).await;
                let state = app.state.get_mut();
                match connected {
                    Ok(client) => {
                        state.client = Some(client);
                        state.last_used = Some(Instant::now());
                    }
                    Err(rejected) => {
                        let error = RecordError::from(rejected);
                        warn!(%error, "cold start: could not connect; the first invocation retries")
                    }
                }
                state.credentials = Some(credentials);
            }
            Ok(Err(error)) => {
                warn!(%error, "cold start: could not get the database credentials; the first invocation retries");
            }
            Err(_) => {
                warn!(
                    "cold start: getting the database credentials timed out; the first invocation retries"
                );
            }
        }
        app.cold_start.ended = Instant::now();
        info!(
            elapsed_ms = began.elapsed().as_millis() as u64,
            "cold start complete"
        );
        Ok(app)
    }

    /// Whether a user who cannot be recorded is parked (`PARK_QUEUE_URL` is set).
    pub fn parks(&self) -> bool {
        self.parking.is_some()
    }

    /// Puts `user` on the park queue by `deadline`; `None` without a park queue.
    pub async fn park(&self, user: &NewUser, deadline: Instant) -> Option<Result<(), ParkError>> {
        match &self.parking {
            Some(parking) => Some(parking.park(user, deadline).await),
            None => None,
        }
    }

    /// Sends the metric lines for one invocation to the sink (standard output in Lambda).
    pub fn emit(&self, tally: &Tally) {
        let now = std::time::SystemTime::now();
        for line in tally.lines(&self.function_name, self.metrics_level, now) {
            (self.metrics)(&line);
        }
    }

    /// Sends metric lines to `sink` instead of standard output (tests).
    pub fn with_metrics_sink(mut self, sink: Sink) -> Self {
        self.metrics = sink;
        self
    }

    /// Takes a connection unused for `idle` (instead of [`FORGETTABLE_AFTER`]) for one that may
    /// have been forgotten on the way (tests).
    pub fn with_forgettable_after(mut self, idle: Duration) -> Self {
        self.forgettable_after = idle;
        self
    }

    /// Gives the metric lines `level` (and a timestamp) instead of what `AWS_LAMBDA_LOG_LEVEL`
    /// asks for ([`metrics::level_kept`]; tests).
    pub fn with_metrics_level(mut self, level: Option<&'static str>) -> Self {
        self.metrics_level = level;
        self
    }

    /// Records `user` exactly once, finishing (successfully or not) before `deadline`.
    ///
    /// A connection found dead (the proxy closed it while the function was idle, or the database
    /// restarted) is replaced and the INSERT retried once; that retry is safe because the INSERT
    /// is idempotent. So is a connection unused for [`FORGETTABLE_AFTER`] whose INSERT gets no
    /// answer within [`ANSWER_AFTER_IDLE`]: something on the way may have forgotten it without
    /// resetting it. A rejected login re-reads the secret once (rotation).
    pub async fn record(&self, user: &NewUser, deadline: Instant) -> Result<Outcome, RecordError> {
        let started = Instant::now();
        let mut state = self.state.lock().await;
        // Why the connection was given up and the INSERT tried on a new one (once at most).
        let mut retried: Option<String> = None;
        let mut conflicts = 0;
        loop {
            let (client, idle) = match state.client.take() {
                Some(client) if !client.is_closed() => {
                    (client, state.last_used.map(|used| used.elapsed()))
                }
                stale => {
                    if stale.is_some() {
                        info!("the previous connection was closed; reconnecting");
                    }
                    (self.open(&mut state.credentials, deadline).await?, None)
                }
            };
            let client = state.client.insert(client);
            // Silence on a connection that sat unused this long may mean it was forgotten on the
            // way, and then no answer ever comes: give it less time, and a new one the rest.
            let forgettable = idle.filter(|idle| *idle >= self.forgettable_after);
            let cap = match forgettable {
                Some(_) => self.config.statement_timeout.min(ANSWER_AFTER_IDLE),
                None => self.config.statement_timeout,
            };
            let limit = deadline.min(Instant::now() + cap);
            let attempt = self.insert_or_cancel(client, user, limit).await;
            state.last_used = Some(Instant::now());
            let result = match attempt {
                Attempt::Done(result) => result,
                Attempt::TimedOut => {
                    // Never reuse a connection whose state we do not fully know; close it now, so
                    // that the proxy discards the INSERT if it is still queued there.
                    if let Some(abandoned) = state.client.take() {
                        abandoned.close().await;
                    }
                    // Once, and only with time for a new connection to be worth trying.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let worth_it = retried.is_none() && left >= ANSWER_AFTER_IDLE;
                    if let Some(idle) = forgettable.filter(|_| worth_it) {
                        let idle_s = idle.as_secs();
                        warn!(
                            idle_s,
                            "no answer on a connection unused for a while (forgotten on the way?); retrying once on a new connection"
                        );
                        retried = Some(format!("no answer on a connection unused for {idle_s} s"));
                        continue;
                    }
                    return Err(RecordError::Timeout {
                        stage: "inserting",
                        elapsed_ms: started.elapsed().as_millis(),
                    });
                }
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(error)
                    if db::is_serialization_failure(&error)
                        && conflicts < SERIALIZATION_RETRIES
                        && Instant::now() < deadline =>
                {
                    conflicts += 1;
                    info!(
                        attempt = conflicts,
                        "the INSERT met a concurrent commit (40001); trying again"
                    );
                    // Never past the deadline.
                    let pause = db::serialization_retry_pause(conflicts);
                    tokio::time::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                Err(error) if db::is_connection_error(&error) => {
                    state.client = None;
                    let error = db::describe(&error);
                    if let Some(first) = retried {
                        let endpoint = state
                            .credentials
                            .as_ref()
                            .map(|c| format!("{}:{}", c.host, c.port))
                            .unwrap_or_default();
                        return Err(RecordError::Connect {
                            endpoint,
                            message: format!(
                                "{first}, then the new connection failed during the INSERT: {error}"
                            ),
                        });
                    }
                    warn!(%error, "the connection failed during the INSERT; retrying once on a new connection");
                    retried = Some(format!("the connection failed during the INSERT: {error}"));
                }
                Err(error) => {
                    return Err(RecordError::Insert {
                        message: db::describe(&error).to_string(),
                        code: error.code().map(|code| code.code().to_owned()),
                    });
                }
            }
        }
    }

    /// Runs the INSERT until `limit`. Past it, the statement may still be running (blocked on a
    /// lock, say) or queued in the proxy: send a cancel request (best effort: PgBouncer 1.18 does
    /// not pass one on over TLS, and proxies differ), and let the caller close the connection
    /// ([`Connection::close`]), so a request still queued in the proxy is discarded. A
    /// statement already running on the server ends at the role's `statement_timeout` (3 s, from
    /// sql/app-role.sql) at the latest. No `SET` is sent per call: RDS Proxy pins a session that
    /// sends one. Should the INSERT commit after all, the retry on a new connection, the parked
    /// user's replay or the backfill finds the row and writes nothing.
    async fn insert_or_cancel(
        &self,
        client: &Connection,
        user: &NewUser,
        limit: Instant,
    ) -> Attempt {
        match timeout_at(limit.into(), db::insert_user(client, user)).await {
            Ok(result) => Attempt::Done(result),
            Err(_) => {
                let token = client.cancel_token();
                let cancel = token.cancel_query(self.tls.clone());
                if !matches!(
                    tokio::time::timeout(CANCEL_TIMEOUT, cancel).await,
                    Ok(Ok(()))
                ) {
                    warn!("could not send a cancel request for the INSERT");
                }
                warn!("the INSERT did not finish by its time limit; abandoning the connection");
                Attempt::TimedOut
            }
        }
    }

    /// Opens a connection with the credentials we hold (reading them first if we have none). A
    /// rejected login re-reads the secret once: a new password means a rotation, so connect again;
    /// the same password means the secret itself is wrong, which is reported, not retried.
    async fn open(
        &self,
        held: &mut Option<Credentials>,
        deadline: Instant,
    ) -> Result<Connection, RecordError> {
        // An IAM token is reused for new connections until shortly before it expires.
        let credentials = match held.take().filter(Credentials::is_fresh) {
            Some(credentials) => credentials,
            None => self.fetch_credentials(deadline).await?,
        };
        let first = self.connect(&credentials, deadline).await;
        let login_rejected = matches!(&first, Err(Rejected::Login(_)));
        let error = match first {
            Ok(client) => {
                *held = Some(credentials);
                return Ok(client);
            }
            Err(error) => error,
        };
        if !login_rejected {
            *held = Some(credentials);
            return Err(error.into());
        }
        let fresh = self.fetch_credentials(deadline).await?;
        if fresh.same_login(&credentials) {
            *held = Some(fresh);
            return Err(error.into());
        }
        info!("the database secret changed since it was read (rotation); reconnecting");
        let client = self.connect(&fresh, deadline).await;
        *held = Some(fresh);
        client.map_err(RecordError::from)
    }

    async fn fetch_credentials(&self, deadline: Instant) -> Result<Credentials, RecordError> {
        let started = Instant::now();
        let limit = deadline.min(started + self.config.connect_timeout);
        timeout_at(limit.into(), self.login.credentials(&self.config))
            .await
            .map_err(|_| RecordError::Timeout {
                stage: "getting the database credentials",
                elapsed_ms: started.elapsed().as_millis(),
            })?
            .map_err(RecordError::from)
    }

    async fn connect(
        &self,
        credentials: &Credentials,
        deadline: Instant,
    ) -> Result<Connection, Rejected> {
        let started = Instant::now();
        let limit = deadline.min(started + self.config.connect_timeout);
        let cap = limit.saturating_duration_since(started);
        match db::connect(credentials, &self.tls, cap).await {
            Ok(client) => {
                self.connections_opened.fetch_add(1, Ordering::Relaxed);
                Ok(client)
            }
            Err(ConnectError::TimedOut(_)) => Err(Rejected::Other(RecordError::Timeout {
                stage: "connecting to the database",
                elapsed_ms: started.elapsed().as_millis(),
            })),
            Err(error) => {
                let failure = RecordError::Connect {
                    endpoint: format!("{}:{}", credentials.host, credentials.port),
                    message: error.to_string(),
                };
                Err(match error {
                    ConnectError::LoginRejected(_) => Rejected::Login(failure),
                    _ => Rejected::Other(failure),
                })
            }
        }
    }
}

/// How an INSERT with a time limit ended.
enum Attempt {
    Done(Result<Outcome, tokio_postgres::Error>),
    /// The time limit passed; the INSERT was cancelled or its connection abandoned.
    TimedOut,
}

/// A failed connect, split by whether the server refused the login.
enum Rejected {
    Login(RecordError),
    Other(RecordError),
}

impl From<Rejected> for RecordError {
    fn from(rejected: Rejected) -> Self {
        match rejected {
            Rejected::Login(error) | Rejected::Other(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(code: Option<&str>) -> RecordError {
        RecordError::Insert {
            message: String::new(),
            code: code.map(str::to_owned),
        }
    }

    /// Every other kind of failure: the database was not reached in time.
    fn unreached() -> [RecordError; 4] {
        [
            insert(None),
            RecordError::Connect {
                endpoint: String::new(),
                message: String::new(),
            },
            RecordError::Timeout {
                stage: "connecting",
                elapsed_ms: 0,
            },
            RecordError::Credentials(CredentialsError::Token {
                message: String::new(),
            }),
        ]
    }

    #[test]
    fn only_an_insert_refused_for_its_data_is_not_an_outage() {
        for data in ["22001", "22P02", "23505", "23514"] {
            assert!(!insert(Some(data)).is_outage(), "{data}");
        }
        for outage in ["42501", "42P01", "40001", "53300", "54000", "57014"] {
            assert!(insert(Some(outage)).is_outage(), "{outage}");
        }
        for error in unreached() {
            assert!(error.is_outage(), "{error:?}");
        }
    }

    #[test]
    fn only_an_insert_the_database_answered_is_a_refusal() {
        for code in ["23514", "42501", "54000", "57014", "P0001"] {
            assert!(insert(Some(code)).is_refusal(), "{code}");
        }
        for error in unreached() {
            assert!(!error.is_refusal(), "{error:?}");
        }
    }
}
