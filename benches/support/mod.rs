//! Loopback receivers for the load bench: the customers' servers, played by hyper on 127.0.0.1.
//!
//! One tokio runtime of its own (on threads of its own) serves every listener. A healthy
//! listener reads each request's body and answers `204 No Content` at once; a hanging one
//! accepts connections, reads the request and never answers. Each listener counts the requests
//! it has read, so a bench can check that what it was told was delivered did arrive.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Reads the body, answers `204` at once.
    Answer,
    /// Reads the request and never answers, holding the connection open.
    Hang,
}

/// A set of listeners on 127.0.0.1, each on a port the system chose.
pub struct Receivers {
    addrs: Vec<SocketAddr>,
    counts: Vec<Arc<AtomicU64>>,
    connections: Arc<AtomicU64>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Receivers {
    /// Starts one listener per entry of `behaviours`, served by a runtime with `threads`
    /// worker threads.
    pub fn start(behaviours: &[Behaviour], threads: usize) -> Receivers {
        let mut listeners = Vec::with_capacity(behaviours.len());
        let mut addrs = Vec::with_capacity(behaviours.len());
        let mut counts = Vec::with_capacity(behaviours.len());
        for _ in behaviours {
            let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.set_nonblocking(true).expect("set_nonblocking");
            addrs.push(listener.local_addr().expect("local_addr"));
            counts.push(Arc::new(AtomicU64::new(0)));
            listeners.push(listener);
        }
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = connections.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving: Vec<_> = listeners
            .into_iter()
            .zip(behaviours.iter().copied())
            .zip(counts.iter().cloned())
            .collect();
        let thread = std::thread::Builder::new()
            .name("bench-receivers".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("bench-receiver")
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    for ((listener, behaviour), count) in serving {
                        let listener = TcpListener::from_std(listener).expect("tokio listener");
                        let stopped = stopped.clone();
                        let accepted = accepted.clone();
                        tokio::spawn(accept_loop(listener, behaviour, count, accepted, stopped));
                    }
                    let mut stopped = stopped;
                    let _ = stopped.wait_for(|s| *s).await;
                });
                // Dropping the runtime cancels every connection, hanging ones included.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn receiver thread");
        Receivers {
            addrs,
            counts,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/calls` of listener `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/calls", self.addrs[i])
    }

    /// Requests read so far by listener `i`.
    pub fn count(&self, i: usize) -> u64 {
        self.counts[i].load(Ordering::Relaxed)
    }

    /// Connections accepted so far by every listener.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests read so far by every listener.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    count: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors, for example: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let count = count.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                answer(request, behaviour, count.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
    behaviour: Behaviour,
    count: Arc<AtomicU64>,
) -> Result<hyper::Response<Empty<Bytes>>, hyper::Error> {
    request.into_body().collect().await?;
    count.fetch_add(1, Ordering::Relaxed);
    if behaviour == Behaviour::Hang {
        std::future::pending::<()>().await;
    }
    let mut response = hyper::Response::new(Empty::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
