//! The SQL text of every statement, made once per schema, and conversions between rows and
//! the store's types.

use bytes::Bytes;
use tokio_postgres::Row;

use crate::encoding::{EncodedBody, Encoding};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{Delivery, DeliveryState};

use super::clock::ServerClock;

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

/// How a counter row takes folded deltas: counts add up, the latest times win (several
/// processes may commit out of time order). Only [`FOLD_STATS`] writes `stats`.
const MERGE_STATS: &str = "ON CONFLICT (account, campaign) DO UPDATE SET \
    pending = t.pending + excluded.pending, \
    delivered = t.delivered + excluded.delivered, \
    failed = t.failed + excluded.failed, \
    last_success_at = greatest(t.last_success_at, excluded.last_success_at), \
    last_failure_reason = CASE WHEN excluded.last_failure_at IS NOT NULL \
        AND (t.last_failure_at IS NULL OR excluded.last_failure_at >= t.last_failure_at) \
        THEN excluded.last_failure_reason ELSE t.last_failure_reason END, \
    last_failure_at = greatest(t.last_failure_at, excluded.last_failure_at)";

/// SHA-256 over a call result's account, campaign, encoding and body (text holds no NUL, so
/// the separators are unambiguous): what a delivered id keeps of what was delivered.
macro_rules! fingerprint {
    ($account:literal, $campaign:literal, $encoding:literal, $body:literal) => {
        concat!(
            "sha256(convert_to(",
            $account,
            ", 'UTF8') || '\\x00'::bytea || convert_to(",
            $campaign,
            ", 'UTF8') || '\\x00'::bytea || convert_to(",
            $encoding,
            ", 'UTF8') || '\\x00'::bytea || ",
            $body,
            ")"
        )
    };
}

/// The server's clock now, in nanoseconds since the Unix epoch (whole microseconds;
/// `clock_timestamp()` moves during a statement, unlike `now()`).
macro_rules! server_now {
    () => {
        "((extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)"
    };
}

/// Reads the server's clock (see [`super::clock`]).
pub(super) const READ_CLOCK: &str = concat!("SELECT ", server_now!());

/// Inserts one delivery unless its id is stored or was delivered within the retention; counts
/// it; announces it. Answers one row, one text column: see [`super::enqueue_statement`]. The
/// dialer's times are on its own clock; they are stored on the server's: the submit time as
/// the server's now, the due time as far from it as `$7` is from `$6`.
const ENQUEUE: &str = concat!(
    "WITH ins AS ( \
    INSERT INTO {s}.deliveries \
        (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    SELECT $1::text, $2::text, $3::text, $4::bytea, $5::text, c.now, \
        c.now + ($7::bigint - $6::bigint), 0, 'pending' \
    FROM (SELECT ",
    server_now!(),
    " AS now) c \
    WHERE NOT EXISTS (SELECT 1 FROM {s}.delivered_ids WHERE id = $1::text) \
    ON CONFLICT (id) DO NOTHING \
    RETURNING account, campaign), \
st AS ( \
    INSERT INTO {s}.stats_deltas (account, campaign, pending) \
    SELECT account, campaign, 1 FROM ins) \
SELECT CASE \
    WHEN EXISTS (SELECT 1 FROM ins) THEN 'stored' || pg_notify({ch}, 'due')::text \
    WHEN EXISTS (SELECT 1 FROM {s}.delivered_ids WHERE id = $1::text) THEN ( \
        SELECT CASE WHEN fingerprint IS NULL OR fingerprint = ",
    fingerprint!("$2::text", "$3::text", "$5::text", "$4::bytea"),
    " THEN 'delivered' ELSE 'conflict' END FROM {s}.delivered_ids WHERE id = $1::text) \
    ELSE coalesce(( \
        SELECT CASE WHEN account = $2::text AND campaign = $3::text AND body = $4::bytea \
            AND encoding = $5::text THEN 'duplicate' ELSE 'conflict' END \
        FROM {s}.deliveries WHERE id = $1::text), 'raced') \
END AS outcome"
);

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
    INSERT INTO {s}.stats_deltas (account, campaign, pending) \
    SELECT account, campaign, count(*) FROM ins GROUP BY account, campaign) \
SELECT id FROM ins";

