//! The claims this store has handed out: each claimed delivery's fencing token and lease.
//!
//! One process holds the file (an exclusive lock), so claims live in memory: nothing on disk
//! refers to a token, and after a restart nothing is claimed, so everything due is claimable
//! at once. No I/O here.

use std::collections::HashMap;

use jiff::Timestamp;

use crate::store::ClaimToken;

/// The current claim of each claimed delivery, by delivery id.
#[derive(Debug)]
pub(super) struct Claims {
    held: HashMap<String, Held>,
    /// The last token handed out; the next one is greater.
    last_token: u64,
}

#[derive(Debug)]
struct Held {
    token: ClaimToken,
    lease_until: Timestamp,
    /// Its outcome is being written: the claim holds, whatever the time, until the write
    /// has answered.
    recording: bool,
}

/// Why an outcome may not be recorded under a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotCurrent {
    /// The delivery has a claim, under another token (or this one's outcome is being
    /// recorded already).
    Superseded,
    /// The delivery has no claim at all: it may not even be stored.
    Unclaimed,
}

impl Default for Claims {
    /// No claims; tokens start from the wall clock in nanoseconds, so that a token handed out
    /// before a restart is less than any after it (not needed, since nothing outlives the
    /// store, but cheap).
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2));
        Claims {
            held: HashMap::new(),
            last_token: now.min(u64::MAX / 2),
        }
    }
}

impl Claims {
    /// Whether delivery `id` is under a live claim at `now`: its lease runs past `now`, or its
    /// outcome is being recorded.
    pub(super) fn is_live(&self, id: &str, now: Timestamp) -> bool {
        self.held
            .get(id)
            .is_some_and(|h| h.recording || h.lease_until > now)
    }

    /// Claims delivery `id` until `lease_until` with a new token, replacing a claim whose
    /// lease ran out.
    pub(super) fn grant(&mut self, id: &str, lease_until: Timestamp) -> ClaimToken {
        self.last_token += 1;
        let token = ClaimToken::new(self.last_token);
        self.held.insert(
            id.to_owned(),
            Held {
                token,
                lease_until,
                recording: false,
            },
        );
        token
    }

    /// Marks the outcome of delivery `id` under `token` as being recorded, if `token` is the
    /// delivery's current one and no outcome is being recorded under it yet.
    pub(super) fn begin_recording(
        &mut self,
        id: &str,
        token: ClaimToken,
    ) -> Result<(), NotCurrent> {
        match self.held.get_mut(id) {
            Some(held) if held.token == token && !held.recording => {
                held.recording = true;
                Ok(())
            }
            Some(_) => Err(NotCurrent::Superseded),
            None => Err(NotCurrent::Unclaimed),
        }
    }

    /// Ends what [`begin_recording`](Claims::begin_recording) began: a recorded outcome ends
    /// the claim; one that was not written leaves the claim to its lease.
    pub(super) fn finish_recording(&mut self, id: &str, token: ClaimToken, recorded: bool) {
        if let Some(held) = self.held.get_mut(id).filter(|h| h.token == token) {
            if recorded {
                self.held.remove(id);
            } else {
                held.recording = false;
            }
        }
    }

    /// Extends the claim of delivery `id` to `until`, if `token` is its current one.
    pub(super) fn extend(&mut self, id: &str, token: ClaimToken, until: Timestamp) {
        if let Some(held) = self.held.get_mut(id).filter(|h| h.token == token) {
            held.lease_until = held.lease_until.max(until);
        }
    }

    /// Gives the claim of delivery `id` back, if `token` is its current one and its outcome is
    /// not being recorded.
    pub(super) fn release(&mut self, id: &str, token: ClaimToken) {
        if self
            .held
            .get(id)
            .is_some_and(|h| h.token == token && !h.recording)
        {
            self.held.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::t;

    #[test]
    fn a_lease_holds_until_its_end_and_a_new_claim_fences_the_old() {
        let mut claims = Claims::default();
        let first = claims.grant("d1", t(60));
        assert!(claims.is_live("d1", t(59)));
        assert!(!claims.is_live("d1", t(60)));
        assert!(!claims.is_live("d2", t(0)));
        let second = claims.grant("d1", t(120));
        assert!(second > first);
        assert_eq!(
            claims.begin_recording("d1", first),
            Err(NotCurrent::Superseded)
        );
        assert_eq!(
            claims.begin_recording("d2", first),
            Err(NotCurrent::Unclaimed)
        );
    }

    #[test]
    fn recording_holds_the_claim_past_its_lease_and_once_only() {
        let mut claims = Claims::default();
        let token = claims.grant("d1", t(60));
        claims.begin_recording("d1", token).unwrap();
        assert!(claims.is_live("d1", t(1_000)));
        assert_eq!(
            claims.begin_recording("d1", token),
            Err(NotCurrent::Superseded)
        );
        // Released while being recorded: ignored.
        claims.release("d1", token);
        // Not written: the claim stands, to its lease.
        claims.finish_recording("d1", token, false);
        assert!(claims.is_live("d1", t(59)) && !claims.is_live("d1", t(60)));
        claims.begin_recording("d1", token).unwrap();
        claims.finish_recording("d1", token, true);
        assert_eq!(
            claims.begin_recording("d1", token),
            Err(NotCurrent::Unclaimed)
        );
    }

    #[test]
    fn release_needs_the_current_token() {
        let mut claims = Claims::default();
        let old = claims.grant("d1", t(60));
        let new = claims.grant("d1", t(60));
        claims.release("d1", old);
        assert!(claims.is_live("d1", t(0)));
        claims.release("d1", new);
        assert!(!claims.is_live("d1", t(0)));
    }
}
