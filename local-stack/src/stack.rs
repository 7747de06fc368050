//! The stack, and one test's database on it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use tempfile::TempDir;

use crate::certs::Certs;
use crate::kit::{ACCESS_KEY, REGION, SECRET_KEY};
use crate::moto::Moto;
use crate::or_panic;
use crate::pgbouncer::PgBouncer;
use crate::postgres::Postgres;
use crate::process::instance_dir;

/// The local stand-ins for RDS (PostgreSQL 15 with TLS), RDS Proxy (PgBouncer in front of it:
/// what the function connects to, as `localhost`) and AWS (moto), with the certificates both
/// servers present. Tests drive each piece (`stack.pg.stop()`, `stack.moto.pause()`, ...).
/// Dropping a `Stack` stops everything and removes its files; the one from [`Stack::shared`] is
/// stopped by the janitor when the process exits.
#[derive(Debug)]
pub struct Stack {
    pub bouncer: PgBouncer,
    pub pg: Postgres,
    pub moto: Moto,
    pub certs: Certs,
    seq: AtomicU32,
    /// Holds the certificates.
    _dir: TempDir,
}

impl Stack {
    /// Starts a stack; panics with the reason (and the failing server's log) if anything does not
    /// come up. [`Stack::try_start`] returns the error instead.
    pub fn start() -> Stack {
        or_panic(Self::try_start(), "starting the stack")
    }

    pub fn try_start() -> Result<Stack> {
        let dir = instance_dir("stack")?;
        let certs = Certs::generate(dir.path(), Certs::LOCALHOST)?;
        // PostgreSQL (initdb) and moto (Python start-up) are slow and independent: overlap them.
        let moto = std::thread::spawn(Moto::launch);
        let pg = Postgres::start(Some(&certs));
        let moto = moto
            .join()
            .unwrap_or_else(|_| Err(anyhow!("moto start-up thread panicked")));
        let (pg, moto) = (pg?, moto?);
        let bouncer = PgBouncer::start_for(&pg, &certs)?;
        Ok(Stack {
            bouncer,
            pg,
            moto,
            certs,
            seq: AtomicU32::new(0),
            _dir: dir,
        })
    }

    /// One stack per test process, started by the first caller and shared by every later one;
    /// never dropped (the janitor cleans it up). Tests that stop or pause servers use their own
    /// [`Stack::start`] instead.
    pub fn shared() -> &'static Stack {
        static SHARED: OnceLock<Stack> = OnceLock::new();
        // Concurrent callers wait for the first; if its start panics, the next caller retries
        // (OnceLock stays empty) instead of every later test failing on a poisoned lock.
        SHARED.get_or_init(Stack::start)
    }

    /// A new database `test_<n>` made by `schema_sql`, with its own login role `test_<n>_app` and
    /// secret `test_<n>` (see [`Stack::create_app_database`]): a test can rotate its password
    /// without disturbing tests running in parallel. Panics on failure.
    pub fn new_database(&self, schema_sql: &str) -> TestDb<'_> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        let db = self.create_app_database(&name, &format!("{name}_app"), schema_sql);
        or_panic(db, format!("creating database {name}"))
    }

    /// Creates database `name` with `schema_sql` (applied as the superuser; it must create
    /// `public.users` with `cognito_user_id`) and login role `role` with a random password and
    /// exactly the rights sql/app-role.sql gives the function's role; makes PgBouncer accept the
    /// role and stores an RDS-style secret named `name` in moto.
    pub fn create_app_database(
        &self,
        name: &str,
        role: &str,
        schema_sql: &str,
    ) -> Result<TestDb<'_>> {
        let password = format!("{:016x}{:016x}", getrandom::u64()?, getrandom::u64()?);
        let sql = "CREATE DATABASE :\"db\"; CREATE ROLE :\"role\" LOGIN PASSWORD :'password'";
        let vars = [("db", name), ("role", role), ("password", &password)];
        self.pg.admin_psql("postgres", sql, &vars)?;
        let sql = format!("{schema_sql}\n{}", crate::APP_ROLE_SQL);
        self.pg
            .admin_psql(name, &sql, &[("app_role", role)])
            .with_context(|| format!("apply the schema and sql/app-role.sql in database {name}"))?;
        self.bouncer.refresh_auth(&self.pg, role)?;
        let db = TestDb {
            name: name.to_owned(),
            role: role.to_owned(),
            secret_id: name.to_owned(),
            app_password: password,
            stack: self,
        };
        self.moto
            .create_secret(name, &db.secret_json(&db.app_password))?;
        Ok(db)
    }
}

