//! A minimal dialer process: call results in on stdin, delivered to one account's webhook
//! through a durable outbox, in the background: a SQLite file for one process, or a PostgreSQL
//! database shared by a fleet of them (feature `postgres`).
//!
//! ```sh
//! cargo run --release --example dialer -- --store outbox.sqlite --url https://crm.example/hook \
//!     --username dialer --password 's3cret' [--retry-delays-ms 50,100,200] < results.jsonl
//! cargo run --release --features postgres --example dialer -- \
//!     --database-url postgres://dialer@db/calls --url https://crm.example/hook < results.jsonl
//! ```
//!
//! Each line of stdin is one call result: a JSON object with the ten keys of the product page,
//! in the page's formats (as `send --result` reads them). Once `submit` has returned, the
//! result is durable in the outbox and the dialer prints `accepted <webhook-id> <Reference>`
//! on stdout. A worker (hyper on tokio) delivers in the background. At the end of the input
//! the dialer exits as soon as nothing is pending. Killed at any moment and started again on
//! the same `--store`, it sends what was still pending. This is how crash safety is tested
//! from outside (`tests/crash.rs`).
//!
//! Run `dialer --help` for every option. The password is never printed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use call_result_webhook::{
    AccountId, CallResult, CampaignId, Error, Event, HyperDispatcher, PreferencesUpdate, Principal,
    SqliteStore, Submitted, UrlPolicy, Webhooks, auth::AuthScheme, delivery::RetrySchedule,
    encoding::Encoding, store::Store,
};

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
                               printed); give this or --store
    --database-schema NAME     the schema of the PostgreSQL outbox (default
                               call_result_webhook); every process of a fleet gives the same
    --timeout-ms N             the account's attempt time limit, 1000 to 30000 ms
                               (default 15000)
    --url URL                  the account's webhook URL (http or https)
    --username U               the account's webhook user name
    --password P               the account's webhook password (never printed; note that
                               other local users can see command lines)
    --retry-delays-ms LIST     delays before each retry, in ms, comma-separated
                               (default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h)
    --time-zone ZONE           the account's IANA time zone (default UTC)
    --auth basic|slash         Authorization: RFC 7617 Basic (default), or
                               base64(username/password) with no scheme word
    --encoding form|json       body encoding (default form)
    --allow-http               accept an http:// URL (https is required otherwise)
    --allow-private            accept loopback and private addresses
    -h, --help                 print this help

The account and its campaign are configured as an administrator would, in the outbox file:
on a restart the stored preferences are kept, and the options given replace theirs.

OUTPUT:
    stdout  one `accepted` line per call result stored, flushed at once
    stderr  lines not accepted, deliveries that failed for good, a summary

EXIT STATUS:
    0  end of input, and nothing is pending
    1  the outbox failed, or stdout could not be written: stopped reading
    2  bad arguments, URL, credentials or outbox file: nothing was read
    3  end of input, but deliveries are held (the endpoint is paused): they stay in the
       outbox until an administrator resumes it
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
    Opt { name: "--store",           value: true },
    Opt { name: "--database-url",    value: true },
    Opt { name: "--database-schema", value: true },
    Opt { name: "--timeout-ms",      value: true },
    Opt { name: "--url",             value: true },
    Opt { name: "--username",        value: true },
    Opt { name: "--password",        value: true },
    Opt { name: "--retry-delays-ms", value: true },
    Opt { name: "--time-zone",       value: true },
    Opt { name: "--auth",            value: true },
    Opt { name: "--encoding",        value: true },
    Opt { name: "--allow-http",      value: false },
    Opt { name: "--allow-private",   value: false },
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

