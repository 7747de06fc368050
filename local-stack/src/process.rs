//! The servers' processes and directories, and the one mechanism that keeps them from outliving
//! the test process.
//!
//! **How nothing leaks.** Every instance directory and every server's process group this process
//! creates is registered with one janitor: a `sh` child, started once per process, that reads the
//! registrations on its standard input. When this process ends, however it ends (a normal exit, a
//! panic, SIGKILL), the kernel closes that pipe; the janitor then stops each registered process
//! group that is still running in its directory (SIGQUIT, then SIGKILL) and removes the
//! directories. Dropping a `Stack` or a server still stops it at once; the janitor is what makes
//! the shared stack (never dropped) and a killed test process clean up too. A process group is
//! only signalled while its leader's working directory is inside the directory it was registered
//! with, so a group id the kernel has since reused is never touched.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use tempfile::{NamedTempFile, TempDir};
use wait_timeout::ChildExt;

use crate::iam::IamVerifier;
use crate::{Moto, PgBouncer, Postgres, or_panic};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `postgres` when we are root (PostgreSQL and PgBouncer refuse to run as root), else ourselves.
fn service_user() -> Result<Option<User>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres").ok().flatten();
    user.map(Some).context(
        "running as root, so PostgreSQL and PgBouncer must run as the `postgres` OS user, \
         which does not exist (install the postgresql package: scripts/install-deps.sh)",
    )
}

/// Makes `cmd` run as the service user (when we are root), with a clean libpq environment.
pub(crate) fn as_service_user(cmd: &mut Command) -> Result<&mut Command> {
    if let Some(user) = service_user()? {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(without_libpq_env(cmd))
}

/// Removes the developer's `PG*` variables, which libpq would read, from `cmd`'s environment.
pub(crate) fn without_libpq_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `chown` to the service user when we are root (no-op otherwise).
fn give_to_service_user(path: &Path) -> Result<()> {
    if let Some(user) = service_user()? {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("chown {} to the postgres user", path.display()))?;
    }
    Ok(())
}

/// Writes `path` atomically (a reloading server never reads half a file), mode 0600 and owned by
/// the service user (PostgreSQL refuses a key file that others can read).
pub(crate) fn write_service_file(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let what = || format!("write {}", path.display());
    let mut file = NamedTempFile::new_in(dir).with_context(what)?;
    file.write_all(contents).with_context(what)?;
    give_to_service_user(file.path())?;
    file.persist(path).with_context(what)?;
    Ok(())
}

/// Reads `group PGID DIR` and `dir DIR` lines until end of input, then stops the groups still
/// running in their directory and removes the directories.
const JANITOR: &str = r#"
entries="$(cat)"
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
printf '%s\n' "$entries" | while read -r kind dir; do
  [ "$kind" = dir ] && rm -rf -- "$dir"
done
"#;

/// Tells the janitor about `line` (see [`JANITOR`]).
fn register(line: &str) -> Result<()> {
    static JANITOR_STDIN: OnceLock<Result<Mutex<ChildStdin>, String>> = OnceLock::new();
    let stdin = JANITOR_STDIN.get_or_init(|| {
        Command::new("sh")
            .args(["-c", JANITOR])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()) // holds no pipe of ours open after we are gone
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for the tests must not stop it first.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the local-stack janitor (sh): {e}"))
            .and_then(|mut child| child.stdin.take().ok_or("no janitor stdin".to_owned()))
            .map(Mutex::new)
    });
    let stdin = stdin.as_ref().map_err(|e| anyhow!("{e}"))?;
    writeln!(lock(stdin), "{line}").context("write to the local-stack janitor")
}

/// A fresh directory `local-stack-<pid>-<kind>-<random>` (mode 0700, the service user's,
/// registered with the janitor, removed when dropped) in `$LOCAL_STACK_DIR` or the temporary
/// directory: a short path, since PostgreSQL's socket lives in it (at most 107 bytes).
pub(crate) fn instance_dir(kind: &str) -> Result<TempDir> {
    let base = std::env::var_os("LOCAL_STACK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("local-stack-{}-{kind}-", std::process::id()))
        .tempdir_in(&base)
        .with_context(|| format!("create a directory in {}", base.display()))?;
    register(&format!("dir {}", dir.path().display()))?;
    give_to_service_user(dir.path())?;
    Ok(dir)
}

/// How to run one kind of server in its directory on a port: its name (messages, `<name>.log`),
/// the command that runs it in the foreground, when it is ready for the tests, and the signal
/// that makes it exit promptly (it is killed if it has not after 30 s).
#[derive(Debug)]
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) command: fn(dir: &Path, port: u16) -> Result<Command>,
    pub(crate) ready: fn(dir: &Path, port: u16) -> bool,
    pub(crate) stop_signal: Signal,
}

/// One server process in a directory of its own, on a port that stays the same across restarts.
/// [`Postgres`], [`PgBouncer`], [`Moto`] and [`IamVerifier`] deref to theirs (`stop`, `start`,
/// `pause`, ...). Dropping it stops the process and removes the directory.
#[derive(Debug)]
pub struct Server {
    kind: &'static Kind,
    port: u16,
    /// The running process; empty while stopped.
    child: Mutex<Option<Child>>,
    dir: TempDir,
}

