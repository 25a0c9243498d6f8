//! The SQL text of every statement, made once per schema, and conversions between rows and
//! the store's types.

use bytes::Bytes;
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::request::EncodedBody;
use crate::store::{Delivery, DeliveryState};

/// `name` as a quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal (`standard_conforming_strings`, on since 9.1).
pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `sql` with `{s}` made the quoted schema, `{ch}` the notification channel as a literal and
/// `{tokens}`/`{versions}` the sequences as literals for `nextval`. One pass: a schema name
/// that itself holds braces is not read as a placeholder.
pub(super) fn with_schema(sql: &str, schema: &str) -> String {
    let s = quote_ident(schema);
    let tokens = quote_literal(&format!("{s}.claim_tokens"));
    let versions = quote_literal(&format!("{s}.settings_versions"));
    let ch = quote_literal(schema);
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (text, len) = [
            ("{s}", &s),
            ("{ch}", &ch),
            ("{tokens}", &tokens),
            ("{versions}", &versions),
        ]
        .into_iter()
        .find(|(key, _)| rest.starts_with(key))
        .map_or(("{", 1), |(key, value)| (value.as_str(), key.len()));
        out.push_str(text);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// The payload of a notice of new due work.
pub(super) const DUE_PAYLOAD: &str = "due";
/// The payload of a notice of changed settings.
pub(super) const SETTINGS_PAYLOAD: &str = "settings";

/// The columns [`delivery_from_row`] reads, in order.
const DELIVERY_COLUMNS: &str = "id, account, campaign, body, encoding, created_at, \
    next_attempt_at, attempts, state, last_status, last_error, last_attempt_at";

/// How a counter row takes a change: counts add up, the latest times win (several processes
/// may commit out of time order).
const MERGE_STATS: &str = "ON CONFLICT (account, campaign) DO UPDATE SET \
    pending = t.pending + excluded.pending, \
    delivered = t.delivered + excluded.delivered, \
    failed = t.failed + excluded.failed, \
    last_success_at = greatest(t.last_success_at, excluded.last_success_at), \
    last_failure_reason = CASE WHEN excluded.last_failure_at IS NOT NULL \
        AND (t.last_failure_at IS NULL OR excluded.last_failure_at >= t.last_failure_at) \
        THEN excluded.last_failure_reason ELSE t.last_failure_reason END, \
    last_failure_at = greatest(t.last_failure_at, excluded.last_failure_at)";

/// Inserts one delivery unless its id is stored or was delivered within the retention; counts
/// it; announces it. Answers one row, one text column: see [`super::enqueue_statement`].
const ENQUEUE: &str = "WITH ins AS ( \
    INSERT INTO {s}.deliveries \
        (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    SELECT $1::text, $2::text, $3::text, $4::bytea, $5::text, $6::bigint, $7::bigint, 0, 'pending' \
    WHERE NOT EXISTS (SELECT 1 FROM {s}.delivered_ids WHERE id = $1::text) \
    ON CONFLICT (id) DO NOTHING \
    RETURNING account, campaign), \
st AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending) \
    SELECT account, campaign, 1 FROM ins \
    ON CONFLICT (account, campaign) DO UPDATE SET pending = t.pending + excluded.pending) \
SELECT CASE \
    WHEN EXISTS (SELECT 1 FROM ins) THEN 'stored' || pg_notify({ch}, 'due')::text \
    WHEN EXISTS (SELECT 1 FROM {s}.delivered_ids WHERE id = $1::text) THEN 'delivered' \
    ELSE coalesce(( \
        SELECT CASE WHEN account = $2::text AND campaign = $3::text AND body = $4::bytea \
            AND encoding = $5::text THEN 'duplicate' ELSE 'conflict' END \
        FROM {s}.deliveries WHERE id = $1::text), 'raced') \
END AS outcome";

/// Inserts a batch (arrays, one element per delivery, ids unique) and counts what was new;
/// answers the ids stored.
const INSERT: &str = "WITH n AS ( \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], \
        $6::bigint[], $7::bigint[]) \
        AS n(id, account, campaign, body, encoding, created_at, next_attempt_at)), \
ins AS ( \
    INSERT INTO {s}.deliveries \
        (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    SELECT id, account, campaign, body, encoding, created_at, next_attempt_at, 0, 'pending' \
    FROM n WHERE NOT EXISTS (SELECT 1 FROM {s}.delivered_ids x WHERE x.id = n.id) \
    ON CONFLICT (id) DO NOTHING \
    RETURNING id, account, campaign), \
st AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending) \
    SELECT account, campaign, count(*) FROM ins \
    GROUP BY account, campaign ORDER BY account, campaign \
    ON CONFLICT (account, campaign) DO UPDATE SET pending = t.pending + excluded.pending) \
SELECT id FROM ins";

/// A group of submits in ONE statement (so one round trip and, in autocommit, one commit):
/// the rows of `$1`..`$7` not stored or delivered lately are inserted, counted and announced,
/// unless the outbox would pass `$8` pending. Answers one row per input row: whether it was
/// inserted, the outbox's pending count before, and, for an id stored before, what is stored
/// under it (to tell a repeat from a conflict; all NULL when another transaction stored it at
/// the same moment, unseen by this one).
const INSERT_GROUP: &str = "WITH n AS ( \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], \
        $6::bigint[], $7::bigint[]) \
        AS n(id, account, campaign, body, encoding, created_at, next_attempt_at)), \
total AS (SELECT coalesce(sum(pending), 0)::bigint AS pending FROM {s}.stats), \
ins AS ( \
    INSERT INTO {s}.deliveries \
        (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    SELECT id, account, campaign, body, encoding, created_at, next_attempt_at, 0, 'pending' \
    FROM n WHERE NOT EXISTS (SELECT 1 FROM {s}.delivered_ids x WHERE x.id = n.id) \
        AND (SELECT pending FROM total) + cardinality($1::text[]) <= $8::bigint \
    ON CONFLICT (id) DO NOTHING \
    RETURNING id, account, campaign), \
st AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending) \
    SELECT account, campaign, count(*) FROM ins \
    GROUP BY account, campaign ORDER BY account, campaign \
    ON CONFLICT (account, campaign) DO UPDATE SET pending = t.pending + excluded.pending) \
SELECT n.id, ins.id IS NOT NULL AS inserted, (SELECT pending FROM total) AS pending_before, \
    d.account, d.campaign, d.body, d.encoding, \
    EXISTS (SELECT 1 FROM {s}.delivered_ids x WHERE x.id = n.id) AS delivered, \
    (SELECT count(pg_notify({ch}, 'due')) FROM (SELECT 1 FROM ins LIMIT 1) one) AS notified \
FROM n LEFT JOIN ins ON ins.id = n.id LEFT JOIN {s}.deliveries d ON d.id = n.id";

/// The stored account, campaign and body of the ids in `$1`.
const STORED: &str =
    "SELECT id, account, campaign, body, encoding FROM {s}.deliveries WHERE id = ANY($1::text[])";

const PENDING_TOTAL: &str = "SELECT coalesce(sum(pending), 0)::bigint FROM {s}.stats";

const NOTIFY_DUE: &str = "SELECT pg_notify({ch}, 'due')";

/// What a claim may take and what `next_due` looks at, written once so the two never disagree:
/// pending, not under a live lease at `now` (the parameter `$now`), not of an account in
/// `$skip`, nor of one whose endpoint was last saved paused (a pause holds the whole fleet).
macro_rules! claimable {
    ($now:literal, $skip:literal) => {
        concat!(
            "state = 'pending' AND (lease_until IS NULL OR lease_until <= ",
            $now,
            "::bigint) AND account <> ALL(",
            $skip,
            "::text[]) AND account NOT IN (SELECT account FROM {s}.health WHERE paused)"
        )
    };
}

/// `$1` now, `$2` the new lease's end, `$3` accounts to skip, `$4` the limit.
///
/// The claimed rows are updated through `id = ANY (ARRAY (...))`, not `FROM c WHERE d.id =
/// c.id`: with the limit a parameter, the generic plan the server switches to after five
/// executions guesses a tenth of the table for `c` and joins it to a sequential scan of
/// `deliveries` (300 ms on a million rows); the array keeps it on the primary key.
const CLAIM: &str = concat!(
    "WITH c AS MATERIALIZED ( \
    SELECT id FROM {s}.deliveries WHERE next_attempt_at <= $1::bigint AND ",
    claimable!("$1", "$3"),
    " ORDER BY next_attempt_at LIMIT $4::bigint \
    FOR UPDATE SKIP LOCKED) \
UPDATE {s}.deliveries d SET lease_until = $2::bigint, claim_token = nextval({tokens}) \
WHERE d.id = ANY (ARRAY (SELECT id FROM c)) \
RETURNING d.id, d.account, d.campaign, d.body, d.encoding, d.created_at, d.next_attempt_at, \
    d.attempts, d.state, d.last_status, d.last_error, d.last_attempt_at, d.claim_token, \
    d.lease_until"
);

/// `$1` now, `$2` accounts to skip.
const NEXT_DUE: &str = concat!(
    "SELECT next_attempt_at FROM {s}.deliveries WHERE ",
    claimable!("$1", "$2"),
    " ORDER BY next_attempt_at LIMIT 1"
);

/// A retry or a failure under claim `$2` of delivery `$1`: `$3` status, `$4` error, `$5` when,
/// `$6` the new state, `$7` the retry's time. Answers how many rows it changed (0 or 1).
const RECORD_KEPT: &str = "WITH u AS ( \
    UPDATE {s}.deliveries SET attempts = attempts + 1, last_status = $3::integer, \
        last_error = $4::text, last_attempt_at = $5::bigint, state = $6::text, \
        next_attempt_at = coalesce($7::bigint, next_attempt_at), \
        lease_until = NULL, claim_token = NULL \
    WHERE id = $1::text AND claim_token = $2::bigint AND state = 'pending' \
    RETURNING account, campaign), \
st AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending, failed, last_failure_at, \
        last_failure_reason) \
    SELECT account, campaign, \
        CASE WHEN $6::text = 'failed' THEN -1 ELSE 0 END, \
        CASE WHEN $6::text = 'failed' THEN 1 ELSE 0 END, \
        CASE WHEN $4::text IS NULL THEN NULL ELSE $5::bigint END, $4::text \
    FROM u WHERE $6::text = 'failed' OR $4::text IS NOT NULL \
    MERGE_STATS) \
SELECT count(*) FROM u";

/// A delivery under claim `$2` of delivery `$1` delivered at `$3` (`$4`: an error noted on
/// the way). Answers how many rows it removed (0 or 1).
const RECORD_DELIVERED: &str = "WITH d AS ( \
    DELETE FROM {s}.deliveries \
    WHERE id = $1::text AND claim_token = $2::bigint AND state = 'pending' \
    RETURNING id, account, campaign), \
r AS ( \
    INSERT INTO {s}.delivered_ids AS x (id, delivered_at) SELECT id, $3::bigint FROM d \
    ON CONFLICT (id) DO UPDATE SET delivered_at = greatest(x.delivered_at, excluded.delivered_at)), \
st AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending, delivered, last_success_at, \
        last_failure_at, last_failure_reason) \
    SELECT account, campaign, -1, 1, $3::bigint, \
        CASE WHEN $4::text IS NULL THEN NULL ELSE $3::bigint END, $4::text \
    FROM d \
    MERGE_STATS) \
SELECT count(*) FROM d";

/// Whether delivery `$1` is still known (stored, or delivered within the retention).
const KNOWN: &str = "SELECT EXISTS (SELECT 1 FROM {s}.deliveries WHERE id = $1::text) \
    OR EXISTS (SELECT 1 FROM {s}.delivered_ids WHERE id = $1::text)";

/// Forgets at most `$2` ids delivered before `$1`, oldest first; another process pruning at
/// the same time takes other rows.
const PRUNE_DELIVERED: &str = "DELETE FROM {s}.delivered_ids WHERE id IN ( \
    SELECT id FROM {s}.delivered_ids WHERE delivered_at < $1::bigint \
    ORDER BY delivered_at LIMIT $2::bigint FOR UPDATE SKIP LOCKED)";

/// Gives back claims (`$1` ids, `$2` their tokens); announces them as due work.
const RELEASE: &str = "WITH u AS ( \
    UPDATE {s}.deliveries d SET lease_until = NULL, claim_token = NULL \
    FROM unnest($1::text[], $2::bigint[]) AS r(id, token) \
    WHERE d.id = r.id AND d.claim_token = r.token AND d.state = 'pending' \
    RETURNING 1) \
SELECT n, CASE WHEN n > 0 THEN pg_notify({ch}, 'due')::text END \
FROM (SELECT count(*) AS n FROM u) c";

const HAS_PENDING: &str = "SELECT EXISTS (SELECT 1 FROM {s}.deliveries WHERE state = 'pending')";

const SETTINGS_LOCK: &str = "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))";

const SAVE_ACCOUNT: &str = "WITH u AS ( \
    INSERT INTO {s}.accounts (id, settings, version) \
    VALUES ($1::text, $2::text, nextval({versions})) \
    ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, version = excluded.version \
    RETURNING 1) \
SELECT pg_notify({ch}, 'settings') FROM u";

const SAVE_HEALTH: &str = "WITH u AS ( \
    INSERT INTO {s}.health (account, health, paused, version) \
    VALUES ($1::text, $2::text, $3::boolean, nextval({versions})) \
    ON CONFLICT (account) DO UPDATE SET health = excluded.health, paused = excluded.paused, \
        version = excluded.version \
    RETURNING 1) \
SELECT pg_notify({ch}, 'settings') FROM u";

/// Settings and health saved after version `$1`, in one snapshot: `kind` is `a` or `h`.
const SETTINGS_SINCE: &str = "SELECT 'a' AS kind, id, settings, version FROM {s}.accounts \
    WHERE version > $1::bigint \
    UNION ALL SELECT 'h', account, health, version FROM {s}.health WHERE version > $1::bigint \
    ORDER BY kind, id";

const STATS_ACCOUNT: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats WHERE account = $1::text";

const STATS_CAMPAIGN: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats \
    WHERE account = $1::text AND campaign = $2::text";

/// Every statement of one store, with its schema filled in.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) schema: String,
    pub(super) insert: String,
    pub(super) insert_group: String,
    pub(super) stored: String,
    pub(super) pending_total: String,
    pub(super) notify_due: String,
    pub(super) claim: String,
    pub(super) next_due: String,
    pub(super) record_kept: String,
    pub(super) record_delivered: String,
    pub(super) known: String,
    pub(super) prune_delivered: String,
    pub(super) release: String,
    pub(super) has_pending: String,
    pub(super) settings_lock: String,
    pub(super) save_account: String,
    pub(super) save_health: String,
    pub(super) settings_since: String,
    pub(super) stats_account: String,
    pub(super) stats_campaign: String,
}

