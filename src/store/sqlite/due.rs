//! Finding due work: the earliest pending deliveries not under a live claim, leaving out the
//! accounts a claim skips (held, paused, or with every place of their endpoint in use). Two
//! walks find them, both in (due time, rowid) order: earliest first, ties in insertion order.
//!
//! - By due time: one walk of `deliveries_by_due` over every account, a page at a time,
//!   passing over rows under a live claim and rows of skipped accounts. Its cost follows the
//!   rows passed over, never the number of accounts: the walk to take while few rows are
//!   skipped (20,000 accounts with a few deliveries each, none skipped).
//! - By account: one seek per account with pending deliveries in `deliveries_due` (a loose
//!   index scan) leaves the skipped accounts out without reading their rows; the others'
//!   earliest rows are then merged by due time. Its cost follows the number of accounts,
//!   never the rows of a skipped account: the walk to take when skipped accounts hold the
//!   backlog (one account at its in-flight bound with 100,000 pending: every walk by due time
//!   would pass over all of them to find nothing).
//!
//! A walk by due time gives up once it has passed over as many skipped rows as there were
//! accounts with pending deliveries at the last walk by account (at least [`MIN_BUDGET`]), and
//! the walk by account takes over. A search so costs at most about twice the cheaper walk,
//! and never grows with the pending rows of skipped accounts. Once a walk by due time has
//! given up, the next [`BY_ACCOUNT_AFTER_GIVING_UP`] searches walk by account straight away:
//! the accounts at their bound that made it give up still hold the earliest rows, usually.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::ids::AccountId;
use crate::store::{ClaimRequest, Delivery};

use super::claims::Claims;
use super::rows::{
    DUE_BY_TIME, EARLIEST_BY_TIME, FIRST_PENDING_ACCOUNT, NEXT_PENDING_ACCOUNT, PENDING_OF_ACCOUNT,
    clamp_nanos, delivery_from_row, sql_limit,
};

/// How many rows one page of a walk by due time reads.
const PAGE: usize = 256;
/// The fewest skipped rows a walk by due time may pass over before the walk by account takes
/// over: about what the walk by account's own statements cost with a single account. Kept
/// low because a worker searches twice (claim, next due) each time an attempt ends, and an
/// account at its bound usually holds the earliest rows: each of those searches passes over
/// this many of them before giving up.
const MIN_BUDGET: usize = 8;

/// Searches that walk by account straight away after a walk by due time gave up; the one
/// after tries by due time again.
const BY_ACCOUNT_AFTER_GIVING_UP: usize = 16;

/// What searches leave for the next ones; kept by the store.
#[derive(Debug, Default)]
pub(super) struct Hints {
    /// Accounts with pending deliveries when a walk by account last counted them: the budget
    /// of skipped rows for a walk by due time.
    accounts: AtomicUsize,
    /// Searches left that walk by account straight away.
    by_account: AtomicUsize,
}

impl Hints {
    fn budget(&self) -> usize {
        self.accounts.load(Ordering::Relaxed).max(MIN_BUDGET)
    }

    /// Whether this search should walk by account straight away (counting it if so).
    fn by_account_first(&self) -> bool {
        self.by_account
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    fn gave_up_by_time(&self) {
        self.by_account
            .store(BY_ACCOUNT_AFTER_GIVING_UP, Ordering::Relaxed);
    }
}

/// A place in either walk: due time in nanoseconds, then rowid.
type Position = (i64, i64);

/// How a walk by due time ended.
enum ByTime<T> {
    /// With the answer.
    Found(T),
    /// Having passed over its budget of skipped rows first.
    OverBudget,
}

/// One search for due work on a read connection, under the store's claims.
pub(super) struct Search<'a> {
    conn: &'a Connection,
    claims: &'a Claims,
    now: Timestamp,
    skip: HashSet<&'a str>,
    hints: &'a Hints,
    /// At most this many of one account's deliveries in flight (a claim's bound), counting
    /// `in_flight`'s; `None`: no bound.
    per_account: Option<usize>,
    in_flight: HashMap<&'a str, usize>,
}

