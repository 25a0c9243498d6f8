//! Every `_blocking` method, called on a thread of the tokio runtime the worker's attempts run
//! on, returns `Error::BlockingInRuntime` at once and does nothing; called anywhere else (a
//! plain thread, another runtime) it works.
//!
//! The receiver is an in-process dispatcher that accepts everything (a `ScriptedReceiver`
//! answering 204), so what is checked is the facade and the worker, not a transport.
#![cfg(feature = "tokio")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use call_result_webhook::owned_settings::{AccountQuery, AccountSettings, Expected, SettingsPut};
use call_result_webhook::store::DeliveryFilter;
use call_result_webhook::{
    AccountId, CampaignId, DeliveryId, Error, MemoryStore, PreferencesUpdate, UrlPolicy, Webhooks,
    Worker,
};
use support::scripted::ScriptedReceiver;
use support::{admin, call, switch_on};

/// Well under this, for "at once".
const AT_ONCE: Duration = Duration::from_secs(1);

fn acme() -> AccountId {
    "acme".into()
}

fn winter() -> CampaignId {
    "winter".into()
}

const URL: &str = "https://crm.example/hook";

/// One account, switched on, set up from the test's own thread (no runtime).
fn webhooks() -> Webhooks {
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .policy(UrlPolicy::new())
        .build()
        .unwrap();
    switch_on(
        &webhooks,
        &acme(),
        &winter(),
        PreferencesUpdate::new().url(URL),
    );
    webhooks
}

type Call = fn(&Webhooks, &Worker) -> Result<(), Error>;

/// A filter that matches nothing pending: another campaign's deliveries.
fn other() -> DeliveryFilter {
    DeliveryFilter::account("acme").campaign("other")
}

/// Every `_blocking` method, with the async method its refusal names; the worker's shutdown
/// last. Filters name another campaign, so that nothing pending is replayed or removed.
fn every_blocking_method() -> Vec<(&'static str, &'static str, Call)> {
    vec![
        (
            "Webhooks::submit_blocking",
            "Webhooks::submit(..).await",
            |w, _| {
                let call = call("1");
                w.submit_blocking(&acme(), &winter(), call).map(drop)
            },
        ),
        (
            "Webhooks::submit_with_id_blocking",
            "Webhooks::submit_with_id(..).await",
            |w, _| {
                let call = call("2");
                let id = DeliveryId::generate();
                w.submit_with_id_blocking(&acme(), &winter(), call, id)
                    .map(drop)
            },
        ),
        (
            "Webhooks::update_preferences_blocking",
            "Webhooks::update_preferences(..).await",
            |w, _| {
                let update = PreferencesUpdate::new().credentials("changed", "s3cret");
                w.update_preferences_blocking(&admin(), &acme(), update)
                    .map(drop)
            },
        ),
        (
            "Webhooks::set_campaign_webhook_blocking",
            "Webhooks::set_campaign_webhook(..).await",
            |w, _| {
                w.set_campaign_webhook_blocking(&admin(), &acme(), &"spring".into(), true)
                    .map(drop)
            },
        ),
        (
            "Webhooks::resume_endpoint_blocking",
            "Webhooks::resume_endpoint(..).await",
            |w, _| w.resume_endpoint_blocking(&admin(), &acme()).map(drop),
        ),
        (
            "Webhooks::replay_blocking",
            "Webhooks::replay(..).await",
            |w, _| w.replay_blocking(&admin(), &other()).map(drop),
        ),
        (
            "Webhooks::remove_blocking",
            "Webhooks::remove(..).await",
            |w, _| w.remove_blocking(&admin(), &other()).map(drop),
        ),
        (
            "Webhooks::dead_letters_blocking",
            "Webhooks::dead_letters(..).await",
            |w, _| w.dead_letters_blocking(&admin(), &other(), 10).map(drop),
        ),
        (
            "Webhooks::status_blocking",
            "Webhooks::status(..).await",
            |w, _| w.status_blocking(&acme(), None).map(drop),
        ),
        (
            "Webhooks::list_accounts_blocking",
            "Webhooks::list_accounts(..).await",
            |w, _| w.list_accounts_blocking(&AccountQuery::new()).map(drop),
        ),
        (
            "Webhooks::put_settings_blocking",
            "Webhooks::put_settings(..).await",
            |w, _| {
                let settings = AccountSettings::default();
                w.put_settings_blocking(&admin(), &"owned".into(), settings, Expected::Any)
                    .map(drop)
            },
        ),
        (
            "Webhooks::put_settings_batch_blocking",
            "Webhooks::put_settings_batch(..).await",
            |w, _| {
                let put = SettingsPut::new("owned-too", AccountSettings::default());
                w.put_settings_batch_blocking(&admin(), vec![put]).map(drop)
            },
        ),
        (
            "Worker::wait_idle_blocking",
            "Worker::wait_idle(..).await",
            |_, worker| match worker.wait_idle_blocking(Duration::from_secs(10)) {
                Ok(true) => Ok(()),
                Ok(false) => panic!("still pending after 10 s"),
                Err(e) => Err(e),
            },
        ),
        (
            "Worker::shutdown_blocking",
            "Worker::shutdown(..).await",
            |_, worker| worker.shutdown_blocking(Duration::from_secs(5)).map(drop),
        ),
    ]
}

/// A call to run somewhere.
type Job = Box<dyn FnOnce() -> Result<(), Error> + Send>;

