//! A stand-in for IAM database authentication (`iam_verifier.py` beside this crate): it checks
//! each login's password as an IAM auth token, with its own SigV4 computation and the static
//! credentials [`crate::kit::sdk_config`] gives the SDK, then passes valid logins through to
//! PgBouncer. For the tests and the benchmark of `DB_AUTH=rds-iam|dsql-iam`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::kit::{ACCESS_KEY, REGION};
use crate::process::{Kind, Server, instance_dir, write_service_file};
use crate::{Stack, TestDb, or_panic};

/// `iam_verifier.py <dir>/config.json <port>`, ready once it has written `<dir>/ready` (it binds
/// the port first: a probe could reach another process that took the port); SIGTERM ends it.
static VERIFIER: Kind = Kind {
    name: "iam-verifier",
    command: |dir, port| {
        let _ = std::fs::remove_file(dir.join("ready"));
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/iam_verifier.py"))
            .arg(dir.join("config.json"))
            .arg(port.to_string());
        Ok(cmd)
    },
    ready: |dir, _| dir.join("ready").exists(),
    stop_signal: Signal::SIGTERM,
};

/// A running verifier in front of the stack's PgBouncer, for one database, listening on
/// 127.0.0.1 with TLS (the stack's certificate for `localhost`).
#[derive(Debug)]
pub struct IamVerifier {
    pub(crate) server: Server,
    /// The function's environment for this mode and database through the verifier (the caller
    /// gives the SDK its credentials and region).
    pub env: Vec<(&'static str, String)>,
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
        let service = match mode {
            "rds-iam" => "rds-db",
            "dsql-iam" => "dsql",
            other => panic!("no IAM verifier for DB_AUTH={other}"),
        };
        let (certs, path) = (&stack.certs, |p: &Path| p.display().to_string());
        let configure = |dir: &Path, port: u16| {
            let authority = match service {
                "dsql" => "localhost".to_owned(),
                _ => format!("localhost:{port}"),
            };
            let config = json!({
                "cert": path(&certs.server_cert),
                "key": path(&certs.server_key),
                "backend_port": stack.bouncer.port(),
                "backend_ca": path(&certs.ca_pem),
                "backend_password": db.app_password,
                "service": service,
                "authority": authority,
                "region": REGION,
                "access_key": ACCESS_KEY,
                "secret_key": secret_key,
                "max_age": max_age.as_secs_f64(),
                "tamper_first": tamper_first,
                "log": path(&dir.join("decisions.log")),
            });
            write_service_file(&dir.join("config.json"), config.to_string().as_bytes())
        };
        let server = instance_dir("iam").and_then(|dir| Server::launch(&VERIFIER, dir, configure));
        let server = or_panic(server, "starting local-stack/iam_verifier.py (python3)");
        let env = vec![
            ("DB_AUTH", mode.to_owned()),
            ("DB_HOST", "localhost".to_owned()),
            ("DB_PORT", server.port().to_string()),
            ("DB_USER", db.role.clone()),
            ("DB_NAME", db.name.clone()),
            ("DB_CA_FILE", path(&certs.ca_pem)),
        ];
        IamVerifier { server, env }
    }

    /// Its decisions so far, one per login: `accepted <user>` or `rejected: <reason>`.
    pub fn decisions(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir().join("decisions.log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}
