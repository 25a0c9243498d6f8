#![doc = include_str!("README.md")]

mod clock;
mod driver;
mod enqueue;
mod failure;
mod group;
mod insert;
mod listen;
mod log;
mod ops;
mod password;
mod record;
mod schema;
mod settings;
mod skew;
mod sql;
#[cfg(test)]
mod tests;
mod tls;
mod upkeep;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jiff::Timestamp;
use tokio_postgres::config::Host;

use crate::dispatch::Certificate;
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AccountRecords, AccountSave, AttemptQuery, AttemptRecord, Claim, ClaimRequest, ClaimToken,
    Delivery, DeliveryFilter, DeliveryStats, LoggedAttempt, NewDelivery, NoticeSink, Notices,
    Outbox, SaveOutcome, Settings, SettingsSnapshot, Versioned,
};

use driver::Driver;
pub use enqueue::{EnqueueParams, Enqueued, enqueue_in, enqueue_statement};
use ops::Ctx;

/// How long `subscribe` waits for its LISTEN to be in place.
const LISTEN_READY_WITHIN: Duration = Duration::from_secs(5);
/// How long a new connection may take to open, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a method waits for a free pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Options for opening a [`PostgresStore`]; made by [`PostgresStore::builder`].
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    max_pending: usize,
    schema: String,
    bounds: ops::Bounds,
    roots: Vec<Certificate>,
    synchronous_progress: bool,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("url", &redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("max_pending", &self.max_pending)
            .field("schema", &self.schema)
            .field("bounds", &self.bounds)
            .field("roots", &self.roots.len())
            .field("synchronous_progress", &self.synchronous_progress)
            .finish()
    }
}

impl PostgresStoreBuilder {
    /// The most connections the store keeps open for its statements (one more is opened per
    /// [`Notices::subscribe`]); [`PostgresStore::DEFAULT_POOL_SIZE`] unless set.
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// The most deliveries that may be pending at once in the schema, over the fleet;
    /// [`PostgresStore::DEFAULT_MAX_PENDING`] unless set. A submit beyond it is refused with
    /// [`Error::StoreFull`] and nothing is stored. Counted exactly at each insert that comes
    /// within a quarter of it by the process's estimate (the fleet's count as of the last
    /// fold, every 250 ms, plus what this process stored since); processes inserting at the
    /// same moment may together pass it by a batch each.
    pub fn max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// The schema every table lives in; [`PostgresStore::DEFAULT_SCHEMA`] unless set. Lower
    /// case ASCII letters, digits and `_`, starting with a letter or `_`, at most 63 bytes.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How long a store call that failed on a connection that broke or could not be made (a
    /// restart, a failover, `pg_terminate_backend`, the server starting up or shutting down)
    /// is tried again on a fresh connection, with a growing pause between tries, before its
    /// failure is answered; 30 s unless set, `Duration::ZERO` for no retry. Every call may be
    /// run again: submits are idempotent by id, outcomes fenced by claim tokens, settings
    /// saves compare-and-set. The call's [`call_timeout`](Self::call_timeout) still bounds it.
    pub fn retry_for(mut self, retry_for: Duration) -> Self {
        self.bounds.retry_for = retry_for;
        self
    }

