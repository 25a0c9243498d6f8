//! The SQL text of queries, and conversions between rows and the store's types.

use bytes::Bytes;
use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Row, Statement};

use crate::encoding::{EncodedBody, Encoding};
use crate::error::Error;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{Delivery, DeliveryFilter, DeliveryState};

macro_rules! delivery_columns {
    () => {
        "id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state, \
         last_status, last_error, last_attempt_at"
    };
}

/// Stores a new pending delivery, unless its id is stored already or was delivered within the
/// retention: then it changes nothing (0 rows), and [`SAME_DELIVERY`] tells which case it is.
pub(super) const INSERT_DELIVERY: &str = "INSERT INTO deliveries \
    (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 'pending' \
    WHERE NOT EXISTS (SELECT 1 FROM delivered_ids WHERE id = ?1) \
    ON CONFLICT (id) DO NOTHING";

/// Whether the stored delivery with id `?1` is for the same account, campaign and body as the
/// one [`INSERT_DELIVERY`] was given; no row if none is stored.
pub(super) const SAME_DELIVERY: &str = "SELECT account = ?2 AND campaign = ?3 AND body = ?4 \
    AND encoding = ?5 FROM deliveries WHERE id = ?1";

/// Remembers that delivery `?1` was delivered at `?2`, with the fingerprint `?3` of what was
/// delivered.
pub(super) const REMEMBER_DELIVERED: &str = "INSERT INTO delivered_ids \
    (id, delivered_at, fingerprint) VALUES (?1, ?2, ?3) \
    ON CONFLICT (id) DO UPDATE SET delivered_at = max(delivered_at, excluded.delivered_at), \
        fingerprint = coalesce(fingerprint, excluded.fingerprint)";

/// The fingerprint kept with delivered id `?1`: no row if it was not delivered lately, NULL
/// if it was delivered before fingerprints were kept.
pub(super) const DELIVERED_FINGERPRINT: &str =
    "SELECT fingerprint FROM delivered_ids WHERE id = ?1";

/// Forgets at most `?2` delivered ids delivered before `?1`, oldest first.
pub(super) const PRUNE_DELIVERED: &str = "DELETE FROM delivered_ids WHERE id IN \
    (SELECT id FROM delivered_ids WHERE delivered_at < ?1 ORDER BY delivered_at LIMIT ?2)";

/// The newest delivery time remembered: where the pruning clock starts after a restart.
pub(super) const NEWEST_DELIVERED: &str = "SELECT max(delivered_at) FROM delivered_ids";

pub(super) const FIND_DELIVERY: &str = "SELECT rowid, account, campaign, state, encoding, body, \
    attempts FROM deliveries WHERE id = ?1";

pub(super) const DELETE_BY_ROWID: &str = "DELETE FROM deliveries WHERE rowid = ?1";

pub(super) const RECORD_ATTEMPT: &str = "UPDATE deliveries SET attempts = attempts + 1, \
    last_status = ?2, last_error = ?3, last_attempt_at = ?4, state = ?5, \
    next_attempt_at = coalesce(?6, next_attempt_at) WHERE rowid = ?1";

pub(super) const BUMP_STATS: &str = "INSERT INTO stats \
    (account, campaign, pending, delivered, failed, last_success_at, last_failure_at, \
    last_failure_reason) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
    ON CONFLICT (account, campaign) DO UPDATE SET \
    pending = pending + excluded.pending, \
    delivered = delivered + excluded.delivered, \
    failed = failed + excluded.failed, \
    last_success_at = coalesce(excluded.last_success_at, last_success_at), \
    last_failure_reason = CASE WHEN excluded.last_failure_at IS NULL \
        THEN last_failure_reason ELSE excluded.last_failure_reason END, \
    last_failure_at = coalesce(excluded.last_failure_at, last_failure_at)";

/// The newest settings version: the greatest over both `accounts` and `health`, 0 for none.
/// One index seek per table.
macro_rules! settings_version {
    () => {
        "(SELECT max((SELECT coalesce(max(version), 0) FROM accounts), \
         (SELECT coalesce(max(version), 0) FROM health)))"
    };
}

