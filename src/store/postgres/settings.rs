//! Accounts' settings and endpoints' health: compare-and-set saves, versioned by one sequence,
//! and the reads every process follows them with.
//!
//! Saves take their versions one after another, under the schema's settings lock, each
//! committed before the next is taken: a reader that has seen version n has seen every
//! version below it. A save writes only if the record is still at the version it was read at
//! (`UPDATE ... WHERE version = $expected`), or, for a record read as absent, only if it is
//! still absent (`INSERT ... ON CONFLICT DO NOTHING`); the statement's answer says whether it
//! wrote. A save that wrote nothing leaves at most a gap in the sequence, which no reader
//! waits for.

use std::sync::Arc;

use crate::error::Result;
use crate::ids::AccountId;
use crate::store::{AccountRecords, SaveOutcome, SettingsSnapshot, Versioned};

use super::failure::failed;
use super::ops::{Ctx, retrying};
use super::schema::SETTINGS_LOCK_SPACE;
use super::sql::{get, with_schema};

/// Serialises saves of settings in one schema (`$1` the lock space, `$2` the schema).
const SETTINGS_LOCK: &str = "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))";

/// `$1` account, `$2` settings: saved at the next version if none are stored.
const INSERT_ACCOUNT: &str = "WITH u AS ( \
    INSERT INTO {s}.accounts (id, settings, version) \
    VALUES ($1::text, $2::text, nextval({versions})) \
    ON CONFLICT (id) DO NOTHING \
    RETURNING version) \
SELECT version, pg_notify({ch}, 'settings')::text FROM u";

/// `$1` account, `$2` settings, `$3` the version expected: saved at the next version if the
/// stored settings are still at `$3`.
const UPDATE_ACCOUNT: &str = "WITH u AS ( \
    UPDATE {s}.accounts SET settings = $2::text, version = nextval({versions}) \
    WHERE id = $1::text AND version = $3::bigint \
    RETURNING version) \
SELECT version, pg_notify({ch}, 'settings')::text FROM u";

/// `$1` account, `$2` health, `$3` paused: saved at the next version if none is stored.
const INSERT_HEALTH: &str = "WITH u AS ( \
    INSERT INTO {s}.health (account, health, paused, version) \
    VALUES ($1::text, $2::text, $3::boolean, nextval({versions})) \
    ON CONFLICT (account) DO NOTHING \
    RETURNING version) \
SELECT version, pg_notify({ch}, 'settings')::text FROM u";

/// `$1` account, `$2` health, `$3` paused, `$4` the version expected: saved at the next
/// version if the stored health is still at `$4`.
const UPDATE_HEALTH: &str = "WITH u AS ( \
    UPDATE {s}.health SET health = $2::text, paused = $3::boolean, \
        version = nextval({versions}) \
    WHERE account = $1::text AND version = $4::bigint \
    RETURNING version) \
SELECT version, pg_notify({ch}, 'settings')::text FROM u";

/// `$1` accounts, `$2` their settings, `$3` the versions expected: each saved at the next
/// version if its stored settings are still at its expected version. Answers the accounts
/// written and their new versions.
const UPDATE_ACCOUNTS: &str = "WITH u AS ( \
    UPDATE {s}.accounts a SET settings = i.settings, version = nextval({versions}) \
    FROM unnest($1::text[], $2::text[], $3::bigint[]) AS i(id, settings, expected) \
    WHERE a.id = i.id AND a.version = i.expected \
    RETURNING a.id, a.version) \
SELECT id, version, pg_notify({ch}, 'settings')::text FROM u";

/// `$1` accounts, `$2` their settings: each saved at the next version if none are stored.
/// Answers the accounts written and their versions.
const INSERT_ACCOUNTS: &str = "WITH u AS ( \
    INSERT INTO {s}.accounts (id, settings, version) \
    SELECT i.id, i.settings, nextval({versions}) \
    FROM unnest($1::text[], $2::text[]) AS i(id, settings) \
    ON CONFLICT (id) DO NOTHING \
    RETURNING id, version) \
SELECT id, version, pg_notify({ch}, 'settings')::text FROM u";