    /// The server's limit on each statement (`SET statement_timeout` on every connection
    /// the store opens): a statement that runs longer is cancelled and the call answers
    /// [`Error::StoreTimeout`] naming `statement_timeout`. 15 s unless set; `Duration::ZERO`
    /// for none (PostgreSQL's meaning); whole milliseconds.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.bounds.statement_timeout = limit;
        self
    }

    /// The client's deadline on each store call, its tries on fresh connections included:
    /// past it the call answers [`Error::StoreTimeout`] naming `call_timeout`, whatever the
    /// server does (a server that stopped answering, frozen or cut off without a reset,
    /// never cancels anything). 45 s unless set: room for [`retry_for`](Self::retry_for)'s
    /// 30 s and a last statement. Must be more than zero.
    pub fn call_timeout(mut self, limit: Duration) -> Self {
        self.bounds.call_timeout = limit;
        self
    }

    /// Whether a claim's and a batch of outcomes' commit waits for the server to flush it to
    /// disk; `false` unless set. Submits and settings always wait: an acknowledged result is
    /// on disk. Claims and outcomes do not need to: every process sees them at once all the
    /// same, and a crash of the server itself (a restart or a switchover flushes first) can
    /// only forget the last fraction of a second of them (`wal_writer_delay`, three times
    /// over at most). A forgotten claim or outcome means the result is sent again, never that
    /// it is lost: at least once, as after any crash. `true` waits for every flush, for a
    /// fleet that would rather deliver more slowly than send a result twice after a crash of
    /// its database.
    pub fn synchronous_progress(mut self, wait: bool) -> Self {
        self.synchronous_progress = wait;
        self
    }

    /// Trusts `root` to sign the database server's certificate, besides the URL's
    /// `sslrootcert` file: the authority of a database whose certificate no public
    /// authority signed. As with `sslrootcert`, a root given here makes `sslmode` `prefer`
    /// and `require` check the certificate's chain (not its host name; `verify-full` checks
    /// both, and is the setting for production), and `verify-ca` and `verify-full` trust
    /// the given roots instead of the Mozilla roots. Call once per root. See
    /// [`PostgresStore::connect`] for `sslmode`.
    pub fn add_root_certificate(mut self, root: Certificate) -> Self {
        self.roots.push(root);
        self
    }

    /// Connects, creates the schema or migrates it to this release's version (once, however
    /// many processes open it at once), and starts the store's runtime; for async callers:
    /// the connecting and migrating run off the caller's runtime (on tokio's blocking pool,
    /// as every async method of the crate), so a tokio dialer awaits it in its `main`.
    ///
    /// **Dropped before it completes**, the opening still runs to its end, and the store it
    /// opened is closed at once; the schema may have been migrated meanwhile (harmlessly: the
    /// next open finds it done).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use call_result_webhook::Webhooks;
    /// use call_result_webhook::store::PostgresStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> call_result_webhook::Result<()> {
    /// let store = PostgresStore::builder("postgres://dialer@db.internal/dialer?sslmode=verify-full")
    ///     .open()
    ///     .await?;
    /// let webhooks = Webhooks::builder().store(store).build()?;
    /// # drop(webhooks);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL that does not parse or has an unknown `sslmode`,
    /// an `sslrootcert` file that cannot be read or holds no CA certificate, a schema name,
    /// a pool size or a `call_timeout` that is not acceptable; [`Error::Store`] when the
    /// database cannot be reached (its certificate refused included: the cause says why) or
    /// migrated, or when its schema is newer than this release knows (it is left untouched);
    /// [`Error::RuntimeShuttingDown`] when the caller's runtime is shutting down.
    pub async fn open(self) -> Result<PostgresStore> {
        crate::blocking::unblock(move || PostgresStore::open_with(self)).await?
    }

    /// [`open`](Self::open) for callers without an async runtime: blocks the calling thread
    /// until the store is open.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), but for [`Error::RuntimeShuttingDown`].
    pub fn open_blocking(self) -> Result<PostgresStore> {
        PostgresStore::open_with(self)
    }
}

/// A durable outbox on PostgreSQL, shared by any number of processes.
///
/// - Durable: [`insert`](Outbox::insert) returns once its transaction committed.
/// - Shared: deliveries are claimed with leases and fencing tokens ([`Outbox::claim`]),
///   settings and counts are the fleet's, and `LISTEN`/`NOTIFY` tells every subscribed
///   process about new due work and changed settings ([`Notices::subscribe`]).
/// - Transactional enqueue: a dialer can store a delivery inside its own transaction with
///   [`enqueue_statement`] or [`enqueue_in`].
/// - One clock, the database's: every time is stored and compared on the server's clock; the
///   store measures this process's offset from it (at open, then every 10 s) and translates
///   the times it takes and answers, so hosts whose clocks differ share leases and due times.
///
/// Dropping the store stops its runtime and closes its connections.
pub struct PostgresStore {
    ctx: Arc<Ctx>,
    /// Concurrent submits, committed together.
    groups: Arc<group::Groups>,
    config: tokio_postgres::Config,
    /// The TLS of every connection, the `LISTEN` connections' included.
    tls: tls::MakeRustls,
    target: String,
    // Dropped last: the tasks above run on it.
    driver: Driver,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password, never the accounts' settings.
        f.debug_struct("PostgresStore")
            .field("database", &self.target)
            .field("schema", &self.ctx.sql.schema)
            .field("max_pending", &self.ctx.max_pending)
            .finish_non_exhaustive()
    }
}

