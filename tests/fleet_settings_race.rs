//! Settings changed at the same moment through two instances of a fleet (two `Webhooks`, each on
//! its own `PostgresStore` on one schema): each change must be kept, whatever the other
//! instance's copy of the account held when it saved its own.
//!
//! - Two administrators change DIFFERENT fields of ONE account at once, one through each
//!   instance (a barrier starts them together): the credentials through A; the time zone, or
//!   a campaign's switch, through B. Once the fleet has settled, the account is read back from
//!   a third view of the store, and both instances must hold what the store holds.
//! - A pause saved by one instance (its attempt answered 410) must not be undone by the other
//!   instance saving its stale copy of the endpoint's health (its own attempt, in flight at
//!   the same moment, answered 503 a few milliseconds later).
//! - The same two changes on one process (memory and SQLite stores), from two threads.
//!
//! Each test counts what was lost and prints it before it asserts.
#![cfg(all(feature = "hyper", feature = "postgres", feature = "sqlite"))]

mod pg_support;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use call_result_webhook::account::Account;
use call_result_webhook::campaign::WebhookIndicator;
use call_result_webhook::delivery::{EndpointHealth, RetrySchedule};
use call_result_webhook::store::SqliteStore;
use call_result_webhook::{
    AccountId, CallResult, CampaignId, Event, MemoryStore, PreferencesUpdate, Principal, Webhooks,
};
use pg_support::Database;
use support::{Instance, Receiver, Reply, admin, ids, loopback_policy, switch_on, within};

/// Rounds of two simultaneous changes.
const ROUNDS: usize = 200;
/// Rounds of the pause race.
const PAUSE_ROUNDS: usize = 32;
/// How soon a change made through one instance must hold on another (as tests/fleet.rs).
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);
/// Time zones B sets in turn (consecutive ones differ).
const ZONES: [&str; 5] = [
    "Australia/Brisbane",
    "Europe/Paris",
    "America/Chicago",
    "Asia/Tokyo",
    "Pacific/Auckland",
];

/// The account as the store holds it now: a third view, built afresh, neither instance's copy.
fn stored_account(db: &Database, id: &AccountId) -> Option<Account> {
    db.fresh_view().account(id)
}

/// The endpoint's health as the store holds it now, read the same way.
fn stored_health(db: &Database, id: &AccountId) -> EndpointHealth {
    db.fresh_view()
        .status_blocking(id, None)
        .expect("the status")
        .endpoint
}

/// B's change in round `round`: the time zone (even rounds) or a new campaign's switch (odd).
#[derive(Debug, Clone)]
enum ChangeB {
    TimeZone(&'static str),
    Campaign(CampaignId),
}

impl ChangeB {
    fn of_round(round: usize) -> ChangeB {
        if round.is_multiple_of(2) {
            ChangeB::TimeZone(ZONES[(round / 2) % ZONES.len()])
        } else {
            ChangeB::Campaign(format!("campaign-{round:03}").into())
        }
    }

    fn apply(&self, webhooks: &Webhooks, account: &AccountId) {
        match self {
            ChangeB::TimeZone(zone) => {
                webhooks
                    .update_preferences_blocking(
                        &Principal::administrator("bob"),
                        account,
                        PreferencesUpdate::new().time_zone(zone),
                    )
                    .expect("B's time zone");
            }
            ChangeB::Campaign(campaign) => {
                webhooks
                    .set_campaign_webhook_blocking(
                        &Principal::administrator("bob"),
                        account,
                        campaign,
                        true,
                    )
                    .expect("B's campaign switch");
            }
        }
    }

