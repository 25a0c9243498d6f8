//! The whole job, end to end, on this machine: `cargo run --example quickstart`.
//!
//! 1. A small receiver on 127.0.0.1 plays the customer's server. It answers its first request
//!    with 503 (a server having a bad moment) and every later one with 200.
//! 2. The outbox is a SQLite file in a temporary directory.
//! 3. An administrator switches the webhook on for the account (URL, user name, password, time
//!    zone) and on for one campaign; another campaign stays off.
//! 4. The dialer submits one finished call for each campaign. The one whose campaign is off is
//!    not sent and not stored.
//! 5. The worker delivers in the background: the first attempt meets the 503, the retry is
//!    delivered, with the same `webhook-id` and the same bytes.
//! 6. We print what the receiver got, decoded, and the campaign's status before and after.
//!
//! The receiver decodes the `Authorization` header and says whether user name and password are
//! the ones configured; like everything in this crate, it never prints the password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use call_result_webhook::{
    AccountId, CallResult, CampaignId, Event, HyperDispatcher, PreferencesUpdate, Principal,
    SqliteStore, Status, Submitted, UrlPolicy, Webhooks, campaign::WebhookIndicator,
    delivery::RetrySchedule,
};

const USER_NAME: &str = "dialer";
const PASSWORD: &str = "s3cret";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. The customer's server");
    let (url, received) = start_receiver()?;
    println!("   listening on {url}: it answers 503 to its first request, 200 after that\n");

    println!("2. The outbox");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("outbox.sqlite");
    let store = SqliteStore::open(&path)?;
    println!("   {} (WAL, synchronous FULL)\n", path.display());

    // The default policy sends only to https URLs on public addresses; this receiver is plain
    // http on loopback, so the policy allows it. It is given once, here: the dispatcher the
    // worker starts with adopts it.
    let policy = UrlPolicy::new().allow_http(true).allow_private();
    let webhooks = Webhooks::builder()
        .store(store)
        .policy(policy)
        .on_event(print_event)
        .build()?;

    println!("3. Settings > Preferences > WebHook, by an administrator");
    let admin = Principal::administrator("alice@acme.example");
    let acme = AccountId::from("acme");
    let winter: CampaignId = "winter-sale".into();
    let spring: CampaignId = "spring-promo".into();
    webhooks
        .update_preferences(
            &admin,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url(&url)
                .credentials(USER_NAME, PASSWORD)
                .time_zone("Australia/Brisbane")
                // Quick retries for the demo; the default waits 5 s, 5 min, 30 min, ... 24 h.
                .retry_schedule(RetrySchedule::new([
                    Duration::from_millis(500),
                    Duration::from_secs(1),
                ])?),
        )
        .await?;
    webhooks
        .set_campaign_webhook(&admin, &acme, &winter, true)
        .await?;
    webhooks
        .set_campaign_webhook(&admin, &acme, &spring, false)
        .await?;
    println!("   Enable Web Hook: on, URL {url}, user name {USER_NAME}, password set");
    println!("   time zone Australia/Brisbane, retries after 0.5 s and 1 s");
    println!("   campaign {winter}: Enable WebHook on; campaign {spring}: off");
    show_status(
        "   status before:",
        webhooks.indicator(&acme, Some(&winter)),
        &webhooks.status(&acme, Some(&winter)).await?,
        &winter,
    );
    show_status(
        "                 ",
        webhooks.indicator(&acme, Some(&spring)),
        &webhooks.status(&acme, Some(&spring)).await?,
        &spring,
    );
    println!();

    println!("4. The dialer submits two finished calls");
    for (campaign, name, reference) in [
        (&winter, "Winter Sale", "123"),
        (&spring, "Spring Promo", "456"),
    ] {
        // Instants and strings, as the dialer knows the call.
        let call = CallResult::builder()
            .campaign_name(name)
            .logged_at("2019-06-19T16:11:07Z".parse()?)
            .call_start("2019-06-19T15:01:00Z".parse()?)
            .call_end("2019-06-19T15:03:00Z".parse()?)
            .phone_called("0731051xxx")
            .reference(reference)
            .result("Connected")
            .result_notes("Paid in full.\nCall back next month.")
            .wrap_up_by_name("agent@pinetree.net.au")
            .wrap_up_reason_name("Payment Taken")
            .build();
        // Durable in the outbox when this returns; it never waits for the receiver.
        match webhooks.submit(&acme, campaign, call).await? {
            Submitted::Accepted(id) => println!("   {campaign}: accepted, webhook-id {id}"),
            Submitted::Skipped(reason) => {
                println!(
                    "   {campaign}: not sent, nothing stored: {}",
                    reason.describe()
                )
            }
        }
    }
    println!();

    println!("5. The worker delivers in the background");
    // Attempts run as tasks on this program's runtime; every store call runs off it. (A dialer
    // with no async runtime uses `start_threads` with a `UreqDispatcher` and the `_blocking`
    // forms instead.)
    let worker = webhooks.start_tokio(
        HyperDispatcher::builder().build(),
        &tokio::runtime::Handle::current(),
    )?;
    let idle = worker.wait_idle(Duration::from_secs(30)).await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    println!(
        "   {}\n",
        if idle {
            "nothing pending"
        } else {
            "still pending after 30 s"
        }
    );

    println!("6. What the receiver got");
    let requests: Vec<Received> = received.try_iter().collect();
    for (n, request) in requests.iter().enumerate() {
        println!(
            "   request {}: {}, webhook-id {} -> answered {}",
            n + 1,
            request.request_line,
            request.header("webhook-id").unwrap_or("(none)"),
            request.answered
        );
    }
    if let Some(last) = requests.last() {
        let same = requests.iter().all(|r| r.body == last.body);
        println!(
            "   the same bytes on every attempt: {}",
            if same { "yes" } else { "NO" }
        );
        print_request(last);
    }
    let spring_sent = requests
        .iter()
        .any(|r| r.field("CampaignName") == Some("Spring Promo"));
    if !spring_sent {
        println!("   nothing for {spring}: its Enable WebHook is off\n");
    }

    show_status(
        "   status after: ",
        webhooks.indicator(&acme, Some(&winter)),
        &webhooks.status(&acme, Some(&winter)).await?,
        &winter,
    );
    show_status(
        "                 ",
        webhooks.indicator(&acme, Some(&spring)),
        &webhooks.status(&acme, Some(&spring)).await?,
        &spring,
    );
    Ok(())
}

