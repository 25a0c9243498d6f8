//! The behaviour every store must show, as checks a store's own tests run (feature
//! `test-util`): the specification of [`Outbox`], [`Settings`] and
//! [`Notices`](crate::store::Notices), checked.
//!
//! A dialer that writes its own store runs [`run_all`] from a test, with a function that makes
//! a fresh, empty store holding at most the pending deliveries it is asked for; or runs one
//! concern ([`run_insert`], [`run_claims`], [`run_outcomes`], [`run_log`], [`run_admin`],
//! [`run_settings`], [`run_fleet`]), or names single checks. A store that several processes share also runs
//! [`run_fleet`] with several stores on the same, empty, backing data. Nothing here needs
//! more than the crate's public API: `tests/outside_store.rs` runs the whole suite on a store
//! written outside the crate.
//!
//! | Concern | What it checks |
//! |---|---|
//! | [`insert`](run_insert) | all or nothing, idempotent on the id, [`Error::IdConflict`](crate::Error::IdConflict), [`Error::StoreFull`](crate::Error::StoreFull), the retention of delivered ids |
//! | [`claims`](run_claims) | due order, limits, skips, leases, release, per-account room, paused accounts |
//! | [`outcomes`](run_outcomes) | fencing tokens, delivered / retried / failed, unknown deliveries, batches |
//! | [`log`](run_log) | every recorded attempt logged, newest first, paged, filtered, pruned oldest first |
//! | [`admin`](run_admin) | pending, replay, removal, filters |
//! | [`settings`](run_settings) | one version counter, compare-and-set saves, the cursor, pages |
//! | [`fleet`](run_fleet) | concurrent claims, saves and prunes of the attempts log, a save seen by every process, notices |
//!
//! Stores have no clock: every check passes its times explicitly, fixed ones from [`t`]. Each
//! panics, with the failed assertion, when the store does not behave.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")] {
//! use std::cell::Cell;
//!
//! use call_result_webhook::SqliteStore;
//! use call_result_webhook::store::conformance;
//!
//! // In a store's test: a fresh, empty store for each check, bounded as the check asks.
//! let dir = std::env::temp_dir().join("outbox-conformance");
//! std::fs::create_dir_all(&dir).unwrap();
//! let made = Cell::new(0);
//! conformance::run_all(&|max_pending| {
//!     made.set(made.get() + 1);
//!     SqliteStore::builder(dir.join(format!("{}.db", made.get())))
//!         .max_pending(max_pending)
//!         .open()
//!         .unwrap()
//! });
//! # }
//! ```

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;

use crate::encoding::{EncodedBody, Encoding};
use crate::ids::{AccountId, DeliveryId};
use crate::store::{
    AttemptRecord, Claim, ClaimRequest, NewDelivery, NextStep, Outbox, Settings, Store,
};

mod admin;
mod claims;
mod fleet;
mod insert;
mod log;
mod outcomes;
mod settings;

pub use admin::{has_pending_follows_deliveries, remove_and_filters, replay_keeps_id_and_bytes};
pub use claims::{
    a_claim_fills_an_accounts_room_across_a_backlog, a_claim_finds_the_rest_past_a_skipped_backlog,
    a_claim_holds_until_its_lease_runs_out, a_claim_takes_at_most_the_room_of_each_account,
    a_finished_request_keeps_its_claim, a_pause_holds_claims_until_saved_unpaused,
    a_released_claim_is_claimable_at_once, an_extended_lease_holds_past_its_old_end,
    claim_order_limit_and_skip, next_due_leaves_out_leases_and_skipped_accounts,
};
pub use fleet::{
    a_save_through_one_process_holds_in_every_other, concurrent_claims_never_overlap,
    concurrent_prunes_forget_each_attempt_once, concurrent_saves_at_one_version_one_wins,
    notices_follow_writes,
};
pub use insert::{
    a_conflicting_id_is_refused_and_nothing_stored,
    a_delivered_id_is_forgotten_after_the_retention, a_delivered_id_is_not_sent_again,
    a_delivered_id_reused_for_another_call_result_is_refused, a_full_store_refuses_new_deliveries,
    a_repeat_beside_a_new_id_stores_the_new_one, insert_is_all_or_nothing,
    the_same_id_twice_is_one_delivery,
};
pub use log::{
    every_recorded_attempt_is_logged_newest_first, pruning_forgets_the_oldest_attempts_only,
    the_attempts_log_pages_and_filters,
};
pub use outcomes::{
    an_outdated_token_is_fenced_off, attempts_recorded_together_answer_each,
    outcomes_move_deliveries, unknown_delivery_is_an_error,
};
pub use settings::{
    a_stale_account_save_writes_nothing, a_stale_health_save_writes_nothing,
    accounts_page_by_id_and_save_in_batches, settings_and_health_are_replaced,
    settings_changes_follow_the_cursor,
};

