//! The transactional enqueue: the dialer writes its own call record and the webhook's delivery
//! in one transaction of its own, with whichever client it uses.

use std::fmt;

use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::store::{NewDelivery, to_nanos};

use super::sql::{enqueue_sql, with_schema};

/// The SQL text of one statement that stores one delivery in the outbox of `schema`, for a
/// dialer to run inside its own transaction, beside its own writes: committed, the delivery is
/// stored, counted and announced to the fleet together with them; rolled back, none of it
/// happened.
///
/// It takes the seven parameters of [`EnqueueParams`], in field order (`$1` to `$7`: text,
/// text, text, bytea, text, bigint, bigint), and answers one row with one text column,
/// `outcome`:
///
/// - `stored`: stored now (and counted, and announced when the transaction commits);
/// - `duplicate`: this id is stored already for the same call result; nothing changed;
/// - `delivered`: this id was delivered within the retention for the same call result;
///   nothing changed;
/// - `conflict`: this id is stored, or was delivered within the retention, for another call
///   result (account, campaign or body); nothing changed; treat it as [`Error::IdConflict`]
///   (roll back, or go on without it);
/// - `raced`: another transaction stored this id at the same moment and committed while
///   this one waited for it; read the row (or run the statement again) to compare.
///
/// It does not check the store's `max_pending`: the dialer's transaction is not refused for
/// a full outbox. The schema must have been created by [`PostgresStore`](super::PostgresStore)
/// (open one once before).
///
/// With sqlx: `sqlx::query_scalar::<_, String>(&sql).bind(p.id).bind(p.account)
/// .bind(p.campaign).bind(p.body).bind(p.encoding).bind(p.created_at)
/// .bind(p.next_attempt_at).fetch_one(&mut *tx)`. With tokio-postgres, [`enqueue_in`] runs
/// it for you, or pass [`EnqueueParams::as_params`] as the parameters.
pub fn enqueue_statement(schema: &str) -> String {
    enqueue_sql(schema)
}

/// The parameters of [`enqueue_statement`] for one delivery, as plain values, in parameter
/// order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EnqueueParams<'a> {
    /// `$1` (text): the delivery id, sent as `webhook-id`.
    pub id: &'a str,
    /// `$2` (text): the account.
    pub account: &'a str,
    /// `$3` (text): the campaign.
    pub campaign: &'a str,
    /// `$4` (bytea): the exact bytes every attempt sends.
    pub body: &'a [u8],
    /// `$5` (text): the body's encoding, `form` or `json`.
    pub encoding: &'a str,
    /// `$6` (bigint): when it was submitted, in nanoseconds since the Unix epoch, on the
    /// dialer's clock. The outbox keeps its times on the database's clock (see
    /// [`PostgresStore`](super::PostgresStore)): the statement stores the database's
    /// `clock_timestamp()` instead.
    pub created_at: i64,
    /// `$7` (bigint): when the first attempt is due, in nanoseconds since the Unix epoch, on
    /// the dialer's clock: stored as far from the database's clock as it is from `$6`.
    pub next_attempt_at: i64,
}

impl fmt::Debug for EnqueueParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is a call result: its length only.
        f.debug_struct("EnqueueParams")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("campaign", &self.campaign)
            .field("body_len", &self.body.len())
            .field("encoding", &self.encoding)
            .field("created_at", &self.created_at)
            .field("next_attempt_at", &self.next_attempt_at)
            .finish()
    }
}

impl<'a> EnqueueParams<'a> {
    /// The parameters for `delivery`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] when the account or campaign id is not one the outbox may store
    /// (see [`AccountId::check`](crate::AccountId::check)); [`Error::Store`] when a time is
    /// outside the years 1678 to 2261 that the outbox stores.
    pub fn new(delivery: &'a NewDelivery) -> Result<Self> {
        // A delivery made by `Webhooks::prepare` is checked already; one built by hand is
        // checked here, before the database can refuse the dialer's whole transaction.
        delivery.account.check()?;
        delivery.campaign.check()?;
        Ok(EnqueueParams {
            id: delivery.id.as_str(),
            account: delivery.account.as_str(),
            campaign: delivery.campaign.as_str(),
            body: delivery.body.bytes().as_ref(),
            encoding: delivery.body.encoding().as_str(),
            created_at: to_nanos(delivery.created_at)?,
            next_attempt_at: to_nanos(delivery.next_attempt_at)?,
        })
    }

