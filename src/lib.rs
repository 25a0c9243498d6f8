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
//! # Features
//!
//! - `hyper` (default): async backend on hyper 1 + hyper-util, tokio, rustls with webpki roots.
//! - `ureq`: blocking backend on ureq 3, for dialers with no async runtime.
//! - `sqlite` (default): the durable outbox in one SQLite file (SQLite bundled).
//! - `signing`: Standard Webhooks signatures and the receiver-side `verify`.
//! - `tokio`: the delivery worker on tokio (enabled by `hyper`).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89, as written in `Cargo.toml`. Raising it is a minor-version change, never a patch.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod account;
mod auth;
mod campaign;
mod dispatch;
mod encoding;
mod error;
mod ids;
mod payload;
mod policy;
mod preferences;
mod request;
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
mod signing;
mod store;

pub use account::{AUDIT_LOG_CAPACITY, Account};
pub use auth::{AuthScheme, Credentials, Secret};
pub use campaign::{OffReason, SendDecision, WebhookIndicator};
pub use dispatch::{
    AttemptTimeout, BlockingDispatcher, DEFAULT_BODY_PREFIX_LIMIT, Dispatcher, Response,
    TransportError, TransportErrorKind,
};
pub use encoding::Encoding;
pub use error::{BoxError, Error, Result};
pub use ids::{AccountId, CampaignId, DeliveryId};
pub use payload::{
    CallResult, CallResultBuilder, Fields, PAYLOAD_KEYS, format_log_time, mask_phone,
};
pub use policy::UrlPolicy;
pub use preferences::{
    AuditRecord, DEFAULT_ATTEMPT_TIMEOUT, MAX_URL_LEN, Preferences, PreferencesUpdate, Principal,
    WebhookUrl,
};
pub use request::{
    EncodedBody, MAX_BODY_BYTES, MAX_FIELD_BYTES, MAX_NOTES_BYTES, USER_AGENT, build_request,
};
pub use store::{
    AttemptRecord, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, MemoryStore,
    NewDelivery, NextStep, Store,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::{CommitMode, SqliteStore, SqliteStoreBuilder};

/// The time types the crate's API takes: re-exported so the dialer uses the same version.
pub use jiff;
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
pub use signing::{
    DEFAULT_SIGNATURE_TOLERANCE, SigningSecret, sign, sign_headers, verify, verify_now,
};
