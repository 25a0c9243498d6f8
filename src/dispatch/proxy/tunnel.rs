//! The `CONNECT` tunnel through the proxy: the request, the reading of the proxy's answer, and
//! the opening of the tunnel, async (hyper) and blocking (ureq).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use super::Endpoint;

/// The most bytes of a proxy's answer to `CONNECT` read before giving up on it.
const MAX_ANSWER: usize = 8 * 1024;

impl Endpoint {
    /// The `CONNECT` request for a tunnel to `target`. It holds the credentials: zeroized on drop.
    pub(super) fn connect_request(&self, target: SocketAddr) -> Zeroizing<Vec<u8>> {
        let mut request = Zeroizing::new(Vec::with_capacity(128));
        let line = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        request.extend_from_slice(line.as_bytes());
        if let Some(authorization) = &self.authorization {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(authorization.expose_secret().as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    fn error(&self, target: SocketAddr, what: Failure) -> ProxyError {
        ProxyError {
            proxy: self.address(),
            target,
            what,
            source: None,
        }
    }
}

/// What went wrong with the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The proxy could not be reached (resolved or connected to).
    Unreachable,
    /// The proxy did not answer `CONNECT` in time.
    TimedOut,
    /// The proxy closed the connection or failed while answering `CONNECT`.
    Closed,
    /// The proxy answered `CONNECT` with something that is not an HTTP/1 answer.
    NotHttp,
    /// The proxy answered `CONNECT` with this status, not a 2xx.
    Status(u16),
}

/// The proxy failed an attempt. Shows the proxy's and the target's addresses and what happened,
/// never the credentials.
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: String,
    target: SocketAddr,
    what: Failure,
    source: Option<io::Error>,
}

impl ProxyError {
    fn with(mut self, source: io::Error) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether another admitted address of the receiver might fare better: the proxy could
    /// not reach this one.
    fn tries_next_target(&self) -> bool {
        matches!(self.what, Failure::Status(502..=504))
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (proxy, target) = (&self.proxy, self.target);
        match self.what {
            Failure::Unreachable => write!(f, "could not connect to the proxy {proxy}"),
            Failure::TimedOut => write!(
                f,
                "the proxy {proxy} did not open a tunnel to {target} within the connect time limit"
            ),
            Failure::Closed => write!(
                f,
                "the proxy {proxy} closed the connection before answering CONNECT {target}"
            ),
            Failure::NotHttp => write!(
                f,
                "the proxy {proxy} did not answer CONNECT {target} with HTTP/1"
            ),
            // 407 is the standard answer; some proxies (tinyproxy) answer 401 to wrong ones.
            Failure::Status(status @ (401 | 407)) => write!(
                f,
                "the proxy {proxy} answered {status} to CONNECT {target}: proxy credentials \
                 missing or refused"
            ),
            Failure::Status(status) => {
                write!(f, "the proxy {proxy} answered {status} to CONNECT {target}")
            }
        }
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Whether the egress proxy's failure is somewhere in the chain.
pub(crate) fn is_proxy(chain: &[&(dyn StdError + 'static)]) -> bool {
    chain.iter().any(|e| e.is::<ProxyError>())
}

/// How far the proxy's answer has come.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The head is not complete yet.
    Partial,
    /// The head is complete: its status, and its length in bytes.
    Head { status: u16, len: usize },
}

/// Reads the proxy's answer to `CONNECT` from what has arrived so far.
fn read_answer(buf: &[u8]) -> std::result::Result<Answer, Failure> {
    // The status line must start as one, even before it is complete.
    let start = b"HTTP/1.";
    let n = buf.len().min(start.len());
    if buf[..n] != start[..n] {
        return Err(Failure::NotHttp);
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_ANSWER {
            Err(Failure::NotHttp)
        } else {
            Ok(Answer::Partial)
        };
    };
    let line = &buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(end)];
    // `HTTP/1.x SSS reason`
    let status = line
        .get(9..12)
        .filter(|_| line.get(8) == Some(&b' ') && line.get(12).is_none_or(|&b| b == b' '))
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(Failure::NotHttp)?;
    Ok(Answer::Head {
        status,
        len: end + 4,
    })
}

/// What the answer so far means once it is complete: the tunnel is open on a 2xx followed by
/// nothing else (neither end speaks first through it), any other status fails.
fn settle_answer(buf: &[u8]) -> std::result::Result<Option<()>, Failure> {
    match read_answer(buf)? {
        Answer::Partial => Ok(None),
        Answer::Head { status, len } if (200..300).contains(&status) => {
            if buf.len() > len {
                Err(Failure::NotHttp)
            } else {
                Ok(Some(()))
            }
        }
        Answer::Head { status, .. } => Err(Failure::Status(status)),
    }
}

/// Adds what one read brought (nothing: the proxy closed) to the answer so far, and settles
/// it if it is complete ([`settle_answer`]).
fn read_more(answer: &mut Vec<u8>, chunk: &[u8]) -> std::result::Result<Option<()>, Failure> {
    if chunk.is_empty() {
        return Err(Failure::Closed);
    }
    answer.extend_from_slice(chunk);
    settle_answer(answer)
}

/// Opens a tunnel through `endpoint` to the first of `targets` (admitted addresses of one
/// receiver) it can reach, all within `timeout`; returns the connection to the proxy, now a
/// byte pipe to the receiver.
#[cfg(feature = "hyper")]
pub(crate) async fn open_tunnel(
    endpoint: &Endpoint,
    targets: &[SocketAddr],
    timeout: Duration,
) -> std::result::Result<tokio::net::TcpStream, ProxyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let first = *targets.first().expect("the guard admitted an address");
    let unreachable = |target, e| endpoint.error(target, Failure::Unreachable).with(e);
    let proxies: Vec<SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| endpoint.error(first, Failure::TimedOut))?
    .map_err(|e| unreachable(first, e))?
    .collect();
    let mut last = None;
    for &target in targets {
        let handshake = async {
            let stream = connect_first(&proxies)
                .await
                .map_err(|e| unreachable(target, e))?;
            let request = endpoint.connect_request(target);
            let closed = |e| endpoint.error(target, Failure::Closed).with(e);
            write_all(&stream, &request).await.map_err(closed)?;
            let mut answer = Vec::with_capacity(256);
            let mut chunk = [0u8; 1024];
            loop {
                let n = read_some(&stream, &mut chunk).await.map_err(closed)?;
                match read_more(&mut answer, &chunk[..n]) {
                    Ok(Some(())) => return Ok(stream),
                    Ok(None) => {}
                    Err(what) => return Err(endpoint.error(target, what)),
                }
            }
        };
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.tries_next_target() => last = Some(e),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(endpoint.error(target, Failure::TimedOut)),
        }
    }
    Err(last.unwrap_or_else(|| endpoint.error(first, Failure::Unreachable)))
}