/// The version the next settings save takes.
pub(super) const NEXT_SETTINGS_VERSION: &str = concat!("SELECT ", settings_version!(), " + 1");

/// Saves an account's settings (`?2`) at version `?3` if none are saved for `?1`.
pub(super) const INSERT_ACCOUNT: &str = "INSERT INTO accounts (id, settings, version) \
    VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING";

/// Saves an account's settings (`?2`) at version `?3` if they are still at version `?4`.
pub(super) const UPDATE_ACCOUNT: &str =
    "UPDATE accounts SET settings = ?2, version = ?3 WHERE id = ?1 AND version = ?4";

/// Saves an endpoint's health (`?2`, paused `?3`) at version `?4` if none is saved for `?1`.
pub(super) const INSERT_HEALTH: &str = "INSERT INTO health (account, health, paused, version) \
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account) DO NOTHING";

/// Saves an endpoint's health (`?2`, paused `?3`) at version `?4` if it is still at version
/// `?5`.
pub(super) const UPDATE_HEALTH: &str = "UPDATE health SET health = ?2, paused = ?3, version = ?4 \
    WHERE account = ?1 AND version = ?5";

/// The newest settings version saved: the cursor of a settings snapshot.
pub(super) const SETTINGS_CURSOR: &str = concat!("SELECT ", settings_version!());

/// One account's settings and their version.
pub(super) const LOAD_ACCOUNT: &str = "SELECT settings, version FROM accounts WHERE id = ?1";

/// One endpoint's health and its version.
pub(super) const LOAD_HEALTH: &str = "SELECT health, version FROM health WHERE account = ?1";

/// Accounts' settings saved with a version above `?1`, by account, with their versions.
pub(super) const ACCOUNTS_SINCE: &str =
    "SELECT settings, version FROM accounts WHERE version > ?1 ORDER BY id";

/// At most `?2` accounts' settings with ids after `?1`, in the order of their ids, each with
/// its endpoint's health: a walk of the primary key.
pub(super) const ACCOUNTS_AFTER: &str = "SELECT a.id, a.settings, a.version, h.health, h.version \
    FROM accounts a LEFT JOIN health h ON h.account = a.id \
    WHERE a.id > ?1 ORDER BY a.id LIMIT ?2";

/// Endpoints' health saved with a version above `?1`, by account, with their versions.
pub(super) const HEALTH_SINCE: &str =
    "SELECT account, health, version FROM health WHERE version > ?1 ORDER BY account";

/// Pending deliveries due by `?1`, over every account, earliest first, after the position
/// (`?2` due time, `?3` rowid) a page before ended, at most `?4`: one walk of
/// `deliveries_by_due`, whatever the number of accounts.
pub(super) const DUE_BY_TIME: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", rowid FROM deliveries INDEXED BY deliveries_by_due \
     WHERE state = 'pending' AND next_attempt_at <= ?1 AND (next_attempt_at, rowid) > (?2, ?3) \
     ORDER BY next_attempt_at, rowid LIMIT ?4"
);

/// The ids, accounts and times of the earliest pending deliveries, due or not, after the
/// position (`?1`, `?2`), at most `?3`.
pub(super) const EARLIEST_BY_TIME: &str = "SELECT id, account, next_attempt_at, rowid \
    FROM deliveries INDEXED BY deliveries_by_due WHERE state = 'pending' \
    AND (next_attempt_at, rowid) > (?1, ?2) ORDER BY next_attempt_at, rowid LIMIT ?3";

/// The account first in order with pending deliveries, with the due time and rowid of its
/// earliest one: one seek in `deliveries_due`.
pub(super) const FIRST_PENDING_ACCOUNT: &str = "SELECT account, next_attempt_at, rowid \
    FROM deliveries INDEXED BY deliveries_due WHERE state = 'pending' \
    ORDER BY account, next_attempt_at, rowid LIMIT 1";

/// The account after `?1` in order with pending deliveries, with the due time and rowid of its
/// earliest one: one seek in `deliveries_due`, however many rows `?1` has (a step of a loose
/// index scan).
pub(super) const NEXT_PENDING_ACCOUNT: &str = "SELECT account, next_attempt_at, rowid \
    FROM deliveries INDEXED BY deliveries_due WHERE state = 'pending' AND account > ?1 \
    ORDER BY account, next_attempt_at, rowid LIMIT 1";

