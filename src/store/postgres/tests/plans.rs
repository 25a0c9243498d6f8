//! The query plans of the claim and of `next_due`.

use super::*;

/// Answers 200 after 2 ms, in process: the load on the database is a real worker's.
struct SlowOk;

impl crate::BlockingDispatcher for SlowOk {
    fn dispatch_blocking(
        &self,
        _: http::Request<Bytes>,
    ) -> std::result::Result<crate::dispatch::ReceiverResponse, crate::dispatch::TransportError>
    {
        std::thread::sleep(Duration::from_millis(2));
        Ok(crate::dispatch::ReceiverResponse::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Bytes::new(),
        ))
    }
}

/// Run by hand: `cargo test --features postgres --lib store::postgres::tests::plans::explain --
/// --ignored --nocapture`. Loads 1,000,000 pending deliveries over 500 accounts, lets two
/// workers deliver from them for 20 s (the default bounds: the claims skip accounts at their
/// bound, rows are leased, deleted and updated under them, autovacuum as configured), and
/// prints the plans of both walks of the claim and of `next_due` while they run: each must
/// use its index, never a sequential scan of `deliveries`.
#[test]
#[ignore = "loads a million rows; run by hand"]
fn explain_claim_and_next_due_on_a_million_pending() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) \
         SELECT 'd' || i, 'acct' || (i % 500), 'c', 'Reference=1'::bytea, 'form', \
             i::bigint * 1000, i::bigint * 1000, 'pending' FROM generate_series(1, 1000000) AS i; \
         INSERT INTO {s}.stats_deltas (account, campaign, pending) \
         SELECT 'acct' || a, 'c', 2000 FROM generate_series(0, 499) AS a; \
         ANALYZE {s}.deliveries"
    ));
    let admin = crate::Principal::administrator("explain");
    let policy = crate::UrlPolicy::new().allow_http(true).allow_private();
    let mut running = Vec::new();
    for n in 0..2 {
        let webhooks = crate::Webhooks::builder()
            .store(db.open())
            .policy(policy.clone())
            .build()
            .unwrap();
        if n == 0 {
            for a in 0..500 {
                let account = AccountId::new(format!("acct{a}"));
                webhooks
                    .update_preferences_blocking(
                        &admin,
                        &account,
                        crate::PreferencesUpdate::new()
                            .url("http://127.0.0.1:9/calls")
                            .enabled(true),
                    )
                    .unwrap();
                webhooks
                    .set_campaign_webhook_blocking(&admin, &account, &"c".into(), true)
                    .unwrap();
            }
        }
        let worker = webhooks.start_threads(SlowOk, 64).unwrap();
        running.push((webhooks, worker));
    }
    std::thread::sleep(Duration::from_secs(20));
    let delivered = db.scalar(&format!("SELECT count(*) FROM {s}.delivered_ids"));
    println!("delivered while loading the plans' data: {delivered}");
    let sql = sql::Statements::new(&db.schema, false);
    // A `next_due` that leaves out 490 of the 500 accounts: its head may hold nothing it
    // may take, so its walk account by account runs.
    let most: Vec<String> = (10..500).map(|a| format!("'acct{a}'")).collect();
    let most_skipped_due = format!("($NOW, ARRAY[{}]::text[], 320)", most.join(","));
    let mut plans = Vec::new();
    // Custom plans (the first executions of a prepared statement) and the generic plan the
    // server may switch to after five.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        for (name, statement, args, indexes) in [
            (
                "claim, head",
                &sql.claim_head,
                "($NOW, $NOW + 30000000000, ARRAY['acct1','acct2']::text[], 64, 4, \
                 ARRAY['acct3']::text[], ARRAY[2]::bigint[], ARRAY[]::bigint[], 320)",
                &["deliveries_due"][..],
            ),
            (
                "claim, account by account",
                &sql.claim_by_account,
                "($NOW, $NOW + 30000000000, ARRAY['acct1','acct2']::text[], 64, 4, \
                 ARRAY['acct3']::text[], ARRAY[2]::bigint[], ARRAY[]::bigint[])",
                &["deliveries_account_due"][..],
            ),
            (
                "next_due",
                &sql.next_due,
                "($NOW, ARRAY['acct1']::text[], 320)",
                &["deliveries_due", "deliveries_account_due"][..],
            ),
            (
                "next_due, 490 accounts left out",
                &sql.next_due,
                most_skipped_due.as_str(),
                &["deliveries_due", "deliveries_account_due"][..],
            ),
        ] {
            let now = Timestamp::now().as_nanosecond().to_string();
            let args = args.replace("$NOW", &now);
            let explain = format!(
                "BEGIN; SET LOCAL plan_cache_mode = {mode}; PREPARE q AS {statement}; \
                 EXPLAIN (ANALYZE, BUFFERS) EXECUTE q{args}; ROLLBACK"
            );
            let plan: Vec<String> = db
                .sql(&explain)
                .into_iter()
                .map(|row| row[0].clone().unwrap_or_default())
                .collect();
            println!("--- {name} ({mode})\n{}", plan.join("\n"));
            plans.push((indexes, plan.join("\n")));
        }
    }
    for (_, worker) in &running {
        worker.shutdown_blocking(Duration::from_secs(10)).unwrap();
    }
    for (indexes, plan) in &plans {
        for index in *indexes {
            assert!(plan.contains(index), "{plan}");
        }
        assert!(!plan.contains("Seq Scan on deliveries"), "{plan}");
    }
    drop(running);
    drop(store);
}

