//! Standard Webhooks signatures: arbitrary headers, body, secrets, tolerance and clock.
//!
//! Checks:
//! - `SigningSecret::from_str` never panics, and a secret it accepts prints back (`to_whsec`) as
//!   exactly the trimmed text; `Debug`/`Display` never show the key;
//! - `verify` never panics on arbitrary headers (any of the three names, repeated or not, any
//!   bytes a header value may hold), any body, secrets, tolerance and `now`;
//! - `sign_headers` refuses exactly what its docs say (no secret, empty id, an id that is not
//!   visible ASCII or holds `.`, a negative timestamp) and leaves the headers alone then;
//! - whatever it signs verifies, within the tolerance either way, with the secret alone or among
//!   others, and with either secret of a rotation pair;
//! - a single changed byte anywhere in the body never verifies, nor a byte added or removed, nor
//!   a changed id or timestamp, nor the wrong secret, nor the signed text split at other dots
//!   (an id holding a `.`); and those errors never show the key or the expected signature.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use call_result_webhook::{
    Error,
    signing::{SigningSecret, sign, sign_headers, verify},
};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    secret_text: String,
    key: Vec<u8>,
    other_key: Vec<u8>,
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    change_at: usize,
    change_by: u8,
    skew: i64,
    tolerance: u64,
    now: i64,
    headers: Vec<(u8, Vec<u8>)>,
}

const NAMES: [&str; 4] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

/// Key bytes in the range a secret may hold (24 to 64), from any bytes.
fn secret_from(bytes: &[u8], fill: u8) -> SigningSecret {
    let mut key: Vec<u8> = bytes.iter().copied().take(64).collect();
    while key.len() < 24 {
        key.push(fill.wrapping_add(key.len() as u8));
    }
    format!("whsec_{}", STANDARD.encode(&key))
        .parse()
        .expect("24 to 64 bytes of base64 make a secret")
}

fuzz_target!(|input: Input| {
    parse_any_secret(&input.secret_text);

    let key = secret_from(&input.key, 0x11);
    let other = secret_from(&input.other_key, 0x77);
    let tolerance = Duration::from_secs(input.tolerance % (10 * 365 * 86_400));

    verify_arbitrary_headers(&input, &key, tolerance);
    sign_then_verify(&input, &key, &other, tolerance);
});

fn parse_any_secret(text: &str) {
    match text.parse::<SigningSecret>() {
        Ok(secret) => {
            assert_eq!(secret.to_whsec(), text.trim(), "secret does not print back");
            assert_eq!(format!("{secret:?}"), "whsec_[redacted]");
            assert_eq!(format!("{secret}"), "whsec_[redacted]");
        }
        Err(err) => {
            let Error::Signature(message) = &err else {
                panic!("unexpected error kind {err:?}");
            };
            // The message is one of three fixed texts (one with a byte count): it cannot repeat
            // any of the secret's text.
            let fixed = [
                "a signing secret must start with `whsec_`",
                "a signing secret must be `whsec_` followed by standard base64",
            ];
            let count = message
                .strip_prefix("a signing secret must hold 24 to 64 bytes, this one holds ")
                .is_some_and(|n| n.parse::<usize>().is_ok());
            assert!(
                fixed.contains(&message.as_str()) || count,
                "unexpected secret error: {message}"
            );
        }
    }
}

fn verify_arbitrary_headers(input: &Input, key: &SigningSecret, tolerance: Duration) {
    let mut headers = HeaderMap::new();
    for (name, value) in input.headers.iter().take(8) {
        let name = HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    for secrets in [&[][..], std::slice::from_ref(key)] {
        let result = verify(&headers, &input.body, secrets, tolerance, input.now);
        if let Err(err) = result {
            assert!(
                matches!(err, Error::Signature(_)),
                "unexpected error kind {err:?}"
            );
        }
    }
    // The same headers with a real signature for them added: still no panic, whatever the rest.
    if let (Some(id), Some(ts)) = (
        headers.get("webhook-id").and_then(|v| v.to_str().ok()),
        headers
            .get("webhook-timestamp")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.parse::<i64>().ok()),
    ) {
        let signature = sign(id, ts, &input.body, std::slice::from_ref(key));
        let mut signed = headers.clone();
        signed.append("webhook-signature", signature);
        let _ = verify(
            &signed,
            &input.body,
            std::slice::from_ref(key),
            tolerance,
            input.now,
        );
    }
}

