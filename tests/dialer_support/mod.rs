//! What the tests that drive the `dialer` example share: where its binary is, a run of it
//! ([`Dialer`]), a call result as a line of its input, reading its acknowledgements, a flaky
//! receiver ([`Flaky`]), and a small seedable random source for kill moments.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::support::{Receiver, Recorded, Reply};

/// SplitMix64: a small, seedable random source, so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed in the environment variable `var`, or one from the clock: printed by the test, so
/// a failure can be replayed.
pub fn seed(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(seed) => seed
            .parse()
            .unwrap_or_else(|_| panic!("{var} is a whole number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// The `dialer` example, built by `cargo test` beside this test's binary:
/// `target/<profile>/deps/crash-<hash>` -> `target/<profile>/examples/dialer`.
pub fn dialer_binary() -> PathBuf {
    example_binary("dialer")
}

/// The example `name`, built by `cargo test` beside this test's binary.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the {name} example is not built at {}: run `cargo test` (which builds the examples), \
         or `cargo build --example {name}` before `cargo test --test <this test>`",
        binary.display()
    );
    binary
}

/// The arguments of a dialer in a fleet test: the PostgreSQL outbox at `database_url` in
/// `schema`, delivering to `url` (plain HTTP on loopback allowed) as user `dialer` with
/// `password`, the attempt time limit and the retry delays given.
pub fn fleet_args(
    database_url: &str,
    schema: &str,
    url: &str,
    password: &str,
    timeout_ms: u64,
    retry_delays_ms: &str,
) -> Vec<String> {
    let mut args = ["--database-url", database_url, "--database-schema", schema]
        .map(str::to_owned)
        .to_vec();
    args.extend(delivering(url, password, Some(timeout_ms), retry_delays_ms));
    args
}

/// The arguments of a dialer on the SQLite outbox at `store`, delivering to `url` (plain HTTP
/// on loopback allowed) as user `dialer` with `password` and the retry delays given.
pub fn store_args(store: &Path, url: &str, password: &str, retry_delays_ms: &str) -> Vec<String> {
    let store = store.to_str().expect("the outbox's path is UTF-8");
    let mut args = ["--store", store].map(str::to_owned).to_vec();
    args.extend(delivering(url, password, None, retry_delays_ms));
    args
}

/// Where and how a dialer delivers: to `url` as user `dialer` with `password`, the attempt
/// time limit when given, the retry delays, and plain HTTP on loopback allowed.
fn delivering(
    url: &str,
    password: &str,
    timeout_ms: Option<u64>,
    retry_delays_ms: &str,
) -> Vec<String> {
    let mut args = ["--url", url, "--username", "dialer", "--password", password]
        .map(str::to_owned)
        .to_vec();
    if let Some(ms) = timeout_ms {
        args.extend(["--timeout-ms".to_owned(), ms.to_string()]);
    }
    args.extend(
        [
            "--retry-delays-ms",
            retry_delays_ms,
            "--allow-http",
            "--allow-private",
        ]
        .map(str::to_owned),
    );
    args
}

/// One call result as a JSON line of the dialer's input, in the page's formats.
pub fn line(campaign: &str, reference: &str) -> String {
    let call = serde_json::json!({
        "CampaignName": campaign,
        "LogDateTime": "2019-06-19T16:11:07",
        "CallStart": "2019-06-20 01:01:00",
        "CallEnd": "2019-06-20 01:03:00",
        "PhoneCalled": "0731051xxx",
        "Reference": reference,
        "Result": "Connected",
        "ResultNotes": "Paid in full.\nCall back at 3 pm ✓",
        "WrapUpByName": "agent@pinetree.net.au",
        "WrapUpReasonName": "Payment Taken",
    });
    format!("{call}\n")
}

/// The lines of `share` (References) not acknowledged yet (in `acked`, Reference ->
/// webhook-id), as call results of `campaign`: what a dialer started again is fed.
pub fn unacked_lines(
    share: &[String],
    acked: &BTreeMap<String, String>,
    campaign: &str,
) -> Vec<String> {
    share
        .iter()
        .filter(|r| !acked.contains_key(*r))
        .map(|r| line(campaign, r))
        .collect()
}

/// Reads `accepted <webhook-id> <Reference>` lines; a line cut short by a kill is not an
/// acknowledgement.
pub fn read_acks(mut stdout: impl BufRead, acks: &Mutex<Vec<(String, String)>>) {
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
        }
        let text = line.trim_end_matches('\n');
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("accepted"), Some(id), Some(reference)) => acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id.to_owned(), reference.to_owned())),
            _ => panic!("unexpected line on the dialer's stdout: {text:?}"),
        }
    }
}

