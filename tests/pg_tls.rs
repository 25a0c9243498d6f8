//! TLS to PostgreSQL, against a real server: a cluster of the test's own (`pg_cluster`) that
//! accepts only TLS (`ssl = on` with a certificate for `localhost` made here by rcgen and
//! signed by a CA made here; `pg_hba.conf` has `hostssl` lines and no `host` line, so a
//! connection without TLS is refused, and asks for the password by SCRAM), and a second
//! cluster with `ssl = off`.
//!
//! - `verify-full` with the right CA (the URL's `sslrootcert`, or the builder's
//!   `add_root_certificate`) opens the store (its migration connection included), stores and
//!   claims a delivery, and `LISTEN`s; with `channel_binding=require`, SCRAM is bound to the
//!   TLS session (`SCRAM-SHA-256-PLUS`).
//! - `verify-full` with another CA is refused at once, the certificate error as its cause.
//! - `verify-full` to `127.0.0.1`, which the certificate does not name, is refused;
//!   `verify-ca` there opens (the chain is checked, not the name).
//! - The default `prefer` and `require` use TLS without checking the certificate; with
//!   `sslrootcert=system` (verify-full, the webpki roots) it is refused.
//! - `require` against the cluster without TLS is refused; `prefer` falls back to plain.
//! - No error shows the password of the URL.
//!
//! Each case's error is printed (`cargo test --test pg_tls -- --nocapture`). Without the
//! cluster tools, the test says NOT RUN and passes, unless
//! `CALL_RESULT_WEBHOOK_REQUIRE_DATABASE` is set.
#![cfg(all(unix, feature = "postgres", feature = "test-util"))]

mod pg_cluster;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use call_result_webhook::Error;
use call_result_webhook::dispatch::Certificate;
use call_result_webhook::store::conformance::{new_deliveries, t};
use call_result_webhook::store::{ClaimRequest, Notice, Notices, Outbox, PostgresStore};
use pg_cluster::Cluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// In every URL; it must show in no error.
const PASSWORD: &str = "tls-s3cret-pw";
/// A refused certificate is refused in the handshake: no retry, no connect timeout.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A CA made here, and its certificate in PEM.
struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    /// A server certificate for `names`, and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path`, owned by the owner of `path`'s folder (the server's user), mode
/// `mode`: the server refuses a key file others may read.
fn write_for_server(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::write(path, text).unwrap();
    let owner = std::fs::metadata(path.parent().unwrap()).unwrap();
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Appends `settings` to the cluster's `postgresql.conf` (the last setting wins), replaces its
/// `pg_hba.conf` with `hba` when given, and restarts it.
fn reconfigure(cluster: &Cluster, settings: &str, hba: Option<&str>) {
    use std::io::Write;
    let dir = cluster.config_dir();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("postgresql.conf"))
        .unwrap();
    writeln!(conf, "\n{settings}").unwrap();
    if let Some(hba) = hba {
        write_for_server(&dir.join("pg_hba.conf"), hba, 0o640);
    }
    cluster.restart();
}

/// The error's message, each cause's, and its `Debug` form: everything a log could show.
fn whole_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text.push_str(&format!("\n    Debug: {err:?}"));
    text
}

/// Opens a store that must be refused: promptly, with no password in what it says. Prints
/// and answers the error's text.
fn refused(case: &str, builder: call_result_webhook::store::PostgresStoreBuilder) -> String {
    let started = Instant::now();
    let err = builder.open_blocking().expect_err(case);
    let took = started.elapsed();
    let text = whole_text(&err);
    println!("{case} ({took:.2?}):\n    {text}");
    assert!(matches!(err, Error::Store { .. }), "{case}: {text}");
    assert!(took < PROMPTLY, "{case}: refused after {took:?}");
    assert!(
        !text.contains(PASSWORD),
        "{case}: the password shows: {text}"
    );
    text
}

/// Stores a delivery, claims it back, and waits for the `LISTEN` connection to be in place.
fn stores_and_listens(store: &PostgresStore, account: &str) {
    let deliveries = new_deliveries(account, "tls", 1);
    store.insert(&deliveries).expect("insert over TLS");
    let claims = store
        .claim(&ClaimRequest {
            now: t(10),
            limit: 10,
            lease: Duration::from_secs(60),
            ..ClaimRequest::default()
        })
        .expect("claim over TLS");
    assert!(
        claims.iter().any(|c| c.delivery.id == deliveries[0].id),
        "the stored delivery is claimed"
    );
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    store.subscribe(Arc::new(move |notice| {
        let _ = tx.lock().unwrap().send(notice);
    }));
    // The listener announces due work once its LISTEN is in place.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("LISTEN over TLS"),
        Notice::DueWork
    );
}

