//! HTTP/1.x connections between requests and while a request head arrives.
//!
//! Pingora makes a request session (with its header buffer and the proxy's per-request state)
//! as soon as a connection is up or the previous answer is out, and waits inside it for the
//! next request. This takes Pingora's place in that loop and waits for the first byte of the
//! next request before any of it exists, so an idle kept-alive connection holds its TLS state
//! and little else.
//!
//! Pingora also times each read of a request head, not the head as a whole, so a client
//! sending one header line every few seconds could hold a connection for as long as it liked;
//! a head must be complete within the listener's `request_header_timeout` (as nginx's
//! `client_header_timeout`), counted from the connection's handshake for its first request
//! and from the first byte for the next ones.
//!
//! This is also where every client TLS connection, HTTP/1.x or HTTP/2, enters phasegate after
//! its handshake, so it is wrapped here in `tls::ClientStream`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncRead;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::tls::ConnectionTls;

/// How long a kept-alive HTTP/1.1 connection may wait for its next request (Pingora's own
/// default keep-alive timeout).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_IDLE_SECS: u64 = KEEPALIVE_IDLE.as_secs();

/// The request header buffer, sized as Pingora sizes its own (it takes this one instead).
const HEAD_BUFFER: usize = 4096;

pub struct HeadDeadline<A> {
    inner: Arc<A>,
    /// Set, and the idle connections woken, when the service stops listening.
    stopping: AtomicBool,
    stop: Notify,
}

impl<A> HeadDeadline<A> {
    pub fn new(inner: A) -> Self {
        HeadDeadline {
            inner: Arc::new(inner),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }

    /// The first bytes of the next request, read by `until`, in a buffer that becomes the
    /// session's header buffer. `None`: the client closed, went quiet, or we are stopping.
    /// `idle` and `stop` are the connection's own, made once: a timer made and dropped per
    /// request cost more than the request's policy decision. The timer may be set earlier
    /// than `until` (for a wait before); it only ends the wait once `until` has passed.
    async fn first_bytes(
        &self,
        stream: &mut Stream,
        until: tokio::time::Instant,
        mut idle: Pin<&mut tokio::time::Sleep>,
        mut stop: Pin<&mut Notified<'_>>,
    ) -> Option<BytesMut> {
        if idle.deadline() > until {
            idle.as_mut().reset(until);
        }
        std::future::poll_fn(|cx| {
            // Each attempt reads into a buffer on the stack that lives only for that poll, so
            // the wait holds no buffer; what arrives (usually the whole head) is copied out,
            // and Pingora parses it without reading again. Bytes OpenSSL already holds
            // (pipelined records) come at the first attempt.
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); HEAD_BUFFER];
            let mut buf = tokio::io::ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
                    head.extend_from_slice(buf.filled());
                    return Poll::Ready(Some(head));
                }
                // closed, or broken
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            // registered for the stop before looking at the flag: a stop between the two is seen
            if stop.as_mut().poll(cx).is_ready() || self.stopping.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            while idle.as_mut().poll(cx).is_ready() {
                if tokio::time::Instant::now() >= until {
                    return Poll::Ready(None);
                }
                idle.as_mut().reset(until);
            }
            Poll::Pending
        })
        .await
    }

    /// Runs one request's `work`, closing the connection if its head is not complete by
    /// `deadline`. (It takes the work, not the session: a session held here would be part of
    /// every idle connection's state.)
    async fn within_head_deadline<W>(work: W, conn: &ConnectionTls, before: u64, deadline: Duration) -> W::Output
    where
        W: Future<Output = Option<ReusedHttpStream>>,
    {
        tokio::pin!(work);
        // Usually the whole head came with its first bytes: once the request is past its
        // head (or done), no timer is needed.
        if let Poll::Ready(done) = futures::poll!(&mut work) {
            return done;
        }
        if conn.heads_read() != before {
            return work.await;
        }
        tokio::select! {
            biased;
            done = &mut work => done,
            _ = tokio::time::sleep(deadline) => {
                if conn.heads_read() == before {
                    // dropping the session closes the connection
                    tracing::debug!("request head not complete within the deadline; connection closed");
                    None
                } else {
                    work.await
                }
            }
        }
    }
}

