//! The call result: the ten keys of the product page, and the page's two time formats.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::error::{Error, Result};

/// The ten payload keys, exactly as the product page spells them, in the order they are sent.
pub const PAYLOAD_KEYS: [&str; 10] = [
    "CampaignName",
    "LogDateTime",
    "CallStart",
    "CallEnd",
    "PhoneCalled",
    "Reference",
    "Result",
    "ResultNotes",
    "WrapUpByName",
    "WrapUpReasonName",
];

/// The product page's sample call result (its values, with a campaign name and a result), in
/// the page's JSON shape, for [`CallResult::from_page_json`]: what a test send delivers.
pub const PAGE_SAMPLE_JSON: &str = r#"{
    "CampaignName": "Winter Sale",
    "LogDateTime": "2019-06-19T16:11:07",
    "CallStart": "2019-06-20 01:01:00",
    "CallEnd": "2019-06-20 01:03:00",
    "PhoneCalled": "0731051xxx",
    "Reference": "123",
    "Result": "Connected",
    "WrapUpByName": "agent@pinetree.net.au",
    "WrapUpReasonName": "Payment Taken"
}"#;

/// The result of one call, as the dialer hands it in: instants and strings.
///
/// Every key is always sent. A value left unset is unknown: an empty string in a form body and
/// `null` in JSON. Times are instants; the crate formats `LogDateTime` in UTC and
/// `CallStart`/`CallEnd` in the account's time zone when the body is encoded.
///
/// `Debug` masks `PhoneCalled` and leaves out the text of `ResultNotes`, so a call result can be
/// logged without spilling the contact's details.
///
/// # Examples
///
/// ```
/// use call_result_webhook::CallResult;
/// use jiff::Timestamp;
///
/// let call = CallResult::builder()
///     .campaign_name("Winter Sale")
///     .logged_at("2019-06-19T16:11:07Z".parse::<Timestamp>()?)
///     .call_start("2019-06-19T15:01:00Z".parse::<Timestamp>()?)
///     .call_end("2019-06-19T15:03:00Z".parse::<Timestamp>()?)
///     .phone_called("0731051xxx")
///     .reference("123")
///     .result("Connected")
///     .wrap_up_by_name("agent@pinetree.net.au")
///     .wrap_up_reason_name("Payment Taken")
///     .build();
/// assert_eq!(call.reference(), Some("123"));
/// assert_eq!(call.result_notes(), None); // unknown: sent empty (form) or null (JSON)
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CallResult {
    campaign_name: Option<String>,
    log_date_time: Timestamp,
    call_start: Option<Timestamp>,
    call_end: Option<Timestamp>,
    phone_called: Option<String>,
    reference: Option<String>,
    result: Option<String>,
    result_notes: Option<String>,
    wrap_up_by_name: Option<String>,
    wrap_up_reason_name: Option<String>,
}

impl CallResult {
    /// Starts a call result; every field is unknown until set, and `LogDateTime` defaults to the
    /// moment `build` is called.
    pub fn builder() -> CallResultBuilder {
        CallResultBuilder::default()
    }

    /// `CampaignName`: the campaign's name.
    pub fn campaign_name(&self) -> Option<&str> {
        self.campaign_name.as_deref()
    }
    /// `LogDateTime`: when the result was logged.
    pub fn logged_at(&self) -> Timestamp {
        self.log_date_time
    }
    /// `CallStart`: when the call started, if known.
    pub fn call_start(&self) -> Option<Timestamp> {
        self.call_start
    }
    /// `CallEnd`: when the call ended, if known.
    pub fn call_end(&self) -> Option<Timestamp> {
        self.call_end
    }
    /// `PhoneCalled`: the number dialled, exactly as dialled.
    pub fn phone_called(&self) -> Option<&str> {
        self.phone_called.as_deref()
    }
    /// `Reference`: the customer's own reference for the contact.
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
    /// `Result`: the dial result (an open set: `Connected`, `Temporarily Unavailable`, ...).
    pub fn result(&self) -> Option<&str> {
        self.result.as_deref()
    }
    /// `ResultNotes`: the agent's notes.
    pub fn result_notes(&self) -> Option<&str> {
        self.result_notes.as_deref()
    }
    /// `WrapUpByName`: the agent who wrapped the call up.
    pub fn wrap_up_by_name(&self) -> Option<&str> {
        self.wrap_up_by_name.as_deref()
    }
    /// `WrapUpReasonName`: the wrap-up reason the agent chose.
    pub fn wrap_up_reason_name(&self) -> Option<&str> {
        self.wrap_up_reason_name.as_deref()
    }