#[test]
fn tls_to_postgres_follows_sslmode() {
    let Some(tls_only) = Cluster::create("tls") else {
        return;
    };
    let Some(plain) = Cluster::create("notls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("call-result-webhook test CA");
    let other = Ca::new("another CA");
    let ca_file = dir.path().join("ca.pem");
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    std::fs::write(&other_file, other.cert.pem()).unwrap();

    // The TLS-only cluster: its certificate names `localhost` only; the password is checked
    // (SCRAM), so the URL's password is really used.
    pg_cluster::query(
        &tls_only.url,
        &format!("ALTER USER postgres PASSWORD '{PASSWORD}'"),
    )
    .expect("set the password");
    let (cert, key) = ca.issue(&["localhost"]);
    let config_dir = tls_only.config_dir();
    write_for_server(&config_dir.join("server.crt"), &cert, 0o644);
    write_for_server(&config_dir.join("server.key"), &key, 0o600);
    reconfigure(
        &tls_only,
        &format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            config_dir.join("server.crt").display(),
            config_dir.join("server.key").display()
        ),
        Some(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        ),
    );
    reconfigure(&plain, "ssl = off", None);
    let port = tls_only.port;
    let url = |host: &str, params: &str| {
        format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{params}")
    };

    // The cluster really refuses a connection without TLS.
    let plain_refused = pg_cluster::query(&url("localhost", "sslmode=disable"), "SELECT 1")
        .expect_err("the TLS-only cluster refuses a connection without TLS");
    println!("sslmode=disable to the TLS-only cluster:\n    {plain_refused}");

    // verify-full with the right CA, from the URL: opens (and migrates), stores, listens; the
    // SCRAM authentication is bound to the TLS session (channel_binding=require fails
    // without a binding).
    let good = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&channel_binding=require",
            ca_file.display()
        ),
    );
    let store = PostgresStore::builder(&good)
        .schema("tls_url")
        .open_blocking()
        .expect("verify-full with the right CA opens");
    stores_and_listens(&store, "url");
    assert!(!format!("{store:?}").contains(PASSWORD));
    drop(store);

    // The password really is checked, over TLS.
    let wrong = good.replace(PASSWORD, "wrong-pw-1234");
    let text = refused(
        "verify-full, a wrong password",
        PostgresStore::builder(&wrong),
    );
    assert!(
        text.contains("28P01") && !text.contains("wrong-pw-1234"),
        "{text}"
    );

    // The same CA given to the builder instead of the URL.
    let store = PostgresStore::builder(url("localhost", "sslmode=verify-full"))
        .schema("tls_builder")
        .add_root_certificate(Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .open_blocking()
        .expect("verify-full with the builder's CA opens");
    stores_and_listens(&store, "builder");
    drop(store);

    // Another CA: refused, the certificate error its cause.
    let text = refused(
        "verify-full with another CA",
        PostgresStore::builder(url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", other_file.display()),
        )),
    );
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // Without a root, verify-full trusts the Mozilla roots, which did not sign it.
    let text = refused(
        "verify-full with the default (webpki) roots",
        PostgresStore::builder(url("localhost", "sslmode=verify-full")),
    );
    assert!(text.contains("UnknownIssuer"), "{text}");

    // A host the certificate does not name.
    let text = refused(
        "verify-full to 127.0.0.1 (the certificate names localhost)",
        PostgresStore::builder(url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
        )),
    );
    assert!(text.contains("not valid for name"), "{text}");

    // verify-ca checks the chain, not the name: the same host opens.
    let store = PostgresStore::builder(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", ca_file.display()),
    ))
    .schema("tls_url")
    .open_blocking()
    .expect("verify-ca to a host the certificate does not name opens");
    drop(store);
    // ... and still refuses another CA.
    let text = refused(
        "verify-ca with another CA",
        PostgresStore::builder(url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", other_file.display()),
        )),
    );
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The default, prefer: TLS, since the server offers it (the certificate not checked), on a
    // cluster that refuses anything else.
    drop(
        PostgresStore::builder(url("127.0.0.1", "application_name=tls-prefer"))
            .schema("tls_url")
            .open_blocking()
            .expect("prefer uses the TLS the server offers"),
    );
    // sslrootcert=system: verify-full against the Mozilla roots, which did not sign it.
    let text = refused(
        "sslrootcert=system (verify-full, the webpki roots)",
        PostgresStore::builder(url("localhost", "sslrootcert=system")),
    );
    assert!(text.contains("UnknownIssuer"), "{text}");

    // require: TLS without checking the certificate (as libpq, when no root is given).
    let store = PostgresStore::builder(url("127.0.0.1", "sslmode=require"))
        .schema("tls_url")
        .open_blocking()
        .expect("require opens whatever the certificate");
    drop(store);

    // require against a server without TLS: refused.
    let plain_url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=require",
        plain.port
    );
    let text = refused(
        "require to a cluster with ssl = off",
        PostgresStore::builder(&plain_url),
    );
    assert!(text.contains("server does not support TLS"), "{text}");
    // The default (prefer) connects there without TLS, as libpq does.
    let plain_default = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        plain.port
    );
    drop(
        PostgresStore::builder(&plain_default)
            .schema("tls_prefer")
            .open_blocking()
            .expect("prefer falls back to no TLS"),
    );
    // And disable to the TLS-only cluster: refused by its pg_hba.conf.
    refused(
        "disable to the TLS-only cluster",
        PostgresStore::builder(url("localhost", "sslmode=disable")),
    );
}
