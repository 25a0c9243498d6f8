//! The PostgreSQL store's password, when the URL has none, comes from `PGPASSWORD` or a
//! password file (the URL's `passfile`, `PGPASSFILE`), as libpq's does, and really is sent:
//! a fake server on 127.0.0.1 asks for it in clear text and records what the store sends. No
//! password appears in the error the store then returns. Against the real test server
//! (tests/pg_support, trust authentication) a store opens on such a URL.
//!
//! One test: it changes the process's environment, which other tests must not see change.
#![cfg(feature = "postgres")]

mod pg_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use call_result_webhook::store::PostgresStore;

/// A server that speaks just enough of the protocol to ask for a clear-text password: each
/// connection's password (or `None`, when the client closed without one) is sent on the
/// channel, then the connection is refused as a bad password would be.
fn fake_server() -> (u16, mpsc::Receiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if tx.send(password_of(&mut stream)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn read_exact(stream: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn be32(bytes: &[u8]) -> usize {
    u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
}

fn password_of(stream: &mut TcpStream) -> Option<String> {
    // The startup message, after any SSL or GSS encryption request (refused with `N`).
    loop {
        let len = be32(&read_exact(stream, 4)?);
        let body = read_exact(stream, len - 4)?;
        match be32(&body) {
            80_877_103 | 80_877_104 => stream.write_all(b"N").ok()?,
            _ => break,
        }
    }
    // AuthenticationCleartextPassword.
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).ok()?;
    let kind = read_exact(stream, 1)?;
    let len = be32(&read_exact(stream, 4)?);
    let body = read_exact(stream, len - 4)?;
    let password = (kind == b"p")
        .then(|| String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned());
    let mut error = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0".to_vec();
    let mut message = vec![b'E'];
    message.extend_from_slice(&((error.len() + 4) as u32).to_be_bytes());
    message.append(&mut error);
    let _ = stream.write_all(&message);
    password
}

fn passfile(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    path
}

fn set_env(name: &str, value: Option<&Path>) {
    // SAFETY: this test binary has one test, and no other thread reads the environment while
    // it changes (the store's threads are started after, and stopped before the next change).
    unsafe {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
}

/// Opens a store at `url` against the fake server: it fails (the server refuses every
/// password); returns what the server received and the error's whole text.
fn attempt(url: &str, server: &mpsc::Receiver<Option<String>>) -> (Option<String>, String) {
    let err = PostgresStore::builder(url)
        .open_blocking()
        .expect_err("the fake server refuses every password");
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause} {cause:?}"));
        source = cause.source();
    }
    let received = server
        .recv_timeout(Duration::from_secs(10))
        .expect("the store connected to the fake server");
    while server.try_recv().is_ok() {}
    (received, text)
}

#[test]
fn the_password_comes_from_pgpassword_or_a_passfile_and_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    set_env("PGPASSWORD", None);
    set_env("PGPASSFILE", None);
    set_env("HOME", Some(dir.path())); // no ~/.pgpass
    let (port, server) = fake_server();
    let url = format!("postgres://dialer@127.0.0.1:{port}/calls?sslmode=disable");
    let file = passfile(
        dir.path(),
        "pgpass",
        &format!("# the fleet\nother:*:*:*:wrong\n127.0.0.1:{port}:calls:dialer:s3cr\\:et-file\n"),
        0o600,
    );
    let secrets = [
        "s3cr:et-file",
        "s3cr\\:et-file",
        "s3cret-env",
        "s3cret-open",
    ];
    let check = |what: &str, (received, text): (Option<String>, String), expected: Option<&str>| {
        assert_eq!(received.as_deref(), expected, "{what}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what}: the error shows a password: {text}"
            );
        }
        println!("{what}: the server received {received:?}");
    };

    // Nowhere to find one: none is sent.
    check("no password", attempt(&url, &server), None);

    // The URL's `passfile` parameter (percent-encoded in the URL form).
    let encoded = file.to_str().unwrap().replace('/', "%2F");
    check(
        "passfile parameter",
        attempt(&format!("{url}&passfile={encoded}"), &server),
        Some("s3cr:et-file"),
    );
    // In the key=value form.
    check(
        "passfile in key=value",
        attempt(
            &format!(
                "host=127.0.0.1 port={port} user=dialer dbname=calls sslmode=disable passfile='{}'",
                file.display()
            ),
            &server,
        ),
        Some("s3cr:et-file"),
    );

    // PGPASSFILE.
    set_env("PGPASSFILE", Some(&file));
    check("PGPASSFILE", attempt(&url, &server), Some("s3cr:et-file"));

    // PGPASSWORD comes before any file.
    set_env("PGPASSWORD", Some(Path::new("s3cret-env")));
    check("PGPASSWORD", attempt(&url, &server), Some("s3cret-env"));
    set_env("PGPASSWORD", None);

    // A file others may read is ignored, as libpq ignores it.
    let open = passfile(dir.path(), "open", "*:*:*:*:s3cret-open\n", 0o644);
    set_env("PGPASSFILE", Some(&open));
    #[cfg(unix)]
    check("a passfile of mode 0644", attempt(&url, &server), None);
    set_env("PGPASSFILE", None);

    // The real server (trust authentication, so it does not ask): a store opens on a URL with
    // no password and a passfile parameter, and its Debug shows neither password nor path's
    // secret.
    let Some(db) = pg_support::Database::new("pg password") else {
        return;
    };
    let real = passfile(dir.path(), "real", "*:*:*:*:s3cret-real\n", 0o600);
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let store = PostgresStore::builder(format!("{}{sep}passfile={}", db.url, real.display()))
        .schema(db.schema.clone())
        .open_blocking()
        .expect("the store opens on a URL with a passfile parameter");
    assert!(!format!("{store:?}").contains("s3cret"));
    let builder = PostgresStore::builder(format!("{}{sep}passfile={}", db.url, real.display()));
    assert!(
        format!("{builder:?}").contains("postgres://postgres@127.0.0.1"),
        "{builder:?}"
    );
}
