//! The bounded read of a response body, shared by the backends: what is kept of it, and what a
//! body that does not complete means for the response.
//!
//! A 2xx is delivered once its status line and headers say so; the body only adds a prefix and a
//! [`BodyOutcome`]. For any other status the body is read as before: a body that breaks off or
//! runs past the time limit makes the attempt a [`TransportError`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::response::Parts;

use crate::dispatch::{BodyOutcome, ReceiverResponse, TransportError, TransportErrorKind};
use crate::error::BoxError;

/// The first `limit` bytes of a body, fed chunk by chunk as they arrive.
#[derive(Debug)]
pub(crate) struct Prefix {
    kept: BytesMut,
    limit: usize,
    /// A chunk held more than fitted: the body is known to be longer than the limit.
    overflowed: bool,
}

impl Prefix {
    pub(crate) fn new(limit: usize) -> Self {
        Prefix {
            kept: BytesMut::with_capacity(limit.min(8 * 1024)),
            limit,
            overflowed: false,
        }
    }

    /// Keeps what fits of `data`.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let take = data.len().min(self.limit - self.kept.len());
        self.kept.extend_from_slice(&data[..take]);
        self.overflowed |= take < data.len();
    }

    /// Whether the limit is reached: reading stops here.
    pub(crate) fn is_full(&self) -> bool {
        self.kept.len() >= self.limit
    }

    /// The outcome when reading stopped at the limit: complete only when nothing was cut off
    /// and the backend knows the body ended there (`at_end`).
    pub(crate) fn outcome_when_full(&self, at_end: bool) -> BodyOutcome {
        if at_end && !self.overflowed {
            BodyOutcome::Complete
        } else {
            BodyOutcome::Truncated
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.kept.freeze()
    }
}

/// How a body read ended: the outcome, and for a broken body the backend's error.
pub(crate) struct BodyEnd {
    pub(crate) outcome: BodyOutcome,
    pub(crate) cause: Option<BoxError>,
}

impl BodyEnd {
    pub(crate) fn of(outcome: BodyOutcome) -> Self {
        BodyEnd {
            outcome,
            cause: None,
        }
    }

    pub(crate) fn failed(cause: impl Into<BoxError>) -> Self {
        BodyEnd {
            outcome: BodyOutcome::Failed,
            cause: Some(cause.into()),
        }
    }
}

/// The response, once its body read ended: a 2xx whatever the body did, any other status only
/// when the body prefix was read in full (complete or truncated at the limit). `limit` is the
/// attempt's time limit, for the message of a timeout.
pub(crate) fn settle(
    parts: Parts,
    prefix: Prefix,
    end: BodyEnd,
    limit: Duration,
) -> Result<ReceiverResponse, TransportError> {
    let delivered_anyway = parts.status.is_success();
    match end.outcome {
        BodyOutcome::TimedOut if !delivered_anyway => Err(TransportError::new(
            TransportErrorKind::Timeout,
            format!(
                "the response body did not arrive within {} ms",
                limit.as_millis()
            ),
        )),
        BodyOutcome::Failed if !delivered_anyway => Err(match end.cause {
            Some(cause) => TransportError::new(TransportErrorKind::Io, cause),
            None => TransportError::from_kind(TransportErrorKind::Io),
        }),
        outcome => Ok(
            ReceiverResponse::new(parts.status, parts.headers, prefix.into_bytes())
                .with_body_outcome(outcome),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn parts(code: u16) -> Parts {
        let (parts, ()) = http::Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn prefix_of(data: &[u8], limit: usize) -> Prefix {
        let mut prefix = Prefix::new(limit);
        prefix.push(data);
        prefix
    }

    #[test]
    fn the_prefix_keeps_what_fits_and_knows_when_something_was_cut() {
        let mut prefix = Prefix::new(5);
        prefix.push(b"abc");
        assert!(!prefix.is_full());
        prefix.push(b"de");
        assert!(prefix.is_full());
        assert_eq!(prefix.outcome_when_full(true), BodyOutcome::Complete);
        assert_eq!(prefix.outcome_when_full(false), BodyOutcome::Truncated);
        prefix.push(b"f");
        assert_eq!(prefix.outcome_when_full(true), BodyOutcome::Truncated);
        assert_eq!(&prefix.into_bytes()[..], b"abcde");

        let over = prefix_of(b"abcdefgh", 3);
        assert_eq!(over.outcome_when_full(true), BodyOutcome::Truncated);
        assert!(Prefix::new(0).is_full());
    }

    #[test]
    fn a_2xx_is_a_response_whatever_its_body_did() {
        for end in [
            BodyEnd::of(BodyOutcome::TimedOut),
            BodyEnd::failed("connection reset"),
            BodyEnd::of(BodyOutcome::Truncated),
        ] {
            let outcome = end.outcome;
            let r = settle(
                parts(200),
                prefix_of(b"par", 16),
                end,
                Duration::from_secs(1),
            )
            .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.body_outcome(), outcome);
            assert_eq!(&r.body_prefix()[..], b"par");
        }
    }

    #[test]
    fn another_status_with_a_broken_body_is_a_transport_error() {
        let limit = Duration::from_millis(300);
        let err = settle(
            parts(503),
            Prefix::new(16),
            BodyEnd::of(BodyOutcome::TimedOut),
            limit,
        )
        .unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Timeout);
        let err = settle(parts(404), Prefix::new(16), BodyEnd::failed("reset"), limit).unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Io);
        let r = settle(
            parts(503),
            prefix_of(b"busy", 16),
            BodyEnd::of(BodyOutcome::Complete),
            limit,
        )
        .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body_outcome()),
            (503, BodyOutcome::Complete)
        );
    }
}
