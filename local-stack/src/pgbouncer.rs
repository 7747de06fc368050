//! PgBouncer in front of a [`Postgres`]: the local stand-in for RDS Proxy.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use crate::certs::Certs;
use crate::postgres::Postgres;
use crate::process::{
    Kind, Server, accepts_tcp, as_service_user, instance_dir, lock, log_tail, program,
    write_service_file,
};

const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const RELOADED: &str = "got SIGHUP, re-reading config";

/// SIGTERM is an immediate shutdown in PgBouncer 1.18.
static PGBOUNCER: Kind = Kind {
    name: "pgbouncer",
    command: |dir, _| {
        let mut cmd = Command::new(program("/usr/sbin/pgbouncer".into(), "pgbouncer"));
        as_service_user(cmd.arg(dir.join("pgbouncer.ini")))?;
        Ok(cmd)
    },
    ready: accepts_tcp,
    stop_signal: Signal::SIGTERM,
};

/// PgBouncer 1.18 on 127.0.0.1 in transaction pooling mode, with TLS on both sides.
///
/// - Clients must use TLS (`client_tls_sslmode = require`) and see the server certificate from
///   [`Certs`] (valid for `localhost` and `127.0.0.1`), and log in with SCRAM-SHA-256.
/// - PgBouncer logs into PostgreSQL over TLS with `verify-full` against the CA from [`Certs`],
///   reusing the client's SCRAM proof: its `auth_file` holds only the verifiers copied from
///   `pg_authid`, no password.
/// - `[databases] * = host=127.0.0.1 port=<pg port>`: any database name is routed.
/// - Two server connections per database and user (`default_pool_size = 2`): fewer than the
///   clients of the concurrency tests, so transactions really share connections. A client waits
///   for one up to 120 s (`query_wait_timeout`, like RDS Proxy's `ConnectionBorrowTimeout`).
/// - Connect as `host=localhost` to its port to verify the certificate.
#[derive(Debug)]
pub struct PgBouncer {
    pub(crate) server: Server,
    /// role -> SCRAM verifier, as written to the auth file.
    users: Mutex<BTreeMap<String, String>>,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `pg` (which must run with TLS, since PgBouncer insists on
    /// `verify-full` towards it), with an empty auth file: add roles with
    /// [`PgBouncer::refresh_auth`].
    pub fn start_for(pg: &Postgres, certs: &Certs) -> Result<PgBouncer> {
        let dir = instance_dir("pgbouncer")?;
        write_service_file(&dir.path().join("userlist.txt"), b"")?;
        let server = Server::launch(&PGBOUNCER, dir, |dir, port| {
            let config = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {dir}/userlist.txt\n\
                 pool_mode = transaction\n\
                 default_pool_size = 2\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 500\n\
                 query_wait_timeout = 120\n\
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
                 stats_period = 3600\n",
                pg_port = pg.port(),
                dir = dir.display(),
                cert = certs.server_cert.display(),
                key = certs.server_key.display(),
                ca = certs.ca_pem.display(),
            );
            write_service_file(&dir.join("pgbouncer.ini"), config.as_bytes())
        })?;
        Ok(PgBouncer {
            server,
            users: Mutex::new(BTreeMap::new()),
        })
    }

    /// Copies the current SCRAM verifier of `role` from `pg` into the auth file (roles added
    /// earlier stay) and, if PgBouncer runs, reloads it. Call after creating a role or changing
    /// its password.
    pub fn refresh_auth(&self, pg: &Postgres, role: &str) -> Result<()> {
        let mut users = lock(&self.users);
        users.insert(role.to_owned(), pg.scram_verifier(role)?);
        let text: String = users
            .iter()
            .map(|(role, verifier)| format!("\"{}\" \"{verifier}\"\n", role.replace('"', "\"\"")))
            .collect();
        write_service_file(&self.dir().join("userlist.txt"), text.as_bytes())?;
        self.reload()
    }

    /// SIGHUP, then wait until PgBouncer has logged the reload. PgBouncer is single-threaded and
    /// re-reads its files in the same step as that log line, so connections accepted afterwards
    /// see the new auth file.
    fn reload(&self) -> Result<()> {
        let log = self.dir().join("pgbouncer.log");
        let reloads = || fs::read_to_string(&log).map_or(0, |s| s.matches(RELOADED).count());
        let before = reloads();
        if !self.signal(Signal::SIGHUP) {
            return Ok(()); // not running: the file is read at the next start
        }
        let started = Instant::now();
        while reloads() <= before {
            if started.elapsed() > RELOAD_TIMEOUT {
                bail!(
                    "pgbouncer did not reload in {RELOAD_TIMEOUT:?}{}",
                    log_tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}