#[async_trait]
impl<A> ServerApp for HeadDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // HTTP/1.1 and HTTP/2 alike poll the client when it has nothing to say
        let stream = crate::tls::ClientStream::wrap(stream);
        let tls = stream.get_ssl_digest();
        let conn = tls.as_ref().and_then(|t| t.extension.get::<ConnectionTls>());
        let http1 = !matches!(stream.selected_alpn_proto(), Some(ALPN::H2) | Some(ALPN::Custom(_)));
        let (Some(conn), true) = (conn, http1) else {
            // HTTP/2 goes Pingora's way: its streams arrive with their head read (the h2
            // layer bounds its frames), and an idle h2 connection holds no request session
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        };
        let connected = Instant::now();
        // the connection's waits share one timer and one stop signal (see first_bytes); the
        // timer firing while a request is served wakes this task once, for nothing
        let idle = tokio::time::sleep(KEEPALIVE_IDLE);
        let stop = self.stop.notified();
        tokio::pin!(idle, stop);
        let mut stream = stream;
        let mut previous: Option<HttpPersistentSettings> = None;
        // what we know of the bytes Pingora took for the request just served
        let mut handoff: Option<Handoff> = None;
        let mut first = true;
        loop {
            // bytes of a pipelined request that Pingora read with the previous one start the
            // next session as they are; otherwise it waits for the client to send
            let carried = match (&previous, handoff, stream.get_ssl()) {
                (None, _, _) => false,
                (Some(_), Some(handoff), Some(ssl)) if handoff.nothing_left(ssl) => false,
                (Some(settings), _, _) => carries_pipelined_bytes(settings),
            };
            let (prefix, deadline) = if carried {
                (None, conn.request_header_timeout)
            } else if first {
                let until = tokio::time::Instant::from_std(connected) + conn.request_header_timeout;
                let prefix = self
                    .first_bytes(&mut stream, until, idle.as_mut(), stop.as_mut())
                    .await?;
                (
                    Some(prefix),
                    conn.request_header_timeout.saturating_sub(connected.elapsed()),
                )
            } else {
                let until = tokio::time::Instant::now() + KEEPALIVE_IDLE;
                (
                    Some(
                        self.first_bytes(&mut stream, until, idle.as_mut(), stop.as_mut())
                            .await?,
                    ),
                    conn.request_header_timeout,
                )
            };
            handoff = prefix
                .as_deref()
                .zip(stream.get_ssl())
                .map(|(head, ssl)| Handoff::after(head, ssl));
            let before = conn.heads_read();
            // the session only lives inside Pingora's work: kept in this scope past the
            // await below, it would be part of every idle connection's state
            let work = {
                let mut session = ServerSession::new_http1(stream);
                match previous.take() {
                    Some(settings) => settings.apply_to_session(&mut session),
                    None => {
                        // what Pingora sets on a new connection
                        let stopping = *shutdown.borrow();
                        session.set_keepalive((!stopping).then_some(KEEPALIVE_IDLE_SECS));
                        session.set_keepalive_reuses_remaining(
                            self.inner.server_options().and_then(|o| o.keepalive_request_limit),
                        );
                    }
                }
                if let Some(prefix) = prefix {
                    session.set_pipelined_prefix(prefix);
                }
                self.inner.process_new_http(session, shutdown)
            };
            let (next, settings) = Self::within_head_deadline(work, conn, before, deadline)
                .await?
                .consume();
            stream = next;
            previous = settings;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
        self.inner.http_cleanup().await
    }
}

/// What we handed Pingora for one request. If it was exactly one request head, OpenSSL then
/// held nothing more, and it has read nothing from the socket since, Pingora cannot hold
/// bytes of the next request: the usual case is settled without asking Pingora.
#[derive(Clone, Copy)]
struct Handoff {
    exact: bool,
    socket_bytes: u64,
}

impl Handoff {
    fn after(head: &[u8], ssl: &openssl::ssl::SslRef) -> Handoff {
        Handoff {
            exact: is_one_whole_head(head) && !crate::tls::has_buffered_input(ssl),
            socket_bytes: crate::tls::socket_bytes_read(ssl),
        }
    }

    fn nothing_left(&self, ssl: &openssl::ssl::SslRef) -> bool {
        self.exact && crate::tls::socket_bytes_read(ssl) == self.socket_bytes
    }
}

/// Whether `bytes` end with the empty line that ends a request head, with none before it.
/// Every end httparse accepts (CRLF or bare LF lines) counts, so this never takes two heads
/// for one.
fn is_one_whole_head(bytes: &[u8]) -> bool {
    for lf in memchr::memchr_iter(b'\n', bytes) {
        let end = match &bytes[lf + 1..] {
            [b'\n', ..] => lf + 2,
            [b'\r', b'\n', ..] => lf + 3,
            _ => continue,
        };
        return end == bytes.len();
    }
    false
}