/// Writes all of `buf` (with tokio's `net` feature alone: no `io-util`).
#[cfg(feature = "hyper")]
async fn write_all(stream: &tokio::net::TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what has arrived into `buf`, waiting for at least one byte or the end.
#[cfg(feature = "hyper")]
async fn read_some(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// The first of the proxy's addresses that accepts a connection.
#[cfg(feature = "hyper")]
async fn connect_first(addrs: &[SocketAddr]) -> io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the proxy's name has no address")))
}

/// The blocking twin of [`open_tunnel`]: the tunnel through `endpoint` to the first of
/// `targets` it can reach, all within `timeout` (none when `None`). The stream's read and
/// write timeouts are cleared before it is returned.
#[cfg(feature = "ureq")]
pub(crate) fn open_tunnel_blocking(
    endpoint: &Endpoint,
    targets: &[SocketAddr],
    timeout: Option<Duration>,
) -> std::result::Result<std::net::TcpStream, ProxyError> {
    use std::net::ToSocketAddrs as _;

    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let first = *targets.first().expect("the guard admitted an address");
    let proxies: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| endpoint.error(first, Failure::Unreachable).with(e))?
        .collect();
    let tunnel = BlockingTunnel {
        endpoint,
        proxies,
        deadline,
    };
    let mut last = None;
    for &target in targets {
        match tunnel.open(target) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.tries_next_target() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| endpoint.error(first, Failure::Unreachable)))
}

/// The proxy and the time limit of one [`open_tunnel_blocking`].
#[cfg(feature = "ureq")]
struct BlockingTunnel<'a> {
    endpoint: &'a Endpoint,
    /// The proxy's addresses.
    proxies: Vec<SocketAddr>,
    deadline: Option<std::time::Instant>,
}