    /// The ten values as they go on the wire, in [`PAYLOAD_KEYS`] order: `LogDateTime` in UTC,
    /// `CallStart` and `CallEnd` in `time_zone`, `None` where unknown.
    pub fn fields(&self, time_zone: &TimeZone) -> Fields<'_> {
        fn text(v: &Option<String>) -> Value<'_> {
            v.as_deref().map_or(Value::Unknown, Value::Text)
        }
        let local = |t: Option<Timestamp>| {
            t.map_or(Value::Unknown, |t| {
                Value::Time(CivilText::new(time_zone.to_datetime(t), b' '))
            })
        };
        Fields {
            values: [
                text(&self.campaign_name),
                Value::Time(CivilText::new(
                    TimeZone::UTC.to_datetime(self.log_date_time),
                    b'T',
                )),
                local(self.call_start),
                local(self.call_end),
                text(&self.phone_called),
                text(&self.reference),
                text(&self.result),
                text(&self.result_notes),
                text(&self.wrap_up_by_name),
                text(&self.wrap_up_reason_name),
            ],
        }
    }

    /// Reads a call result written in the page's own shape: one JSON object with the ten keys,
    /// `LogDateTime` as `YYYY-MM-DDTHH:MM:SS` (UTC) and `CallStart`/`CallEnd` as
    /// `YYYY-MM-DD HH:MM:SS` in `time_zone`.
    ///
    /// A missing key or `null` is unknown; `LogDateTime` is required. Unknown keys are refused
    /// (a misspelt key would otherwise vanish). Formatting the result with the same `time_zone`
    /// gives back exactly the strings that were read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCallResult`] naming the field: `(record)` when the text is not one JSON
    /// object of the ten keys (an unknown key, a value that is not a string), `LogDateTime` when
    /// it is missing, and the time field whose value is not in the page's format or (for
    /// `CallStart`/`CallEnd`) does not exist in `time_zone`.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::CallResult;
    /// use jiff::tz::TimeZone;
    ///
    /// let brisbane = TimeZone::get("Australia/Brisbane")?;
    /// let call = CallResult::from_page_json(
    ///     r#"{"LogDateTime": "2019-06-19T16:11:07", "CallStart": "2019-06-20 01:01:00"}"#,
    ///     &brisbane,
    /// )?;
    /// let fields = call.fields(&brisbane);
    /// assert_eq!(fields.get("CallStart"), Some("2019-06-20 01:01:00"));
    /// assert_eq!(fields.get("LogDateTime"), Some("2019-06-19T16:11:07"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_page_json(json: &str, time_zone: &TimeZone) -> Result<CallResult> {
        let page: PageRecord =
            serde_json::from_str(json).map_err(|e| Error::InvalidCallResult {
                field: "(record)",
                reason: e.to_string(),
            })?;
        let log = page.log_date_time.ok_or(Error::InvalidCallResult {
            field: "LogDateTime",
            reason: "missing".into(),
        })?;
        let local = |field, value: Option<String>| -> Result<Option<Timestamp>> {
            match value.as_deref() {
                None | Some("") => Ok(None),
                Some(s) => parse_call_time(field, s, time_zone).map(Some),
            }
        };
        Ok(CallResult {
            campaign_name: page.campaign_name,
            log_date_time: parse_log_time(&log)?,
            call_start: local("CallStart", page.call_start)?,
            call_end: local("CallEnd", page.call_end)?,
            phone_called: page.phone_called,
            reference: page.reference,
            result: page.result,
            result_notes: page.result_notes,
            wrap_up_by_name: page.wrap_up_by_name,
            wrap_up_reason_name: page.wrap_up_reason_name,
        })
    }
}

