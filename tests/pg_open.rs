//! A tokio dialer opens the PostgreSQL store with `open().await`: the connecting and the
//! migration run off its runtime, whose one thread keeps running its other tasks meanwhile.
//! Runs against the test server of tests/pg_support.
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use call_result_webhook::store::PostgresStore;
use call_result_webhook::{Error, Webhooks};
use pg_support::Database;

#[tokio::test(flavor = "current_thread")]
async fn open_await_leaves_the_runtimes_one_thread_free_and_the_store_works() {
    let Some(db) = Database::new("open_await_leaves_the_runtimes_one_thread_free") else {
        return;
    };
    // Another task on the runtime's only thread: it ticks only while that thread is free.
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });

    // A fresh schema: connecting and migrating take a while.
    let store = db.builder().open().await.expect("open the store");
    let ticked = ticks.load(Ordering::SeqCst);
    assert!(
        ticked > 0,
        "the runtime's thread ran nothing else while the store opened"
    );
    ticker.abort();

    // The store it opened serves the async API.
    let webhooks = Webhooks::builder().store(store).build().unwrap();
    let status = webhooks.status(&"acme".into(), None).await.unwrap();
    assert_eq!(status.stats.pending, 0);

    // The blocking form opens the same schema, already migrated.
    let again = tokio::task::spawn_blocking({
        let builder = db.builder();
        move || builder.open_blocking()
    })
    .await
    .unwrap()
    .expect("open the store again");
    assert_eq!(again.schema(), db.schema);
}

#[tokio::test(flavor = "current_thread")]
async fn open_await_answers_the_same_errors() {
    let refused = PostgresStore::builder("postgres://dialer@127.0.0.1:5432/calls")
        .schema("Not A Schema")
        .open()
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidConfig {
                field: "schema",
                ..
            })
        ),
        "{refused:?}"
    );
}
