//! Encodings of the ten keys: `application/x-www-form-urlencoded` (the page's Content-type) and
//! JSON in a POST body, and the form encoding in a GET's query string.

use bytes::Bytes;
use http::HeaderValue;
use serde::ser::{SerializeMap, Serializer};

use crate::payload::{Fields, KeyNames, PAYLOAD_KEYS};

/// How the ten keys are put into the body. Chosen per account.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`, as the product page's Content-type says. Unknown
    /// values are empty strings.
    #[default]
    Form,
    /// `application/json`, shaped like the page's sample body. Unknown values are `null`.
    Json,
    /// The form encoding, sent as the query string of a `GET` with no body (the account chose
    /// [`Method::Get`](crate::preferences::Method::Get)). Unknown values are empty strings. Not
    /// chosen with [`PreferencesUpdate::encoding`](crate::PreferencesUpdate::encoding): a body
    /// encoded for a `GET` is marked with it so that every attempt sends it the same way.
    Query,
}

impl Encoding {
    /// The media type of the encoded bytes, as a `Content-Type` header value. A `GET` sends no
    /// body and no `Content-Type`; its query is in the form encoding, which
    /// [`Encoding::Query`] names here.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Form | Encoding::Query => "application/x-www-form-urlencoded",
            Encoding::Json => "application/json",
        })
    }

    /// Encodes the ten fields, in order and under the page's own key names, into the exact bytes
    /// every attempt will send.
    pub fn encode(self, fields: &Fields<'_>) -> Bytes {
        self.encode_named(fields, &KeyNames::default())
    }

    /// Encodes the ten fields, in order, each under its name in `names` (an account's renamed
    /// keys), into the exact bytes every attempt will send.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{CallResult, encoding::Encoding, payload::KeyNames};
    /// use jiff::tz::TimeZone;
    ///
    /// let call = CallResult::builder().phone_called("0731051xxx").build();
    /// let names = KeyNames::from_renames([("PhoneCalled", "phone")])?;
    /// let body = Encoding::Form.encode_named(&call.fields(&TimeZone::UTC), &names);
    /// assert!(std::str::from_utf8(&body)?.contains("&phone=0731051xxx&Reference=&"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_named(self, fields: &Fields<'_>, names: &KeyNames) -> Bytes {
        match self {
            Encoding::Form | Encoding::Query => Bytes::from(form_encode(fields, names)),
            Encoding::Json => {
                // Room for every key and value as they are, plus quotes and separators; only
                // values that need escaping make it grow.
                let room = fields
                    .iter()
                    .zip(names.sent())
                    .map(|((_, v), k)| k.len() + v.map_or(4, str::len) + 6)
                    .sum::<usize>()
                    + 2;
                let mut body = Vec::with_capacity(room);
                serde_json::to_writer(&mut body, &JsonFields(fields, names))
                    .expect("string fields always JSON-encode");
                Bytes::from(body)
            }
        }
    }

    /// The name used in configuration and on the command line: `form` or `json` (and `query`,
    /// the mark of a body encoded for a `GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Form => "form",
            Encoding::Json => "json",
            Encoding::Query => "query",
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "form" => Ok(Encoding::Form),
            "json" => Ok(Encoding::Json),
            "query" => Ok(Encoding::Query),
            _ => Err(crate::Error::config(
                "encoding",
                format!("expected `form` or `json`, got `{s}`"),
            )),
        }
    }
}

