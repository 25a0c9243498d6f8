//! The receiving side: what a customer's server written in Rust uses to read the call result it
//! was sent (beside [`verify`](crate::signing::verify) for signatures).

use std::fmt;

use crate::error::{Error, Result};
use crate::payload::{debug_notes, debug_phone};

/// A call result as a receiver reads it: the ten keys as the text that was sent, `None` where the
/// value was unknown (empty in a form body, `null` in JSON).
///
/// Times stay text in the page's formats (`LogDateTime` in UTC, `CallStart`/`CallEnd` in the
/// sending account's time zone). Keys the receiver does not know are ignored, so a receiver keeps
/// working if keys are ever added. `Debug` masks `PhoneCalled` and leaves out the notes' text.
///
/// # Examples
///
/// ```
/// use call_result_webhook::receiver::ReceivedCallResult;
///
/// let body = b"CampaignName=Winter+Sale&LogDateTime=2019-06-19T16%3A11%3A07&CallStart=\
///     &CallEnd=&PhoneCalled=0731051xxx&Reference=123&Result=Connected&ResultNotes=\
///     &WrapUpByName=agent%40pinetree.net.au&WrapUpReasonName=Payment+Taken";
/// let call = ReceivedCallResult::from_body(Some("application/x-www-form-urlencoded"), body)?;
/// assert_eq!(call.reference.as_deref(), Some("123"));
/// assert_eq!(call.wrap_up_by_name.as_deref(), Some("agent@pinetree.net.au"));
/// assert_eq!(call.call_start, None);
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct ReceivedCallResult {
    /// `CampaignName`.
    #[serde(rename = "CampaignName", default)]
    pub campaign_name: Option<String>,
    /// `LogDateTime`, `YYYY-MM-DDTHH:MM:SS` in UTC.
    #[serde(rename = "LogDateTime", default)]
    pub log_date_time: Option<String>,
    /// `CallStart`, `YYYY-MM-DD HH:MM:SS` in the account's time zone.
    #[serde(rename = "CallStart", default)]
    pub call_start: Option<String>,
    /// `CallEnd`, as `CallStart`.
    #[serde(rename = "CallEnd", default)]
    pub call_end: Option<String>,
    /// `PhoneCalled`, as dialled.
    #[serde(rename = "PhoneCalled", default)]
    pub phone_called: Option<String>,
    /// `Reference`.
    #[serde(rename = "Reference", default)]
    pub reference: Option<String>,
    /// `Result`.
    #[serde(rename = "Result", default)]
    pub result: Option<String>,
    /// `ResultNotes`.
    #[serde(rename = "ResultNotes", default)]
    pub result_notes: Option<String>,
    /// `WrapUpByName`.
    #[serde(rename = "WrapUpByName", default)]
    pub wrap_up_by_name: Option<String>,
    /// `WrapUpReasonName`.
    #[serde(rename = "WrapUpReasonName", default)]
    pub wrap_up_reason_name: Option<String>,
}

impl ReceivedCallResult {
    /// Reads a body by its `Content-Type`: JSON for `application/json` (parameters such as
    /// `charset` allowed), the form encoding otherwise, as the product page's default.
    ///
    /// # Errors
    ///
    /// As [`from_json`](Self::from_json) or [`from_form`](Self::from_form).
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Self> {
        let media_type = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if media_type.eq_ignore_ascii_case("application/json") {
            Self::from_json(body)
        } else {
            Self::from_form(body)
        }
    }

    /// Reads an `application/x-www-form-urlencoded` body; an empty value is unknown.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCallResult`] (field `(form body)`) when the body is not a form
    /// encoding of the keys.
    pub fn from_form(body: &[u8]) -> Result<Self> {
        let mut call: ReceivedCallResult =
            serde_urlencoded::from_bytes(body).map_err(|e| Error::InvalidCallResult {
                field: "(form body)",
                reason: e.to_string(),
            })?;
        call.values_mut().for_each(|v| {
            if v.as_deref() == Some("") {
                *v = None;
            }
        });
        Ok(call)
    }