/// Of the deliveries `$1`..`$5` (id, account, campaign, body, encoding), the ids delivered
/// within the retention for a different call result.
const DELIVERED_OTHERWISE: &str = concat!(
    "SELECT n.id FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]) \
        AS n(id, account, campaign, body, encoding) \
    JOIN {s}.delivered_ids x ON x.id = n.id \
    WHERE x.fingerprint IS NOT NULL AND x.fingerprint <> ",
    fingerprint!("n.account", "n.campaign", "n.encoding", "n.body")
);

/// A group of submits in ONE statement (so one round trip and, in autocommit, one commit):
/// the rows of `$1`..`$7` not stored or delivered lately are inserted, counted and announced.
/// Answers one row per input row: whether it was inserted; for an id stored before, what is
/// stored under it (to tell a repeat from a conflict; all NULL when another transaction
/// stored it at the same moment, unseen by this one); whether it was delivered lately, and if
/// so whether for this same call result. The group's room under `max_pending` is checked
/// before (see `group.rs`).
const INSERT_GROUP: &str = concat!(
    "WITH n AS ( \
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
    INSERT INTO {s}.stats_deltas (account, campaign, pending) \
    SELECT account, campaign, count(*) FROM ins GROUP BY account, campaign) \
SELECT n.id, ins.id IS NOT NULL AS inserted, \
    d.account, d.campaign, d.body, d.encoding, \
    x.id IS NOT NULL AS delivered, \
    (x.fingerprint IS NULL OR x.fingerprint = ",
    fingerprint!("n.account", "n.campaign", "n.encoding", "n.body"),
    ") AS delivered_same, \
    (SELECT count(pg_notify({ch}, 'due')) FROM (SELECT 1 FROM ins LIMIT 1) one) AS notified \
FROM n LEFT JOIN ins ON ins.id = n.id LEFT JOIN {s}.deliveries d ON d.id = n.id \
    LEFT JOIN {s}.delivered_ids x ON x.id = n.id"
);

/// The stored account, campaign and body of the ids in `$1`.
const STORED: &str =
    "SELECT id, account, campaign, body, encoding FROM {s}.deliveries WHERE id = ANY($1::text[])";

/// Every pending delivery of the schema: the folded counts and the deltas not folded yet.
const PENDING_TOTAL: &str = "SELECT ((SELECT coalesce(sum(pending), 0) FROM {s}.stats) \
    + (SELECT coalesce(sum(pending), 0) FROM {s}.stats_deltas))::bigint";

/// Folds every delta visible now into `stats`, in one statement, by one process at a time
/// (`$1`, `$2`: the fold lock's keys; a process that does not get the lock folds nothing).
/// A delta committed after the statement began is neither deleted nor counted: it waits for
/// the next fold. Counter rows are written in key order. Answers how many deltas it folded.
const FOLD_STATS: &str = "WITH go AS (SELECT pg_try_advisory_xact_lock($1::integer, \
        hashtext($2::text)) AS got), \
moved AS (DELETE FROM {s}.stats_deltas WHERE (SELECT got FROM go) \
    RETURNING account, campaign, pending, delivered, failed, last_success_at, \
        last_failure_at, last_failure_reason), \
sums AS ( \
    SELECT account, campaign, sum(pending)::bigint AS pending, \
        sum(delivered)::bigint AS delivered, sum(failed)::bigint AS failed, \
        max(last_success_at) AS last_success_at, max(last_failure_at) AS last_failure_at, \
        (array_agg(last_failure_reason ORDER BY last_failure_at DESC) \
            FILTER (WHERE last_failure_at IS NOT NULL))[1] AS last_failure_reason \
    FROM moved GROUP BY account, campaign), \
folded AS ( \
    INSERT INTO {s}.stats AS t (account, campaign, pending, delivered, failed, \
        last_success_at, last_failure_at, last_failure_reason) \
    SELECT * FROM sums ORDER BY account, campaign \
    MERGE_STATS \
    RETURNING 1) \
SELECT count(*) FROM moved";

const NOTIFY_DUE: &str = "SELECT pg_notify({ch}, 'due')";

/// Whether a row of the due order may be claimed at `$1` (now), leaving out the accounts in
/// `$3` and those whose endpoint was last saved paused (a pause holds the whole fleet). For a
/// row `h` of a walk, written once for the claim's two walks and `next_due`'s.
macro_rules! open_at {
    ($h:literal, $now:literal, $skip:literal) => {
        concat!(unleased!($h, $now), " AND ", account_open!($h, $skip))
    };
}