/// Whether Pingora carries bytes of the next request over from the previous one (a client
/// that pipelines). Pingora 0.9 offers no accessor for them, so this reads the field's value
/// off its derived `Debug`, without allocating and stopping there;
/// `reads_the_carried_bytes_of_pingoras_settings` pins the reading to Pingora's type.
fn carries_pipelined_bytes(settings: &HttpPersistentSettings) -> bool {
    use std::fmt::Write;
    #[derive(PartialEq)]
    enum Seen {
        Nothing,
        Field,
        Value(bool),
    }
    struct Reader(Seen);
    impl Write for Reader {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match self.0 {
                Seen::Nothing if s == "pipelined_prefix" => self.0 = Seen::Field,
                Seen::Field if s.trim_start_matches([':', ' ']).is_empty() => {}
                Seen::Field => {
                    self.0 = Seen::Value(s.trim_start_matches([':', ' ']).starts_with("Some"));
                    return Err(std::fmt::Error);
                }
                _ => {}
            }
            Ok(())
        }
    }
    let mut reader = Reader(Seen::Nothing);
    let _ = write!(reader, "{settings:?}");
    reader.0 == Seen::Value(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prefix: Option<&[u8]>, context: bool) -> HttpPersistentSettings {
        let (client, _server) = tokio::io::duplex(64);
        let mut session = ServerSession::new_http1(Box::new(client));
        session.set_keepalive(Some(60));
        session.set_keepalive_reuses_remaining(Some(u32::MAX));
        let mut settings = HttpPersistentSettings::for_session(&session);
        if context {
            settings.set_user_context(Box::new(7u64));
        }
        if let Some(prefix) = prefix {
            settings.set_pipelined_prefix(BytesMut::from(prefix));
        }
        settings
    }

    /// An app that serves nothing, to look at the connection loop alone.
    struct Nothing;

    #[async_trait]
    impl HttpServerApp for Nothing {
        async fn process_new_http(
            self: &Arc<Self>,
            _session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            None
        }
    }

    #[test]
    fn an_idle_connection_holds_little_more_than_its_stream() {
        let app = Arc::new(HeadDeadline::new(Nothing));
        let (client, _server) = tokio::io::duplex(64);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let connection = app.process_new(Box::new(client), &shutdown);
        // the loop's state (its idle timer and stop signal included, ~190 bytes) lives as
        // long as the connection; a request session (~700 bytes) inside it would be paid by
        // every idle connection
        let size = std::mem::size_of_val(&*connection);
        assert!(size <= 800, "{size} bytes");
    }

    /// Waits for the next request on a connection that sends nothing; asserts the wait ends
    /// empty, `patience` after it began and not long after.
    async fn wait_on_a_quiet_client(
        app: &HeadDeadline<Nothing>,
        stream: &mut Stream,
        idle: Pin<&mut tokio::time::Sleep>,
        stop: Pin<&mut Notified<'_>>,
        patience: Duration,
    ) {
        let start = tokio::time::Instant::now();
        assert!(app.first_bytes(stream, start + patience, idle, stop).await.is_none());
        let waited = start.elapsed();
        assert!(waited >= patience && waited < Duration::from_secs(3), "{waited:?}");
    }

    #[tokio::test]
    async fn a_wait_for_the_next_request_ends_at_its_own_deadline_whatever_the_timer_was_set_to() {
        use tokio::io::AsyncWriteExt;
        use tokio::time::Instant;
        let app = HeadDeadline::new(Nothing);
        let (client, mut server) = tokio::io::duplex(64);
        let mut stream: Stream = Box::new(client);
        let stop = app.stop.notified();
        let idle = tokio::time::sleep(Duration::from_millis(20));
        tokio::pin!(stop, idle);

        // the connection's timer, set for an earlier wait, fires first: this wait goes on
        let patience = Duration::from_millis(300);
        wait_on_a_quiet_client(&app, &mut stream, idle.as_mut(), stop.as_mut(), patience).await;

        // a timer set past this wait's deadline is brought forward
        idle.as_mut().reset(Instant::now() + Duration::from_secs(3600));
        let patience = Duration::from_millis(100);
        wait_on_a_quiet_client(&app, &mut stream, idle.as_mut(), stop.as_mut(), patience).await;

        // the first bytes of a request end the wait
        server.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let until = Instant::now() + Duration::from_secs(30);
        let head = app.first_bytes(&mut stream, until, idle.as_mut(), stop.as_mut()).await;
        assert_eq!(head.as_deref(), Some(&b"GET / HTTP/1.1\r\n"[..]));

        // and so does the service's stop, at once (the connection's one signal, woken)
        let waiting = app.first_bytes(&mut stream, until, idle.as_mut(), stop.as_mut());
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        app.stop.notify_waiters();
        let stopped = tokio::time::timeout(Duration::from_secs(3), waiting).await;
        assert!(matches!(stopped, Ok(None)), "the wait ends when the service stops");
    }

    #[test]
    fn one_whole_head_is_told_from_a_partial_one_and_from_two() {
        assert!(is_one_whole_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(is_one_whole_head(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(!is_one_whole_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!is_one_whole_head(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ));
        // a head ended by bare LFs, then another: two, not one
        assert!(!is_one_whole_head(
            b"GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        assert!(!is_one_whole_head(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"));
        assert!(!is_one_whole_head(b""));
    }

    #[test]
    fn reads_the_carried_bytes_of_pingoras_settings() {
        for context in [false, true] {
            assert!(!carries_pipelined_bytes(&settings(None, context)));
            assert!(carries_pipelined_bytes(&settings(Some(b"GET / HTTP/1.1\r\n"), context)));
            let long = b"x".repeat(10_000);
            assert!(carries_pipelined_bytes(&settings(Some(&long), context)));
        }
    }
}
