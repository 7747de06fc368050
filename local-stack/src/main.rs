//! `local-stack up --env-file .stack/env [--sam-env-file .stack/sam-env.json]`: the stack with
//! database `app` for local runs, until its stdin closes (then it tears everything down and
//! removes the files it wrote) or it is stopped by a signal (then the janitor of `process.rs`
//! stops the servers and removes their directories; the env files stay until the next `up`).

use std::io::{self, IsTerminal};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use local_stack::{SCHEMA, Stack};

/// The local stand-ins for RDS, RDS Proxy and Secrets Manager (tests and local runs only).
#[derive(Parser)]
#[command(name = "local-stack")]
enum Cli {
    /// Start the stack with database `app` (sql/schema.sql, role from sql/app-role.sql) and run
    /// until interrupted or until stdin closes.
    Up {
        /// Where to write the function's environment (`KEY=value` lines, for `set -a; . FILE`).
        #[arg(long, value_name = "FILE")]
        env_file: PathBuf,
        /// Where to write the `--env-vars` JSON for `sam local invoke` (the CA as PEM text,
        /// since the container sees no host files).
        #[arg(long, value_name = "FILE")]
        sam_env_file: Option<PathBuf>,
    },
}

/// Writes `text` to `path`, creating its directory (complete before `ready` is printed).
fn write_file(path: &Path, text: &str) -> Result<()> {
    let write = || -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, text)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> Result<()> {
    let Cli::Up {
        env_file,
        sam_env_file,
    } = Cli::parse();
    let started = Instant::now();
    let stack = Stack::try_start()?;
    let db = stack.create_app_database("app", "app", SCHEMA)?;
    let env: String = db.env().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    write_file(&env_file, &env)?;
    if let Some(path) = &sam_env_file {
        write_file(path, &db.sam_env("PostConfirmationFunction")?.to_string())?;
    }
    eprintln!(
        "local-stack: PgBouncer localhost:{} (TLS), PostgreSQL 127.0.0.1:{}, Secrets Manager {}; \
         env in {} (started in {:.1?})",
        stack.bouncer.port(),
        stack.pg.port(),
        stack.moto.endpoint(),
        env_file.display(),
        started.elapsed()
    );
    println!("ready");

    // Only a stdin that can end is watched (a pipe, a socket, a terminal), not the /dev/null that
    // `local-stack up ... &` in a script gets: that one would stop it at once.
    let stdin = std::fs::metadata("/proc/self/fd/0").map(|meta| meta.file_type());
    if !(stdin.is_ok_and(|kind| kind.is_fifo() || kind.is_socket()) || io::stdin().is_terminal()) {
        loop {
            std::thread::park();
        }
    }
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    eprintln!("local-stack: stdin closed, stopping");
    drop(db);
    drop(stack);
    for file in std::iter::once(&env_file).chain(&sam_env_file) {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}
