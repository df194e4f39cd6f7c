//! HTTP: a landing page, the metrics (`--web.telemetry-path`, /metrics by default) and
//! /api/v1/report, on every `--web.listen-address`, with TLS and basic auth when
//! `--web.config.file` asks for them (web_config.rs).
//!
//! The agent shares a bridge with devices that may be hostile, so nobody may hold the endpoint:
//! at most [`Limits::max_connections`] connections at once (the next wait in the kernel's
//! backlog), headers must arrive within [`Limits::header_read_timeout`] (which also ends idle
//! keep-alive connections), a TLS handshake within [`Limits::handshake_timeout`], an answer
//! is ready within [`Limits::request_timeout`] (else 503), and a connection lives at most
//! [`Limits::connection_max_age`]. Map reads run one at a time on a blocking thread; further
//! scrapes wait for their turn without a thread each.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use axum::{
    Router,
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse as _, Response},
    routing::get,
};
use base64::Engine as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};

use crate::output::web_config::{Checker, WebConfig};

/// What the endpoints serve, each read fresh for every request. The calls may block (they read
/// the kernel's maps): they run off the async workers.
pub trait Source: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> anyhow::Result<String>;
    /// The report, schema iotwatch.report/v1: what writes it as JSON. The report is read under
    /// the agent's turn; it is written after, off the turn, as fast as the client takes it.
    fn report_json(&self) -> anyhow::Result<WriteJson>;
}

/// Writes a document as JSON.
pub type WriteJson = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// Bytes of a streamed body handed to the connection at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// A body written by a blocking thread, [`CHUNK_BYTES`] at a time: the report of 100k
/// conversations is tens of MB of JSON, which the agent would otherwise hold whole (and twice
/// while the buffer grows) for as long as a slow client takes to read it.
struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| c.map(hyper::body::Frame::data)))
    }
}

/// The writing end of [`Chunks`]: a write fails once the client has gone.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send() }
    }
}

/// A body that `write` writes on a blocking thread while the connection sends it.
fn streamed(write: WriteJson) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES) };
        if let Err(e) = write(&mut out).and_then(|()| std::io::Write::flush(&mut out))
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            // The client sees the body end early; the agent says why.
            tracing::warn!("writing the report failed: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::new(Chunks(rx))
}

type Shared = Arc<dyn Source>;

/// The endpoint's bounds. Constants, not flags: node_exporter's conventions name no flag for
/// them, and these fit a Prometheus that scrapes every few seconds to minutes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog until one ends.
    pub max_connections: usize,
    /// Time for a request's headers, counted from the end of the previous request (so also
    /// how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for an answer, from the end of the headers (503 after it).
    pub request_timeout: Duration,
    /// A connection's whole life (a slow reader cannot keep one for ever); Prometheus simply
    /// opens another.
    pub connection_max_age: Duration,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        connection_max_age: Duration::from_secs(300),
    };
}

/// Bytes of request head a connection may buffer (hyper's lowest allowed buffer is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// `--web.listen-address`, in Go's `host:port` form: `:9477` (every address, IPv4 and IPv6),
/// `0.0.0.0:9477`, `[::1]:9477`, `localhost:9477` (each address the name resolves to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddress {
    /// None: every address.
    pub host: Option<String>,
    pub port: u16,
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT (for example :9477, 127.0.0.1:9477, [::1]:9477)"))?;
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        let host = if host.is_empty() {
            None
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<Ipv6Addr>().map_err(|_| format!("{s:?}: {v6:?} is not an IPv6 address"))?;
            Some(v6.to_owned())
        } else if host.contains(':') {
            return Err(format!("{s:?}: an IPv6 address needs brackets, like [::1]:9477"));
        } else if host.parse::<Ipv4Addr>().is_ok() {
            Some(host.to_owned())
        } else {
            // A host name: letters, digits, '-' and '.' (RFC 1123).
            let valid = host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!("{s:?}: {host:?} is neither an IP address nor a host name"));
            }
            Some(host.to_owned())
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