/// The first `$1` accounts by id, each with its endpoint's health: a walk of the primary key.
const FIRST_ACCOUNTS: &str = "SELECT a.id, a.settings, a.version, h.health, h.version \
    FROM {s}.accounts a LEFT JOIN {s}.health h ON h.account = a.id \
    ORDER BY a.id LIMIT $1::bigint";

/// The first `$2` accounts after `$1` by id, each with its endpoint's health.
const ACCOUNTS_AFTER: &str = "SELECT a.id, a.settings, a.version, h.health, h.version \
    FROM {s}.accounts a LEFT JOIN {s}.health h ON h.account = a.id \
    WHERE a.id > $1::text ORDER BY a.id LIMIT $2::bigint";

/// One account's settings and their version.
const LOAD_ACCOUNT: &str = "SELECT settings, version FROM {s}.accounts WHERE id = $1::text";

/// One endpoint's health and its version.
const LOAD_HEALTH: &str = "SELECT health, version FROM {s}.health WHERE account = $1::text";

/// Settings and health saved after version `$1`, in one snapshot: `kind` is `a` or `h`.
const SETTINGS_SINCE: &str = "SELECT 'a' AS kind, id, settings, version FROM {s}.accounts \
    WHERE version > $1::bigint \
    UNION ALL SELECT 'h', account, health, version FROM {s}.health WHERE version > $1::bigint \
    ORDER BY kind, id";

/// Which record a save or a load is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// An account's settings.
    Account,
    /// An endpoint's health, and (for a save) whether it is paused.
    Health { paused: bool },
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Account => "account settings",
            Kind::Health { .. } => "endpoint health",
        }
    }
}

/// `text` with the store's schema filled in. Settings statements run seldom (a save, a poll a
/// second), so they are made when run rather than kept with the outbox's statements; the
/// connection's statement cache keeps them prepared.
fn statement(ctx: &Ctx, text: &str) -> String {
    with_schema(text, &ctx.sql.schema)
}

/// A version as stored: the sequence gives positive numbers only.
fn version(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

/// Takes the schema's settings lock for the rest of `tx`: saves take their versions one
/// after another.
async fn lock_settings(
    ctx: &Ctx,
    tx: &deadpool_postgres::Transaction<'_>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let lock = tx.prepare_cached(SETTINGS_LOCK).await?;
    tx.execute(&lock, &[&SETTINGS_LOCK_SPACE, &ctx.sql.schema])
        .await
        .map(drop)
}

/// Saves `json` as `account`'s record of `kind` if it is still at version `expected` (`None`:
/// if none is stored), at the next version, and announces it. Run again on a fresh
/// connection when the connection breaks: a save that committed unanswered is then found
/// [`Stale`](SaveOutcome::Stale), and the change is applied again to the record it made.
pub(super) async fn save(
    ctx: Arc<Ctx>,
    kind: Kind,
    account: AccountId,
    json: String,
    expected: Option<u64>,
) -> Result<SaveOutcome> {
    retrying(&ctx, || save_once(&ctx, kind, &account, &json, expected)).await
}

async fn save_once(
    ctx: &Ctx,
    kind: Kind,
    account: &AccountId,
    json: &str,
    expected: Option<u64>,
) -> Result<SaveOutcome> {
    let save_failed = failed(format!("saving {}", kind.what()));
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&save_failed)?;
    lock_settings(ctx, &tx).await.map_err(&save_failed)?;
    // A version past what PostgreSQL holds matches no row: stale.
    let expected = expected.map(|v| i64::try_from(v).unwrap_or(-1));
    let id = account.as_str();
    let rows = match (kind, expected) {
        (Kind::Account, None) => {
            let stmt = tx.prepare_cached(&statement(ctx, INSERT_ACCOUNT)).await;
            let stmt = stmt.map_err(&save_failed)?;
            tx.query(&stmt, &[&id, &json]).await
        }
        (Kind::Account, Some(expected)) => {
            let stmt = tx.prepare_cached(&statement(ctx, UPDATE_ACCOUNT)).await;
            let stmt = stmt.map_err(&save_failed)?;
            tx.query(&stmt, &[&id, &json, &expected]).await
        }
        (Kind::Health { paused }, None) => {
            let stmt = tx.prepare_cached(&statement(ctx, INSERT_HEALTH)).await;
            let stmt = stmt.map_err(&save_failed)?;
            tx.query(&stmt, &[&id, &json, &paused]).await
        }
        (Kind::Health { paused }, Some(expected)) => {
            let stmt = tx.prepare_cached(&statement(ctx, UPDATE_HEALTH)).await;
            let stmt = stmt.map_err(&save_failed)?;
            tx.query(&stmt, &[&id, &json, &paused, &expected]).await
        }
    }
    .map_err(&save_failed)?;
    let outcome = match rows.first() {
        Some(row) => SaveOutcome::Saved {
            version: version(get(row, 0)?),
        },
        None => SaveOutcome::Stale,
    };
    tx.commit().await.map_err(&save_failed)?;
    Ok(outcome)
}

