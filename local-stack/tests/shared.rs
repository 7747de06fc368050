//! `Stack::shared()` starts once per test process, and a client built like the Lambda's
//! (tokio-postgres + rustls, verify-full against our CA) works through PgBouncer.

// A test crate: its helpers panic with the reason, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use local_stack::iam::IamVerifier;
use local_stack::kit::SECRET_KEY;
use local_stack::{SCHEMA, Stack};

/// Which test got the shared stack first, and where it was.
static FIRST: OnceLock<(usize, u16)> = OnceLock::new();

fn check_shared_once() {
    let stack = Stack::shared();
    let me = (stack as *const Stack as usize, stack.pg.port());
    assert_eq!(
        *FIRST.get_or_init(|| me),
        me,
        "a second shared stack was started"
    );
    // Exactly one PostgreSQL instance directory belongs to this process.
    let prefix = format!("local-stack-{}-postgres-", std::process::id());
    let base = std::env::var_os("LOCAL_STACK_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let postgres_dirs = std::fs::read_dir(base)
        .expect("list base dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert_eq!(postgres_dirs, 1);
}

#[test]
fn shared_stack_is_started_once_a() {
    check_shared_once();
}

#[test]
fn shared_stack_is_started_once_b() {
    check_shared_once();
}

fn tls_connector(ca_pem: &std::path::Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca_pem))
}

/// Trusts only our CA, like the Lambda with `DB_CA_FILE`.
fn client_config(ca_pem: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("read CA") {
        roots.add(cert.expect("parse CA")).expect("add CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// An error the IAM verifier did not expect (here: a user name that is not UTF-8) is logged as a
/// decision, so a test sees it, instead of going to a log file that is deleted with the verifier.
#[test]
fn the_iam_verifier_logs_an_error_it_did_not_expect() {
    use std::io::{Read, Write};
    let stack = Stack::shared();
    let db = stack.new_database(SCHEMA);
    let verifier = IamVerifier::start(stack, &db, "rds-iam", SECRET_KEY, Duration::MAX, 0);
    let mut tcp = TcpStream::connect(("127.0.0.1", verifier.port())).expect("connect");
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .expect("SSLRequest");
    let mut answer = [0u8];
    tcp.read_exact(&mut answer).expect("answer to SSLRequest");
    assert_eq!(&answer, b"S");
    let name = "localhost".try_into().expect("server name");
    let client = rustls::ClientConnection::new(Arc::new(client_config(&stack.certs.ca_pem)), name);
    let mut tls = rustls::StreamOwned::new(client.expect("TLS client"), tcp);
    // StartupMessage, protocol 3.0, user = the single byte 0xff.
    let body = [&196_608u32.to_be_bytes()[..], b"user\0\xff\0\0"].concat();
    let length = u32::try_from(body.len() + 4).expect("length").to_be_bytes();
    tls.write_all(&[&length[..], &body].concat())
        .expect("startup");
    let _ = tls.read_to_end(&mut Vec::new()); // until the verifier hangs up
    let decisions = verifier.decisions();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(
        decisions[0].starts_with("error: UnicodeDecodeError"),
        "{decisions:?}"
    );
}

/// More clients than PgBouncer has server connections (pool size 2), each doing unnamed-statement
/// queries as the Lambda must in transaction pooling, over rustls with verify-full.
#[tokio::test(flavor = "current_thread")]
async fn tokio_postgres_with_rustls_works_through_the_pool() {
    let stack = Stack::shared();
    let db = stack.new_database(SCHEMA);
    let tls = tls_connector(&stack.certs.ca_pem);
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(stack.bouncer.port())
        .dbname(&db.name)
        .user(&db.role)
        .password(&db.app_password)
        .ssl_mode(tokio_postgres::config::SslMode::Require);

    let mut clients = Vec::new();
    for _ in 0..6 {
        let (client, connection) = config
            .connect(tls.clone())
            .await
            .expect("connect via PgBouncer");
        tokio::spawn(connection);
        clients.push(client);
    }
    for (i, client) in clients.iter().enumerate() {
        let rows = client
            .query_typed(
                "INSERT INTO users (display_name, email, handle, cognito_user_id) \
                 VALUES ('U', 'u@example.com', 'u', $1) RETURNING cognito_user_id",
                &[(&format!("sub-{i}"), tokio_postgres::types::Type::TEXT)],
            )
            .await
            .expect("insert through PgBouncer");
        assert_eq!(rows[0].get::<_, String>(0), format!("sub-{i}"));
    }
    assert_eq!(db.admin_psql("SELECT count(*) FROM users"), "6");

    // `options` is not in ignore_startup_parameters: PgBouncer 1.18 refuses it outright.
    config.options("-c search_path=public");
    let err = config
        .connect(tls.clone())
        .await
        .err()
        .expect("options refused");
    assert!(
        format!("{err:?}").contains("unsupported startup parameter"),
        "{err:?}"
    );
}