/// `url` without its password: user, hosts, ports and database name only.
fn redacted(url: &str) -> String {
    let parsed = password::take_params(url, &password::OWN_PARAMS)
        .ok()
        .and_then(|(url, _)| url.parse::<tokio_postgres::Config>().ok());
    match parsed {
        Some(config) => describe(&config),
        None => "<a database URL that does not parse>".into(),
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Whether `schema` is a plain identifier: nothing to quote, nothing to fold.
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_plain = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !starts_well || !rest_plain || schema.len() > 63 || schema.starts_with("pg_") {
        return Err(Error::config(
            "schema",
            "use lower case ASCII letters, digits and `_`, starting with a letter or `_` \
             (not `pg_`), at most 63 bytes",
        ));
    }
    Ok(())
}

impl PostgresStore {
    /// The default [`max_pending`](PostgresStoreBuilder::max_pending).
    pub const DEFAULT_MAX_PENDING: usize = 1_000_000;
    /// The default [`pool_size`](PostgresStoreBuilder::pool_size).
    pub const DEFAULT_POOL_SIZE: usize = 8;
    /// The default [`schema`](PostgresStoreBuilder::schema).
    pub const DEFAULT_SCHEMA: &'static str = "call_result_webhook";

    /// Opens the outbox at `url` (`postgres://user:password@host:port/database`, or the
    /// `key=value` form) with the default options, blocking the calling thread as
    /// [`PostgresStoreBuilder::open_blocking`] does; async code awaits
    /// `PostgresStore::builder(url).open()` instead.
    ///
    /// # The password
    ///
    /// A password in the URL is visible wherever the URL is (a command line shows it in `ps`
    /// for the process's whole life). Leave it out: as libpq does, a URL without one takes it
    /// from `PGPASSWORD`, or else from the first matching line of a password file, the one the
    /// `passfile` parameter names (`postgres://dialer@db/calls?passfile=/run/secrets/pgpass`),
    /// else `PGPASSFILE`, else `~/.pgpass`. A line is
    /// `hostname:port:database:username:password`, where `*` matches anything and `\` escapes
    /// a `:` or a `\`; a Unix socket is `localhost`, the port `5432` unless set, the database
    /// the user's name unless set. A file that is not a plain file, or that its group or others
    /// may read (not mode `0600` or stricter), is ignored, as libpq ignores it. The password
    /// never appears in `Debug` output or in an error.
    ///
    /// # TLS
    ///
    /// Every connection (the pool's, the `LISTEN` connection's, the migration's) follows the
    /// URL's `sslmode`, with libpq's meanings: `disable` (never TLS), `prefer` (TLS when the
    /// server offers it; the default), `require` (TLS or no connection), `verify-ca` (TLS, and
    /// the certificate must chain to a trusted root) and `verify-full` (that, and the
    /// certificate must name the host connected to). `verify-full` is the setting for
    /// production: the others do not stop a machine in the middle that holds any certificate a
    /// trusted authority signed (`verify-ca`), or any certificate at all (`prefer`,
    /// `require`). The trusted roots are those of the `sslrootcert` file (PEM) and
    /// [`PostgresStoreBuilder::add_root_certificate`]; without either, the Mozilla (webpki)
    /// roots. As libpq does, `prefer` and `require` check the chain when a root is given,
    /// and `sslrootcert=system` (the Mozilla roots, named) makes `verify-full` the default and
    /// refuses a weaker mode. `allow` is not supported. For example:
    /// `postgres://dialer@db.internal/calls?sslmode=verify-full&sslrootcert=/etc/dialer/db-ca.pem`.
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::open_blocking`].
    pub fn connect(url: &str) -> Result<PostgresStore> {
        Self::builder(url).open_blocking()
    }

    /// Options for opening the outbox at `url`; where its password comes from is said at
    /// [`connect`](Self::connect).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            max_pending: Self::DEFAULT_MAX_PENDING,
            schema: Self::DEFAULT_SCHEMA.into(),
            bounds: ops::Bounds::default(),
            roots: Vec::new(),
            synchronous_progress: false,
        }
    }

    /// The schema the outbox lives in.
    pub fn schema(&self) -> &str {
        &self.ctx.sql.schema
    }

    /// The most deliveries that may be pending at once.
    pub fn max_pending(&self) -> usize {
        self.ctx.max_pending
    }

    fn open_with(options: PostgresStoreBuilder) -> Result<PostgresStore> {
        let PostgresStoreBuilder {
            url,
            pool_size,
            max_pending,
            schema,
            bounds,
            roots,
            synchronous_progress,
        } = options;
        bounds.check()?;
        let (mut config, url_tls) = password::connection_config(&url, &password::process_env)?;
        let tls = url_tls.connector(&roots)?;
        check_schema_name(&schema)?;
        if pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("call-result-webhook");
        }
        let target = describe(&config);

        let driver = Driver::start()?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .post_create(ops::session_hook(bounds))
            .build()
            .map_err(|e| Error::store("building the connection pool", e))?;
        let ctx = Arc::new(Ctx {
            pool,
            sql: sql::Statements::new(&schema, synchronous_progress),
            max_pending,
            bounds,
            clock: clock::ServerClock::default(),
            pruning: std::sync::atomic::AtomicBool::new(false),
            pending_counted: std::sync::atomic::AtomicI64::new(0),
            stored_since: std::sync::atomic::AtomicI64::new(0),
        });
        let migrating = Arc::clone(&ctx);
        let connecting = format!("connecting to {target}");
        let own_config = config.clone();
        let own_tls = tls.clone();
        driver.run(async move {
            let client = migrating.client().await.map_err(|e| Error::Store {
                message: connecting,
                source: Some(e.into()),
            })?;
            schema::migrate(&client, &own_config, own_tls, &migrating.sql.schema).await?;
            drop(client);
            skew::measure(&migrating).await
        })?;
        // The counts' deltas are folded in the background for as long as the store is open;
        // the first fold also counts the pending deliveries for the group commit's estimate.
        driver.spawn(ops::fold_forever(Arc::clone(&ctx)));
        // Statistics and vacuums where the server's autovacuum has not (see `upkeep`).
        driver.spawn(upkeep::forever(Arc::clone(&ctx)));
        // This process's offset from the database's clock, measured again every 10 s.
        driver.spawn(skew::follow(Arc::clone(&ctx)));
        Ok(PostgresStore {
            ctx,
            groups: Arc::default(),
            config,
            tls,
            target,
            driver,
        })
    }

    fn run<T, F>(&self, work: impl FnOnce(Arc<Ctx>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let limit = self.ctx.bounds.call_timeout;
        self.driver.run_within(limit, work(Arc::clone(&self.ctx)))
    }
}

fn skip_names(skip: &[AccountId]) -> Vec<String> {
    skip.iter().map(|a| a.as_str().to_owned()).collect()
}

impl Outbox for PostgresStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        if let [delivery] = deliveries
            && !self.driver.on_own_thread()
        {
            // A submit: committed together with whatever other submits come at the moment.
            let answered = self.groups.submit(&self.ctx, delivery.clone(), |group| {
                self.driver.spawn(group)
            });
            return driver::answer_within(answered, self.ctx.bounds.call_timeout);
        }
        let deliveries = deliveries.to_vec();
        self.run(|ctx| insert::insert(ctx, deliveries))
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        let ask = ops::ClaimAsk {
            now: request.now,
            limit: request.limit,
            lease: request.lease,
            skip: skip_names(request.skip),
            per_account: request.per_account,
            in_flight: request
                .in_flight
                .iter()
                .map(|(a, n)| (a.as_str().to_owned(), *n))
                .collect(),
            finished: request.finished.to_vec(),
        };
        self.run(|ctx| ops::claim(ctx, ask))
    }

    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        let skip = skip_names(skip);
        self.run(|ctx| ops::next_due(ctx, now, skip))
    }

    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        if outcomes.is_empty() {
            return Vec::new();
        }
        let owned = outcomes.to_vec();
        let answers = self.run(|ctx| async move { Ok(record::record_attempts(ctx, owned).await) });
        answers.unwrap_or_else(|e| ops::each_failed(e, outcomes.len(), "recording attempts"))
    }

    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        let claims = claims.to_vec();
        self.run(|ctx| ops::release(ctx, claims))
    }

    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        let claims = claims.to_vec();
        self.run(move |ctx| ops::extend(ctx, claims, until))
    }

    fn has_pending(&self) -> Result<bool> {
        self.run(ops::has_pending)
    }

    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        let filter = filter.clone();
        self.run(|ctx| ops::list(ctx, filter, limit))
    }

    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        let query = query.clone();
        self.run(|ctx| log::read(ctx, query))
    }

    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.run(move |ctx| log::prune(ctx, before, limit))
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        let filter = filter.clone();
        self.run(|ctx| ops::requeue_failed(ctx, filter, now))
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        let filter = filter.clone();
        self.run(|ctx| ops::remove(ctx, filter))
    }

    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        let (account, campaign) = (account.clone(), campaign.cloned());
        self.run(|ctx| ops::stats(ctx, account, campaign))
    }
}

impl Settings for PostgresStore {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        let account = account.clone();
        self.run(|ctx| settings::load(ctx, settings::Kind::Account, account))
    }

    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        let account = account.clone();
        let kind = settings::Kind::Health { paused: false };
        self.run(move |ctx| settings::load(ctx, kind, account))
    }

    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let (account, json) = (account.clone(), settings_json.to_owned());
        self.run(move |ctx| settings::save(ctx, settings::Kind::Account, account, json, expected))
    }

    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let (account, json) = (account.clone(), health_json.to_owned());
        let kind = settings::Kind::Health { paused };
        self.run(move |ctx| settings::save(ctx, kind, account, json, expected))
    }

    /// One transaction under the settings lock: the saves commit together, or none does.
    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        if saves.is_empty() {
            return Ok(Vec::new());
        }
        let saves = saves
            .iter()
            .map(|s| (s.account.clone(), s.settings_json.to_owned(), s.expected))
            .collect();
        self.run(move |ctx| settings::save_accounts(ctx, saves))
    }

    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        let after = after.cloned();
        self.run(move |ctx| settings::accounts_after(ctx, after, limit))
    }

    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.run(|ctx| settings::since(ctx, 0))
    }

    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        self.run(move |ctx| settings::since(ctx, cursor))
    }
}

/// `LISTEN`/`NOTIFY` on the schema's channel, and polling every second in case a notice is
/// lost.
impl Notices for PostgresStore {
    /// Opens a dedicated connection that `LISTEN`s on the schema's channel and calls `sink`
    /// with each notice, from the store's runtime thread; reconnects with backoff if it
    /// breaks, and then announces both notices, since some may have been missed.
    /// Returns `true` once listening (or after 5 s, if the server does not answer: the
    /// listener keeps trying, and polling covers the gap).
    fn subscribe(&self, sink: NoticeSink) -> bool {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let schema = self.ctx.sql.schema.clone();
        let (ready, listening) = oneshot::channel();
        self.driver
            .spawn(listen::listen(config, tls, schema, sink, ready));
        if listening.recv_timeout(LISTEN_READY_WITHIN).is_err() {
            tracing::warn!("outbox: not listening for notices yet; polling until then");
        }
        true
    }

    /// Other processes write to the same tables: one second.
    fn poll_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}
