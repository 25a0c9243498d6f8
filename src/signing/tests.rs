//! Outgoing signatures against the Standard Webhooks reference, and (with the `signing`
//! feature) the receiver-side verification.

use super::*;
#[cfg(feature = "signing")]
use crate::limits::DEFAULT_SIGNATURE_TOLERANCE;
#[cfg(feature = "signing")]
use proptest::prelude::*;

// The reference example of the Standard Webhooks project: repository
// `standard-webhooks/standard-webhooks`, file `libraries/javascript/src/webhook.test.ts`,
// test "sign function works" (secret, id, timestamp, payload and expected signature). The
// scheme itself is in `spec/standard-webhooks.md` of the same repository.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_SECRET_BASE64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1614265330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[cfg(feature = "signing")]
const TOLERANCE: Duration = DEFAULT_SIGNATURE_TOLERANCE;

fn spec_secret() -> SigningSecret {
    SPEC_SECRET.parse().unwrap()
}

fn secret_of_len(len: usize, fill: u8) -> (String, Result<SigningSecret>) {
    let text = format!("whsec_{}", STANDARD.encode(vec![fill; len]));
    let parsed = text.parse();
    (text, parsed)
}

fn secret(fill: u8) -> SigningSecret {
    secret_of_len(32, fill).1.unwrap()
}

fn spec_headers() -> HeaderMap {
    headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), SPEC_SIGNATURE)
}

fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert(
        "webhook-timestamp",
        HeaderValue::from_str(timestamp).unwrap(),
    );
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(signature).unwrap(),
    );
    headers
}

fn err_text(result: Result<()>) -> String {
    match result {
        Err(Error::Signature(message)) => message,
        other => panic!("expected a signature error, got {other:?}"),
    }
}

#[cfg(feature = "signing")]
fn signed(body: &[u8], secrets: &[SigningSecret], timestamp: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    sign_headers(&mut headers, "msg_round_trip", timestamp, body, secrets).unwrap();
    headers
}

#[cfg(feature = "signing")]
#[test]
fn an_id_with_a_dot_cannot_re_split_an_old_message() {
    // Found by fuzzing: the id `msg_1.1700000000` with timestamp 1700000600 and body `rest`
    // signs the same text as the id `msg_1`, timestamp 1700000000, body `1700000600.rest`.
    let key = spec_secret();
    let sig = sign(
        "msg_1",
        1_700_000_000,
        b"1700000600.rest",
        std::slice::from_ref(&key),
    );
    let replayed = headers("msg_1.1700000000", "1700000600", sig.to_str().unwrap());
    let err = err_text(verify(
        &replayed,
        b"rest",
        &[key],
        Duration::from_secs(300),
        1_700_000_600,
    ));
    assert!(err.contains("webhook id"), "{err}");
}

// --- the spec's vectors ---

#[test]
fn spec_vector_signs() {
    let value = sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &[spec_secret()]);
    assert_eq!(value, SPEC_SIGNATURE);
}

#[cfg(feature = "signing")]
#[test]
fn spec_vector_verifies() {
    verify(
        &spec_headers(),
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    )
    .unwrap();
}

#[test]
fn spec_vector_through_sign_headers() {
    let mut headers = HeaderMap::new();
    sign_headers(
        &mut headers,
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY,
        &[spec_secret()],
    )
    .unwrap();
    assert_eq!(headers, spec_headers());
}

#[cfg(feature = "signing")]
#[test]
fn spec_multi_signature_header_verifies() {
    // As the reference suite's "multi sig payload is valid": wrong v1, unknown v2, the valid one.
    let signature = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
         v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
         {SPEC_SIGNATURE} \
         v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    );
    let headers = headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), &signature);
    verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    )
    .unwrap();
}

#[cfg(feature = "signing")]
#[test]
fn spec_partial_signatures_fail() {
    for partial in [&SPEC_SIGNATURE[..8], "v1,", "v1,dawfeoifkpqwoekfpqoekf"] {
        let headers = headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), partial);
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert!(message.contains("no v1 signature matches"), "{message}");
    }
}

// --- round trips and tampering ---

#[cfg(feature = "signing")]
#[test]
fn round_trip() {
    let key = secret(7);
    let headers = signed(
        b"Result=Connected",
        std::slice::from_ref(&key),
        1_700_000_000,
    );
    verify(
        &headers,
        b"Result=Connected",
        &[key],
        TOLERANCE,
        1_700_000_000,
    )
    .unwrap();
}

