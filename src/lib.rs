//! Sends the result of every call to the URL a customer account chooses.
//!
//! A cloud dialer links this crate in and hands it each finished call. The crate checks the two
//! switches (the account's "Enable Web Hook" and the campaign's "Enable WebHook"), encodes the
//! ten keys of the product page into the exact bytes to send, and POSTs them with the account's
//! user name and password in the `Authorization` header.
//!
//! The core knows nothing of HTTP clients: it builds an [`http::Request`] and hands it to a
//! [`Dispatcher`]. Backends plug in behind features.
//!
//! # Delivery
//!
//! [`Webhooks`] is the facade the dialer holds. [`Webhooks::submit`] checks both switches,
//! fixes the body bytes, stores the delivery durably in the outbox ([`Store`](store::Store)) and
//! returns without waiting for any receiver. A [`Worker`] delivers in the background, on the
//! dialer's tokio runtime (`Webhooks::start_tokio`, feature `tokio`) or on plain threads
//! ([`Webhooks::start_threads`]).
//!
//! The API is async first: every operation that touches the store is an `async fn` that runs the
//! store's work off the caller's runtime, with a `_blocking` twin for dialers without one (see
//! [`Webhooks`] for what dropping one of these futures means). The guarantees:
//!
//! - **At least once**, with the same `webhook-id` and the same bytes on every attempt, so a
//!   receiver drops duplicates by `webhook-id`. The URL, credentials and timeout are the
//!   account's current ones at each attempt.
//! - **Classification**: 2xx is delivered. Network errors, timeouts, 408, 425, 429 and 5xx are
//!   retried on the account's [`RetrySchedule`](delivery::RetrySchedule) (at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
//!   10 h, 14 h, 20 h, 24 h, each ±20%), honouring `Retry-After` up to 24 h. A 3xx (never
//!   followed) and other 4xx fail the delivery for good; it is kept as a dead letter for
//!   replay. A 410 pauses the endpoint. A destination refused by the [`UrlPolicy`] fails for
//!   good.
//! - **Isolation**: a bound on attempts in flight overall and per account endpoint, so one
//!   customer's slow or dead endpoint ties up only its own share.
//! - **Held, never dropped**: deliveries of an account switched off, or of a paused endpoint,
//!   wait; only an administrator's [`Webhooks::remove`] drops them.
//! - **Health and status**: an endpoint failing every attempt for 5 days (configurable) is
//!   paused until an administrator resumes it; [`Webhooks::indicator`] gives the UI its
//!   icon and [`Webhooks::status`] its counts and last outcomes; [`Event`]s tell the dialer
//!   what happened.
//!
//! # Features
//!
//! - `hyper` (default): async backend on hyper 1 + hyper-util, tokio, rustls with webpki roots.
//! - `ureq` (default): blocking backend on ureq 3, for dialers with no async runtime.
//! - `sqlite` (default): the durable outbox in one SQLite file (SQLite bundled).
//! - `signing` (off by default): the receiver-side helpers `signing::verify` and
//!   `signing::verify_now`.
//!   Outgoing Standard Webhooks signatures, with per-account secrets and rotation
//!   (`PreferencesUpdate::signing_secret`), are in every build, so a stored signing secret is
//!   never silently ignored.
//! - `tokio` (enabled by `hyper` and `postgres`): the delivery worker on tokio,
//!   `Webhooks::start_tokio`, and the async facade on tokio's blocking pool (without it, async
//!   calls run on a thread each).
//! - `postgres` (off by default): `store::PostgresStore`, the outbox a fleet of processes
//!   shares on one PostgreSQL database (tokio-postgres, deadpool-postgres), over TLS through
//!   rustls as the URL's `sslmode` says; opened with `PostgresStoreBuilder::open().await` (or
//!   `open_blocking()`).
//! - `metrics` (off by default): counters, gauges and a histogram of delivery through the
//!   `metrics` facade (`delivery::metrics` names them, and says which are each process's and
//!   which the fleet's); the dialer installs whatever exporter it wants, none is brought in.
//!   Labelled by account only with `WebhooksBuilder::metrics_by_account(true)`.
//! - `portal` (off by default): `portal::router`, the administrator's screens (Settings >
//!   Preferences > WebHook, Campaign Management, Deliveries, Dead letters with replay, resume
//!   and "Send test") as server-rendered HTML with a JSON API beside them: an axum 0.8
//!   `Router` the dialer mounts under its own path and behind its own login.
//! - `test-util` (off by default): `store::conformance`, the suite every store passes, for a
//!   dialer that writes a store of its own, and `delivery::ManualClock`, a clock that moves
//!   only when told to, for tests that play days of retries in milliseconds.
//!
//! TLS (`hyper`, `ureq`, `postgres`) goes through rustls with the process's default crypto
//! provider when the dialer installed one (`rustls::crypto::CryptoProvider::install_default`,
//! for example aws-lc-rs with post-quantum key exchange), and *ring* otherwise. A build that
//! enables both *ring* and aws-lc-rs must install one at start-up, as rustls requires.
//!
//! # Where things are
//!
//! The root holds the common path. Everything else is in the module named for its concept:
//! [`payload`], [`encoding`], [`auth`], [`preferences`], [`account`], [`campaign`],
//! [`request`], [`signing`], [`policy`], [`dispatch`], [`delivery`], [`store`], [`receiver`],
//! [`ids`], [`error`], [`owned_settings`] for a dialer that keeps its accounts itself, and
//! [`limits`] for every bound and default.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89, as written in `Cargo.toml`. Raising it is a minor-version change, never a patch.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod account;
pub mod auth;
mod blocking;
pub mod campaign;
pub mod delivery;
pub mod dispatch;
pub mod encoding;
mod engine;
pub mod error;
pub mod ids;
pub mod limits;
pub mod owned_settings;
pub mod payload;
mod permissions;
pub mod policy;
#[cfg(feature = "portal")]
#[cfg_attr(docsrs, doc(cfg(feature = "portal")))]
pub mod portal;
pub mod preferences;
pub mod receiver;
pub mod request;
pub mod signing;
pub mod store;
mod sync;
mod webhooks;

// The common path, at the root. Everything else lives in the module named for its concept.
pub use delivery::{Event, Status, Worker};
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use dispatch::hyper::HyperDispatcher;
#[cfg(feature = "ureq")]
#[cfg_attr(docsrs, doc(cfg(feature = "ureq")))]
pub use dispatch::ureq::UreqDispatcher;
pub use dispatch::{BlockingDispatcher, Dispatcher};
pub use error::{Error, Result};
pub use ids::{AccountId, CampaignId, DeliveryId};
pub use payload::CallResult;
pub use permissions::Principal;
pub use policy::UrlPolicy;
pub use preferences::PreferencesUpdate;
pub use store::MemoryStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;
pub use webhooks::{Prepared, Submitted, Webhooks, WebhooksBuilder};

/// The time types the crate's API takes: re-exported so the dialer uses the same version.
pub use jiff;

/// The README's code, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
