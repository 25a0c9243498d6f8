//! One clock for a fleet: three `dialer` processes share one PostgreSQL outbox (a fresh
//! schema) with their clocks 2 minutes ahead, right, and 2 minutes behind (libfaketime: the
//! system clock shifted, the monotonic clock left alone), each fed its own call results on
//! stdin, delivering to one slow receiver on 127.0.0.1 that holds every request a while and
//! answers 503 to the first attempt of some ids. Once, while a request of its own is open at
//! the receiver (so it holds that claim), the dialer whose clock runs ahead is killed with
//! SIGKILL; it is started again once its claims have been taken over (or the wait for that
//! has run out).
//!
//! What is checked:
//!
//! - No request starts while a request of the same `webhook-id` is still open at the
//!   receiver (on any connection of any process): a lease holds against every clock.
//! - No `webhook-id` is answered 2xx twice, but one whose 2xx request was in flight when its
//!   dialer was killed (at-least-once: the dead process never recorded it).
//! - Each retry after a 503 starts at its scheduled delay: [`RETRY_MS`] ± 20% after the 503
//!   was answered (plus [`RETRY_SLACK`] for a loaded machine), never at once.
//! - The claims the killed dialer left are attempted again by a live process once their lease
//!   has run out (the attempt time limit + 5 s after the claim), within [`TAKEOVER_SLACK`],
//!   not minutes later, and not before.
//! - Nothing is stuck: every dialer exits 0 at the end of its input, once nothing is pending
//!   in the shared outbox; every acknowledged call result was answered 2xx.
//!
//! The counts are printed before they are asserted, so a failing run shows them all.
//!
//! libfaketime is the Debian package `libfaketime` (`apt-get install faketime`); the library
//! is looked for where Debian puts it, or named by `CALL_RESULT_WEBHOOK_LIBFAKETIME`. Without
//! it the test says NOT RUN and passes, unless `CALL_RESULT_WEBHOOK_REQUIRE_FAKETIME` is set
//! (as `.ci/run` does). Without a PostgreSQL server it says NOT RUN and passes, unless
//! `CALL_RESULT_WEBHOOK_REQUIRE_DATABASE` is set. `cargo test --all-features --test
//! fleet_clock` alone does not rebuild the `dialer` example (run `cargo build --all-features
//! --examples` first). The receiver's choices are random: the seed is printed, and
//! `FLEET_CLOCK_SEED=<seed>` repeats them.
#![cfg(all(
    target_os = "linux",
    feature = "hyper",
    feature = "sqlite",
    feature = "postgres"
))]

mod dialer_support;
mod pg_support;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use call_result_webhook::store::Outbox;
use dialer_support::{Dialer, Rng, finish_all, fleet_args, record, seed, unacked_lines};
use pg_support::{Claim, Claims, Database};
use support::{Receiver, Recorded, Reply};