#[cfg(feature = "signing")]
#[test]
fn empty_body_round_trips() {
    let key = secret(7);
    let headers = signed(b"", std::slice::from_ref(&key), 1_700_000_000);
    verify(&headers, b"", &[key], TOLERANCE, 1_700_000_000).unwrap();
}

#[cfg(feature = "signing")]
#[test]
fn tampered_body_fails() {
    let message = err_text(verify(
        &spec_headers(),
        br#"{"test": 2432232315}"#,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert!(message.contains("no v1 signature matches"), "{message}");
    // One trailing byte is enough.
    assert!(
        verify(
            &spec_headers(),
            b"{\"test\": 2432232314}\n",
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP
        )
        .is_err()
    );
}

#[cfg(feature = "signing")]
#[test]
fn tampered_id_fails() {
    let headers = headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJel",
        &SPEC_TIMESTAMP.to_string(),
        SPEC_SIGNATURE,
    );
    let message = err_text(verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert!(message.contains("no v1 signature matches"), "{message}");
}

#[cfg(feature = "signing")]
#[test]
fn tampered_timestamp_fails() {
    // One second later is well inside the tolerance, so only the signature can catch it.
    let headers = headers(SPEC_ID, &(SPEC_TIMESTAMP + 1).to_string(), SPEC_SIGNATURE);
    let message = err_text(verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert!(message.contains("no v1 signature matches"), "{message}");
}

#[cfg(feature = "signing")]
#[test]
fn timestamp_is_signed_as_received() {
    // A leading zero parses to the same number but is different signed text.
    let headers = headers(SPEC_ID, &format!("0{SPEC_TIMESTAMP}"), SPEC_SIGNATURE);
    assert!(
        verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP
        )
        .is_err()
    );
}

#[cfg(feature = "signing")]
#[test]
fn wrong_secret_fails() {
    let message = err_text(verify(
        &spec_headers(),
        SPEC_BODY,
        &[secret(1)],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert!(message.contains("no v1 signature matches"), "{message}");
}

// --- rotation ---

#[cfg(feature = "signing")]
#[test]
fn rotation_sends_both_and_either_verifies() {
    let (old, new, other) = (secret(1), secret(2), secret(3));
    let both = [old.clone(), new.clone()];
    let value = sign("msg_rot", 1_700_000_000, b"body", &both);
    let expected = format!(
        "{} {}",
        sign(
            "msg_rot",
            1_700_000_000,
            b"body",
            std::slice::from_ref(&old)
        )
        .to_str()
        .unwrap(),
        sign(
            "msg_rot",
            1_700_000_000,
            b"body",
            std::slice::from_ref(&new)
        )
        .to_str()
        .unwrap(),
    );
    assert_eq!(value, expected.as_str());

    let headers = headers("msg_rot", "1700000000", value.to_str().unwrap());
    verify(
        &headers,
        b"body",
        std::slice::from_ref(&old),
        TOLERANCE,
        1_700_000_000,
    )
    .unwrap();
    verify(
        &headers,
        b"body",
        std::slice::from_ref(&new),
        TOLERANCE,
        1_700_000_000,
    )
    .unwrap();
    verify(
        &headers,
        b"body",
        &[other.clone(), new],
        TOLERANCE,
        1_700_000_000,
    )
    .unwrap();
    assert!(verify(&headers, b"body", &[other], TOLERANCE, 1_700_000_000).is_err());
}

#[cfg(feature = "signing")]
#[test]
fn signature_split_over_two_headers_verifies() {
    let mut headers = spec_headers();
    headers.insert("webhook-signature", HeaderValue::from_static("v1,AAAA"));
    headers.append(
        "webhook-signature",
        HeaderValue::from_static(SPEC_SIGNATURE),
    );
    verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    )
    .unwrap();
}

#[test]
fn no_secrets() {
    assert_eq!(sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &[]), "");
    #[cfg(feature = "signing")]
    {
        let message = err_text(verify(
            &spec_headers(),
            SPEC_BODY,
            &[],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert!(message.contains("no signing secret"), "{message}");
    }
    let mut headers = HeaderMap::new();
    let message = err_text(sign_headers(
        &mut headers,
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY,
        &[],
    ));
    assert!(message.contains("no signing secret"), "{message}");
    assert!(headers.is_empty());
}

// --- tolerance ---

#[cfg(feature = "signing")]
#[test]
fn tolerance_edges() {
    let check = |now: i64| verify(&spec_headers(), SPEC_BODY, &[spec_secret()], TOLERANCE, now);
    let tolerance = TOLERANCE.as_secs() as i64;
    check(SPEC_TIMESTAMP + tolerance).unwrap();
    check(SPEC_TIMESTAMP - tolerance).unwrap();

    let old = err_text(check(SPEC_TIMESTAMP + tolerance + 1));
    assert!(
        old.contains("too old") && old.contains("301 s before now"),
        "{old}"
    );
    let new = err_text(check(SPEC_TIMESTAMP - tolerance - 1));
    assert!(
        new.contains("too new") && new.contains("301 s after now"),
        "{new}"
    );
}

#[cfg(feature = "signing")]
#[test]
fn zero_tolerance_accepts_only_the_same_second() {
    let check = |now: i64| {
        verify(
            &spec_headers(),
            SPEC_BODY,
            &[spec_secret()],
            Duration::ZERO,
            now,
        )
    };
    check(SPEC_TIMESTAMP).unwrap();
    assert!(err_text(check(SPEC_TIMESTAMP + 1)).contains("too old"));
    assert!(err_text(check(SPEC_TIMESTAMP - 1)).contains("too new"));
}

#[cfg(feature = "signing")]
#[test]
fn tolerance_counts_whole_seconds() {
    let tolerance = Duration::from_millis(1_999);
    let check = |now: i64| verify(&spec_headers(), SPEC_BODY, &[spec_secret()], tolerance, now);
    check(SPEC_TIMESTAMP + 1).unwrap();
    assert!(check(SPEC_TIMESTAMP + 2).is_err());
}

#[cfg(feature = "signing")]
#[test]
fn extreme_clocks_do_not_overflow() {
    let check = |now: i64| {
        verify(
            &spec_headers(),
            SPEC_BODY,
            &[spec_secret()],
            Duration::MAX,
            now,
        )
    };
    check(i64::MAX).unwrap();
    check(i64::MIN).unwrap();
    let check = |now: i64| verify(&spec_headers(), SPEC_BODY, &[spec_secret()], TOLERANCE, now);
    assert!(err_text(check(i64::MAX)).contains("too old"));
    assert!(err_text(check(i64::MIN)).contains("too new"));
}

#[cfg(feature = "signing")]
#[test]
fn verify_now_reads_the_clock() {
    let key = secret(9);
    let now = jiff::Timestamp::now().as_second();
    let headers = signed(b"x", std::slice::from_ref(&key), now);
    verify_now(&headers, b"x", std::slice::from_ref(&key), TOLERANCE).unwrap();
    let stale = signed(b"x", std::slice::from_ref(&key), now - 3_600);
    assert!(err_text(verify_now(&stale, b"x", &[key], TOLERANCE)).contains("too old"));
}

// --- malformed headers ---

#[cfg(feature = "signing")]
#[test]
fn missing_headers_are_named() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut headers = spec_headers();
        headers.remove(name);
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert_eq!(message, format!("missing {name} header"));
    }
}

#[cfg(feature = "signing")]
#[test]
fn repeated_id_or_timestamp_is_refused() {
    for name in ["webhook-id", "webhook-timestamp"] {
        let mut headers = spec_headers();
        let value = headers[name].clone();
        headers.append(name, value);
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert_eq!(message, format!("more than one {name} header"));
    }
}

#[cfg(feature = "signing")]
#[test]
fn empty_or_non_ascii_headers_are_refused() {
    let mut headers = spec_headers();
    headers.insert("webhook-id", HeaderValue::from_static(""));
    let message = err_text(verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert_eq!(message, "webhook-id header is empty");

    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut headers = spec_headers();
        headers.insert(name, HeaderValue::from_bytes("msg_ü".as_bytes()).unwrap());
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert_eq!(message, format!("{name} header is not visible ASCII"));
    }
}

#[cfg(feature = "signing")]
#[test]
fn malformed_timestamps_are_refused() {
    for bad in [
        "hello",
        "-1614265330",
        "+1614265330",
        " 1614265330",
        "1614265330.0",
        "1.6e9",
        "",
    ] {
        let mut headers = spec_headers();
        headers.insert("webhook-timestamp", HeaderValue::from_str(bad).unwrap());
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert!(
            message.starts_with("webhook-timestamp header is"),
            "{bad:?}: {message}"
        );
    }
    let headers = headers(SPEC_ID, "99999999999999999999", SPEC_SIGNATURE);
    let message = err_text(verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    ));
    assert_eq!(message, "webhook-timestamp header is out of range");
}

#[cfg(feature = "signing")]
#[test]
fn signature_without_v1_is_refused() {
    for bad in [
        "",
        "   ",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1a,abc",
        "nocomma",
        "V1,abc",
    ] {
        let headers = headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), bad);
        let message = err_text(verify(
            &headers,
            SPEC_BODY,
            &[spec_secret()],
            TOLERANCE,
            SPEC_TIMESTAMP,
        ));
        assert_eq!(
            message, "webhook-signature header has no `v1,` signature",
            "{bad:?}"
        );
    }
}