impl Statements {
    pub(super) fn new(schema: &str) -> Statements {
        let sql = |text: &str| with_schema(&text.replace("MERGE_STATS", MERGE_STATS), schema);
        Statements {
            schema: schema.to_owned(),
            insert: sql(INSERT),
            insert_group: sql(INSERT_GROUP),
            stored: sql(STORED),
            pending_total: sql(PENDING_TOTAL),
            notify_due: sql(NOTIFY_DUE),
            claim: sql(CLAIM),
            next_due: sql(NEXT_DUE),
            record_kept: sql(RECORD_KEPT),
            record_delivered: sql(RECORD_DELIVERED),
            known: sql(KNOWN),
            prune_delivered: sql(PRUNE_DELIVERED),
            release: sql(RELEASE),
            has_pending: sql(HAS_PENDING),
            settings_lock: sql(SETTINGS_LOCK),
            save_account: sql(SAVE_ACCOUNT),
            save_health: sql(SAVE_HEALTH),
            settings_since: sql(SETTINGS_SINCE),
            stats_account: sql(STATS_ACCOUNT),
            stats_campaign: sql(STATS_CAMPAIGN),
        }
    }

    /// The SELECT of whole deliveries, for a filter's `WHERE` to follow.
    pub(super) fn select_deliveries(&self) -> String {
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM {}.deliveries",
            quote_ident(&self.schema)
        )
    }

    /// The schema, quoted.
    pub(super) fn s(&self) -> String {
        quote_ident(&self.schema)
    }
}