/// The session every pooled connection runs (generic plans) keeps the claim on the due
/// index of a table that has no statistics at all, where a custom plan would read and sort
/// the whole backlog.
#[test]
fn the_claim_walks_the_due_index_of_a_table_without_statistics() {
    let db = db!();
    drop(db.open());
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) \
         SELECT 'd' || i, 'acct' || (i % 50), 'c', '\\x00'::bytea, 'form', i, i, 'pending' \
         FROM generate_series(1, 50000) AS i"
    ));
    let analyzed = db.scalar(&format!(
        "SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL \
             OR last_vacuum IS NOT NULL OR last_autovacuum IS NOT NULL)::text \
         FROM pg_stat_user_tables WHERE schemaname = '{}' AND relname = 'deliveries'",
        db.schema
    ));
    let sql = sql::Statements::new(&db.schema, false);
    let plan_with = |setup: &str| -> String {
        let now = 1_000_000_i64;
        let explain = format!(
            "BEGIN; {setup}; PREPARE q AS {}; \
             EXPLAIN EXECUTE q({now}, {now} + 1000, ARRAY[]::text[], 64, 4, \
                 ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::bigint[], 320); ROLLBACK",
            sql.claim_head
        );
        db.sql(&explain)
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ours = plan_with(&ops::Bounds::default().session_setup());
    assert!(ours.contains("Index Scan using deliveries_due"), "{ours}");
    assert!(
        !ours.contains("Bitmap Index Scan on deliveries_due"),
        "{ours}"
    );
    assert!(
        !ours.contains("Bitmap Index Scan on deliveries_account_due"),
        "{ours}"
    );
    // The outcomes and the lease changes look rows up by key alone.
    let setup = ops::Bounds::default().session_setup();
    for (statement, args) in [
        (
            &sql.record_delivered,
            "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], ARRAY[1,1]::bigint[], \
             ARRAY[NULL,NULL]::text[], ARRAY[NULL,NULL]::integer[], ARRAY[NULL,NULL]::text[], \
             ARRAY[NULL,NULL]::bigint[], ARRAY[5,7]::bigint[], ARRAY['','ok']::text[])",
        ),
        (
            &sql.record_kept,
            "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], ARRAY[1,1]::bigint[], \
             ARRAY['HTTP 503',NULL]::text[], ARRAY[503,NULL]::integer[], \
             ARRAY['pending','failed']::text[], ARRAY[2,NULL]::bigint[], ARRAY[5,7]::bigint[], \
             ARRAY['busy','']::text[])",
        ),
        (&sql.release, "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[])"),
        (&sql.extend, "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], 5)"),
    ] {
        let plan = db
            .sql(&format!(
                "BEGIN; {setup}; PREPARE q AS {statement}; EXPLAIN EXECUTE q{args}; ROLLBACK"
            ))
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(plan.contains("deliveries_pkey"), "{plan}");
        assert!(!plan.contains("on deliveries_due"), "{plan}");
        assert!(!plan.contains("on deliveries_account_due"), "{plan}");
    }
    if analyzed == "false" {
        // What the session setting avoids, shown on the same table: a custom plan without
        // statistics reads the backlog.
        let custom = plan_with("SET LOCAL plan_cache_mode = force_custom_plan");
        println!("a custom plan without statistics:\n{custom}");
    }
}

/// The attempts log's page, its prune and a campaign's page, as the store prepares them
/// (generic plans), on 200,000 attempts of 51 accounts, analyzed and not vacuumed: each walks
/// an index to its page, none reads the table through. A small account among big ones once
/// took a backward walk of an index on the number alone, filtering every row.
#[test]
fn the_attempts_log_reads_and_prunes_through_its_indexes() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.attempts (account, campaign, delivery, number, at, state, status, \
             duration_us, answer) \
         SELECT CASE WHEN i % 10000 = 7 THEN 'small' ELSE 'a' || (i % 50) END, \
             CASE WHEN i % 5000 = 0 THEN 'rare' ELSE 'c' || (i % 10) END, 'd' || i, 1, i, \
             'delivered', 200, 5, '' FROM generate_series(1, 200000) AS i; \
         ANALYZE {s}.attempts"
    ));
    let setup = ops::Bounds::default().session_setup();
    let explain = |statement: &str, args: &str| -> String {
        db.sql(&format!(
            "BEGIN; {setup}; PREPARE q AS {statement}; EXPLAIN EXECUTE q{args}; ROLLBACK"
        ))
        .into_iter()
        .map(|row| row[0].clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
    };
    let plans = [
        (
            log::read_sql(&s, false, false),
            "('small', 9223372036854775807, 51)",
            "attempts_pkey",
        ),
        (
            log::read_sql(&s, true, false),
            "('a0', 9223372036854775807, 'rare', 51)",
            "attempts_by_campaign",
        ),
        (
            log::read_sql(&s, false, true),
            "('small', 9223372036854775807, 'failed', 51)",
            "attempts_pkey",
        ),
        (log::prune_sql(&s), "(100000, 1000)", "attempts_by_time"),
    ];
    for (statement, args, index) in plans {
        let plan = explain(&statement, args);
        assert!(plan.contains(index), "{statement}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{statement}:\n{plan}");
    }
    // And through the store: the small account's page is its own attempts.
    let small = store
        .attempts(&crate::store::AttemptQuery::account("small").limit(5))
        .unwrap();
    assert_eq!(small.len(), 5);
    assert!(small.windows(2).all(|w| w[0].cursor > w[1].cursor));
}