/// `--web.telemetry-path`: an absolute path of plain characters (no route parameters).
pub fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with /"));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || "{}*?#\"<>\\".contains(*c)) {
        return Err(format!("{s:?}: {c:?} is not allowed in the path"));
    }
    if s == "/api/v1/report" {
        return Err("/api/v1/report is the report's path".to_owned());
    }
    Ok(s.to_owned())
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Opens a listener for every address of every `--web.listen-address`. An address that does
/// not bind is an error, unless it is one of several a host name resolves to (then a warning:
/// `localhost` on a machine without IPv6).
pub async fn bind(addresses: &[ListenAddress]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    let mut seen = BTreeSet::new();
    let hint = "in use, or not an address of this machine? choose another with --web.listen-address";
    for a in addresses {
        let candidates: Vec<(SocketAddr, bool)> = match &a.host {
            None => vec![(SocketAddr::from((Ipv6Addr::UNSPECIFIED, a.port)), true)],
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => vec![(SocketAddr::new(ip, a.port), ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED))],
                Err(_) => tokio::net::lookup_host((h.as_str(), a.port))
                    .await
                    .with_context(|| format!("--web.listen-address {a}: cannot resolve {h}"))?
                    .map(|sa| (sa, false))
                    .collect(),
            },
        };
        let mut bound = 0;
        let mut failed = Vec::new();
        for (sa, dual) in candidates {
            if !seen.insert(sa) {
                bound += 1;
                continue;
            }
            match bind_one(sa, dual) {
                Ok(l) => {
                    listeners.push(l);
                    bound += 1;
                }
                // `:PORT` on a machine without IPv6: every IPv4 address instead.
                Err(_) if a.host.is_none() => {
                    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, a.port));
                    listeners
                        .push(bind_one(v4, false).with_context(|| format!("cannot listen on {a} ({v4}; {hint})"))?);
                    bound += 1;
                }
                Err(e) => failed.push(format!("{sa}: {e}")),
            }
        }
        if bound == 0 {
            bail!("cannot listen on {a} ({}; {hint})", failed.join(", "));
        }
        for f in failed {
            tracing::warn!("--web.listen-address {a}: not listening on {f}");
        }
    }
    Ok(listeners)
}

/// How to serve.
#[derive(Debug)]
pub struct Options {
    /// Where the metrics are (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// `--web.config.file`, read at the start.
    pub config: Option<Arc<WebConfig>>,
    pub limits: Limits,
}

impl Options {
    pub fn new(telemetry_path: &str, config: Option<Arc<WebConfig>>) -> Self {
        Self { telemetry_path: telemetry_path.to_owned(), config, limits: Limits::DEFAULT }
    }

    pub fn scheme(&self) -> &'static str {
        if self.config.as_ref().is_some_and(|c| c.tls()) { "https" } else { "http" }
    }
}

#[derive(Clone)]
struct Ctx {
    agent: Shared,
    /// One map read at a time; it runs on a blocking thread that holds the permit.
    work: Arc<Semaphore>,
    telemetry_path: Arc<str>,
}

#[derive(Clone)]
struct Auth {
    config: Option<Arc<WebConfig>>,
    checker: Arc<Checker>,
}

fn router(agent: Shared, options: &Options) -> Router {
    let ctx = Ctx { agent, work: Arc::new(Semaphore::new(1)), telemetry_path: options.telemetry_path.as_str().into() };
    let mut app = Router::new().route(&options.telemetry_path, get(metrics)).route("/api/v1/report", get(report));
    if options.telemetry_path != "/" {
        app = app.route("/", get(landing));
    }
    let auth = Auth { config: options.config.clone(), checker: Arc::new(Checker::default()) };
    let timeout = options.limits.request_timeout;
    app.fallback(not_found)
        .with_state(ctx)
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::from_fn(move |req: Request, next: Next| deadline(timeout, req, next)))
}

