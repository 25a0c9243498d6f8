//! Sends one call result to a webhook URL, exactly as the crate sends it, and says what came back.
//!
//! ```sh
//! cargo run --example send --features ureq -- --url https://crm.example/hook \
//!     --username dialer --password 's3cret' [--auth none|basic|slash|bearer|api-key] \
//!     [--token T] [--key-header X-Api-Key] [--header 'X-Tenant: acme'] \
//!     [--secret-header 'X-Shared: k'] [--key-name PhoneCalled=phone] [--method get|post] \
//!     [--encoding form|json] [--result call.json] [--time-zone Australia/Brisbane] \
//!     [--timeout-ms 5000] [--json] [--signing-secret whsec_... [--signing-secret whsec_...]]
//! ```
//!
//! Run `send --help` for every option. Exit status: 0 when the receiver answered 2xx, 1 for any
//! other outcome (another status, or no response at all), 2 when the arguments, the URL, the
//! credentials, the headers or the result file are not acceptable (then nothing is sent). The
//! password, the token, secret header values and the signing secrets are never printed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use call_result_webhook::{
    BlockingDispatcher, CallResult, DeliveryId, PreferencesUpdate, UreqDispatcher, UrlPolicy,
    auth::AuthScheme,
    dispatch::{AttemptTimeout, Proxy},
    encoding::Encoding,
    payload::PAGE_SAMPLE_JSON,
    preferences::Preferences,
    request::{EncodedBody, Method, build_request},
};

const USAGE: &str = "\
send: POST one call result to a webhook URL, as the Call Result Webhook sends it

USAGE:
    send --url URL [OPTIONS]

OPTIONS:
    --url URL              the receiver's URL (http or https)
    --username U           the account's webhook user name
    --password P           the account's webhook password (never printed; note that
                           other local users can see command lines)
    --auth KIND            how to authenticate: basic (default, RFC 7617 Basic from
                           --username/--password), slash (base64(username/password)
                           with no scheme word), none (no Authorization header),
                           bearer (Authorization: Bearer --token), or api-key
                           (--token in the header named by --key-header)
    --token T              the bearer token or API key (never printed)
    --key-header NAME      the header that carries the API key, e.g. X-Api-Key
    --header 'NAME: VALUE' add a header to the request (repeatable, up to 16 in all);
                           the crate's own headers (Authorization, Content-Type,
                           Host, User-Agent, webhook-*...) cannot be set
    --secret-header 'NAME: VALUE'
                           as --header, for a value that is secret (never printed)
    --key-name KEY=NAME    send the payload key KEY under NAME, e.g.
                           PhoneCalled=phone (repeatable)
    --method post|get      POST the keys in the body (default), or GET with the keys
                           appended to the URL's query, no body
    --proxy URL            send through this HTTP proxy (http://[user:pass@]host:port), in a
                           CONNECT tunnel to the address the policy admitted; `env` reads
                           HTTPS_PROXY/HTTP_PROXY/NO_PROXY (the credentials are never printed)
    --encoding form|json   body encoding of a POST (default form)
    --result FILE.json     the call result: one JSON object with the ten keys in the
                           page's formats (LogDateTime YYYY-MM-DDTHH:MM:SS in UTC,
                           CallStart/CallEnd YYYY-MM-DD HH:MM:SS in --time-zone);
                           without it, the page's sample is sent
    --time-zone ZONE       the account's IANA time zone (default UTC)
    --timeout-ms N         whole-attempt time limit, 1 to 30000 ms (default 15000)
    --allow-http           accept an http:// URL (https is required otherwise)
    --allow-private        accept loopback and private addresses (10/8, 172.16/12,
                           192.168/16, fc00::/7), for receivers on your own network
    --signing-secret S     sign the request (Standard Webhooks: webhook-timestamp and
                           webhook-signature) with the whsec_ secret S; give it twice
                           during a rotation and both signatures are sent (never
                           printed)
    --json                 print one JSON object instead of text
    -h, --help             print this help