    /// The parameters as tokio-postgres takes them, in order.
    pub fn as_params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.id,
            &self.account,
            &self.campaign,
            &self.body,
            &self.encoding,
            &self.created_at,
            &self.next_attempt_at,
        ]
    }
}

/// What [`enqueue_in`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// Stored now (inside a transaction: once it commits).
    Stored,
    /// Its id is stored already for the same call result: left as it is.
    AlreadyStored,
    /// Its id was delivered within the retention for the same call result: not sent again.
    AlreadyDelivered,
}

/// Stores `delivery` in the outbox of `schema` through `client`, a tokio-postgres client or
/// transaction of the dialer's: inside a transaction, the delivery is stored if and only if
/// the transaction commits. A delivery already stored for the same call result, or delivered
/// within the retention for it, is left as it is, and the answer says which.
///
/// # Errors
///
/// [`Error::IdConflict`] when the id is stored, or was delivered within the retention, for
/// another call result (the statement changed nothing; the transaction is still usable),
/// [`Error::InvalidId`] for an account or campaign id the outbox may not store (nothing was
/// sent to the database), [`Error::Store`] when the statement failed (inside a transaction,
/// roll it back).
///
/// # Examples
///
/// The dialer records a finished call and enqueues its webhook in one transaction:
///
/// ```no_run
/// use call_result_webhook::store::postgres::enqueue_in;
/// use call_result_webhook::store::PostgresStore;
/// use call_result_webhook::{CallResult, DeliveryId, Prepared, Webhooks};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://dialer@db.internal/calls";
/// let store = PostgresStore::connect(url)?;
/// let schema = store.schema().to_owned();
/// let webhooks = Webhooks::builder().store(store).build()?;
///
/// let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
/// tokio::spawn(connection);
///
/// let call = CallResult::builder().reference("123").result("Connected").build();
/// // The id derives from the dialer's own call id: a retried transaction stores it once.
/// let id = DeliveryId::new("call-8812")?;
/// let tx = client.transaction().await?;
/// tx.execute("INSERT INTO calls (id, result) VALUES ($1, $2)", &[&"8812", &"Connected"])
///     .await?;
/// match webhooks.prepare(&"acme".into(), &"winter-sale".into(), &call, id)? {
///     Prepared::Ready(delivery) => {
///         let enqueued = enqueue_in(&tx, &schema, &delivery).await?;
///         println!("webhook: {enqueued:?}");
///     }
///     Prepared::Skipped(reason) => println!("no webhook: {}", reason.describe()),
/// }
/// // Both or neither: the call record and the webhook commit together. On commit every
/// // process of the fleet is told, and one of them delivers it.
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn enqueue_in(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    delivery: &NewDelivery,
) -> Result<Enqueued> {
    let params = EnqueueParams::new(delivery)?;
    let failed = |e| Error::store("enqueueing a delivery", e);
    let row = client
        .query_one(&enqueue_statement(schema), &params.as_params())
        .await
        .map_err(failed)?;
    let outcome: &str = row.try_get(0).map_err(failed)?;
    let same = match outcome {
        "stored" => return Ok(Enqueued::Stored),
        "duplicate" => return Ok(Enqueued::AlreadyStored),
        "delivered" => return Ok(Enqueued::AlreadyDelivered),
        "conflict" => false,
        _ => {
            // Stored by another transaction meanwhile: compare with what it stored.
            let sql = with_schema(
                "SELECT account = $2::text AND campaign = $3::text AND body = $4::bytea \
                 AND encoding = $5::text FROM {s}.deliveries WHERE id = $1::text",
                schema,
            );
            let row = client
                .query_opt(&sql, &params.as_params()[..5])
                .await
                .map_err(failed)?;
            match row {
                Some(row) => row.try_get(0).map_err(failed)?,
                // Removed by an administrator since, or delivered at once: run the statement
                // again to tell.
                None => return Box::pin(enqueue_in(client, schema, delivery)).await,
            }
        }
    };
    if same {
        Ok(Enqueued::AlreadyStored)
    } else {
        Err(Error::IdConflict {
            id: params.id.to_owned(),
        })
    }
}