/// Serves on every listener until `shutdown`, then lets the connections finish their current
/// request (briefly).
pub async fn serve(
    listeners: Vec<TcpListener>,
    agent: Shared,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(agent, &options);
    let limits = options.limits;
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut accepting = tokio::task::JoinSet::new();
    for l in listeners {
        let tls = options.config.clone().filter(|c| c.tls());
        accepting.spawn(accept(l, app.clone(), tls, slots.clone(), limits, stop_rx.clone()));
    }
    let result = tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = accepting.join_next() => Err(match ended {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("a listener stopped"),
            Err(e) => anyhow::anyhow!("a listener failed: {e}"),
        }),
    };
    let _ = stop_tx.send(true);
    while accepting.join_next().await.is_some() {}
    // Every connection holds a slot: all slots free means all connections ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.request_timeout, slots.acquire_many(all)).await;
    result
}

/// Returns once the server is told to stop (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<WebConfig>>,
    slots: Arc<Semaphore>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s?,
            () = stopped(&mut stop) => return Ok(()),
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::debug!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return Ok(()),
        };
        tokio::spawn(connection(stream, app.clone(), tls.clone(), limits, stop.clone(), slot));
    }
}

/// What a client that speaks plain HTTP to the TLS port gets (Go's server says the same).
const PLAIN_TO_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

async fn connection(
    mut stream: TcpStream,
    app: Router,
    tls: Option<Arc<WebConfig>>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let Some(config) = tls else {
        return http(TokioIo::new(stream), app, limits, stop).await;
    };
    let handshake = async {
        // A TLS connection starts with a handshake record (22); a letter is plain HTTP.
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0].is_ascii_alphabetic() {
            let _ = stream.write_all(PLAIN_TO_TLS).await;
            let _ = stream.shutdown().await;
            return None;
        }
        // Read again if the file changed; refused while it is invalid (logged there).
        let server = config.current().ok()?.tls.clone()?;
        tokio_rustls::TlsAcceptor::from(server)
            .accept(stream)
            .await
            .inspect_err(|e| tracing::debug!("TLS handshake failed: {e}"))
            .ok()
    };
    if let Ok(Some(stream)) = tokio::time::timeout(limits.handshake_timeout, handshake).await {
        http(TokioIo::new(stream), app, limits, stop).await;
    }
}

async fn http<I>(io: TokioIo<I>, app: Router, limits: Limits, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(limits.connection_max_age) => {}
        () = stopped(&mut stop) => {}
    }
    // Finish the request in progress, if any, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.request_timeout, conn).await;
}

async fn deadline(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "iotwatch: no answer in time; try again\n").into_response(),
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn authenticate(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let Some(config) = &auth.config else { return next.run(req).await };
    let loaded = match config.current() {
        Ok(l) => l,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "iotwatch: the web configuration file is invalid (see the agent's log)\n",
            )
                .into_response();
        }
    };
    if loaded.users.is_empty() {
        return next.run(req).await;
    }
    if let Some((user, password)) = basic_credentials(req.headers())
        && auth.checker.check(&loaded.users, &user, &password).await
    {
        return next.run(req).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"iotwatch\"")], "Unauthorized\n")
        .into_response()
}

async fn landing(State(ctx): State<Ctx>) -> Html<String> {
    // The path passed parse_telemetry_path: no character that needs escaping in HTML.
    let path = &ctx.telemetry_path;
    Html(format!(
        "<!doctype html><html><head><title>iotwatch</title></head><body><h1>iotwatch</h1>\
         <p>Per-device traffic on this bridge, counted in the kernel.</p>\
         <ul><li><a href=\"{path}\">{path}</a></li>\
         <li><a href=\"/api/v1/report\">/api/v1/report</a> (JSON, schema iotwatch.report/v1)</li></ul></body></html>"
    ))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Runs `f` on a blocking thread once it is this request's turn: the thread holds the turn
/// until `f` ends, even if the request gave up waiting.
async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&dyn Source) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, String> {
    let turn = ctx.work.clone().acquire_owned().await.map_err(|e| e.to_string())?;
    let agent = ctx.agent.clone();
    match tokio::task::spawn_blocking(move || {
        let _turn = turn;
        f(agent.as_ref())
    })
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    match blocking(&ctx, |a| a.metrics()).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the BPF maps failed: {e}\n")).into_response(),
    }
}