/// The outbox the options name, and how to name it in messages (a database URL without its
/// password).
fn open_store(given: &Given) -> Result<(Arc<dyn Store>, String), String> {
    if let Some(path) = given.value("--store") {
        return match SqliteStore::open(path) {
            Ok(store) => Ok((Arc::new(store), path.to_owned())),
            Err(e) => Err(format!("cannot open the outbox {path}: {e}")),
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
    match builder.open() {
        Ok(store) => Ok((Arc::new(store), shown)),
        Err(e) => Err(format!("cannot open {shown}: {e}")),
    }
}

#[cfg(not(feature = "postgres"))]
fn open_database(_url: &str, _schema: Option<&str>) -> Result<(Arc<dyn Store>, String), String> {
    Err("--database-url needs the `postgres` feature: cargo run --features postgres ...".into())
}

/// What the worker reported, for the summary.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Tells the operator what matters, on stderr: failures for good and pauses. Attempts that
/// will be retried are left to `tracing`, for a dialer that subscribes.
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
            eprintln!(
                "dialer: {delivery} failed for good ({}) after {attempts} attempt(s): {reason}",
                kind.as_str()
            );
        }
        Event::EndpointPaused { reason, .. } => {
            eprintln!(
                "dialer: the endpoint is paused: {}; deliveries wait for an administrator",
                reason.describe()
            );
        }
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

/// Why reading stopped early.
enum Stop {
    /// The outbox refused a call result for a reason that is not the line's (full, broken).
    Store,
    /// Stdout is gone: nobody can be told what was accepted.
    Stdout(std::io::Error),
}

/// Reads stdin to its end, submitting each line. Returns how many were accepted and how many
/// lines were bad.
fn read_and_submit(
    webhooks: &Webhooks,
    account: &AccountId,
    campaign: &CampaignId,
) -> Result<(u64, u64), Stop> {
    let time_zone = webhooks
        .account(account)
        .expect("the account was just configured")
        .preferences()
        .time_zone()
        .clone();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let (mut accepted, mut bad) = (0, 0);
    for (n, line) in stdin.split(b'\n').enumerate() {
        let number = n + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("dialer: stdin: {e}; treating it as the end of input");
                break;
            }
        };
        let Ok(text) = std::str::from_utf8(&line) else {
            eprintln!("dialer: line {number}: not accepted: not valid UTF-8");
            bad += 1;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let call = match CallResult::from_page_json(text, &time_zone) {
            Ok(call) => call,
            Err(e) => {
                eprintln!("dialer: line {number}: not accepted: {e}");
                bad += 1;
                continue;
            }
        };
        let reference = printable(call.reference());
        match webhooks.submit_blocking(account, campaign, call) {
            Ok(Submitted::Accepted(id)) => {
                accepted += 1;
                writeln!(stdout, "accepted {id} {reference}")
                    .and_then(|()| stdout.flush())
                    .map_err(Stop::Stdout)?;
            }
            Ok(Submitted::Skipped(reason)) => {
                // Not expected: this process switched both on. Said, never silent.
                eprintln!("dialer: line {number}: not sent: {}", reason.describe());
                bad += 1;
            }
            Err(e @ (Error::Store { .. } | Error::StoreFull { .. })) => {
                eprintln!("dialer: line {number}: not accepted: {e}");
                return Err(Stop::Store);
            }
            Err(e) => {
                eprintln!("dialer: line {number}: not accepted: {e}");
                bad += 1;
            }
        }
    }
    Ok((accepted, bad))
}

fn run(given: &Given) -> ExitCode {
    let fail = |message: String| {
        eprintln!("dialer: {message}");
        ExitCode::from(2)
    };
    let update = match preferences(given) {
        Ok(update) => update,
        Err(Usage(message)) => return fail(message),
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
        .on_event(move |event| report(event, &events))
        .build()
    {
        Ok(webhooks) => webhooks,
        Err(e) => return fail(format!("cannot load the outbox {path}: {e}")),
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
        return fail(e.to_string());
    }
    match webhooks.status_blocking(&account, None) {
        Ok(status) if status.stats.pending > 0 => eprintln!(
            "dialer: resuming {} pending deliveries from {path}",
            status.stats.pending
        ),
        Ok(_) => {}
        Err(e) => return fail(format!("cannot read the outbox {path}: {e}")),
    }

    // The worker: hyper on a small tokio runtime of its own.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start a tokio runtime: {e}")),
    };
    // Built without a policy: it adopts the one given to the Webhooks builder.
    let dispatcher = HyperDispatcher::builder().build();
    let worker = match webhooks.start_tokio(dispatcher, runtime.handle()) {
        Ok(worker) => worker,
        Err(e) => return fail(e.to_string()),
    };

    let (accepted, bad) = match read_and_submit(&webhooks, &account, &campaign) {
        Ok(counts) => counts,
        Err(stop) => {
            match stop {
                Stop::Store => eprintln!("dialer: stopped reading: the outbox failed"),
                Stop::Stdout(e) => eprintln!("dialer: stopped reading: stdout: {e}"),
            }
            stop_worker(&worker);
            return ExitCode::from(1);
        }
    };

    // End of input: wait until nothing is pending, unless what is pending is held.
    let mut held = false;
    loop {
        match worker.wait_idle_blocking(Duration::from_secs(1)) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                eprintln!("dialer: cannot read the outbox: {e}");
                stop_worker(&worker);
                return ExitCode::from(1);
            }
        }
        if webhooks
            .status_blocking(&account, None)
            .is_ok_and(|s| s.held)
        {
            held = true;
            break;
        }
    }
    stop_worker(&worker);
    drop(runtime);

    let status = webhooks.status_blocking(&account, None).ok();
    let pending = status.as_ref().map_or(0, |s| s.stats.pending);
    eprintln!(
        "dialer: end of input: {accepted} accepted, {bad} not accepted, {} delivered and {} failed for good in this run, {pending} pending",
        tally.delivered.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    if held {
        eprintln!("dialer: {pending} deliveries are held in {path} until the endpoint is resumed");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(given)) => run(&given),
        Err(Usage(message)) => {
            eprintln!("dialer: {message}");
            ExitCode::from(2)
        }
    }
}

/// Stops the worker within 5 s; whatever is still in flight then stays pending in the store.
fn stop_worker(worker: &call_result_webhook::Worker) {
    if let Err(e) = worker.shutdown_blocking(Duration::from_secs(5)) {
        eprintln!("dialer: stopping the worker: {e}");
    }
}