/// Adds a run's acknowledgements to `acked` (Reference -> webhook-id).
pub fn record(acks: Vec<(String, String)>, acked: &mut BTreeMap<String, String>) {
    for (id, reference) in acks {
        let previous = acked.insert(reference.clone(), id);
        assert!(previous.is_none(), "{reference} acknowledged twice");
    }
}

/// Ends the input of every run and waits for each to exit on its own by `within` after that
/// (each killed after it), adding its acknowledgements to `acked` and its stderr to
/// `outputs`. Answers what went wrong: a run that exited other than 0 or did not exit in time.
pub fn finish_all(
    runs: &mut [Option<Dialer>],
    within: Duration,
    acked: &mut BTreeMap<String, String>,
    outputs: &mut String,
) -> Vec<String> {
    for run in runs.iter_mut().flatten() {
        run.end_input();
    }
    let deadline = Instant::now() + within;
    let mut failures = Vec::new();
    for (p, run) in runs.iter_mut().enumerate() {
        let Some(run) = run.take() else { continue };
        let Ended {
            status,
            acks,
            stderr,
            ..
        } = run.wait(deadline);
        record(acks, acked);
        outputs.push_str(&stderr);
        match status {
            Some(status) if status.success() => {}
            Some(status) => failures.push(format!("dialer {p} exited with {status}:\n{stderr}")),
            None => failures.push(format!(
                "dialer {p} did not exit within {within:?} of the end of its input (rows stuck \
                 in the outbox?):\n{stderr}"
            )),
        }
    }
    failures
}

/// One run of the dialer example: its stdin fed from a thread (each chunk, then `pause`),
/// closed after the input if `close_stdin`, held open otherwise until
/// [`end_input`](Dialer::end_input); its `accepted` lines and its stderr read by other threads.
/// Dropped before it ended, it is killed: a test that fails part-way leaves no dialer behind.
pub struct Dialer {
    child: Child,
    hold_stdin: Option<mpsc::Sender<()>>,
    feeder: Option<JoinHandle<()>>,
    acks: Arc<Mutex<Vec<(String, String)>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<(String, String)>>,
    reaped: bool,
}

/// How a run ended: its exit status (`None` when it was still running at the deadline and
/// killed), when it was reaped, what it acknowledged and what it said on stderr.
pub struct Ended {
    pub status: Option<ExitStatus>,
    pub at: Instant,
    pub acks: Vec<(String, String)>,
    pub stderr: String,
    /// The same, each line with the wall-clock time it was read at (UTC `HH:MM:SS.mmm`).
    pub stderr_timed: String,
}

impl Dialer {
    pub fn start<A: AsRef<OsStr>>(
        args: impl IntoIterator<Item = A>,
        input: Vec<Vec<u8>>,
        pause: Duration,
        close_stdin: bool,
    ) -> Dialer {
        Dialer::start_env(args, Vec::<(&str, &str)>::new(), input, pause, close_stdin)
    }

