//! A throwaway PostgreSQL 15 cluster.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::certs::Certs;
use crate::process::write_service_file;
use crate::process::{Kind, Server, as_service_user, instance_dir, program, run};

/// The postmaster, in the foreground; SIGINT is its fast shutdown (open sessions are terminated).
static POSTGRES: Kind = Kind {
    name: "postgres",
    command: |dir, port| {
        let mut cmd = Command::new(pg_bin("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string()]);
        as_service_user(&mut cmd)?;
        Ok(cmd)
    },
    ready: |dir, port| {
        let mut probe = Command::new(pg_bin("pg_isready"));
        probe
            .arg("-h")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-q", "-t", "2"]);
        as_service_user(&mut probe).is_ok_and(|probe| probe.status().is_ok_and(|s| s.success()))
    },
    stop_signal: Signal::SIGINT,
};

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.
///
/// The superuser `postgres` is reachable without a password over the unix socket in the data
/// directory only ([`Postgres::admin_psql`]). Over TCP every role needs SCRAM; with TLS (the
/// stack's) `pg_hba.conf` has `hostssl ... scram-sha-256` and rejects plaintext TCP.
#[derive(Debug)]
pub struct Postgres {
    pub(crate) server: Server,
}

/// `<tool>` from Debian's PostgreSQL 15 directory, else from `PATH`.
fn pg_bin(tool: &str) -> PathBuf {
    program(Path::new("/usr/lib/postgresql/15/bin").join(tool), tool)
}

impl Postgres {
    /// Starts a cluster. With `certs`, it speaks TLS only over TCP (`ssl = on`, their server
    /// certificate and key; plaintext `host` connections rejected by `pg_hba.conf`). Without, it
    /// has `ssl = off` and SCRAM logins over plain TCP: a server that does not speak TLS at all.
    pub fn start(certs: Option<&Certs>) -> Result<Postgres> {
        let dir = instance_dir("postgres")?;
        let data = dir.path().join("data");
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust"]);
        initdb.args([
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]);
        as_service_user(&mut initdb)?.current_dir(dir.path());
        run(initdb, "")
            .context("initdb failed (is PostgreSQL 15 installed? scripts/install-deps.sh)")?;

        let (ssl, hba) = match certs {
            Some(certs) => (
                format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    certs.server_cert.display(),
                    certs.server_key.display()
                ),
                "hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 host all all 0.0.0.0/0 reject\n\
                 host all all ::/0 reject\n",
            ),
            None => (
                "ssl = off\n".to_owned(),
                "host all all 127.0.0.1/32 scram-sha-256\n",
            ),
        };
        let conf = format!(
            "\n# local-stack\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n\
             log_connections = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             {ssl}",
            socket = data.display()
        );
        let conf_path = data.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .with_context(|| format!("append to {}", conf_path.display()))?;
        let hba = format!("local all postgres trust\n{hba}");
        write_service_file(&data.join("pg_hba.conf"), hba.as_bytes())?;
        let server = Server::launch(&POSTGRES, dir, |_, _| Ok(()))?;
        Ok(Postgres { server })
    }

    /// The directory holding the unix socket (for `psql -h <dir> -p <port> -U postgres`).
    pub fn socket_dir(&self) -> PathBuf {
        self.server.dir().join("data")
    }

    /// Runs SQL (psql's meta-commands included) as the superuser `postgres` over the unix socket,
    /// in database `db`, with psql variables `vars` (`:"name"` quotes an identifier, `:'name'` a
    /// literal; passed through the environment, never on a command line). Returns psql's output
    /// without the final newline: one line per row, columns separated by `|`.
    pub fn admin_psql(&self, db: &str, sql: &str, vars: &[(&str, &str)]) -> Result<String> {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.arg("-h").arg(self.socket_dir());
        cmd.args(["-p", &self.port().to_string(), "-U", "postgres", "-d", db]);
        cmd.args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-f", "-"]);
        as_service_user(&mut cmd)?.envs([
            ("PGCONNECT_TIMEOUT", "10"),
            ("PGOPTIONS", "-c statement_timeout=60s"),
        ]);
        let mut script = String::new();
        for (name, value) in vars {
            cmd.env(format!("LOCAL_STACK_{name}"), value);
            script.push_str(&format!("\\getenv {name} LOCAL_STACK_{name}\n"));
        }
        script.push_str(sql);
        let out =
            run(cmd, &script).with_context(|| format!("psql as postgres in database {db}"))?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// `ALTER ROLE ... PASSWORD`: PgBouncer keeps the old verifier until
    /// [`crate::PgBouncer::refresh_auth`].
    pub fn set_password(&self, role: &str, password: &str) -> Result<()> {
        let sql = "ALTER ROLE :\"role\" PASSWORD :'password'";
        self.admin_psql("postgres", sql, &[("role", role), ("password", password)])
            .map(drop)
    }

    /// The role's `rolpassword` from `pg_authid`: `SCRAM-SHA-256$<iterations>:<salt>$<keys>`.
    pub fn scram_verifier(&self, role: &str) -> Result<String> {
        let sql = "SELECT rolpassword FROM pg_authid WHERE rolname = :'role'";
        let verifier = self.admin_psql("postgres", sql, &[("role", role)])?;
        if !verifier.starts_with("SCRAM-SHA-256$") {
            bail!("role {role:?} has no SCRAM verifier");
        }
        Ok(verifier)
    }
}