/// Account `?1`'s pending deliveries, due or not, earliest first (ties in insertion order);
/// column 12 is the rowid. Read only as far as needed.
pub(super) const PENDING_OF_ACCOUNT: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", rowid FROM deliveries INDEXED BY deliveries_due \
     WHERE account = ?1 AND state = 'pending' ORDER BY next_attempt_at, rowid"
);

/// Whether any delivery is pending: one seek in the pending deliveries' index.
pub(super) const HAS_PENDING: &str =
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE state = 'pending')";

pub(super) const STATS_ACCOUNT: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM stats WHERE account = ?1";

pub(super) const STATS_CAMPAIGN: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM stats WHERE account = ?1 AND campaign = ?2";

/// The start of every query that returns whole deliveries: [`delivery_from_row`] reads its rows.
pub(super) const SELECT_DELIVERIES: &str =
    concat!("SELECT ", delivery_columns!(), " FROM deliveries");

/// The states a filter can match among stored rows (delivered ones are not kept).
pub(super) fn stored_states(state: Option<DeliveryState>) -> &'static [DeliveryState] {
    match state {
        None => &[DeliveryState::Pending, DeliveryState::Failed],
        Some(DeliveryState::Pending) => &[DeliveryState::Pending],
        Some(DeliveryState::Failed) => &[DeliveryState::Failed],
        Some(DeliveryState::Delivered) => &[],
    }
}

/// Appends the `WHERE` clause for `filter` in one stored state: `?1` is the account, `?2` the
/// campaign, `?3` the id. The literal state lets SQLite use that state's partial index.
pub(super) fn push_filter(sql: &mut String, filter: &DeliveryFilter, state: DeliveryState) {
    sql.push_str(" WHERE account = ?1 AND state = '");
    sql.push_str(state.as_str());
    sql.push('\'');
    if filter.campaign.is_some() {
        sql.push_str(" AND campaign = ?2");
    }
    if filter.id.is_some() {
        sql.push_str(" AND id = ?3");
    }
}

pub(super) fn bind_filter(
    stmt: &mut Statement<'_>,
    filter: &DeliveryFilter,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, filter.account.as_str())?;
    if let Some(campaign) = &filter.campaign {
        stmt.raw_bind_parameter(2, campaign.as_str())?;
    }
    if let Some(id) = &filter.id {
        stmt.raw_bind_parameter(3, id.as_str())?;
    }
    Ok(())
}

pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) use crate::store::{clamp_nanos, to_nanos};

pub(super) fn from_nanos(nanos: i64, column: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_nanosecond(nanos.into())
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Integer, e.into()))
}

pub(super) fn optional_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(column)?
        .map(|nanos| from_nanos(nanos, column))
        .transpose()
}

pub(super) fn state_from_sql(row: &Row<'_>, column: usize) -> rusqlite::Result<DeliveryState> {
    let state = row.get_ref(column)?.as_str()?;
    DeliveryState::of_outbox_row(state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            Type::Text,
            format!("unknown delivery state {state:?}").into(),
        )
    })
}

/// A row of [`delivery_columns!`].
pub(super) fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let conversion = |column, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e))
    };
    let id = DeliveryId::new(row.get::<_, String>(0)?).map_err(|e| conversion(0, e))?;
    let encoding: Encoding = row
        .get_ref(4)?
        .as_str()?
        .parse()
        .map_err(|e| conversion(4, e))?;
    Ok(Delivery {
        id,
        account: AccountId::new(row.get::<_, String>(1)?),
        campaign: CampaignId::new(row.get::<_, String>(2)?),
        body: EncodedBody::from_parts(Bytes::copy_from_slice(row.get_ref(3)?.as_blob()?), encoding),
        created_at: from_nanos(row.get(5)?, 5)?,
        next_attempt_at: from_nanos(row.get(6)?, 6)?,
        attempts: row.get(7)?,
        state: state_from_sql(row, 8)?,
        last_status: row.get(9)?,
        last_error: row.get(10)?,
        last_attempt_at: optional_time(row, 11)?,
    })
}