impl fmt::Debug for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallResult")
            .field("campaign_name", &self.campaign_name)
            .field("log_date_time", &self.log_date_time)
            .field("call_start", &self.call_start)
            .field("call_end", &self.call_end)
            .field("phone_called", &debug_phone(self.phone_called.as_deref()))
            .field("reference", &self.reference)
            .field("result", &self.result)
            .field("result_notes", &debug_notes(self.result_notes.as_deref()))
            .field("wrap_up_by_name", &self.wrap_up_by_name)
            .field("wrap_up_reason_name", &self.wrap_up_reason_name)
            .finish()
    }
}

/// Builds a [`CallResult`]; every setter is optional.
#[derive(Debug, Clone)]
pub struct CallResultBuilder {
    call: CallResult,
    logged_at: Option<Timestamp>,
}

impl Default for CallResultBuilder {
    fn default() -> Self {
        CallResultBuilder {
            call: CallResult {
                campaign_name: None,
                log_date_time: Timestamp::UNIX_EPOCH,
                call_start: None,
                call_end: None,
                phone_called: None,
                reference: None,
                result: None,
                result_notes: None,
                wrap_up_by_name: None,
                wrap_up_reason_name: None,
            },
            logged_at: None,
        }
    }
}

macro_rules! text_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.slot().$name = Some(value.into());
            self
        }
    };
}

impl CallResultBuilder {
    fn slot(&mut self) -> &mut CallResult {
        &mut self.call
    }

    text_setter!(
        /// Sets `CampaignName`.
        campaign_name
    );
    text_setter!(
        /// Sets `PhoneCalled`, sent exactly as given.
        phone_called
    );
    text_setter!(
        /// Sets `Reference`.
        reference
    );
    text_setter!(
        /// Sets `Result`.
        result
    );
    text_setter!(
        /// Sets `ResultNotes` (any Unicode, newlines included).
        result_notes
    );
    text_setter!(
        /// Sets `WrapUpByName`.
        wrap_up_by_name
    );
    text_setter!(
        /// Sets `WrapUpReasonName`.
        wrap_up_reason_name
    );

    /// Sets `LogDateTime`; without it, `build` uses the current time.
    pub fn logged_at(mut self, at: Timestamp) -> Self {
        self.logged_at = Some(at);
        self
    }

    /// Sets `CallStart`.
    pub fn call_start(mut self, at: Timestamp) -> Self {
        self.slot().call_start = Some(at);
        self
    }

    /// Sets `CallEnd`.
    pub fn call_end(mut self, at: Timestamp) -> Self {
        self.slot().call_end = Some(at);
        self
    }

    /// Finishes the call result.
    pub fn build(mut self) -> CallResult {
        self.call.log_date_time = self.logged_at.unwrap_or_else(Timestamp::now);
        self.call
    }
}

/// The ten wire values of one call result, in [`PAYLOAD_KEYS`] order; `None` is unknown.
///
/// Text values are borrowed from the call result and the three times are formatted in place,
/// so making one allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    values: [Value<'a>; 10],
}

/// One wire value.
#[derive(Clone, PartialEq, Eq)]
enum Value<'a> {
    Unknown,
    Text(&'a str),
    Time(CivilText),
    /// A value replaced after the fact (a masked phone number, say).
    Owned(String),
}

impl Value<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Unknown => None,
            Value::Text(s) => Some(s),
            Value::Time(t) => Some(t.as_str()),
            Value::Owned(s) => Some(s),
        }
    }

    fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Unknown => None,
            Value::Text(s) => Some(s.as_bytes()),
            Value::Time(t) => Some(t.as_bytes()),
            Value::Owned(s) => Some(s.as_bytes()),
        }
    }
}

