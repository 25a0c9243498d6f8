//! The dialer's transactional enqueue.

use super::*;

#[test]
fn the_dialer_enqueues_inside_its_own_transaction() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    db.sql(&format!("CREATE TABLE {s}.calls (id text PRIMARY KEY)"));
    let delivery = new("call-1", "acme", "Reference=1", t(0));
    block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let insert_call = format!("INSERT INTO {s}.calls (id) VALUES ('call-1')");

        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&insert_call).await.unwrap();
        enqueue_in(&tx, &db.schema, &delivery).await.unwrap();
        tx.rollback().await.unwrap();
        let calls: i64 = client
            .query_one(&format!("SELECT count(*) FROM {s}.calls"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(calls, 0);
        assert!(!store.has_pending().unwrap());

        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&insert_call).await.unwrap();
        assert_eq!(
            enqueue_in(&tx, &db.schema, &delivery).await.unwrap(),
            Enqueued::Stored
        );
        assert_eq!(
            enqueue_in(&tx, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyStored
        );
        tx.commit().await.unwrap();
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyStored
        );

        // The statement itself, as a sqlx user runs it.
        let sql = enqueue_statement(&db.schema);
        let params = EnqueueParams::new(&delivery).unwrap();
        let outcome: String = client
            .query_one(&sql, &params.as_params())
            .await
            .unwrap()
            .get(0);
        assert_eq!(outcome, "duplicate");
        let other = new("call-1", "acme", "Reference=2", t(0));
        let params = EnqueueParams::new(&other).unwrap();
        let outcome: String = client
            .query_one(&sql, &params.as_params())
            .await
            .unwrap()
            .get(0);
        assert_eq!(outcome, "conflict");
        let err = enqueue_in(&client, &db.schema, &other).await.unwrap_err();
        assert!(matches!(err, Error::IdConflict { .. }));
        assert!(!format!("{params:?}").contains("Reference"));
    });
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM {s}.calls")), "1");
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body.bytes().as_ref(), b"Reference=1");
    assert_eq!(
        store.stats(&AccountId::new("acme"), None).unwrap().pending,
        1
    );
    // Due at the database's now (the dialer's times keep only their distance).
    let claimed = claim(&store, Timestamp::now(), 10, &[]);
    assert_eq!(ids(&claimed), ["call-1"]);
    // Delivered: the same call result again is "already delivered", another one a conflict.
    let answers = store.record_attempts(&[(
        claimed[0].delivery.id.clone(),
        claimed[0].token,
        record(t(1), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    let other = new("call-1", "acme", "Reference=2", t(0));
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyDelivered
        );
        let err = enqueue_in(&client, &db.schema, &other).await.unwrap_err();
        assert!(matches!(err, Error::IdConflict { .. }), "{err:?}");
    });
    assert!(!store.has_pending().unwrap());
}

#[test]
fn the_transactional_enqueue_refuses_ids_the_database_would_refuse() {
    let db = db!();
    let store = db.open();
    let mut bad = new("call-1", "acme", "Reference=1", t(0));
    bad.campaign = CampaignId::new("winter\0sale");
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let err = enqueue_in(&client, &db.schema, &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidId {
                    field: "campaign_id",
                    ..
                }
            ),
            "{err:?}"
        );
        bad.campaign = CampaignId::new("winter-sale");
        bad.account = AccountId::new("");
        let err = enqueue_in(&client, &db.schema, &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidId {
                    field: "account_id",
                    ..
                }
            ),
            "{err:?}"
        );
    });
    assert!(!store.has_pending().unwrap());
}