EXIT STATUS:
    0  the receiver answered 2xx
    1  any other outcome: another status, or no response (the error says why)
    2  bad arguments, URL, credentials, headers or result file: nothing was sent
";

/// One command-line option: its name, whether it takes a value (`--name VALUE` or
/// `--name=VALUE`), and how many times it may be given. Add a line to `OPTIONS` (and to
/// `USAGE`) to add an option, then read it in `plan`. No message ever repeats an option's
/// value: some are secrets.
struct Opt {
    name: &'static str,
    value: bool,
    max: usize,
}

#[rustfmt::skip]
const OPTIONS: &[Opt] = &[
    Opt { name: "--url",            value: true,  max: 1 },
    Opt { name: "--username",       value: true,  max: 1 },
    Opt { name: "--password",       value: true,  max: 1 },
    Opt { name: "--auth",           value: true,  max: 1 },
    Opt { name: "--token",          value: true,  max: 1 },
    Opt { name: "--key-header",     value: true,  max: 1 },
    Opt { name: "--header",         value: true,  max: 16 },
    Opt { name: "--secret-header",  value: true,  max: 16 },
    Opt { name: "--key-name",       value: true,  max: 10 },
    Opt { name: "--method",         value: true,  max: 1 },
    Opt { name: "--proxy",          value: true,  max: 1 },
    Opt { name: "--encoding",       value: true,  max: 1 },
    Opt { name: "--result",         value: true,  max: 1 },
    Opt { name: "--time-zone",      value: true,  max: 1 },
    Opt { name: "--timeout-ms",     value: true,  max: 1 },
    Opt { name: "--allow-http",     value: false, max: 1 },
    Opt { name: "--allow-private",  value: false, max: 1 },
    Opt { name: "--signing-secret", value: true,  max: 2 },
    Opt { name: "--json",           value: false, max: 1 },
];