async fn report(State(ctx): State<Ctx>) -> Response {
    match blocking(&ctx, |a| a.report_json()).await {
        Ok(write) => ([(header::CONTENT_TYPE, "application/json")], streamed(write)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("building the report failed: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! The server on 127.0.0.1 with a stand-in for the agent: slow clients, a burst of scrapes,
    //! TLS and basic auth checked with OpenSSL's tools and curl (`cargo xtask setup` installs
    //! both). Bounds on time are generous: they fail only when something is held, never
    //! because a machine is slow.

    use std::{
        io::{Read as _, Write as _},
        net::TcpStream as StdStream,
        path::{Path, PathBuf},
        process::Command,
        sync::atomic::{AtomicUsize, Ordering},
        time::Instant,
    };

    use super::*;

    /// Counts the map reads running at once.
    #[derive(Default)]
    struct Fake {
        running: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
        /// Bytes of padding in the report, written a line at a time.
        report_padding: usize,
    }

    impl Source for Fake {
        fn metrics(&self) -> anyhow::Result<String> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok("iotwatch_up 1\n".to_owned())
        }

        fn report_json(&self) -> anyhow::Result<WriteJson> {
            let padding = self.report_padding;
            Ok(Box::new(move |w| {
                w.write_all(b"{\"pad\":\"")?;
                for _ in 0..padding / 100 {
                    w.write_all(&[b'x'; 100])?;
                }
                w.write_all(b"\"}")
            }))
        }
    }

    /// The server on its own runtime, stopped when dropped.
    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    }

    impl Server {
        fn start(fake: Arc<Fake>, options: Options) -> Self {
            let (addr_tx, addr_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .max_blocking_threads(16)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listeners = bind(&[ListenAddress { host: Some("127.0.0.1".to_owned()), port: 0 }]).await?;
                    addr_tx.send(listeners[0].local_addr()?)?;
                    serve(listeners, fake, options, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            });
            let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("the server started");
            Self { addr, stop: Some(stop), thread: Some(thread) }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A plain HTTP/1.1 GET; the status and the whole answer.
    fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = StdStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, text))
    }

    /// Whether the server closed `s` within `within` (a read ends or fails; a time-out
    /// means it is still open).
    fn closed_by_server(s: &mut StdStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }

    #[test]
    fn slow_clients_cannot_hold_it_and_a_burst_of_scrapes_all_answer() {
        let fake = Arc::new(Fake::default());
        let limits = Limits { max_connections: 8, header_read_timeout: Duration::from_secs(1), ..Limits::DEFAULT };
        let server = Server::start(fake.clone(), Options { limits, ..Options::new("/metrics", None) });
        let addr = server.addr;
        // Every connection slot taken: seven clients that send nothing, one that sends a
        // request head a byte at a time and never ends it.
        let mut idle: Vec<StdStream> = (0..7).map(|_| StdStream::connect(addr).expect("connect")).collect();
        let dribbler = std::thread::spawn(move || {
            let mut s = StdStream::connect(addr).expect("connect");
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if s.write_all(b"a").is_err() {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(200));
                if closed_by_server(&mut s, Duration::from_millis(1)) {
                    return Some(start.elapsed());
                }
            }
            None
        });
        std::thread::sleep(Duration::from_millis(200));
        // 100 scrapes at once, while the slow clients hold every slot.
        let scrapes: Vec<_> = (0..100).map(|_| std::thread::spawn(move || get(addr, "/metrics"))).collect();
        let answers: Vec<_> = scrapes.into_iter().map(|t| t.join().expect("scrape thread")).collect();
        let ok = answers.iter().filter(|a| matches!(a, Ok((200, t)) if t.contains("iotwatch_up 1"))).count();
        assert_eq!(
            ok,
            100,
            "every scrape answered 200 with the metrics: {:?}",
            answers.iter().find(|a| !matches!(a, Ok((200, _))))
        );
        assert_eq!(fake.most.load(Ordering::SeqCst), 1, "one map read at a time, not one blocking thread per scrape");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 100);
        for (i, s) in idle.iter_mut().enumerate() {
            assert!(closed_by_server(s, Duration::from_secs(30)), "idle connection {i} was closed by the server");
        }
        let dribbled = dribbler.join().expect("dribbler");
        assert!(dribbled.is_some(), "a head sent a byte at a time is cut off, not waited for");
        drop(server);
    }

    #[test]
    fn paths_and_the_landing_page() {
        let server = Server::start(Arc::new(Fake::default()), Options::new("/prom/metrics", None));
        let (status, text) = get(server.addr, "/prom/metrics").expect("get");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("text/plain; version=0.0.4"));
        assert_eq!(get(server.addr, "/metrics").expect("get").0, 404, "only the telemetry path serves metrics");
        let (status, page) = get(server.addr, "/").expect("get");
        assert_eq!(status, 200);
        assert!(page.contains("href=\"/prom/metrics\""), "the landing page links the telemetry path: {page}");
        assert_eq!(get(server.addr, "/api/v1/report").expect("get").0, 200);
    }

    /// The body of a chunked HTTP/1.1 answer (RFC 9112 section 7.1).
    fn unchunk(mut body: &str) -> String {
        let mut out = String::new();
        loop {
            let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
            let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
            if size == 0 {
                return out;
            }
            out.push_str(&rest[..size]);
            body = &rest[size + 2..];
        }
    }

    #[test]
    fn a_large_report_streams_whole_and_a_stalled_reader_holds_nothing() {
        let padding = 80_000 * 100;
        let fake = Arc::new(Fake { report_padding: padding, ..Fake::default() });
        let server = Server::start(fake, Options::new("/metrics", None));
        let (status, text) = get(server.addr, "/api/v1/report").expect("get");
        assert_eq!(status, 200);
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
        let json: serde_json::Value = serde_json::from_str(&unchunk(body)).expect("the whole report, valid JSON");
        assert_eq!(json["pad"].as_str().map(str::len), Some(padding));

        // A client that asks for the report and reads nothing: the report waits for it, the
        // metrics do not; one that goes away ends the writing.
        let mut stalled = StdStream::connect(server.addr).expect("connect");
        write!(stalled, "GET /api/v1/report HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
        std::thread::sleep(Duration::from_millis(300));
        let (status, text) = get(server.addr, "/metrics").expect("get");
        assert_eq!((status, text.contains("iotwatch_up 1")), (200, true), "{text}");
        drop(stalled);
        assert_eq!(get(server.addr, "/api/v1/report").expect("get").0, 200);
    }

    // --- TLS and basic auth, with openssl and curl --------------------------------------

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("iotwatch-web-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("temp dir");
            Self(d)
        }
        fn path(&self, f: &str) -> PathBuf {
            self.0.join(f)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(dir: &Path, program: &str, args: &[&str]) {
        let out = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} ({e}): `cargo xtask setup` installs it"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
    fn certificates(dir: &Dir) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let subj = |cn: &str| format!("/CN={cn}");
        run(
            &dir.0,
            "openssl",
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", &subj("iotwatch test CA"), "-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        for (name, usage, san) in
            [("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"), ("client", "clientAuth", "DNS:prometheus")]
        {
            std::fs::write(
                dir.path(&format!("{name}.ext")),
                format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
            )
            .expect("ext");
            let (key, csr, pem, ext) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            run(
                &dir.0,
                "openssl",
                &[&["req"][..], &ec, &["-subj", &subj(name), "-keyout", &key, "-out", &csr]].concat(),
            );
            run(
                &dir.0,
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            );
        }
    }

    /// curl's outcome: its exit status, the HTTP status (0 when there was none) and the answer
    /// with its headers.
    fn curl(dir: &Dir, url: &str, extra: &[&str]) -> (i32, u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-i", "-w", "\n%{http_code}", "--cacert"])
            .arg(dir.path("ca.pem"))
            .args(extra)
            .arg(url)
            .output()
            .expect("curl (cargo xtask setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        (out.status.code().unwrap_or(-1), code, text)
    }

    fn web_config(dir: &Dir, tls_extra: &str, users: &[(&str, &str)]) -> Arc<WebConfig> {
        let mut yaml = format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}");
        if !users.is_empty() {
            yaml.push_str("basic_auth_users:\n");
            for (u, pw) in users {
                yaml.push_str(&format!("  {u}: {}\n", bcrypt::hash(pw, 4).expect("hash")));
            }
        }
        // Written aside and renamed, as an editor or a deploy tool does.
        std::fs::write(dir.path("web.yml.new"), yaml).expect("write");
        std::fs::rename(dir.path("web.yml.new"), dir.path("web.yml")).expect("rename");
        Arc::new(WebConfig::open(&dir.path("web.yml")).expect("valid web config"))
    }

    #[test]
    fn tls_and_basic_auth() {
        let dir = Dir::new("auth");
        certificates(&dir);
        let config = web_config(&dir, "", &[("prometheus", "right password")]);
        let server = Server::start(Arc::new(Fake::default()), Options::new("/metrics", Some(config)));
        let url = format!("https://127.0.0.1:{}/metrics", server.addr.port());

        let (exit, code, text) = curl(&dir, &url, &["-u", "prometheus:right password"]);
        assert_eq!((exit, code), (0, 200), "the right password: {text}");
        assert!(text.contains("iotwatch_up 1"));
        for (what, auth) in [
            ("a wrong password", vec!["-u", "prometheus:wrong"]),
            ("an unknown user", vec!["-u", "eve:right password"]),
            ("no password", vec![]),
        ] {
            let (exit, code, text) = curl(&dir, &url, &auth);
            assert_eq!((exit, code), (0, 401), "{what}: {text}");
            assert!(
                text.to_ascii_lowercase().contains("www-authenticate: basic"),
                "{what}: a 401 says how to authenticate: {text}"
            );
            assert!(!text.contains("iotwatch_up"), "{what}: no metrics");
        }
        // Every path is protected, not only the metrics.
        let report = format!("https://127.0.0.1:{}/api/v1/report", server.addr.port());
        assert_eq!(curl(&dir, &report, &[]).1, 401);
        // Plain HTTP to the TLS port is refused.
        let plain = format!("http://127.0.0.1:{}/metrics", server.addr.port());
        let (_, code, text) = curl(&dir, &plain, &["-u", "prometheus:right password"]);
        assert_eq!(code, 400, "plain HTTP gets Go's 400: {text}");
        assert!(text.contains("HTTPS server") && !text.contains("iotwatch_up"), "{text}");
        // A new password in the file works without a restart; the old one stops working.
        web_config(&dir, "", &[("prometheus", "new password")]);
        assert_eq!(
            curl(&dir, &url, &["-u", "prometheus:new password"]).1,
            200,
            "the file is read again after a change"
        );
        assert_eq!(curl(&dir, &url, &["-u", "prometheus:right password"]).1, 401);
        // A broken file refuses connections rather than serving with no protection.
        std::fs::write(dir.path("web.yml"), "basic_auth_users: [\n").expect("break it");
        let (exit, code, _) = curl(&dir, &url, &["-u", "prometheus:new password"]);
        assert!(exit != 0 && code != 200, "refused while the file is invalid");
    }

    /// deploy/prometheus/web-config.example.yml as a user copies it, next to a certificate
    /// and key of the names it gives: TLS 1.3 only, and its example user's password.
    #[test]
    fn the_deploy_example_works() {
        let dir = Dir::new("example");
        certificates(&dir);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/web-config.example.yml");
        std::fs::copy(&example, dir.path("web-config.yml")).expect("copy the example");
        std::fs::copy(dir.path("server.pem"), dir.path("iotwatch.crt")).expect("cert");
        std::fs::copy(dir.path("server.key"), dir.path("iotwatch.key")).expect("key");
        let config = Arc::new(WebConfig::open(&dir.path("web-config.yml")).expect("the example is valid"));
        let server = Server::start(Arc::new(Fake::default()), Options::new("/metrics", Some(config)));
        let url = format!("https://127.0.0.1:{}/metrics", server.addr.port());
        assert_eq!(curl(&dir, &url, &["-u", "prometheus:change me"]).1, 200, "the example's password");
        assert_eq!(curl(&dir, &url, &[]).1, 401);
        let (exit, code, _) = curl(&dir, &url, &["-u", "prometheus:change me", "--tls-max", "1.2"]);
        assert!(exit != 0 && code != 200, "the example's min_version TLS13");
    }

    #[test]
    fn tls_versions_and_client_certificates() {
        let dir = Dir::new("tls");
        certificates(&dir);
        // Defaults (TLS12 to TLS13): TLS 1.2 is served, so the refusal below means something.
        let server =
            Server::start(Arc::new(Fake::default()), Options::new("/metrics", Some(web_config(&dir, "", &[]))));
        let url = format!("https://127.0.0.1:{}/metrics", server.addr.port());
        assert_eq!(curl(&dir, &url, &["--tls-max", "1.2"]).1, 200, "TLS 1.2 by default");
        drop(server);

        let config = web_config(&dir, "  min_version: TLS13\n", &[]);
        let server = Server::start(Arc::new(Fake::default()), Options::new("/metrics", Some(config)));
        let url = format!("https://127.0.0.1:{}/metrics", server.addr.port());
        let (exit, code, text) = curl(&dir, &url, &["--tls-max", "1.2"]);
        assert!(exit != 0 && code != 200, "TLS 1.2 refused with min_version TLS13: exit {exit}, {text}");
        assert_eq!(curl(&dir, &url, &["--tlsv1.3"]).1, 200, "TLS 1.3 served");
        drop(server);

        let config =
            web_config(&dir, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n", &[]);
        let server = Server::start(Arc::new(Fake::default()), Options::new("/metrics", Some(config)));
        let url = format!("https://127.0.0.1:{}/metrics", server.addr.port());
        let (exit, code, text) = curl(&dir, &url, &[]);
        assert!(exit != 0 && code != 200, "no client certificate: refused (exit {exit}): {text}");
        let cert = dir.path("client.pem").display().to_string();
        let key = dir.path("client.key").display().to_string();
        let (exit, code, text) = curl(&dir, &url, &["--cert", &cert, "--key", &key]);
        assert_eq!((exit, code), (0, 200), "the CA's client certificate: {text}");
        // A certificate the CA did not sign (the server's own key pair is self-made here).
        run(
            &dir.0,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=stranger",
                "-keyout",
                "stranger.key",
                "-out",
                "stranger.pem",
            ],
        );
        let (cert, key) =
            (dir.path("stranger.pem").display().to_string(), dir.path("stranger.key").display().to_string());
        let (exit, code, _) = curl(&dir, &url, &["--cert", &cert, "--key", &key]);
        assert!(exit != 0 && code != 200, "a certificate of another CA is refused");
    }
}