/// The enqueue statement for `schema`.
pub(super) fn enqueue_sql(schema: &str) -> String {
    with_schema(ENQUEUE, schema)
}

pub(super) use crate::store::{clamp_nanos, to_nanos};

pub(super) fn from_nanos(nanos: i64) -> Result<Timestamp> {
    Timestamp::from_nanosecond(nanos.into()).map_err(|e| Error::store("reading a stored time", e))
}

fn optional_time(nanos: Option<i64>) -> Result<Option<Timestamp>> {
    nanos.map(from_nanos).transpose()
}

pub(super) fn state_from_str(state: &str) -> Result<DeliveryState> {
    DeliveryState::of_outbox_row(state).ok_or_else(|| Error::Store {
        message: format!("unknown delivery state {state:?} in the outbox"),
        source: None,
    })
}

/// Reads a column, naming it if the row does not hold what the store wrote.
pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: usize,
) -> Result<T> {
    row.try_get(column)
        .map_err(|e| Error::store(format!("reading column {column} of an outbox row"), e))
}

/// A row starting with [`DELIVERY_COLUMNS`].
pub(super) fn delivery_from_row(row: &Row) -> Result<Delivery> {
    let encoding: Encoding = get::<&str>(row, 4)?.parse()?;
    let status: Option<i32> = get(row, 9)?;
    let attempts: i32 = get(row, 7)?;
    Ok(Delivery {
        id: DeliveryId::new(get::<String>(row, 0)?)?,
        account: AccountId::new(get::<String>(row, 1)?),
        campaign: CampaignId::new(get::<String>(row, 2)?),
        body: EncodedBody::from_parts(Bytes::copy_from_slice(get::<&[u8]>(row, 3)?), encoding),
        created_at: from_nanos(get(row, 5)?)?,
        next_attempt_at: from_nanos(get(row, 6)?)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        state: state_from_str(get(row, 8)?)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: get(row, 10)?,
        last_attempt_at: optional_time(get(row, 11)?)?,
    })
}

/// Sums the rows of [`STATS_ACCOUNT`] or [`STATS_CAMPAIGN`].
pub(super) fn stats_from_rows(rows: &[Row]) -> Result<crate::store::DeliveryStats> {
    let mut total = crate::store::DeliveryStats::default();
    for row in rows {
        total.pending += u64::try_from(get::<i64>(row, 0)?).unwrap_or(0);
        total.delivered += u64::try_from(get::<i64>(row, 1)?).unwrap_or(0);
        total.failed += u64::try_from(get::<i64>(row, 2)?).unwrap_or(0);
        let success = optional_time(get(row, 3)?)?;
        total.last_success_at = total.last_success_at.max(success);
        let failure = optional_time(get(row, 4)?)?;
        if failure > total.last_failure_at {
            total.last_failure_at = failure;
            total.last_failure_reason = get(row, 5)?;
        }
    }
    Ok(total)
}