/// Saves several accounts' settings, each if still at its expected version, in one
/// transaction under the settings lock: one statement for the accounts read as absent, one
/// for the others. The accounts are distinct. Run again on a fresh connection when the
/// connection breaks: saves that committed unanswered are then found stale.
pub(super) async fn save_accounts(
    ctx: Arc<Ctx>,
    saves: Vec<(AccountId, String, Option<u64>)>,
) -> Result<Vec<SaveOutcome>> {
    retrying(&ctx, || save_accounts_once(&ctx, &saves)).await
}

async fn save_accounts_once(
    ctx: &Ctx,
    saves: &[(AccountId, String, Option<u64>)],
) -> Result<Vec<SaveOutcome>> {
    let save_failed = failed("saving accounts' settings");
    let (mut new_ids, mut new_json) = (Vec::new(), Vec::new());
    let (mut ids, mut json, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for (account, settings, version) in saves {
        match version {
            None => {
                new_ids.push(account.as_str());
                new_json.push(settings.as_str());
            }
            Some(v) => {
                ids.push(account.as_str());
                json.push(settings.as_str());
                // A version past what PostgreSQL holds matches no row: stale.
                expected.push(i64::try_from(*v).unwrap_or(-1));
            }
        }
    }
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&save_failed)?;
    lock_settings(ctx, &tx).await.map_err(&save_failed)?;
    let mut written = std::collections::HashMap::new();
    if !new_ids.is_empty() {
        let stmt = tx.prepare_cached(&statement(ctx, INSERT_ACCOUNTS)).await;
        let stmt = stmt.map_err(&save_failed)?;
        let rows = tx.query(&stmt, &[&new_ids, &new_json]).await;
        for row in &rows.map_err(&save_failed)? {
            written.insert(get::<String>(row, 0)?, version(get(row, 1)?));
        }
    }
    if !ids.is_empty() {
        let stmt = tx.prepare_cached(&statement(ctx, UPDATE_ACCOUNTS)).await;
        let stmt = stmt.map_err(&save_failed)?;
        let rows = tx.query(&stmt, &[&ids, &json, &expected]).await;
        for row in &rows.map_err(&save_failed)? {
            written.insert(get::<String>(row, 0)?, version(get(row, 1)?));
        }
    }
    tx.commit().await.map_err(&save_failed)?;
    Ok(saves
        .iter()
        .map(|(account, _, _)| match written.get(account.as_str()) {
            Some(version) => SaveOutcome::Saved { version: *version },
            None => SaveOutcome::Stale,
        })
        .collect())
}

