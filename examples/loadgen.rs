//! Load generator for the mTLS load bench (`benches/load/`, issue 9).
//!
//! wrk and h2load cannot present client certificates, so this one does: HTTP/1.1 over
//! TLS 1.3 (OpenSSL, via tokio-openssl) with an optional client certificate, or plain HTTP
//! for the backend floor.
//!
//! Scenarios:
//! - `keepalive`: N connections are opened first; then each sends requests back to back
//!   for the duration. The measurement window starts once every connection is up, so the
//!   handshakes are not part of it.
//! - `handshake`: N workers each open a new TCP (+ TLS 1.3) connection per request, send
//!   one request with `Connection: close`, read the response, and close. No session is ever
//!   offered; a resumed session would be counted as an error.
//!
//! With `--watch NAME=PID[,PID…]` it also reads utime+stime (clock ticks, `/proc/PID/stat`)
//! of those processes at the start and end of the measurement window and reports the
//! difference as `cpu_ticks_NAME`; its own CPU time is `cpu_ticks_client`, and the share of
//! each core that was busy during the window is `busy_pct_cpuN` (from `/proc/stat`).
//!
//! - `keepalive --http2`: `--connections` HTTP/2 connections (ALPN h2) are opened first;
//!   then N workers, spread over them, each keep one stream going: many concurrent streams on
//!   few connections, as browsers and gRPC clients use HTTP/2.
//! - `grpc`: unary gRPC calls (`--path`, default `/bench.Echo/Unary`, a 5-byte message) the
//!   same way over HTTP/2; a call counts when its `grpc-status` is 0. With `--scheme http` it
//!   speaks h2c with prior knowledge (the backend floor).
//!
//! - `idle`: N connections each send one request, then stay open and idle. The watched
//!   processes' resident memory (VmRSS, `/proc/PID/status`) is read before the first
//!   connection and again once all are up and `--settle` seconds have passed; the growth
//!   per connection is `rss_bytes_per_conn_NAME`. `--open-concurrency K` opens them K at a
//!   time (as a fleet of clients connects over time); by default all N open at once, which
//!   adds the peak of N simultaneous handshakes to what stays resident.
//!
//! Output: one JSON line on stdout, e.g.
//! `{"requests":…,"errors":…,"unexpected_status":…,"rps":…,"p50_us":…,"p99_us":…,"duration_s":…}`.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8443 --host bench.local \
//!     --scheme https --cert client.crt --key client.key --ca ca.pem \
//!     --scenario handshake --concurrency 16 --duration 10
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslSessionCacheMode, SslVerifyMode, SslVersion};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_openssl::SslStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Connections opened up front, requests back to back on each.
    Keepalive,
    /// A new TCP+TLS connection per request, closed after the response.
    Handshake,
    /// N connections each send one request and then stay open, idle; reports how much the
    /// watched processes' RSS grew per connection (`rss_bytes_per_conn_NAME`).
    Idle,
    /// Unary gRPC calls over HTTP/2: N concurrent calls on `--connections` connections.
    Grpc,
}