/// The options given: name to values in order (`""` for a flag).
#[derive(Default)]
struct Given(BTreeMap<&'static str, Vec<String>>);

impl Given {
    fn value(&self, name: &str) -> Option<&str> {
        self.values(name).first().map(String::as_str)
    }

    fn values(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

enum Parsed {
    Help,
    Run(Given),
}

/// A problem with the arguments: said on stderr, exit status 2, nothing sent.
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
        let values = given.0.entry(opt.name).or_default();
        if values.len() == opt.max {
            return Err(Usage(match opt.max {
                1 => format!("{name} given more than once"),
                n => format!("{name} given more than {n} times"),
            }));
        }
        values.push(value);
    }
    if given.value("--url").is_none() {
        return Err(Usage("--url is required (see --help)".into()));
    }
    Ok(Parsed::Run(given))
}

/// Everything checked, ready to send.
struct Plan {
    dispatcher: UreqDispatcher,
    request: http::Request<bytes::Bytes>,
    id: DeliveryId,
    json: bool,
}

fn plan(given: &Given) -> Result<Plan, Usage> {
    let mut policy = UrlPolicy::new();
    if given.flag("--allow-http") {
        policy = policy.allow_http(true);
    }
    if given.flag("--allow-private") {
        policy = policy.allow_private();
    }

    // The URL passes the account's own checks and the policy before anything else happens.
    let url = given.value("--url").unwrap_or_default();
    let mut update = PreferencesUpdate::new().enabled(true).url(url);
    let username = given.value("--username");
    let password = given.value("--password");
    if username.is_some() || password.is_some() {
        update = update.credentials(username.unwrap_or(""), password.unwrap_or(""));
    }
    update = authentication(given, update)?;
    update = headers_and_names(given, update)?;
    if let Some(method) = given.value("--method") {
        let method: Method = method
            .parse()
            .map_err(|_| Usage("--method must be `post` or `get`".into()))?;
        update = update.method(method);
    }
    if let Some(encoding) = given.value("--encoding") {
        let encoding: Encoding = encoding
            .parse()
            .map_err(|_| Usage("--encoding must be `form` or `json`".into()))?;
        update = update.encoding(encoding);
    }
    if let Some(zone) = given.value("--time-zone") {
        update = update.time_zone(zone);
    }
    update = signing(given, update)?;
    let timeout = match given.value("--timeout-ms") {
        None => None,
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms @ 1..=30_000) => Some(Duration::from_millis(ms)),
            _ => {
                return Err(Usage(
                    "--timeout-ms must be a whole number from 1 to 30000".into(),
                ));
            }
        },
    };

    // The preferences an administrator would set in Settings > Preferences > WebHook, as a
    // value for this one send (nothing is saved).
    let preferences = &Preferences::from_update(update).map_err(|e| Usage(e.to_string()))?;
    let webhook_url = preferences.url().expect("the URL was just set");
    policy
        .check_url(webhook_url.as_url())
        .map_err(|e| Usage(format!("{e}{}", policy_hint(given))))?;

    let call = match given.value("--result") {
        None => CallResult::from_page_json(PAGE_SAMPLE_JSON, preferences.time_zone())
            .expect("the sample is a valid call result"),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("cannot read {path}: {e}")))?;
            CallResult::from_page_json(&text, preferences.time_zone())
                .map_err(|e| Usage(format!("{path}: {e}")))?
        }
    };

    let body = EncodedBody::encode(&call, preferences).map_err(|e| Usage(e.to_string()))?;
    let id = DeliveryId::generate();
    let mut request = build_request(preferences, &id, &body).map_err(|e| Usage(e.to_string()))?;
    if let Some(timeout) = timeout {
        request.extensions_mut().insert(AttemptTimeout(timeout));
    }
    let mut builder = UreqDispatcher::builder().policy(policy);
    match given.value("--proxy") {
        None => {}
        Some("env") => match Proxy::from_env() {
            Ok(Some(proxy)) => builder = builder.proxy(proxy),
            Ok(None) => {
                return Err(Usage(
                    "--proxy env: no HTTPS_PROXY or HTTP_PROXY is set".into(),
                ));
            }
            // The error names the setting, never its value (it may hold credentials).
            Err(e) => return Err(Usage(format!("--proxy env: {e}"))),
        },
        Some(url) => match Proxy::http(url) {
            Ok(proxy) => builder = builder.proxy(proxy),
            Err(e) => return Err(Usage(format!("--proxy: {e}"))),
        },
    }
    let dispatcher = builder.build();
    Ok(Plan {
        dispatcher,
        request,
        id,
        json: given.flag("--json"),
    })
}

/// Adds `--auth` with what it needs: `--token` for bearer and api-key, `--key-header` for
/// api-key. Neither is accepted without the kind that uses it.
fn authentication(given: &Given, update: PreferencesUpdate) -> Result<PreferencesUpdate, Usage> {
    let scheme = match given.value("--auth") {
        None => None,
        Some(auth) => Some(auth.parse::<AuthScheme>().map_err(|_| {
            Usage("--auth must be `none`, `basic`, `slash`, `bearer` or `api-key`".into())
        })?),
    };
    let token = given.value("--token");
    let key_header = given.value("--key-header");
    let needs_token = matches!(scheme, Some(AuthScheme::Bearer | AuthScheme::ApiKey));
    if token.is_some() && !needs_token {
        return Err(Usage(
            "--token is for --auth bearer or --auth api-key".into(),
        ));
    }
    if key_header.is_some() && scheme != Some(AuthScheme::ApiKey) {
        return Err(Usage("--key-header is for --auth api-key".into()));
    }
    Ok(match scheme {
        None => update,
        Some(AuthScheme::Bearer) => {
            let token = token.ok_or_else(|| Usage("--auth bearer needs --token".into()))?;
            update.bearer_token(token)
        }
        Some(AuthScheme::ApiKey) => {
            let (Some(header), Some(key)) = (key_header, token) else {
                return Err(Usage(
                    "--auth api-key needs --key-header and --token".into(),
                ));
            };
            update.api_key(header, key)
        }
        Some(scheme) => update.auth_scheme(scheme),
    })
}