/// At most `limit` accounts after `after` (`None`: from the first) in the order of their
/// ids, each with its endpoint's health.
pub(super) async fn accounts_after(
    ctx: Arc<Ctx>,
    after: Option<AccountId>,
    limit: usize,
) -> Result<Vec<AccountRecords>> {
    retrying(&ctx, || accounts_after_once(&ctx, after.as_ref(), limit)).await
}

async fn accounts_after_once(
    ctx: &Ctx,
    after: Option<&AccountId>,
    limit: usize,
) -> Result<Vec<AccountRecords>> {
    let load_failed = failed("listing accounts");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = ctx.client().await?;
    let rows = match after {
        None => {
            let stmt = client.prepare_cached(&statement(ctx, FIRST_ACCOUNTS)).await;
            let stmt = stmt.map_err(&load_failed)?;
            client.query(&stmt, &[&limit]).await
        }
        Some(after) => {
            let stmt = client.prepare_cached(&statement(ctx, ACCOUNTS_AFTER)).await;
            let stmt = stmt.map_err(&load_failed)?;
            client.query(&stmt, &[&after.as_str(), &limit]).await
        }
    }
    .map_err(&load_failed)?;
    rows.iter()
        .map(|row| {
            let health = match get::<Option<String>>(row, 3)? {
                Some(json) => Some(Versioned {
                    json,
                    version: version(get(row, 4)?),
                }),
                None => None,
            };
            Ok(AccountRecords {
                account: AccountId::new(get::<String>(row, 0)?),
                settings: Versioned {
                    json: get(row, 1)?,
                    version: version(get(row, 2)?),
                },
                health,
            })
        })
        .collect()
}

/// `account`'s record of `kind` (whose `paused` is not read) and its version, if one is
/// stored.
pub(super) async fn load(
    ctx: Arc<Ctx>,
    kind: Kind,
    account: AccountId,
) -> Result<Option<Versioned>> {
    retrying(&ctx, || load_once(&ctx, kind, &account)).await
}

async fn load_once(ctx: &Ctx, kind: Kind, account: &AccountId) -> Result<Option<Versioned>> {
    let load_failed = failed(format!("reading {}", kind.what()));
    let sql = match kind {
        Kind::Account => LOAD_ACCOUNT,
        Kind::Health { .. } => LOAD_HEALTH,
    };
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&statement(ctx, sql))
        .await
        .map_err(&load_failed)?;
    let row = client
        .query_opt(&stmt, &[&account.as_str()])
        .await
        .map_err(&load_failed)?;
    row.map(|row| {
        Ok(Versioned {
            json: get(&row, 0)?,
            version: version(get(&row, 1)?),
        })
    })
    .transpose()
}

/// Every record saved after version `cursor`, with its version, and the greatest version
/// read as the next cursor.
pub(super) async fn since(ctx: Arc<Ctx>, cursor: u64) -> Result<SettingsSnapshot> {
    retrying(&ctx, || since_once(&ctx, cursor)).await
}

async fn since_once(ctx: &Ctx, cursor: u64) -> Result<SettingsSnapshot> {
    let load_failed = failed("reading settings");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&statement(ctx, SETTINGS_SINCE))
        .await
        .map_err(&load_failed)?;
    let since = i64::try_from(cursor).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&since]).await.map_err(&load_failed)?;
    let mut snapshot = SettingsSnapshot {
        cursor,
        ..SettingsSnapshot::default()
    };
    for row in &rows {
        let record = Versioned {
            json: get(row, 2)?,
            version: version(get(row, 3)?),
        };
        snapshot.cursor = snapshot.cursor.max(record.version);
        if get::<&str>(row, 0)? == "a" {
            snapshot.accounts.push(record);
        } else {
            snapshot
                .health
                .push((AccountId::new(get::<String>(row, 1)?), record));
        }
    }
    Ok(snapshot)
}