impl Server {
    /// Starts a server of `kind` in `dir` on a free port, after `configure(dir, port)` has written
    /// its files. Three tries: another process may take the port before the server binds it.
    pub(crate) fn launch(
        kind: &'static Kind,
        dir: TempDir,
        mut configure: impl FnMut(&Path, u16) -> Result<()>,
    ) -> Result<Server> {
        let (port, child) = (0, Mutex::new(None));
        let mut server = Server {
            kind,
            port,
            child,
            dir,
        };
        let mut attempts = 1;
        loop {
            server.port = free_port()?;
            configure(server.dir(), server.port)?;
            match server.try_start() {
                Err(e) if attempts < 3 && in_use(&e) => attempts += 1,
                result => return result.map(|()| server),
            }
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server again after [`Server::stop`], on the same port and files, and waits
    /// until it is ready (does nothing if it runs). Panics on failure.
    pub fn start(&self) {
        or_panic(self.try_start(), format!("restarting {}", self.kind.name));
    }

    /// Stops the server and waits for it to exit (killed after 30 s): PostgreSQL with a fast
    /// shutdown, PgBouncer at once, moto killed (it forgets everything). Clients then get
    /// "connection refused". Does nothing if it is not running; works on a paused one.
    pub fn stop(&self) {
        let Some(mut child) = lock(&self.child).take() else {
            return;
        };
        // SIGCONT first: a paused (SIGSTOPped) process would act on nothing but SIGKILL.
        let _ = kill(pid(&child), Signal::SIGCONT);
        let _ = kill(pid(&child), self.kind.stop_signal);
        if !matches!(child.wait_timeout(STOP_TIMEOUT), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server's process (SIGSTOP): new connections hang instead of failing, like an
    /// endpoint that stopped answering (PostgreSQL's open sessions go on: each backend is a
    /// process of its own). Undo with [`Server::resume`].
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Undoes [`Server::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Whether the process is running (paused counts as running).
    pub fn is_running(&self) -> bool {
        running(&mut lock(&self.child)).is_some()
    }

    /// Sends `signal` if the process is running (our unreaped child: its pid cannot have been
    /// reused); returns whether it was.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        running(&mut lock(&self.child))
            .map(|child| kill(pid(child), signal))
            .is_some()
    }

    /// Starts the process unless it is running, and waits until it is ready. Errors end with
    /// the last lines of its log.
    fn try_start(&self) -> Result<()> {
        let mut slot = lock(&self.child);
        if running(&mut slot).is_some() {
            return Ok(());
        }
        let log = self.dir().join(format!("{}.log", self.kind.name));
        let out = OpenOptions::new().create(true).append(true).open(&log);
        let out = out.with_context(|| format!("open {}", log.display()))?;
        let mut cmd = (self.kind.command)(self.dir(), self.port)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicate the log file")?)
            .stderr(out)
            .current_dir(self.dir())
            .process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
        register(&format!("group {} {}", child.id(), self.dir().display()))?;

        let started = Instant::now();
        let failure = loop {
            match child.try_wait() {
                Ok(Some(status)) => break format!("exited during start-up ({status})"),
                Ok(None) => {}
                Err(e) => break format!("wait failed: {e}"),
            }
            if (self.kind.ready)(self.dir(), self.port) {
                *slot = Some(child);
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                break format!("not ready after {START_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(25));
        };
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "{} on port {} {failure}{}",
            self.kind.name,
            self.port,
            log_tail(&log)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes each of these types deref to its `server` field.
macro_rules! deref_to_server {
    ($($t:ty),*) => {$(
        impl std::ops::Deref for $t {
            type Target = Server;
            fn deref(&self) -> &Server {
                &self.server
            }
        }
    )*};
}

deref_to_server!(Postgres, PgBouncer, Moto, IamVerifier);

/// Whether the server could not start because its port was taken (in any capitalisation).
fn in_use(e: &anyhow::Error) -> bool {
    format!("{e:?}")
        .to_lowercase()
        .contains("address already in use")
}

/// The child in `slot` if it is still running (an exited one is reaped and removed).
fn running(slot: &mut Option<Child>) -> Option<&mut Child> {
    if !matches!(slot.as_mut().map(Child::try_wait), Some(Ok(None))) {
        *slot = None;
    }
    slot.as_mut()
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// Where a program is: `known` if it exists (Debian's place, the workspace's `.venv`), else `name`
/// looked up on `PATH`.
pub(crate) fn program(known: PathBuf, name: &str) -> PathBuf {
    if known.exists() { known } else { name.into() }
}

/// Ready once it accepts TCP connections.
pub(crate) fn accepts_tcp(_dir: &Path, port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The last 20 lines of a log file, formatted to be appended to an error message.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("\n--- last lines of {} ---\n{tail}", log.display())
}

/// Runs a short-lived command that bounds its own time, with `input` on stdin; returns its
/// stdout, or an error with its exit status and stderr.
pub(crate) fn run(mut cmd: Command, input: &str) -> Result<String> {
    // Its name only: the arguments may hold a password.
    let shown = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {shown}"))?;
    // From a thread: a command that writes much before it has read all must not block on us.
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_owned();
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for {shown}"))?;
    let _ = writer.join();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{shown} failed ({}): {}", out.status, stderr.trim_end());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.
fn free_port() -> Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("bind 127.0.0.1:0 to find a free port")?
            .port();
        if lock(&GIVEN).insert(port) {
            return Ok(port);
        }
    }
    bail!("no free TCP port found on 127.0.0.1")
}

/// Locks a mutex, ignoring poisoning (a panicking test must not break every later test).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
