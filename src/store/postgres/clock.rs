//! The database's clock: the one clock of a fleet.
//!
//! Processes on several hosts share the outbox, and hosts' clocks drift apart. So every time
//! the outbox holds (due times, leases, attempt and delivery times) is on the database
//! server's clock, and so is every comparison between them: the store measures how far this
//! process's system clock is from the server's (the skew, `server - process`), adds it to
//! every time it binds into a statement and takes it from every time it reads back. A
//! caller's time thus keeps its distance from the caller's own now: a retry due in 10 s is
//! due 10 s after the server's now, a lease of 7 s ends 7 s after it, whatever this host's
//! clock says.
//!
//! The skew is measured at open (the best of a few samples of `clock_timestamp()`, each taken
//! between two readings of this process's clock, the one with the shortest round trip kept)
//! and again every [`FOLLOW_EVERY`] (by `skew`). A host whose clock is within [`MARGIN`] of the server's
//! (as NTP keeps it) translates nothing. The skew changes only when a new sample with a short
//! round trip shows it off by more than [`MARGIN`] beyond the sample's own uncertainty, so it
//! stays the same from one call to the next (a step of this host's clock is followed within
//! [`FOLLOW_EVERY`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::error::Result;

use crate::store::{clamp_nanos, from_nanos, to_nanos};

/// How often the skew is measured again.
pub(super) const FOLLOW_EVERY: Duration = Duration::from_secs(10);
/// A later sample counts only if its round trip is this short (or no longer than the kept
/// one's): its midpoint is then within half of it of the server's reading.
const GOOD_ROUND_TRIP: Duration = Duration::from_millis(50);
/// The skew changes only when a good sample shows it off by more than this beyond the
/// sample's own uncertainty.
const MARGIN: SignedDuration = SignedDuration::from_millis(25);

/// One reading of the server's clock, between two readings of this process's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    /// This process's clock just before the statement was sent.
    pub(super) before: Timestamp,
    /// How long the statement's round trip took (measured on the monotonic clock).
    pub(super) round_trip: Duration,
    /// The server's clock, read during the round trip.
    pub(super) server: Timestamp,
}

impl Sample {
    /// The skew this sample suggests: the server's reading less the round trip's midpoint.
    fn skew(&self) -> SignedDuration {
        let half = SignedDuration::try_from(self.round_trip / 2).unwrap_or(SignedDuration::MAX);
        self.server.duration_since(self.before).saturating_sub(half)
    }

    /// The skews this sample allows: the server read its clock between `before` and
    /// `before + round_trip`.
    fn allows(&self) -> (SignedDuration, SignedDuration) {
        let most = self.server.duration_since(self.before);
        let trip = SignedDuration::try_from(self.round_trip).unwrap_or(SignedDuration::MAX);
        (most.saturating_sub(trip), most)
    }

    /// Whether `skew` agrees with this sample, within [`MARGIN`].
    fn agrees(&self, skew: SignedDuration) -> bool {
        let (least, most) = self.allows();
        least.saturating_sub(MARGIN) <= skew && skew <= most.saturating_add(MARGIN)
    }
}

/// The skew kept, and the round trip of the sample it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    skew: SignedDuration,
    round_trip: Duration,
}

/// What the kept skew becomes after `sample`: `None` keeps it.
///
/// The first sample makes it: none when the sample agrees with none (a host kept in step
/// with the server, as NTP keeps it, translates nothing, and times round-trip exactly),
/// else the sample's. After that, only a sample with a round trip as short as
/// [`GOOD_ROUND_TRIP`] (or the kept one's) that disagrees with it changes it.
fn revise(kept: Option<Kept>, sample: &Sample) -> Option<Kept> {
    let new = Kept {
        skew: sample.skew(),
        round_trip: sample.round_trip,
    };
    let Some(kept) = kept else {
        return Some(if sample.agrees(SignedDuration::ZERO) {
            Kept {
                skew: SignedDuration::ZERO,
                ..new
            }
        } else {
            new
        });
    };
    if sample.round_trip > GOOD_ROUND_TRIP.max(kept.round_trip) {
        return None;
    }
    (!sample.agrees(kept.skew)).then_some(new)
}