/// Each process's clock, as libfaketime's `FAKETIME` (`None`: not shifted).
const CLOCKS: [(&str, Option<&str>); 3] = [
    ("2 min ahead", Some("+120s")),
    ("right", None),
    ("2 min behind", Some("-120s")),
];
/// The process killed while it holds claims: the one whose clock runs ahead.
const KILLED: usize = 0;
/// Call results fed to each process, each with a unique Reference.
const PER_PROCESS: usize = 40;
/// The feeder's pause between lines: the input spans the kill, and the fleet keeps up with
/// it (a retry that waits for a free place behind first attempts would start late).
const FEED_PAUSE: Duration = Duration::from_millis(250);
/// The account's attempt time limit (`--timeout-ms`): a lease is this + 5 s.
const TIMEOUT_MS: u64 = 2000;
/// The receiver holds each request this long at least, and less than this + `HOLD_SPREAD_MS`.
const HOLD_MIN_MS: u64 = 200;
const HOLD_SPREAD_MS: u64 = 400;
/// Of the first attempts, this percentage is answered 503.
const FIRST_503_PERCENT: u64 = 35;
/// The delay before every retry (`--retry-delays-ms`), jittered ± 20% by the schedule.
const RETRY_MS: u64 = 3000;
/// A retry may start this much after the latest moment its schedule allows (a loaded machine).
const RETRY_SLACK: Duration = Duration::from_millis(500);
/// A retry may seem to start this much before its earliest moment: the receiver's instant of
/// the answer is a little before the dialer's.
const EARLY_TOLERANCE: Duration = Duration::from_millis(50);
/// A lease: the attempt time limit + 5 s, from the claim.
const LEASE: Duration = Duration::from_millis(TIMEOUT_MS + 5000);
/// The killed dialer's claims must be attempted again within this after their lease ran out.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);
/// How long the test waits for the takeover before it starts the killed dialer again.
const TAKEOVER_WAIT: Duration = Duration::from_secs(20);
/// Slack when comparing the receiver's instants with leases read from the outbox.
const TOLERANCE: Duration = Duration::from_millis(250);
/// The kill comes at the first moment this long after the start that the dialer ahead has a
/// request open at the receiver, and within `KILL_WITHIN` more.
const KILL_AFTER: Duration = Duration::from_millis(2500);
const KILL_WITHIN: Duration = Duration::from_secs(10);
/// When, after the kill, its claims are told from live ones: live processes finish every
/// attempt within the attempt time limit and record it, which clears the claim.
const ORPHAN_CHECK_AFTER: Duration = Duration::from_millis(TIMEOUT_MS + 1000);
/// At the end, every process must exit within this once its input has ended.
const FINISH_WITHIN: Duration = Duration::from_secs(60);
const PASSWORD: &str = "fleet-clock-pässword";

/// Where Debian and Ubuntu put libfaketime.
const LIBFAKETIME_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// libfaketime, checked to shift the clock of a process it is preloaded into; `None` (after
/// saying why) when it is missing and not required.
fn libfaketime() -> Option<PathBuf> {
    let found = std::env::var_os("CALL_RESULT_WEBHOOK_LIBFAKETIME")
        .map(PathBuf::from)
        .or_else(|| {
            LIBFAKETIME_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
    let Some(lib) = found.filter(|p| p.is_file()) else {
        if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_FAKETIME").is_some() {
            panic!("fleet_clock: libfaketime is not installed (apt-get install faketime)");
        }
        eprintln!(
            "fleet_clock: NOT RUN: libfaketime is not installed (apt-get install faketime, or \
             name it in CALL_RESULT_WEBHOOK_LIBFAKETIME)"
        );
        return None;
    };
    // The shift, seen by a process: `date` reads the clock as the dialer does
    // (clock_gettime through the C library).
    let date = |faketime: Option<&str>| -> i64 {
        let mut date = Command::new("date");
        date.arg("+%s");
        if let Some(faketime) = faketime {
            date.envs(faked(&lib, faketime));
        }
        let out = date.output().expect("run date");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("date +%s prints seconds")
    };
    let shift = date(Some("+120s")) - date(None);
    assert!(
        (119..=121).contains(&shift),
        "libfaketime at {} shifted the clock by {shift} s, not 120 s",
        lib.display()
    );
    Some(lib)
}

/// The environment that runs a process with its system clock shifted by `faketime`.
fn faked(lib: &std::path::Path, faketime: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), faketime.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// One request as the receiver answered it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    /// The sender's port.
    port: u16,
    at: Instant,
    /// How long it was held before the answer.
    hold: Duration,
    status: u16,
}

impl Seen {
    fn answered(&self) -> Instant {
        self.at + self.hold
    }
}

/// The slow receiver: holds each request `HOLD_MIN_MS` or more, answers 503 to some first
/// attempts and 200 to everything else; keeps what it answered.
struct Slow {
    rng: Rng,
    attempts: HashMap<String, u32>,
    seen: Vec<Seen>,
}

impl Slow {
    fn serve(receiver: &Receiver, seed: u64) -> Arc<Mutex<Slow>> {
        let slow = Arc::new(Mutex::new(Slow {
            rng: Rng(seed),
            attempts: HashMap::new(),
            seen: Vec::new(),
        }));
        let answering = slow.clone();
        receiver.respond_with(move |request| {
            answering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reply(request)
        });
        slow
    }

