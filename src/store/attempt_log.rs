//! The attempts log: every attempt a store recorded, newest first, for the administrator's
//! Deliveries screen and its JSON twin.
//!
//! A store writes one [`LoggedAttempt`] for each outcome [`Outbox::record_attempts`] records
//! (with it, or gathered a moment later: an attempt recorded is an attempt logged, and one
//! answered [`Error::LeaseLost`](crate::Error::LeaseLost) is neither), reads them back with
//! [`Outbox::attempts`], newest first and paged by an [`AttemptCursor`], and forgets the oldest
//! with [`Outbox::prune_attempts`] once the retention the dialer set
//! ([`WebhooksBuilder::attempt_retention`](crate::WebhooksBuilder::attempt_retention), 7 days
//! by default) is over.
//!
//! [`Outbox::record_attempts`]: crate::store::Outbox::record_attempts
//! [`Outbox::attempts`]: crate::store::Outbox::attempts
//! [`Outbox::prune_attempts`]: crate::store::Outbox::prune_attempts

use std::time::Duration;

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::NextStep;

/// What came of one logged attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// The receiver answered 2xx: the delivery is done.
    Delivered,
    /// It failed and the delivery is pending again (another attempt is due, or it waits for
    /// its paused endpoint).
    Retrying,
    /// It failed and the delivery failed for good: a dead letter.
    Failed,
}

impl AttemptState {
    /// The state an attempt with this next step ends in.
    pub fn of(next: NextStep) -> AttemptState {
        match next {
            NextStep::Delivered => AttemptState::Delivered,
            NextStep::RetryAt(_) => AttemptState::Retrying,
            NextStep::Failed => AttemptState::Failed,
        }
    }

    /// Its name as stored and in URLs: `delivered`, `retrying`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Delivered => "delivered",
            AttemptState::Retrying => "retrying",
            AttemptState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for AttemptState {
    type Err = Error;

    /// The state [`AttemptState::as_str`] names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming `state` for any other text.
    fn from_str(name: &str) -> Result<AttemptState> {
        match name {
            "delivered" => Ok(AttemptState::Delivered),
            "retrying" => Ok(AttemptState::Retrying),
            "failed" => Ok(AttemptState::Failed),
            _ => Err(Error::InvalidConfig {
                field: "state",
                reason: "expected delivered, retrying or failed".into(),
            }),
        }
    }
}

/// Where a page of the attempts log ends: the next page starts after it (older attempts).
///
/// The number a store gave the attempt when it logged it, greater than that of every attempt
/// the store logged before; the text form is its decimal digits, for a URL's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptCursor(u64);

impl AttemptCursor {
    /// The cursor of the attempt a store numbered `seq`.
    pub fn new(seq: u64) -> Self {
        AttemptCursor(seq)
    }

    /// Its number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for AttemptCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for AttemptCursor {
    type Err = Error;

    /// A cursor [`Display`](std::fmt::Display) wrote.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming `cursor` for anything but
    /// decimal digits that fit in 64 bits.
    fn from_str(text: &str) -> Result<AttemptCursor> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidConfig {
                field: "cursor",
                reason: "expected the number the last page ended at".into(),
            });
        }
        text.parse()
            .map(AttemptCursor)
            .map_err(|_| Error::InvalidConfig {
                field: "cursor",
                reason: "out of range".into(),
            })
    }
}

/// One attempt as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedAttempt {
    /// Its place in the log: hand it to [`AttemptQuery::before`] for the page after it.
    pub cursor: AttemptCursor,
    /// When it finished.
    pub at: Timestamp,
    /// The delivery (its `webhook-id`).
    pub delivery: DeliveryId,
    /// The account.
    pub account: AccountId,
    /// The campaign.
    pub campaign: CampaignId,
    /// The attempt's number, counting from 1 over the delivery's life.
    pub number: u32,
    /// What came of it.
    pub state: AttemptState,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Why it failed, if it did (a failure kind or a status's description; never a secret).
    pub error: Option<String>,
    /// How long it took, from the start of sending to the answer or the failure.
    pub duration: Duration,
    /// The start of the receiver's answer (at most
    /// [`ATTEMPT_ANSWER_BYTES`](crate::limits::ATTEMPT_ANSWER_BYTES), as text), with the
    /// account's own secrets blanked out; empty when none came back.
    pub answer: String,
}

