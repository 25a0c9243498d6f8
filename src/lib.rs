//! Sends the result of every call to the URL a customer account chooses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod dispatch;
mod error;
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
mod signing;

pub use dispatch::{
    AttemptTimeout, BlockingDispatcher, Dispatcher, Response, TransportError, TransportErrorKind,
};
pub use error::{BoxError, Error, Result};
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
pub use signing::{
    DEFAULT_SIGNATURE_TOLERANCE, SigningSecret, sign, sign_headers, verify, verify_now,
};
