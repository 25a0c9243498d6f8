//! Keeping the outbox's tables fit for its plans when the server does not.
//!
//! The claim's plan depends on the planner knowing `deliveries` is large: without statistics
//! (a table never analyzed: a fresh schema filled faster than autovacuum's first pass, or a
//! server with `autovacuum = off`) the planner reads every pending row into a bitmap and sorts
//! them to find the head of the due order (measured: 12 ms for 50,000 pending rows, growing
//! with the backlog, against 0.1 ms for the index walk it takes with statistics). And deleted
//! rows that nobody vacuums pile up at the head of the due index, where every claim walks.
//!
//! So every [`EVERY`], one process of the fleet at a time (an advisory lock) looks at the
//! server's own counters for the outbox's busy tables and, only where autovacuum would have
//! acted by its default thresholds but has not (it is off, or has not run yet on a table
//! never analyzed), runs `ANALYZE` or `VACUUM` itself. With autovacuum on and caught up it
//! does nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

use super::ops::Ctx;
use super::schema::LOCK_SPACE;
use super::sql::{get, quote_ident};

/// How often a process looks.
const EVERY: Duration = Duration::from_secs(2);

/// One process at a time looks after a schema's tables.
const UPKEEP_LOCK_SPACE: i32 = LOCK_SPACE + 3;

/// The tables the outbox writes on every delivery.
const TABLES: [&str; 3] = ["deliveries", "delivered_ids", "stats_deltas"];

/// What the server counts of each table, and whether autovacuum runs at all: autovacuum's
/// default thresholds (`autovacuum_analyze_threshold` 50 and `_scale_factor` 0.1,
/// `autovacuum_vacuum_threshold` 50 and `_scale_factor` 0.2) decide what is due.
const DUE: &str = "SELECT s.relname::text, \
    (s.last_analyze IS NULL AND s.last_autoanalyze IS NULL) \
        OR NOT current_setting('autovacuum')::boolean AS may_analyze, \
    s.n_mod_since_analyze > 50 + 0.1 * greatest(s.n_live_tup, 0) AS analyze_due, \
    NOT current_setting('autovacuum')::boolean \
        AND s.n_dead_tup > 50 + 0.2 * greatest(s.n_live_tup, 0) AS vacuum_due \
    FROM pg_stat_user_tables s WHERE s.schemaname = $1 AND s.relname = ANY ($2::text[])";

/// Looks after the tables every [`EVERY`] for as long as the store's runtime runs.
pub(super) async fn forever(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = look_after(&ctx).await {
            // The plans only get slower meanwhile; the next look tries again.
            tracing::debug!(error = %e, "outbox: looking after the tables failed; will retry");
        }
    }
}

async fn look_after(ctx: &Ctx) -> Result<()> {
    let failed = |e| Error::store("looking after the outbox's tables", e);
    let client = ctx.client().await?;
    let schema = ctx.sql.schema.as_str();
    let locked: bool = get(
        &client
            .query_one(
                "SELECT pg_try_advisory_lock($1::integer, hashtext($2::text))",
                &[&UPKEEP_LOCK_SPACE, &schema],
            )
            .await
            .map_err(failed)?,
        0,
    )?;
    if !locked {
        return Ok(());
    }
    let done = async {
        let tables: Vec<&str> = TABLES.to_vec();
        let rows = client
            .query(DUE, &[&schema, &tables])
            .await
            .map_err(failed)?;
        for row in &rows {
            let table: String = get(row, 0)?;
            let (may_analyze, analyze_due, vacuum_due): (bool, bool, bool) =
                (get(row, 1)?, get(row, 2)?, get(row, 3)?);
            let name = format!("{}.{}", quote_ident(schema), quote_ident(&table));
            let work = if vacuum_due {
                format!("VACUUM (ANALYZE) {name}")
            } else if may_analyze && analyze_due {
                format!("ANALYZE {name}")
            } else {
                continue;
            };
            tracing::debug!(table = %table, work = %work, "outbox: autovacuum has not; doing it");
            client.batch_execute(&work).await.map_err(failed)?;
        }
        Ok(())
    }
    .await;
    // Unlocked on the same connection, whatever happened above.
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1::integer, hashtext($2::text))",
            &[&UPKEEP_LOCK_SPACE, &schema],
        )
        .await
        .map_err(failed);
    done.and(unlocked.map(drop))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::postgres::tests::Db;

    #[test]
    fn an_outbox_never_analyzed_gets_statistics_and_its_claim_walks_the_index() {
        let Some(db) = Db::new() else { return };
        let store = db.open();
        let s = db.s();
        db.sql(&format!(
            "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
                 next_attempt_at, state) \
             SELECT 'd' || i, 'acct' || (i % 50), 'c', '\\x00'::bytea, 'form', i, i, 'pending' \
             FROM generate_series(1, 50000) AS i"
        ));
        let head = format!(
            "EXPLAIN SELECT id FROM {s}.deliveries WHERE state = 'pending' \
             ORDER BY next_attempt_at LIMIT 320"
        );
        let analyzed = format!(
            "SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)::text \
             FROM pg_stat_user_tables WHERE schemaname = '{}' AND relname = 'deliveries'",
            db.schema
        );
        // The store's own upkeep (every 2 s) analyzes it once the server has counted the
        // inserts (its counters are flushed within a second or so).
        let started = Instant::now();
        while db.scalar(&analyzed) != "true" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not analyzed after 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let plan: Vec<String> = db
            .sql(&head)
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using deliveries_due"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
        drop(store);
    }
}