#[cfg(feature = "signing")]
#[test]
fn unknown_versions_beside_a_valid_v1_are_ignored() {
    let signature = format!("v1a,bm90IGVkMjU1MTk= {SPEC_SIGNATURE} v2,whatever");
    let headers = headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), &signature);
    verify(
        &headers,
        SPEC_BODY,
        &[spec_secret()],
        TOLERANCE,
        SPEC_TIMESTAMP,
    )
    .unwrap();
}

// --- sign_headers' input rules ---

#[test]
fn sign_headers_refuses_bad_ids_and_times() {
    let key = [secret(4)];
    for (id, expected) in [
        ("", "the webhook id is empty"),
        (
            "msg.1",
            "the webhook id must be visible ASCII without spaces or `.`",
        ),
        (
            "msg 1",
            "the webhook id must be visible ASCII without spaces or `.`",
        ),
        (
            "msg_ü",
            "the webhook id must be visible ASCII without spaces or `.`",
        ),
        (
            "msg\n1",
            "the webhook id must be visible ASCII without spaces or `.`",
        ),
    ] {
        let mut headers = HeaderMap::new();
        assert_eq!(
            err_text(sign_headers(&mut headers, id, 1, b"", &key)),
            expected
        );
        assert!(headers.is_empty());
    }
    let mut headers = HeaderMap::new();
    assert_eq!(
        err_text(sign_headers(&mut headers, "msg_1", -1, b"", &key)),
        "the webhook timestamp is before 1970"
    );
}

