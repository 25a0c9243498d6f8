//! What the database said when a store operation failed, kept whole for the caller (the
//! driver's words, the server's SQLSTATE, message and detail), and what running the
//! operation again may do about it.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{HookError, PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::error::Error;

/// How a failure may pass if the operation runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The connection broke or could not be made (a restart, a failover, an administrator's
    /// `pg_terminate_backend`, the server starting up or shutting down): on a fresh
    /// connection, after a pause, it may work.
    Broken,
    /// The server broke the transaction off as a deadlock victim (40P01) or a serialization
    /// failure (40001): running it again at once may work.
    Transient,
    /// The server cancelled a statement that ran past the session's `statement_timeout`.
    StatementTimeout,
    /// Anything else: running it again would meet it again.
    Other,
}

/// A database failure as the driver and the server put it, one line: the server's severity,
/// SQLSTATE, message, detail and hint, or the driver's words and their causes (an I/O error's
/// text). The driver's own error type stays out of the chain (and of our API): its text is
/// copied here, its cause included, so that nothing is lost and nothing is said twice.
#[derive(Debug)]
pub(super) struct DbFailure {
    text: String,
    kind: Kind,
}

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DbFailure {}

impl DbFailure {
    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// The pool's failure to hand out a connection: the driver's, or its own timeouts.
    pub(super) fn of_pool(e: PoolError) -> DbFailure {
        match e {
            PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => e.into(),
            PoolError::Timeout(TimeoutType::Create) => DbFailure {
                text: "no new connection was made within the connect timeout".into(),
                kind: Kind::Broken,
            },
            PoolError::Timeout(TimeoutType::Recycle) => DbFailure {
                text: "checking a pooled connection timed out".into(),
                kind: Kind::Broken,
            },
            other => DbFailure {
                text: other.to_string(),
                kind: Kind::Other,
            },
        }
    }
}

impl From<tokio_postgres::Error> for DbFailure {
    fn from(e: tokio_postgres::Error) -> DbFailure {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let mut text = format!("{} {}: {}", db.severity(), code.code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" (detail: {detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" (hint: {hint})"));
            }
            return DbFailure {
                text,
                kind: kind_of_code(code, db.message()),
            };
        }
        // The driver's words, then each cause (an I/O error: "connection refused").
        let mut text = e.to_string();
        let mut io = false;
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            io |= c.is::<std::io::Error>();
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        let timed_out = text.starts_with("timeout waiting for server");
        DbFailure {
            text,
            kind: if e.is_closed() || io || timed_out {
                Kind::Broken
            } else {
                Kind::Other
            },
        }
    }
}

/// What a server error's SQLSTATE says about running the work again.
fn kind_of_code(code: &SqlState, message: &str) -> Kind {
    if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE {
        Kind::Transient
    } else if code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
    {
        // Class 08 (connection exception), 57P01 (terminating connection due to administrator
        // command), 57P02 (crash shutdown), 57P03 (the database system is starting up or
        // shutting down).
        Kind::Broken
    } else if *code == SqlState::QUERY_CANCELED && message.contains("statement timeout") {
        Kind::StatementTimeout
    } else {
        Kind::Other
    }
}

/// `Fn(tokio_postgres::Error) -> Error` for `map_err`: an [`Error::Store`] saying `what` the
/// store was doing, with the database's words as its cause.
pub(super) fn failed(what: impl fmt::Display) -> impl Fn(tokio_postgres::Error) -> Error {
    let what = what.to_string();
    move |e| Error::store(&what, DbFailure::from(e))
}

/// The [`Kind`] of the database failure in `e`'s chain, if it holds one.
pub(super) fn kind(e: &Error) -> Kind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(db) = c.downcast_ref::<DbFailure>() {
            return db.kind();
        }
        if let Some(shared) = c.downcast_ref::<Shared>() {
            return kind(&shared.0);
        }
        cause = c.source();
    }
    Kind::Other
}

/// One error answered to several callers (each outcome of a batch, each submit of a group):
/// each gets the same words and the same causes.
#[derive(Debug, Clone)]
pub(super) struct Shared(pub(super) Arc<Error>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Shared {
    /// The error for one more caller: a timeout stays a timeout; anything else is an
    /// [`Error::Store`] saying `what`, caused by the shared error.
    pub(super) fn again(&self, what: &str) -> Error {
        match &*self.0 {
            Error::StoreTimeout { bound, limit } => Error::StoreTimeout {
                bound,
                limit: *limit,
            },
            _ => Error::store(what, self.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_say_what_running_again_may_do() {
        let cases = [
            ("40P01", "deadlock detected", Kind::Transient),
            ("40001", "could not serialize access", Kind::Transient),
            (
                "57P01",
                "terminating connection due to administrator command",
                Kind::Broken,
            ),
            (
                "57P02",
                "terminating connection because of crash",
                Kind::Broken,
            ),
            (
                "57P03",
                "the database system is shutting down",
                Kind::Broken,
            ),
            ("57P03", "the database system is starting up", Kind::Broken),
            ("08006", "connection failure", Kind::Broken),
            ("08001", "could not connect", Kind::Broken),
            (
                "57014",
                "canceling statement due to statement timeout",
                Kind::StatementTimeout,
            ),
            (
                "57014",
                "canceling statement due to user request",
                Kind::Other,
            ),
            ("42P01", "relation does not exist", Kind::Other),
            ("23505", "duplicate key value", Kind::Other),
        ];
        for (code, message, kind) in cases {
            assert_eq!(
                kind_of_code(&SqlState::from_code(code), message),
                kind,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn the_kind_is_found_through_the_chain_and_a_shared_error() {
        let broken = DbFailure {
            text: "FATAL 57P01: terminating connection due to administrator command".into(),
            kind: Kind::Broken,
        };
        let e = Error::store("claiming deliveries", broken);
        assert_eq!(kind(&e), Kind::Broken);
        let wrapped = Error::store("the transaction failed", Shared(Arc::new(e)));
        assert_eq!(kind(&wrapped), Kind::Broken);
        let text = crate::error::error_chain(&wrapped);
        assert!(text.contains("57P01"), "{text}");
        assert!(text.contains("administrator command"), "{text}");
        assert_eq!(
            kind(&Error::store("x", std::io::Error::other("y"))),
            Kind::Other
        );
    }
}
