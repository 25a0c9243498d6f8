//! A fresh schema on the test PostgreSQL server, for the fleet tests.
//!
//! The server is `CALL_RESULT_WEBHOOK_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without one, a test says plainly that it did
//! not run and returns; with `CALL_RESULT_WEBHOOK_REQUIRE_DATABASE` set (as `.ci/run` does), a
//! missing server fails the test instead. With `CALL_RESULT_WEBHOOK_KEEP_SCHEMA` set, the schema
//! is kept at the end (its name is printed), for a post-mortem.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use call_result_webhook::store::{PostgresStore, PostgresStoreBuilder};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One test's schema; dropped with the value.
pub struct Database {
    pub url: String,
    pub schema: String,
}

fn run<T>(f: impl std::future::Future<Output = T> + Send) -> T
where
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(f)
            })
            .join()
            .expect("the runtime's thread")
    })
}

async fn execute(url: &str, sql: &str) -> Result<(), String> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| "timed out connecting".to_string())?
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|e| e.to_string())
}

impl Database {
    /// A fresh schema name on the server, or `None` (after saying why) when no server answers.
    pub fn new(test: &str) -> Option<Database> {
        let url = std::env::var("CALL_RESULT_WEBHOOK_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_URL.to_owned());
        if let Err(e) = run(execute(&url, "SELECT 1")) {
            if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_DATABASE").is_some() {
                panic!("{test}: no PostgreSQL server answers: {e}");
            }
            eprintln!(
                "{test}: NOT RUN: no PostgreSQL server answers ({e}); set CALL_RESULT_WEBHOOK_DATABASE_URL"
            );
            return None;
        }
        let schema = format!(
            "crwh_fleet_{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id()) << 32
        );
        Some(Database { url, schema })
    }

    /// A store on this schema.
    pub fn builder(&self) -> PostgresStoreBuilder {
        PostgresStore::builder(self.url.clone()).schema(self.schema.clone())
    }

    pub fn store(&self) -> PostgresStore {
        self.builder()
            .open_blocking()
            .expect("open the PostgreSQL store")
    }

    /// A `Webhooks` on a store of its own on this schema, without a worker, built now: what the
    /// store holds at this moment (settings and health are loaded at build), through the
    /// product's own reading, whatever any other instance holds in memory.
    pub fn fresh_view(&self) -> call_result_webhook::Webhooks {
        call_result_webhook::Webhooks::builder()
            .store(self.store())
            .policy(
                call_result_webhook::UrlPolicy::new()
                    .allow_http(true)
                    .allow_private(),
            )
            .build()
            .expect("build a view of the store")
    }

    /// Runs SQL on the server (not in the schema unless it names it).
    pub fn execute(&self, sql: &str) {
        run(execute(&self.url, sql)).expect("SQL on the test server");
    }

    /// [`Database::execute`], saying why it failed instead of panicking.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        run(execute(&self.url, sql))
    }
}

impl Database {
    /// The first column of the first row of `sql` (run on the server, not in the schema unless
    /// it names it), as a whole number: `SELECT deadlocks FROM pg_stat_database ...`.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let url = self.url.clone();
        run(async move {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let row = client
                .query_one(sql, &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<i64, String>(row.get(0))
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The server's count of deadlocks detected in this database, ever (`pg_stat_database`).
    /// The statistics are sent to the server's collector with a short delay: read it again
    /// after a pause before concluding nothing changed.
    pub fn deadlocks(&self) -> i64 {
        self.query_i64(
            "SELECT deadlocks::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
    }
}

/// A test's own connection to the outbox's schema, to see the claims.
pub struct Claims {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    schema: String,
}

/// A claim seen in the outbox: delivery id, claim token, and when its lease runs out (as an
/// instant of this process).
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub token: i64,
    pub lease_until: Instant,
}

impl Claims {
    pub fn connect(db: &Database) -> Claims {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test server");
            tokio::spawn(connection);
            client
        });
        Claims {
            runtime,
            client,
            schema: format!("\"{}\"", db.schema),
        }
    }

    fn query(&self, sql: &str, ids: Option<&[String]>) -> Vec<tokio_postgres::Row> {
        self.runtime.block_on(async {
            match ids {
                Some(ids) => self.client.query(sql, &[&ids]).await,
                None => self.client.query(sql, &[]).await,
            }
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Every claim held now (pending rows with a claim token), whoever holds it.
    pub fn held(&self) -> Vec<Claim> {
        let sql = format!(
            "SELECT id, claim_token, lease_until FROM {}.deliveries \
             WHERE state = 'pending' AND claim_token IS NOT NULL",
            self.schema
        );
        let rows = self.query(&sql, None);
        let (instant, wall) = (Instant::now(), wall_nanos(SystemTime::now()));
        rows.iter()
            .map(|row| {
                let lease_until: i64 = row.get(2);
                let ahead = lease_until - wall;
                let lease_until = if ahead >= 0 {
                    instant + Duration::from_nanos(ahead as u64)
                } else {
                    instant
                        .checked_sub(Duration::from_nanos(ahead.unsigned_abs()))
                        .unwrap_or(instant)
                };
                Claim {
                    id: row.get(0),
                    token: row.get(1),
                    lease_until,
                }
            })
            .collect()
    }

    /// Of `claims`, those still held under the same token.
    pub fn still_held(&self, claims: &[Claim]) -> Vec<Claim> {
        if claims.is_empty() {
            return Vec::new();
        }
        let ids: Vec<String> = claims.iter().map(|c| c.id.clone()).collect();
        let sql = format!(
            "SELECT id, claim_token FROM {}.deliveries \
             WHERE id = ANY($1::text[]) AND state = 'pending' AND claim_token IS NOT NULL",
            self.schema
        );
        let now: HashMap<String, i64> = self
            .query(&sql, Some(&ids))
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        claims
            .iter()
            .filter(|c| now.get(&c.id) == Some(&c.token))
            .cloned()
            .collect()
    }

    /// Rows of `schema_version`, and the highest version.
    pub fn schema_versions(&self) -> (i64, i64) {
        let sql = format!(
            "SELECT count(*)::bigint, coalesce(max(version), 0)::bigint FROM {}.schema_version",
            self.schema
        );
        let rows = self.query(&sql, None);
        (rows[0].get(0), rows[0].get(1))
    }
}

fn wall_nanos(at: SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

impl Drop for Database {
    fn drop(&mut self) {
        // Kept for a post-mortem (what was saved, in which order) when asked.
        if std::env::var_os("CALL_RESULT_WEBHOOK_KEEP_SCHEMA").is_some() {
            eprintln!(
                "kept the test schema {} (CALL_RESULT_WEBHOOK_KEEP_SCHEMA)",
                self.schema
            );
            return;
        }
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) = run(execute(&self.url, &sql)) {
            eprintln!("could not drop the test schema {}: {e}", self.schema);
        }
    }
}
