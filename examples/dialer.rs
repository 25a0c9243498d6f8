//! A minimal dialer process: call results in on stdin, delivered to one account's webhook
//! through a durable outbox, in the background: a SQLite file for one process, or a PostgreSQL
//! database shared by a fleet of them (feature `postgres`).
//!
//! ```sh
//! WEBHOOK_PASSWORD='s3cret' cargo run --release --example dialer -- --store outbox.sqlite \
//!     --url https://crm.example/hook --username dialer --password-env WEBHOOK_PASSWORD \
//!     [--retry-delays-ms 50,100,200] < results.jsonl
//! PGPASSFILE=/run/secrets/pgpass cargo run --release --features postgres --example dialer -- \
//!     --database-url postgres://dialer@db/calls --url https://crm.example/hook \
//!     --password-file /run/secrets/webhook-password < results.jsonl
//! ```
//!
//! Secrets are best given by the name of an environment variable or a file
//! (`--password-env`/`--password-file`, `--database-url-env`/`--database-url-file`, or a
//! database URL with no password and `PGPASSWORD` or a password file): a command line is
//! shown to every local user by `ps` for the process's whole life.
//!
//! Each line of stdin is one call result: a JSON object with the ten keys of the product page,
//! in the page's formats (as `send --result` reads them). Once `submit` has returned, the
//! result is durable in the outbox and the dialer prints `accepted <webhook-id> <Reference>`
//! on stdout. A worker (hyper on tokio) delivers in the background. At the end of the input
//! the dialer exits as soon as nothing is pending. Killed at any moment and started again on
//! the same `--store`, it sends what was still pending. This is how crash safety is tested
//! from outside (`tests/crash.rs`). SIGTERM, SIGINT and SIGHUP stop it gracefully: it stops
//! reading, shuts the worker down within `--shutdown-ms`, prints its summary and exits 4
//! (`tests/dialer_signals.rs`).
//!
//! With `--portal-addr HOST:PORT` (feature `portal`) it also serves the administrator's portal
//! for its account, under `/webhooks`, while it runs, and prints two lines on stderr,
//! `portal: administrator link URL` and `portal: viewer link URL`: single-use links, valid 10
//! minutes, each setting a session cookie (`HttpOnly; SameSite=Strict`, for 8 hours) and
//! opening Settings > Preferences > WebHook. They stand in for a dialer's own login (`tests/dialer_portal.rs`).
//!
//! Run `dialer --help` for every option and exit status. Every error is printed with its
//! causes, on one line; the password is never printed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use call_result_webhook::{
    AccountId, CallResult, CampaignId, Error, Event, HyperDispatcher, PreferencesUpdate, Principal,
    SqliteStore, Submitted, UrlPolicy, Webhooks, Worker,
    auth::AuthScheme,
    delivery::{RetrySchedule, ShutdownReport},
    encoding::Encoding,
    store::Store,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};

const USAGE: &str = "\
dialer: a minimal dialer process; call results in on stdin, delivered to one account's webhook

USAGE:
    dialer --store PATH --url URL [OPTIONS] < results.jsonl
    dialer --database-url URL --url URL [OPTIONS] < results.jsonl

Each line of stdin is one call result: a JSON object with the ten keys of the product page
(LogDateTime YYYY-MM-DDTHH:MM:SS in UTC, CallStart/CallEnd YYYY-MM-DD HH:MM:SS in the
account's time zone). Once it is stored durably the dialer prints, on stdout:

    accepted <webhook-id> <Reference>

and delivers it in the background. At the end of the input it exits as soon as nothing is
pending in the outbox (with --database-url: in the whole fleet's outbox). Started again on
the same --store or --database-url, it first sends what was still pending.

OPTIONS:
    --store PATH               the SQLite outbox file (created if it does not exist); one
                               process per file
    --database-url URL         a PostgreSQL outbox shared by any number of dialer processes
                               (needs the `postgres` feature; the URL's password is never
                               printed); give this (or one of the next two) or --store.
                               Leave the password out of the URL: it is then taken from
                               PGPASSWORD, or from a password file (the URL's `passfile`
                               parameter, PGPASSFILE, or ~/.pgpass; mode 0600), as libpq does
    --database-url-env NAME    the database URL from the environment variable NAME
    --database-url-file PATH   the database URL from the first line of the file PATH
    --database-schema NAME     the schema of the PostgreSQL outbox (default
                               call_result_webhook); every process of a fleet gives the same
    --timeout-ms N             the account's attempt time limit, 1000 to 30000 ms
                               (default 15000)
    --url URL                  the account's webhook URL (http or https)
    --username U               the account's webhook user name
    --password P               the account's webhook password (never printed, but other
                               local users see command lines: prefer the next two)
    --password-env NAME        the webhook password from the environment variable NAME
    --password-file PATH       the webhook password from the first line of the file PATH
                               (its trailing newline dropped)
    --retry-delays-ms LIST     delays before each retry, in ms, comma-separated
                               (default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h)
    --time-zone ZONE           the account's IANA time zone (default UTC)
    --auth basic|slash         Authorization: RFC 7617 Basic (default), or
                               base64(username/password) with no scheme word
    --encoding form|json       body encoding (default form)
    --allow-http               accept an http:// URL (https is required otherwise)
    --allow-private            accept loopback and private addresses
    --max-line-bytes N         the longest line of stdin taken, in bytes (default 1048576);
                               a longer line is refused and skipped, reading goes on
    --shutdown-ms N            when stopping, how long attempts in flight may take to
                               finish (default 5000); those still running then are released
                               and sent again by the next start
    --per-endpoint N           the most attempts in flight at once to the endpoint, over
                               every process on the outbox (default 4)
    --metrics-addr HOST:PORT   serve the crate's metrics in the Prometheus text format at
                               http://HOST:PORT/metrics (needs the `metrics` feature; port 0
                               picks a free one, printed on stderr)
    --portal-addr HOST:PORT    serve the administrator's portal for the account under
                               http://HOST:PORT/webhooks while the dialer runs (needs the
                               `portal` feature; port 0 picks a free one) and print two
                               sign-in links on stderr, each usable once within 10 minutes:
                               `portal: administrator link URL` (full administrative
                               permissions) and `portal: viewer link URL` (read only); each
                               sets a session cookie (8 hours) and opens Settings >
                               Preferences > WebHook. A HOST of 0.0.0.0 or :: is printed as loopback
    -h, --help                 print this help