#[derive(Parser, Debug)]
#[command(
    about = "HTTP/1.1 + TLS 1.3 load generator with client certificates (phasegate benches/load)",
    args_override_self = true
)]
struct Args {
    /// Address to connect to.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// Host header and TLS SNI (and the name the server certificate is checked against).
    #[arg(long, default_value = "bench.local")]
    host: String,
    #[arg(long, value_enum, default_value = "https")]
    scheme: Scheme,
    /// Request path (`grpc`: the method, default `/bench.Echo/Unary`).
    #[arg(long)]
    path: Option<String>,
    /// Keep-alive over HTTP/2 (ALPN h2) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// HTTP/2 and gRPC: connections the N concurrent streams share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Client certificate (PEM, leaf first). Without it no certificate is presented.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// CA (PEM) the server certificate must chain to. Without it the server is not verified.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS 1.3 key-exchange groups offered (OpenSSL list syntax). One group keeps the
    /// comparison fair: OpenSSL 3.5+ would otherwise offer a post-quantum hybrid first.
    #[arg(long, default_value = "X25519")]
    groups: String,
    /// TLS 1.3 cipher suites offered (OpenSSL syntax); default: the library's.
    #[arg(long)]
    ciphersuites: Option<String>,
    #[arg(long, value_enum, default_value = "keepalive")]
    scenario: Scenario,
    /// Concurrent connections (keepalive) or workers (handshake).
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Length of the measurement window, in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Status every response should have; others count as `unexpected_status`.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Per-request timeout, in seconds (a timeout counts as an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Runtime worker threads; 1 (default) runs everything on one thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Processes whose CPU time to report over the measurement window: NAME=PID[,PID…]
    /// (repeatable). Reported as `cpu_ticks_NAME`.
    #[arg(long, value_name = "NAME=PIDS")]
    watch: Vec<String>,
    /// Idle scenario: seconds to wait after the last connection is up before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Idle scenario: how many connections may be opening (handshake + first request) at
    /// once; 0 opens all N at once. Memory a server frees after setup may stay resident, so
    /// opening all at once also measures the peak of N concurrent handshakes.
    #[arg(long, default_value_t = 0)]
    open_concurrency: usize,
    /// Free-form label copied into the output.
    #[arg(long)]
    label: Option<String>,
    /// HTTP/1.1 scenarios: one more request header, NAME:VALUE (repeatable). Requests carry
    /// only Host and User-Agent otherwise.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
}

/// Everything a worker needs to open connections.
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    /// `--header`s, parsed
    extra_headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    tls: Option<SslConnector>,
    verify_server: bool,
    timeout: Duration,
    scenario: Scenario,
    /// HTTP/2 (keepalive --http2, grpc): the connections workers take turns on.
    h2: Vec<H2Sender>,
    /// Idle scenario: permits for connections being opened (`--open-concurrency`).
    opening: Option<tokio::sync::Semaphore>,
    /// Start of the measurement window + its length; set by `main` once all workers are ready.
    deadline: OnceLock<Instant>,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    errors: u64,
    unexpected_status: u64,
    reused_sessions: u64,
    reconnects: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
    tls: Option<String>,
    statuses: std::collections::BTreeMap<u16, u64>,
}

impl Stats {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

type Sender = http1::SendRequest<Empty<Bytes>>;
type H2Sender = http2::SendRequest<Full<Bytes>>;

/// A unary gRPC request: no compression, `EchoRequest { text: "hello" }`.
const GRPC_MESSAGE: &[u8] = b"\x00\x00\x00\x00\x07\x0a\x05hello";

/// Opens one TCP connection and, for https, runs the TLS handshake on it (TLS 1.3, a full
/// handshake, the negotiated ALPN protocol `alpn` when given).
async fn open(t: &Target, stats: &mut Stats, alpn: Option<&[u8]>) -> Result<Io, String> {
    let tcp = TcpStream::connect(t.addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let Some(connector) = &t.tls else {
        return Ok(Io::Plain(tcp));
    };
    let ssl = connector
        .configure()
        .and_then(|mut c| {
            c.set_verify_hostname(t.verify_server);
            c.into_ssl(&t.host)
        })
        .map_err(|e| format!("ssl setup: {e}"))?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| format!("ssl setup: {e}"))?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| format!("tls handshake: {e}"))?;
    let ssl = stream.ssl();
    if ssl.session_reused() {
        stats.reused_sessions += 1;
        return Err("TLS session was resumed (expected a full handshake)".into());
    }
    if ssl.version2() != Some(SslVersion::TLS1_3) {
        return Err(format!("negotiated {} instead of TLSv1.3", ssl.version_str()));
    }
    if let Some(alpn) = alpn {
        if ssl.selected_alpn_protocol() != Some(alpn) {
            return Err(format!(
                "ALPN: the server did not select {}",
                String::from_utf8_lossy(alpn)
            ));
        }
    }
    if stats.tls.is_none() {
        let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("?");
        stats.tls = Some(format!("{} {}", ssl.version_str(), cipher));
    }
    Ok(Io::Tls(Box::new(stream)))
}

/// A connection, with or without TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

/// Opens one connection and runs its HTTP/1.1 handshake; the connection task is spawned.
async fn connect(t: &Target, stats: &mut Stats) -> Result<Sender, String> {
    match open(t, stats, None).await? {
        Io::Plain(tcp) => http_handshake(tcp).await,
        Io::Tls(tls) => http_handshake(tls).await,
    }
}

