//! A tokio dialer that stops gracefully on Ctrl-C or SIGTERM.
//!
//! Each line of stdin is the reference of one finished call, submitted for account `acme`,
//! campaign `winter`, whose webhook posts to URL. At the end of its input it waits (at most a
//! minute) until nothing is pending. On Ctrl-C or SIGTERM it stops reading, gives the attempts
//! in flight up to 10 s, and exits 0: an attempt not finished by then stays pending in the
//! outbox and is sent, with the same `webhook-id`, by the next run.
//!
//! ```sh
//! cargo run --example tokio_shutdown -- outbox.sqlite https://crm.example/hook < references.txt
//! ```
//!
//! `--allow-local` accepts an `http` URL on this machine or network, to try it against a
//! receiver of your own.

use std::time::Duration;

use call_result_webhook::{
    CallResult, HyperDispatcher, PreferencesUpdate, Principal, SqliteStore, Submitted, UrlPolicy,
    Webhooks,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [outbox, url, options @ ..] = args.as_slice() else {
        return Err("usage: tokio_shutdown OUTBOX URL [--allow-local] < references".into());
    };
    let mut policy = UrlPolicy::new();
    if options.iter().any(|o| o == "--allow-local") {
        policy = policy.allow_http(true).allow_private();
    }
    let webhooks = Webhooks::builder()
        .store(SqliteStore::open(outbox)?)
        .policy(policy)
        .build()?;
    let (admin, acme, winter) = (
        Principal::administrator("ops"),
        "acme".into(),
        "winter".into(),
    );
    let on = PreferencesUpdate::new().enabled(true).url(url);
    webhooks.update_preferences(&admin, &acme, on).await?;
    webhooks
        .set_campaign_webhook(&admin, &acme, &winter, true)
        .await?;
    let dispatcher = HyperDispatcher::builder().build();
    let worker = webhooks.start_tokio(dispatcher, &tokio::runtime::Handle::current())?;

    // Stdin is read on a thread of its own: tokio's stdin cannot cancel a blocked read, which
    // would hold the runtime's shutdown until the next line.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });

    let stop = stop_signal();
    tokio::pin!(stop);
    let stopped_by = loop {
        tokio::select! {
            by = &mut stop => break Some(by),
            line = lines.recv() => {
                let Some(reference) = line else { break None };
                let call = CallResult::builder().reference(reference.trim()).build();
                if let Submitted::Accepted(id) = webhooks.submit(&acme, &winter, call).await? {
                    println!("accepted {id} {}", reference.trim());
                }
            }
        }
    };
    if stopped_by.is_none() {
        tokio::select! {
            idle = worker.wait_idle(Duration::from_secs(60)) => { idle?; }
            by = &mut stop => eprintln!("{by} while waiting for delivery"),
        }
    }
    let report = worker.shutdown(Duration::from_secs(10)).await?;
    eprintln!(
        "stopped ({}): {} attempt(s) finished, {} released to the next run",
        stopped_by.unwrap_or("end of input"),
        report.finished,
        report.released
    );
    Ok(())
}

/// Resolves on the first Ctrl-C (SIGINT) or, on Unix, SIGTERM, naming it.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => term.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate => "SIGTERM",
    }
}