    /// Reads an `application/json` body; `null` is unknown.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCallResult`] (field `(JSON body)`) when the body is not one JSON object
    /// of the keys with string or `null` values.
    pub fn from_json(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(|e| Error::InvalidCallResult {
            field: "(JSON body)",
            reason: e.to_string(),
        })
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Option<String>> {
        [
            &mut self.campaign_name,
            &mut self.log_date_time,
            &mut self.call_start,
            &mut self.call_end,
            &mut self.phone_called,
            &mut self.reference,
            &mut self.result,
            &mut self.result_notes,
            &mut self.wrap_up_by_name,
            &mut self.wrap_up_reason_name,
        ]
        .into_iter()
    }
}

impl fmt::Debug for ReceivedCallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedCallResult")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Encoding;
    use crate::payload::CallResult;
    use jiff::tz::TimeZone;
    use proptest::prelude::*;

    fn as_read(call: &CallResult, tz: &TimeZone) -> Vec<Option<String>> {
        call.fields(tz)
            .iter()
            .map(|(_, v)| v.filter(|v| !v.is_empty()).map(str::to_owned))
            .collect()
    }

    fn values(mut r: ReceivedCallResult) -> Vec<Option<String>> {
        r.values_mut().map(Option::take).collect()
    }

    #[test]
    fn reads_both_encodings_by_content_type() {
        let tz = TimeZone::get("Australia/Brisbane").unwrap();
        let call = CallResult::builder()
            .campaign_name("Winter Sale")
            .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
            .call_start("2019-06-19T15:01:00Z".parse().unwrap())
            .phone_called("0731051xxx")
            .result_notes("a & b = c\nline two ✓")
            .build();
        let fields = call.fields(&tz);
        for (encoding, content_type) in [
            (Encoding::Form, "application/x-www-form-urlencoded"),
            (Encoding::Json, "application/json; charset=utf-8"),
        ] {
            let body = encoding.encode(&fields);
            let read = ReceivedCallResult::from_body(Some(content_type), &body).unwrap();
            assert_eq!(read.call_start.as_deref(), Some("2019-06-20 01:01:00"));
            assert_eq!(values(read), as_read(&call, &tz), "{content_type}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored_and_bad_bodies_are_errors() {
        let read = ReceivedCallResult::from_form(b"Reference=1&FutureKey=x").unwrap();
        assert_eq!(read.reference.as_deref(), Some("1"));
        assert!(matches!(
            ReceivedCallResult::from_json(b"{\"Reference\": 1}"),
            Err(Error::InvalidCallResult { .. })
        ));
        assert!(ReceivedCallResult::from_json(b"not json").is_err());
    }

    #[test]
    fn debug_masks_the_phone_and_hides_the_notes() {
        let read =
            ReceivedCallResult::from_form(b"PhoneCalled=0731051234&ResultNotes=card+4111").unwrap();
        let shown = format!("{read:?}");
        assert!(
            !shown.contains("0731051234") && !shown.contains("4111"),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn what_is_sent_is_what_is_read(
            text in proptest::collection::vec(proptest::option::of(any::<String>()), 7),
            json in any::<bool>(),
        ) {
            let mut b = CallResult::builder().logged_at(jiff::Timestamp::UNIX_EPOCH);
            let mut it = text.into_iter();
            if let Some(v) = it.next().flatten() { b = b.campaign_name(v); }
            if let Some(v) = it.next().flatten() { b = b.phone_called(v); }
            if let Some(v) = it.next().flatten() { b = b.reference(v); }
            if let Some(v) = it.next().flatten() { b = b.result(v); }
            if let Some(v) = it.next().flatten() { b = b.result_notes(v); }
            if let Some(v) = it.next().flatten() { b = b.wrap_up_by_name(v); }
            if let Some(v) = it.next().flatten() { b = b.wrap_up_reason_name(v); }
            let call = b.build();
            let encoding = if json { Encoding::Json } else { Encoding::Form };
            let body = encoding.encode(&call.fields(&TimeZone::UTC));
            let read = ReceivedCallResult::from_body(Some(encoding.content_type().to_str().unwrap()), &body).unwrap();
            let mut got = values(read);
            if json {
                // JSON keeps an empty string apart from null; the form encoding cannot.
                got.iter_mut().for_each(|v| if v.as_deref() == Some("") { *v = None });
            }
            prop_assert_eq!(got, as_read(&call, &TimeZone::UTC));
        }
    }
}
