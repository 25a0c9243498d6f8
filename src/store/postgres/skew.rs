//! Measuring the skew between this process's clock and the database server's (see `clock`):
//! the best of a few samples at open, one more every [`FOLLOW_EVERY`].

use std::sync::Arc;

use jiff::Timestamp;

use crate::error::Result;
use crate::store::from_nanos;

use super::clock::{FOLLOW_EVERY, Sample, best};
use super::failure::failed;
use super::ops::{Ctx, retrying};
use super::sql::{READ_CLOCK, get};

/// Samples taken at open; the one with the shortest round trip is kept.
const OPEN_SAMPLES: usize = 5;

/// Reads the server's clock once through a pooled connection.
async fn sample(ctx: &Ctx) -> Result<Sample> {
    let reading_failed = failed("reading the database's clock");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(READ_CLOCK)
        .await
        .map_err(&reading_failed)?;
    let (before, started) = (Timestamp::now(), std::time::Instant::now());
    let row = client
        .query_one(&stmt, &[])
        .await
        .map_err(&reading_failed)?;
    let round_trip = started.elapsed();
    Ok(Sample {
        before,
        round_trip,
        server: from_nanos(get(&row, 0)?)?,
    })
}

/// Measures the skew at open: the best of [`OPEN_SAMPLES`] (each tried again on a fresh
/// connection as any store call is, see [`retrying`]).
///
/// # Errors
///
/// [`Error::Store`](crate::Error::Store) when the server's clock cannot be read.
pub(super) async fn measure(ctx: &Ctx) -> Result<()> {
    let mut samples = Vec::with_capacity(OPEN_SAMPLES);
    for _ in 0..OPEN_SAMPLES {
        samples.push(retrying(ctx, || sample(ctx)).await?);
    }
    if let Some(best) = best(&samples) {
        ctx.clock.consider(best);
    }
    Ok(())
}

/// Measures the skew again every [`FOLLOW_EVERY`], for as long as the store's runtime runs.
pub(super) async fn follow(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: measured at open already.
    every.tick().await;
    loop {
        every.tick().await;
        // A server that does not answer holds a pooled connection no longer than a period.
        match tokio::time::timeout(FOLLOW_EVERY, sample(&ctx)).await {
            Ok(Ok(sample)) => {
                ctx.clock.consider(&sample);
            }
            // The skew kept stands until the next sample.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "outbox: reading the database's clock failed");
            }
            Err(_) => tracing::debug!("outbox: the database's clock did not answer in time"),
        }
    }
}