/// `key=value` pairs joined by `&`, each byte of key and value serialized as the URL Standard's
/// `application/x-www-form-urlencoded` serializer does: `*-._` and ASCII alphanumerics as they
/// are, space as `+`, every other byte as `%XX` (upper-case hex). Unknown values are empty.
///
/// The exact size is counted first, so the body is written into one allocation of its final
/// size.
fn form_encode(fields: &Fields<'_>, names: &KeyNames) -> Vec<u8> {
    let encoded_len = |bytes: &[u8]| -> usize {
        bytes
            .iter()
            .map(|&b| usize::from(FORM_BYTE[usize::from(b)]))
            .sum()
    };
    // The page's own keys need no escaping (a test holds them to that): when no key is
    // renamed, they are copied as they are and their length is known in advance.
    let default = names.is_default();
    let mut len = if default {
        PAYLOAD_KEYS.iter().map(|k| k.len() + 1).sum::<usize>()
    } else {
        names
            .iter()
            .map(|(_, sent)| encoded_len(sent.as_bytes()) + 1)
            .sum::<usize>()
    } + PAYLOAD_KEYS.len()
        - 1;
    for value in fields.bytes().flatten() {
        len += encoded_len(value);
    }
    let mut out = Vec::with_capacity(len);
    for (i, ((key, sent), value)) in names.iter().zip(fields.bytes()).enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        if default {
            out.extend_from_slice(key.as_bytes());
        } else {
            push_form_encoded(&mut out, sent.as_bytes());
        }
        out.push(b'=');
        if let Some(value) = value {
            push_form_encoded(&mut out, value);
        }
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// How many bytes the form serializer writes for each byte: 1 for `*-._`, ASCII alphanumerics
/// and space (`+`), 3 for every other byte (`%XX`).
static FORM_BYTE: [u8; 256] = {
    let mut table = [3u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'*' | b'-' | b'.' | b'_' | b' ') {
            table[b] = 1;
        }
        b += 1;
    }
    table
};