    /// [`Dialer::start`] with these variables added to its environment.
    pub fn start_env<A: AsRef<OsStr>, K: AsRef<OsStr>, V: AsRef<OsStr>>(
        args: impl IntoIterator<Item = A>,
        env: impl IntoIterator<Item = (K, V)>,
        input: Vec<Vec<u8>>,
        pause: Duration,
        close_stdin: bool,
    ) -> Dialer {
        let mut child = Command::new(dialer_binary())
            .args(args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dialer");
        let mut stdin = child.stdin.take().expect("stdin");
        let (hold_stdin, released) = mpsc::channel::<()>();
        let feeder = std::thread::spawn(move || {
            for chunk in &input {
                // Fails once the dialer is killed: the rest is fed to the next run.
                if stdin.write_all(chunk).is_err() {
                    return;
                }
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            let _ = stdin.flush();
            if !close_stdin {
                // Held open until released (or the run ended): then the input ends.
                let _ = released.recv();
            }
        });
        let acks = Arc::new(Mutex::new(Vec::new()));
        let seen = acks.clone();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let stdout = std::thread::spawn(move || read_acks(out, &seen));
        let err = child.stderr.take().expect("stderr");
        let pid = child.id();
        note(pid, "started");
        let stderr = std::thread::spawn(move || {
            let mut log = stderr_log();
            let (mut text, mut timed) = (String::new(), String::new());
            let mut lines = BufReader::new(err);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let said = String::from_utf8_lossy(&line);
                let at = wall_clock();
                if let Some(log) = log.as_mut() {
                    let _ = write!(log, "{at} pid {pid}: {said}");
                }
                text.push_str(&said);
                timed.push_str(&format!("{at} {said}"));
                line.clear();
            }
            (text, timed)
        });
        Dialer {
            child,
            hold_stdin: Some(hold_stdin),
            feeder: Some(feeder),
            acks,
            stdout: Some(stdout),
            stderr: Some(stderr),
            reaped: false,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many results it has acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the dialer")
    }

    /// Sends a signal (`TERM`, `INT`, ...) with coreutils' `kill`.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Ends its input (after what is still to be fed).
    pub fn end_input(&mut self) {
        drop(self.hold_stdin.take());
    }

    /// SIGKILL, then what it acknowledged and said.
    pub fn kill(mut self) -> Ended {
        self.child.kill().expect("SIGKILL the dialer");
        note(self.child.id(), "killed with SIGKILL");
        let status = self.child.wait().expect("reap the dialer");
        self.finish(Some(status))
    }

    /// Waits for it to exit on its own until `deadline`; kills it after that (`status: None`).
    pub fn wait(mut self, deadline: Instant) -> Ended {
        let status = loop {
            if let Some(status) = self.exited() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.finish(status)
    }

    fn finish(&mut self, status: Option<ExitStatus>) -> Ended {
        self.reaped = true;
        let at = Instant::now();
        drop(self.hold_stdin.take());
        for thread in [self.feeder.take(), self.stdout.take()]
            .into_iter()
            .flatten()
        {
            thread.join().expect("a reader thread panicked");
        }
        let (stderr, stderr_timed) = self
            .stderr
            .take()
            .map(|t| t.join().expect("the stderr reader panicked"))
            .unwrap_or_default();
        let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(PoisonError::into_inner));
        Ended {
            status,
            at,
            acks,
            stderr,
            stderr_timed,
        }
    }
}

impl Drop for Dialer {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where every dialer's stderr is also written, line by line as it comes, each line with the
/// wall-clock time and the dialer's pid: the file named by `CALL_RESULT_WEBHOOK_DIALER_LOG`
/// (appended to), so that a flaky run of a test that drives dialers can be read afterwards,
/// in order, across its processes. Unset: nothing is written.
fn stderr_log() -> Option<std::fs::File> {
    let path = std::env::var_os("CALL_RESULT_WEBHOOK_DIALER_LOG")?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| {
            eprintln!(
                "cannot open the dialer log {}: {e}",
                Path::new(&path).display()
            )
        })
        .ok()
}

/// Writes what the test did to a dialer in the dialer log, if there is one.
fn note(pid: u32, what: &str) {
    if let Some(mut log) = stderr_log() {
        let _ = writeln!(log, "{} pid {pid}: (test) {what}", wall_clock());
    }
}

/// Now, as UTC `HH:MM:SS.mmm`.
pub fn wall_clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// How many attempts of one delivery [`Flaky`] fails at most before it answers 200.
pub const FAILURES_PER_DELIVERY: u32 = 3;

/// A receiver's choices for the crash tests: fail some attempts of each delivery (503, reset
/// before the answer, reset part-way through it), answer the rest 200, after a random delay
/// below `max_delay_ms` (resets too if `delay_resets`). Keeps, per `webhook-id`, when each
/// request it answered 200 arrived.
pub struct Flaky {
    rng: Rng,
    failures: HashMap<String, u32>,
    max_delay_ms: u64,
    delay_resets: bool,
    pub answered_2xx: HashMap<String, Vec<Instant>>,
    /// The sender's port of every request and when its answer is due, for
    /// [`Flaky::awaiting_answer`].
    due: Vec<(u16, Instant)>,
}

impl Flaky {
    /// Makes `receiver` answer as a `Flaky` seeded with `seed`; the same `Flaky` is returned
    /// to read what it answered.
    pub fn serve(
        receiver: &Receiver,
        seed: u64,
        max_delay_ms: u64,
        delay_resets: bool,
    ) -> Arc<Mutex<Flaky>> {
        let flaky = Arc::new(Mutex::new(Flaky {
            rng: Rng(seed),
            failures: HashMap::new(),
            max_delay_ms,
            delay_resets,
            answered_2xx: HashMap::new(),
            due: Vec::new(),
        }));
        let choose = flaky.clone();
        receiver.respond_with(move |request| {
            choose
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reply(request)
        });
        flaky
    }

    /// The senders' ports of the requests whose answer is still at least `margin` away: their
    /// senders hold those deliveries claimed until then.
    pub fn awaiting_answer(&self, margin: Duration) -> Vec<u16> {
        let by = Instant::now() + margin;
        self.due
            .iter()
            .filter(|(_, at)| *at > by)
            .map(|(port, _)| *port)
            .collect()
    }

    fn reply(&mut self, request: &Recorded) -> Reply {
        let id = request.header("webhook-id").unwrap_or_default().to_owned();
        let failures = self.failures.entry(id.clone()).or_default();
        let roll = self.rng.below(100);
        let delay = Duration::from_millis(self.rng.below(self.max_delay_ms));
        let now = Instant::now();
        self.due.retain(|(_, at)| *at > now);
        self.due.push((request.peer.port(), now + delay));
        if *failures < FAILURES_PER_DELIVERY && roll < 45 {
            *failures += 1;
            let reset_delay = if self.delay_resets {
                delay
            } else {
                Duration::ZERO
            };
            return match roll % 3 {
                0 => Reply::status(503).delay(delay),
                1 => Reply::reset().delay(reset_delay),
                _ => Reply::status(503)
                    .body("partial")
                    .then_reset()
                    .delay(reset_delay),
            };
        }
        self.answered_2xx.entry(id).or_default().push(request.at);
        Reply::ok().delay(delay)
    }
}

/// The inodes of this machine's TCP sockets (IPv4) whose own end is one of `ports`, from
/// `/proc/net/tcp`, as `/proc/<pid>/fd` names them (`socket:[inode]`). Linux only; elsewhere
/// (no `/proc`) none.
pub fn tcp_sockets_on(ports: &[u16]) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    // Lines: "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode = *fields.get(9)?;
            (ports.contains(&local_port) && inode != "0").then(|| format!("socket:[{inode}]"))
        })
        .collect()
}

/// Whether process `pid` holds one of `sockets` (as [`tcp_sockets_on`] names them).
pub fn holds_any(pid: u32, sockets: &[String]) -> bool {
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}
