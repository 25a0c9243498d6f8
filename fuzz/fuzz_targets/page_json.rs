//! Arbitrary text through `CallResult::from_page_json`, read in a few time zones (with and
//! without daylight saving, with half-hour and 45-minute offsets).
//!
//! Checks: nothing panics; an accepted record is a JSON object whose values, formatted again by
//! `CallResult::fields` in the same zone, are exactly the strings read (the promise in the
//! method's docs): `LogDateTime`, `CallStart` and `CallEnd` to the character, the text fields
//! untouched, missing/`null` (and `""` for the two call times) unknown; and sending the record
//! as JSON and reading that back gives the same call result.
#![no_main]

use call_result_webhook::jiff::tz::TimeZone;
use call_result_webhook::{CallResult, Error, encoding::Encoding, payload::PAYLOAD_KEYS};
use libfuzzer_sys::fuzz_target;

const ZONES: &[&str] = &[
    "UTC",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for zone in ZONES {
        let tz = TimeZone::get(zone).expect("bundled time zone");
        match CallResult::from_page_json(text, &tz) {
            Ok(call) => accepted(text, &call, &tz, zone),
            Err(Error::InvalidCallResult { field, .. }) => {
                assert!(
                    field == "(record)" || PAYLOAD_KEYS.contains(&field),
                    "[{zone}] error names no payload key: {field}"
                );
            }
            Err(other) => panic!("[{zone}] unexpected error kind {other:?}"),
        }
    }
});

fn accepted(text: &str, call: &CallResult, tz: &TimeZone, zone: &str) {
    let record: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).expect("an accepted record is a JSON object");
    let fields = call.fields(tz);
    for key in PAYLOAD_KEYS {
        let read = match record.get(key) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(other) => panic!("[{zone}] {key} accepted as {other}"),
        };
        let read = match (key, read) {
            ("CallStart" | "CallEnd", Some("")) => None,
            (_, read) => read,
        };
        assert_eq!(
            fields.get(key),
            read,
            "[{zone}] {key} does not format back to what was read\n{text}"
        );
    }
    for key in record.keys() {
        assert!(
            PAYLOAD_KEYS.contains(&key.as_str()),
            "[{zone}] unknown key {key} accepted"
        );
    }

    let body = Encoding::Json.encode(&fields);
    let body = std::str::from_utf8(&body).expect("JSON body is UTF-8");
    let again = CallResult::from_page_json(body, tz)
        .unwrap_or_else(|e| panic!("[{zone}] cannot read back its own JSON body: {e}\n{body}"));
    assert_eq!(
        &again, call,
        "[{zone}] JSON body reads back differently\n{body}"
    );
}