The account and its campaign are configured as an administrator would, in the outbox file:
on a restart the stored preferences are kept, and the options given replace theirs.

SIGNALS:
    SIGTERM, SIGINT, SIGHUP  stop reading stdin, let the attempts in flight finish within
                             --shutdown-ms, release the rest, print the summary, exit 4
    a second one             ends the dialer at once, as that signal does by default
    SIGXFSZ                  ignored: a write over the file size limit (ulimit -f) fails
                             instead, and is reported as an outbox error

OUTPUT:
    stdout  one `accepted` line per call result stored, flushed at once
    stderr  lines not accepted, deliveries that failed for good, the outbox failing and
            recovering, a summary; every error with its causes, `: `-joined on one line;
            with --portal-addr, the portal's two sign-in links

EXIT STATUS:
    0  end of input, and nothing is pending
    1  the outbox failed (a call result could not be stored, the outbox could not be read
       at the end of input, or it kept failing for 30 s there), or stdout could not be
       written: stopped; what was stored stays in the outbox
    2  bad arguments, URL, credentials or outbox file: nothing was read
    3  end of input, but deliveries are held (the endpoint is paused): they stay in the
       outbox until an administrator resumes it
    4  stopped by SIGTERM, SIGINT or SIGHUP: nothing acknowledged is lost; what is still
       pending (attempts released included) stays in the outbox and is sent by the next
       start on it
    Killed (SIGKILL, a second signal), it loses nothing acknowledged either: the next start
    sends what was pending.
";

/// The one account and campaign this dialer serves.
const ACCOUNT: &str = "dialer";
const CAMPAIGN: &str = "calls";

/// Who configures the account: this process, as the account's administrator.
fn administrator() -> Principal {
    Principal::administrator("dialer-example")
}

/// One command-line option: its name and whether it takes a value (`--name VALUE` or
/// `--name=VALUE`). No message ever repeats an option's value: some are secrets.
struct Opt {
    name: &'static str,
    value: bool,
}

#[rustfmt::skip]
const OPTIONS: &[Opt] = &[
    Opt { name: "--store",             value: true },
    Opt { name: "--database-url",      value: true },
    Opt { name: "--database-url-env",  value: true },
    Opt { name: "--database-url-file", value: true },
    Opt { name: "--database-schema",   value: true },
    Opt { name: "--timeout-ms",        value: true },
    Opt { name: "--url",               value: true },
    Opt { name: "--username",          value: true },
    Opt { name: "--password",          value: true },
    Opt { name: "--password-env",      value: true },
    Opt { name: "--password-file",     value: true },
    Opt { name: "--retry-delays-ms",   value: true },
    Opt { name: "--time-zone",         value: true },
    Opt { name: "--auth",              value: true },
    Opt { name: "--encoding",          value: true },
    Opt { name: "--allow-http",        value: false },
    Opt { name: "--allow-private",     value: false },
    Opt { name: "--max-line-bytes",    value: true },
    Opt { name: "--shutdown-ms",       value: true },
    Opt { name: "--per-endpoint",      value: true },
    Opt { name: "--metrics-addr",      value: true },
    Opt { name: "--portal-addr",       value: true },
];

