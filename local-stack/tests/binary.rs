//! The `local-stack up` binary: env file, readiness line, and teardown on stdin EOF or, through
//! the janitor (see `process.rs`), when it is killed by any signal.

// A test crate: its helpers panic with the reason, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use local_stack::kit::psql;

struct Up {
    child: Child,
    stdin: Option<ChildStdin>,
    env: HashMap<String, String>,
    env_file: PathBuf,
    sam_env_file: PathBuf,
    /// Holds the env files; removed when dropped (or by the janitor).
    _dir: tempfile::TempDir,
}

/// Starts `local-stack up` with a pipe as stdin and waits for `ready`.
fn up(tag: &str, base: Option<&Path>) -> Up {
    let dir = local_stack::scratch_dir(&format!("bin-{tag}"));
    let env_file = dir.path().join("env");
    let sam_env_file = dir.path().join("sam-env.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local-stack"));
    if let Some(base) = base {
        cmd.env("LOCAL_STACK_DIR", base);
    }
    let mut child = cmd
        .arg("up")
        .arg("--env-file")
        .arg(&env_file)
        .arg("--sam-env-file")
        .arg(&sam_env_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn local-stack");
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read stdout");
    assert_eq!(line.trim(), "ready", "local-stack up did not get ready");
    let env = std::fs::read_to_string(&env_file)
        .expect("env file")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Up {
        child,
        stdin,
        env,
        env_file,
        sam_env_file,
        _dir: dir,
    }
}

/// The direct children of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether `pid` is gone or a zombie.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

