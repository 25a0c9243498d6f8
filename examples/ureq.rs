//! Sending one call result from a plain synchronous program, with the ureq backend: no async
//! runtime anywhere.
//!
//! ```sh
//! cargo run --example ureq --features ureq
//! ```
//!
//! A tiny receiver on 127.0.0.1 stands in for the customer's server. The account is configured
//! as its administrator would in Settings > Preferences > WebHook, and one call result is sent.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use call_result_webhook::{
    BlockingDispatcher, CallResult, DeliveryId, PreferencesUpdate, UreqDispatcher, UrlPolicy,
    preferences::Preferences,
    request::{EncodedBody, build_request},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = start_receiver()?;

    // The account's webhook preferences, as its administrator would set them in Settings >
    // Preferences > WebHook. Here they are a value for this one send; a dialer that delivers
    // with `Webhooks` saves them with `Webhooks::update_preferences` instead.
    let preferences = Preferences::from_update(
        PreferencesUpdate::new()
            .enabled(true)
            .url(&url)
            .credentials("dialer", "s3cret")
            .time_zone("Australia/Brisbane"),
    )?;

    // A finished call, as the dialer knows it: instants and strings.
    let call = CallResult::builder()
        .campaign_name("Winter Sale")
        .logged_at("2019-06-19T16:11:07Z".parse()?)
        .call_start("2019-06-19T15:01:00Z".parse()?)
        .call_end("2019-06-19T15:03:00Z".parse()?)
        .phone_called("0731051xxx")
        .reference("123")
        .result("Connected")
        .wrap_up_by_name("agent@pinetree.net.au")
        .wrap_up_reason_name("Payment Taken")
        .build();

    // The exact bytes every attempt sends, and the request for this attempt.
    let body = EncodedBody::encode(&call, &preferences)?;
    let id = DeliveryId::generate();
    let request = build_request(&preferences, &id, &body)?;

    // One dispatcher for the whole dialer: clones share its connection pool. The default policy
    // accepts only https to public addresses; this example's receiver is http on loopback.
    let dispatcher = UreqDispatcher::builder()
        .policy(UrlPolicy::new().allow_http(true).allow_private())
        .build();

    let started = Instant::now();
    match dispatcher.dispatch_blocking(request) {
        Ok(response) => println!(
            "{id}: {} in {} ms, body {:?}",
            response.status(),
            started.elapsed().as_millis(),
            String::from_utf8_lossy(response.body_prefix()),
        ),
        Err(e) => println!("{id}: not delivered ({}): {e}", e.kind()),
    }
    Ok(())
}

/// A receiver on 127.0.0.1, on a thread of its own, that prints each request's head line and
/// body and answers `200 OK`.
fn start_receiver() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/calls", listener.local_addr()?);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut received = Vec::new();
            let mut chunk = [0; 4096];
            while !complete(&received) {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&received);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            println!("receiver got: {}", head.lines().next().unwrap_or(""));
            println!("receiver got: {body}");
            let reply =
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nthank you";
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Ok(url)
}

/// Whether `received` holds a whole request: the head and `Content-Length` bytes of body.
fn complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    received.len() - (end + 4) >= length
}
