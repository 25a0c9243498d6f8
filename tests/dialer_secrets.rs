//! The `dialer` example takes its secrets by name, never on its command line: the webhook
//! password with `--password-env NAME` or `--password-file PATH`, the database URL with
//! `--database-url-env NAME` or `--database-url-file PATH`. Each is used (the receiver gets the
//! password in its Authorization header; the dialer opens the PostgreSQL outbox), and the
//! secret appears neither in the process's argv (`/proc/<pid>/cmdline`, which every local user
//! can read) nor in anything it prints. A variable that is not set, or two ways of giving one
//! secret, are refused without repeating any value.
//!
//! Uses the dialer binary `cargo test` builds beside the test binary: after changing the
//! example, `cargo build --all-features --examples` before `cargo test --test dialer_secrets`.
#![cfg(all(target_os = "linux", feature = "hyper", feature = "sqlite"))]

mod dialer_support;
#[cfg(feature = "postgres")]
mod pg_support;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use dialer_support::{dialer_binary, line};
use support::Receiver;

/// What one run of the dialer showed: its argv as the system shows it, its output, its exit
/// status.
struct Run {
    cmdline: String,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs the dialer with `args` and `env`, feeds it one call result, and reads its argv from
/// `/proc` once it has acknowledged that call result (or, when it exits first, reports that).
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(dialer_binary())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the dialer");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Written but not closed: the process stays up while its argv is read.
    let _ = stdin.write_all(format!("{}\n", line("Winter", "secret-test-1")).as_bytes());
    let mut out = String::new();
    let mut first = String::new();
    let _ = stdout.read_line(&mut first);
    out.push_str(&first);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id()))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default();
    drop(stdin);
    let _ = stdout.read_to_string(&mut out);
    let status = child.wait().unwrap();
    Run {
        cmdline,
        stdout: out,
        stderr: stderr.join().unwrap(),
        code: status.code(),
    }
}

#[track_caller]
fn assert_secret_hidden(what: &str, run: &Run, secret: &str) {
    assert!(!run.cmdline.is_empty(), "{what}: the argv was read");
    for (name, text) in [
        ("argv", &run.cmdline),
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
    ] {
        assert!(
            !text.contains(secret),
            "{what}: the secret is in its {name}: {text}"
        );
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn sqlite_args<'a>(store: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--store",
        store,
        "--url",
        url,
        "--allow-http",
        "--allow-private",
        "--username",
        "dialer",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn the_webhook_password_comes_from_the_environment_or_a_file_never_argv() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let url = receiver.url_for("/hook");

    // --password-env.
    let secret = "env-s3cret-pässword";
    let store = dir.path().join("env.sqlite");
    let store = store.to_str().unwrap();
    let ran = run(
        &sqlite_args(store, &url, &["--password-env", "WEBHOOK_PASSWORD"]),
        &[("WEBHOOK_PASSWORD", secret)],
    );
    assert!(
        ran.stdout.starts_with("accepted "),
        "{}{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_secret_hidden("--password-env", &ran, secret);
    assert!(
        ran.cmdline.contains("--password-env WEBHOOK_PASSWORD"),
        "{}",
        ran.cmdline
    );
    let requests = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        requests[0].header("authorization"),
        Some(basic("dialer", secret).as_str())
    );

    // --password-file: the first line, its newline dropped.
    let secret = "file-s3cret";
    let file = dir.path().join("webhook-password");
    std::fs::write(&file, format!("{secret}\r\nnot this line\n")).unwrap();
    let store = dir.path().join("file.sqlite");
    let ran = run(
        &sqlite_args(
            store.to_str().unwrap(),
            &url,
            &["--password-file", file.to_str().unwrap()],
        ),
        &[],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_secret_hidden("--password-file", &ran, secret);
    let requests = receiver.wait_for(2, Duration::from_secs(10));
    assert_eq!(
        requests[1].header("authorization"),
        Some(basic("dialer", secret).as_str())
    );

    // The old flag still works.
    let store = dir.path().join("argv.sqlite");
    let ran = run(
        &sqlite_args(store.to_str().unwrap(), &url, &["--password", "argv-pw"]),
        &[],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // What the check above would catch: on the command line, every local user sees it.
    assert!(ran.cmdline.contains("argv-pw"), "{}", ran.cmdline);
    let requests = receiver.wait_for(3, Duration::from_secs(10));
    assert_eq!(
        requests[2].header("authorization"),
        Some(basic("dialer", "argv-pw").as_str())
    );
}

/// Options added to a valid command line, the environment, and what stderr must say.
type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_secret_that_cannot_be_found_or_is_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("outbox.sqlite");
    let store = store.to_str().unwrap();
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cases: [Refusal<'_>; 5] = [
        (
            &["--password-env", "NOT_SET_ANYWHERE"],
            &[],
            "--password-env: the environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            &["--password-env", "PW", "--password", "twice-s3cret"],
            &[("PW", "env-s3cret")],
            "give one of --password, --password-env and --password-file",
        ),
        (
            &["--password-file", missing.to_str().unwrap()],
            &[],
            "--password-file",
        ),
        (
            &["--password-file", empty.to_str().unwrap()],
            &[],
            "--password-file: the value is empty",
        ),
        (
            &["--database-url-env", "DB"],
            &[("DB", "postgres://u:db-s3cret@127.0.0.1/x")],
            "give --store or --database-url, not both",
        ),
    ];
    for (extra, env, expected) in cases {
        let output = Command::new(dialer_binary())
            .args(sqlite_args(store, "http://127.0.0.1:9/hook", extra))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{extra:?}: {stderr}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn the_database_url_comes_from_the_environment_or_a_file_never_argv() {
    let Some(db) = pg_support::Database::new("dialer secrets") else {
        return;
    };
    let receiver = Receiver::start();
    let url = receiver.url_for("/hook");
    // The test server trusts 127.0.0.1, so any password opens it: the point is where the
    // URL, password included, is seen.
    let secret = "db-s3cret-pässword";
    let with_password = db
        .url
        .replacen("postgres@", &format!("postgres:{secret}@"), 1);
    assert!(with_password.contains(secret), "{}", db.url);
    let common = [
        "--database-schema",
        db.schema.as_str(),
        "--url",
        url.as_str(),
        "--allow-http",
        "--allow-private",
        "--password-env",
        "WEBHOOK_PASSWORD",
    ];

    let mut args = vec!["--database-url-env", "DIALER_DATABASE_URL"];
    args.extend_from_slice(&common);
    let ran = run(
        &args,
        &[
            ("DIALER_DATABASE_URL", with_password.as_str()),
            ("WEBHOOK_PASSWORD", "webhook-s3cret"),
        ],
    );
    assert!(
        ran.stdout.starts_with("accepted "),
        "{}{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_secret_hidden("--database-url-env", &ran, secret);
    assert_secret_hidden("--database-url-env", &ran, "webhook-s3cret");

    let file = dir_file(&with_password);
    let mut args = vec!["--database-url-file", file.1.to_str().unwrap()];
    args.extend_from_slice(&common);
    let ran = run(&args, &[("WEBHOOK_PASSWORD", "webhook-s3cret")]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_secret_hidden("--database-url-file", &ran, secret);
    assert_eq!(receiver.wait_for(2, Duration::from_secs(10)).len(), 2);
}

/// `text` and a newline in a file of a fresh directory (kept while the first value lives).
#[cfg(feature = "postgres")]
fn dir_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database-url");
    std::fs::write(&path, format!("{text}\n")).unwrap();
    (dir, path)
}