impl<'a> Search<'a> {
    pub(super) fn new(
        conn: &'a Connection,
        claims: &'a Claims,
        now: Timestamp,
        skip: &'a [AccountId],
        hints: &'a Hints,
    ) -> Search<'a> {
        Search {
            conn,
            claims,
            now,
            skip: skip.iter().map(AccountId::as_str).collect(),
            hints,
            per_account: None,
            in_flight: HashMap::new(),
        }
    }

    /// Takes at most the per-account room of `request` (see [`ClaimRequest::room_for`]).
    pub(super) fn with_room(mut self, request: &'a ClaimRequest<'a>) -> Search<'a> {
        self.per_account = request.per_account;
        self.in_flight = request
            .in_flight
            .iter()
            .map(|(account, n)| (account.as_str(), *n))
            .collect();
        self
    }

    /// How many more of `account`'s deliveries this search may take.
    fn room(&self, account: &str) -> usize {
        self.per_account.map_or(usize::MAX, |bound| {
            bound.saturating_sub(self.in_flight.get(account).copied().unwrap_or(0))
        })
    }

    /// The earliest due deliveries not under a live claim, at most `limit`.
    pub(super) fn claimable(&self, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.in_one_snapshot(|| {
            if !self.hints.by_account_first()
                && let ByTime::Found(found) = self.claimable_by_time(limit)?
            {
                return Ok(found);
            }
            self.claimable_by_account(limit)
        })
    }

    /// When the earliest pending delivery not under a live claim is due (due by now or not),
    /// in nanoseconds.
    pub(super) fn next_unclaimed(&self) -> rusqlite::Result<Option<i64>> {
        self.in_one_snapshot(|| {
            if !self.hints.by_account_first()
                && let ByTime::Found(next) = self.next_by_time()?
            {
                return Ok(next);
            }
            self.next_by_account()
        })
    }

    /// Runs `search` in one read transaction. A walk runs many statements (a walk by account
    /// two or three per account); each on its own would be a read transaction of its own,
    /// taking the file's read lock and, whenever the writer committed in between, emptying
    /// the connection's page cache. One transaction also gives every statement the same
    /// snapshot.
    fn in_one_snapshot<T>(
        &self,
        search: impl FnOnce() -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let snapshot = self.conn.unchecked_transaction()?;
        let found = search()?;
        snapshot.commit()?;
        Ok(found)
    }

    fn is_live(&self, row: &Row<'_>) -> rusqlite::Result<bool> {
        Ok(self.claims.is_live(row.get_ref(0)?.as_str()?, self.now))
    }

    fn claimable_by_time(&self, limit: usize) -> rusqlite::Result<ByTime<Vec<Delivery>>> {
        let now = clamp_nanos(self.now);
        let mut budget = self.hints.budget();
        let mut found = Vec::with_capacity(limit.min(PAGE));
        // Taken of each account, against its room: a row past it is passed over like a
        // skipped account's.
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(DUE_BY_TIME)?;
        let mut after = (i64::MIN, i64::MIN);
        while found.len() < limit {
            let mut rows = stmt.query(params![now, after.0, after.1, sql_limit(PAGE)])?;
            let mut read = 0;
            while let Some(row) = rows.next()? {
                read += 1;
                after = (row.get(6)?, row.get(12)?);
                let account = row.get_ref(1)?.as_str()?;
                let full = taken.get(account).copied().unwrap_or(0) >= self.room(account);
                if self.skip.contains(account) || full {
                    if budget == 0 {
                        self.hints.gave_up_by_time();
                        return Ok(ByTime::OverBudget);
                    }
                    budget -= 1;
                } else if !self.is_live(row)? {
                    *taken.entry(account.to_owned()).or_default() += 1;
                    found.push(delivery_from_row(row)?);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if read < PAGE {
                break;
            }
        }
        Ok(ByTime::Found(found))
    }

    fn next_by_time(&self) -> rusqlite::Result<ByTime<Option<i64>>> {
        let mut budget = self.hints.budget();
        let mut stmt = self.conn.prepare_cached(EARLIEST_BY_TIME)?;
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let mut rows = stmt.query(params![after.0, after.1, sql_limit(PAGE)])?;
            let mut read = 0;
            while let Some(row) = rows.next()? {
                read += 1;
                after = (row.get(2)?, row.get(3)?);
                if self.skip.contains(row.get_ref(1)?.as_str()?) {
                    if budget == 0 {
                        self.hints.gave_up_by_time();
                        return Ok(ByTime::OverBudget);
                    }
                    budget -= 1;
                } else if !self.is_live(row)? {
                    return Ok(ByTime::Found(Some(after.0)));
                }
            }
            if read < PAGE {
                return Ok(ByTime::Found(None));
            }
        }
    }

    /// Every account with pending deliveries but the skipped ones, with the position of its
    /// earliest pending delivery, earliest first. One seek per account, skipped ones
    /// included, whatever their rows; the count becomes the next walks' budget.
    fn accounts_by_first(&self) -> rusqlite::Result<Vec<(String, Position)>> {
        let read = |row: &Row<'_>| Ok((row.get::<_, String>(0)?, (row.get(1)?, row.get(2)?)));
        let mut next_account = self.conn.prepare_cached(NEXT_PENDING_ACCOUNT)?;
        let mut at = self
            .conn
            .prepare_cached(FIRST_PENDING_ACCOUNT)?
            .query_row([], read)
            .optional()?;
        let mut counted = 0;
        let mut accounts = Vec::new();
        while let Some((account, first)) = at {
            counted += 1;
            at = next_account.query_row([&account], read).optional()?;
            if !self.skip.contains(account.as_str()) {
                accounts.push((account, first));
            }
        }
        self.hints.accounts.store(counted, Ordering::Relaxed);
        accounts.sort_unstable_by_key(|(_, first)| *first);
        Ok(accounts)
    }

    /// Each account's earliest due rows in turn, in the order of their first ones, kept
    /// sorted and cut to `limit`; no further once an account starts after the last of a full
    /// list, so an account is read only as far as it may still place.
    fn claimable_by_account(&self, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
        let mut found: Vec<(Position, Delivery)> = Vec::new();
        let mut stmt = self.conn.prepare_cached(PENDING_OF_ACCOUNT)?;
        for (account, first) in self.accounts_by_first()? {
            // Nothing after this place can be claimed: it is not due, or a full list ends
            // before it.
            let last = match found.get(limit - 1) {
                Some((position, _)) => *position,
                None => (clamp_nanos(self.now), i64::MAX),
            };
            if first > last {
                break;
            }
            let mut rows = stmt.query([&account])?;
            let mut taken = 0;
            let room = limit.min(self.room(&account));
            while taken < room {
                let Some(row) = rows.next()? else { break };
                let position = (row.get(6)?, row.get(12)?);
                if position > last {
                    break;
                }
                if !self.is_live(row)? {
                    found.push((position, delivery_from_row(row)?));
                    taken += 1;
                }
            }
            found.sort_unstable_by_key(|(position, _)| *position);
            found.truncate(limit);
        }
        Ok(found.into_iter().map(|(_, delivery)| delivery).collect())
    }

    /// Each account's earliest pending row not under a live claim, in the order of their
    /// first ones; no further once an account starts after the best found.
    fn next_by_account(&self) -> rusqlite::Result<Option<i64>> {
        let mut best: Option<Position> = None;
        let mut stmt = self.conn.prepare_cached(PENDING_OF_ACCOUNT)?;
        for (account, first) in self.accounts_by_first()? {
            if best.is_some_and(|best| first >= best) {
                break;
            }
            let mut rows = stmt.query([&account])?;
            while let Some(row) = rows.next()? {
                let position = (row.get(6)?, row.get(12)?);
                if best.is_some_and(|best| position >= best) {
                    break;
                }
                if !self.is_live(row)? {
                    best = Some(position);
                    break;
                }
            }
        }
        Ok(best.map(|(due, _)| due))
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::store::conformance::{new_deliveries, t};
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::rows::DUE_BY_TIME;
    use crate::store::{NewDelivery, Outbox};

    /// A store holding `deliveries`, and a connection of the test's own to read it with.
    fn stored(deliveries: &[NewDelivery]) -> (tempfile::TempDir, SqliteStore, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("outbox.db")).unwrap();
        store.insert(deliveries).unwrap();
        let conn = Connection::open(store.path()).unwrap();
        (dir, store, conn)
    }

    /// Every pending delivery's id, account, due time and rowid, in the order both walks
    /// follow.
    fn pending(conn: &Connection) -> Vec<(String, String, Position)> {
        let mut stmt = conn
            .prepare(
                "SELECT id, account, next_attempt_at, rowid FROM deliveries \
                 WHERE state = 'pending' ORDER BY next_attempt_at, rowid",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, (r.get(2)?, r.get(3)?))))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn ids(found: &[Delivery]) -> Vec<String> {
        found.iter().map(|d| d.id.to_string()).collect()
    }

    #[test]
    fn both_walks_find_the_earliest_work_left_out_of_skipped_accounts_and_live_claims() {
        // Five accounts inserted in turn, due times mixed between and within them, ties
        // included; acct-1 (skipped) holds more rows than the smallest budget.
        let mut deliveries = Vec::new();
        for account in 0..5_i64 {
            let rows = if account == 1 { 100 } else { 20 };
            for (i, mut d) in new_deliveries(&format!("acct-{account}"), "c1", rows)
                .into_iter()
                .enumerate()
            {
                d.next_attempt_at = t((i as i64 * 7 + account * 3) % 50);
                deliveries.push(d);
            }
        }
        let (_dir, _store, conn) = stored(&deliveries);
        let now = t(30);
        let mut claims = Claims::default();
        for id in ["msg_acct-0_c1_0", "msg_acct-2_c1_1", "msg_acct-4_c1_3"] {
            claims.grant(id, t(100));
        }
        // A lease that ran out: claimable again.
        claims.grant("msg_acct-3_c1_0", t(10));
        let skip = [AccountId::new("acct-1")];
        let live = |id: &str| claims.is_live(id, now);
        let open: Vec<(String, Position)> = pending(&conn)
            .into_iter()
            .filter(|(id, account, _)| account != "acct-1" && !live(id))
            .map(|(id, _, position)| (id, position))
            .collect();

        let hints = Hints::default();
        let search = Search::new(&conn, &claims, now, &skip, &hints);
        for limit in [1, 2, 5, 13, 40, 1_000] {
            let want: Vec<String> = open
                .iter()
                .filter(|(_, (due, _))| *due <= clamp_nanos(now))
                .take(limit)
                .map(|(id, _)| id.clone())
                .collect();
            // No budget to run out of: a walk by account leaves its count behind.
            hints.accounts.store(usize::MAX, Ordering::Relaxed);
            let ByTime::Found(by_time) = search.claimable_by_time(limit).unwrap() else {
                panic!("a budget of usize::MAX runs out");
            };
            assert_eq!(ids(&by_time), want, "by due time, limit {limit}");
            let by_account = search.claimable_by_account(limit).unwrap();
            assert_eq!(ids(&by_account), want, "by account, limit {limit}");
        }
        // The walk by account counted every account, acct-1 included.
        assert_eq!(hints.accounts.load(Ordering::Relaxed), 5);

        let next = open.first().map(|(_, (due, _))| *due);
        hints.accounts.store(usize::MAX, Ordering::Relaxed);
        assert!(matches!(search.next_by_time().unwrap(), ByTime::Found(n) if n == next));
        assert_eq!(search.next_by_account().unwrap(), next);

        // With the smallest budget, acct-1's rows send both searches to the walk by account,
        // which answers the same.
        let hints = Hints::default();
        let search = Search::new(&conn, &claims, t(60), &skip, &hints);
        assert!(matches!(
            search.claimable_by_time(1_000).unwrap(),
            ByTime::OverBudget
        ));
        assert_eq!(ids(&search.claimable(1_000).unwrap()).len(), open.len());
        assert_eq!(search.next_unclaimed().unwrap(), next);
        // Both went by account straight away, and so will the next searches, for a while.
        assert_eq!(
            hints.by_account.load(Ordering::Relaxed),
            BY_ACCOUNT_AFTER_GIVING_UP - 2
        );
    }

    #[test]
    fn a_search_reads_as_much_whatever_the_backlog_of_skipped_accounts() {
        // Virtual machine steps of one claim and one next due, with `busy` skipped: at its
        // in-flight bound, holding every row due before `quiet`'s one.
        let steps = |backlog: usize| -> i32 {
            let mut deliveries = new_deliveries("busy", "c1", backlog);
            let mut quiet = new_deliveries("quiet", "c1", 1);
            quiet[0].next_attempt_at = t(backlog as i64);
            deliveries.append(&mut quiet);
            let (_dir, _store, conn) = stored(&deliveries);
            let mut claims = Claims::default();
            for d in &deliveries[..32] {
                claims.grant(d.id.as_str(), t(1_000_000));
            }
            let skip = [AccountId::new("busy")];
            let hints = Hints::default();
            let search = Search::new(&conn, &claims, t(backlog as i64), &skip, &hints);
            for _ in 0..2 {
                assert_eq!(ids(&search.claimable(32).unwrap()), ["msg_quiet_c1_0"]);
                assert_eq!(
                    search.next_unclaimed().unwrap(),
                    Some(clamp_nanos(t(backlog as i64)))
                );
            }
            [
                DUE_BY_TIME,
                EARLIEST_BY_TIME,
                FIRST_PENDING_ACCOUNT,
                NEXT_PENDING_ACCOUNT,
                PENDING_OF_ACCOUNT,
            ]
            .iter()
            .map(|sql| {
                conn.prepare_cached(sql)
                    .unwrap()
                    .get_status(StatementStatus::VmStep)
            })
            .sum()
        };
        let (small, large) = (steps(1_000), steps(10_000));
        eprintln!("{small} steps over 1,000 skipped rows, {large} over 10,000");
        assert!(
            large <= small + small / 10,
            "{large} steps over 10,000 skipped rows, {small} over 1,000"
        );
    }

    #[test]
    fn searches_run_their_statements_as_compiled_once() {
        // A read connection as the store opens it; pages of a walk by due time bind a new
        // position and limit each time, which must not make SQLite compile them again.
        let deliveries = new_deliveries("a", "c1", 600);
        let (_dir, store, _conn) = stored(&deliveries);
        let conn = crate::store::sqlite::schema::open_reader(store.path()).unwrap();
        let claims = Claims::default();
        let hints = Hints::default();
        let search = Search::new(&conn, &claims, t(1_000), &[], &hints);
        for limit in [1, 300, 7, 600] {
            assert_eq!(search.claimable_by_account(limit).unwrap().len(), limit);
            let ByTime::Found(found) = search.claimable_by_time(limit).unwrap() else {
                panic!("nothing skipped, yet over budget");
            };
            assert_eq!(found.len(), limit);
            assert!(matches!(
                search.next_by_time().unwrap(),
                ByTime::Found(Some(_))
            ));
        }
        for sql in [
            DUE_BY_TIME,
            EARLIEST_BY_TIME,
            FIRST_PENDING_ACCOUNT,
            NEXT_PENDING_ACCOUNT,
            PENDING_OF_ACCOUNT,
        ] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert!(stmt.get_status(StatementStatus::Run) > 0, "{sql} never ran");
            assert_eq!(
                stmt.get_status(StatementStatus::RePrepare),
                0,
                "{sql} was compiled again"
            );
        }
    }

    #[test]
    fn the_walk_by_account_seeks_and_never_sorts() {
        let (_dir, _store, conn) = stored(&[]);
        for sql in [
            FIRST_PENDING_ACCOUNT,
            NEXT_PENDING_ACCOUNT,
            PENDING_OF_ACCOUNT,
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().unwrap() {
                let step: String = row.get(3).unwrap();
                assert!(
                    step.contains("INDEX deliveries_due") && !step.contains("TEMP B-TREE"),
                    "{sql}: {step}"
                );
            }
        }
    }
}