/// Opens one HTTP/2 connection (ALPN h2 over TLS, prior knowledge over plain TCP); the
/// connection task is spawned.
async fn connect_h2(t: &Target, stats: &mut Stats) -> Result<H2Sender, String> {
    async fn handshake<IO>(io: IO) -> Result<H2Sender, String>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
    match open(t, stats, Some(b"h2")).await? {
        Io::Plain(tcp) => handshake(tcp).await,
        Io::Tls(tls) => handshake(tls).await,
    }
}

async fn http_handshake<IO>(io: IO) -> Result<Sender, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response. Returns (status, server asked to close).
async fn request(t: &Target, sender: &mut Sender, close: bool) -> Result<(u16, bool), String> {
    sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(t.path.as_str())
        .header(HOST, t.host.as_str())
        .header(USER_AGENT, "phasegate-loadgen");
    for (name, value) in &t.extra_headers {
        req = req.header(name, value);
    }
    if close {
        req = req.header(CONNECTION, "close");
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let server_close = resp
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    Ok((status, server_close))
}

fn record(stats: &mut Stats, expect: u16, status: u16, started: Instant) {
    stats.requests += 1;
    stats
        .latencies_us
        .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    *stats.statuses.entry(status).or_default() += 1;
    if status != expect {
        stats.unexpected_status += 1;
    }
}

async fn keepalive_worker(t: Arc<Target>, ready: Arc<Barrier>, go: Arc<Barrier>, expect: u16) -> Stats {
    let mut stats = Stats::default();
    let mut conn = match connect(&t, &mut stats).await {
        Ok(s) => Some(s),
        Err(e) => {
            stats.error(e);
            None
        }
    };
    ready.wait().await;
    go.wait().await;
    let deadline = *t.deadline.get().expect("deadline set before go");
    while Instant::now() < deadline {
        let mut sender = match conn.take() {
            Some(s) => s,
            None => {
                stats.reconnects += 1;
                match tokio::time::timeout(t.timeout, connect(&t, &mut stats)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        stats.error(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(_) => {
                        stats.error("connect timed out");
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        match tokio::time::timeout(t.timeout, request(&t, &mut sender, false)).await {
            Ok(Ok((status, server_close))) => {
                record(&mut stats, expect, status, started);
                if !server_close {
                    conn = Some(sender);
                }
            }
            Ok(Err(e)) => stats.error(e),
            Err(_) => stats.error("request timed out"),
        }
    }
    stats
}

/// One HTTP/2 request (GET, or a unary gRPC call) with its whole response. Returns the
/// HTTP status, or for gRPC 200 when `grpc-status` is 0 and an error otherwise.
async fn request_h2(t: &Target, sender: &mut H2Sender) -> Result<u16, String> {
    sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
    let uri = format!("https://{}{}", t.host, t.path);
    let req = if t.scenario == Scenario::Grpc {
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header(USER_AGENT, "phasegate-loadgen")
            .body(Full::new(Bytes::from_static(GRPC_MESSAGE)))
    } else {
        Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(USER_AGENT, "phasegate-loadgen")
            .body(Full::new(Bytes::new()))
    }
    .map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let in_head = resp.headers().get("grpc-status").cloned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    if t.scenario != Scenario::Grpc || status != 200 {
        return Ok(status);
    }
    let grpc_status = body.trailers().and_then(|t| t.get("grpc-status").cloned()).or(in_head);
    match grpc_status.as_ref().map(|v| v.as_bytes()) {
        Some(b"0") => Ok(200),
        Some(code) => Err(format!("grpc-status {}", String::from_utf8_lossy(code))),
        None => Err("no grpc-status".into()),
    }
}

/// Keeps one stream going on a shared HTTP/2 connection for the duration.
async fn h2_worker(t: Arc<Target>, index: usize, ready: Arc<Barrier>, go: Arc<Barrier>, expect: u16) -> Stats {
    let mut stats = Stats::default();
    let mut sender = t.h2.get(index % t.h2.len().max(1)).cloned();
    ready.wait().await;
    go.wait().await;
    let deadline = *t.deadline.get().expect("deadline set before go");
    while Instant::now() < deadline {
        let Some(s) = sender.as_mut() else {
            stats.error("no HTTP/2 connection");
            break;
        };
        let started = Instant::now();
        match tokio::time::timeout(t.timeout, request_h2(&t, s)).await {
            Ok(Ok(status)) => record(&mut stats, expect, status, started),
            Ok(Err(e)) => {
                stats.error(e);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => stats.error("request timed out"),
        }
    }
    stats
}

async fn handshake_worker(t: Arc<Target>, ready: Arc<Barrier>, go: Arc<Barrier>, expect: u16) -> Stats {
    let mut stats = Stats::default();
    ready.wait().await;
    go.wait().await;
    let deadline = *t.deadline.get().expect("deadline set before go");
    while Instant::now() < deadline {
        let started = Instant::now();
        let one = async {
            let mut sender = connect(&t, &mut stats).await?;
            request(&t, &mut sender, true).await
        };
        match tokio::time::timeout(t.timeout, one).await {
            Ok(Ok((status, _))) => record(&mut stats, expect, status, started),
            Ok(Err(e)) => {
                stats.error(e);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => stats.error("connection timed out"),
        }
        // The sender is dropped here; hyper closes the connection after the response
        // (the request said `Connection: close`) and the spawned task ends.
    }
    stats
}

async fn idle_worker(t: Arc<Target>, ready: Arc<Barrier>, go: Arc<Barrier>, expect: u16) -> Stats {
    let mut stats = Stats::default();
    let started = Instant::now();
    let opened = async {
        let _permit = match &t.opening {
            Some(s) => Some(s.acquire().await.map_err(|e| e.to_string())?),
            None => None,
        };
        let mut sender = connect(&t, &mut stats).await?;
        let (status, _) = request(&t, &mut sender, false).await?;
        Ok::<_, String>((sender, status))
    };
    // Held until the measurement is done, then dropped (closing the connection).
    let _held = match tokio::time::timeout(t.timeout, opened).await {
        Ok(Ok((sender, status))) => {
            record(&mut stats, expect, status, started);
            Some(sender)
        }
        Ok(Err(e)) => {
            stats.error(e);
            None
        }
        Err(_) => {
            stats.error("connection timed out");
            None
        }
    };
    ready.wait().await;
    go.wait().await;
    stats
}

/// Resident memory of a process, in bytes (VmRSS).
fn proc_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn rss_of(watches: &[Watch]) -> Vec<u64> {
    watches
        .iter()
        .map(|w| w.pids.iter().filter_map(|p| proc_rss(p)).sum())
        .collect()
}

/// utime + stime, in clock ticks, of a process (all its threads).
fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it start with the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Per-CPU (busy, total) jiffies from /proc/stat.
fn cpu_times() -> Vec<(String, u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(|b| b.is_ascii_digit()))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.to_string();
            let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest is included in user)
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((name, total - idle, total))
        })
        .collect()
}

struct Watch {
    name: String,
    pids: Vec<String>,
}

fn parse_watch(s: &str) -> Result<Watch, String> {
    let (name, pids) = s
        .split_once('=')
        .ok_or_else(|| format!("--watch {s}: expected NAME=PID[,PID…]"))?;
    let pids: Vec<String> = pids
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("--watch {s}: NAME must be [A-Za-z0-9_]+"));
    }
    if pids.is_empty() || pids.iter().any(|p| p.parse::<u32>().is_err()) {
        return Err(format!("--watch {s}: PIDs must be numbers"));
    }
    Ok(Watch {
        name: name.to_string(),
        pids,
    })
}

fn snapshot(watches: &[Watch]) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(watches.len() + 1);
    for w in watches {
        let mut sum = 0;
        for p in &w.pids {
            sum += proc_ticks(p).ok_or_else(|| format!("cannot read /proc/{p}/stat ({})", w.name))?;
        }
        out.push(sum);
    }
    out.push(proc_ticks("self").unwrap_or(0));
    Ok(out)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn build_tls(args: &Args) -> Result<Option<SslConnector>, String> {
    if args.scheme == Scheme::Http {
        return Ok(None);
    }
    let e = |what: &str| {
        let what = what.to_string();
        move |err: openssl::error::ErrorStack| format!("{what}: {err}")
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e("ssl context"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e("min version"))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e("max version"))?;
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    if args.http2 || args.scenario == Scenario::Grpc {
        b.set_alpn_protos(b"\x02h2").map_err(e("alpn"))?;
    }
    b.set_groups_list(&args.groups).map_err(e("groups"))?;
    if let Some(suites) = &args.ciphersuites {
        b.set_ciphersuites(suites).map_err(e("ciphersuites"))?;
    }
    match &args.ca {
        Some(ca) => b.set_ca_file(ca).map_err(e(&format!("CA {}", ca.display())))?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        b.set_certificate_chain_file(cert)
            .map_err(e(&format!("client certificate {}", cert.display())))?;
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(e(&format!("client key {}", key.display())))?;
        b.check_private_key()
            .map_err(e("client certificate and key do not match"))?;
    }
    Ok(Some(b.build()))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.concurrency == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err("--concurrency and --duration must be positive".into());
    }
    let watches = args
        .watch
        .iter()
        .map(|s| parse_watch(s))
        .collect::<Result<Vec<_>, _>>()?;
    if args.http2 && args.scenario != Scenario::Keepalive {
        return Err("--http2 goes with --scenario keepalive (grpc is always HTTP/2)".into());
    }
    let h2 = args.http2 || args.scenario == Scenario::Grpc;
    if h2 && args.connections == 0 {
        return Err("--connections must be positive".into());
    }
    let tls = build_tls(&args)?;
    let default_path = if args.scenario == Scenario::Grpc {
        "/bench.Echo/Unary"
    } else {
        "/"
    };
    let mut target = Target {
        addr: args.addr,
        host: args.host.clone(),
        path: args.path.clone().unwrap_or_else(|| default_path.to_string()),
        extra_headers: parse_headers(&args.headers)?,
        verify_server: args.ca.is_some(),
        tls,
        timeout: Duration::from_secs_f64(args.timeout),
        scenario: args.scenario,
        h2: Vec::new(),
        opening: (args.open_concurrency > 0).then(|| tokio::sync::Semaphore::new(args.open_concurrency)),
        deadline: OnceLock::new(),
    };
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("runtime: {e}"))?;

    let expect = args.expect_status;
    let n = args.concurrency;
    let settle = Duration::from_secs_f64(args.settle.max(0.0));
    let (stats, elapsed, cpu, busy, rss) = rt.block_on(async {
        // HTTP/2: the connections are opened before the workers (not part of the window)
        let mut setup = Stats::default();
        if h2 {
            for _ in 0..args.connections {
                match tokio::time::timeout(target.timeout, connect_h2(&target, &mut setup)).await {
                    Ok(Ok(sender)) => target.h2.push(sender),
                    Ok(Err(e)) => setup.error(e),
                    Err(_) => setup.error("connect timed out"),
                }
            }
        }
        let target = Arc::new(target);
        let rss0 = rss_of(&watches);
        let ready = Arc::new(Barrier::new(n + 1));
        let go = Arc::new(Barrier::new(n + 1));
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (t, r, g) = (target.clone(), ready.clone(), go.clone());
            handles.push(tokio::spawn(async move {
                match t.scenario {
                    _ if h2 => h2_worker(t, i, r, g, expect).await,
                    Scenario::Keepalive => keepalive_worker(t, r, g, expect).await,
                    Scenario::Handshake => handshake_worker(t, r, g, expect).await,
                    Scenario::Idle => idle_worker(t, r, g, expect).await,
                    Scenario::Grpc => unreachable!("grpc is HTTP/2"),
                }
            }));
        }
        // Every connection is up (keepalive) or every worker is waiting (handshake).
        ready.wait().await;
        let rss = if target.scenario == Scenario::Idle {
            tokio::time::sleep(settle).await;
            let rss1 = rss_of(&watches);
            rss1.iter().zip(&rss0).map(|(a, b)| *a as i64 - *b as i64).collect()
        } else {
            Vec::new()
        };
        let cpu0 = snapshot(&watches)?;
        let busy0 = cpu_times();
        let start = Instant::now();
        target
            .deadline
            .set(start + Duration::from_secs_f64(args.duration))
            .expect("set once");
        go.wait().await;
        let mut all = Vec::with_capacity(n + 1);
        all.push(setup);
        for h in handles {
            all.push(h.await.map_err(|e| format!("worker panicked: {e}"))?);
        }
        let elapsed = start.elapsed();
        let cpu1 = snapshot(&watches)?;
        let busy1 = cpu_times();
        let cpu: Vec<u64> = cpu1.iter().zip(&cpu0).map(|(a, b)| a.saturating_sub(*b)).collect();
        let busy: Vec<(String, f64)> = busy1
            .iter()
            .zip(&busy0)
            .map(|((name, b1, t1), (_, b0, t0))| {
                let dt = t1.saturating_sub(*t0).max(1) as f64;
                (name.clone(), 100.0 * b1.saturating_sub(*b0) as f64 / dt)
            })
            .collect();
        Ok::<_, String>((all, elapsed, cpu, busy, rss))
    })?;

    let mut total = Stats::default();
    let mut lat = Vec::new();
    for s in stats {
        total.requests += s.requests;
        total.errors += s.errors;
        total.unexpected_status += s.unexpected_status;
        total.reused_sessions += s.reused_sessions;
        total.reconnects += s.reconnects;
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
        if total.tls.is_none() {
            total.tls = s.tls;
        }
        for (k, v) in s.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        lat.extend(s.latencies_us);
    }
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);

    let mut out = Map::new();
    if let Some(l) = &args.label {
        out.insert("label".into(), json!(l));
    }
    out.insert(
        "scenario".into(),
        json!(match args.scenario {
            Scenario::Keepalive => "keepalive",
            Scenario::Handshake => "handshake",
            Scenario::Idle => "idle",
            Scenario::Grpc => "grpc",
        }),
    );
    out.insert("protocol".into(), json!(if h2 { "h2" } else { "http/1.1" }));
    if h2 {
        out.insert("connections".into(), json!(args.connections));
    }
    out.insert("addr".into(), json!(args.addr.to_string()));
    out.insert("concurrency".into(), json!(n));
    out.insert("client_cert".into(), json!(args.cert.is_some()));
    out.insert("requests".into(), json!(total.requests));
    out.insert("errors".into(), json!(total.errors));
    out.insert("unexpected_status".into(), json!(total.unexpected_status));
    out.insert("reused_sessions".into(), json!(total.reused_sessions));
    out.insert("reconnects".into(), json!(total.reconnects));
    out.insert("rps".into(), json!(round(total.requests as f64 / secs, 1)));
    out.insert("p50_us".into(), json!(percentile(&lat, 0.50)));
    out.insert("p99_us".into(), json!(percentile(&lat, 0.99)));
    out.insert("max_us".into(), json!(lat.last().copied().unwrap_or(0)));
    out.insert("duration_s".into(), json!(round(secs, 3)));
    for (w, ticks) in watches.iter().zip(&cpu) {
        out.insert(format!("cpu_ticks_{}", w.name), json!(ticks));
    }
    for (w, grew) in watches.iter().zip(&rss) {
        out.insert(format!("rss_grew_bytes_{}", w.name), json!(grew));
        out.insert(format!("rss_bytes_per_conn_{}", w.name), json!(grew / n as i64));
    }
    out.insert("cpu_ticks_client".into(), json!(cpu.last().copied().unwrap_or(0)));
    for (name, pct) in &busy {
        out.insert(format!("busy_pct_{name}"), json!(round(*pct, 1)));
    }
    let statuses: Map<String, Value> = total.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    out.insert("statuses".into(), Value::Object(statuses));
    out.insert("tls".into(), json!(total.tls));
    out.insert("first_error".into(), json!(total.first_error));
    println!("{}", Value::Object(out));
    Ok(())
}

/// `--header NAME:VALUE` arguments as header names and values.
fn parse_headers(args: &[String]) -> Result<Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>, String> {
    args.iter()
        .map(|arg| {
            let (name, value) = arg
                .split_once(':')
                .ok_or_else(|| format!("--header {arg:?}: expected NAME:VALUE"))?;
            let name = name.trim().parse().map_err(|e| format!("--header {arg:?}: {e}"))?;
            let value = value.trim().parse().map_err(|e| format!("--header {arg:?}: {e}"))?;
            Ok((name, value))
        })
        .collect()
}
