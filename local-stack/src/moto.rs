//! moto's server: the local stand-in for AWS Secrets Manager and SQS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::process::{Kind, Server, instance_dir, program};

/// moto's server, killed to stop it; ready once it answers a call.
static MOTO: Kind = Kind {
    name: "moto",
    command: moto_command,
    ready: |_, port| call(port, "ListSecrets", &json!({})).is_ok(),
    stop_signal: Signal::SIGKILL,
};

/// `moto_server` on 127.0.0.1, reachable at [`Moto::endpoint`] with any credentials
/// (`AWS_ACCESS_KEY_ID=test`, region `us-east-1`).
///
/// moto keeps its state in memory only: after `stop` and `start` it is empty, as if every secret
/// and queue had been deleted.
#[derive(Debug)]
pub struct Moto {
    pub(crate) server: Server,
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers a Secrets Manager call.
    pub fn launch() -> Result<Moto> {
        let server = Server::launch(&MOTO, instance_dir("moto")?, |_, _| Ok(()))
            .context("start moto_server (is it installed? scripts/install-deps.sh)")?;
        Ok(Moto { server })
    }

    /// `http://127.0.0.1:<port>`: the value for `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `CreateSecret` with a string value; returns the ARN.
    pub fn create_secret(&self, name: &str, secret_string: &str) -> Result<String> {
        let request = json!({"Name": name, "SecretString": secret_string});
        let answer = call(self.port(), "CreateSecret", &request)?;
        let arn = answer["ARN"].as_str().map(str::to_owned);
        arn.ok_or_else(|| anyhow!("CreateSecret answered without an ARN: {answer}"))
    }

    /// `PutSecretValue`: a new current version (`AWSCURRENT`) of the secret named `name`.
    pub fn put_secret_value(&self, name: &str, secret_string: &str) -> Result<()> {
        let request = json!({"SecretId": name, "SecretString": secret_string});
        call(self.port(), "PutSecretValue", &request).map(drop)
    }

    /// `GetSecretValue`: the current `SecretString`.
    pub fn get_secret_value(&self, secret_id: &str) -> Result<String> {
        let request = json!({"SecretId": secret_id});
        let answer = call(self.port(), "GetSecretValue", &request)?;
        let value = answer["SecretString"].as_str().map(str::to_owned);
        value.ok_or_else(|| anyhow!("GetSecretValue without SecretString: {answer}"))
    }
}

fn moto_command(_dir: &Path, port: u16) -> Result<Command> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    let mut cmd = Command::new(program(venv, "moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    Ok(cmd)
}

/// One Secrets Manager call with a SigV4-shaped `Authorization` header: moto reads the region
/// from its credential scope and does not check the signature.
fn call(port: u16, action: &str, body: &Value) -> Result<Value> {
    const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
        Credential=test/20250101/us-east-1/secretsmanager/aws4_request, \
        SignedHeaders=host;x-amz-target, Signature=0";
    let what = || format!("secretsmanager.{action} on 127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
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
