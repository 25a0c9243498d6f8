//! What the tests that drive the `dialer` example share: where its binary is, a call result as
//! a line of its input, and a small seedable random source for kill moments.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

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
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let dialer = profile_dir
        .join("examples")
        .join(format!("dialer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        dialer.is_file(),
        "the dialer example is not built at {}: run `cargo test` (which builds the examples), \
         or `cargo build --example dialer` before `cargo test --test crash`",
        dialer.display()
    );
    dialer
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