    fn kept(&self, account: &Account) -> bool {
        match self {
            ChangeB::TimeZone(zone) => account.preferences().time_zone_name() == *zone,
            ChangeB::Campaign(campaign) => account.campaign_webhook_enabled(campaign),
        }
    }
}

fn change_a(round: usize) -> (String, PreferencesUpdate) {
    let user = format!("agent-{round:03}");
    let update = PreferencesUpdate::new().credentials(user.clone(), format!("secret-{round:03}"));
    (user, update)
}

/// What one account holds of the fields the rounds change: user name, time zone, campaigns.
type Fields = (Option<String>, String, Vec<(CampaignId, bool)>);

/// What one account holds of the fields the rounds change, to compare copies.
fn fields(account: Option<&Account>) -> Option<Fields> {
    account.map(|a| {
        let mut campaigns: Vec<(CampaignId, bool)> =
            a.campaigns().map(|(c, on)| (c.clone(), on)).collect();
        campaigns.sort();
        (
            a.preferences().username().map(str::to_owned),
            a.preferences().time_zone_name().to_owned(),
            campaigns,
        )
    })
}

/// What the rounds lost.
#[derive(Default, Debug)]
struct Lost {
    a: usize,
    b_time_zone: usize,
    b_campaign: usize,
    both: usize,
    /// Rounds after which an instance's copy still differed from the store's a second later.
    diverged: usize,
    said: Vec<String>,
}

impl Lost {
    fn record(&mut self, round: usize, b: &ChangeB, kept_a: bool, kept_b: bool, how: &str) {
        match (kept_a, kept_b) {
            (true, true) => return,
            (false, false) => self.both += 1,
            (false, true) => self.a += 1,
            (true, false) => match b {
                ChangeB::TimeZone(_) => self.b_time_zone += 1,
                ChangeB::Campaign(_) => self.b_campaign += 1,
            },
        }
        if self.said.len() < 12 {
            self.said.push(format!(
                "round {round}: {how}: A's credentials {}, B's {b:?} {}",
                if kept_a { "kept" } else { "LOST" },
                if kept_b { "kept" } else { "LOST" },
            ));
        }
    }

    fn total(&self) -> usize {
        self.a + self.b_time_zone + self.b_campaign + self.both
    }
}

#[test]
fn two_administrators_changing_different_fields_through_two_instances_keep_both() {
    let Some(db) = Database::new("settings race across instances") else {
        return;
    };
    let receiver = Receiver::start();
    let a = Instance::start(db.store());
    let b = Instance::start(db.store());
    let (acme, winter) = ids();
    switch_on(
        &a.webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new().url(&receiver.url_for("/hook")),
    );
    within("B sees the account", IN_FORCE_WITHIN, || {
        b.webhooks.indicator(&acme, Some(&winter)) == WebhookIndicator::Active
    });

    let started = Instant::now();
    let mut lost = Lost::default();
    let mut settle_times = Vec::new();
    for round in 0..ROUNDS {
        let (user, update_a) = change_a(round);
        let change_b = ChangeB::of_round(round);
        let together = Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                together.wait();
                a.webhooks
                    .update_preferences_blocking(&admin(), &acme, update_a)
                    .expect("A's credentials");
            });
            scope.spawn(|| {
                together.wait();
                change_b.apply(&b.webhooks, &acme);
            });
        });
        // Settled: both instances hold the same (a lost change stays lost); then what the
        // store holds, read afresh, must be what they hold (a copy that never catches up is
        // counted too).
        let settling = Instant::now();
        while fields(a.webhooks.account(&acme).as_ref())
            != fields(b.webhooks.account(&acme).as_ref())
            && settling.elapsed() < IN_FORCE_WITHIN
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        settle_times.push(settling.elapsed());
        let stored = stored_account(&db, &acme).expect("the account is stored");
        let settled = [&a, &b]
            .iter()
            .all(|i| fields(i.webhooks.account(&acme).as_ref()) == fields(Some(&stored)));
        let kept_a = stored.preferences().username() == Some(user.as_str());
        let kept_b = change_b.kept(&stored);
        lost.record(round, &change_b, kept_a, kept_b, "the store");
        if !settled {
            lost.diverged += 1;
            if lost.said.len() < 12 {
                lost.said.push(format!(
                    "round {round}: an instance's copy differs from the store's after \
                     {IN_FORCE_WITHIN:?}: store {:?}, A {:?}, B {:?}",
                    fields(Some(&stored)),
                    fields(a.webhooks.account(&acme).as_ref()),
                    fields(b.webhooks.account(&acme).as_ref()),
                ));
            }
        }
    }
    settle_times.sort();
    println!(
        "settings race, two instances on PostgreSQL, {ROUNDS} rounds in {:.1} s: {} rounds lost a \
         change (A's credentials {}, B's time zone {}, B's campaign switch {}, both {}), {} rounds \
         left an instance's copy differing from the store's; settled in median {:?}, max {:?}",
        started.elapsed().as_secs_f64(),
        lost.total(),
        lost.a,
        lost.b_time_zone,
        lost.b_campaign,
        lost.both,
        lost.diverged,
        settle_times[ROUNDS / 2],
        settle_times[ROUNDS - 1],
    );
    for said in &lost.said {
        println!("  {said}");
    }
    assert_eq!(
        (lost.total(), lost.diverged),
        (0, 0),
        "changes made at the same moment through two instances were lost: {lost:?}"
    );
}