/// The most pending deliveries that the checks ask a store for, but
/// [`a_full_store_refuses_new_deliveries`]: more than any of them stores.
pub const ROOMY: usize = 10_000;

/// The most pending deliveries that [`run_insert`] asks a store for, to fill it.
pub const SMALL: usize = 3;

/// The lease of every claim the checks make, but the concurrent one.
const LEASE: Duration = Duration::from_secs(60);

/// Runs every check, each on a fresh store made by `make`.
///
/// `make(max_pending)` must return an empty store that holds at most `max_pending` pending
/// deliveries (a submit past them is [`Error::StoreFull`](crate::Error::StoreFull)): [`SMALL`]
/// for [`a_full_store_refuses_new_deliveries`], [`ROOMY`] for the rest. [`run_fleet`] runs
/// here with one store.
pub fn run_all<S: Store>(make: &dyn Fn(usize) -> S) {
    run_insert(make);
    run_claims(make);
    run_outcomes(make);
    run_log(make);
    run_admin(make);
    run_settings(make);
    run_fleet(&|| vec![make(ROOMY)]);
}

/// The checks of [`Outbox::insert`]: all or nothing, idempotent on the id, conflicts, a full
/// store, the retention of delivered ids. See [`run_all`] for `make`.
pub fn run_insert<S: Outbox>(make: &dyn Fn(usize) -> S) {
    insert_is_all_or_nothing(&make(ROOMY));
    the_same_id_twice_is_one_delivery(&make(ROOMY));
    a_conflicting_id_is_refused_and_nothing_stored(&make(ROOMY));
    a_repeat_beside_a_new_id_stores_the_new_one(&make(ROOMY));
    a_delivered_id_is_not_sent_again(&make(ROOMY));
    a_delivered_id_reused_for_another_call_result_is_refused(&make(ROOMY));
    a_full_store_refuses_new_deliveries(&make(SMALL), SMALL);
    a_delivered_id_is_forgotten_after_the_retention(&make(ROOMY));
}

/// The checks of [`Outbox::claim`] and [`Outbox::next_due`]: order, limits, skips, leases,
/// releases, room per account, paused accounts. See [`run_all`] for `make`.
pub fn run_claims<S: Outbox + Settings>(make: &dyn Fn(usize) -> S) {
    claim_order_limit_and_skip(&make(ROOMY));
    a_claim_holds_until_its_lease_runs_out(&make(ROOMY));
    a_released_claim_is_claimable_at_once(&make(ROOMY));
    an_extended_lease_holds_past_its_old_end(&make(ROOMY));
    next_due_leaves_out_leases_and_skipped_accounts(&make(ROOMY));
    a_claim_takes_at_most_the_room_of_each_account(&make(ROOMY));
    a_finished_request_keeps_its_claim(&make(ROOMY));
    a_claim_finds_the_rest_past_a_skipped_backlog(&make(ROOMY));
    a_claim_fills_an_accounts_room_across_a_backlog(&make(ROOMY));
    a_pause_holds_claims_until_saved_unpaused(&make(ROOMY));
}

/// The checks of [`Outbox::record_attempts`]: fencing, where each outcome moves a delivery,
/// unknown deliveries, batches answered one by one. See [`run_all`] for `make`.
pub fn run_outcomes<S: Outbox>(make: &dyn Fn(usize) -> S) {
    an_outdated_token_is_fenced_off(&make(ROOMY));
    outcomes_move_deliveries(&make(ROOMY));
    unknown_delivery_is_an_error(&make(ROOMY));
    attempts_recorded_together_answer_each(&make(ROOMY));
}

/// The checks of the attempts log: [`Outbox::attempts`] after
/// [`Outbox::record_attempts`], and [`Outbox::prune_attempts`]. See [`run_all`] for `make`.
pub fn run_log<S: Outbox>(make: &dyn Fn(usize) -> S) {
    every_recorded_attempt_is_logged_newest_first(&make(ROOMY));
    the_attempts_log_pages_and_filters(&make(ROOMY));
    pruning_forgets_the_oldest_attempts_only(&make(ROOMY));
}

/// The checks of an administrator's queries: [`Outbox::has_pending`], [`Outbox::list`],
/// [`Outbox::requeue_failed`], [`Outbox::remove`]. See [`run_all`] for `make`.
pub fn run_admin<S: Outbox>(make: &dyn Fn(usize) -> S) {
    has_pending_follows_deliveries(&make(ROOMY));
    replay_keeps_id_and_bytes(&make(ROOMY));
    remove_and_filters(&make(ROOMY));
}

