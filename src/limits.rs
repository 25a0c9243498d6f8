//! Every bound and default the crate applies, in one place: sizes a call result may have,
//! concurrency, time limits, the retry schedule's bounds and the audit log's length.
//!
//! Each is the value used when nothing else is configured, or a hard cap that configuration
//! cannot raise; the item's own line says which.

use std::time::Duration;

/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The default whole-attempt time limit.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long an endpoint may fail every attempt before it is paused, by default: 5 days.
pub const DEFAULT_PAUSE_AFTER: Duration = Duration::from_secs(5 * 24 * 60 * 60);

/// How far each retry delay is spread, either way: ±20%.
///
/// Jitter keeps the retries of many deliveries that failed together (an endpoint that was down
/// for a minute) from arriving together again.
pub const RETRY_JITTER: f64 = 0.2;

/// The longest `Retry-After` honoured. A receiver asking for more gets its retry after this.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 60 * 60);

/// The most retries a schedule may hold.
pub const MAX_RETRIES: usize = 32;

/// The longest single delay a schedule may hold: 7 days.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The tolerance the Standard Webhooks reference libraries use: five minutes either way.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How many audit records an account keeps in memory (the oldest are dropped first).
pub const AUDIT_LOG_CAPACITY: usize = 256;

/// The default bound on attempts in flight at once, over all accounts.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// The default bound on attempts in flight at once to one account's endpoint.
pub const DEFAULT_PER_ENDPOINT_CONCURRENCY: usize = 4;

/// How many bytes of a response body a backend keeps, by default.
pub const DEFAULT_BODY_PREFIX_LIMIT: usize = 4 * 1024;

/// The cap on `ResultNotes`, in bytes of UTF-8.
pub const MAX_NOTES_BYTES: usize = 32 * 1024;

/// The cap on every other text field, in bytes of UTF-8.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The cap on the whole encoded body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long the id of a delivered call result is remembered, so that a resubmission with the
/// same id is not sent again: 7 days.
///
/// A store has no clock: it measures the retention on the times its writes carry (a submit's
/// `created_at`, an attempt's time, a replay's now). An id delivered at most this long before
/// the newest of them is remembered; an older one is forgotten, [`PRUNE_BATCH`] at a time,
/// and a submit under it is new again. See [`Outbox::insert`](crate::store::Outbox::insert).
pub const DELIVERED_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The most delivered ids a store forgets in one step once their [`DELIVERED_ID_RETENTION`]
/// is over, so that no write waits long behind the forgetting: 1000. A store may take fewer
/// (the PostgreSQL store takes 256, in the background) and steps again until none is left.
pub const PRUNE_BATCH: usize = 1_000;

/// How long the attempts log keeps an attempt, by default: 7 days. The dialer sets its own
/// with [`WebhooksBuilder::attempt_retention`](crate::WebhooksBuilder::attempt_retention).
pub const DEFAULT_ATTEMPT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How many bytes of a receiver's answer the attempts log keeps with an attempt: 512.
pub const ATTEMPT_ANSWER_BYTES: usize = 512;

/// How many attempts a page of the attempts log holds, by default: 50.
pub const ATTEMPT_PAGE: usize = 50;

/// The most attempts one page of the attempts log may hold: 500.
pub const MAX_ATTEMPT_PAGE: usize = 500;

/// The most custom headers an account may send.
pub const MAX_CUSTOM_HEADERS: usize = 16;

/// The longest custom header name (and API key header name), in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 64;

/// The longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// The longest bearer token or API key, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The longest name a payload key may be renamed to, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 64;

/// The longest URL a `GET` is sent to, the call result's query included, in bytes: under the
/// 8 KiB request line that Apache (`LimitRequestLine` 8190) and nginx
/// (`large_client_header_buffers` 8k) accept by default. A call result that would make it
/// longer is refused when it is submitted, never truncated.
pub const MAX_GET_URL_LEN: usize = 8000;

/// The longest account id or campaign id, in bytes of UTF-8. With the other rules (not empty,
/// no control character), it keeps every id storable by every store: PostgreSQL refuses a NUL
/// in text and an index entry over about 2.7 KB.
pub const MAX_ID_BYTES: usize = 255;