/// Which attempts [`Outbox::attempts`](crate::store::Outbox::attempts) reads: one account's,
/// newest first, at most [`limit`](AttemptQuery::limit), older than a cursor.
///
/// Made with [`AttemptQuery::account`] and narrowed with its builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptQuery {
    /// The account (always required: one account never sees another's attempts).
    pub account: AccountId,
    /// One campaign only, if set.
    pub campaign: Option<CampaignId>,
    /// Only attempts that ended in this state, if set.
    pub state: Option<AttemptState>,
    /// Only attempts logged before this cursor (older ones), if set: the next page.
    pub before: Option<AttemptCursor>,
    /// At most this many.
    pub limit: usize,
}

impl AttemptQuery {
    /// The newest [`ATTEMPT_PAGE`](crate::limits::ATTEMPT_PAGE) attempts of `account`.
    pub fn account(account: impl Into<AccountId>) -> Self {
        AttemptQuery {
            account: account.into(),
            campaign: None,
            state: None,
            before: None,
            limit: crate::limits::ATTEMPT_PAGE,
        }
    }

    /// Narrows to one campaign.
    #[must_use]
    pub fn campaign(mut self, campaign: impl Into<CampaignId>) -> Self {
        self.campaign = Some(campaign.into());
        self
    }

    /// Narrows to attempts that ended in `state`.
    #[must_use]
    pub fn state(mut self, state: AttemptState) -> Self {
        self.state = Some(state);
        self
    }

    /// The page after the one that ended at `cursor`.
    #[must_use]
    pub fn before(mut self, cursor: AttemptCursor) -> Self {
        self.before = Some(cursor);
        self
    }

    /// At most `limit` attempts.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `a` matches (the cursor included; the limit is the reader's).
    pub fn matches(&self, a: &LoggedAttempt) -> bool {
        a.account == self.account
            && self.campaign.as_ref().is_none_or(|c| *c == a.campaign)
            && self.state.is_none_or(|s| s == a.state)
            && self.before.is_none_or(|b| a.cursor < b)
    }
}

/// The start of a receiver's answer as the log keeps it: at most
/// [`ATTEMPT_ANSWER_BYTES`](crate::limits::ATTEMPT_ANSWER_BYTES) bytes, cut at a character's
/// boundary, bytes that are not UTF-8 replaced, control characters but tab and newline
/// replaced, and every one of `secrets` (at least 4 bytes long) blanked out as `[redacted]`,
/// as is the start of one that the backend's prefix cut short at the end.
pub(crate) fn answer_excerpt(body: &[u8], secrets: &[&[u8]]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if let Ok(secret) = std::str::from_utf8(secret)
            && text.contains(secret)
        {
            text = text.replace(secret, "[redacted]");
        }
    }
    // A backend's prefix may have cut a secret short: its start at the end goes too.
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        let cut = (4..secret.len())
            .rev()
            .find(|n| text.as_bytes().ends_with(&secret[..*n]));
        if let Some(n) = cut {
            text.truncate(text.len() - n);
            text.push_str("[redacted]");
            break;
        }
    }
    let limit = crate::limits::ATTEMPT_ANSWER_BYTES;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// An attempts log in memory, as the memory store keeps it: every account's attempts by
/// cursor, and the accounts by cursor for forgetting the oldest; at most `cap` attempts, the
/// oldest dropped first past it.
#[derive(Debug)]
pub(crate) struct MemoryLog {
    by_account:
        std::collections::HashMap<AccountId, std::collections::BTreeMap<u64, LoggedAttempt>>,
    oldest: std::collections::BTreeMap<u64, (Timestamp, AccountId)>,
    last: u64,
    cap: usize,
}

