//! Arbitrary values for the ten fields -> `CallResult` -> `Encoding::Form` and `Encoding::Json`.
//!
//! Checks: `Fields` holds exactly the values given (times formatted in their zones); the form
//! body is ASCII and `form_urlencoded::parse` gives back exactly the ten keys, in order, with
//! exactly the values (unknown = empty); the JSON body read by `serde_json`, keeping order and
//! duplicates, gives back the ten keys in order with the values (unknown = `null`); and a JSON
//! body read back with `CallResult::from_page_json` gives the same fields again.
#![no_main]

use std::fmt;

use arbitrary::Arbitrary;
use call_result_webhook::jiff::Timestamp;
use call_result_webhook::jiff::tz::TimeZone;
use call_result_webhook::{
    CallResult,
    encoding::Encoding,
    payload::{Fields, PAYLOAD_KEYS},
};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

#[derive(Arbitrary, Debug)]
struct Input {
    campaign_name: Option<String>,
    logged_at: (i64, u32),
    call_start: Option<(i64, u32)>,
    call_end: Option<(i64, u32)>,
    phone_called: Option<String>,
    reference: Option<String>,
    result: Option<String>,
    result_notes: Option<String>,
    wrap_up_by_name: Option<String>,
    wrap_up_reason_name: Option<String>,
    zone: u8,
}

const ZONES: &[&str] = &[
    "UTC",
    "Australia/Brisbane",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Europe/Dublin",
];

/// Any `(seconds, nanoseconds)` mapped onto jiff's whole range of instants.
fn timestamp((secs, nanos): (i64, u32)) -> Timestamp {
    let min = Timestamp::MIN.as_second();
    let max = Timestamp::MAX.as_second();
    let secs = min + secs.rem_euclid(max - min);
    let nanos = (nanos % 1_000_000_000) as i32;
    Timestamp::new(secs, nanos).unwrap_or(Timestamp::new(secs, 0).expect("in range"))
}

fuzz_target!(|input: Input| {
    let zone = ZONES[usize::from(input.zone) % ZONES.len()];
    let tz = TimeZone::get(zone).expect("bundled time zone");

    let mut b = CallResult::builder().logged_at(timestamp(input.logged_at));
    if let Some(v) = &input.campaign_name {
        b = b.campaign_name(v.as_str());
    }
    if let Some(t) = input.call_start {
        b = b.call_start(timestamp(t));
    }
    if let Some(t) = input.call_end {
        b = b.call_end(timestamp(t));
    }
    if let Some(v) = &input.phone_called {
        b = b.phone_called(v.as_str());
    }
    if let Some(v) = &input.reference {
        b = b.reference(v.as_str());
    }
    if let Some(v) = &input.result {
        b = b.result(v.as_str());
    }
    if let Some(v) = &input.result_notes {
        b = b.result_notes(v.as_str());
    }
    if let Some(v) = &input.wrap_up_by_name {
        b = b.wrap_up_by_name(v.as_str());
    }
    if let Some(v) = &input.wrap_up_reason_name {
        b = b.wrap_up_reason_name(v.as_str());
    }
    let call = b.build();
    let fields = call.fields(&tz);

    // Fields: the keys in order, the text values untouched, the times formatted.
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, PAYLOAD_KEYS);
    for (key, given) in [
        ("CampaignName", &input.campaign_name),
        ("PhoneCalled", &input.phone_called),
        ("Reference", &input.reference),
        ("Result", &input.result),
        ("ResultNotes", &input.result_notes),
        ("WrapUpByName", &input.wrap_up_by_name),
        ("WrapUpReasonName", &input.wrap_up_reason_name),
    ] {
        assert_eq!(fields.get(key), given.as_deref(), "{key}");
    }
    assert!(fields.get("LogDateTime").is_some());
    assert_eq!(
        fields.get("CallStart").is_some(),
        input.call_start.is_some()
    );
    assert_eq!(fields.get("CallEnd").is_some(), input.call_end.is_some());

    form_round_trip(&fields);
    let json = json_round_trip(&fields);
    read_back(&json, &fields, &tz, zone);
});

fn form_round_trip(fields: &Fields<'_>) {
    let body = Encoding::Form.encode(fields);
    assert!(body.is_ascii(), "form body not ASCII");
    assert!(
        !body.iter().any(|b| b.is_ascii_control() || *b == b' '),
        "form body holds a control byte or a space"
    );
    let decoded: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let expected: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_owned(), v.unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        decoded,
        expected,
        "form body {:?}",
        String::from_utf8_lossy(&body)
    );
}

fn json_round_trip(fields: &Fields<'_>) -> String {
    let body = Encoding::Json.encode(fields);
    let text = String::from_utf8(body.to_vec()).expect("JSON body is UTF-8");
    let decoded: Ordered = serde_json::from_str(&text).expect("JSON body parses");
    let expected: Vec<(String, Option<String>)> = fields
        .iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
    assert_eq!(decoded.0, expected, "JSON body {text}");
    text
}

/// What the crate sends, read back as the page's JSON, gives the same fields: the receiving
/// side and the sending side agree on every string.
fn read_back(json: &str, fields: &Fields<'_>, tz: &TimeZone, zone: &str) {
    match CallResult::from_page_json(json, tz) {
        Ok(again) => {
            let again_fields = again.fields(tz);
            assert_eq!(&again_fields, fields, "[{zone}] read back differs: {json}");
        }
        Err(err) => panic!("[{zone}] the crate cannot read its own JSON body: {err}\n{json}"),
    }
}

/// A JSON object as its entries in document order, duplicates kept; values string or null.
struct Ordered(Vec<(String, Option<String>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of strings and nulls")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Option<String>>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}