    fn reply(&mut self, request: &Recorded) -> Reply {
        let id = request.header("webhook-id").unwrap_or_default().to_owned();
        let attempt = self.attempts.entry(id.clone()).or_default();
        *attempt += 1;
        let hold = Duration::from_millis(HOLD_MIN_MS + self.rng.below(HOLD_SPREAD_MS));
        let status = if *attempt == 1 && self.rng.below(100) < FIRST_503_PERCENT {
            503
        } else {
            200
        };
        self.seen.push(Seen {
            id,
            port: request.peer.port(),
            at: request.at,
            hold,
            status,
        });
        Reply::status(status).delay(hold)
    }
}

/// The fleet's bound on attempts in flight to the receiver.
const PER_ENDPOINT: usize = 16;

/// Starts dialer `p` on the shared schema with its clock, fed `lines` one every
/// `FEED_PAUSE`; its input is held open until [`Dialer::end_input`].
fn start(db: &Database, lib: &std::path::Path, p: usize, url: &str, lines: Vec<String>) -> Dialer {
    let retries = vec![RETRY_MS.to_string(); 4].join(",");
    let mut args = fleet_args(&db.url, &db.schema, url, PASSWORD, TIMEOUT_MS, &retries);
    // Room for every attempt the slow receiver holds at once over the fleet, so that a retry
    // starts when it is due and does not wait for a place (the bound is the fleet's).
    args.extend(["--per-endpoint".to_owned(), PER_ENDPOINT.to_string()]);
    let env = CLOCKS[p].1.map(|f| faked(lib, f)).unwrap_or_default();
    let input = lines.into_iter().map(String::into_bytes).collect();
    Dialer::start_env(args, env, input, FEED_PAUSE, false)
}

/// The local ports of process `pid`'s TCP connections to `port` on 127.0.0.1 (from `/proc`).
fn ports_to(pid: u32, port: u16) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(inode.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let hex_port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
            (hex_port(remote)? == port && inodes.contains(*inode)).then(|| hex_port(local))?
        })
        .collect()
}

/// The kill: when the dialer was dead, and the claims it left.
struct Kill {
    dead: Instant,
    orphaned: Vec<Claim>,
}