fn assert_all_die(pids: &[u32], within: Duration) {
    let start = Instant::now();
    while !pids.iter().all(|&p| is_dead(p)) {
        assert!(
            start.elapsed() < within,
            "still running after {within:?}: {:?}",
            pids.iter().filter(|&&p| !is_dead(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "local-stack did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Secrets Manager call as the Lambda's SDK would make it (minus the real signature).
fn get_secret(endpoint: &str, id: &str) -> serde_json::Value {
    let answer = ureq::post(endpoint)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", "secretsmanager.GetSecretValue")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/secretsmanager/aws4_request, \
             SignedHeaders=host, Signature=00",
        )
        .send(serde_json::json!({ "SecretId": id }).to_string())
        .expect("GetSecretValue")
        .body_mut()
        .read_to_string()
        .expect("read the answer");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    serde_json::from_str(answer["SecretString"].as_str().expect("SecretString"))
        .expect("secret JSON")
}

#[test]
fn up_serves_the_app_database_and_stops_when_stdin_closes() {
    let mut up = up("eof", None);
    let env = &up.env;
    for key in [
        "DB_SECRET_ID",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_CA_FILE",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PG_ADMIN_SOCKET_DIR",
        "PG_PORT",
    ] {
        assert!(
            env.contains_key(key),
            "{key} missing from the env file: {env:?}"
        );
    }
    assert_eq!(env["DB_HOST"], "localhost");
    assert_eq!(env["DB_NAME"], "app");
    assert_eq!(env["AWS_REGION"], "us-east-1");

    // What the Lambda will do: secret from moto, then TLS + SCRAM through PgBouncer.
    let secret = get_secret(
        &env["AWS_ENDPOINT_URL_SECRETS_MANAGER"],
        &env["DB_SECRET_ID"],
    );
    assert_eq!(secret["username"], "app");
    assert_eq!(secret["dbname"], "app");
    assert_eq!(secret["port"].to_string(), env["DB_PORT"]);
    let conninfo = format!(
        "host={} port={} dbname={} user=app sslmode=verify-full sslrootcert={}",
        env["DB_HOST"], env["DB_PORT"], env["DB_NAME"], env["DB_CA_FILE"]
    );
    let password = secret["password"].as_str().expect("password");
    psql(
        &conninfo,
        password,
        "INSERT INTO public.users (display_name, email, handle, cognito_user_id) \
         VALUES ('X', 'x@example.com', 'x', 'sub-x')",
    )
    .expect("insert through PgBouncer");
    // The role is the one sql/app-role.sql makes: it may INSERT into public.users, not DELETE.
    let refused = psql(&conninfo, password, "DELETE FROM public.users").expect_err("DELETE");
    assert!(refused.contains("permission denied"), "{refused}");

    // The same configuration for `sam local invoke --env-vars`, with the CA as PEM text.
    let sam: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&up.sam_env_file).expect("sam env file"))
            .expect("JSON");
    let function = &sam["PostConfirmationFunction"];
    for key in ["DB_SECRET_ID", "DB_HOST", "DB_PORT", "DB_NAME"] {
        assert_eq!(function[key], env[key].as_str(), "{key}");
    }
    assert_eq!(function["DB_CA_FILE"], "", "no host path in the container");
    // Every variable template.yaml declares is set (SAM would otherwise resolve the template's
    // value, e.g. a queue's logical id for PARK_QUEUE_URL), and nothing else.
    let template = include_str!("../../template.yaml");
    let declared: std::collections::BTreeSet<&str> = template
        .split("        Variables:\n")
        .nth(1)
        .expect("the function's Environment.Variables")
        .lines()
        .take_while(|line| line.starts_with("          "))
        .filter_map(|line| line.trim().split(':').next())
        .collect();
    let set: std::collections::BTreeSet<&str> = function
        .as_object()
        .expect("the function's variables")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(set, declared);
    let pem = function["DB_CA_PEM"].as_str().expect("DB_CA_PEM");
    assert_eq!(
        pem,
        std::fs::read_to_string(&env["DB_CA_FILE"]).expect("CA file")
    );
    assert_eq!(
        function["AWS_ENDPOINT_URL_SECRETS_MANAGER"],
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"].as_str()
    );
    let admin = format!(
        "host={} port={} dbname=app user=postgres",
        env["PG_ADMIN_SOCKET_DIR"], env["PG_PORT"]
    );
    assert_eq!(
        psql(&admin, "", "SELECT count(*) FROM public.users").expect("admin"),
        "1"
    );

    let children = children_of(up.child.id());
    assert_eq!(
        children.len(),
        4,
        "postgres, pgbouncer, moto and the janitor: {children:?}"
    );
    drop(up.stdin.take());
    let status = wait_exit(&mut up.child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_all_die(&children, Duration::from_secs(5));
    assert!(!up.env_file.exists(), "env file is removed at teardown");
    assert!(!up.sam_env_file.exists(), "so is the sam env file");
    assert!(
        !Path::new(&env["PG_ADMIN_SOCKET_DIR"]).exists(),
        "data dir removed"
    );
}

#[test]
fn a_killed_parent_leaves_no_process_and_no_file() {
    // Its own base directory, so that what is left can be listed.
    let base = local_stack::scratch_dir("bin-base");
    let mut up = up("kill", Some(base.path()));
    let children = children_of(up.child.id());
    assert_eq!(children.len(), 4, "{children:?}");
    // SIGKILL: no code of its own runs (a SIGTERM or Ctrl-C ends it the same way).
    up.child.kill().expect("SIGKILL local-stack");
    up.child.wait().expect("reap");
    // No teardown code ran: the janitor stops the services and removes every directory.
    assert_all_die(&children, Duration::from_secs(10));
    let start = Instant::now();
    let left = || -> Vec<PathBuf> {
        std::fs::read_dir(base.path())
            .expect("base")
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    while !left().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), Vec::<PathBuf>::new());
}

#[test]
fn bad_arguments_are_refused_with_usage_and_help_is_not_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args(["up", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Usage: local-stack up"), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args(["up", "--help"])
        .output()
        .expect("run");
    assert_eq!(help.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert!(stdout.contains("--sam-env-file <FILE>"), "{stdout}");
}