/// The best of samples taken at once: the shortest round trip.
pub(super) fn best(samples: &[Sample]) -> Option<&Sample> {
    samples.iter().min_by_key(|s| s.round_trip)
}

/// `at` moved by `nanos`, saturating at the ends of jiff's range.
fn shift(at: Timestamp, nanos: i64) -> Timestamp {
    Timestamp::from_nanosecond(at.as_nanosecond() + i128::from(nanos)).unwrap_or(if nanos > 0 {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// How this process's clock translates to the database server's, and back.
#[derive(Debug)]
pub(super) struct ServerClock {
    /// The skew (`server - process`), in nanoseconds.
    skew: AtomicI64,
    /// The round trip of the sample it came from, in nanoseconds; negative before the first.
    round_trip: AtomicI64,
    /// Set by a test: samples change nothing.
    #[cfg(test)]
    pinned: std::sync::atomic::AtomicBool,
}

impl Default for ServerClock {
    fn default() -> Self {
        ServerClock {
            skew: AtomicI64::new(0),
            round_trip: AtomicI64::new(-1),
            #[cfg(test)]
            pinned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl ServerClock {
    /// The skew kept: the server's clock less this process's.
    pub(super) fn skew(&self) -> SignedDuration {
        SignedDuration::from_nanos(self.skew.load(Ordering::Acquire))
    }

    fn kept(&self) -> Option<Kept> {
        let round_trip = u64::try_from(self.round_trip.load(Ordering::Acquire)).ok()?;
        Some(Kept {
            skew: self.skew(),
            round_trip: Duration::from_nanos(round_trip),
        })
    }

    /// Makes the skew `skew` from now on, whatever is measured: a test's stand-in for this
    /// process's clock being off by `-skew`.
    #[cfg(test)]
    pub(super) fn pin(&self, skew: SignedDuration) {
        self.pinned.store(true, Ordering::Release);
        let nanos = i64::try_from(skew.as_nanos()).expect("a skew within i64 nanoseconds");
        self.skew.store(nanos, Ordering::Release);
    }

    /// Takes `sample` into account (see [`revise`]); answers whether the skew changed.
    pub(super) fn consider(&self, sample: &Sample) -> bool {
        #[cfg(test)]
        if self.pinned.load(Ordering::Acquire) {
            return false;
        }
        let before = self.kept();
        let Some(new) = revise(before, sample) else {
            return false;
        };
        let nanos = |d: SignedDuration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.skew.store(nanos(new.skew), Ordering::Release);
        self.round_trip.store(
            i64::try_from(new.round_trip.as_nanos()).unwrap_or(i64::MAX),
            Ordering::Release,
        );
        let skew_ms = new.skew.as_millis();
        if before.is_some() || skew_ms.abs() >= 1000 {
            tracing::info!(
                skew_ms,
                round_trip_us = new.round_trip.as_micros() as u64,
                "outbox: the database's clock is skew_ms ahead of this process's (negative: \
                 behind); times are translated to the database's clock"
            );
        }
        true
    }

    /// The skew to translate by, in nanoseconds.
    fn nanos(&self) -> i64 {
        self.skew.load(Ordering::Acquire)
    }

    /// `at` (this process's clock) as the outbox stores it: nanoseconds on the server's clock.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) for a time outside the years the outbox stores.
    pub(super) fn to_server(&self, at: Timestamp) -> Result<i64> {
        to_nanos(shift(at, self.nanos()))
    }

    /// [`to_server`](Self::to_server) for a bound in a query: a time past the range means
    /// everything.
    pub(super) fn to_server_clamped(&self, at: Timestamp) -> i64 {
        clamp_nanos(shift(at, self.nanos()))
    }

    /// A stored time (nanoseconds on the server's clock) on this process's clock.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) for a stored value that is not a time.
    pub(super) fn read_stored(&self, nanos: i64) -> Result<Timestamp> {
        Ok(shift(from_nanos(nanos)?, -self.nanos()))
    }

    /// [`read_stored`](Self::read_stored) for a column that may be NULL.
    pub(super) fn read_stored_opt(&self, nanos: Option<i64>) -> Result<Option<Timestamp>> {
        nanos.map(|n| self.read_stored(n)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    /// A sample sent at `before_ms` on this clock, `trip_ms` long, read as `server_ms`.
    fn sample(before_ms: i64, trip_ms: u64, server_ms: i64) -> Sample {
        Sample {
            before: at(before_ms),
            round_trip: Duration::from_millis(trip_ms),
            server: at(server_ms),
        }
    }

    fn ms(n: i64) -> SignedDuration {
        SignedDuration::from_millis(n)
    }

    #[test]
    fn a_sample_suggests_the_midpoint_and_allows_its_round_trip() {
        // Sent at 0, back at 10, the server read 120_005: 120 s ahead of the midpoint.
        let s = sample(0, 10, 120_005);
        assert_eq!(s.skew(), ms(120_000));
        assert_eq!(s.allows(), (ms(119_995), ms(120_005)));
        // A clock ahead of the server: a negative skew.
        assert_eq!(sample(120_000, 2, 1).skew(), ms(-120_000));
    }

    #[test]
    fn the_first_sample_is_kept_then_only_a_good_one_that_disagrees_changes_it() {
        // A clock in step within the margin: no skew at all.
        assert_eq!(revise(None, &sample(0, 4, 20)).unwrap().skew, ms(0));
        assert_eq!(revise(None, &sample(0, 4, -21)).unwrap().skew, ms(0));
        assert_eq!(revise(None, &sample(0, 4, 40)).unwrap().skew, ms(38));
        let first = revise(None, &sample(0, 4, 1_002)).unwrap();
        assert_eq!(first.skew, ms(1_000));
        // Within its round trip and the margin: kept, however it jitters.
        assert_eq!(revise(Some(first), &sample(0, 2, 1_020)), None);
        assert_eq!(revise(Some(first), &sample(0, 40, 985)), None);
        // Off by more than the margin beyond the sample's round trip: changed.
        let moved = revise(Some(first), &sample(0, 2, 1_040)).unwrap();
        assert_eq!(moved.skew, ms(1_039));
        let back = revise(Some(first), &sample(0, 2, 960)).unwrap();
        assert_eq!(back.skew, ms(959));
        // A sample with a long round trip says too little: ignored, however far off.
        assert_eq!(revise(Some(first), &sample(0, 400, 60_000)), None);
    }

    #[test]
    fn a_far_server_keeps_samples_as_slow_as_the_first() {
        let first = revise(None, &sample(0, 120, 5_060)).unwrap();
        assert_eq!(first.skew, ms(5_000));
        assert_eq!(
            revise(Some(first), &sample(0, 110, 6_000)).map(|k| k.skew),
            Some(ms(5_945))
        );
        assert_eq!(revise(Some(first), &sample(0, 130, 9_000)), None);
    }

    #[test]
    fn the_best_of_the_open_samples_is_the_shortest_round_trip() {
        let samples = [sample(0, 9, 10), sample(20, 1, 30), sample(40, 5, 50)];
        assert_eq!(best(&samples), Some(&samples[1]));
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn times_go_in_on_the_servers_clock_and_come_out_on_this_processes() {
        let clock = ServerClock::default();
        assert!(clock.consider(&sample(0, 2, 120_001)));
        assert_eq!(clock.skew(), ms(120_000));
        let stored = clock.to_server(at(5)).unwrap();
        assert_eq!(stored, at(120_005).as_nanosecond() as i64);
        assert_eq!(clock.read_stored(stored).unwrap(), at(5));
        assert_eq!(clock.read_stored_opt(None).unwrap(), None);
        // The kept skew stands until a good sample disagrees.
        assert!(!clock.consider(&sample(0, 2, 120_010)));
        assert_eq!(clock.skew(), ms(120_000));
        // A time past the outbox's range is refused, or clamped in a bound.
        assert!(clock.to_server(Timestamp::MAX).is_err());
        assert_eq!(clock.to_server_clamped(Timestamp::MAX), i64::MAX);
    }
}