/// The options given: name to value (`""` for a flag).
#[derive(Default)]
struct Given(BTreeMap<&'static str, String>);

impl Given {
    fn value(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

enum Parsed {
    Help,
    Run(Given),
}

/// A problem found before any input was read: said on stderr, exit status 2.
struct Usage(String);

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, Usage> {
    let mut given = Given::default();
    let mut args = args.into_iter().enumerate();
    while let Some((position, arg)) = args.next() {
        let Some(arg) = arg.to_str() else {
            return Err(Usage(format!(
                "argument {} is not valid UTF-8",
                position + 1
            )));
        };
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        let Some(opt) = OPTIONS.iter().find(|o| o.name == name) else {
            // Never repeat a stray argument: it may be a password that lost its option.
            return Err(Usage(if name.starts_with("--") && name.len() <= 40 {
                format!("unknown option `{name}` (see --help)")
            } else {
                format!("unexpected argument {} (see --help)", position + 1)
            }));
        };
        let value = match (opt.value, inline) {
            (true, Some(v)) => v.to_owned(),
            (true, None) => match args.next() {
                Some((_, v)) => v
                    .into_string()
                    .map_err(|_| Usage(format!("the value of {name} is not valid UTF-8")))?,
                None => return Err(Usage(format!("{name} needs a value"))),
            },
            (false, Some(_)) => return Err(Usage(format!("{name} takes no value"))),
            (false, None) => String::new(),
        };
        if given.0.insert(opt.name, value).is_some() {
            return Err(Usage(format!("{name} given more than once")));
        }
    }
    if given.value("--url").is_none() {
        return Err(Usage("--url is required (see --help)".into()));
    }
    secret_from_elsewhere(&mut given, "--password")?;
    secret_from_elsewhere(&mut given, "--database-url")?;
    match (given.flag("--store"), given.flag("--database-url")) {
        (true, true) => {
            return Err(Usage(
                "give --store or --database-url, not both (see --help)".into(),
            ));
        }
        (false, false) => {
            return Err(Usage(
                "--store or --database-url is required (see --help)".into(),
            ));
        }
        _ => {}
    }
    Ok(Parsed::Run(given))
}

/// `--NAME-env VAR` or `--NAME-file PATH`, read into `--NAME` (at most one of the three):
/// so that a secret need not be on the command line, which `ps` shows to every local user.
/// No message repeats the secret.
fn secret_from_elsewhere(given: &mut Given, option: &'static str) -> Result<(), Usage> {
    let (env, file) = match option {
        "--password" => ("--password-env", "--password-file"),
        _ => ("--database-url-env", "--database-url-file"),
    };
    let ways = [option, env, file];
    if ways.iter().filter(|way| given.flag(way)).count() > 1 {
        return Err(Usage(format!(
            "give one of {option}, {env} and {file} (see --help)"
        )));
    }
    let value = if let Some(name) = given.value(env) {
        match std::env::var(name) {
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => {
                return Err(Usage(format!(
                    "{env}: the environment variable {name} is not set"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Usage(format!(
                    "{env}: the environment variable {name} is not valid UTF-8"
                )));
            }
        }
    } else if let Some(path) = given.value(file) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Usage(format!("{file} {path}: cannot read it: {}", chain(&e))))?;
        let line = text.split('\n').next().unwrap_or_default();
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    } else {
        return Ok(());
    };
    if value.is_empty() {
        let from = if given.flag(env) { env } else { file };
        return Err(Usage(format!("{from}: the value is empty")));
    }
    given.0.insert(option, value);
    Ok(())
}

/// The URL and address policy the options ask for, for `Webhooks` and the dispatcher alike.
fn policy(given: &Given) -> UrlPolicy {
    let mut policy = UrlPolicy::new();
    if given.flag("--allow-http") {
        policy = policy.allow_http(true);
    }
    if given.flag("--allow-private") {
        policy = policy.allow_private();
    }
    policy
}

/// The account's preferences as the options give them; what is not given stays as stored.
fn preferences(given: &Given) -> Result<PreferencesUpdate, Usage> {
    let url = given.value("--url").unwrap_or_default();
    let mut update = PreferencesUpdate::new().enabled(true).url(url);
    let username = given.value("--username");
    let password = given.value("--password");
    if username.is_some() || password.is_some() {
        update = update.credentials(username.unwrap_or(""), password.unwrap_or(""));
    }
    if let Some(list) = given.value("--retry-delays-ms") {
        update = update.retry_schedule(retry_schedule(list)?);
    }
    if let Some(ms) = given.value("--timeout-ms") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| Usage("--timeout-ms must be a whole number of ms".into()))?;
        update = update.attempt_timeout(Duration::from_millis(ms));
    }
    if let Some(zone) = given.value("--time-zone") {
        update = update.time_zone(zone);
    }
    if let Some(auth) = given.value("--auth") {
        let scheme: AuthScheme = auth
            .parse()
            .map_err(|_| Usage("--auth must be `basic` or `slash`".into()))?;
        update = update.auth_scheme(scheme);
    }
    if let Some(encoding) = given.value("--encoding") {
        let encoding: Encoding = encoding
            .parse()
            .map_err(|_| Usage("--encoding must be `form` or `json`".into()))?;
        update = update.encoding(encoding);
    }
    Ok(update)
}

/// `50,100,200` as a retry schedule.
fn retry_schedule(list: &str) -> Result<RetrySchedule, Usage> {
    let bad = || Usage("--retry-delays-ms must be whole numbers of ms, like 50,100,200".into());
    let delays = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<u64>().map(Duration::from_millis))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    RetrySchedule::new(delays).map_err(|e| Usage(format!("--retry-delays-ms: {e}")))
}

/// A whole number option, or its default.
fn number(given: &Given, name: &str, default: u64, min: u64) -> Result<u64, Usage> {
    let Some(text) = given.value(name) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Usage(format!(
            "{name} must be a whole number, at least {min}"
        ))),
    }
}

/// The outbox the options name, and how to name it in messages: "the outbox <file>" or "the
/// PostgreSQL outbox" (never the database URL, which may hold a password).
fn open_store(given: &Given) -> Result<(Arc<dyn Store>, String), String> {
    if let Some(path) = given.value("--store") {
        return match SqliteStore::open(path) {
            Ok(store) => Ok((Arc::new(store), format!("the outbox {path}"))),
            Err(e) => Err(format!("cannot open the outbox {path}: {}", chain(&e))),
        };
    }
    let url = given.value("--database-url").unwrap_or_default();
    open_database(url, given.value("--database-schema"))
}

#[cfg(feature = "postgres")]
fn open_database(url: &str, schema: Option<&str>) -> Result<(Arc<dyn Store>, String), String> {
    use call_result_webhook::store::PostgresStore;
    let mut builder = PostgresStore::builder(url);
    if let Some(schema) = schema {
        builder = builder.schema(schema);
    }
    let shown = "the PostgreSQL outbox".to_owned();
    match builder.open_blocking() {
        Ok(store) => Ok((Arc::new(store), shown)),
        Err(e) => Err(format!("cannot open {shown}: {}", chain(&e))),
    }
}

#[cfg(not(feature = "postgres"))]
fn open_database(_url: &str, _schema: Option<&str>) -> Result<(Arc<dyn Store>, String), String> {
    Err("--database-url needs the `postgres` feature: cargo run --features postgres ...".into())
}

/// The secrets given (the password, the database URL's password, `PGPASSWORD`): scrubbed
/// from every line printed, whatever a cause's text holds.
static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

fn keep_secrets(given: &Given) {
    let mut secrets: Vec<String> = given
        .value("--password")
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(database) = given.value("--database-url") {
        // `postgres://user:password@host/db`, as written and decoded; or `password=...` in
        // the key-value form.
        if let Some(password) = url::Url::parse(database)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            secrets.push(percent_decoded(&password));
            secrets.push(password);
        }
        secrets.extend(
            database
                .split_whitespace()
                .filter_map(|word| word.strip_prefix("password="))
                .map(str::to_owned),
        );
    }
    // The database password the store takes when the URL has none.
    secrets.extend(std::env::var("PGPASSWORD"));
    secrets.retain(|s| !s.is_empty());
    let _ = SECRETS.set(secrets);
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// One line on stderr, `dialer: ` first, with no secret in it.
fn say(message: impl std::fmt::Display) {
    let mut text = format!("dialer: {message}");
    for secret in SECRETS.get().into_iter().flatten() {
        text = text.replace(secret.as_str(), "<redacted>");
    }
    eprintln!("{text}");
}

/// An error and its causes on one line, `: `-joined. A cause whose text is already said
/// (some errors quote their cause) is not said again.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = e.source();
    }
    text
}

