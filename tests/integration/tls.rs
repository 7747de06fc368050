//! TLS is required and verified: an untrusted certificate or a server without TLS is refused.

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
    let plaintext = Postgres::start(None).expect("plaintext PostgreSQL");
    let sql = "CREATE ROLE app LOGIN PASSWORD 'app-password'; CREATE DATABASE plain";
    plaintext
        .admin_psql("postgres", sql, &[])
        .expect("role and database");
    plaintext.admin_psql("plain", SCHEMA, &[]).expect("schema");
    plaintext
        .admin_psql("plain", "GRANT SELECT, INSERT ON public.users TO app", &[])
        .expect("grant");
    // The secret says: log in as `app` on the plaintext server, which accepts that login.
    let secret = format!(
        r#"{{"username":"app","password":"app-password","host":"localhost","port":{},"dbname":"plain"}}"#,
        plaintext.port()
    );
    let secret_id = format!("plaintext-{}", unique());
    test.stack
        .moto
        .create_secret(&secret_id, &secret)
        .expect("secret");
    let mut env = test.env();
    env.insert("DB_SECRET_ID", secret_id);
    let app = test.start_with(config_from(&env)).await;
    let error = invoke(&app, new_user()).await.expect_err("no TLS");
    assert_eq!(error.error_type(), "DatabaseConnectionError", "{error}");
    assert!(error.cause().to_string().contains("TLS"), "{error:?}");
    let rows = plaintext
        .admin_psql("plain", "SELECT count(*) FROM public.users", &[])
        .expect("count");
    assert_eq!(rows.trim(), "0");
}
