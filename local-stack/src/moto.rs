//! moto's server: the local stand-in for AWS Secrets Manager.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use anyhow::{Context, Result, anyhow, bail};

use crate::or_panic;
use crate::process::{Kind, Server, instance_dir, lock};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// moto's server, killed to stop it (it keeps nothing on disk); ready once it answers a call.
static MOTO: Kind = Kind {
    name: "moto",
    command: moto_command,
    ready: answers,
    stop_signal: Signal::SIGKILL,
};

/// `moto_server` on 127.0.0.1, reachable at [`Moto::endpoint`] with any credentials
/// (`AWS_ACCESS_KEY_ID=test`, region `us-east-1`).
///
/// moto keeps its state in memory. So that [`Moto::stop`] + [`Moto::start`] behave like an outage
/// rather than data loss, secrets created through this type are created again, with their latest
/// value, on restart (their ARNs change; address them by name).
///
/// Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Moto {
    server: Server,
    /// (name, latest value) of every secret created through this type, in creation order.
    secrets: Mutex<Vec<(String, String)>>,
}

/// `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server` (made by scripts/install-deps.sh),
/// else `moto_server` from `PATH`.
fn moto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(bin);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers a Secrets Manager call.
    pub fn launch() -> Result<Moto> {
        let server = Server::start(&MOTO, instance_dir("moto")?, |_, _| Ok(()))
            .context("start moto_server (run scripts/install-deps.sh, or set MOTO_SERVER)")?;
        Ok(Moto {
            server,
            secrets: Mutex::new(Vec::new()),
        })
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>`: the value for `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `CreateSecret` with a string value; returns the ARN.
    pub fn create_secret(&self, name: &str, secret_string: &str) -> Result<String> {
        let answer = call(
            self.port(),
            "CreateSecret",
            &create_request(name, secret_string),
        )?;
        lock(&self.secrets).push((name.to_owned(), secret_string.to_owned()));
        answer["ARN"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("CreateSecret answered without an ARN: {answer}"))
    }

    /// `PutSecretValue`: a new current version (`AWSCURRENT`) of the secret named `name`.
    pub fn put_secret_value(&self, name: &str, secret_string: &str) -> Result<()> {
        let request = json!({"SecretId": name, "SecretString": secret_string});
        call(self.port(), "PutSecretValue", &request)?;
        for (recorded, value) in lock(&self.secrets).iter_mut() {
            if recorded == name {
                *value = secret_string.to_owned();
            }
        }
        Ok(())
    }

    /// `GetSecretValue`: the current `SecretString`.
    pub fn get_secret_value(&self, secret_id: &str) -> Result<String> {
        let answer = call(
            self.port(),
            "GetSecretValue",
            &json!({"SecretId": secret_id}),
        )?;
        answer["SecretString"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("GetSecretValue without SecretString: {answer}"))
    }

    /// Kills moto: calls then fail with "connection refused". Does nothing if it is not running.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Starts moto again on the same port after [`Moto::stop`] and re-creates the secrets made
    /// through [`Moto::create_secret`] with their latest values. Does nothing if it is running.
    /// Panics on failure.
    pub fn start(&self) {
        let restart = || -> Result<()> {
            if self.server.start_again()? {
                let secrets = lock(&self.secrets).clone();
                for (name, value) in secrets {
                    call(self.port(), "CreateSecret", &create_request(&name, &value))?;
                }
            }
            Ok(())
        };
        or_panic(restart(), "restarting moto");
    }

    /// Freezes moto (SIGSTOP): calls hang until the client's timeout, like an unreachable
    /// endpoint that drops packets. Undo with [`Moto::resume`].
    pub fn pause(&self) {
        self.server.signal(Signal::SIGSTOP);
    }

    /// Undoes [`Moto::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.server.signal(Signal::SIGCONT);
    }
}

fn moto_command(_dir: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(moto_bin());
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    Ok(cmd)
}

fn answers(_dir: &Path, port: u16) -> bool {
    call(port, "ListSecrets", &json!({})).is_ok()
}

fn create_request(name: &str, secret_string: &str) -> Value {
    json!({"Name": name, "SecretString": secret_string})
}

/// One Secrets Manager call with a SigV4-shaped `Authorization` header: moto reads the region
/// from its credential scope and does not check the signature.
fn call(port: u16, action: &str, body: &Value) -> Result<Value> {
    const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
        Credential=test/20250101/us-east-1/secretsmanager/aws4_request, \
        SignedHeaders=host;x-amz-target, Signature=0";
    let what = || format!("secretsmanager.{action} on 127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("http://127.0.0.1:{port}/"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", format!("secretsmanager.{action}"))
        .header("Authorization", AUTHORIZATION)
        .send(body.to_string())
        .with_context(what)?;
    let status = response.status();
    let text = response.body_mut().read_to_string().with_context(what)?;
    if status != 200 {
        bail!("{}: HTTP {status}: {text}", what());
    }
    serde_json::from_str(&text).with_context(|| format!("{}: response is not JSON", what()))
}