/// The first request to a round's endpoint is answered 410 [`HOLD`] after it arrived; a second
/// one, in flight at the same time from the other instance, is answered 503 at that moment
/// plus the round's offset: from [`FIRST_OFFSET_MS`] on, a millisecond more each round, so
/// the rounds sweep the moments around the pause's save (the window in which the other
/// instance's copy is stale is a few milliseconds: until the pause's notice has been read).
const HOLD: Duration = Duration::from_millis(400);
const FIRST_OFFSET_MS: i64 = -4;
const OFFSETS: i64 = 16;

fn offset_of(round: usize) -> i64 {
    FIRST_OFFSET_MS + round as i64 % OFFSETS
}

#[test]
fn a_pause_saved_by_one_instance_is_not_undone_by_the_others_stale_copy() {
    let Some(db) = Database::new("pause race across instances") else {
        return;
    };
    let receiver = Receiver::start();
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    {
        let arrivals = arrivals.clone();
        receiver.respond_with(move |request| {
            let mut all = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
            let seen = all.entry(request.target.clone()).or_default();
            seen.push(request.at);
            if seen.len() == 1 {
                return Reply::status(410).delay(HOLD);
            }
            let round: usize = request
                .target
                .rsplit('/')
                .next()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let offset = offset_of(round);
            let answer_at = if offset >= 0 {
                seen[0] + HOLD + Duration::from_millis(offset as u64)
            } else {
                seen[0] + HOLD - Duration::from_millis(offset.unsigned_abs())
            };
            Reply::status(503).delay(answer_at.saturating_duration_since(request.at))
        });
    }
    // Two places per endpoint over the fleet (the bound holds across instances): the two
    // submits' attempts may be in flight at once, each instance's own started by its submit.
    let paused_by: Arc<Mutex<HashMap<AccountId, Vec<&'static str>>>> = Arc::default();
    let start = |name: &'static str| {
        let paused_by = paused_by.clone();
        Instance::start_with(db.store(), move |builder| {
            builder.per_endpoint_concurrency(2).on_event(move |event| {
                if let Event::EndpointPaused { account, .. } = event {
                    paused_by
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(account.clone())
                        .or_default()
                        .push(name);
                }
            })
        })
    };
    let a = start("A");
    let b = start("B");
    let campaign: CampaignId = "winter".into();
    let schedule = RetrySchedule::new([Duration::from_millis(100); 5]).unwrap();

    let (mut raced, mut lost, mut lost_unraced) = (0, 0, 0);
    let mut said = Vec::new();
    let started = Instant::now();
    for round in 0..PAUSE_ROUNDS {
        let account: AccountId = format!("gone-{round:02}").into();
        let path = format!("/gone/{round:02}");
        switch_on(
            &a.webhooks,
            &account,
            &campaign,
            PreferencesUpdate::new()
                .url(&receiver.url_for(&path))
                .retry_schedule(schedule.clone()),
        );
        within("B sees the account", IN_FORCE_WITHIN, || {
            b.webhooks.indicator(&account, Some(&campaign)) == WebhookIndicator::Active
        });
        for (n, instance) in [&a, &b].into_iter().enumerate() {
            let call = CallResult::builder()
                .reference(format!("{round}-{n}"))
                .build();
            let submitted = instance.webhooks.submit_blocking(&account, &campaign, call);
            assert!(submitted.expect("submit").is_accepted());
        }
        // Both answered, both outcomes saved, the fleet told.
        within("the first request arrives", Duration::from_secs(5), || {
            arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&path)
        });
        std::thread::sleep(HOLD + IN_FORCE_WITHIN + Duration::from_millis(OFFSETS as u64));
        let seen = arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&path)
            .cloned()
            .unwrap_or_default();
        // Raced: the second request arrived while the first was held (so from the other
        // instance), and was answered after it.
        let was_raced = seen.len() >= 2 && seen[1] < seen[0] + HOLD;
        let kept = stored_health(&db, &account).is_paused();
        let who = paused_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&account)
            .cloned()
            .unwrap_or_default();
        if was_raced {
            raced += 1;
        }
        if !kept {
            if was_raced {
                lost += 1;
            } else {
                lost_unraced += 1;
            }
            if said.len() < 12 {
                said.push(format!(
                    "round {round}: paused by {who:?}, {} requests ({}raced, the 503 answered {} ms \
                     after the 410), the store's health now {:?}; A holds paused {}, B holds \
                     paused {}",
                    seen.len(),
                    if was_raced { "" } else { "not " },
                    offset_of(round),
                    stored_health(&db, &account),
                    a.webhooks
                        .status_blocking(&account, None)
                        .is_ok_and(|s| s.endpoint.is_paused()),
                    b.webhooks
                        .status_blocking(&account, None)
                        .is_ok_and(|s| s.endpoint.is_paused()),
                ));
            }
        }
    }
    println!(
        "pause race, two instances on PostgreSQL, {PAUSE_ROUNDS} rounds in {:.1} s: {raced} rounds \
         had both instances' attempts in flight at once; the 410's pause was undone in {lost} \
         of them (and in {lost_unraced} other rounds)",
        started.elapsed().as_secs_f64()
    );
    for s in &said {
        println!("  {s}");
    }
    assert!(
        raced > 0,
        "no round had both instances' attempts in flight at once: the race was not tried"
    );
    assert_eq!(
        lost + lost_unraced,
        0,
        "a pause saved by one instance was undone by the other's stale copy"
    );
}