/// What the worker reported, for the summary.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Tells the operator what matters, on stderr: failures for good, pauses, the store failing
/// and recovering, the worker stopping. Attempts that will be retried are left to `tracing`,
/// for a dialer that subscribes.
fn report(event: &Event, tally: &Tally) {
    match event {
        Event::AttemptSucceeded { .. } => {
            tally.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Event::DeliveryFailed {
            delivery,
            attempts,
            kind,
            reason,
            ..
        } => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            say(format_args!(
                "{delivery} failed for good ({}) after {attempts} attempt(s): {reason}",
                kind.as_str()
            ));
        }
        Event::EndpointPaused { reason, .. } => say(format_args!(
            "the endpoint is paused: {}; deliveries wait for an administrator",
            reason.describe()
        )),
        Event::StoreFailing {
            reason,
            reads,
            holding,
        } => say(format_args!(
            "the outbox is failing ({}): {reason}; no new attempts until it works, {holding} outcome(s) held in memory",
            if *reads { "reads and writes" } else { "writes" }
        )),
        Event::StoreRecovered { recorded } => say(format_args!(
            "the outbox works again: {recorded} held outcome(s) recorded, attempts resume"
        )),
        Event::WorkerStopped { reason, released } => say(format_args!(
            "the delivery worker stopped: {reason}; {released} attempt(s) released"
        )),
        _ => {}
    }
}

/// `Reference` as printed: one line, whatever the value holds.
fn printable(reference: Option<&str>) -> String {
    reference
        .unwrap_or_default()
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// SIGTERM, SIGINT and SIGHUP ask for a graceful stop (a second one ends the process as
/// that signal does by default); SIGXFSZ is caught, so a write over the file size limit fails
/// with EFBIG instead of killing the process.
struct Signals {
    /// The first stop signal received, 0 until then.
    stop: Arc<AtomicUsize>,
    /// Whether SIGXFSZ arrived: the file size limit was reached.
    file_size: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        use signal_hook::flag;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicUsize::new(0));
        for signal in [SIGTERM, SIGINT, SIGHUP] {
            // In this order: the default action only once `stopping` was set by a first one.
            flag::register_conditional_default(signal, stopping.clone())?;
            flag::register(signal, stopping.clone())?;
            flag::register_usize(signal, stop.clone(), signal as usize)?;
        }
        let file_size = Arc::new(AtomicBool::new(false));
        flag::register(SIGXFSZ, file_size.clone())?;
        Ok(Signals { stop, file_size })
    }

    /// The stop signal received, if any.
    fn received(&self) -> Option<i32> {
        match self.stop.load(Ordering::SeqCst) {
            0 => None,
            signal => i32::try_from(signal).ok(),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a signal")
}

/// One line of stdin, as the reading thread hands it over.
enum Input {
    Line(u64, Vec<u8>),
    /// Longer than the cap: read past, not kept.
    TooLong(u64),
    /// Reading failed; nothing more comes.
    Failed(io::Error),
}

/// Reads stdin on a thread of its own, so that a read blocked on a quiet pipe never delays a
/// graceful stop: lines come through a short channel, which ends with the input.
fn read_stdin(max_line: usize) -> io::Result<mpsc::Receiver<Input>> {
    let (lines, received) = mpsc::sync_channel(4);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            for number in 1.. {
                let input = match read_line(&mut stdin, max_line) {
                    Ok(None) => return,
                    Ok(Some(Some(line))) => Input::Line(number, line),
                    Ok(Some(None)) => Input::TooLong(number),
                    Err(e) => Input::Failed(e),
                };
                let failed = matches!(input, Input::Failed(_));
                if lines.send(input).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(received)
}

/// The next line, without its `\n`: `None` at the end of input, `Some(None)` for a line
/// longer than `max` bytes, which is read to its end without being kept.
fn read_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<Option<Vec<u8>>>> {
    let mut line = Some(Vec::new());
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(line));
        }
        any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        if let Some(kept) = &mut line {
            if kept.len() + part.len() > max {
                line = None;
            } else {
                kept.extend_from_slice(part);
            }
        }
        let used = newline.map_or(chunk.len(), |at| at + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(Some(line));
        }
    }
}

/// Why the dialer stopped.
enum End {
    /// End of input, and nothing is pending.
    Idle,
    /// End of input; what is pending is held (the endpoint is paused).
    Held,
    /// A stop signal.
    Signal(i32),
    /// The outbox failed (already said); `answering` when it still answers (it is full), so
    /// that the summary may ask it what is pending without waiting out its retries again.
    Store { answering: bool },
    /// Stdout is gone: nobody can be told what was accepted.
    Stdout(io::Error),
}

