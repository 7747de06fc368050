//! PgBouncer in front of a [`Postgres`]: the local stand-in for RDS Proxy.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::certs::Certs;
use crate::postgres::{Postgres, quote_ident};
use crate::process::{
    InstanceDir, Supervised, as_service_user, lock, log_tail, on_free_port, spawn_ready,
    write_service_file,
};
use anyhow::{Context, Result, anyhow};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`PgBouncer`].
#[derive(Clone, Debug)]
pub struct PgBouncerOptions {
    /// `default_pool_size`: server connections per (database, user) pair. Keep it below the
    /// number of concurrent clients in a test to exercise transaction pooling. Default 2.
    pub pool_size: u32,
    /// `query_wait_timeout`: how long a client waits for a server connection before PgBouncer
    /// gives up on it. Default 120 s, like RDS Proxy's `ConnectionBorrowTimeout`.
    pub query_wait_timeout: Duration,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        Self {
            pool_size: 2,
            query_wait_timeout: Duration::from_secs(120),
        }
    }
}

/// PgBouncer 1.18 on 127.0.0.1 in transaction pooling mode, with TLS on both sides.
///
/// - Clients must use TLS (`client_tls_sslmode = require`) and see the server certificate from
///   [`Certs`] (valid for `localhost` and `127.0.0.1`), and log in with SCRAM-SHA-256.
/// - PgBouncer logs into PostgreSQL over TLS with `verify-full` against the CA from [`Certs`],
///   reusing the client's SCRAM proof: its `auth_file` holds only the verifiers copied from
///   `pg_authid`, no password.
/// - `[databases] * = host=127.0.0.1 port=<pg port>`: any database name is routed.
///
/// Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct PgBouncer {
    process: Supervised,
    /// role -> SCRAM verifier, as written to the auth file.
    users: Mutex<BTreeMap<String, String>>,
    port: u16,
    ini: PathBuf,
    auth_file: PathBuf,
    log: PathBuf,
    dir: InstanceDir,
}

/// `$PGBOUNCER`, else `pgbouncer` from `PATH`, else Debian's `/usr/sbin/pgbouncer` (which is not
/// on a non-root user's `PATH`).
fn pgbouncer_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGBOUNCER") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("pgbouncer").exists()))
        .unwrap_or(false);
    if on_path {
        PathBuf::from("pgbouncer")
    } else {
        PathBuf::from("/usr/sbin/pgbouncer")
    }
}

