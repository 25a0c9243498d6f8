//! A durable outbox shared by a fleet of processes on one PostgreSQL database.
//!
//! (Being written: see the issue "Scale out".)

/// A durable outbox on PostgreSQL, shared by any number of processes.
#[derive(Debug)]
pub struct PostgresStore {
    _private: (),
}

/// Builds a [`PostgresStore`].
#[derive(Debug)]
pub struct PostgresStoreBuilder {
    _private: (),
}