/// Whether row `h` is under no live lease at `$now`.
macro_rules! unleased {
    ($h:literal, $now:literal) => {
        concat!(
            "(",
            $h,
            ".lease_until IS NULL OR ",
            $h,
            ".lease_until <= ",
            $now,
            "::bigint)"
        )
    };
}

/// Whether the account of `a` is neither in `$skip` nor paused.
macro_rules! account_open {
    ($a:literal, $skip:literal) => {
        concat!(
            $a,
            ".account <> ALL(",
            $skip,
            "::text[]) AND ",
            $a,
            ".account NOT IN (SELECT account FROM {s}.health WHERE paused)"
        )
    };
}

/// The accounts with pending deliveries, one index probe each (a loose scan of
/// `deliveries_account_due`): the start of the account-by-account walk.
const ACCOUNTS_WITH_PENDING: &str = "accts(account) AS ( \
    (SELECT account FROM {s}.deliveries WHERE state = 'pending' ORDER BY account LIMIT 1) \
    UNION ALL \
    SELECT (SELECT d.account FROM {s}.deliveries d \
        WHERE d.state = 'pending' AND d.account > a.account ORDER BY d.account LIMIT 1) \
    FROM accts a WHERE a.account IS NOT NULL)";

/// Locks the picked rows that are still claimable (another process may have taken one since
/// the walk read it), leases them with fresh tokens and answers them.
///
/// Lookups by key say `state <> 'failed'`, not `state = 'pending'` (the same, as a row is one
/// or the other): the latter matches the partial indexes' predicate, and without statistics
/// the planner then reads a whole partial index into a bitmap to combine with the key's, a
/// walk of every pending row per statement.
///
/// The rows are updated through `id = ANY (ARRAY (...))`, not a join: with the limit a
/// parameter, the generic plan the server switches to after five executions guesses a tenth
/// of the table for the join and scans `deliveries` (300 ms on a million rows); the array
/// keeps it on the primary key.
const LEASE_PICKED: &str = "c AS MATERIALIZED ( \
    SELECT id FROM {s}.deliveries WHERE id = ANY (ARRAY (SELECT id FROM picked)) \
        AND state <> 'failed' AND (lease_until IS NULL OR lease_until <= $1::bigint) \
    FOR UPDATE SKIP LOCKED), \
u AS ( \
    UPDATE {s}.deliveries d SET lease_until = $2::bigint, claim_token = nextval({tokens}), \
        slot = (SELECT p.slot FROM picked p WHERE p.id = d.id) \
    WHERE d.id = ANY (ARRAY (SELECT id FROM c)) \
    RETURNING d.id, d.account, d.campaign, d.body, d.encoding, d.created_at, \
        d.next_attempt_at, d.attempts, d.state, d.last_status, d.last_error, \
        d.last_attempt_at, d.claim_token, d.lease_until, d.slot)";

/// How a claim's or a batch of outcomes' commit waits for the server: by default it does not
/// wait for the flush of its WAL (`synchronous_commit` off for that transaction alone). Every
/// other process sees the commit at once, as always; only a crash of the server itself (not
/// a restart, which flushes) can forget the last fraction of a second of them, and what it
/// forgets is sent again, never lost: a lease that vanished, an outcome not kept. Submits and
/// settings always wait for the flush. `PostgresStoreBuilder::synchronous_progress` turns the
/// wait on.
const PROGRESS_COMMIT: &str = "set_config('synchronous_commit', 'off', true)";

/// Whether account `a` may have one more attempt in flight at `$now` on some process: it has
/// no endpoint slots yet, or one of them is free. For `next_due`, which knows no bound.
macro_rules! endpoint_room {
    ($a:literal, $now:literal) => {
        endpoint_room!($a, $now, "")
    };
    ($a:literal, $now:literal, $also_free:literal) => {
        concat!(
            "(NOT EXISTS (SELECT 1 FROM {s}.endpoint_slots e WHERE e.account = ",
            $a,
            ".account) OR EXISTS (SELECT 1 FROM {s}.endpoint_slots e WHERE e.account = ",
            $a,
            ".account AND (e.lease_until IS NULL OR e.lease_until <= ",
            $now,
            "::bigint",
            $also_free,
            ")))"
        )
    };
}