/// The same two simultaneous changes, on one process: two threads on one `Webhooks`.
#[test]
fn two_administrators_changing_different_fields_on_one_process_keep_both() {
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Webhooks); 2] = [
        ("memory", build(MemoryStore::new())),
        (
            "SQLite",
            build(SqliteStore::open(dir.path().join("outbox.db")).expect("open SQLite")),
        ),
    ];
    let acme: AccountId = "acme".into();
    for (name, webhooks) in &stores {
        switch_on(
            webhooks,
            &acme,
            &"winter".into(),
            PreferencesUpdate::new().url("http://127.0.0.1:9/hook"),
        );
        let mut lost = Lost::default();
        for round in 0..ROUNDS {
            let (user, update_a) = change_a(round);
            let change_b = ChangeB::of_round(round);
            let together = Barrier::new(2);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    together.wait();
                    webhooks
                        .update_preferences_blocking(&admin(), &acme, update_a)
                        .expect("A's credentials");
                });
                scope.spawn(|| {
                    together.wait();
                    change_b.apply(webhooks, &acme);
                });
            });
            let held = webhooks.account(&acme).expect("the account");
            let kept_a = held.preferences().username() == Some(user.as_str());
            let kept_b = change_b.kept(&held);
            lost.record(round, &change_b, kept_a, kept_b, name);
        }
        println!(
            "settings race, one process on the {name} store, two threads, {ROUNDS} rounds: {} \
             rounds lost a change",
            lost.total()
        );
        for said in &lost.said {
            println!("  {said}");
        }
        assert_eq!(lost.total(), 0, "{name}: {lost:?}");
    }
}

fn build(store: impl call_result_webhook::store::Store) -> Webhooks {
    Webhooks::builder()
        .store(store)
        .policy(loopback_policy())
        .build()
        .expect("build")
}