fn push_form_encoded(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if FORM_BYTE[usize::from(b)] == 1 && b != b' ' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Serializes as a JSON object in wire order (serde_json's own map would sort the keys).
struct JsonFields<'a, 'b>(&'a Fields<'b>, &'a KeyNames);

impl serde::Serialize for JsonFields<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(10))?;
        for ((_, value), key) in self.0.iter().zip(self.1.sent()) {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

/// The body of one delivery: the exact bytes every attempt sends, fixed when the call result
/// is submitted, and the encoding that made them. Made by [`EncodedBody::encode`] from a call
/// result and an account's preferences, or restored from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBody {
    bytes: Bytes,
    encoding: Encoding,
}

impl EncodedBody {
    /// A body restored from storage.
    pub fn from_parts(bytes: Bytes, encoding: Encoding) -> EncodedBody {
        EncodedBody { bytes, encoding }
    }

    /// The bytes sent: the body of a `POST`, or the query a `GET` appends to the URL
    /// ([`Encoding::Query`]).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoding that made them.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{CallResult, PAYLOAD_KEYS};
    use jiff::Timestamp;
    use jiff::tz::TimeZone;
    use proptest::prelude::*;

    fn sample() -> CallResult {
        CallResult::builder()
            .campaign_name("Winter Sale")
            .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
            .phone_called("0731051xxx")
            .reference("123")
            .result("Connected")
            .build()
    }

    #[test]
    fn form_body_matches_the_page() {
        let body = Encoding::Form.encode(&sample().fields(&TimeZone::UTC));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "CampaignName=Winter+Sale&LogDateTime=2019-06-19T16%3A11%3A07&CallStart=&CallEnd=\
             &PhoneCalled=0731051xxx&Reference=123&Result=Connected&ResultNotes=&WrapUpByName=\
             &WrapUpReasonName="
        );
    }

    #[test]
    fn json_body_keeps_order_and_uses_null_for_unknown() {
        let body = Encoding::Json.encode(&sample().fields(&TimeZone::UTC));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with(r#"{"CampaignName":"Winter Sale","LogDateTime":"2019-06-19T16:11:07","CallStart":null"#), "{text}");
        let mut last = 0;
        for key in PAYLOAD_KEYS {
            let at = text.find(&format!("\"{key}\"")).unwrap();
            assert!(at >= last, "{key} out of order");
            last = at;
        }
    }

    #[test]
    fn payload_keys_need_no_form_escaping() {
        for key in PAYLOAD_KEYS {
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        }
    }

    #[test]
    fn renamed_keys_keep_their_place_and_are_escaped() {
        let names = KeyNames::from_renames([
            ("CampaignName", "campaign name & co"),
            ("PhoneCalled", "phone"),
            ("WrapUpReasonName", "réason=✓"),
        ])
        .unwrap();
        let call = sample();
        let fields = call.fields(&TimeZone::UTC);
        let body = Encoding::Form.encode_named(&fields, &names);
        let decoded: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let keys: Vec<&str> = decoded.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, names.sent().collect::<Vec<_>>());
        assert_eq!(decoded[0].1, "Winter Sale");
        assert_eq!(decoded[4], ("phone".into(), "0731051xxx".into()));
        assert_eq!(Encoding::Query.encode_named(&fields, &names), body);

        let body = Encoding::Json.encode_named(&fields, &names);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.starts_with(r#"{"campaign name & co":"Winter Sale","LogDateTime""#),
            "{text}"
        );
        assert!(
            text.contains(r#""phone":"0731051xxx","Reference":"123""#),
            "{text}"
        );
        assert!(text.ends_with(r#""réason=✓":null}"#), "{text}");
    }

    #[test]
    fn encoding_names_parse() {
        assert_eq!("form".parse::<Encoding>().unwrap(), Encoding::Form);
        assert_eq!("json".parse::<Encoding>().unwrap(), Encoding::Json);
        assert_eq!("query".parse::<Encoding>().unwrap(), Encoding::Query);
        assert!(matches!(
            "xml".parse::<Encoding>(),
            Err(crate::Error::InvalidConfig {
                field: "encoding",
                ..
            })
        ));
        assert_eq!(
            Encoding::Json.content_type(),
            HeaderValue::from_static("application/json")
        );
    }

    fn text() -> impl Strategy<Value = String> {
        // Arbitrary Unicode, weighted towards the characters that break naive encoders.
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just('&'),
                    Just('='),
                    Just('+'),
                    Just('%'),
                    Just('#'),
                    Just('\r'),
                    Just('\n'),
                    Just(' '),
                    Just('😀'),
                    Just('é'),
                    Just('\0'),
                    any::<char>()
                ],
                0..24
            )
            .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    fn arbitrary_call() -> impl Strategy<Value = CallResult> {
        (
            proptest::collection::vec(proptest::option::of(text()), 8),
            0i64..4_000_000_000,
        )
            .prop_map(|(t, secs)| {
                let mut b = CallResult::builder().logged_at(Timestamp::from_second(secs).unwrap());
                let mut it = t.into_iter();
                let mut next = || it.next().unwrap();
                if let Some(v) = next() {
                    b = b.campaign_name(v);
                }
                if let Some(v) = next() {
                    b = b.phone_called(v);
                }
                if let Some(v) = next() {
                    b = b.reference(v);
                }
                if let Some(v) = next() {
                    b = b.result(v);
                }
                if let Some(v) = next() {
                    b = b.result_notes(v);
                }
                if let Some(v) = next() {
                    b = b.wrap_up_by_name(v);
                }
                if let Some(v) = next() {
                    b = b.wrap_up_reason_name(v);
                }
                if next().is_some() {
                    b = b.call_start(Timestamp::from_second(secs / 2).unwrap());
                }
                b.build()
            })
    }

    proptest! {
        #[test]
        fn form_body_decodes_to_exactly_the_fields(call in arbitrary_call()) {
            let fields = call.fields(&TimeZone::UTC);
            let body = Encoding::Form.encode(&fields);
            // A standard form parser, independent of the encoder we use.
            let decoded: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            let expected: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.unwrap_or("").to_string()))
                .collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn form_body_is_what_serde_urlencoded_writes(call in arbitrary_call()) {
            let fields = call.fields(&TimeZone::UTC);
            let pairs: Vec<(&str, &str)> =
                fields.iter().map(|(k, v)| (k, v.unwrap_or(""))).collect();
            let expected = serde_urlencoded::to_string(pairs).unwrap();
            let body = Encoding::Form.encode(&fields);
            prop_assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        }

        #[test]
        fn json_body_decodes_to_exactly_the_fields(call in arbitrary_call()) {
            let fields = call.fields(&TimeZone::UTC);
            let body = Encoding::Json.encode(&fields);
            let decoded: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(decoded.len(), 10);
            for (key, value) in fields.iter() {
                let expected = value.map_or(serde_json::Value::Null, |v| v.into());
                prop_assert_eq!(&decoded[key], &expected);
            }
            // Order: keys appear in wire order in the raw text.
            let text = std::str::from_utf8(&body).unwrap();
            let mut last = 0;
            for key in PAYLOAD_KEYS {
                let at = text.find(&format!("\"{key}\":")).unwrap();
                prop_assert!(at >= last);
                last = at;
            }
        }
    }
}
