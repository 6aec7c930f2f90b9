//! The database connection over TLS, against servers this test starts
//! itself with certificates it makes: what the URL asks for
//! (`sslmode`/`sslrootcert` for PostgreSQL, `ssl-mode`/`ssl-ca` for
//! MariaDB) is what the store does, and a server that cannot prove itself
//! is refused with a message that says why.
#![cfg(unix)]
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use slavealloc_domain::{DumpStore, StoreError};
use slavealloc_store_sql::SqlStore;
use slavealloc_store_sql_testing::servers::{PrivateMariadb, PrivatePostgres, TestCertificates};
use sqlx::{Connection as _, Row as _};

/// Whether a session of the store's own URL is encrypted, asked of the
/// server rather than the client.
async fn postgres_session_is_encrypted(url: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    row.get::<bool, _>(0)
}

/// Connects, creates the schema, and reads a dump: the store works.
async fn works(url: &str) {
    let store = SqlStore::connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    store.export().await.unwrap();
    store.close().await;
}

/// The store refuses `url`; its message holds every one of `words`.
async fn refused(url: &str, words: &[&str]) {
    let err = match SqlStore::connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Other(_)),
        "{err:?}"
    );
    let msg = err.to_string().to_lowercase();
    for word in words {
        assert!(msg.contains(word), "{url}: {msg:?} does not say {word:?}");
    }
}

fn q(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_when_asked_and_refuses_one_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = TestCertificates::make(dir.path(), "wrong");
    // Two loopback addresses: the certificate names only the first.
    let Some(pg) = PrivatePostgres::start("listen_addresses = '127.0.0.1,127.0.0.2'\n") else {
        return;
    };
    let certs = TestCertificates::make(pg.files(), "server");
    pg.give_to_server(&certs.key);
    pg.give_to_server(&certs.cert);
    pg.reload_with(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        q(&certs.cert),
        q(&certs.key)
    ));
    // Only TLS sessions are let in over TCP.
    pg.set_hba("local all all trust\nhostssl all all 127.0.0.0/8 trust\nhostnossl all all 127.0.0.0/8 reject\n");

    let require = pg.url("127.0.0.1", "sslmode=require");
    works(&require).await;
    assert!(postgres_session_is_encrypted(&require).await);
    // The default (prefer) takes TLS when the server offers it.
    assert!(postgres_session_is_encrypted(&pg.url("127.0.0.1", "")).await);
    let verified = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", q(&certs.ca)),
    );
    works(&verified).await;
    assert!(postgres_session_is_encrypted(&verified).await);

    // A certificate of another authority, or for another name, is refused.
    let other_ca = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", q(&wrong.ca)),
    );
    refused(&other_ca, &["certificate"]).await;
    let other_name = pg.url(
        "127.0.0.2",
        &format!("sslmode=verify-full&sslrootcert={}", q(&certs.ca)),
    );
    refused(&other_name, &[]).await;
    // Asking for no TLS reaches a server that wants it and is turned away.
    refused(&pg.url("127.0.0.1", "sslmode=disable"), &["pg_hba.conf"]).await;

    // The same server without TLS: require and verify-full refuse it
    // rather than send the password in clear.
    pg.set_hba("local all all trust\nhost all all 127.0.0.0/8 trust\n");
    pg.reload_with("ssl = off\n");
    refused(&require, &["tls"]).await;
    refused(&verified, &["tls"]).await;
    works(&pg.url("127.0.0.1", "sslmode=prefer")).await;
}

#[tokio::test]
async fn mariadb_over_tls_verifies_the_server_when_asked_and_refuses_one_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = TestCertificates::make(dir.path(), "wrong");
    let Some(db) = PrivateMariadb::start(true) else {
        return;
    };
    let certs = db.certs().unwrap();
    let required = db.url("127.0.0.1", "ssl-mode=REQUIRED");
    works(&required).await;
    let verified = db.url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", q(&certs.ca)),
    );
    works(&verified).await;
    let cipher = {
        let mut conn = sqlx::MySqlConnection::connect(&verified).await.unwrap();
        let row = sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        row.get::<String, _>(1)
    };
    assert!(!cipher.is_empty(), "the session is encrypted");
    let other_ca = db.url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", q(&wrong.ca)),
    );
    refused(&other_ca, &["certificate"]).await;
    drop(db);

    let Some(plain) = PrivateMariadb::start(false) else {
        return;
    };
    refused(&plain.url("127.0.0.1", "ssl-mode=REQUIRED"), &["tls"]).await;
    works(&plain.url("127.0.0.1", "ssl-mode=PREFERRED")).await;
}
