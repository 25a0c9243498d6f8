//! The crate's one error type.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A boxed error from a backend, a store or a parser, kept out of our semver surface.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, call_result_webhook::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// No variant ever carries a password, a signing secret or an Authorization value: fields are
/// named, their values are not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `field` names it, its value is never repeated.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field that was rejected, for example `username` or `time_zone`.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// An account or campaign id is not acceptable (empty, over
    /// [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES), or with a control character); nothing was
    /// read or stored. `field` names it (`account_id` or `campaign_id`), its value is never
    /// repeated.
    #[error("invalid {field}: {reason}")]
    InvalidId {
        /// `account_id` or `campaign_id`.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The webhook URL is not acceptable (syntax, scheme, userinfo, length).
    #[error("invalid webhook URL: {reason}")]
    InvalidUrl {
        /// Why the URL was rejected. Never includes query or userinfo.
        reason: String,
    },

    /// A call result field is invalid or over its size cap.
    #[error("invalid call result field {field}: {reason}")]
    InvalidCallResult {
        /// The payload key, for example `ResultNotes`.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The encoded body is larger than the configured cap; nothing was stored or sent.
    #[error("call result body is {size} bytes, over the cap of {limit} bytes")]
    BodyTooLarge {
        /// The encoded size in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },

    /// A custom header (or the API key's header) is refused; `name` names it, its value is
    /// never repeated.
    #[error("header {name} refused: {reason}")]
    InvalidHeader {
        /// The header's name as given (for a name that is not an HTTP token, the part before
        /// the first character that is not allowed, then `…`).
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// A `GET` would go to a URL longer than
    /// [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN) once the call result's query is
    /// appended; nothing was stored or sent (the query is never truncated).
    #[error(
        "the GET URL with the call result's query is {size} bytes, over the cap of {limit} bytes"
    )]
    UrlTooLong {
        /// The URL's length with the query, in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },

    /// The principal lacks full administrative permission for this change; nothing changed.
    #[error("permission denied: {principal} may not {action}")]
    PermissionDenied {
        /// Who asked.
        principal: String,
        /// What they tried to do.
        action: &'static str,
    },

    /// The account has no webhook URL configured.
    #[error("account {account} has no webhook URL configured")]
    NotConfigured {
        /// The account in question.
        account: String,
    },

    /// No delivery with this id is known.
    #[error("unknown delivery {0}")]
    UnknownDelivery(String),

    /// A `webhook-id` given to [`Webhooks::submit_with_id`](crate::Webhooks::submit_with_id) is
    /// already stored for a different call result (another account, campaign or body). A
    /// resubmission of the *same* call result is not an error: it is stored once.
    #[error("webhook-id {id} is already stored for a different call result")]
    IdConflict {
        /// The id.
        id: String,
    },

    /// An attempt's outcome came under a claim that is no longer the delivery's current one
    /// (its lease ran out and another process claimed it): nothing was recorded, the newer
    /// claim's outcome stands.
    #[error("the claim on delivery {id} is no longer current; its outcome was not recorded")]
    LeaseLost {
        /// The delivery.
        id: String,
    },

    /// A change to an account's settings or its endpoint's health was applied `attempts` times
    /// to the stored record, and each time another process had saved the record first (see
    /// [`Settings`](crate::store::Settings)): nothing was saved. Only a record changed without
    /// pause by other processes gets here; the change may be made again.
    #[error(
        "the {record} of account {account} kept being saved by other processes; the change was applied {attempts} times and not saved"
    )]
    SettingsConflict {
        /// The account.
        account: String,
        /// Which record: `settings` or `endpoint health`.
        record: &'static str,
        /// How many times the change was applied to a newer stored record.
        attempts: u32,
    },

    /// A put of an account's whole settings stated the version it read them at, and they
    /// were saved since (or, for a put that expected none, they exist): nothing was written.
    /// Read them again ([`Webhooks::list_accounts`](crate::Webhooks::list_accounts)) and
    /// decide again.
    #[error(
        "the settings of account {account} are at version {stored:?}, not {expected:?} as read; nothing was written"
    )]
    SettingsStale {
        /// The account.
        account: String,
        /// The version the put expected (`None`: none stored).
        expected: Option<u64>,
        /// The version stored (`None`: none).
        stored: Option<u64>,
    },

    /// The store is already in use by another process and cannot be shared (an embedded
    /// store, such as one SQLite file): run one process per file, or a fleet on PostgreSQL.
    #[error("the store {what} is already in use by another process")]
    StoreInUse {
        /// Which store (a file path).
        what: String,
    },

    /// The destination address is refused by the address policy; no connection was attempted.
    #[error("address {addr} of host {host} refused: {rule}")]
    AddressRefused {
        /// The host name (or literal) from the URL.
        host: String,
        /// The address that was refused.
        addr: IpAddr,
        /// The rule that refused it, for example `loopback` or `private (RFC 1918)`.
        rule: &'static str,
    },

    /// The outbox could not take or return data.
    #[error("store: {message}")]
    Store {
        /// What the store was doing.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<BoxError>,
    },

    /// A store call ran past one of the store's time bounds, named by `bound` (for
    /// `PostgresStore`: `call_timeout`, the client's deadline on
    /// the whole call, or `statement_timeout`, the server's on one statement). What the call
    /// was doing may or may not have taken effect: a submit may be stored (submitting the same
    /// id again stores it once), an outcome may be recorded (recording it again is refused as
    /// [`Error::LeaseLost`] or taken once).
    #[error("store: no answer within its {bound} of {limit:?}")]
    StoreTimeout {
        /// The bound that ran out, as the builder method that sets it names it.
        bound: &'static str,
        /// Its value.
        limit: Duration,
    },

    /// The outbox is full; the call result was not accepted.
    #[error("outbox is full ({max_pending} pending deliveries)")]
    StoreFull {
        /// The store's `max_pending`: the most deliveries that may be pending at once.
        max_pending: usize,
    },

    /// A signature, secret or verification problem.
    #[error("signature: {0}")]
    Signature(String),

    /// The delivery worker is not running: it stopped on its own, and `reason` says why (for
    /// example, the tokio runtime its attempts ran on shut down). Submits are still accepted
    /// and stored; start a worker again to deliver them.
    #[error("the webhook worker is not running: {reason}")]
    WorkerStopped {
        /// Why it stopped.
        reason: String,
    },

    /// A `_blocking` method was called on a thread of the tokio runtime the worker's attempts
    /// run on, where blocking would stall those attempts (and a wait for them might never
    /// end). Nothing was done; call the async method named in `instead`.
    #[error(
        "{method} was called on a thread of the runtime the webhook worker runs on, where it would stall deliveries; call {instead} instead"
    )]
    BlockingInRuntime {
        /// The blocking method that was called.
        method: &'static str,
        /// The async method to call instead.
        instead: &'static str,
    },

    /// The tokio runtime is shutting down, so the operation was not run.
    #[error("the async runtime is shutting down; the operation was not run")]
    RuntimeShuttingDown,
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl fmt::Display) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn url(reason: impl fmt::Display) -> Self {
        Error::InvalidUrl {
            reason: reason.to_string(),
        }
    }

    /// A store error with a message and a cause.
    pub fn store(message: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Store {
            message: message.to_string(),
            source: Some(source.into()),
        }
    }
}

/// An error and its causes, on one line: what a store failure is reported with.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