/// The fleet's bound per endpoint, shared by the claim's two walks. From `picked0` (the
/// walk's candidates: `id`, `account`, `next_attempt_at`), takes free slots of each account's
/// endpoint (`$5` slots per endpoint, NULL for no bound; free: never leased, its lease ran
/// out before `$1`, or held by a claim of this process whose request finished, `$8`), at most one per candidate, locking them (`SKIP LOCKED`: a slot
/// another claim is taking is not free), pairs each account's earliest candidates with its
/// slots, leases those rows ([`LEASE_PICKED`], which keeps the slot's number in the row) and
/// writes each leased row's token and lease into its slot. An outcome, a release or a lease's end frees the slot. Also answers the
/// candidates' accounts that have no slots yet (`missing`): the store makes them and claims
/// again.
const ENDPOINT_SLOTS: &str = "need AS (SELECT account, count(*) AS k FROM picked0 GROUP BY account), \
slots AS MATERIALIZED ( \
    SELECT x.account, x.slot FROM need n CROSS JOIN LATERAL ( \
        SELECT e.account, e.slot FROM {s}.endpoint_slots e \
        WHERE e.account = n.account AND e.slot <= $5::bigint \
            AND (e.lease_until IS NULL OR e.lease_until <= $1::bigint \
                OR e.claim_token = ANY($8::bigint[])) \
        ORDER BY e.slot LIMIT n.k FOR UPDATE SKIP LOCKED) x \
    WHERE $5::bigint IS NOT NULL), \
picked AS MATERIALIZED ( \
    SELECT p.id, f.slot FROM (SELECT p.id, p.account, row_number() OVER (PARTITION BY \
        p.account ORDER BY p.next_attempt_at, p.id) AS r FROM picked0 p) p \
    JOIN (SELECT account, slot, row_number() OVER (PARTITION BY account ORDER BY slot) AS r \
        FROM slots) f ON f.account = p.account AND f.r = p.r \
    UNION ALL SELECT id, NULL FROM picked0 WHERE $5::bigint IS NULL), \
LEASE_PICKED, \
took AS ( \
    UPDATE {s}.endpoint_slots e SET lease_until = u.lease_until, claim_token = u.claim_token \
    FROM u WHERE e.account = u.account AND e.slot = u.slot RETURNING 1), \
missing AS (SELECT array_agg(n.account) AS accounts FROM need n WHERE $5::bigint IS NOT NULL \
    AND NOT EXISTS (SELECT 1 FROM {s}.endpoint_slots e \
        WHERE e.account = n.account AND e.slot = $5::bigint))";

/// The claim's first walk: the head of the due order, at most `$9` rows read whatever they
/// are, of which the earliest claimable are taken, at most `$4` in all, at most `$5` less
/// those in this process's flight (`$6` accounts, `$7` counts) of one account, and no more
/// than its endpoint has free slots over the fleet ([`ENDPOINT_SLOTS`]). `$1` now, `$2` the
/// lease's end, `$3` accounts to leave out.
///
/// Reading a bounded head keeps the walk's cost off the backlog of the accounts it leaves
/// out: a filter inside the index scan would read past every one of their rows. Answers the
/// claimed rows and, on every row (one row of NULLs when nothing was claimed), how many rows
/// the head read and the accounts without slots: fewer than `$9` rows means the head was
/// every due row, so there is nothing more to find; `$9` means the account-by-account walk
/// ([`CLAIM_BY_ACCOUNT`]) may find more.
const CLAIM_HEAD: &str = concat!(
    "WITH head AS MATERIALIZED ( \
    SELECT id, account, next_attempt_at, lease_until FROM {s}.deliveries \
    WHERE state = 'pending' AND next_attempt_at <= $1::bigint \
    ORDER BY next_attempt_at LIMIT $9::bigint), \
busy AS (SELECT * FROM unnest($6::text[], $7::bigint[]) AS b(account, n)), \
ranked AS ( \
    SELECT h.id, h.account, h.next_attempt_at, coalesce(b.n, 0) AS busy, \
        row_number() OVER (PARTITION BY h.account ORDER BY h.next_attempt_at, h.id) AS rn \
    FROM head h LEFT JOIN busy b ON b.account = h.account WHERE ",
    open_at!("h", "$1", "$3"),
    "), \
picked0 AS MATERIALIZED ( \
    SELECT id, account, next_attempt_at FROM ranked \
    WHERE $5::bigint IS NULL OR rn + busy <= $5::bigint \
    ORDER BY next_attempt_at, id LIMIT $4::bigint), ",
    "ENDPOINT_SLOTS \
SELECT u.*, (SELECT count(*) FROM head) AS head_rows, (SELECT accounts FROM missing) AS missing \
FROM (SELECT PROGRESS_COMMIT) one LEFT JOIN u ON true"
);

