//! The LISTEN connection: turns the store's notifications into [`Notice`]s, and reconnects
//! with backoff when the connection breaks (the polling fallback covers the gap).

use std::future::poll_fn;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use crate::store::{Notice, NoticeSink};

use super::sql::{DUE_PAYLOAD, SETTINGS_PAYLOAD, quote_ident};
use super::tls::MakeRustls;

/// The first wait before reconnecting; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Listens on the schema's channel for as long as the store's runtime runs. `ready` is told
/// once the first `LISTEN` is in place.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    schema: String,
    sink: NoticeSink,
    ready: oneshot::Sender<()>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut ready = Some(ready);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let channel = schema.clone();
                let forward = sink.clone();
                // The connection must be polled for the LISTEN below to be answered, and for
                // notifications to arrive; it ends when the connection breaks.
                let polled = tokio::spawn(async move {
                    loop {
                        match poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == channel => {
                                match n.payload() {
                                    DUE_PAYLOAD => forward(Notice::DueWork),
                                    SETTINGS_PAYLOAD => forward(Notice::SettingsChanged),
                                    _ => {}
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Some(e),
                            None => return None,
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {}", quote_ident(&schema)))
                    .await
                {
                    Ok(()) => {
                        // Whatever was announced before this LISTEN (while the connection was
                        // down, or between the caller's first read and now) is read now.
                        sink(Notice::DueWork);
                        sink(Notice::SettingsChanged);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        backoff = FIRST_BACKOFF;
                        match polled.await {
                            Ok(Some(e)) => {
                                tracing::warn!(error = %e, "outbox: the LISTEN connection broke; reconnecting");
                            }
                            _ => {
                                tracing::warn!("outbox: the LISTEN connection closed; reconnecting")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: LISTEN failed; retrying");
                        polled.abort();
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox: connecting to listen for notices failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