fn sign_then_verify(
    input: &Input,
    key: &SigningSecret,
    other: &SigningSecret,
    tolerance: Duration,
) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let id = input.id.as_str();
    let result = sign_headers(
        &mut headers,
        id,
        input.timestamp,
        &input.body,
        std::slice::from_ref(key),
    );
    let should_refuse = id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
        || input.timestamp < 0;
    match result {
        Err(err) => {
            assert!(
                should_refuse,
                "sign_headers refused {id:?} at {}: {err}",
                input.timestamp
            );
            assert_eq!(
                headers.len(),
                1,
                "sign_headers changed the headers on failure"
            );
            return;
        }
        Ok(()) => assert!(
            !should_refuse,
            "sign_headers accepted {id:?} at {}",
            input.timestamp
        ),
    }
    assert_eq!(headers.len(), 4);
    assert_eq!(headers["webhook-id"], id);
    assert_eq!(
        headers["webhook-timestamp"],
        input.timestamp.to_string().as_str()
    );

    let tol = tolerance.as_secs() as i64;
    let skew = if tol == 0 { 0 } else { input.skew % (tol + 1) };
    let now = input.timestamp.saturating_add(skew);
    let body = &input.body;
    let ok =
        |h: &HeaderMap, b: &[u8], secrets: &[SigningSecret]| verify(h, b, secrets, tolerance, now);

    ok(&headers, body, std::slice::from_ref(key)).expect("signed message verifies");
    ok(&headers, body, &[other.clone(), key.clone()]).expect("verifies among other secrets");
    if now.abs_diff(input.timestamp) <= tolerance.as_secs() {
        // Also at the edges of the window.
        let edge = input.timestamp.saturating_add(tol);
        if edge.abs_diff(input.timestamp) <= tolerance.as_secs() {
            verify(&headers, body, std::slice::from_ref(key), tolerance, edge)
                .expect("verifies at the tolerance's edge");
        }
    }

    // Rotation: both secrets sign; either one alone verifies.
    let mut rotated = HeaderMap::new();
    sign_headers(
        &mut rotated,
        id,
        input.timestamp,
        body,
        &[key.clone(), other.clone()],
    )
    .expect("same inputs sign");
    ok(&rotated, body, std::slice::from_ref(key)).expect("new secret verifies");
    ok(&rotated, body, std::slice::from_ref(other)).expect("old secret verifies");

    let expected_tag = headers["webhook-signature"].to_str().unwrap()[3..].to_owned();
    let key_text = key.to_whsec()["whsec_".len()..].to_owned();
    let refused = |what: &str, result: call_result_webhook::Result<()>| {
        let err = result.expect_err(what);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains(&expected_tag),
                "{what}: error shows the tag: {shown}"
            );
            assert!(
                !shown.contains(&key_text),
                "{what}: error shows the key: {shown}"
            );
        }
    };

    // Any single changed byte in the body.
    if !body.is_empty() {
        let mut changed = body.clone();
        let i = input.change_at % body.len();
        changed[i] ^= input.change_by.max(1);
        refused(
            "changed body byte",
            ok(&headers, &changed, std::slice::from_ref(key)),
        );
        let mut shorter = body.clone();
        shorter.remove(i);
        refused(
            "removed body byte",
            ok(&headers, &shorter, std::slice::from_ref(key)),
        );
    }
    let mut longer = body.clone();
    longer.insert(input.change_at % (body.len() + 1), input.change_by);
    refused(
        "added body byte",
        ok(&headers, &longer, std::slice::from_ref(key)),
    );

    // The wrong secret.
    if other.to_whsec() != key.to_whsec() {
        refused(
            "wrong secret",
            ok(&headers, body, std::slice::from_ref(other)),
        );
    }

    // A changed id: one byte replaced by another visible one.
    let mut id_bytes = id.as_bytes().to_vec();
    let i = input.change_at % id_bytes.len();
    let replacement = b'!' + (id_bytes[i] - b'!' + 1 + input.change_by % 92) % 94;
    if replacement != id_bytes[i] {
        id_bytes[i] = replacement;
        let mut changed = headers.clone();
        changed.insert("webhook-id", HeaderValue::from_bytes(&id_bytes).unwrap());
        refused("changed id", ok(&changed, body, std::slice::from_ref(key)));
    }

    // The signed text `id.timestamp.body` read with its dots elsewhere: when the body starts
    // with digits and a `.`, the same signature also covers id `id.timestamp`, that number as
    // the timestamp, and the rest of the body. sign_headers refuses a `.` in the id for this
    // reason (see `sign`); verify must not accept one either, or a captured message outlives
    // its tolerance window.
    if let Some((digits, rest)) =
        body.split_at_checked(body.iter().position(|&b| b == b'.').unwrap_or(usize::MAX))
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && let Ok(later) = std::str::from_utf8(digits).unwrap().parse::<i64>()
    {
        let mut resplit = headers.clone();
        let id_ts = format!("{id}.{}", input.timestamp);
        resplit.insert("webhook-id", HeaderValue::from_str(&id_ts).unwrap());
        resplit.insert(
            "webhook-timestamp",
            HeaderValue::from_bytes(digits).unwrap(),
        );
        refused(
            "id with a `.`",
            verify(
                &resplit,
                &rest[1..],
                std::slice::from_ref(key),
                tolerance,
                later,
            ),
        );
    }

    // The same instant written another way (a leading zero) is another signed text.
    let mut padded = headers.clone();
    let ts = format!("0{}", input.timestamp);
    padded.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
    refused(
        "re-written timestamp",
        ok(&padded, body, std::slice::from_ref(key)),
    );
}