/// Calls each method where `on` runs it and checks it was refused at once, by name.
fn assert_each_refused(
    webhooks: &Webhooks,
    worker: &Worker,
    on: impl Fn(Job) -> Result<(), Error>,
) {
    for (method, instead, call) in every_blocking_method() {
        let (w, k) = (webhooks.clone(), worker.clone());
        let asked = Instant::now();
        let answer = on(Box::new(move || call(&w, &k)));
        let took = asked.elapsed();
        match answer {
            Err(Error::BlockingInRuntime {
                method: m,
                instead: i,
            }) => assert_eq!((m, i), (method, instead)),
            other => panic!("{method} on the worker's runtime answered {other:?}"),
        }
        assert!(took < AT_ONCE, "{method} was refused after {took:?}");
    }
}

/// Nothing the refused calls would have done was done.
fn assert_nothing_done(webhooks: &Webhooks, worker: &Worker, dispatcher: &ScriptedReceiver) {
    let status = webhooks.status_blocking(&acme(), None).unwrap();
    assert_eq!(
        (status.stats.pending, status.stats.delivered),
        (0, 0),
        "no submit was stored"
    );
    assert_eq!(dispatcher.seen().len(), 0);
    let account = webhooks.account(&acme()).unwrap();
    assert_eq!(
        account.preferences().username(),
        None,
        "preferences unchanged"
    );
    assert!(!account.campaign_webhook_enabled(&"spring".into()));
    assert!(
        webhooks.account(&"owned".into()).is_none()
            && webhooks.account(&"owned-too".into()).is_none(),
        "no settings put"
    );
    assert!(worker.is_running(), "the refused shutdown stopped nothing");
}

/// [`webhooks`] with a worker on `runtime`, delivering to a receiver that accepts everything.
fn started_on(runtime: &tokio::runtime::Handle) -> (Webhooks, Arc<ScriptedReceiver>, Worker) {
    let webhooks = webhooks();
    let dispatcher = ScriptedReceiver::always(204);
    let worker = webhooks.start_tokio(dispatcher.clone(), runtime).unwrap();
    (webhooks, dispatcher, worker)
}

#[test]
fn on_a_current_thread_runtime_of_the_worker_every_blocking_method_refuses_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (webhooks, dispatcher, worker) = started_on(runtime.handle());

    // The runtime's own thread, inside `block_on`: where a dialer's `async fn main` runs.
    runtime.block_on(async {
        assert_each_refused(&webhooks, &worker, |call| call());
    });
    assert_nothing_done(&webhooks, &worker, &dispatcher);
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

#[test]
fn on_a_multi_thread_runtime_of_the_worker_tasks_and_its_pool_are_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (webhooks, dispatcher, worker) = started_on(runtime.handle());

    // A task on one of the runtime's worker threads.
    assert_each_refused(&webhooks, &worker, |call| {
        runtime
            .block_on(runtime.spawn(async move { call() }))
            .unwrap()
    });
    // Its blocking pool: tokio tells a pool thread from a worker thread to no public API, so
    // the pool is refused too, as documented.
    assert_each_refused(&webhooks, &worker, |call| {
        runtime.block_on(runtime.spawn_blocking(call)).unwrap()
    });
    assert_nothing_done(&webhooks, &worker, &dispatcher);
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

/// Off the worker's runtime every method works: on a plain thread, and on another runtime's.
#[test]
fn off_the_workers_runtime_every_blocking_method_works() {
    let workers_runtime = tokio::runtime::Runtime::new().unwrap();
    let another = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for place in ["a plain thread", "another runtime's thread"] {
        let (webhooks, dispatcher, worker) = started_on(workers_runtime.handle());
        for (method, _, call) in every_blocking_method() {
            let answer = match place {
                "a plain thread" => call(&webhooks, &worker),
                _ => another.block_on(async { call(&webhooks, &worker) }),
            };
            if let Err(e) = answer {
                panic!("{method} on {place}: {e:?}");
            }
        }
        // Both submits delivered, the preferences changed, the worker stopped.
        assert_eq!(dispatcher.seen().len(), 2, "{place}");
        let status = webhooks.status_blocking(&acme(), None).unwrap();
        assert_eq!(status.stats.delivered, 2, "{place}");
        let account = webhooks.account(&acme()).unwrap();
        assert_eq!(account.preferences().username(), Some("changed"), "{place}");
        assert!(
            account.campaign_webhook_enabled(&"spring".into()),
            "{place}"
        );
        assert!(!worker.is_running(), "{place}");
    }
}

/// A worker on plain threads has no runtime to stall: nothing is refused, even inside one.
#[test]
fn with_a_thread_worker_nothing_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let webhooks = webhooks();
    // A tokio worker first, then a thread worker in its place.
    let tokio_worker = webhooks
        .start_tokio(ScriptedReceiver::always(204), runtime.handle())
        .unwrap();
    tokio_worker
        .shutdown_blocking(Duration::from_secs(5))
        .unwrap();
    let worker = webhooks
        .start_threads(ScriptedReceiver::always(200), 2)
        .unwrap();
    runtime.block_on(async {
        let call = call("1");
        let submitted = webhooks.submit_blocking(&acme(), &winter(), call).unwrap();
        assert!(submitted.is_accepted());
        assert!(worker.wait_idle_blocking(Duration::from_secs(10)).unwrap());
    });
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}
