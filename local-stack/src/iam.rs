//! A stand-in for IAM database authentication (`iam_verifier.py` beside this crate): it checks
//! each login's password as an IAM auth token, with its own SigV4 computation and the static
//! credentials [`crate::kit::sdk_config`] gives the SDK, then passes valid logins through to
//! PgBouncer. For the tests and the benchmark of `DB_AUTH=rds-iam|dsql-iam`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::kit::{ACCESS_KEY, REGION};
use crate::{Stack, TestDb};

/// A running verifier in front of the stack's PgBouncer, for one database. Stopped on drop; it
/// also exits by itself when this process ends (its standard input closes).
pub struct IamVerifier {
    child: Child,
    _stdin: ChildStdin,
    /// Where it listens (on 127.0.0.1; TLS with the stack's certificate for `localhost`).
    pub port: u16,
    /// The function's environment for this mode and database through the verifier (the caller
    /// gives the SDK its credentials and region).
    pub env: Vec<(&'static str, String)>,
    log: PathBuf,
}

impl IamVerifier {
    /// A verifier for `mode`, `rds-iam` (the token must name `localhost:<port>`) or `dsql-iam`
    /// (`localhost`). Tokens signed with another key than `secret_key`, or older than `max_age`,
    /// are refused; the first `tamper_first` it receives are altered, as if on the way.
    pub fn start(
        stack: &Stack,
        db: &TestDb,
        mode: &str,
        secret_key: &str,
        max_age: Duration,
        tamper_first: u32,
    ) -> IamVerifier {
        let (service, authority) = match mode {
            "rds-iam" => ("rds-db", "localhost:{port}"),
            "dsql-iam" => ("dsql", "localhost"),
            other => panic!("no IAM verifier for DB_AUTH={other}"),
        };
        // Inside the stack's own directory, which goes when the stack goes, however it ends.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = stack.certs.dir.join(format!("iam-verifier-{n}.log"));
        let (certs, path) = (&stack.certs, |p: &PathBuf| p.display().to_string());
        let args = [
            ("--cert", path(&certs.server_cert)),
            ("--key", path(&certs.server_key)),
            ("--backend-port", stack.bouncer.port().to_string()),
            ("--backend-ca", path(&certs.ca_pem)),
            ("--backend-password", db.app_password.clone()),
            ("--service", service.to_owned()),
            ("--authority", authority.to_owned()),
            ("--region", REGION.to_owned()),
            ("--access-key", ACCESS_KEY.to_owned()),
            ("--secret-key", secret_key.to_owned()),
            ("--max-age", max_age.as_secs_f64().to_string()),
            ("--tamper-first", tamper_first.to_string()),
            ("--log", path(&log)),
        ];
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/iam_verifier.py"))
            .args(
                args.iter()
                    .flat_map(|(flag, value)| [*flag, value.as_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start local-stack/iam_verifier.py (python3)");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the verifier's port");
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected verifier output {line:?}"));
        let env = vec![
            ("DB_AUTH", mode.to_owned()),
            ("DB_HOST", "localhost".to_owned()),
            ("DB_PORT", port.to_string()),
            ("DB_USER", db.role.clone()),
            ("DB_NAME", db.name.clone()),
            ("DB_CA_FILE", path(&certs.ca_pem)),
        ];
        IamVerifier {
            child,
            _stdin: stdin,
            port,
            env,
            log,
        }
    }

    /// Its decisions so far, one per login: `accepted <user>` or `rejected: <reason>`.
    pub fn decisions(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}

impl Drop for IamVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
