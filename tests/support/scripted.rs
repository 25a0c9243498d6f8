//! A receiver in process: a [`ScriptedReceiver`] answers as a rule says, as a blocking or an
//! async dispatcher, and records what it was sent. No network. `harness.rs` builds a dialer in
//! miniature around it.
//!
//! Shared with the unit tests of `src/delivery`, which include this file with `#[path]` (beside
//! `events.rs` and `harness.rs`): the crate is `under_test` here, `crate` there and
//! `call_result_webhook` in `tests/`.
#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};

use super::events::{PATIENCE, lock};
use super::under_test::{
    BlockingDispatcher, CallResult, DeliveryId, Dispatcher, Error, Submitted, Webhooks,
    dispatch::{ReceiverResponse, TransportError, TransportErrorKind},
};

/// What a request carried, as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) url: String,
    pub(crate) id: String,
    pub(crate) body: Bytes,
    pub(crate) authorization: Option<String>,
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Status(u16),
    RetryAfter(u16, String),
    Transport(TransportErrorKind),
    /// Refused by the address policy (`crm.example` at 10.1.2.3, a private address).
    Refused,
    /// Never answers (until released, for the blocking dispatcher).
    Hang,
}

/// Answers a request, given what it carried and how many requests came so far (this one
/// included).
type Rule = Box<dyn FnMut(&Seen, usize) -> Answer + Send>;

/// A receiver in process, usable as a blocking or an async dispatcher: it records every
/// request and answers as its rule says.
pub(crate) struct ScriptedReceiver {
    seen: Mutex<Vec<Seen>>,
    arrived: Condvar,
    rule: Mutex<Rule>,
    released: Mutex<bool>,
    release: Condvar,
}

impl ScriptedReceiver {
    pub(crate) fn new(rule: impl FnMut(&Seen, usize) -> Answer + Send + 'static) -> Arc<Self> {
        Arc::new(ScriptedReceiver {
            seen: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            rule: Mutex::new(Box::new(rule)),
            released: Mutex::new(false),
            release: Condvar::new(),
        })
    }

    /// Answers `code` to everything.
    pub(crate) fn always(code: u16) -> Arc<Self> {
        ScriptedReceiver::new(move |_, _| Answer::Status(code))
    }

    pub(crate) fn set_rule(&self, rule: impl FnMut(&Seen, usize) -> Answer + Send + 'static) {
        *lock(&self.rule) = Box::new(rule);
    }

    fn answer(&self, request: &Request<Bytes>) -> Answer {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let seen = Seen {
            url: request.uri().to_string(),
            id: header("webhook-id").unwrap(),
            body: request.body().clone(),
            authorization: header("authorization"),
        };
        let n = {
            let mut all = lock(&self.seen);
            all.push(seen.clone());
            all.len()
        };
        self.arrived.notify_all();
        (lock(&self.rule))(&seen, n)
    }

    /// Every request so far, in order of arrival.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// Waits until at least `n` requests arrived.
    pub(crate) fn wait_seen(&self, n: usize) -> Vec<Seen> {
        let all = lock(&self.seen);
        let (all, timeout) = self
            .arrived
            .wait_timeout_while(all, PATIENCE, |all| all.len() < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "waited for {n} requests, got {}",
            all.len()
        );
        all.clone()
    }

    /// Lets every hung blocking attempt end (with a timeout).
    pub(crate) fn release_hung(&self) {
        *lock(&self.released) = true;
        self.release.notify_all();
    }
}

fn respond(answer: Answer) -> Result<ReceiverResponse, TransportError> {
    match answer {
        Answer::Status(code) => Ok(ReceiverResponse::new(
            StatusCode::from_u16(code).unwrap(),
            HeaderMap::new(),
            Bytes::new(),
        )),
        Answer::RetryAfter(code, value) => {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", HeaderValue::from_str(&value).unwrap());
            Ok(ReceiverResponse::new(
                StatusCode::from_u16(code).unwrap(),
                headers,
                Bytes::new(),
            ))
        }
        Answer::Transport(kind) => Err(TransportError::from_kind(kind)),
        Answer::Refused => Err(TransportError::from(Error::AddressRefused {
            host: "crm.example".into(),
            addr: "10.1.2.3".parse().unwrap(),
            rule: "private (RFC 1918)",
        })),
        Answer::Hang => unreachable!("handled by the dispatcher"),
    }
}

impl BlockingDispatcher for ScriptedReceiver {
    fn dispatch_blocking(
        &self,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError> {
        match self.answer(&request) {
            Answer::Hang => {
                let released = lock(&self.released);
                let _unused = self.release.wait_while(released, |r| !*r).unwrap();
                Err(TransportError::from_kind(TransportErrorKind::Timeout))
            }
            other => respond(other),
        }
    }
}

#[async_trait::async_trait]
impl Dispatcher for ScriptedReceiver {
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
        match self.answer(&request) {
            Answer::Hang => std::future::pending().await,
            other => respond(other),
        }
    }
}

/// Submits `call` for `account` and campaign `winter`; panics unless it is accepted.
#[track_caller]
pub(crate) fn submit_accepted(webhooks: &Webhooks, account: &str, call: CallResult) -> DeliveryId {
    match webhooks
        .submit_blocking(&account.into(), &"winter".into(), call)
        .unwrap()
    {
        Submitted::Accepted(id) => id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// A tokio runtime of two threads, for a worker on tokio.
#[cfg(feature = "tokio")]
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