/// The events the worker reports, as they happen.
fn print_event(event: &Event) {
    match event {
        Event::AttemptFailed {
            delivery,
            attempt,
            reason,
            next_attempt_at,
            ..
        } => {
            let next = match next_attempt_at {
                Some(at) => {
                    let wait = at.duration_since(call_result_webhook::jiff::Timestamp::now());
                    format!("next attempt in {:.2} s", wait.as_secs_f64().max(0.0))
                }
                None => "no next attempt".to_owned(),
            };
            println!("   attempt {attempt} of {delivery} failed: {reason}; {next}");
        }
        Event::AttemptSucceeded {
            delivery,
            attempt,
            status,
            ..
        } => println!("   attempt {attempt} of {delivery} delivered: HTTP {status}"),
        other => println!("   {other:?}"),
    }
}

/// A campaign's indicator and status as the UI would show them next to the campaign.
fn show_status(label: &str, indicator: WebhookIndicator, status: &Status, campaign: &CampaignId) {
    let s = &status.stats;
    let indicator = match indicator {
        WebhookIndicator::Off(reason) => format!("Off ({})", reason.describe()),
        other => format!("{other:?}"),
    };
    print!(
        "{label} {campaign}: {indicator}, {} pending, {} delivered, {} failed",
        s.pending, s.delivered, s.failed
    );
    if let Some(reason) = &s.last_failure_reason {
        // Whether that failure still stands, or a later delivery succeeded.
        let when = if status.failure_is_current {
            "current"
        } else {
            "before the last success"
        };
        print!(", last failure ({when}): {reason}");
    }
    println!();
}

/// One request as the receiver read it.
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    fields: Vec<(String, String)>,
    answered: &'static str,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The delivered request, decoded as a receiver would decode it.
fn print_request(r: &Received) {
    println!("   the delivered request, decoded:");
    for name in ["content-type", "user-agent"] {
        println!("     {name}: {}", r.header(name).unwrap_or("(none)"));
    }
    println!(
        "     authorization: {}",
        describe_authorization(r.header("authorization"))
    );
    for (key, value) in &r.fields {
        println!("     {key:<17} = {value:?}");
    }
    println!();
}

/// The Authorization header decoded as a receiver would, without printing the password.
fn describe_authorization(value: Option<&str>) -> String {
    let Some(value) = value else {
        return "(none)".into();
    };
    let decoded = value
        .strip_prefix("Basic ")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((user, password)) => format!(
            "Basic base64(\"{user}:{}\"): user name {user:?}, password {}",
            "*".repeat(password.chars().count()),
            if user == USER_NAME && password == PASSWORD {
                "as configured"
            } else {
                "NOT as configured"
            }
        ),
        None => "not Basic".into(),
    }
}

/// The customer's server in a few lines of std: one request per connection, decoded and handed
/// to `main`. Answers 503 to the first request and 200 to the rest.
fn start_receiver() -> std::io::Result<(String, mpsc::Receiver<Received>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/calls", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut answered = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((request_line, headers, body)) = read_request(&mut stream) else {
                continue;
            };
            let status = if answered == 0 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            answered += 1;
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes());
            let fields = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            let _ = tx.send(Received {
                request_line,
                headers,
                body,
                fields,
                answered: status,
            });
        }
    });
    Ok((url, rx))
}

type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request: the request line, the headers and `Content-Length` bytes of body.
fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((request_line.trim_end().to_owned(), headers, body))
}
