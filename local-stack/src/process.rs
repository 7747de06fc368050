//! Child processes that cannot outlive the test process, their working directories, and the
//! clean-up of directories left behind by test processes that died.
//!
//! How leaks are prevented:
//! - Every long-running child is forked by ONE dedicated thread that lives as long as the process
//!   (the "spawner"), with `PR_SET_PDEATHSIG` set in the child after it switched to the service
//!   user (the kernel clears the death signal on a credential change, so the order matters; std
//!   runs `pre_exec` hooks after `setuid`). The death signal is sent when the *thread* that forked
//!   exits, which is why test threads (they end with their test) must not fork long-lived
//!   children themselves.
//! - Each instance lives in `<base>/<pid>-<seq>-<kind>`; the process holds an `flock` on
//!   `<base>/<pid>.lock` for its whole life. Whatever a dead process left (its lock is free) is
//!   killed and removed by the next process that creates an instance.
//! - [`crate::Stack::shared`] registers an `atexit` hook that stops the shared stack and removes
//!   its directories when the test binary exits normally.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

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
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        lookup_user("postgres").map(Some).map_err(|e| {
            format!(
                "running as root, so PostgreSQL and PgBouncer must run as the `postgres` OS user, \
                 but {e} (install the postgresql package: scripts/install-deps.sh)"
            )
        })
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn lookup_user(name: &str) -> Result<ServiceUser, String> {
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: passwd is a plain C struct; all-zero is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf outlives pwd's use.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!("OS user `{name}` does not exist"));
    }
    Ok(ServiceUser {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Makes `cmd` run as the service user (when we are root), with a clean libpq environment so that a developer's `PG*` variables cannot change what we test.
pub(crate) fn as_service_user(cmd: &mut Command) -> Result<&mut Command> {
    if let Some(user) = service_user()? {
        cmd.uid(user.uid).gid(user.gid);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    Ok(cmd)
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
// Spawner thread

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("local-stack-spawner".into())
            .spawn(move || {
                // Lives until the process exits: the senders sit in a static and are never
                // dropped, so `recv` never returns an error.
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("local-stack: cannot start the spawner thread");
        tx
    })
}

/// Spawns a long-running child from the spawner thread. The child gets `death_signal` when this
/// process exits (however it exits), runs in its own process group, and its stdout and stderr are
/// appended to `log`.
fn spawn_supervised(mut cmd: Command, death_signal: libc::c_int, log: &Path) -> Result<Child> {
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
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook only makes async-signal-safe system calls and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            // std does not reset the signal mask: a caller that blocked SIGTERM/SIGINT (to
            // sigwait for them, as our binary does) would pass that on and the service would
            // ignore our stop signals.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody will signal us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reply, answer) = mpsc::channel();
    spawner()
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| anyhow!("local-stack spawner thread is gone"))?;
    answer
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("local-stack spawner thread did not answer within 30 s"))?
        .with_context(|| format!("spawn {program}"))
}

/// Locks a mutex, ignoring poisoning (a panicking test must not break every later test).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Sends `sig` if the process is running; returns whether it was.
    pub(crate) fn signal(&self, sig: libc::c_int) -> bool {
        let mut slot = lock(&self.child);
        if !alive(&mut slot) {
            return false;
        }
        if let Some(child) = slot.as_ref() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child,
            // so it cannot have been reused.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
        true
    }

    /// Sends `sig`, waits up to `grace` for the process to exit, then SIGKILLs and reaps it.
    /// Does nothing if it is not running.
    pub(crate) fn stop(&self, sig: libc::c_int, grace: Duration) {
        if let Some(mut child) = lock(&self.child).take() {
            stop_child(&mut child, sig, grace);
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
fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill on our own unreaped child. SIGCONT first: a paused (SIGSTOPped) process
    // would act on nothing but SIGKILL.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
        libc::kill(pid, sig);
    }
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

/// Spawns a service (see [`spawn_supervised`]) and polls `ready` until it returns true. Fails
/// early if the process exits and after `timeout`, killing it; errors name `what` and end with
/// the last lines of `log`.
pub(crate) fn spawn_ready(
    what: &str,
    cmd: Command,
    death_signal: libc::c_int,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Child> {
    let mut child = spawn_supervised(cmd, death_signal, log)?;
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
    stop_child(&mut child, death_signal, Duration::from_secs(5));
    Err(anyhow!(format!("{failure}{}", log_tail(log))))
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
            return Err(anyhow!(format!(
                "{shown} did not finish within {timeout:?}"
            )));
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
        Err(anyhow!(format!(
            "{shown} failed ({status}): {}",
            stderr.trim_end()
        )))
    }
}

// ------------------------------------------------------------------------------------------------
// Ports, randomness

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (so two instances started in parallel do not pick the same one).
fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .with_context(|| "bind 127.0.0.1:0 to find a free port".to_owned())?;
        let port = listener
            .local_addr()
            .with_context(|| "read the bound address".to_owned())?
            .port();
        if lock(&GIVEN).get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(anyhow!("no free TCP port found on 127.0.0.1"))
}

/// `n` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let got = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if got > 0 {
            filled += got as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            panic!("getrandom failed: {}", io::Error::last_os_error());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------------------------------------
// Instance directories

/// Where instance directories go: `$LOCAL_STACK_DIR`, else `<tmp>/local-stack`. Short on purpose:
/// PostgreSQL's unix socket lives in here and socket paths are limited to 107 bytes.
pub(crate) fn base_dir() -> PathBuf {
    std::env::var_os("LOCAL_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("local-stack"))
}

/// A fresh directory for one service instance, removed (with everything in it) on drop.
#[derive(Debug)]
pub(crate) struct InstanceDir {
    path: PathBuf,
}

impl InstanceDir {
    /// Creates `<base>/<pid>-<seq>-<kind>`, owned by the service user, mode 0700.
    pub(crate) fn create(kind: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let base = prepare_base_dir()?;
        let path = base.join(format!(
            "{}-{}-{kind}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
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

/// Creates the base directory, takes this process's lock in it, and (once per process) cleans up
/// after dead processes.
fn prepare_base_dir() -> Result<PathBuf> {
    static LOCK: OnceLock<Result<File, String>> = OnceLock::new();
    static CLEAN: Once = Once::new();
    let base = base_dir();
    let lock_result = LOCK.get_or_init(|| {
        create_base_dir(&base).map_err(|e| format!("{e:?}"))?;
        let path = base.join(format!("{}.lock", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "lock {}: {}",
                path.display(),
                io::Error::last_os_error()
            ));
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(remove_own_lock_file);
        }
        Ok(file)
    });
    lock_result.as_ref().map_err(|e| anyhow!(e.clone()))?;
    CLEAN.call_once(|| clean_stale(&base));
    Ok(base)
}

extern "C" fn remove_own_lock_file() {
    let _ = fs::remove_file(base_dir().join(format!("{}.lock", std::process::id())));
}

fn create_base_dir(base: &Path) -> Result<()> {
    match fs::create_dir(base) {
        Ok(()) => {
            // Shared by all users like /tmp: sticky and world-writable.
            fs::set_permissions(base, fs::Permissions::from_mode(0o1777))
                .with_context(|| format!("chmod {}", base.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            if let Some(parent) = base.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
                return create_base_dir(base);
            }
            Err(anyhow::Error::new(e).context(format!("create {}", base.display())))
        }
    }
}

/// Kills what dead test processes left running and removes their directories. A process counts
/// as dead when its `<pid>.lock` is missing or can be locked.
pub(crate) fn clean_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let me = std::process::id().to_string();
    let mut by_owner: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = match name.strip_suffix(".lock") {
            Some(pid) => pid.to_owned(),
            None => match name.split_once('-') {
                Some((pid, _)) => pid.to_owned(),
                None => continue,
            },
        };
        if owner == me || owner.parse::<u32>().is_err() {
            continue;
        }
        by_owner.entry(owner).or_default().push(entry.path());
    }
    for (owner, paths) in by_owner {
        let lock_path = base.join(format!("{owner}.lock"));
        let lock = File::options().write(true).open(&lock_path);
        let dead = match &lock {
            // SAFETY: flock on a file descriptor we own.
            Ok(f) => unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 },
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if !dead {
            continue;
        }
        for path in paths.iter().filter(|p| p.is_dir()) {
            kill_leftovers(path);
            let _ = fs::remove_dir_all(path);
        }
        let _ = fs::remove_file(&lock_path);
    }
}

/// Kills the processes recorded in `*.pid` files under a stale instance directory, if they are
/// still running there (their working directory is inside it, which rules out a reused pid).
fn kill_leftovers(dir: &Path) {
    let mut pid_files = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("data")] {
        if let Ok(entries) = fs::read_dir(&sub) {
            pid_files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "pid")),
            );
        }
    }
    for file in pid_files {
        let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        else {
            continue;
        };
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if pid > 1 && cwd.starts_with(dir) {
            // SAFETY: plain kill; the pid was checked to belong to the stale instance.
            unsafe {
                libc::kill(pid, libc::SIGQUIT);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