impl Fields<'_> {
    /// `(key, value)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<&str>)> + '_ {
        PAYLOAD_KEYS
            .iter()
            .zip(self.values.iter())
            .map(|(k, v)| (*k, v.as_str()))
    }

    /// The value of `key`, if the key exists and the value is known.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v)
    }

    /// The values' UTF-8 bytes in wire order, for encoders that work on bytes.
    pub(crate) fn bytes(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        self.values.iter().map(Value::as_bytes)
    }

    /// Replaces the value of `key` (`None`: unknown). Returns whether the key exists; an unknown
    /// key changes nothing.
    pub(crate) fn set(&mut self, key: &str, value: Option<String>) -> bool {
        match PAYLOAD_KEYS.iter().position(|k| *k == key) {
            Some(i) => {
                self.values[i] = value.map_or(Value::Unknown, Value::Owned);
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The names the ten keys are sent under: the page's own ([`PAYLOAD_KEYS`]) unless the account
/// renamed some. The order never changes; a renamed key is sent where the page's key would be,
/// in a form body, a JSON body and a `GET` query alike.
///
/// A `KeyNames` always holds ten different names, none empty.
///
/// # Examples
///
/// ```
/// use call_result_webhook::payload::KeyNames;
///
/// let names = KeyNames::from_renames([("PhoneCalled", "phone"), ("Reference", "ref")])?;
/// assert_eq!(names.name("PhoneCalled"), Some("phone"));
/// assert_eq!(names.name("Result"), Some("Result"));
/// assert_eq!(names.renames().count(), 2);
///
/// // Two keys may not be sent under one name.
/// assert!(KeyNames::from_renames([("PhoneCalled", "Reference")]).is_err());
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyNames {
    /// `None`: the page's own name.
    names: [Option<Box<str>>; 10],
}

impl KeyNames {
    /// The page's own names, [`PAYLOAD_KEYS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The page's names with `renames` applied: each pair is a page key (`PhoneCalled`) and
    /// the name to send it under (`phone`). A later pair for the same key wins; a key renamed
    /// to its own name is not renamed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] with field `key_names` when a key is not one of the ten, a new
    /// name is empty, longer than [`MAX_KEY_NAME_BYTES`](crate::limits::MAX_KEY_NAME_BYTES) or
    /// holds a control character, or two keys would be sent under the same name.
    pub fn from_renames<K, N>(renames: impl IntoIterator<Item = (K, N)>) -> Result<KeyNames>
    where
        K: AsRef<str>,
        N: AsRef<str>,
    {
        let mut names = KeyNames::default();
        for (key, name) in renames {
            let (key, name) = (key.as_ref(), name.as_ref());
            let i = Self::check_rename(key, name)?;
            names.names[i] = (name != PAYLOAD_KEYS[i]).then(|| name.into());
        }
        for (i, a) in names.iter().enumerate() {
            if let Some((j, _)) = names
                .iter()
                .enumerate()
                .skip(i + 1)
                .find(|(_, b)| b.1 == a.1)
            {
                return Err(Error::config(
                    "key_names",
                    format!(
                        "`{}` and `{}` would be sent under the same name",
                        PAYLOAD_KEYS[i], PAYLOAD_KEYS[j]
                    ),
                ));
            }
        }
        Ok(names)
    }

    /// Checks one rename alone (the key is one of the ten, the name is acceptable), and
    /// returns the key's position.
    pub(crate) fn check_rename(key: &str, name: &str) -> Result<usize> {
        let Some(i) = PAYLOAD_KEYS.iter().position(|k| *k == key) else {
            return Err(Error::config(
                "key_names",
                format!(
                    "`{}` is not one of the ten payload keys",
                    key.chars().take(40).collect::<String>().escape_debug()
                ),
            ));
        };
        check_key_name(PAYLOAD_KEYS[i], name)?;
        Ok(i)
    }

    /// The name `key` (one of [`PAYLOAD_KEYS`]) is sent under, or `None` for an unknown key.
    pub fn name(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, n)| n)
    }

    /// `(page key, name sent)` for the ten keys, in the order they are sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        PAYLOAD_KEYS
            .iter()
            .zip(self.names.iter())
            .map(|(k, n)| (*k, n.as_deref().unwrap_or(k)))
    }

    /// Only the renamed keys, `(page key, name sent)`, in the order they are sent.
    pub fn renames(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        PAYLOAD_KEYS
            .iter()
            .zip(self.names.iter())
            .filter_map(|(k, n)| n.as_deref().map(|n| (*k, n)))
    }

    /// Whether every key keeps the page's name.
    pub fn is_default(&self) -> bool {
        self.names.iter().all(Option::is_none)
    }

    /// The names in the order they are sent.
    pub(crate) fn sent(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(_, n)| n)
    }
}