impl Default for MemoryLog {
    /// Empty, holding at most [`MemoryStore::MAX_LOGGED_ATTEMPTS`](crate::MemoryStore::MAX_LOGGED_ATTEMPTS).
    fn default() -> Self {
        MemoryLog {
            by_account: std::collections::HashMap::new(),
            oldest: std::collections::BTreeMap::new(),
            last: 0,
            cap: crate::store::MemoryStore::MAX_LOGGED_ATTEMPTS,
        }
    }
}

impl MemoryLog {
    /// Logs an attempt recorded for `d` (its attempts counted with this one).
    pub(crate) fn log(&mut self, d: &crate::store::Delivery, record: &crate::store::AttemptRecord) {
        self.last += 1;
        let seq = self.last;
        self.oldest.insert(seq, (record.at, d.account.clone()));
        self.by_account
            .entry(d.account.clone())
            .or_default()
            .insert(
                seq,
                LoggedAttempt {
                    cursor: AttemptCursor(seq),
                    at: record.at,
                    delivery: d.id.clone(),
                    account: d.account.clone(),
                    campaign: d.campaign.clone(),
                    number: d.attempts,
                    state: AttemptState::of(record.next),
                    status: record.status,
                    error: record.error.clone(),
                    duration: record.duration,
                    answer: record.answer.clone(),
                },
            );
        while self.oldest.len() > self.cap {
            let Some((seq, (_, account))) = self.oldest.pop_first() else {
                break;
            };
            self.forget(seq, &account);
        }
    }

    fn forget(&mut self, seq: u64, account: &AccountId) {
        if let Some(log) = self.by_account.get_mut(account) {
            log.remove(&seq);
            if log.is_empty() {
                self.by_account.remove(account);
            }
        }
    }

    pub(crate) fn read(&self, query: &AttemptQuery) -> Vec<LoggedAttempt> {
        let Some(log) = self.by_account.get(&query.account) else {
            return Vec::new();
        };
        let end = query.before.map_or(u64::MAX, AttemptCursor::get);
        log.range(..end)
            .rev()
            .map(|(_, a)| a)
            .filter(|a| query.matches(a))
            .take(query.limit)
            .cloned()
            .collect()
    }

    /// Forgets, of the `limit` oldest attempts, those that finished before `before`.
    pub(crate) fn prune(&mut self, before: Timestamp, limit: usize) -> u64 {
        let old: Vec<(u64, AccountId)> = self
            .oldest
            .iter()
            .take(limit)
            .filter(|(_, (at, _))| *at < before)
            .map(|(seq, (_, account))| (*seq, account.clone()))
            .collect();
        for (seq, account) in &old {
            self.oldest.remove(seq);
            self.forget(*seq, account);
        }
        old.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_cursors_read_back_what_they_write() {
        for s in [
            AttemptState::Delivered,
            AttemptState::Retrying,
            AttemptState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<AttemptState>().unwrap(), s);
        }
        assert!("pending".parse::<AttemptState>().is_err());
        let c = AttemptCursor::new(12_345);
        assert_eq!(c.to_string().parse::<AttemptCursor>().unwrap(), c);
        for bad in ["", "-1", "1e3", "99999999999999999999999", " 1"] {
            assert!(bad.parse::<AttemptCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_excerpt_is_bounded_text_without_the_accounts_secrets() {
        let excerpt = answer_excerpt(
            b"echo: Authorization: Basic dXNlcjpwdw== key=s3cr3t-value\x00\x1b[31m",
            &[
                b"Basic dXNlcjpwdw==",
                b"dXNlcjpwdw==",
                b"s3cr3t-value",
                b"pw",
            ],
        );
        assert_eq!(
            excerpt,
            "echo: Authorization: [redacted] key=[redacted]\u{FFFD}\u{FFFD}[31m"
        );
        let long = "é".repeat(crate::limits::ATTEMPT_ANSWER_BYTES);
        let cut = answer_excerpt(long.as_bytes(), &[]);
        assert!(cut.len() <= crate::limits::ATTEMPT_ANSWER_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(answer_excerpt(&[0xff, b'a'], &[]), "\u{FFFD}a");
        assert_eq!(
            answer_excerpt(b"cut short: Basic dXNlcj", &[b"Basic dXNlcjpwdw=="]),
            "cut short: [redacted]"
        );
    }
}
