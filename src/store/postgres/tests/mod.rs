//! Against a real PostgreSQL server: `CALL_RESULT_WEBHOOK_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`. Each test works in a fresh schema of its own
//! and drops it at the end. Without a server, each test prints `SKIPPED: ...` and returns.

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use tokio_postgres::NoTls;

use super::*;
use crate::encoding::{EncodedBody, Encoding};
use crate::store::NextStep;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn url() -> String {
    std::env::var("CALL_RESULT_WEBHOOK_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// A fresh schema on the test server, dropped with the value.
pub(super) struct Db {
    url: String,
    pub(super) schema: String,
}

/// Runs `f` on a runtime of its own, on a thread of its own (so that a test may call it from
/// inside another runtime).
fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a test runtime")
                    .block_on(f)
            })
            .join()
            .expect("the test runtime's thread")
    })
}

impl Db {
    /// `None` (after saying so) when no server answers.
    pub(super) fn new() -> Option<Db> {
        let url = url();
        let probe = block_on(async {
            let (client, conn) =
                tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        });
        if let Err(e) = probe {
            // CI sets this: there, a missing server is a failure, not a skip.
            if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_DATABASE").is_some() {
                panic!("no PostgreSQL at {}: {e}", redacted(&url));
            }
            println!("SKIPPED: no PostgreSQL at {}: {e}", redacted(&url));
            return None;
        }
        let schema = format!("crwh_test_{:016x}", getrandom::u64().expect("random"));
        Some(Db { url, schema })
    }

    pub(super) fn builder(&self) -> PostgresStoreBuilder {
        PostgresStore::builder(&self.url)
            .schema(&self.schema)
            .pool_size(4)
    }

    pub(super) fn open(&self) -> PostgresStore {
        self.builder().open_blocking().expect("open the store")
    }

    /// Runs `sql` (simple protocol) on a connection of its own; answers each row's columns as
    /// text.
    pub(super) fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let messages = client.simple_query(sql).await.expect(sql);
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }

    /// The first column of the first row of `sql`.
    pub(super) fn scalar(&self, sql: &str) -> String {
        self.sql(sql)[0][0].clone().unwrap_or_default()
    }

    pub(super) fn s(&self) -> String {
        sql::quote_ident(&self.schema)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.s());
        let _ = block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&drop_schema).await
        });
    }
}

macro_rules! db {
    () => {
        match Db::new() {
            Some(db) => db,
            None => return,
        }
    };
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn new(id: &str, account: &str, body: &str, due: Timestamp) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::new(id).unwrap(),
        account: account.into(),
        campaign: "spring".into(),
        body: EncodedBody::from_parts(Bytes::from(body.to_owned()), Encoding::Form),
        created_at: due,
        next_attempt_at: due,
    }
}

fn claim(store: &PostgresStore, now: Timestamp, limit: usize, skip: &[AccountId]) -> Vec<Claim> {
    store
        .claim(&ClaimRequest {
            now,
            limit,
            lease: Duration::from_secs(30),
            skip,
            ..ClaimRequest::default()
        })
        .unwrap()
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.delivery.id.as_str()).collect()
}

fn record(at: Timestamp, next: NextStep, error: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        at,
        status: Some(if error.is_some() { 503 } else { 200 }),
        error: error.map(str::to_owned),
        next,
        duration: std::time::Duration::from_millis(5),
        answer: String::new(),
    }
}

mod claims;
mod clocks;
mod enqueue;
mod fleet;
mod open;
mod plans;
