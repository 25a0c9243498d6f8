//! What one attempt's outcome means: delivered, try again, give up, or pause the endpoint.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use jiff::Timestamp;

use crate::delivery::events::FailureKind;
use crate::dispatch::{ReceiverResponse, TransportError};

/// The meaning of one attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: done.
    Delivered { status: u16 },
    /// Network error, timeout, 408, 425, 429, 5xx: try again on the schedule.
    Retry {
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 3xx, other 4xx, refused destination: failed for good, kept for replay.
    Fail {
        status: Option<u16>,
        reason: String,
        kind: FailureKind,
    },
    /// 410 Gone: pause the endpoint; the delivery stays pending.
    Gone { reason: String },
}

impl Verdict {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Verdict::Delivered { status } => Some(*status),
            Verdict::Retry { status, .. } | Verdict::Fail { status, .. } => *status,
            Verdict::Gone { .. } => Some(410),
        }
    }
}

/// Classifies an attempt's outcome, per the rules the crate documents:
///
/// - 2xx: delivered.
/// - 408, 425, 429, 5xx, and every transport failure except a refused destination: retried,
///   honouring `Retry-After` (read against `now`).
/// - 410: the endpoint is paused; the delivery waits.
/// - 3xx (never followed) and every other 4xx: failed for good, kept for replay.
/// - A destination refused by the address policy, or a request that cannot be sent: failed
///   for good.
/// - 1xx (no final answer): retried.
pub(crate) fn classify(
    outcome: &Result<ReceiverResponse, TransportError>,
    now: Timestamp,
) -> Verdict {
    match outcome {
        Ok(response) => classify_response(response, now),
        Err(err) => classify_transport(err),
    }
}

fn classify_response(response: &ReceiverResponse, now: Timestamp) -> Verdict {
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        return Verdict::Delivered { status: code };
    }
    let reason = describe(status);
    match code {
        410 => Verdict::Gone { reason },
        408 | 425 | 429 | 500..=599 | 100..=199 => Verdict::Retry {
            status: Some(code),
            retry_after: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now)),
            reason,
        },
        300..=399 => Verdict::Fail {
            status: Some(code),
            reason: format!("{reason} (redirects are not followed)"),
            kind: FailureKind::Rejected,
        },
        _ => Verdict::Fail {
            status: Some(code),
            reason,
            kind: FailureKind::Rejected,
        },
    }
}

fn classify_transport(err: &TransportError) -> Verdict {
    let kind = err.kind();
    // Only the kind, and a policy refusal's own message (host, address, rule): a backend's
    // cause may quote the URL, whose query can hold a token.
    let reason = match err.policy_refusal() {
        Some(refusal) => format!("{kind}: {refusal}"),
        None => kind.to_string(),
    };
    if kind.is_retryable() {
        Verdict::Retry {
            status: None,
            reason,
            retry_after: None,
        }
    } else {
        Verdict::Fail {
            status: None,
            reason,
            kind: FailureKind::Refused,
        }
    }
}

fn describe(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("HTTP {} {text}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Reads a `Retry-After` value: delay-seconds (`120`) or an HTTP date (`Wed, 21 Oct 2015
/// 07:28:00 GMT`, and the obsolete RFC 850 and asctime forms), as the time to wait from `now`.
/// A date in the past is no wait. An unreadable value is `None`.
pub(crate) fn parse_retry_after(value: &HeaderValue, now: Timestamp) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is still "a long time".
        let secs = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(u64::MAX / 2)));
    }
    let at = parse_http_date(text)?;
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