/// Submits each line until the end of input, a stop signal or a failure. Counts the lines
/// accepted and not.
fn read_and_submit(
    webhooks: &Webhooks,
    account: &AccountId,
    campaign: &CampaignId,
    lines: &mpsc::Receiver<Input>,
    max_line: usize,
    signals: &Signals,
    counts: &mut Counts,
) -> Option<End> {
    let time_zone = webhooks
        .account(account)
        .expect("the account was just configured")
        .preferences()
        .time_zone()
        .clone();
    let mut stdout = io::stdout().lock();
    loop {
        if let Some(signal) = signals.received() {
            return Some(End::Signal(signal));
        }
        let (number, line) = match lines.recv_timeout(READ_POLL) {
            Ok(Input::Line(number, line)) => (number, line),
            Ok(Input::TooLong(number)) => {
                say(format_args!(
                    "line {number}: not accepted: longer than {max_line} bytes"
                ));
                counts.bad += 1;
                continue;
            }
            Ok(Input::Failed(e)) => {
                say(format_args!(
                    "stdin: {}; treating it as the end of input",
                    chain(&e)
                ));
                return None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        };
        let Ok(text) = std::str::from_utf8(&line) else {
            say(format_args!("line {number}: not accepted: not valid UTF-8"));
            counts.bad += 1;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let call = match CallResult::from_page_json(text, &time_zone) {
            Ok(call) => call,
            Err(e) => {
                say(format_args!("line {number}: not accepted: {}", chain(&e)));
                counts.bad += 1;
                continue;
            }
        };
        let reference = printable(call.reference());
        match webhooks.submit_blocking(account, campaign, call) {
            Ok(Submitted::Accepted(id)) => {
                counts.accepted += 1;
                if let Err(e) =
                    writeln!(stdout, "accepted {id} {reference}").and_then(|()| stdout.flush())
                {
                    return Some(End::Stdout(e));
                }
            }
            Ok(Submitted::Skipped(reason)) => {
                // Not expected: this process switched both on. Said, never silent.
                say(format_args!(
                    "line {number}: not sent: {}",
                    reason.describe()
                ));
                counts.bad += 1;
            }
            Err(
                e @ (Error::Store { .. } | Error::StoreFull { .. } | Error::StoreTimeout { .. }),
            ) => {
                say(format_args!("line {number}: not accepted: {}", chain(&e)));
                let answering = matches!(e, Error::StoreFull { .. });
                return Some(End::Store { answering });
            }
            Err(e) => {
                say(format_args!("line {number}: not accepted: {}", chain(&e)));
                counts.bad += 1;
            }
        }
    }
}

/// How often reading, and waiting at the end of input, look for a stop signal.
const READ_POLL: Duration = Duration::from_millis(100);
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How often the end-of-input wait reads the account's status (held? the store failing?).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// At the end of input, a store failing this long without a break ends the wait: exit 1.
const STORE_GIVE_UP: Duration = Duration::from_secs(30);

/// End of input: waits until nothing is pending, unless what is pending is held, a stop
/// signal comes, or the store cannot be read (or keeps failing).
fn wait_until_idle(
    webhooks: &Webhooks,
    worker: &Worker,
    account: &AccountId,
    signals: &Signals,
) -> End {
    let mut status_read = Instant::now();
    let mut failing_since: Option<Instant> = None;
    // Since when the pending check has failed without a break: a restart of the database, a
    // failover, pass; only a store failing for STORE_GIVE_UP ends the wait.
    let mut unreadable_since: Option<Instant> = None;
    loop {
        if let Some(signal) = signals.received() {
            return End::Signal(signal);
        }
        let asked = Instant::now();
        match worker.wait_idle_blocking(WAIT_POLL) {
            Ok(true) => return End::Idle,
            Ok(false) => unreadable_since = None,
            Err(e) => {
                // A store that retries itself (PostgreSQL) has been failing since the call.
                let since = *unreadable_since.get_or_insert_with(|| {
                    say(format_args!(
                        "cannot read what is pending: {}; trying again for up to {} s",
                        chain(&e),
                        STORE_GIVE_UP.as_secs()
                    ));
                    asked
                });
                if since.elapsed() >= STORE_GIVE_UP {
                    say(format_args!(
                        "cannot wait for the deliveries: the outbox kept failing for {} s: {}; giving up",
                        STORE_GIVE_UP.as_secs(),
                        chain(&e)
                    ));
                    return End::Store { answering: false };
                }
                std::thread::sleep(WAIT_POLL);
                continue;
            }
        }
        if status_read.elapsed() < STATUS_EVERY {
            continue;
        }
        status_read = Instant::now();
        match webhooks.status_blocking(account, None) {
            Ok(status) if status.held => return End::Held,
            Ok(status) => match status.store_failing {
                Some(reason) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= STORE_GIVE_UP {
                        say(format_args!(
                            "the outbox kept failing for {} s: {reason}; giving up",
                            STORE_GIVE_UP.as_secs()
                        ));
                        return End::Store { answering: false };
                    }
                }
                None => failing_since = None,
            },
            // The next wait says why.
            Err(_) => {}
        }
    }
}

/// Lines accepted and not, for the summary.
#[derive(Default)]
struct Counts {
    accepted: u64,
    bad: u64,
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_HELD: u8 = 3;
const EXIT_SIGNAL: u8 = 4;

fn run(given: &Given, signals: &Signals) -> ExitCode {
    let fail = |message: String| {
        say(message);
        ExitCode::from(EXIT_USAGE)
    };
    let update = match preferences(given) {
        Ok(update) => update,
        Err(Usage(message)) => return fail(message),
    };
    let limits = number(given, "--max-line-bytes", 1 << 20, 1)
        .and_then(|max_line| Ok((max_line, number(given, "--shutdown-ms", 5000, 0)?)));
    let (max_line, shutdown) = match limits {
        Ok((max_line, ms)) => (
            usize::try_from(max_line).unwrap_or(usize::MAX),
            Duration::from_millis(ms),
        ),
        Err(Usage(message)) => return fail(message),
    };
    let per_endpoint = match number(
        given,
        "--per-endpoint",
        call_result_webhook::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY as u64,
        1,
    ) {
        Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Err(Usage(message)) => return fail(message),
    };
    if let Some(addr) = given.value("--metrics-addr")
        && let Err(message) = serve_metrics(addr)
    {
        return fail(message);
    }
    let portal_listener = match given.value("--portal-addr").map(portal::bind).transpose() {
        Ok(listener) => listener,
        Err(message) => return fail(message),
    };
    let (store, path) = match open_store(given) {
        Ok(opened) => opened,
        Err(message) => return fail(message),
    };
    let path = path.as_str();
    let policy = policy(given);
    let tally = Arc::new(Tally::default());
    let events = tally.clone();
    let webhooks = match Webhooks::builder()
        .store(store)
        .policy(policy)
        .per_endpoint_concurrency(per_endpoint)
        .on_event(move |event| report(event, &events))
        .build()
    {
        Ok(webhooks) => webhooks,
        Err(e) => return fail(format!("cannot load {path}: {}", chain(&e))),
    };

    // Settings > Preferences > WebHook and the campaign's "Enable WebHook", as an
    // administrator. Saved in the outbox file; on a restart the stored values are the start.
    let account = AccountId::from(ACCOUNT);
    let campaign = CampaignId::from(CAMPAIGN);
    let configured = webhooks
        .update_preferences_blocking(&administrator(), &account, update)
        .and_then(|_| {
            webhooks.set_campaign_webhook_blocking(
                &administrator(),
                &account,
                &CAMPAIGN.into(),
                true,
            )
        });
    if let Err(e) = configured {
        return fail(chain(&e));
    }
    match webhooks.status_blocking(&account, None) {
        Ok(status) if status.stats.pending > 0 => say(format_args!(
            "resuming {} pending deliveries from {path}",
            status.stats.pending
        )),
        Ok(_) => {}
        Err(e) => return fail(format!("cannot read {path}: {}", chain(&e))),
    }

    let lines = match read_stdin(max_line) {
        Ok(lines) => lines,
        Err(e) => return fail(format!("cannot start reading stdin: {}", chain(&e))),
    };

    // The worker: hyper on a small tokio runtime of its own.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start a tokio runtime: {}", chain(&e))),
    };
    if let Some(listener) = portal_listener
        && let Err(message) = portal::serve(listener, &webhooks, &account, &campaign, &runtime)
    {
        return fail(message);
    }
    // Built without a policy: it adopts the one given to the Webhooks builder.
    let dispatcher = HyperDispatcher::builder().build();
    let worker = match webhooks.start_tokio(dispatcher, runtime.handle()) {
        Ok(worker) => worker,
        Err(e) => return fail(chain(&e)),
    };

    let mut counts = Counts::default();
    let end = read_and_submit(
        &webhooks,
        &account,
        &campaign,
        &lines,
        max_line,
        signals,
        &mut counts,
    )
    .unwrap_or_else(|| wait_until_idle(&webhooks, &worker, &account, signals));

    // Attempts in flight finish within the deadline; the rest are released, still pending.
    let stopped = worker.shutdown_blocking(shutdown);
    if let Err(e) = &stopped {
        say(format_args!("stopping the worker: {}", chain(e)));
    }
    // Nothing of the worker's runs any more; a DNS lookup still blocked on the runtime's
    // threads must not delay the exit. The stdin thread, maybe blocked reading, ends with the
    // process.
    runtime.shutdown_background();

    if signals.file_size.load(Ordering::SeqCst) {
        say("the file size limit (ulimit -f) was reached: the outbox could not grow");
    }
    let pending = if matches!(end, End::Store { answering: false }) {
        "unknown (the outbox failed)".to_owned()
    } else {
        match webhooks.status_blocking(&account, None) {
            Ok(status) => status.stats.pending.to_string(),
            Err(e) => format!("unknown (the outbox cannot be read: {})", chain(&e)),
        }
    };
    let (how, code) = match &end {
        End::Idle => ("end of input".to_owned(), ExitCode::SUCCESS),
        End::Held => ("end of input".to_owned(), ExitCode::from(EXIT_HELD)),
        End::Signal(signal) => (
            format!("stopped by {}", signal_name(*signal)),
            ExitCode::from(EXIT_SIGNAL),
        ),
        End::Store { .. } => (
            "stopped: the outbox failed".to_owned(),
            ExitCode::from(EXIT_FAILED),
        ),
        End::Stdout(e) => (
            format!("stopped: stdout: {}", chain(e)),
            ExitCode::from(EXIT_FAILED),
        ),
    };
    let mut summary = format!(
        "{how}: {} accepted, {} not accepted, {} delivered and {} failed for good in this run, {pending} pending",
        counts.accepted,
        counts.bad,
        tally.delivered.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    if let Ok(ShutdownReport {
        released,
        unrecorded,
        ..
    }) = stopped
    {
        if released > 0 || matches!(end, End::Signal(_)) {
            summary.push_str(&format!(
                ", {released} attempt(s) in flight released (sent again by the next start)"
            ));
        }
        if unrecorded > 0 {
            summary.push_str(&format!(
                ", {unrecorded} outcome(s) not recorded (sent again by the next start)"
            ));
        }
    }
    say(summary);
    if let End::Held = end {
        say(format_args!(
            "{pending} deliveries are held in {path} until the endpoint is resumed"
        ));
    }
    code
}

fn main() -> ExitCode {
    match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(given)) => {
            keep_secrets(&given);
            match Signals::install() {
                Ok(signals) => run(&given, &signals),
                Err(e) => {
                    say(format_args!("cannot handle signals: {}", chain(&e)));
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Err(Usage(message)) => {
            eprintln!("dialer: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Installs a Prometheus recorder for the crate's metrics and serves them, as Prometheus text,
/// on `addr` from a thread of its own: a few lines of std, one request per connection. The
/// attempt duration gets buckets, as in the README: a histogram, which Prometheus can aggregate
/// over a fleet's processes (without buckets the exporter renders a summary, which it cannot).
#[cfg(feature = "metrics")]
fn serve_metrics(addr: &str) -> Result<(), String> {
    use call_result_webhook::delivery::metrics::ATTEMPT_DURATION_SECONDS;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use std::io::Read;
    let buckets = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(ATTEMPT_DURATION_SECONDS.into()), &buckets)
        .map_err(|e| format!("--metrics-addr: cannot set the attempt duration's buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("--metrics-addr: cannot install the metrics recorder: {e}"))?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("--metrics-addr {addr}: cannot listen: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    say(format!("metrics on http://{local}/metrics"));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                // The request itself does not matter: read its head (capped at 8 KiB), answer.
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = handle.render();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        })
        .map_err(|e| format!("--metrics-addr: cannot start its thread: {e}"))?;
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn serve_metrics(_addr: &str) -> Result<(), String> {
    Err("--metrics-addr needs the `metrics` feature: cargo run --features metrics ...".into())
}

/// `--portal-addr`: the administrator's portal for the one account, under `/webhooks`, behind
/// a stand-in for a dialer's own login: two single-use sign-in links, printed once on stderr,
/// each opening a session held in memory (a cookie `HttpOnly; SameSite=Strict`).
///
/// Only SHA-256 digests of the links' tokens and of the session ids are kept, compared in
/// constant time; neither a token nor a session id is printed or logged anywhere else.
#[cfg(feature = "portal")]
mod portal {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::extract::{Path, Request, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use base64::Engine as _;
    use call_result_webhook::portal::{self as webhook_portal, PortalOptions, PortalUser};
    use call_result_webhook::{AccountId, CampaignId, HyperDispatcher, Principal, Webhooks};
    use sha2::{Digest as _, Sha256};
    use subtle::ConstantTimeEq as _;

    use super::{chain, say};

    /// How long a printed link may be used (once).
    pub(super) const LINK_VALIDITY: Duration = Duration::from_secs(10 * 60);
    /// How long a session a link opened lasts: 8 hours, then its cookie opens nothing (the
    /// cookie's `Max-Age` says the same to the browser).
    pub(super) const SESSION_VALIDITY: Duration = Duration::from_secs(8 * 60 * 60);
    /// Where the portal is mounted, and the page a link opens: Settings > Preferences > WebHook.
    const MOUNT: &str = "/webhooks";
    const SETTINGS: &str = "/webhooks/settings";
    /// The session cookie's name.
    const COOKIE: &str = "dialer_portal_session";

    /// The portal's socket, bound before anything is read (a refusal is a usage error), and the
    /// address the links name.
    pub(super) struct Listener {
        listener: TcpListener,
        addr: SocketAddr,
    }

    pub(super) fn bind(addr: &str) -> Result<Listener, String> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("--portal-addr {addr}: cannot listen: {}", chain(&e)))?;
        let mut local = listener
            .local_addr()
            .and_then(|local| listener.set_nonblocking(true).map(|()| local))
            .map_err(|e| format!("--portal-addr {addr}: {}", chain(&e)))?;
        // A link to 0.0.0.0 or :: opens nothing in some browsers; loopback reaches the same
        // socket.
        match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => local.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => local.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        Ok(Listener {
            listener,
            addr: local,
        })
    }

    /// Serves the portal for `account` on `runtime` until the process ends, and prints the two
    /// links.
    pub(super) fn serve(
        listener: Listener,
        webhooks: &Webhooks,
        account: &AccountId,
        campaign: &CampaignId,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(), String> {
        let failed = |e: call_result_webhook::Error| format!("--portal-addr: {}", chain(&e));
        // "Send test" through a dispatcher of its own, which adopts the same URL policy.
        let options = PortalOptions::new()
            .map_err(failed)?
            .send_test(HyperDispatcher::builder().build());
        let portal = webhook_portal::router(webhooks.clone(), options).map_err(failed)?;
        let (logins, [administrator, viewer]) =
            Logins::new(account.clone(), campaign.clone(), Instant::now())?;
        let logins: Shared = Arc::new(Mutex::new(logins));
        let app = Router::new()
            .route("/login/{token}", get(login))
            .with_state(logins.clone())
            .nest(
                MOUNT,
                portal.layer(middleware::from_fn_with_state(logins, authenticate)),
            );
        let Listener { listener, addr } = listener;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("--portal-addr: {}", chain(&e)))?
        };
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                say(format_args!("the portal stopped: {}", chain(&e)));
            }
        });
        // The one place the tokens are ever shown: not through `say`, whose prefix these two
        // lines do not have.
        eprintln!("portal: administrator link http://{addr}/login/{administrator}");
        eprintln!("portal: viewer link http://{addr}/login/{viewer}");
        Ok(())
    }

    type Shared = Arc<Mutex<Logins>>;

    fn lock(logins: &Shared) -> MutexGuard<'_, Logins> {
        logins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 32 random bytes, base64url: a link's token or a session's id.
    fn random_token() -> Result<String, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| format!("--portal-addr: the system's random source failed: {e}"))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    fn digest(secret: &str) -> [u8; 32] {
        Sha256::digest(secret.as_bytes()).into()
    }

    /// Whether a link issued at `issued` has expired at `now`.
    fn expired(issued: Instant, now: Instant) -> bool {
        now.saturating_duration_since(issued) >= LINK_VALIDITY
    }

    /// One printed link: its token's digest, who it signs in, when it was made, whether it was
    /// used (or tried once expired).
    struct Link {
        token: [u8; 32],
        principal: Principal,
        issued: Instant,
        used: bool,
    }

    /// One session a link opened: its id's digest, who is signed in.
    struct Session {
        id: [u8; 32],
        principal: Principal,
        opened: Instant,
    }

    /// The links and the sessions they opened, for the one account.
    struct Logins {
        account: AccountId,
        campaign: CampaignId,
        links: Vec<Link>,
        sessions: Vec<Session>,
    }

    /// Why a link opens no session.
    #[derive(Debug, PartialEq, Eq)]
    enum Refused {
        Unknown,
        Used,
        Expired,
    }

    impl Refused {
        fn message(&self) -> &'static str {
            match self {
                Refused::Unknown => "This sign-in link is not valid.",
                Refused::Used => {
                    "This sign-in link was already used: each link opens one session. \
                     Start the dialer again for new links."
                }
                Refused::Expired => {
                    "This sign-in link has expired: links are valid for 10 minutes. \
                     Start the dialer again for new links."
                }
            }
        }
    }

    impl Logins {
        /// The two links, issued at `issued`: the administrator's, then the viewer's tokens.
        fn new(
            account: AccountId,
            campaign: CampaignId,
            issued: Instant,
        ) -> Result<(Logins, [String; 2]), String> {
            let administrator = random_token()?;
            let viewer = random_token()?;
            let link = |token: &str, principal| Link {
                token: digest(token),
                principal,
                issued,
                used: false,
            };
            let links = vec![
                link(
                    &administrator,
                    Principal::administrator("dialer administrator"),
                ),
                link(&viewer, Principal::user("dialer viewer")),
            ];
            let logins = Logins {
                account,
                campaign,
                links,
                sessions: Vec::new(),
            };
            Ok((logins, [administrator, viewer]))
        }

        /// Uses the link of `token` at `now`: who it signs in, once, within LINK_VALIDITY.
        fn redeem(&mut self, token: &str, now: Instant) -> Result<Principal, Refused> {
            let token = digest(token);
            let link = self
                .links
                .iter_mut()
                .find(|link| bool::from(link.token.ct_eq(&token)))
                .ok_or(Refused::Unknown)?;
            if link.used {
                return Err(Refused::Used);
            }
            link.used = true;
            if expired(link.issued, now) {
                return Err(Refused::Expired);
            }
            Ok(link.principal.clone())
        }

        /// A new session for `principal`, opened at `now`: its id, for the cookie.
        fn open(&mut self, principal: Principal, now: Instant) -> Result<String, String> {
            let id = random_token()?;
            self.sessions.push(Session {
                id: digest(&id),
                principal,
                opened: now,
            });
            Ok(id)
        }

        /// The signed-in user of the session `id` at `now`, for the portal; none once the
        /// session is [`SESSION_VALIDITY`] old (sessions that old are forgotten).
        fn user(&mut self, id: &str, now: Instant) -> Option<PortalUser> {
            self.sessions
                .retain(|s| now.saturating_duration_since(s.opened) < SESSION_VALIDITY);
            let id = digest(id);
            let session = self
                .sessions
                .iter()
                .find(|session| bool::from(session.id.ct_eq(&id)))?;
            // The portal derives its CSRF tokens from this: the digest, not the id itself.
            let session_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
            Some(
                PortalUser::new(session.principal.clone(), self.account.clone(), session_key)
                    .campaigns([self.campaign.clone()]),
            )
        }
    }

    /// A plain-text answer that no cache keeps.
    fn plain(status: StatusCode, message: &'static str) -> Response {
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            message,
        )
            .into_response()
    }

    /// `GET /login/<token>`: a link opens a session and Settings > Preferences > WebHook.
    async fn login(State(logins): State<Shared>, Path(token): Path<String>) -> Response {
        let opened = {
            let mut logins = lock(&logins);
            match logins.redeem(&token, Instant::now()) {
                Ok(principal) => logins.open(principal, Instant::now()).map_err(|_| None),
                Err(refused) => Err(Some(refused)),
            }
        };
        match opened {
            Ok(id) => (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                            SESSION_VALIDITY.as_secs()
                        ),
                    ),
                    (header::LOCATION, SETTINGS.to_owned()),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                    (header::REFERRER_POLICY, "no-referrer".to_owned()),
                ],
            )
                .into_response(),
            Err(Some(refused)) => plain(StatusCode::FORBIDDEN, refused.message()),
            Err(None) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No session could be opened (the system's random source failed).",
            ),
        }
    }

    /// The session id in the request's cookie.
    fn session_cookie(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(COOKIE)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_owned)
            })
    }

    /// In front of the portal: the session's principal, for the one account, as its
    /// `PortalUser`. Without a session nothing is inserted, and the portal answers 401.
    async fn authenticate(
        State(logins): State<Shared>,
        mut request: Request,
        next: Next,
    ) -> Response {
        let user = session_cookie(request.headers())
            .and_then(|id| lock(&logins).user(&id, Instant::now()));
        if let Some(user) = user {
            request.extensions_mut().insert(user);
        }
        next.run(request).await
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn logins(issued: Instant) -> (Logins, [String; 2]) {
            Logins::new("dialer".into(), "calls".into(), issued).expect("random tokens")
        }

        #[test]
        fn a_link_is_valid_for_ten_minutes() {
            assert_eq!(LINK_VALIDITY, Duration::from_secs(600));
            let issued = Instant::now();
            assert!(!expired(issued, issued));
            assert!(!expired(
                issued,
                issued + LINK_VALIDITY - Duration::from_millis(1)
            ));
            assert!(expired(issued, issued + LINK_VALIDITY));
            assert!(expired(issued, issued + Duration::from_secs(3600)));

            let (mut in_time, [administrator, _]) = logins(issued);
            let late = issued + LINK_VALIDITY - Duration::from_secs(1);
            assert!(in_time.redeem(&administrator, late).is_ok());

            let (mut too_late, [administrator, viewer]) = logins(issued);
            let after = issued + LINK_VALIDITY;
            assert_eq!(
                too_late.redeem(&administrator, after),
                Err(Refused::Expired)
            );
            assert_eq!(too_late.redeem(&viewer, after), Err(Refused::Expired));
            // Tried once expired, it stays refused.
            assert_eq!(too_late.redeem(&viewer, issued), Err(Refused::Used));
        }

        #[test]
        fn a_link_opens_one_session_for_its_principal() {
            let issued = Instant::now();
            let (mut logins, [administrator, viewer]) = logins(issued);
            assert_ne!(administrator, viewer);
            assert_eq!(administrator.len(), 43, "32 bytes, base64url");
            let admin = logins.redeem(&administrator, issued).unwrap();
            assert!(admin.is_administrator());
            assert_eq!(logins.redeem(&administrator, issued), Err(Refused::Used));
            assert!(!logins.redeem(&viewer, issued).unwrap().is_administrator());
            assert_eq!(logins.redeem("not-a-token", issued), Err(Refused::Unknown));

            let id = logins.open(admin, issued).unwrap();
            let user = logins.user(&id, issued).expect("the session's user");
            assert!(user.principal().is_administrator());
            assert_eq!(user.account().as_str(), "dialer");
            assert!(logins.user(&administrator, issued).is_none());
            assert!(logins.user("", issued).is_none());
            assert!(!format!("{:?}", user).contains(&id));

            // A session lasts SESSION_VALIDITY, then opens nothing.
            let late = issued + SESSION_VALIDITY - Duration::from_secs(1);
            assert!(logins.user(&id, late).is_some());
            assert!(logins.user(&id, issued + SESSION_VALIDITY).is_none());
            assert!(
                logins.user(&id, late).is_none(),
                "an expired session is forgotten"
            );
        }

        #[test]
        fn the_cookie_is_read_by_its_name() {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                format!("other=1; {COOKIE}x=2; {COOKIE}=abc")
                    .parse()
                    .unwrap(),
            );
            assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        }
    }
}

/// Without the `portal` feature, `--portal-addr` is a usage error.
#[cfg(not(feature = "portal"))]
mod portal {
    use call_result_webhook::{AccountId, CampaignId, Webhooks};

    pub(super) enum Listener {}

    pub(super) fn bind(_addr: &str) -> Result<Listener, String> {
        Err("--portal-addr needs the `portal` feature: cargo run --features portal ...".into())
    }

    pub(super) fn serve(
        listener: Listener,
        _webhooks: &Webhooks,
        _account: &AccountId,
        _campaign: &CampaignId,
        _runtime: &tokio::runtime::Runtime,
    ) -> Result<(), String> {
        match listener {}
    }
}