/// The claim's second walk, when the head was full of rows it could not take: account by
/// account ([`ACCOUNTS_WITH_PENDING`]), leaving out `$3` and accounts whose every endpoint
/// slot is taken without reading their rows, each account's earliest claimable rows up to
/// its room (`$5` less `$6`/`$7`), the earliest `$4` of them, then as the first walk ([`ENDPOINT_SLOTS`]). Costs a few
/// probes per account with pending deliveries, not one per row. Answers the claimed rows
/// (one row of NULLs when none) and the accounts without slots.
const CLAIM_BY_ACCOUNT: &str = concat!(
    "WITH RECURSIVE ACCOUNTS_WITH_PENDING, \
busy AS (SELECT * FROM unnest($6::text[], $7::bigint[]) AS b(account, n)), \
picked0 AS MATERIALIZED ( \
    SELECT x.id, a.account, x.next_attempt_at FROM accts a \
    LEFT JOIN busy b ON b.account = a.account \
    CROSS JOIN LATERAL ( \
        SELECT h.id, h.next_attempt_at FROM {s}.deliveries h \
        WHERE h.account = a.account AND h.state = 'pending' \
            AND h.next_attempt_at <= $1::bigint AND ",
    unleased!("h", "$1"),
    " ORDER BY h.next_attempt_at \
        LIMIT CASE WHEN $5::bigint IS NOT NULL THEN greatest($5::bigint - coalesce(b.n, 0), 0) END) x \
    WHERE a.account IS NOT NULL AND ",
    account_open!("a", "$3"),
    " AND ",
    // A slot held by a claim of this process whose request finished (`$8` their tokens) is
    // free for the claim too: the outcome recorded later finds another token in it.
    endpoint_room!("a", "$1", " OR e.claim_token = ANY($8::bigint[])"),
    " \
    ORDER BY x.next_attempt_at, x.id LIMIT $4::bigint), ",
    "ENDPOINT_SLOTS \
SELECT u.*, (SELECT accounts FROM missing) AS missing \
FROM (SELECT PROGRESS_COMMIT) one LEFT JOIN u ON true"
);

/// Makes endpoint slots 1 to `$2` of accounts `$1` where missing.
const ENSURE_SLOTS: &str = "INSERT INTO {s}.endpoint_slots (account, slot) \
    SELECT a, g FROM unnest($1::text[]) a, generate_series(1, $2::integer) g ORDER BY 1, 2 \
    ON CONFLICT DO NOTHING";

/// When the earliest claimable delivery is due (`$1` now, `$2` accounts to leave out), in one
/// statement of the two walks a claim makes in two ([`CLAIM_HEAD`], [`CLAIM_BY_ACCOUNT`]): the
/// head of the due order, at most `$3` rows; then, only when the head was full and held no
/// claimable row (every row past the head is due no earlier than the head's last), each
/// account's earliest claimable delivery, account by account, leaving out `$2` without
/// reading their rows. The second walk's condition reads
/// only the first's results, so the server checks it once and skips its plan when false.
const NEXT_DUE: &str = concat!(
    "WITH RECURSIVE head AS MATERIALIZED ( \
    SELECT account, next_attempt_at, lease_until FROM {s}.deliveries \
    WHERE state = 'pending' ORDER BY next_attempt_at LIMIT $3::bigint), \
roomy AS (SELECT a.account FROM (SELECT DISTINCT account FROM head) a WHERE ",
    endpoint_room!("a", "$1"),
    "), \
first AS MATERIALIZED (SELECT min(h.next_attempt_at) AS at FROM head h WHERE ",
    open_at!("h", "$1", "$2"),
    " AND h.account IN (SELECT account FROM roomy)), \
ACCOUNTS_WITH_PENDING, \
more AS MATERIALIZED (SELECT min(x.next_attempt_at) AS at FROM accts a CROSS JOIN LATERAL ( \
    SELECT h.next_attempt_at FROM {s}.deliveries h \
    WHERE h.account = a.account AND h.state = 'pending' AND ",
    unleased!("h", "$1"),
    " ORDER BY h.next_attempt_at LIMIT 1) x \
    WHERE (SELECT at FROM first) IS NULL AND (SELECT count(*) FROM head) >= $3::bigint \
        AND a.account IS NOT NULL AND ",
    account_open!("a", "$2"),
    " AND ",
    endpoint_room!("a", "$1"),
    ") \
SELECT coalesce((SELECT at FROM first), (SELECT at FROM more))"
);

