//! The outbox's schema in PostgreSQL, its versioned migrations, and applying them on open.
//!
//! Every table, index and sequence lives in one schema (by default `call_result_webhook`).
//! `schema_version` holds one row per applied step. Steps are applied by the first process
//! that opens the schema, inside one transaction holding an advisory lock, so that processes
//! starting at once migrate once; a schema whose version is newer than this release knows is
//! refused untouched.

use deadpool_postgres::Object;

use crate::error::{Error, Result};

use super::sql::{quote_ident, quote_literal, with_schema};
use super::tls::MakeRustls;

/// The first key of every advisory lock the outbox takes: "CRWH".
pub(super) const LOCK_SPACE: i32 = 0x4352_5748;
/// The second key of the migration lock is `hashtext(schema)`; settings writes use the next
/// space, so the two never meet.
pub(super) const SETTINGS_LOCK_SPACE: i32 = LOCK_SPACE + 1;
/// The fold of the counts' deltas: one process at a time.
pub(super) const FOLD_LOCK_SPACE: i32 = LOCK_SPACE + 2;

/// The schema, one step per version: step `i` takes a schema from version `i` to `i + 1`.
/// Steps are only ever appended; a released step never changes. `{s}` stands for the quoted
/// schema name.
pub(super) const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];

/// Times are `bigint` nanoseconds since the Unix epoch, as the SQLite outbox keeps them:
/// `jiff::Timestamp` round-trips exactly (timestamptz keeps only microseconds).
const SCHEMA_V1: &str = "
CREATE SEQUENCE {s}.claim_tokens AS bigint;
CREATE SEQUENCE {s}.settings_versions AS bigint;
CREATE TABLE {s}.deliveries (
    id              text PRIMARY KEY,
    account         text NOT NULL,
    campaign        text NOT NULL,
    body            bytea NOT NULL,
    encoding        text NOT NULL,
    created_at      bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    state           text NOT NULL CHECK (state IN ('pending', 'failed')),
    last_status     integer,
    last_error      text,
    last_attempt_at bigint,
    lease_until     bigint,
    claim_token     bigint
);
CREATE INDEX deliveries_due ON {s}.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_account ON {s}.deliveries (account, state, created_at);
CREATE TABLE {s}.delivered_ids (
    id           text PRIMARY KEY,
    delivered_at bigint NOT NULL
);
CREATE INDEX delivered_ids_at ON {s}.delivered_ids (delivered_at);
CREATE TABLE {s}.stats (
    account             text NOT NULL,
    campaign            text NOT NULL,
    pending             bigint NOT NULL DEFAULT 0,
    delivered           bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    last_success_at     bigint,
    last_failure_at     bigint,
    last_failure_reason text,
    PRIMARY KEY (account, campaign)
);
CREATE TABLE {s}.accounts (
    id       text PRIMARY KEY,
    settings text NOT NULL,
    version  bigint NOT NULL
);
CREATE INDEX accounts_version ON {s}.accounts (version);
CREATE TABLE {s}.health (
    account text PRIMARY KEY,
    health  text NOT NULL,
    paused  boolean NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX health_paused ON {s}.health (account) WHERE paused;
CREATE INDEX health_version ON {s}.health (version);
";

/// Counts leave the hot path, the claim gets a per-account index, delivered ids keep a
/// fingerprint of what was delivered.
///
/// - `stats_deltas`: every write that changes a count appends a row here instead of updating
///   the shared `stats` row of its account and campaign, so no two writers ever wait on one
///   counter row (they deadlocked doing so under a burst) and no counter row is rewritten per
///   delivery. One process at a time folds the deltas into `stats` (see `FOLD_STATS`); a
///   count is `stats` plus the deltas not folded yet.
/// - `deliveries_account_due`: the claim's second walk, account by account, when the head of
///   the due order belongs to accounts it must leave out.
/// - `fillfactor`: room on each page for a claim's lease to be written in place (a HOT
///   update), instead of a new index entry in every index per claim.
/// - `delivered_ids.fingerprint`: SHA-256 of the delivered call result, so that an id reused
///   for a different call result after delivery is refused instead of silently dropped.
const SCHEMA_V2: &str = "
CREATE TABLE {s}.stats_deltas (
    account             text NOT NULL,
    campaign            text NOT NULL,
    pending             bigint NOT NULL DEFAULT 0,
    delivered           bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    last_success_at     bigint,
    last_failure_at     bigint,
    last_failure_reason text
);
CREATE INDEX stats_deltas_account ON {s}.stats_deltas (account, campaign);
CREATE INDEX deliveries_account_due ON {s}.deliveries (account, next_attempt_at)
    WHERE state = 'pending';
ALTER TABLE {s}.deliveries SET (fillfactor = 70);
ALTER TABLE {s}.delivered_ids ADD COLUMN fingerprint bytea;
";

/// Version 3: `endpoint_slots`, the places of each account's endpoint over the fleet. A
/// claim takes a free slot for each delivery it leases (and writes the claim's token and
/// lease into it); the outcome, a release or the lease's end frees it. So
/// `per_endpoint_concurrency` bounds the attempts in flight to one endpoint across every
/// process, and a dead process's places come back with its leases. Slots are made on demand,
/// 1 to the bound, by the first claim that needs them; updated in place (`fillfactor`).
const SCHEMA_V3: &str = "
CREATE TABLE {s}.endpoint_slots (
    account     text NOT NULL,
    slot        integer NOT NULL,
    lease_until bigint,
    claim_token bigint,
    PRIMARY KEY (account, slot)
) WITH (fillfactor = 50);
ALTER TABLE {s}.deliveries ADD COLUMN slot integer;
";

/// Version 4: the attempts log, one row per attempt recorded (written by the statement that
/// records it), numbered by an identity, read newest first by account (its key) or campaign,
/// pruned oldest first by time. No index on the number alone: the statements' generic plans
/// would walk it backward for an account's page, filtering the whole log (60 ms for a small
/// account among 500,000 rows, 0.15 ms through the key).
const SCHEMA_V4: &str = "
CREATE TABLE {s}.attempts (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    account     text NOT NULL,
    campaign    text NOT NULL,
    delivery    text NOT NULL,
    number      integer NOT NULL,
    at          bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('delivered', 'retrying', 'failed')),
    status      integer,
    error       text,
    duration_us bigint NOT NULL,
    answer      text NOT NULL,
    PRIMARY KEY (account, seq)
);
CREATE INDEX attempts_by_campaign ON {s}.attempts (account, campaign, seq);
CREATE INDEX attempts_by_time ON {s}.attempts (at);
";

