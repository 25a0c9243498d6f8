//! Three `dialer` processes started at the same moment on one PostgreSQL outbox with no settings
//! yet, the cores kept busy: each saves the account's preferences and switches the campaign on
//! at its start (as a dialer does at every start), then submits its lines. Every line must be
//! accepted: however their start-ups interleave, the campaign is on for every one of them from
//! the moment its own start-up has switched it on.
//!
//! This is the start of tests/fleet_crash.rs, on its own and repeated: there, a line refused at
//! the start ("not sent: the webhook is switched off on this campaign") fails the test only
//! when the dialer that refused it is not killed later (a restart feeds it again), so it
//! showed as a rare flake. Here every refusal counts.
//!
//! To show what happened, the schema is created first (the first store opened migrates it)
//! and a trigger logs every save of the account: when, by which dialer (each connects with its
//! own `application_name`), the version, whether the campaign was on in what it saved, and
//! how many audit records it carried. A failure prints that log beside what each dialer said.
//!
//! `CALL_RESULT_WEBHOOK_START_RACE_ROUNDS` sets the rounds (default [`ROUNDS`]).
#![cfg(all(unix, feature = "hyper", feature = "sqlite", feature = "postgres"))]

mod dialer_support;
mod pg_support;
mod support;

use std::time::{Duration, Instant};

use dialer_support::{Dialer, line};
use pg_support::Database;
use support::{CpuHog, Receiver};

const ROUNDS: usize = 8;
const PROCESSES: usize = 3;
const LINES: usize = 30;
/// The feeder's pause between lines.
const FEED_PAUSE: Duration = Duration::from_millis(15);
/// A round's dialers must have ended by then.
const ROUND_WITHIN: Duration = Duration::from_secs(60);
/// What the dialer example calls its account and campaign.
const CAMPAIGN: &str = "calls";

/// Creates the schema and the log of settings saves (the account's, and the endpoint's health,
/// whose versions come from the same sequence). The log is only an aid: if the outbox's
/// tables have changed so that it cannot be made, the test says so and goes on without it.
fn prepare(db: &Database) {
    drop(db.store());
    let s = format!("\"{}\"", db.schema);
    let made = db.try_execute(&format!(
        "CREATE TABLE {s}.test_saves ( \
             n bigserial PRIMARY KEY, \
             at timestamptz NOT NULL DEFAULT clock_timestamp(), \
             by text NOT NULL DEFAULT current_setting('application_name'), \
             what text NOT NULL, version bigint, campaign_on boolean, audit_records int); \
         CREATE FUNCTION {s}.test_log_account() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             INSERT INTO {s}.test_saves (what, version, campaign_on, audit_records) VALUES ( \
                 'the account', NEW.version, \
                 coalesce((NEW.settings::jsonb -> 'campaigns' ->> '{CAMPAIGN}')::boolean, false), \
                 jsonb_array_length(coalesce(NEW.settings::jsonb -> 'audit', '[]'::jsonb))); \
             RETURN NEW; \
         END $$; \
         CREATE TRIGGER test_log_account AFTER INSERT OR UPDATE ON {s}.accounts \
             FOR EACH ROW EXECUTE FUNCTION {s}.test_log_account(); \
         CREATE FUNCTION {s}.test_log_health() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             INSERT INTO {s}.test_saves (what, version) VALUES ('the health', NEW.version); \
             RETURN NEW; \
         END $$; \
         CREATE TRIGGER test_log_health AFTER INSERT OR UPDATE ON {s}.health \
             FOR EACH ROW EXECUTE FUNCTION {s}.test_log_health();"
    ));
    if let Err(e) = made {
        println!("start race: no log of the settings saves ({e})");
    }
}

/// The log of account saves, one line each.
fn saves(db: &Database) -> Vec<String> {
    let url = db.url.clone();
    let sql = format!(
        "SELECT to_char(at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS') || ' ' || by || ' saved ' || what \
         || ' as version ' || version || coalesce(': campaign ' || CASE WHEN campaign_on THEN 'on' \
         ELSE 'OFF' END || ', ' || audit_records || ' audit record(s)', '') \
         FROM \"{}\".test_saves ORDER BY n",
        db.schema
    );
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                match client.query(&sql, &[]).await {
                    Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
                    Err(e) => vec![format!("(no log of the saves: {e})")],
                }
            })
    })
    .join()
    .expect("the query's thread")
}

fn start(db: &Database, n: usize, url: &str) -> Dialer {
    let database_url = format!(
        "{}{}application_name=dialer-{n}",
        db.url,
        if db.url.contains('?') { '&' } else { '?' }
    );
    let args = [
        "--database-url",
        &database_url,
        "--database-schema",
        &db.schema,
        "--url",
        url,
        "--username",
        "dialer",
        "--password",
        "start-race",
        "--allow-http",
        "--allow-private",
    ];
    let input = (0..LINES)
        .map(|l| line("Start Race", &format!("start-{n}-{l:03}")).into_bytes())
        .collect();
    Dialer::start(args, input, FEED_PAUSE, true)
}

#[test]
fn dialers_starting_together_on_an_empty_outbox_accept_every_line() {
    let rounds = std::env::var("CALL_RESULT_WEBHOOK_START_RACE_ROUNDS")
        .ok()
        .map_or(ROUNDS, |r| {
            r.parse()
                .expect("CALL_RESULT_WEBHOOK_START_RACE_ROUNDS is a number")
        });
    if Database::new("start race").is_none() {
        return;
    }
    let receiver = Receiver::start();
    let url = receiver.url_for("/calls");
    let started = Instant::now();
    let mut failed_rounds = Vec::new();
    let mut refused_total = 0;
    for round in 1..=rounds {
        let db = Database::new("start race").expect("a database");
        prepare(&db);
        let hog = CpuHog::per_core(ROUND_WITHIN);
        let dialers: Vec<Dialer> = (0..PROCESSES).map(|n| start(&db, n, &url)).collect();
        let deadline = Instant::now() + ROUND_WITHIN;
        let ended: Vec<_> = dialers.into_iter().map(|d| d.wait(deadline)).collect();
        drop(hog);
        let mut said = Vec::new();
        let mut refused = 0;
        for (n, end) in ended.iter().enumerate() {
            let refusals: Vec<&str> = end
                .stderr
                .lines()
                .filter(|l| l.contains("switched off"))
                .collect();
            refused += refusals.len();
            let ok = end.status.is_some_and(|s| s.success());
            if !refusals.is_empty() || !ok || end.acks.len() != LINES {
                said.push(format!(
                    "  dialer-{n}: exit {:?}, {} of {LINES} acknowledged; it said:\n    {}",
                    end.status,
                    end.acks.len(),
                    end.stderr_timed.trim_end().replace('\n', "\n    ")
                ));
            }
        }
        refused_total += refused;
        println!("start race round {round}: {refused} lines refused as switched off");
        if !said.is_empty() {
            let log = saves(&db).join("\n    ");
            failed_rounds.push(format!(
                "round {round}: {refused} lines refused\n  the account's saves, in order:\n    \
                 {log}\n{}",
                said.join("\n")
            ));
        }
    }
    println!(
        "start race: {} of {rounds} rounds had a line refused or a dialer fail ({refused_total} \
         lines refused), {:.1} s",
        failed_rounds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed_rounds.is_empty(),
        "dialers started together refused lines:\n{}",
        failed_rounds.join("\n")
    );
}