/// The outcomes of a batch, one row each (`$1` ids, none twice, `$2` their claims' tokens),
/// for [`RECORD_KEPT`] and [`RECORD_DELIVERED`]: the rows to change are found through the
/// primary key with `id = ANY ($1)`, which locks them in id order (two transactions that
/// touch the same rows lock them in the same order), then matched to their outcomes.
const OUTCOMES: &str = "o AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::bigint[], \
    $3::bigint[], $4::text[], $5::integer[], $6::text[], $7::bigint[], $8::bigint[], \
    $9::text[]) AS o(id, token, at, error, status, state, retry_at, duration_us, answer))";

/// Logs the attempts of CTE `{from}` (see the `attempts` table): each row has `id`,
/// `account`, `campaign`, `number`, `at`, `state` (the attempt's), `status`, `error`,
/// `duration_us` and `answer`.
macro_rules! log_attempts {
    ($from:literal, $state:literal) => {
        concat!(
            "lg AS ( \
    INSERT INTO {s}.attempts (account, campaign, delivery, number, at, state, status, error, \
        duration_us, answer) \
    SELECT account, campaign, id, number, at, ",
            $state,
            ", status, error, duration_us, answer FROM ",
            $from,
            ")"
        )
    };
}

/// Retries and failures, a batch in one statement (`$1`..`$9`: ids, tokens, when each
/// attempt finished, errors, statuses, new states, retry times, durations, answers; see
/// [`OUTCOMES`]), each only under its claim, and logged. The counts' deltas go in one row per
/// account and campaign. Answers the ids it changed.
const RECORD_KEPT: &str = concat!(
    "WITH OUTCOMES, \
u AS ( \
    UPDATE {s}.deliveries d SET attempts = d.attempts + 1, last_status = o.status, \
        last_error = o.error, last_attempt_at = o.at, state = o.state, \
        next_attempt_at = coalesce(o.retry_at, d.next_attempt_at), \
        lease_until = NULL, claim_token = NULL \
    FROM o WHERE d.id = ANY ($1::text[]) AND d.id = o.id AND d.claim_token = o.token \
        AND d.state <> 'failed' \
    RETURNING d.id, d.account, d.campaign, o.state, o.error, o.at, o.token, d.slot, \
        d.attempts AS number, o.status, o.duration_us, o.answer), \
fr AS ( \
    UPDATE {s}.endpoint_slots e SET lease_until = NULL, claim_token = NULL \
    FROM u WHERE e.account = u.account AND e.slot = u.slot AND e.claim_token = u.token), \
st AS ( \
    INSERT INTO {s}.stats_deltas (account, campaign, pending, failed, last_failure_at, \
        last_failure_reason) \
    SELECT account, campaign, -count(*) FILTER (WHERE state = 'failed'), \
        count(*) FILTER (WHERE state = 'failed'), \
        max(at) FILTER (WHERE error IS NOT NULL), \
        (array_agg(error ORDER BY at DESC) FILTER (WHERE error IS NOT NULL))[1] \
    FROM u WHERE state = 'failed' OR error IS NOT NULL GROUP BY account, campaign), ",
    log_attempts!(
        "u",
        "CASE WHEN state = 'failed' THEN 'failed' ELSE 'retrying' END"
    ),
    " SELECT id FROM u"
);

