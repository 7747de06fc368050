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
    log: PathBuf,
}

impl IamVerifier {
    /// `service` is `rds-db` (the token must name `localhost:<port>`) or `dsql` (`localhost`);
    /// tokens signed with another key than `secret_key`, or older than `max_age`, are refused.
    /// The first `tamper_first` tokens it receives are altered, as if tampered with on the way.
    pub fn start(
        stack: &Stack,
        db: &TestDb,
        service: &str,
        secret_key: &str,
        max_age: Duration,
        tamper_first: u32,
    ) -> IamVerifier {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/iam_verifier.py");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Inside the stack's own directory, which goes when the stack goes, however it ends.
        let log = stack.certs.dir.join(format!(
            "iam-verifier-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let authority = if service == "rds-db" {
            "localhost:{port}"
        } else {
            "localhost"
        };
        let certs = &stack.certs;
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--cert", &certs.server_cert.to_string_lossy()])
            .args(["--key", &certs.server_key.to_string_lossy()])
            .args(["--backend-port", &stack.bouncer.port().to_string()])
            .args(["--backend-ca", &certs.ca_pem.to_string_lossy()])
            .args(["--backend-password", &db.app_password])
            .args(["--service", service, "--authority", authority])
            .args(["--region", REGION, "--access-key", ACCESS_KEY])
            .args(["--secret-key", secret_key])
            .args(["--max-age", &max_age.as_secs_f64().to_string()])
            .args(["--tamper-first", &tamper_first.to_string()])
            .args(["--log", &log.to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start local-stack/iam_verifier.py (python3)");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the verifier's port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected verifier output {line:?}"));
        IamVerifier {
            child,
            _stdin: stdin,
            port,
            log,
        }
    }

    /// Its decisions so far, one per login: `accepted <user>` or `rejected: <reason>`.
    pub fn decisions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The function's environment for `mode` (`rds-iam` or `dsql-iam`) through this verifier,
    /// as `db` (besides the AWS credentials and region, which the caller gives the SDK).
    pub fn env(&self, mode: &str, stack: &Stack, db: &TestDb) -> Vec<(&'static str, String)> {
        vec![
            ("DB_AUTH", mode.to_owned()),
            ("DB_HOST", "localhost".to_owned()),
            ("DB_PORT", self.port.to_string()),
            ("DB_USER", db.role.clone()),
            ("DB_NAME", db.name.clone()),
            ("DB_CA_FILE", stack.certs.ca_pem.display().to_string()),
        ]
    }
}

impl Drop for IamVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