#[cfg(feature = "ureq")]
impl BlockingTunnel<'_> {
    /// The tunnel to `target`: a connection to the proxy, and its answer to `CONNECT`.
    fn open(&self, target: SocketAddr) -> std::result::Result<std::net::TcpStream, ProxyError> {
        let stream = self.connect(target)?;
        self.handshake(stream, target)
    }

    /// What is left of the time limit, never zero (a zero timeout means none to std).
    fn left(&self, target: SocketAddr) -> std::result::Result<Option<Duration>, ProxyError> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(self.endpoint.error(target, Failure::TimedOut)),
            },
        }
    }

    /// A connection to the first of the proxy's addresses that accepts one.
    fn connect(&self, target: SocketAddr) -> std::result::Result<std::net::TcpStream, ProxyError> {
        use std::net::TcpStream;

        let mut failure = None;
        for addr in &self.proxies {
            let tried = match self.left(target)? {
                Some(limit) => TcpStream::connect_timeout(addr, limit),
                None => TcpStream::connect(addr),
            };
            match tried {
                Ok(stream) => return Ok(stream),
                Err(e) if timed_out(&e) => {
                    return Err(self.endpoint.error(target, Failure::TimedOut).with(e));
                }
                Err(e) => failure = Some(e),
            }
        }
        let e = failure.unwrap_or_else(|| io::Error::other("the proxy's name has no address"));
        Err(self.endpoint.error(target, Failure::Unreachable).with(e))
    }

    /// Asks the proxy for the tunnel and reads its answer, within the time limit; the
    /// stream's timeouts are cleared once it is open.
    fn handshake(
        &self,
        mut stream: std::net::TcpStream,
        target: SocketAddr,
    ) -> std::result::Result<std::net::TcpStream, ProxyError> {
        use std::io::{Read as _, Write as _};

        let failed = |e: io::Error| {
            let what = if timed_out(&e) {
                Failure::TimedOut
            } else {
                Failure::Closed
            };
            self.endpoint.error(target, what).with(e)
        };
        stream
            .set_write_timeout(self.left(target)?)
            .map_err(failed)?;
        stream
            .write_all(&self.endpoint.connect_request(target))
            .map_err(failed)?;
        let mut answer = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        loop {
            stream
                .set_read_timeout(self.left(target)?)
                .map_err(failed)?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(e)),
            };
            match read_more(&mut answer, &chunk[..n]) {
                Ok(Some(())) => {
                    stream.set_read_timeout(None).map_err(failed)?;
                    stream.set_write_timeout(None).map_err(failed)?;
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(None) => {}
                Err(what) => return Err(self.endpoint.error(target, what)),
            }
        }
    }
}

/// Whether a blocking socket call ran out of its time.
#[cfg(feature = "ureq")]
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Proxy;

    fn target() -> SocketAddr {
        "203.0.113.7:443".parse().unwrap()
    }

    #[test]
    fn the_answer_to_connect_opens_the_tunnel_only_on_a_2xx_with_nothing_after_it() {
        assert_eq!(settle_answer(b"HTTP/1.1 200 Connec"), Ok(None));
        assert_eq!(
            settle_answer(b"HTTP/1.0 200 Connection established\r\n\r\n"),
            Ok(Some(()))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 200\r\nVia: x\r\n\r\n"),
            Ok(Some(()))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n<html>"),
            Err(Failure::Status(407))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 200 OK\r\n\r\nextra"),
            Err(Failure::NotHttp)
        );
        assert_eq!(settle_answer(b"SSH-2.0-OpenSSH"), Err(Failure::NotHttp));
        assert_eq!(
            settle_answer(b"HTTP/1.1 2000 x\r\n\r\n"),
            Err(Failure::NotHttp)
        );
        let endless = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'a'; MAX_ANSWER]].concat();
        assert_eq!(settle_answer(&endless), Err(Failure::NotHttp));
    }

    #[test]
    fn an_answer_read_in_pieces_settles_once_complete_and_a_close_is_closed() {
        let mut answer = Vec::new();
        assert_eq!(read_more(&mut answer, b"HTTP/1.1 200 Conn"), Ok(None));
        assert_eq!(read_more(&mut answer, b"ection established\r\n"), Ok(None));
        assert_eq!(read_more(&mut answer, b"\r\n"), Ok(Some(())));
        let mut answer = b"HTTP/1.1 200".to_vec();
        assert_eq!(read_more(&mut answer, b""), Err(Failure::Closed));
    }

    #[test]
    fn the_error_names_the_proxy_and_the_target_never_the_credentials() {
        let proxy = Proxy::http("http://dialer:s3cret@127.0.0.1:3128").unwrap();
        let endpoint = proxy.for_target(true, "a.test").unwrap();
        let err = endpoint.error(target(), Failure::Status(407));
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("407") && shown.contains("127.0.0.1:3128"),
            "{shown}"
        );
        assert!(shown.contains("203.0.113.7:443"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("ZGlh"),
            "{shown}"
        );
        assert!(
            endpoint
                .error(target(), Failure::Status(502))
                .tries_next_target()
        );
        assert!(!err.tries_next_target());
    }
}