/// Deliveries delivered, a batch in one statement (as [`RECORD_KEPT`]; statuses, states and
/// retry times unused): removed, each id kept with a fingerprint of what was delivered, the
/// counts' deltas in one row per account and campaign (an error noted on the way is the
/// last failure). Answers the ids it removed.
const RECORD_DELIVERED: &str = concat!(
    "WITH OUTCOMES, \
d AS ( \
    DELETE FROM {s}.deliveries x USING o \
    WHERE x.id = ANY ($1::text[]) AND x.id = o.id AND x.claim_token = o.token \
        AND x.state <> 'failed' \
    RETURNING x.id, x.account, x.campaign, x.body, x.encoding, o.at, o.error, o.token, \
        x.slot, x.attempts + 1 AS number, o.status, o.duration_us, o.answer), \
fr AS ( \
    UPDATE {s}.endpoint_slots e SET lease_until = NULL, claim_token = NULL \
    FROM d WHERE e.account = d.account AND e.slot = d.slot AND e.claim_token = d.token), \
r AS ( \
    INSERT INTO {s}.delivered_ids AS x (id, delivered_at, fingerprint) \
    SELECT id, at, ",
    fingerprint!("account", "campaign", "encoding", "body"),
    " FROM d \
    ON CONFLICT (id) DO UPDATE SET delivered_at = greatest(x.delivered_at, excluded.delivered_at), \
        fingerprint = coalesce(x.fingerprint, excluded.fingerprint)), \
st AS ( \
    INSERT INTO {s}.stats_deltas (account, campaign, pending, delivered, last_success_at, \
        last_failure_at, last_failure_reason) \
    SELECT account, campaign, -count(*), count(*), max(at), \
        max(at) FILTER (WHERE error IS NOT NULL), \
        (array_agg(error ORDER BY at DESC) FILTER (WHERE error IS NOT NULL))[1] \
    FROM d GROUP BY account, campaign), ",
    log_attempts!("d", "'delivered'"),
    " SELECT id FROM d"
);

/// Extends the leases of claims (`$1` ids, `$2` their tokens) to `$3`: an attempt whose
/// outcome is not recorded yet keeps its delivery from the rest of the fleet. Answers how
/// many it extended.
const EXTEND: &str = "WITH u AS ( \
    UPDATE {s}.deliveries d SET lease_until = greatest(d.lease_until, $3::bigint) \
    FROM unnest($1::text[], $2::bigint[]) AS r(id, token) \
    WHERE d.id = r.id AND d.claim_token = r.token AND d.state <> 'failed' \
    RETURNING d.account, d.slot, r.token), \
xs AS ( \
    UPDATE {s}.endpoint_slots e SET lease_until = greatest(e.lease_until, $3::bigint) \
    FROM u WHERE e.account = u.account AND e.slot = u.slot AND e.claim_token = u.token) \
SELECT count(*) FROM u";

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
    WHERE d.id = r.id AND d.claim_token = r.token AND d.state <> 'failed' \
    RETURNING d.account, d.slot, r.token), \
fr AS ( \
    UPDATE {s}.endpoint_slots e SET lease_until = NULL, claim_token = NULL \
    FROM u WHERE e.account = u.account AND e.slot = u.slot AND e.claim_token = u.token) \
SELECT n, CASE WHEN n > 0 THEN pg_notify({ch}, 'due')::text END \
FROM (SELECT count(*) AS n FROM u) c";

const HAS_PENDING: &str = "SELECT EXISTS (SELECT 1 FROM {s}.deliveries WHERE state = 'pending')";

/// The folded counts and the deltas not folded yet, of account `$1`.
const STATS_ACCOUNT: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats WHERE account = $1::text \
    UNION ALL SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats_deltas WHERE account = $1::text";

/// The same for campaign `$2` of account `$1`.
const STATS_CAMPAIGN: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats \
    WHERE account = $1::text AND campaign = $2::text \
    UNION ALL SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM {s}.stats_deltas \
    WHERE account = $1::text AND campaign = $2::text";

/// Every statement of one store, with its schema filled in.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) schema: String,
    /// Run in an outcomes' transaction: their commit waits for the flush or not.
    pub(super) progress_commit: String,
    pub(super) insert: String,
    pub(super) insert_group: String,
    pub(super) stored: String,
    pub(super) delivered_otherwise: String,
    pub(super) pending_total: String,
    pub(super) fold_stats: String,
    pub(super) notify_due: String,
    pub(super) claim_head: String,
    pub(super) claim_by_account: String,
    pub(super) ensure_slots: String,
    pub(super) next_due: String,
    pub(super) record_kept: String,
    pub(super) record_delivered: String,
    pub(super) extend: String,
    pub(super) known: String,
    pub(super) prune_delivered: String,
    pub(super) release: String,
    pub(super) has_pending: String,
    pub(super) stats_account: String,
    pub(super) stats_campaign: String,
}