impl fmt::Debug for KeyNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.renames()).finish()
    }
}

fn check_key_name(key: &'static str, name: &str) -> Result<()> {
    use crate::limits::MAX_KEY_NAME_BYTES;
    let problem = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > MAX_KEY_NAME_BYTES {
        format!("is longer than {MAX_KEY_NAME_BYTES} bytes")
    } else if name.chars().any(char::is_control) {
        "holds a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::config(
        "key_names",
        format!("the new name of `{key}` {problem}"),
    ))
}

/// Formats `LogDateTime`: `YYYY-MM-DDTHH:MM:SS` in UTC, no zone suffix, no fraction.
pub fn format_log_time(at: Timestamp) -> String {
    CivilText::new(TimeZone::UTC.to_datetime(at), b'T')
        .as_str()
        .to_owned()
}

/// A civil time as the page writes it, `YYYY-MM-DD?HH:MM:SS` with `?` the separator, held in
/// place: 19 bytes, 20 for a year before -999.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CivilText {
    bytes: [u8; 20],
    len: u8,
}

impl CivilText {
    fn new(dt: DateTime, sep: u8) -> Self {
        let two = |n: i8| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        let [mo0, mo1] = two(dt.month());
        let [d0, d1] = two(dt.day());
        let [h0, h1] = two(dt.hour());
        let [mi0, mi1] = two(dt.minute());
        let [s0, s1] = two(dt.second());
        let rest = [
            b'-', mo0, mo1, b'-', d0, d1, sep, h0, h1, b':', mi0, mi1, b':', s0, s1,
        ];
        let mut bytes = [0u8; 20];
        let year = dt.year();
        let year_len = if (0..=9999).contains(&year) {
            let [y0, y1] = two((year / 100) as i8);
            let [y2, y3] = two((year % 100) as i8);
            bytes[..4].copy_from_slice(&[y0, y1, y2, y3]);
            4
        } else {
            // A negative year, as `{:04}` writes it: the sign counts towards the width.
            let mut cursor = std::io::Cursor::new(&mut bytes[..]);
            // Twenty bytes hold any i16 padded to four.
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{year:04}"));
            cursor.position() as usize
        };
        bytes[year_len..year_len + rest.len()].copy_from_slice(&rest);
        CivilText {
            bytes,
            len: (year_len + rest.len()) as u8,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, '-', ':' and the ASCII separator are ever pushed.
        std::str::from_utf8(self.as_bytes()).expect("ASCII")
    }
}

fn parse_log_time(s: &str) -> Result<Timestamp> {
    let field = "LogDateTime";
    let dt = parse_page_time(field, s, 'T')?;
    TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|e| Error::InvalidCallResult {
            field,
            reason: e.to_string(),
        })
}

fn parse_call_time(field: &'static str, s: &str, tz: &TimeZone) -> Result<Timestamp> {
    let bad = |reason: String| Error::InvalidCallResult { field, reason };
    let dt = parse_page_time(field, s, ' ')?;
    let at = tz
        .to_ambiguous_timestamp(dt)
        .compatible()
        .map_err(|e| bad(e.to_string()))?;
    // A local time inside a daylight-saving gap does not exist; refusing it keeps the promise
    // that what is read is exactly what is sent.
    if tz.to_datetime(at) != dt {
        return Err(bad(format!("{s} does not exist in this time zone")));
    }
    Ok(at)
}

/// Reads exactly `YYYY-MM-DD<sep>HH:MM:SS`: fixed width, ASCII digits, a real date and time (no
/// leap second), so that formatting the result gives back the very same text.
fn parse_page_time(field: &'static str, s: &str, sep: char) -> Result<DateTime> {
    let expected = if sep == 'T' {
        "expected YYYY-MM-DDTHH:MM:SS"
    } else {
        "expected YYYY-MM-DD HH:MM:SS"
    };
    let bad = |detail: &str| Error::InvalidCallResult {
        field,
        reason: format!("{expected}{detail}"),
    };
    let b = s.as_bytes();
    let shape_ok = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == sep as u8,
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(bad(""));
    }
    let num = |from: usize, to: usize| -> i16 {
        b[from..to]
            .iter()
            .fold(0i16, |n, d| n * 10 + i16::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7) as i8, num(8, 10) as i8);
    let (hour, minute, second) = (num(11, 13) as i8, num(14, 16) as i8, num(17, 19) as i8);
    DateTime::new(year, month, day, hour, minute, second, 0).map_err(|e| bad(&format!(": {e}")))
}

