//! Each service does what the Lambda's tests rely on: TLS really enforced and verified, SCRAM
//! through PgBouncer, password refresh, stop/start, and moto's secrets.

// A test crate: its helpers panic with the reason, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::assert_err_contains;
use local_stack::kit::psql;
use local_stack::{Certs, Moto, Postgres, SCHEMA, Stack};

/// Certificates for `names` in a scratch directory (returned too: they go when it is dropped).
fn temp_certs(names: &[&str]) -> (tempfile::TempDir, Certs) {
    let dir = local_stack::scratch_dir("certs");
    let certs = Certs::generate(dir.path(), names).expect("generate certificates");
    (dir, certs)
}

fn direct(pg: &Postgres, host: &str, db: &str, user: &str, tls: &str) -> String {
    format!(
        "host={host} port={} dbname={db} user={user} {tls}",
        pg.port()
    )
}

#[test]
fn tls_postgres_rejects_plaintext_tcp_and_accepts_verified_tls() {
    let stack = Stack::shared();
    let db = stack.new_database(SCHEMA);
    let pw = db.app_password.clone();
    let ca = stack.certs.ca_pem.display().to_string();

    assert_err_contains(
        psql(
            &direct(
                &stack.pg,
                "127.0.0.1",
                &db.name,
                &db.role,
                "sslmode=disable",
            ),
            &pw,
            "SELECT 1",
        ),
        "no encryption",
    );
    let out = psql(
        &direct(
            &stack.pg,
            "localhost",
            &db.name,
            &db.role,
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        &pw,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .expect("verify-full via host=localhost");
    assert_eq!(out, "t");
    // The certificate also carries IP:127.0.0.1.
    psql(
        &direct(
            &stack.pg,
            "127.0.0.1",
            &db.name,
            &db.role,
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        &pw,
        "SELECT 1",
    )
    .expect("verify-full via host=127.0.0.1");

    // A CA that did not sign the server certificate is refused.
    let (_dir, other) = temp_certs(Certs::LOCALHOST);
    assert_err_contains(
        psql(
            &direct(
                &stack.pg,
                "localhost",
                &db.name,
                &db.role,
                &format!("sslmode=verify-full sslrootcert={}", other.ca_pem.display()),
            ),
            &pw,
            "SELECT 1",
        ),
        "certificate verify failed",
    );
}

#[test]
fn certificate_for_other_names_fails_host_name_verification() {
    let (_dir, wrong) = temp_certs(&["db.example.invalid"]);
    let pg = Postgres::start(Some(&wrong)).expect("start postgres");
    let sql = "CREATE ROLE u LOGIN PASSWORD 'pw'";
    pg.admin_psql("postgres", sql, &[]).expect("create role");
    assert_err_contains(
        psql(
            &direct(
                &pg,
                "localhost",
                "postgres",
                "u",
                &format!("sslmode=verify-full sslrootcert={}", wrong.ca_pem.display()),
            ),
            "pw",
            "SELECT 1",
        ),
        "does not match host name",
    );
}

#[test]
fn plaintext_postgres_does_not_speak_tls() {
    let pg = Postgres::start(None).expect("start plaintext postgres");
    let sql = "CREATE ROLE plain LOGIN PASSWORD 'secret pw'";
    pg.admin_psql("postgres", sql, &[]).expect("create role");
    assert_err_contains(
        psql(
            &direct(&pg, "127.0.0.1", "postgres", "plain", "sslmode=require"),
            "secret pw",
            "SELECT 1",
        ),
        "server does not support SSL",
    );
    let out = psql(
        &direct(&pg, "127.0.0.1", "postgres", "plain", "sslmode=disable"),
        "secret pw",
        "SELECT current_user",
    )
    .expect("plaintext login");
    assert_eq!(out, "plain");
    let verifier = pg.scram_verifier("plain").expect("verifier");
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
}

#[test]
fn bouncer_requires_tls_and_scram_and_routes_to_the_test_database() {
    let stack = Stack::shared();
    let db = stack.new_database(SCHEMA);
    let pw = db.app_password.clone();

    let out = psql(
        &db.bouncer_conninfo(),
        &pw,
        "INSERT INTO users (display_name, email, handle, cognito_user_id)
           VALUES ('A', 'a@example.com', 'a', gen_random_uuid()::text);
         SELECT current_database(), current_user,
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),
                (SELECT count(*) FROM users)",
    )
    .expect("query through PgBouncer");
    // The server side of the pooled connection is TLS too (PgBouncer -> PostgreSQL).
    assert_eq!(out, format!("{}|{}|t|1", db.name, db.role));
    assert_eq!(db.admin_psql("SELECT email FROM users"), "a@example.com");

    let port = stack.bouncer.port();
    assert_err_contains(
        psql(
            &format!(
                "host=localhost port={port} dbname={} user={} sslmode=disable",
                db.name, db.role
            ),
            &pw,
            "SELECT 1",
        ),
        "SSL required",
    );
    assert_err_contains(
        psql(&db.bouncer_conninfo(), "wrong password", "SELECT 1"),
        "SASL authentication failed",
    );
    // The role may only do what it was granted.
    assert_err_contains(
        psql(&db.bouncer_conninfo(), &pw, "DELETE FROM users"),
        "permission denied",
    );
    // The secret in moto describes exactly this.
    let secret: serde_json::Value = serde_json::from_str(
        &stack
            .moto
            .get_secret_value(&db.secret_id)
            .expect("get secret"),
    )
    .expect("secret is JSON");
    assert_eq!(
        secret,
        serde_json::json!({
            "username": db.role, "password": pw, "host": "localhost", "port": port,
            "dbname": db.name, "engine": "postgres"
        })
    );
}

#[test]
fn rotated_password_works_through_bouncer_and_the_old_one_does_not() {
    let stack = Stack::shared();
    let db = stack.new_database(SCHEMA);
    let old = db.app_password.clone();
    psql(&db.bouncer_conninfo(), &old, "SELECT 1").expect("old password before rotation");

    let new = "rotated password with 'quotes' and \"doubles\"";
    db.rotate_password(new);
    psql(&db.bouncer_conninfo(), new, "SELECT 1").expect("new password after rotation");
    assert_err_contains(
        psql(&db.bouncer_conninfo(), &old, "SELECT 1"),
        "SASL authentication failed",
    );
    let secret = stack
        .moto
        .get_secret_value(&db.secret_id)
        .expect("get secret");
    let secret: serde_json::Value = serde_json::from_str(&secret).expect("secret is JSON");
    assert_eq!(secret["password"], new);

    // Only PostgreSQL changed, PgBouncer not yet refreshed: it still wants the old verifier.
    let newer = "newer-password";
    stack
        .pg
        .set_password(&db.role, newer)
        .expect("set password");
    assert_err_contains(
        psql(&db.bouncer_conninfo(), newer, "SELECT 1"),
        "SASL authentication failed",
    );
    stack
        .bouncer
        .refresh_auth(&stack.pg, &db.role)
        .expect("refresh auth");
    psql(&db.bouncer_conninfo(), newer, "SELECT 1").expect("after refresh_auth");
}

/// Retries `f` until it succeeds or `timeout` passes; returns the last result.
fn eventually(
    timeout: Duration,
    mut f: impl FnMut() -> Result<String, String>,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let r = f();
        if r.is_ok() || start.elapsed() > timeout {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_and_bouncer_stop_and_start_on_the_same_ports() {
    let stack = Stack::start();
    let db = stack.new_database(SCHEMA);
    let pw = db.app_password.clone();
    let (pg_port, bouncer_port) = (stack.pg.port(), stack.bouncer.port());
    psql(&db.bouncer_conninfo(), &pw, "SELECT 1").expect("before");

    stack.pg.stop();
    assert_err_contains(
        psql(
            &direct(
                &stack.pg,
                "localhost",
                &db.name,
                &db.role,
                "sslmode=require",
            ),
            &pw,
            "SELECT 1",
        ),
        "Connection refused",
    );
    stack.pg.start();
    assert_eq!(stack.pg.port(), pg_port);
    eventually(Duration::from_secs(10), || {
        psql(&db.bouncer_conninfo(), &pw, "SELECT count(*) FROM users")
    })
    .expect("PgBouncer reconnects after PostgreSQL restarts");

    stack.bouncer.stop();
    assert_err_contains(
        psql(&db.bouncer_conninfo(), &pw, "SELECT 1"),
        "Connection refused",
    );
    stack.bouncer.start();
    assert_eq!(stack.bouncer.port(), bouncer_port);
    psql(&db.bouncer_conninfo(), &pw, "SELECT 1").expect("after PgBouncer restart");

    // start does nothing while running.
    stack.bouncer.start();
    stack.pg.start();
    psql(&db.bouncer_conninfo(), &pw, "SELECT 1").expect("after a second start");
}

#[test]
fn moto_secret_round_trip_and_restart_on_the_same_port() {
    let moto = Moto::launch().expect("start moto");
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{}", moto.port()));
    let arn = moto
        .create_secret("round/trip", r#"{"password":"one \"quoted\""}"#)
        .expect("create");
    assert!(
        arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
        "{arn}"
    );
    assert_eq!(
        moto.get_secret_value(&arn).expect("get by arn"),
        r#"{"password":"one \"quoted\""}"#
    );
    moto.put_secret_value("round/trip", r#"{"password":"two"}"#)
        .expect("put");
    assert_eq!(
        moto.get_secret_value("round/trip").expect("get"),
        r#"{"password":"two"}"#
    );
    let missing = moto
        .get_secret_value("no/such/secret")
        .expect_err("missing");
    assert!(
        missing.to_string().contains("ResourceNotFoundException"),
        "{missing}"
    );

    moto.stop();
    let down = moto.get_secret_value("round/trip").expect_err("down");
    assert!(
        format!("{down:?}").contains("Connection refused"),
        "{down:?}"
    );
    // moto keeps nothing across a restart: same port, no secrets.
    let port = moto.port();
    moto.start();
    assert_eq!(moto.port(), port);
    let gone = moto.get_secret_value("round/trip").expect_err("forgotten");
    assert!(
        gone.to_string().contains("ResourceNotFoundException"),
        "{gone}"
    );
}

#[test]
fn paused_moto_accepts_connections_but_never_answers() {
    use std::io::{Read, Write};
    let moto = Moto::launch().expect("start moto");
    moto.pause();
    // The kernel still completes the TCP handshake; the request then hangs: the "endpoint
    // unreachable" case that only a client-side timeout catches.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", moto.port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let err = conn
        .read(&mut [0u8; 16])
        .expect_err("no answer while paused");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    moto.resume();
    moto.create_secret("after-resume", "{}")
        .expect("works after resume");
}

/// A stack of a test's own (for tests that break it) is separate from the shared one and serves a
/// new database with its secret. (How long it takes is the benchmark's business, not a test's.)
#[test]
fn a_stack_of_its_own_serves_a_new_database_and_its_secret() {
    let stack = Stack::start();
    assert_ne!(stack.pg.port(), Stack::shared().pg.port());
    let db = stack.new_database(SCHEMA);
    assert_eq!(db.admin_psql("SELECT count(*) FROM users"), "0");
    let secret: serde_json::Value = serde_json::from_str(
        &stack
            .moto
            .get_secret_value(&db.secret_id)
            .expect("the database's secret"),
    )
    .expect("secret JSON");
    assert_eq!(secret["username"], db.role.as_str());
    assert_eq!(secret["port"], stack.bouncer.port());
}
