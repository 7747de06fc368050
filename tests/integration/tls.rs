//! TLS is required and verified: an untrusted certificate, one for another host name, or a server
//! without TLS is refused.

use local_stack::{Certs, Postgres};

use crate::helpers::{SCHEMA, TestApp, config_from, invoke, new_user, unique};

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let test = TestApp::new().await;
    // Without DB_CA_FILE only the public and RDS roots are trusted; the stack's CA is neither.
    let mut env = test.env();
    env.remove("DB_CA_FILE");
    let app = test.start_with(config_from(&env)).await;
    let error = invoke(&app, new_user()).await.expect_err("untrusted");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(
        error.cause().to_string().contains("certificate"),
        "{error:?}"
    );
    assert_eq!(test.count_users(), 0);
}

/// `DB_CA_PEM` (the PEM text itself, as `sam local invoke` passes it) trusts the CA just as
/// `DB_CA_FILE` does.
#[tokio::test]
async fn the_ca_given_as_pem_text_is_trusted() {
    let test = TestApp::new().await;
    let mut env = test.env();
    let file = env.remove("DB_CA_FILE").expect("DB_CA_FILE");
    env.insert("DB_CA_PEM", std::fs::read_to_string(file).expect("CA"));
    let app = test.start_with(config_from(&env)).await;
    invoke(&app, new_user())
        .await
        .expect("trusted through DB_CA_PEM");
    assert_eq!(test.count_users(), 1);
}

#[tokio::test]
async fn a_ca_file_for_another_ca_does_not_make_the_server_trusted() {
    let test = TestApp::new().await;
    let dir = local_stack::scratch_dir("other-ca");
    let other = Certs::generate(dir.path(), Certs::LOCALHOST).expect("another CA");
    let mut env = test.env();
    env.insert("DB_CA_FILE", other.ca_pem.to_string_lossy().into_owned());
    let app = test.start_with(config_from(&env)).await;
    let error = invoke(&app, new_user()).await.expect_err("wrong CA");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(
        error.cause().to_string().contains("certificate"),
        "{error:?}"
    );
    assert_eq!(test.count_users(), 0);
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_refused() {
    let test = TestApp::new().await;
    // The secret says: log in as `app` on the plaintext server, which accepts that login.
    let (plaintext, secret_id) = own_server(&test, None, "localhost");
    let mut env = test.env();
    env.insert("DB_SECRET_ID", secret_id);
    let app = test.start_with(config_from(&env)).await;
    let error = invoke(&app, new_user()).await.expect_err("no TLS");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(error.cause().to_string().contains("TLS"), "{error:?}");
    assert_eq!(own_rows(&plaintext), "0");
}

/// The host name is verified, not only the chain: a server whose certificate, from a trusted CA,
/// names only 127.0.0.1 is accepted as `127.0.0.1` and refused as `localhost`.
#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let test = TestApp::new().await;
    let dir = local_stack::scratch_dir("ip-only");
    let certs = Certs::generate(dir.path(), &["127.0.0.1"]).expect("a certificate for 127.0.0.1");
    let (server, secret_id) = own_server(&test, Some(&certs), "127.0.0.1");
    let start_as = |host: &str| {
        let mut env = test.env();
        env.insert("DB_SECRET_ID", secret_id.clone());
        env.insert("DB_HOST", host.to_owned());
        env.insert("DB_PORT", server.port().to_string());
        env.insert("DB_CA_FILE", certs.ca_pem.to_string_lossy().into_owned());
        test.start_with(config_from(&env))
    };

    let app = start_as("localhost").await;
    let error = invoke(&app, new_user()).await.expect_err("wrong name");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    let cause = error.cause().to_string();
    assert!(cause.contains("certificate"), "{cause}");
    assert_eq!(own_rows(&server), "0");

    let app = start_as("127.0.0.1").await;
    invoke(&app, new_user())
        .await
        .expect("the name the certificate is for");
    assert_eq!(own_rows(&server), "1");
}

/// A PostgreSQL of the test's own (with TLS if `certs`) with database `own`, the schema, a role
/// `app` that may insert, and a secret in the stack's moto naming it at `host`. Returns the server
/// and the secret's id.
fn own_server(test: &TestApp<'_>, certs: Option<&Certs>, host: &str) -> (Postgres, String) {
    let server = Postgres::start(certs).expect("PostgreSQL of the test's own");
    let sql = "CREATE ROLE app LOGIN PASSWORD 'app-password'; CREATE DATABASE own";
    server
        .admin_psql("postgres", sql, &[])
        .expect("role and database");
    server.admin_psql("own", SCHEMA, &[]).expect("schema");
    let grant = "GRANT SELECT, INSERT ON public.users TO app";
    server.admin_psql("own", grant, &[]).expect("grant");
    let secret = serde_json::json!({
        "username": "app",
        "password": "app-password",
        "host": host,
        "port": server.port(),
        "dbname": "own",
    });
    let secret_id = format!("own-server-{}", unique());
    let created = test
        .stack
        .moto
        .create_secret(&secret_id, &secret.to_string());
    created.expect("secret");
    (server, secret_id)
}

/// The rows in [`own_server`]'s table.
fn own_rows(server: &Postgres) -> String {
    let count = server.admin_psql("own", "SELECT count(*) FROM public.users", &[]);
    count.expect("count").trim().to_owned()
}
