//! A throwaway PostgreSQL 15 cluster.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::certs::Certs;
use crate::process::{Kind, Server, as_service_user, instance_dir, run, write_service_file};

/// The postmaster, in the foreground; SIGINT is PostgreSQL's fast shutdown (open sessions are
/// terminated).
static POSTGRES: Kind = Kind {
    name: "postgres",
    command: postgres_command,
    ready: accepts_connections,
    stop_signal: Signal::SIGINT,
};

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.
///
/// The superuser `postgres` is reachable without a password over the unix socket in the data
/// directory only ([`Postgres::admin_psql`]). Over TCP every role needs SCRAM; with TLS (the
/// stack's) `pg_hba.conf` has `hostssl ... scram-sha-256` and rejects plaintext TCP.
///
/// It derefs to its [`Server`] (`stop`, `start`, `pause`, ...). Dropping it shuts the server down
/// and removes the directory.
#[derive(Debug)]
pub struct Postgres {
    server: Server,
}

impl std::ops::Deref for Postgres {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// Where the PostgreSQL binaries are: `$PG_BIN`, else Debian's PostgreSQL 15 directory, else
/// whatever is on `PATH`.
fn pg_bin(tool: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Path::new(&dir).join(tool);
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin").join(tool);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(tool)
    }
}

impl Postgres {
    /// Starts a cluster that speaks TLS only over TCP (`ssl = on`, server certificate and key from
    /// `certs`, plaintext `host` connections rejected by `pg_hba.conf`).
    pub fn start_tls(certs: &Certs) -> Result<Postgres> {
        Self::launch(Some(certs))
    }

    /// Starts a cluster with `ssl = off` and password (SCRAM) logins over plain TCP: a server that
    /// does not speak TLS at all.
    pub fn start_plaintext() -> Result<Postgres> {
        Self::launch(None)
    }

    fn launch(certs: Option<&Certs>) -> Result<Postgres> {
        let dir = instance_dir("postgres")?;
        let data_dir = dir.path().join("data");
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]);
        as_service_user(&mut initdb)?.current_dir(dir.path());
        run(initdb, "")
            .context("initdb failed (is PostgreSQL 15 installed? scripts/install-deps.sh)")?;

        let mut conf = format!(
            "\n# local-stack\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = 300\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n\
             log_connections = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            socket = data_dir.display()
        );
        let mut hba = String::from("local all postgres trust\n");
        if let Some(certs) = certs {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ));
            hba.push_str(
                "hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 host all all 0.0.0.0/0 reject\n\
                 host all all ::/0 reject\n",
            );
        } else {
            conf.push_str("ssl = off\n");
            hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
        }
        let conf_path = data_dir.join("postgresql.conf");
        let mut full = fs::read_to_string(&conf_path)
            .with_context(|| format!("read {}", conf_path.display()))?;
        full.push_str(&conf);
        write_service_file(&conf_path, full.as_bytes())?;
        write_service_file(&data_dir.join("pg_hba.conf"), hba.as_bytes())?;

        let server = Server::launch(&POSTGRES, dir, |_, _| Ok(()))?;
        Ok(Postgres { server })
    }

    /// The directory holding the unix socket (for `psql -h <dir> -p <port> -U postgres`).
    pub fn socket_dir(&self) -> PathBuf {
        self.server.dir().join("data")
    }

    /// Runs SQL (psql's meta-commands included) as the superuser `postgres` over the unix socket,
    /// in database `db`. Returns psql's output without the final newline: one line per row,
    /// columns separated by `|`.
    pub fn admin_psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port().to_string())
            .args(["-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-f", "-"]);
        as_service_user(&mut cmd)?.envs([
            ("PGCONNECT_TIMEOUT", "10"),
            ("PGOPTIONS", "-c statement_timeout=60s"),
        ]);
        let out = run(cmd, sql).with_context(|| format!("psql as postgres in database {db}"))?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// `CREATE DATABASE`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let sql = format!("CREATE DATABASE {}", quote_ident(name));
        self.admin_psql("postgres", &sql).map(drop)
    }

    /// Creates a login role with a password (stored as a SCRAM verifier).
    pub fn create_role(&self, name: &str, password: &str) -> Result<()> {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        );
        self.admin_psql("postgres", &sql).map(drop)
    }

    /// `ALTER ROLE ... PASSWORD`. PgBouncer keeps the old verifier until
    /// [`crate::PgBouncer::refresh_auth`].
    pub fn set_password(&self, role: &str, password: &str) -> Result<()> {
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(role),
            quote_literal(password)
        );
        self.admin_psql("postgres", &sql).map(drop)
    }

    /// The role's `rolpassword` from `pg_authid`: `SCRAM-SHA-256$<iterations>:<salt>$<keys>`.
    pub fn scram_verifier(&self, role: &str) -> Result<String> {
        let sql = format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
            quote_literal(role)
        );
        let verifier = self.admin_psql("postgres", &sql)?;
        if !verifier.starts_with("SCRAM-SHA-256$") {
            bail!("role {role:?} has no SCRAM verifier");
        }
        Ok(verifier)
    }
}

fn postgres_command(dir: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(pg_bin("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string());
    as_service_user(&mut cmd)?;
    Ok(cmd)
}

/// Whether the server accepts connections on its unix socket (`pg_isready`).
fn accepts_connections(dir: &Path, port: u16) -> bool {
    let mut probe = Command::new(pg_bin("pg_isready"));
    probe
        .arg("-q")
        .arg("-h")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-t", "2"]);
    as_service_user(&mut probe).is_ok_and(|probe| probe.status().is_ok_and(|s| s.success()))
}

/// `"ident"` with embedded quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled (standard_conforming_strings is on).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