fn parse_http_date(text: &str) -> Option<Timestamp> {
    if let Ok(at) = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(text) {
        return Some(at);
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`),
    // which RFC 9110 says a recipient must still accept.
    let rfc850 = text
        .strip_suffix(" GMT")
        .and_then(|t| jiff::civil::DateTime::strptime("%A, %d-%b-%y %H:%M:%S", t).ok());
    let asctime = || {
        let squeezed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        jiff::civil::DateTime::strptime("%a %b %d %H:%M:%S %Y", &squeezed).ok()
    };
    let civil = rfc850.or_else(asctime)?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::TransportErrorKind;
    use bytes::Bytes;
    use http::HeaderMap;

    fn now() -> Timestamp {
        "2024-03-01T00:00:00Z".parse().unwrap()
    }

    fn answer(code: u16, retry_after: Option<&'static str>) -> Verdict {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v.parse().unwrap());
        }
        let r = ReceiverResponse::new(StatusCode::from_u16(code).unwrap(), headers, Bytes::new());
        classify(&Ok(r), now())
    }

    #[test]
    fn every_status_class() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(answer(code, None), Verdict::Delivered { status: code });
        }
        for code in [408, 425, 429, 500, 502, 503, 504, 599, 102] {
            assert!(
                matches!(answer(code, None), Verdict::Retry { status: Some(c), .. } if c == code),
                "{code}"
            );
        }
        for code in [300, 301, 302, 303, 307, 308] {
            let v = answer(code, None);
            assert!(
                matches!(&v, Verdict::Fail { kind: FailureKind::Rejected, reason, .. } if reason.contains("not followed")),
                "{code}: {v:?}"
            );
        }
        for code in [400, 401, 403, 404, 405, 409, 413, 422, 451, 499] {
            assert!(
                matches!(answer(code, None), Verdict::Fail { kind: FailureKind::Rejected, status: Some(c), .. } if c == code),
                "{code}"
            );
        }
        assert_eq!(
            answer(410, None),
            Verdict::Gone {
                reason: "HTTP 410 Gone".into()
            }
        );
        assert!(
            matches!(answer(404, None), Verdict::Fail { reason, .. } if reason == "HTTP 404 Not Found")
        );
    }

    #[test]
    fn a_2xx_is_delivered_whatever_became_of_its_body() {
        use crate::dispatch::BodyOutcome;
        for outcome in [
            BodyOutcome::Complete,
            BodyOutcome::Truncated,
            BodyOutcome::TimedOut,
            BodyOutcome::Failed,
        ] {
            for code in [200, 202, 204] {
                let r = ReceiverResponse::new(
                    StatusCode::from_u16(code).unwrap(),
                    HeaderMap::new(),
                    Bytes::from_static(b"partial"),
                )
                .with_body_outcome(outcome);
                assert_eq!(
                    classify(&Ok(r), now()),
                    Verdict::Delivered { status: code },
                    "{code} {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_read_on_retried_answers() {
        let ra = |v: Verdict| match v {
            Verdict::Retry { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(ra(answer(429, Some("2"))), Some(Duration::from_secs(2)));
        assert_eq!(
            ra(answer(503, Some("Fri, 01 Mar 2024 00:00:30 GMT"))),
            Some(Duration::from_secs(30))
        );
        assert_eq!(ra(answer(503, Some("later"))), None);
        assert_eq!(ra(answer(503, None)), None);
    }

    #[test]
    fn transport_failures() {
        // Every kind another attempt could cure is retried, its name as the reason.
        for kind in TransportErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_retryable())
        {
            let v = classify(&Err(TransportError::from_kind(kind)), now());
            assert_eq!(
                v,
                Verdict::Retry {
                    status: None,
                    reason: kind.to_string(),
                    retry_after: None
                }
            );
        }
        let refused = crate::Error::AddressRefused {
            host: "intranet.example".into(),
            addr: "10.0.0.7".parse().unwrap(),
            rule: "private (RFC 1918)",
        };
        let v = classify(&Err(TransportError::from(refused)), now());
        assert!(
            matches!(&v, Verdict::Fail { kind: FailureKind::Refused, reason, status: None } if reason.contains("10.0.0.7") && reason.contains("private")),
            "{v:?}"
        );
        let v = classify(
            &Err(TransportError::from_kind(
                TransportErrorKind::InvalidRequest,
            )),
            now(),
        );
        assert!(matches!(
            v,
            Verdict::Fail {
                kind: FailureKind::Refused,
                ..
            }
        ));
    }

    #[test]
    fn a_backend_cause_is_never_repeated() {
        let err = TransportError::new(
            TransportErrorKind::Connect,
            "error sending request for url (https://crm.example/h?token=s3cret)",
        );
        let v = classify(&Err(err), now());
        assert!(!format!("{v:?}").contains("s3cret"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(&v("2"), now()),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(&v(" 120 "), now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(&v("0"), now()), Some(Duration::ZERO));
        let huge = parse_retry_after(&v("99999999999999999999999"), now()).unwrap();
        assert!(huge > crate::limits::RETRY_AFTER_CAP);
        // IMF-fixdate, 90 s after t0.
        assert_eq!(
            parse_retry_after(&v("Fri, 01 Mar 2024 00:01:30 GMT"), now()),
            Some(Duration::from_secs(90))
        );
        // Obsolete forms a recipient must still read.
        assert_eq!(
            parse_retry_after(&v("Friday, 01-Mar-24 00:01:30 GMT"), now()),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after(&v("Fri Mar  1 00:01:30 2024"), now()),
            Some(Duration::from_secs(90))
        );
        // A date in the past is no wait.
        assert_eq!(
            parse_retry_after(&v("Thu, 29 Feb 2024 00:00:00 GMT"), now()),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "Fri, 32 Mar 2024 00:00:00 GMT"] {
            assert_eq!(parse_retry_after(&v(bad), now()), None, "{bad:?}");
        }
    }
}