#[test]
fn leases_and_due_times_hold_across_clocks_two_minutes_apart() {
    let Some(lib) = libfaketime() else {
        return;
    };
    let Some(db) = Database::new("fleet_clock") else {
        return;
    };
    let started = Instant::now();
    let seed = seed("FLEET_CLOCK_SEED");
    println!("fleet clock seed: {seed} (FLEET_CLOCK_SEED={seed} repeats the receiver's choices)");

    let receiver = Receiver::start();
    let slow = Slow::serve(&receiver, seed);
    let url = receiver.url_for("/calls");
    let claims = Claims::connect(&db);

    let shares: Vec<Vec<String>> = (0..CLOCKS.len())
        .map(|p| {
            (0..PER_PROCESS)
                .map(|n| format!("clock-{p}-{n:03}"))
                .collect()
        })
        .collect();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut outputs = String::new();
    let unacked_lines = |share: &[String], acked: &BTreeMap<String, String>| {
        unacked_lines(share, acked, "Fleet Clock Test")
    };
    let mut runs: Vec<Option<Dialer>> = (0..CLOCKS.len())
        .map(|p| Some(start(&db, &lib, p, &url, unacked_lines(&shares[p], &acked))))
        .collect();

    // The kill, while a request of the dialer ahead is open at the receiver: it holds that
    // claim at least.
    std::thread::sleep(KILL_AFTER);
    for (p, run) in runs.iter_mut().enumerate() {
        if let Some(status) = run.as_mut().expect("running").exited() {
            let stderr = run.take().expect("running").wait(Instant::now()).stderr;
            panic!("dialer {p} exited on its own with {status} before its input ended:\n{stderr}");
        }
    }
    let receiver_port = receiver.addr().port();
    let ahead_pid = runs[KILLED].as_ref().expect("running").pid();
    let its_request_open = || {
        let ports = ports_to(ahead_pid, receiver_port);
        let now = Instant::now();
        let slow = slow.lock().unwrap_or_else(PoisonError::into_inner);
        slow.seen
            .iter()
            .any(|s| ports.contains(&s.port) && s.at <= now && now < s.answered())
    };
    let looked = Instant::now();
    while !its_request_open() {
        assert!(
            looked.elapsed() < KILL_WITHIN,
            "the dialer ahead had no request open at the receiver for {KILL_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let ended = runs[KILLED].take().expect("running").kill();
    let dead = ended.at;
    let held = claims.held();
    record(ended.acks, &mut acked);
    outputs.push_str(&ended.stderr);
    std::thread::sleep(ORPHAN_CHECK_AFTER.saturating_sub(dead.elapsed()));
    let orphaned = claims.still_held(&held);
    println!(
        "kill at {:.2} s: {} claims held in the outbox just after, {} of them the killed \
         dialer's",
        (dead - started).as_secs_f64(),
        held.len(),
        orphaned.len()
    );
    assert!(
        !orphaned.is_empty(),
        "the dialer ahead was killed with a request open, yet left no claim"
    );
    let kill = Kill { dead, orphaned };

    // Its claims are taken over by the live dialers; it is started again after that.
    let orphan_ids: HashSet<&str> = kill.orphaned.iter().map(|c| c.id.as_str()).collect();
    let taken_over = || {
        let requests = receiver.requests();
        orphan_ids.iter().all(|id| {
            requests
                .iter()
                .any(|r| r.at > kill.dead && r.header("webhook-id") == Some(*id))
        })
    };
    while !taken_over() && kill.dead.elapsed() < TAKEOVER_WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    runs[KILLED] = Some(start(
        &db,
        &lib,
        KILLED,
        &url,
        unacked_lines(&shares[KILLED], &acked),
    ));

    // The end of every input; each must then exit 0 once nothing is pending in the outbox.
    let within = FINISH_WITHIN + FEED_PAUSE * PER_PROCESS as u32;
    let failures = finish_all(&mut runs, within, &mut acked, &mut outputs);
    let stats = db.store().stats(&"dialer".into(), None).expect("stats");

    let seen = slow
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .seen
        .clone();
    let mut by_id: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_id.entry(s.id.as_str()).or_default().push(s);
    }

    // Requests that started while one of the same id was still open.
    let mut overlapping = Vec::new();
    for (id, attempts) in &by_id {
        for (n, later) in attempts.iter().enumerate().skip(1) {
            if attempts[..n]
                .iter()
                .any(|open| open.at <= later.at && later.at < open.answered())
            {
                overlapping.push(*id);
            }
        }
    }
    // Ids answered 2xx twice; those whose first 2xx was in flight at the kill are explained.
    let (mut twice, mut twice_at_kill) = (Vec::new(), 0);
    for (id, attempts) in &by_id {
        let ok: Vec<&&Seen> = attempts.iter().filter(|s| s.status == 200).collect();
        if ok.len() < 2 {
            continue;
        }
        if ok.len() == 2 && orphan_ids.contains(id) && ok[0].at < kill.dead {
            twice_at_kill += 1;
        } else {
            twice.push(*id);
        }
    }
    // Each retry after a 503: how long after the answer it started.
    let earliest = Duration::from_millis(RETRY_MS * 8 / 10);
    let latest = Duration::from_millis(RETRY_MS * 12 / 10);
    let mut retry_delays: Vec<f64> = Vec::new();
    let mut off_schedule = Vec::new();
    for (id, attempts) in &by_id {
        if orphan_ids.contains(id) {
            continue;
        }
        for pair in attempts.windows(2) {
            let (failed, retry) = (pair[0], pair[1]);
            if failed.status != 503 {
                continue;
            }
            let after = retry.at.saturating_duration_since(failed.answered());
            retry_delays.push(after.as_secs_f64());
            if after + EARLY_TOLERANCE < earliest || after > latest + RETRY_SLACK {
                off_schedule.push(format!("{id}: {:.2} s", after.as_secs_f64()));
            }
        }
    }
    let retried_503 = seen.iter().filter(|s| s.status == 503).count();
    // The killed dialer's claims: when they were attempted again, against their lease.
    let mut takeovers: Vec<f64> = Vec::new();
    let mut takeover_problems = Vec::new();
    for claim in &kill.orphaned {
        let again = by_id
            .get(claim.id.as_str())
            .and_then(|a| a.iter().find(|s| s.at > kill.dead).map(|s| s.at));
        match again {
            None => takeover_problems.push(format!("{} never attempted again", claim.id)),
            Some(at) => {
                takeovers.push((at - kill.dead).as_secs_f64());
                // Claimed before the kill: its lease ran out a lease after the kill at the
                // latest, whatever time the outbox holds for it.
                let lease_end = claim.lease_until.min(kill.dead + LEASE);
                if at + TOLERANCE < lease_end {
                    takeover_problems.push(format!(
                        "{} attempted again {:.2} s after the kill, before its lease ran out \
                         {:.2} s after it",
                        claim.id,
                        (at - kill.dead).as_secs_f64(),
                        lease_end.saturating_duration_since(kill.dead).as_secs_f64()
                    ));
                }
                if at > lease_end + TAKEOVER_SLACK {
                    takeover_problems.push(format!(
                        "{} attempted again {:.2} s after the kill, {:.2} s after its lease ran \
                         out",
                        claim.id,
                        (at - kill.dead).as_secs_f64(),
                        (at - lease_end).as_secs_f64()
                    ));
                }
            }
        }
    }
    let lease_left: Vec<f64> = kill
        .orphaned
        .iter()
        .map(|c| {
            c.lease_until
                .saturating_duration_since(kill.dead)
                .as_secs_f64()
        })
        .collect();
    let undelivered: Vec<&String> = acked
        .values()
        .filter(|id| {
            !by_id
                .get(id.as_str())
                .is_some_and(|a| a.iter().any(|s| s.status == 200))
        })
        .collect();

    let range = |v: &[f64]| match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.2}-{hi:.2} s"),
        _ => "none".to_owned(),
    };
    println!(
        "fleet clock: seed {seed}; {} requests for {} ids, {} acknowledged; {} requests started \
         while the same id was open; {} ids answered 2xx twice ({twice_at_kill} more in flight \
         at the kill); {retried_503} answered 503, retried {} after the answer ({} outside \
         {:.1}-{:.1} s + {:.1} s); {} claims left by the kill (their leases {} after it), \
         attempted again {} after it ({} problems); pending {}, failed {} at the end; {:.1} s",
        seen.len(),
        by_id.len(),
        acked.len(),
        overlapping.len(),
        twice.len(),
        range(&retry_delays),
        off_schedule.len(),
        earliest.as_secs_f64(),
        latest.as_secs_f64(),
        RETRY_SLACK.as_secs_f64(),
        kill.orphaned.len(),
        range(&lease_left),
        range(&takeovers),
        takeover_problems.len(),
        stats.pending,
        stats.failed,
        started.elapsed().as_secs_f64(),
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        overlapping.is_empty(),
        "requests started while the same id was open: {overlapping:?}"
    );
    assert!(twice.is_empty(), "answered 2xx twice: {twice:?}");
    assert!(
        retried_503 > 0,
        "no first attempt was answered 503: no retry to time"
    );
    assert!(
        off_schedule.is_empty(),
        "retries off their schedule: {off_schedule:?}"
    );
    assert!(takeover_problems.is_empty(), "{takeover_problems:?}");
    assert_eq!(
        acked.len(),
        CLOCKS.len() * PER_PROCESS,
        "every line is acknowledged in the end"
    );
    assert!(
        undelivered.is_empty(),
        "acknowledged, never answered 2xx: {undelivered:?}"
    );
    assert_eq!((stats.pending, stats.failed), (0, 0), "{stats:?}");
    assert!(!outputs.contains(PASSWORD), "the password was printed");
}