/// How `PhoneCalled` appears in `Debug` output: masked, as in logs and events.
pub(crate) fn debug_phone(phone: Option<&str>) -> Option<String> {
    phone.map(mask_phone)
}

/// How `ResultNotes` appear in `Debug` output: their length only, never their text.
pub(crate) fn debug_notes(notes: Option<&str>) -> Option<String> {
    notes.map(|n| format!("<{} chars>", n.chars().count()))
}

/// Masks a phone number for logs and events: all but the last three characters become `*`.
pub fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 3 < n { '*' } else { c })
        .collect()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PageRecord {
    #[serde(rename = "CampaignName")]
    campaign_name: Option<String>,
    #[serde(rename = "LogDateTime")]
    log_date_time: Option<String>,
    #[serde(rename = "CallStart")]
    call_start: Option<String>,
    #[serde(rename = "CallEnd")]
    call_end: Option<String>,
    #[serde(rename = "PhoneCalled")]
    phone_called: Option<String>,
    #[serde(rename = "Reference")]
    reference: Option<String>,
    #[serde(rename = "Result")]
    result: Option<String>,
    #[serde(rename = "ResultNotes")]
    result_notes: Option<String>,
    #[serde(rename = "WrapUpByName")]
    wrap_up_by_name: Option<String>,
    #[serde(rename = "WrapUpReasonName")]
    wrap_up_reason_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn page_sample() -> CallResult {
        CallResult::builder()
            .campaign_name("Winter Sale")
            .logged_at(ts("2019-06-19T16:11:07Z"))
            .call_start(ts("2019-06-19T15:01:00Z"))
            .call_end(ts("2019-06-19T15:03:00Z"))
            .phone_called("0731051xxx")
            .reference("123")
            .result("Connected")
            .wrap_up_by_name("agent@pinetree.net.au")
            .wrap_up_reason_name("Payment Taken")
            .build()
    }

    #[test]
    fn formats_the_page_sample_in_brisbane() {
        // The page's sample: LogDateTime in UTC on the 19th, calls at 01:01 local on the 20th.
        let tz = TimeZone::get("Australia/Brisbane").unwrap();
        let call = page_sample();
        let fields = call.fields(&tz);
        assert_eq!(fields.get("LogDateTime"), Some("2019-06-19T16:11:07"));
        assert_eq!(fields.get("CallStart"), Some("2019-06-20 01:01:00"));
        assert_eq!(fields.get("CallEnd"), Some("2019-06-20 01:03:00"));
        let keys: Vec<_> = fields.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, PAYLOAD_KEYS);
    }

    #[test]
    fn utc_is_the_default_reading_and_fractions_are_dropped() {
        let call = CallResult::builder()
            .logged_at(ts("2024-02-29T23:59:59.987Z"))
            .call_start(ts("2024-02-29T23:59:59.5Z"))
            .build();
        let fields = call.fields(&TimeZone::UTC);
        assert_eq!(fields.get("LogDateTime"), Some("2024-02-29T23:59:59"));
        assert_eq!(fields.get("CallStart"), Some("2024-02-29 23:59:59"));
    }

    #[test]
    fn unknown_fields_stay_unknown() {
        let call = CallResult::builder()
            .logged_at(Timestamp::UNIX_EPOCH)
            .build();
        let fields = call.fields(&TimeZone::UTC);
        assert_eq!(fields.iter().filter(|(_, v)| v.is_none()).count(), 9);
        assert_eq!(fields.get("LogDateTime"), Some("1970-01-01T00:00:00"));
    }

    #[test]
    fn time_zone_database_is_bundled() {
        // Works without /usr/share/zoneinfo because the database is compiled in.
        for name in [
            "Australia/Sydney",
            "America/New_York",
            "Europe/London",
            "Asia/Kolkata",
        ] {
            TimeZone::get(name).unwrap();
        }
    }

    #[test]
    fn page_json_round_trips_exactly() {
        let tz = TimeZone::get("Australia/Sydney").unwrap();
        let json = r#"{"CampaignName":"Winter Sale","LogDateTime":"2019-06-19T16:11:07",
            "CallStart":"2019-06-20 01:01:00","CallEnd":"2019-06-20 01:03:00",
            "PhoneCalled":"0731051xxx","Reference":"123","Result":"Connected",
            "ResultNotes":"line one\nline two","WrapUpByName":"agent@pinetree.net.au",
            "WrapUpReasonName":"Payment Taken"}"#;
        let call = CallResult::from_page_json(json, &tz).unwrap();
        let fields = call.fields(&tz);
        let back: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, v) in fields.iter() {
            assert_eq!(back[k].as_str(), v, "{k}");
        }
    }

    #[test]
    fn page_json_refuses_bad_input_naming_the_field() {
        let tz = TimeZone::UTC;
        let cases = [
            (r#"{"CallStart":"2019-06-20 01:01:00"}"#, "LogDateTime"),
            (r#"{"LogDateTime":"2019-06-19 16:11:07"}"#, "LogDateTime"),
            (
                r#"{"LogDateTime":"2019-06-19T16:11:07","CallEnd":"2019-06-20T01:03:00"}"#,
                "CallEnd",
            ),
            (
                r#"{"LogDateTime":"2019-06-19T16:11:07","Phone":"1"}"#,
                "(record)",
            ),
        ];
        for (json, field) in cases {
            match CallResult::from_page_json(json, &tz) {
                Err(Error::InvalidCallResult { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn page_times_must_be_written_exactly_as_the_page_writes_them() {
        // Each of these was once accepted and then sent back changed (found by fuzzing).
        let tz = TimeZone::UTC;
        for log in [
            "2019-6-9T6:1:7",
            "2016-12-31T23:59:60",
            " 2019-06-19T16:11:07",
            "+2019-06-19T16:11:07",
            "-0001-06-19T16:11:07",
            "99-06-19T16:11:07",
            "2019-06-19T16:11:07Z",
            "2019-02-30T16:11:07",
            "２０１９-06-19T16:11:07",
        ] {
            let json = format!(r#"{{"LogDateTime":"{log}"}}"#);
            assert!(
                matches!(
                    CallResult::from_page_json(&json, &tz),
                    Err(Error::InvalidCallResult {
                        field: "LogDateTime",
                        ..
                    })
                ),
                "{log:?}"
            );
        }
        for start in [
            "2019-06-20 01:01: 0",
            "2019-06-20 1:01:00",
            "2019-06-20T01:01:00",
        ] {
            let json = format!(r#"{{"LogDateTime":"2019-06-19T16:11:07","CallStart":"{start}"}}"#);
            assert!(
                matches!(
                    CallResult::from_page_json(&json, &tz),
                    Err(Error::InvalidCallResult {
                        field: "CallStart",
                        ..
                    })
                ),
                "{start:?}"
            );
        }
        let ok =
            CallResult::from_page_json(r#"{"LogDateTime":"0001-01-01T00:00:00"}"#, &tz).unwrap();
        assert_eq!(
            ok.fields(&tz).get("LogDateTime"),
            Some("0001-01-01T00:00:00")
        );
    }

    #[test]
    fn local_time_in_a_dst_gap_is_refused() {
        let tz = TimeZone::get("Australia/Sydney").unwrap();
        let json = r#"{"LogDateTime":"2024-10-06T00:00:00","CallStart":"2024-10-06 02:30:00"}"#;
        assert!(matches!(
            CallResult::from_page_json(json, &tz),
            Err(Error::InvalidCallResult {
                field: "CallStart",
                ..
            })
        ));
    }

    #[test]
    fn debug_masks_phone_and_hides_notes() {
        let call = CallResult::builder()
            .phone_called("0731051234")
            .result_notes("customer's card 4111 1111")
            .build();
        let shown = format!("{call:?}");
        assert!(!shown.contains("0731051234"), "{shown}");
        assert!(shown.contains("*******234"), "{shown}");
        assert!(!shown.contains("4111"), "{shown}");
    }

    /// The page's format as `std::fmt` writes it: what `CivilText` must reproduce.
    fn formatted(dt: DateTime, sep: char) -> String {
        format!(
            "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )
    }

    #[test]
    fn civil_text_at_the_ends_of_the_range() {
        for at in [Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH] {
            let dt = TimeZone::UTC.to_datetime(at);
            assert_eq!(CivilText::new(dt, b'T').as_str(), formatted(dt, 'T'));
        }
        let dt = TimeZone::UTC.to_datetime(Timestamp::MIN);
        assert!(CivilText::new(dt, b' ').as_str().starts_with("-9999-"));
    }

    proptest::proptest! {
        #[test]
        fn civil_text_matches_the_standard_formatter(
            secs in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            local in proptest::bool::ANY,
        ) {
            let at = Timestamp::from_second(secs).unwrap();
            let tz = if local { TimeZone::get("Australia/Sydney").unwrap() } else { TimeZone::UTC };
            let dt = tz.to_datetime(at);
            let (local_text, log_text) = (CivilText::new(dt, b' '), CivilText::new(dt, b'T'));
            proptest::prop_assert_eq!(local_text.as_str(), formatted(dt, ' '));
            proptest::prop_assert_eq!(log_text.as_str(), formatted(dt, 'T'));
        }
    }

    #[test]
    fn fields_can_be_replaced_by_key() {
        let call = page_sample();
        let mut fields = call.fields(&TimeZone::UTC);
        assert!(fields.set("PhoneCalled", Some("*******xxx".into())));
        assert!(fields.set("Reference", None));
        assert!(!fields.set("Phone", Some("1".into())));
        assert_eq!(fields.get("PhoneCalled"), Some("*******xxx"));
        assert_eq!(fields.get("Reference"), None);
        assert_eq!(fields.get("Result"), Some("Connected"));
        assert_eq!(fields.iter().count(), 10);
    }

    #[test]
    fn key_names_rename_in_place_and_refuse_empty_unknown_and_duplicate_names() {
        let names = KeyNames::from_renames([
            ("PhoneCalled", "phone"),
            ("Reference", "PhoneCalled"),
            ("Result", "outcome"),
            ("Result", "Result"),
        ])
        .unwrap();
        let sent: Vec<&str> = names.sent().collect();
        assert_eq!(sent[4..6], ["phone", "PhoneCalled"]);
        assert_eq!(sent[6], "Result");
        assert_eq!(
            names.renames().collect::<Vec<_>>(),
            [("PhoneCalled", "phone"), ("Reference", "PhoneCalled")]
        );
        assert!(KeyNames::new().is_default() && !names.is_default());
        assert_eq!(
            format!("{names:?}"),
            r#"{"PhoneCalled": "phone", "Reference": "PhoneCalled"}"#
        );

        let long = "k".repeat(crate::limits::MAX_KEY_NAME_BYTES + 1);
        for renames in [
            vec![("PhoneCalled", "")],
            vec![("PhoneCalled", long.as_str())],
            vec![("PhoneCalled", "pho\nne")],
            vec![("Phone", "phone")],
            vec![("PhoneCalled", "Reference")],
            vec![("PhoneCalled", "x"), ("Reference", "x")],
        ] {
            assert!(
                matches!(
                    KeyNames::from_renames(renames.clone()),
                    Err(Error::InvalidConfig {
                        field: "key_names",
                        ..
                    })
                ),
                "{renames:?}"
            );
        }
        // Any other text is a name: the encoders escape it.
        assert!(KeyNames::from_renames([("ResultNotes", "notes & more = ✓")]).is_ok());
        assert!(
            KeyNames::from_renames([(
                "PhoneCalled",
                "x".repeat(crate::limits::MAX_KEY_NAME_BYTES)
            )])
            .is_ok()
        );
    }

    #[test]
    fn mask_phone_keeps_last_three() {
        assert_eq!(mask_phone("0731051xxx"), "*******xxx");
        assert_eq!(mask_phone("12"), "12");
        assert_eq!(mask_phone(""), "");
    }
}