/// The schema version this release writes.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Reads the schema's version: 0 when the schema or its `schema_version` table does not
/// exist yet.
async fn read_version(client: &impl tokio_postgres::GenericClient, schema: &str) -> Result<i64> {
    let failed = super::failure::failed(format!("reading the schema version of {schema}"));
    let table = format!("{}.schema_version", quote_ident(schema));
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(&failed)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let sql = format!("SELECT coalesce(max(version), 0)::bigint FROM {table}");
    Ok(client.query_one(&sql, &[]).await.map_err(&failed)?.get(0))
}

fn newer(schema: &str, version: i64) -> Error {
    Error::Store {
        message: format!(
            "schema {schema} has outbox schema version {version}, newer than version {} that \
             this release of call-result-webhook knows; open it with a newer release",
            latest()
        ),
        source: None,
    }
}

/// Brings `schema` to [`latest`]: applies each missing step in order, in one transaction
/// holding the schema's migration lock, with one `schema_version` row per step. Refuses a
/// newer schema before changing anything.
///
/// The locked transaction runs on a connection of its own that has looked nothing up before
/// taking the lock: a backend that had looked for `schema_version` before another process
/// created it could still hold "no such table" in its catalog cache after the lock.
pub(super) async fn migrate(
    client: &Object,
    config: &tokio_postgres::Config,
    tls: MakeRustls,
    schema: &str,
) -> Result<()> {
    // Most opens find the schema up to date: no lock, no transaction.
    let version = read_version(&***client, schema).await?;
    if version > latest() {
        return Err(newer(schema, version));
    }
    if version == latest() {
        return Ok(());
    }
    let failed = super::failure::failed(format!("migrating schema {schema}"));
    let (mut own, connection) = config.connect(tls).await.map_err(&failed)?;
    let polled = tokio::spawn(connection);
    let migrated = migrate_locked(&mut own, schema).await;
    drop(own);
    let _ = polled.await;
    migrated
}

async fn migrate_locked(client: &mut tokio_postgres::Client, schema: &str) -> Result<()> {
    let failed = super::failure::failed(format!("migrating schema {schema}"));
    let tx = client.transaction().await.map_err(&failed)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_SPACE, &schema],
    )
    .await
    .map_err(&failed)?;
    // Read again under the lock: another process may have migrated meanwhile.
    let from = read_version(&tx, schema).await?;
    if from > latest() {
        return Err(newer(schema, from));
    }
    if from == latest() {
        return Ok(());
    }
    let s = quote_ident(schema);
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.schema_version ( \
             version    integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now(), \
             release    text NOT NULL)"
    );
    tx.batch_execute(&setup).await.map_err(&failed)?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(&with_schema(step, schema))
            .await
            .map_err(&failed)?;
        let stamp = format!(
            "INSERT INTO {s}.schema_version (version, release) VALUES ({}, {})",
            i + 1,
            quote_literal(env!("CARGO_PKG_VERSION"))
        );
        tx.batch_execute(&stamp).await.map_err(&failed)?;
    }
    tx.commit().await.map_err(&failed)
}
