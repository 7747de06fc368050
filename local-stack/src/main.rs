//! `local-stack up --schema sql/schema.sql --env-file .stack/env`
//!
//! Starts the stack, creates database `app` (role `app`, secret `app`) with the schema, writes
//! the environment for the Lambda to the env file, prints `ready`, and runs until SIGINT,
//! SIGTERM, or end of input on stdin (when stdin is a terminal or a pipe; `/dev/null` is
//! ignored so that `local-stack up ... &` in a script keeps running). Then it tears everything
//! down and removes the env file.

use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use local_stack::{Stack, StackOptions};

const USAGE: &str = "usage: local-stack up --schema FILE --env-file FILE";

struct Args {
    schema: PathBuf,
    env_file: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(cmd) if cmd == "up" => {}
        Some(cmd) if cmd == "-h" || cmd == "--help" => return Err(USAGE.to_owned()),
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    let (mut schema, mut env_file) = (None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.to_str() {
            Some("--schema") => &mut schema,
            Some("--env-file") => &mut env_file,
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        };
        *slot = Some(PathBuf::from(
            args.next()
                .ok_or_else(|| format!("{flag:?} needs a value\n{USAGE}"))?,
        ));
    }
    Ok(Args {
        schema: schema.ok_or_else(|| format!("--schema is required\n{USAGE}"))?,
        env_file: env_file.ok_or_else(|| format!("--env-file is required\n{USAGE}"))?,
    })
}

/// Why we stopped.
enum Stop {
    Signal(libc::c_int),
    StdinClosed,
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after it) and
/// delivers them through a channel instead, so that teardown runs on the main thread.
fn watch_for_stop() -> mpsc::Receiver<Stop> {
    let (tx, rx) = mpsc::channel();
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the current thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let signals = tx.clone();
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialised signal set; `sig` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            let _ = signals.send(Stop::Signal(sig));
        }
    });
    if stdin_can_close() {
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(Stop::StdinClosed);
        });
    }
    rx
}

/// True when stdin is a terminal, a pipe or a socket: something whose end means "stop".
fn stdin_can_close() -> bool {
    let Ok(meta) = std::fs::metadata("/proc/self/fd/0") else {
        return false;
    };
    let kind = meta.file_type();
    // SAFETY: isatty on fd 0 has no preconditions.
    kind.is_fifo() || kind.is_socket() || unsafe { libc::isatty(0) } == 1
}

fn write_env_file(path: &Path, vars: &[(&str, String)]) -> io::Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Whoever waits for the file must never see half of it.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let stop = watch_for_stop();

    let schema = match std::fs::read_to_string(&args.schema) {
        Ok(sql) => sql,
        Err(e) => {
            eprintln!("local-stack: cannot read {}: {e}", args.schema.display());
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let stack = match Stack::start_with(&StackOptions::default()) {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("local-stack: {e:?}");
            return ExitCode::FAILURE;
        }
    };
    let db = match stack.create_app_database("app", "app", &schema) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("local-stack: {e:?}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = write_env_file(&args.env_file, &db.env()) {
        eprintln!("local-stack: cannot write {}: {e}", args.env_file.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "local-stack: PgBouncer localhost:{} (TLS), PostgreSQL 127.0.0.1:{}, Secrets Manager {}; \
         env in {} (started in {:.1?})",
        stack.bouncer.port(),
        stack.pg.port(),
        stack.moto.endpoint(),
        args.env_file.display(),
        started.elapsed()
    );
    println!("ready");

    match stop.recv() {
        Ok(Stop::Signal(sig)) => eprintln!("local-stack: got signal {sig}, stopping"),
        Ok(Stop::StdinClosed) => eprintln!("local-stack: stdin closed, stopping"),
        Err(_) => {}
    }
    drop(db);
    drop(stack);
    let _ = std::fs::remove_file(&args.env_file);
    ExitCode::SUCCESS
}
