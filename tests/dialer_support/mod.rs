//! What the tests that drive the `dialer` example share: where its binary is, a call result as
//! a line of its input, and a small seedable random source for kill moments.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