/// A database of a [`Stack`] with its own login role and its secret in moto. Its methods that
/// return no `Result` panic with the reason.
#[derive(Debug)]
pub struct TestDb<'s> {
    pub name: String,
    /// The function's login role (`username` in the secret).
    pub role: String,
    pub secret_id: String,
    /// The password the role was created with ([`TestDb::rotate_password`] does not update it).
    pub app_password: String,
    stack: &'s Stack,
}

impl TestDb<'_> {
    /// [`Postgres::admin_psql`] in this database.
    pub fn admin_psql(&self, sql: &str) -> String {
        let what = format!("admin SQL in {}", self.name);
        or_panic(self.stack.pg.admin_psql(&self.name, sql, &[]), what)
    }

    /// The RDS-format secret for this database with `password`:
    /// `{"username","password","host":"localhost","port":<PgBouncer>,"dbname","engine":"postgres"}`.
    pub fn secret_json(&self, password: &str) -> String {
        json!({
            "username": self.role,
            "password": password,
            "host": "localhost",
            "port": self.stack.bouncer.port(),
            "dbname": self.name,
            "engine": "postgres",
        })
        .to_string()
    }

    /// Changes the role's password the way a Secrets Manager rotation ends up: PostgreSQL first,
    /// then PgBouncer's auth file (reloaded), then the secret's current version.
    pub fn rotate_password(&self, new_password: &str) {
        let rotate = || -> Result<()> {
            self.stack.pg.set_password(&self.role, new_password)?;
            self.stack.bouncer.refresh_auth(&self.stack.pg, &self.role)
        };
        or_panic(rotate(), format!("rotating the password of {}", self.role));
        self.put_secret_password(new_password);
    }

    /// Puts a new secret version with `password` and changes nothing else: a secret that no
    /// longer matches the database (or, with the right password, one that is fixed again).
    pub fn put_secret_password(&self, password: &str) {
        let put = self
            .stack
            .moto
            .put_secret_value(&self.secret_id, &self.secret_json(password));
        or_panic(put, format!("updating secret {}", self.secret_id));
    }

    /// Runs `sql` as the application role through PgBouncer over verified TLS, as the function
    /// connects. Ok(stdout) or Err(stderr).
    pub fn psql_as_app(&self, sql: &str) -> std::result::Result<String, String> {
        crate::kit::psql(&self.bouncer_conninfo(), &self.app_password, sql)
    }

    /// A libpq connection string (no password) through PgBouncer with full TLS verification.
    pub fn bouncer_conninfo(&self) -> String {
        format!(
            "host=localhost port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
            self.stack.bouncer.port(),
            self.name,
            self.role,
            self.stack.certs.ca_pem.display()
        )
    }

    /// The `--env-vars` file of `sam local invoke` for the function `function`: what
    /// [`TestDb::env`] gives the function, but the CA as PEM text (`DB_CA_PEM`), since only the
    /// build artifact is mounted in the container. Every variable the function reads is set,
    /// empty meaning unset: this file wins over the shell's environment, which SAM would
    /// otherwise pass on (a `DB_CA_FILE` naming a host path, say).
    pub fn sam_env(&self, function: &str) -> Result<serde_json::Value> {
        let ca = std::fs::read_to_string(&self.stack.certs.ca_pem)
            .with_context(|| format!("read {}", self.stack.certs.ca_pem.display()))?;
        Ok(json!({
            function: {
                "DB_AUTH": "",
                "DB_SECRET_ID": self.secret_id,
                "DB_USER": "",
                "DB_HOST": "localhost",
                "DB_PORT": self.stack.bouncer.port().to_string(),
                "DB_NAME": self.name,
                "DB_CA_FILE": "",
                "DB_CA_PEM": ca,
                "DB_CONNECT_TIMEOUT_MS": "",
                "DB_STATEMENT_TIMEOUT_MS": "",
                "DEADLINE_MARGIN_MS": "",
                "PARK_QUEUE_URL": "",
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.stack.moto.endpoint(),
                "AWS_ENDPOINT_URL_SQS": "",
            }
        }))
    }

    /// The function's environment for this database, with test AWS credentials, plus
    /// `PG_ADMIN_SOCKET_DIR` and `PG_PORT` for admin `psql`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DB_SECRET_ID", self.secret_id.clone()),
            ("DB_HOST", "localhost".to_owned()),
            ("DB_PORT", self.stack.bouncer.port().to_string()),
            ("DB_NAME", self.name.clone()),
            ("DB_CA_FILE", self.stack.certs.ca_pem.display().to_string()),
            (
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                self.stack.moto.endpoint(),
            ),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            (
                "PG_ADMIN_SOCKET_DIR",
                self.stack.pg.socket_dir().display().to_string(),
            ),
            ("PG_PORT", self.stack.pg.port().to_string()),
        ]
    }
}