#[cfg(feature = "signing")]
#[test]
fn sign_headers_replaces_earlier_values() {
    let key = secret(5);
    let mut headers = HeaderMap::new();
    sign_headers(&mut headers, "msg_a", 1, b"a", std::slice::from_ref(&key)).unwrap();
    sign_headers(&mut headers, "msg_b", 2, b"b", std::slice::from_ref(&key)).unwrap();
    assert_eq!(headers.len(), 3);
    assert_eq!(headers["webhook-id"], "msg_b");
    assert_eq!(headers["webhook-timestamp"], "2");
    verify(&headers, b"b", &[key], TOLERANCE, 2).unwrap();
}

// --- secrets ---

#[test]
fn secret_parsing_bounds() {
    for len in [MIN_KEY_LEN, 32, MAX_KEY_LEN] {
        let (text, parsed) = secret_of_len(len, 0xA5);
        assert_eq!(parsed.unwrap().to_whsec(), text, "{len} bytes");
    }
    for len in [0, 1, MIN_KEY_LEN - 1, MAX_KEY_LEN + 1, 128] {
        let (_, parsed) = secret_of_len(len, 0xA5);
        let Err(Error::Signature(message)) = parsed else {
            panic!("{len} bytes should be refused");
        };
        assert_eq!(
            message,
            format!("a signing secret must hold 24 to 64 bytes, this one holds {len}")
        );
    }
}

#[test]
fn secret_parsing_refuses_wrong_prefix() {
    for bad in [
        SPEC_SECRET_BASE64,
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "",
    ] {
        let Err(Error::Signature(message)) = bad.parse::<SigningSecret>() else {
            panic!("{bad:?} should be refused");
        };
        assert_eq!(message, "a signing secret must start with `whsec_`");
    }
}

#[test]
fn secret_parsing_refuses_bad_base64() {
    for bad in [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
        "whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw-_",
    ] {
        let Err(Error::Signature(message)) = bad.parse::<SigningSecret>() else {
            panic!("{bad:?} should be refused");
        };
        assert_eq!(
            message,
            "a signing secret must be `whsec_` followed by standard base64"
        );
    }
}

#[test]
fn secret_parsing_trims_surrounding_whitespace() {
    let parsed: SigningSecret = format!("  {SPEC_SECRET}\n").parse().unwrap();
    assert_eq!(parsed.to_whsec(), SPEC_SECRET);
}