impl PgBouncer {
    /// Starts PgBouncer in front of `pg` (which should run with TLS, since PgBouncer insists on
    /// `verify-full` towards it), with an empty auth file: add roles with
    /// [`PgBouncer::refresh_auth`].
    pub fn start_for(
        pg: &Postgres,
        certs: &Certs,
        options: &PgBouncerOptions,
    ) -> Result<PgBouncer> {
        let dir = InstanceDir::create("pgbouncer")?;
        let path = dir.path();
        let ini = path.join("pgbouncer.ini");
        let auth_file = path.join("userlist.txt");
        let log = path.join("pgbouncer.log");
        let (cert, key, ca) = (
            path.join("server.crt"),
            path.join("server.key"),
            path.join("ca.pem"),
        );
        for (from, to, mode) in [
            (&certs.server_cert, &cert, 0o644),
            (&certs.server_key, &key, 0o600),
            (&certs.ca_pem, &ca, 0o644),
        ] {
            let bytes = fs::read(from).with_context(|| format!("read {}", from.display()))?;
            write_service_file(to, &bytes, mode)?;
        }
        write_service_file(&auth_file, b"", 0o600)?;

        let (port, child) = on_free_port(|port| {
            let config = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 pidfile = {pidfile}\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {auth_file}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 500\n\
                 query_wait_timeout = {query_wait}\n\
                 ; retry a failed server login after 1 s, not 15 s: tests restart PostgreSQL\n\
                 server_login_retry = 1\n\
                 server_connect_timeout = 5\n\
                 server_idle_timeout = 60\n\
                 ; JDBC and psycopg send it; tokio-postgres sends only client_encoding (and\n\
                 ; application_name / options when configured), which 1.18 handles itself,\n\
                 ; except options: that one is rejected rather than silently dropped.\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 client_tls_sslmode = require\n\
                 client_tls_cert_file = {cert}\n\
                 client_tls_key_file = {key}\n\
                 server_tls_sslmode = verify-full\n\
                 server_tls_ca_file = {ca}\n\
                 log_connections = 1\n\
                 log_disconnections = 1\n\
                 log_pooler_errors = 1\n\
                 stats_period = 3600\n",
                pg_port = pg.port(),
                pidfile = path.join("pgbouncer.pid").display(),
                auth_file = auth_file.display(),
                pool_size = options.pool_size,
                query_wait = options.query_wait_timeout.as_secs().max(1),
                cert = cert.display(),
                key = key.display(),
                ca = ca.display(),
            );
            write_service_file(&ini, config.as_bytes(), 0o600)?;
            spawn_bouncer(path, &ini, port, &log)
        })?;
        Ok(PgBouncer {
            process: Supervised::new(child),
            users: Mutex::new(BTreeMap::new()),
            port,
            ini,
            auth_file,
            log,
            dir,
        })
    }

    /// The TCP port on 127.0.0.1 (connect as `host=localhost` to verify the certificate).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts PgBouncer again after [`PgBouncer::stop`] on the same port, with the current auth
    /// file, and waits until it accepts TCP connections. Does nothing if it is running.
    ///
    /// Panics with the reason and the log tail (test helper); see [`PgBouncer::try_start`].
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("local-stack: restarting pgbouncer failed: {e:?}");
        }
    }

    /// [`PgBouncer::start`] returning the error instead of panicking.
    pub fn try_start(&self) -> Result<()> {
        self.process
            .start_with(|| spawn_bouncer(self.dir.path(), &self.ini, self.port, &self.log))
            .map(drop)
    }

    /// Kills PgBouncer (clients see their connections drop, new ones are refused) and waits for
    /// it to exit. Does nothing if it is not running.
    pub fn stop(&self) {
        // SIGTERM is an immediate shutdown in 1.18.
        self.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    }

    /// Freezes PgBouncer (SIGSTOP): connections hang instead of failing, like an unresponsive
    /// proxy. Undo with [`PgBouncer::resume`]; `stop` and `Drop` also work on a paused one.
    pub fn pause(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// Undoes [`PgBouncer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    /// Copies the current SCRAM verifiers of `roles` from `pg` into the auth file (roles added
    /// earlier stay) and, if PgBouncer runs, reloads it (SIGHUP) and waits for the reload.
    /// Call after creating a role or changing its password.
    pub fn refresh_auth(&self, pg: &Postgres, roles: &[&str]) -> Result<()> {
        let mut users = lock(&self.users);
        for role in roles {
            users.insert((*role).to_owned(), pg.scram_verifier(role)?);
        }
        let text: String = users
            .iter()
            .map(|(role, verifier)| format!("{} {}\n", quote_ident(role), quote_ident(verifier)))
            .collect();
        write_service_file(&self.auth_file, text.as_bytes(), 0o600)?;
        self.reload()
    }

    /// SIGHUP, then wait until PgBouncer has logged the reload. PgBouncer is single-threaded and
    /// re-reads its files in the same step as that log line, so connections accepted afterwards
    /// see the new auth file.
    fn reload(&self) -> Result<()> {
        const MARK: &str = "got SIGHUP, re-reading config";
        let count = || {
            fs::read_to_string(&self.log)
                .map(|s| s.matches(MARK).count())
                .unwrap_or(0)
        };
        let before = count();
        if !self.process.signal(Signal::SIGHUP) {
            return Ok(()); // not running: the file is read at the next start
        }
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while count() <= before {
            if Instant::now() > deadline {
                return Err(anyhow!(format!(
                    "pgbouncer did not reload within {RELOAD_TIMEOUT:?}{}",
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills the process and removes the directory (what `Drop` does).
    pub(crate) fn teardown(&self) {
        self.process.stop(Signal::SIGKILL, Duration::ZERO);
        self.dir.remove();
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Starts PgBouncer (as the service user: it refuses to run as root) and waits until it accepts
/// TCP connections.
fn spawn_bouncer(dir: &Path, ini: &Path, port: u16, log: &Path) -> Result<Child> {
    let mut cmd = Command::new(pgbouncer_bin());
    cmd.arg(ini);
    as_service_user(&mut cmd)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    spawn_ready(
        &format!("pgbouncer on port {port}"),
        cmd,
        dir,
        log,
        START_TIMEOUT,
        || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok(),
    )
}
