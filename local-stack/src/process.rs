//! Child processes and working directories that cannot outlive the test process.
//!
//! **How nothing leaks.** Every instance directory and every service's process group this
//! process creates is registered with one janitor: a `sh` child, started once per process, that
//! reads the registrations on its standard input. When this process ends, however it ends (a
//! normal exit, a panic, SIGKILL), the kernel closes that pipe; the janitor then stops each
//! registered process group that is still running in its directory (SIGQUIT, then SIGKILL) and
//! removes the directories. Dropping a `Stack` or a service still stops it at once; the janitor is
//! what makes the shared stack (never dropped) and a killed test process clean up too. A process
//! group is only signalled while its leader's working directory is inside the directory it was
//! registered with, so a group id the kernel has since reused is never touched.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

/// The OS user that runs PostgreSQL and PgBouncer (both refuse to run as root).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceUser {
    uid: u32,
    gid: u32,
}

/// `Some(postgres)` when we are root, `None` (run as ourselves) otherwise.
pub(crate) fn service_user() -> Result<Option<ServiceUser>> {
    static USER: OnceLock<Result<Option<ServiceUser>, String>> = OnceLock::new();
    USER.get_or_init(|| {
        if !geteuid().is_root() {
            return Ok(None);
        }
        match User::from_name("postgres") {
            Ok(Some(user)) => Ok(Some(ServiceUser {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })),
            _ => Err(
                "running as root, so PostgreSQL and PgBouncer must run as the `postgres` OS \
                      user, which does not exist (install the postgresql package: \
                      scripts/install-deps.sh)"
                    .to_owned(),
            ),
        }
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Makes `cmd` run as the service user (when we are root), with a clean libpq environment so that
/// a developer's `PG*` variables cannot change what we test.
pub(crate) fn as_service_user(cmd: &mut Command) -> Result<&mut Command> {
    if let Some(user) = service_user()? {
        cmd.uid(user.uid).gid(user.gid);
    }
    Ok(without_libpq_env(cmd))
}

/// Removes the developer's `PG*` variables from `cmd`'s environment: libpq reads them, and they
/// must not change what a test connects to.
pub(crate) fn without_libpq_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `chown` to the service user when we are root (no-op otherwise).
pub(crate) fn give_to_service_user(path: &Path) -> Result<()> {
    if let Some(user) = service_user()? {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("chown {} to the postgres user", path.display()))?;
    }
    Ok(())
}

/// Writes `contents` to `path` with `mode`, owned by the service user; atomically (temp + rename)
/// so a reloading server never reads half a file.
pub(crate) fn write_service_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(contents)
        .with_context(|| format!("write {}", tmp.display()))?;
    drop(file);
    // The umask may have narrowed the mode; set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    give_to_service_user(&tmp)?;
    fs::rename(&tmp, path).with_context(|| format!("rename {} into place", tmp.display()))
}

// ------------------------------------------------------------------------------------------------
// The janitor

/// Reads `group PGID DIR` and `dir DIR` lines until end of input, then stops the groups still
/// running in their directory and removes the directories.
const JANITOR: &str = r#"
set -f
entries=""
while IFS= read -r line; do entries="$entries
$line"; done
stop() {
  printf '%s\n' "$entries" | while read -r kind pgid dir; do
    [ "$kind" = group ] || continue
    case "$(readlink "/proc/$pgid/cwd" 2>/dev/null)" in
      "$dir" | "$dir"/*) kill -s "$1" -- "-$pgid" 2>/dev/null ;;
    esac
  done
}
stop QUIT
sleep 1
stop KILL
printf '%s\n' "$entries" | while read -r kind a b; do
  case "$kind" in group) rm -rf -- "$b" ;; dir) rm -rf -- "$a" ;; esac
done
"#;

/// Tells the janitor about `line` (see [`JANITOR`]).
fn register(line: &str) -> Result<()> {
    static JANITOR_STDIN: OnceLock<Result<Mutex<ChildStdin>, String>> = OnceLock::new();
    let stdin = JANITOR_STDIN
        .get_or_init(|| {
            Command::new("sh")
                .args(["-c", JANITOR])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: a Ctrl-C meant for the tests must not stop it first.
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start the local-stack janitor (sh): {e}"))
                .and_then(|mut child| child.stdin.take().ok_or("no janitor stdin".to_owned()))
                .map(Mutex::new)
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    writeln!(lock(stdin), "{line}").context("write to the local-stack janitor")
}

// ------------------------------------------------------------------------------------------------
// Supervised services

/// Spawns a long-running child in its own process group, registered with the janitor under
/// `dir` (its working directory), its stdout and stderr appended to `log`.
fn spawn_supervised(mut cmd: Command, dir: &Path, log: &Path) -> Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log file {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("dup log file {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir(dir)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", cmd.get_program().to_string_lossy()))?;
    register(&format!("group {} {}", child.id(), dir.display()))?;
    Ok(child)
}

/// Locks a mutex, ignoring poisoning (a panicking test must not break every later test).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// The slot of one service's process: empty while stopped.
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Mutex<Option<Child>>,
}

impl Supervised {
    pub(crate) fn new(child: Child) -> Self {
        Self {
            child: Mutex::new(Some(child)),
        }
    }

    /// Starts the process with `spawn` unless it is running. Returns whether it started one.
    pub(crate) fn start_with(&self, spawn: impl FnOnce() -> Result<Child>) -> Result<bool> {
        let mut slot = lock(&self.child);
        if alive(&mut slot) {
            return Ok(false);
        }
        *slot = Some(spawn()?);
        Ok(true)
    }

    pub(crate) fn is_running(&self) -> bool {
        alive(&mut lock(&self.child))
    }

    /// Sends `signal` if the process is running; returns whether it was.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        let mut slot = lock(&self.child);
        if !alive(&mut slot) {
            return false;
        }
        if let Some(child) = slot.as_ref() {
            // Our unreaped child: its pid cannot have been reused.
            let _ = kill(pid(child), signal);
        }
        true
    }

    /// Sends `signal`, waits up to `grace` for the process to exit, then SIGKILLs and reaps it.
    /// Does nothing if it is not running.
    pub(crate) fn stop(&self, signal: Signal, grace: Duration) {
        if let Some(mut child) = lock(&self.child).take() {
            stop_child(&mut child, signal, grace);
        }
    }
}

fn alive(slot: &mut Option<Child>) -> bool {
    let alive = slot
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    if !alive {
        *slot = None;
    }
    alive
}

/// Signals a child and waits up to `grace` for it to exit; then SIGKILLs it and reaps it.
fn stop_child(child: &mut Child, signal: Signal, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SIGCONT first: a paused (SIGSTOPped) process would act on nothing but SIGKILL.
    let _ = kill(pid(child), Signal::SIGCONT);
    let _ = kill(pid(child), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Spawns a service in `dir` (see [`spawn_supervised`]) and polls `ready` until it returns true.
/// Fails early if the process exits and after `timeout`, killing it; errors name `what` and end
/// with the last lines of `log`.
pub(crate) fn spawn_ready(
    what: &str,
    cmd: Command,
    dir: &Path,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Child> {
    let mut child = spawn_supervised(cmd, dir, log)?;
    let start = Instant::now();
    let failure = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break format!("{what} exited during start-up ({status})");
            }
            Ok(None) => {}
            Err(e) => break format!("{what}: wait failed: {e}"),
        }
        if ready() {
            return Ok(child);
        }
        if start.elapsed() > timeout {
            break format!("{what} not ready after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(25));
    };
    stop_child(&mut child, Signal::SIGKILL, Duration::ZERO);
    Err(anyhow!("{failure}{}", log_tail(log)))
}

/// Runs `start` with a free port, retrying with another port (three tries in all) when the
/// server could not bind: another process may take a port between our probe and its bind.
pub(crate) fn on_free_port<T>(mut start: impl FnMut(u16) -> Result<T>) -> Result<(u16, T)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        match start(port) {
            Ok(value) => return Ok((port, value)),
            Err(e) if attempt < 3 && e.to_string().contains("Address already in use") => {}
            Err(e) => return Err(e),
        }
    }
}

/// The last lines of a log file, formatted to be appended to an error message.
pub(crate) fn log_tail(log: &Path) -> String {
    const MAX: u64 = 4096;
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        format!("\n(log {} is empty)", log.display())
    } else {
        format!(
            "\n--- last lines of {} ---\n{}",
            log.display(),
            tail.join("\n")
        )
    }
}

/// Runs a short-lived command to completion with a time limit; returns its stdout.
/// The error carries the exit status and stderr.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawn {shown}"))?;
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_owned();
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        })
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("wait for {shown}"))?
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!("{shown} did not finish within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(5));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(anyhow!("{shown} failed ({status}): {}", stderr.trim_end()))
    }
}

// ------------------------------------------------------------------------------------------------
// Ports, randomness, directories

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (so two instances started in parallel do not pick the same one).
fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("bind 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("read the bound address")?
            .port();
        if lock(&GIVEN).get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(anyhow!("no free TCP port found on 127.0.0.1"))
}

/// `n` random bytes from the operating system, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("getrandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where instance directories go: `$LOCAL_STACK_DIR`, else `<tmp>/local-stack`. Short on purpose:
/// PostgreSQL's unix socket lives in here and socket paths are limited to 107 bytes.
fn base_dir() -> PathBuf {
    std::env::var_os("LOCAL_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("local-stack"))
}

/// A fresh directory for one service instance, registered with the janitor, and removed (with
/// everything in it) on drop.
#[derive(Debug)]
pub(crate) struct InstanceDir {
    path: PathBuf,
}

impl InstanceDir {
    /// Creates `<base>/<pid>-<seq>-<kind>`, owned by the service user, mode 0700.
    pub(crate) fn create(kind: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let base = base_dir();
        fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        // Shared by all users like /tmp: sticky and world-writable (ignored if not ours).
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o1777));
        let path = base.join(format!(
            "{}-{}-{kind}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        register(&format!("dir {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", path.display()))?;
        give_to_service_user(&path)?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now (idempotent).
    pub(crate) fn remove(&self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        self.remove();
    }
}