#[test]
fn generated_secrets_are_32_random_bytes() {
    let a = SigningSecret::generate().unwrap();
    let b = SigningSecret::generate().unwrap();
    assert_eq!(a.key.len(), 32);
    assert_ne!(a.to_whsec(), b.to_whsec());
    let again: SigningSecret = a.to_whsec().parse().unwrap();
    assert_eq!(again.to_whsec(), a.to_whsec());
}

#[test]
fn secrets_never_print() {
    let generated = SigningSecret::generate().unwrap();
    for (key, text) in [
        (spec_secret(), SPEC_SECRET.to_owned()),
        (generated.clone(), generated.to_whsec()),
    ] {
        let base64 = text.strip_prefix("whsec_").unwrap();
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{key:#?}"),
            format!("{:?}", std::slice::from_ref(&key)),
        ] {
            assert!(!shown.contains(base64), "{shown}");
        }
        assert_eq!(format!("{key:?}"), "whsec_[redacted]");
        assert_eq!(format!("{key}"), "whsec_[redacted]");
    }
}

#[cfg(feature = "signing")]
#[test]
fn errors_never_print_the_secret() {
    let mut errors = Vec::new();
    // Parsing errors, with inputs built around the real secret's text.
    for bad in [
        SPEC_SECRET_BASE64.to_owned(),
        format!("whsk_{SPEC_SECRET_BASE64}"),
        format!("{SPEC_SECRET}!"),
        format!("{SPEC_SECRET}{}", "A".repeat(60)), // 69 bytes,
        format!("whsec_{}", &SPEC_SECRET_BASE64[..28]),
    ] {
        errors.push(bad.parse::<SigningSecret>().unwrap_err());
    }
    // Verification errors of every kind, with the spec secret in hand.
    let key = [spec_secret()];
    let now = SPEC_TIMESTAMP;
    errors.push(verify(&spec_headers(), b"tampered", &key, TOLERANCE, now).unwrap_err());
    errors.push(verify(&spec_headers(), SPEC_BODY, &key, TOLERANCE, now + 1_000).unwrap_err());
    errors.push(verify(&spec_headers(), SPEC_BODY, &key, TOLERANCE, now - 1_000).unwrap_err());
    errors.push(verify(&HeaderMap::new(), SPEC_BODY, &key, TOLERANCE, now).unwrap_err());
    errors.push(
        verify(
            &headers(SPEC_ID, "x", "v1,"),
            SPEC_BODY,
            &key,
            TOLERANCE,
            now,
        )
        .unwrap_err(),
    );
    errors.push(sign_headers(&mut HeaderMap::new(), "a.b", now, SPEC_BODY, &key).unwrap_err());

    let expected_tag = SPEC_SIGNATURE.strip_prefix("v1,").unwrap();
    let tampered_tag = sign(SPEC_ID, SPEC_TIMESTAMP, b"tampered", &key);
    let tampered_tag = tampered_tag.to_str().unwrap().strip_prefix("v1,").unwrap();
    for error in errors {
        for shown in [format!("{error}"), format!("{error:?}")] {
            assert!(!shown.contains(SPEC_SECRET_BASE64), "{shown}");
            assert!(!shown.contains(&SPEC_SECRET_BASE64[..16]), "{shown}");
            // Nor the signature a forger would need.
            assert!(!shown.contains(expected_tag), "{shown}");
            assert!(!shown.contains(tampered_tag), "{shown}");
        }
    }
}

// --- properties ---

#[cfg(feature = "signing")]
proptest! {
    #[test]
    fn sign_then_verify_holds(
        id in "[!-~&&[^.]]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        timestamp in 0i64..=4_102_444_800,
        key in proptest::collection::vec(any::<u8>(), MIN_KEY_LEN..=MAX_KEY_LEN),
        skew in -300i64..=300,
    ) {
        let key: SigningSecret = format!("whsec_{}", STANDARD.encode(&key)).parse().unwrap();
        let mut headers = HeaderMap::new();
        sign_headers(&mut headers, &id, timestamp, &body, std::slice::from_ref(&key)).unwrap();
        prop_assert!(verify(&headers, &body, std::slice::from_ref(&key), TOLERANCE, timestamp + skew).is_ok());
    }

    #[test]
    fn any_changed_body_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let key = secret(0x42);
        let headers = signed(&body, std::slice::from_ref(&key), 1_700_000_000);
        let mut changed = body.clone();
        changed[index.index(body.len())] ^= flip;
        prop_assert!(verify(&headers, &changed, &[key], TOLERANCE, 1_700_000_000).is_err());
    }
}