/// Adds the `--header`s, `--secret-header`s and `--key-name`s. A malformed one is reported by
/// its option and position, never by its text: a secret header's value is in it.
fn headers_and_names(
    given: &Given,
    mut update: PreferencesUpdate,
) -> Result<PreferencesUpdate, Usage> {
    for option in ["--header", "--secret-header"] {
        for (i, text) in given.values(option).iter().enumerate() {
            let Some((name, value)) = text.split_once(':') else {
                return Err(Usage(format!(
                    "{option} number {} must be `NAME: VALUE`",
                    i + 1
                )));
            };
            // Optional whitespace after the colon, as in an HTTP header line.
            let value = value.trim_start_matches([' ', '\t']);
            update = if option == "--header" {
                update.header(name, value)
            } else {
                update.secret_header(name, value)
            };
        }
    }
    for (i, text) in given.values("--key-name").iter().enumerate() {
        let Some((key, name)) = text.split_once('=') else {
            return Err(Usage(format!(
                "--key-name number {} must be `KEY=NAME`, e.g. PhoneCalled=phone",
                i + 1
            )));
        };
        update = update.key_name(key, name);
    }
    Ok(update)
}

/// Adds the `--signing-secret`s: the first signs, a second is kept beside it as during a
/// rotation, so both signatures are sent.
fn signing(given: &Given, mut update: PreferencesUpdate) -> Result<PreferencesUpdate, Usage> {
    use call_result_webhook::signing::SigningSecret;
    // The parse error never repeats the secret.
    let parse = |text: &String| {
        text.parse::<SigningSecret>()
            .map_err(|e| Usage(format!("--signing-secret: {e}")))
    };
    let secrets = given
        .values("--signing-secret")
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, secret) in secrets.into_iter().rev().enumerate() {
        update = if i == 0 {
            update.signing_secret(secret)
        } else {
            update.rotate_signing_secret(secret)
        };
    }
    Ok(update)
}

/// What to try when the policy refused the URL.
fn policy_hint(given: &Given) -> &'static str {
    match (given.flag("--allow-http"), given.flag("--allow-private")) {
        (false, false) => " (--allow-http and --allow-private relax the policy)",
        (false, true) => " (--allow-http accepts http URLs)",
        (true, false) => " (--allow-private accepts loopback and private addresses)",
        (true, true) => "",
    }
}

/// The first line of a response body, safe to print on a terminal.
fn first_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn send(plan: Plan) -> ExitCode {
    let Plan {
        dispatcher,
        request,
        id,
        json,
    } = plan;
    let started = Instant::now();
    let outcome = dispatcher.dispatch_blocking(request);
    let elapsed_ms = started.elapsed().as_millis() as u64;

    let (delivered, status, error, kind, body) = match &outcome {
        Ok(response) => {
            let status = response.status();
            let delivered = status.is_success();
            let error = (!delivered).then(|| format!("the receiver answered {status}, not 2xx"));
            (
                delivered,
                Some(status),
                error,
                None,
                first_line(response.body_prefix()),
            )
        }
        Err(e) => (
            false,
            None,
            Some(e.to_string()),
            Some(e.kind()),
            String::new(),
        ),
    };

    if json {
        let report = serde_json::json!({
            "delivered": delivered,
            "status": status.map(|s| s.as_u16()),
            "error": error,
            "error_kind": kind.map(|k| format!("{k:?}").to_lowercase()),
            "elapsed_ms": elapsed_ms,
            "webhook_id": id.as_str(),
            "body_first_line": body,
        });
        println!("{report}");
    } else {
        match status {
            Some(status) => println!("status: {status}"),
            None => println!("status: no response"),
        }
        println!("time: {elapsed_ms} ms");
        println!("webhook-id: {id}");
        if status.is_some() {
            println!("body: {body}");
        }
        if let Some(error) = &error {
            println!("not delivered: {error}");
        }
    }
    if delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let given = match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(given)) => given,
        Err(Usage(message)) => {
            eprintln!("send: {message}");
            return ExitCode::from(2);
        }
    };
    match plan(&given) {
        Ok(plan) => send(plan),
        Err(Usage(message)) => {
            eprintln!("send: {message}");
            ExitCode::from(2)
        }
    }
}