impl Statements {
    /// The statements for `schema`; `synchronous_progress` says whether claims and outcomes
    /// wait for the server's flush of their commit (see [`PROGRESS_COMMIT`]).
    pub(super) fn new(schema: &str, synchronous_progress: bool) -> Statements {
        let progress = if synchronous_progress {
            PROGRESS_COMMIT.replace("'off'", "'on'")
        } else {
            PROGRESS_COMMIT.to_owned()
        };
        let sql = |text: &str| {
            let text = text
                .replace("PROGRESS_COMMIT", &progress)
                .replace("ENDPOINT_SLOTS", ENDPOINT_SLOTS)
                .replace("MERGE_STATS", MERGE_STATS)
                .replace("ACCOUNTS_WITH_PENDING", ACCOUNTS_WITH_PENDING)
                .replace("LEASE_PICKED", LEASE_PICKED)
                .replace("OUTCOMES", OUTCOMES);
            with_schema(&text, schema)
        };
        Statements {
            schema: schema.to_owned(),
            progress_commit: format!("SELECT {progress}"),
            insert: sql(INSERT),
            insert_group: sql(INSERT_GROUP),
            stored: sql(STORED),
            delivered_otherwise: sql(DELIVERED_OTHERWISE),
            pending_total: sql(PENDING_TOTAL),
            fold_stats: sql(FOLD_STATS),
            notify_due: sql(NOTIFY_DUE),
            claim_head: sql(CLAIM_HEAD),
            claim_by_account: sql(CLAIM_BY_ACCOUNT),
            ensure_slots: sql(ENSURE_SLOTS),
            next_due: sql(NEXT_DUE),
            record_kept: sql(RECORD_KEPT),
            record_delivered: sql(RECORD_DELIVERED),
            extend: sql(EXTEND),
            known: sql(KNOWN),
            prune_delivered: sql(PRUNE_DELIVERED),
            release: sql(RELEASE),
            has_pending: sql(HAS_PENDING),
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
    row.try_get(column).map_err(super::failure::failed(format!(
        "reading column {column} of an outbox row"
    )))
}

/// A row starting with [`DELIVERY_COLUMNS`], its times on this process's clock.
pub(super) fn delivery_from_row(row: &Row, clock: &ServerClock) -> Result<Delivery> {
    let encoding: Encoding = get::<&str>(row, 4)?.parse()?;
    let status: Option<i32> = get(row, 9)?;
    let attempts: i32 = get(row, 7)?;
    Ok(Delivery {
        id: DeliveryId::new(get::<String>(row, 0)?)?,
        account: AccountId::new(get::<String>(row, 1)?),
        campaign: CampaignId::new(get::<String>(row, 2)?),
        body: EncodedBody::from_parts(Bytes::copy_from_slice(get::<&[u8]>(row, 3)?), encoding),
        created_at: clock.read_stored(get(row, 5)?)?,
        next_attempt_at: clock.read_stored(get(row, 6)?)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        state: state_from_str(get(row, 8)?)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: get(row, 10)?,
        last_attempt_at: clock.read_stored_opt(get(row, 11)?)?,
    })
}

/// Sums the rows of [`STATS_ACCOUNT`] or [`STATS_CAMPAIGN`], their times on this process's
/// clock.
pub(super) fn stats_from_rows(
    rows: &[Row],
    clock: &ServerClock,
) -> Result<crate::store::DeliveryStats> {
    let mut total = crate::store::DeliveryStats::default();
    // Deltas may be negative (a delivery leaves `pending`): summed signed, then counted.
    let (mut pending, mut delivered, mut failed) = (0i64, 0i64, 0i64);
    for row in rows {
        pending = pending.saturating_add(get::<i64>(row, 0)?);
        delivered = delivered.saturating_add(get::<i64>(row, 1)?);
        failed = failed.saturating_add(get::<i64>(row, 2)?);
        let success = clock.read_stored_opt(get(row, 3)?)?;
        total.last_success_at = total.last_success_at.max(success);
        let failure = clock.read_stored_opt(get(row, 4)?)?;
        if failure > total.last_failure_at {
            total.last_failure_at = failure;
            total.last_failure_reason = get(row, 5)?;
        }
    }
    total.pending = u64::try_from(pending).unwrap_or(0);
    total.delivered = u64::try_from(delivered).unwrap_or(0);
    total.failed = u64::try_from(failed).unwrap_or(0);
    Ok(total)
}