/// The checks of [`Settings`]: versions from one counter, compare-and-set saves, the cursor,
/// pages of accounts and batches of saves. See [`run_all`] for `make`.
pub fn run_settings<S: Settings>(make: &dyn Fn(usize) -> S) {
    settings_and_health_are_replaced(&make(ROOMY));
    settings_changes_follow_the_cursor(&make(ROOMY));
    a_stale_account_save_writes_nothing(&make(ROOMY));
    a_stale_health_save_writes_nothing(&make(ROOMY));
    accounts_page_by_id_and_save_in_batches(&make(ROOMY));
}

/// The checks of processes that share a store: concurrent claims and saves, a save seen by
/// every process, and [`Notices`](crate::store::Notices).
///
/// Each call of `make` returns the stores of one fleet: one per process, every one on the same
/// fresh, empty backing data, holding at least [`ROOMY`] pending deliveries. A store that one
/// process uses alone returns one store: `run_fleet(&|| vec![make()])`, as [`run_all`] does.
///
/// # Panics
///
/// If `make` returns no store, or a check fails.
pub fn run_fleet<S: Store>(make: &dyn Fn() -> Vec<S>) {
    let check = |run: &dyn Fn(&[&S])| {
        let stores = make();
        assert!(!stores.is_empty(), "a fleet of at least one store");
        let refs: Vec<&S> = stores.iter().collect();
        run(&refs);
    };
    check(&|s| concurrent_claims_never_overlap(s));
    check(&|s| concurrent_saves_at_one_version_one_wins(s));
    check(&|s| a_save_through_one_process_holds_in_every_other(s));
    check(&|s| notices_follow_writes(s));
    check(&|s| concurrent_prunes_forget_each_attempt_once(s));
}

/// The fixed time `secs` seconds after the checks' epoch (2023-11-14T22:13:20Z).
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("a time within jiff's range")
}

/// `n` new deliveries of one account and campaign, with ids `msg_{account}_{campaign}_{i}`,
/// created and due one second apart from `t(0)`.
pub fn new_deliveries(account: &str, campaign: &str, n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| NewDelivery {
            id: DeliveryId::new(format!("msg_{account}_{campaign}_{i}"))
                .expect("a valid delivery id"),
            account: account.into(),
            campaign: campaign.into(),
            body: EncodedBody::from_parts(
                Bytes::from(format!("Reference={i}&ResultNotes=%E2%9C%93")),
                Encoding::Form,
            ),
            created_at: t(i as i64),
            next_attempt_at: t(i as i64),
        })
        .collect()
}

pub(super) fn record(at: Timestamp, status: Option<u16>, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        at,
        status,
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
        next,
        duration: std::time::Duration::from_millis(12),
        answer: status.map_or(String::new(), |s| format!("answer {s}")),
    }
}

/// Claims at most `limit` deliveries due at `now` with the checks' lease, leaving out `skip`.
fn claim<S: Outbox + ?Sized>(
    store: &S,
    now: Timestamp,
    limit: usize,
    skip: &[AccountId],
) -> Vec<Claim> {
    store
        .claim(&ClaimRequest {
            now,
            limit,
            lease: LEASE,
            skip,
            ..ClaimRequest::default()
        })
        .expect("claim")
}

/// Records one outcome under `claim`'s token.
fn record_one<S: Outbox + ?Sized>(
    store: &S,
    claim: &Claim,
    record: AttemptRecord,
) -> crate::error::Result<()> {
    let id = claim.delivery.id.clone();
    let mut answers = store.record_attempts(&[(id, claim.token, record)]);
    assert_eq!(answers.len(), 1, "one answer per outcome");
    answers.remove(0)
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.delivery.id.as_str()).collect()
}

/// `d`, due at another time.
fn due_at(d: &NewDelivery, at: Timestamp) -> NewDelivery {
    NewDelivery {
        next_attempt_at: at,
        ..d.clone()
    }
}

/// `d` with another body under the same id.
fn other_body(d: &NewDelivery) -> NewDelivery {
    NewDelivery {
        body: EncodedBody::from_parts(Bytes::from_static(b"Reference=other"), Encoding::Form),
        ..d.clone()
    }
}

fn pending_and_delivered<S: Outbox + ?Sized>(store: &S, account: &str) -> (u64, u64) {
    let stats = store.stats(&account.into(), None).expect("stats");
    (stats.pending, stats.delivered)
}
