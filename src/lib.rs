//! Sends the result of every call to the URL a customer account chooses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod dispatch;
mod error;
mod policy;

pub use dispatch::{
    AttemptTimeout, BlockingDispatcher, Dispatcher, Response, TransportError, TransportErrorKind,
};
pub use error::{BoxError, Error, Result};
pub use policy::UrlPolicy;
