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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
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

    /// The first byte of the next request, read within `patience`, in a buffer that becomes
    /// the session's header buffer. `None`: the client closed, went quiet, or we are stopping.
    async fn first_byte(&self, stream: &mut Stream, patience: Duration) -> Option<BytesMut> {
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        tokio::pin!(read);
        // a request already buffered (pipelined records OpenSSL has read) is taken at once
        let read = match futures::poll!(&mut read) {
            Poll::Ready(read) => read,
            Poll::Pending => {
                let stop = self.stop.notified();
                tokio::pin!(stop);
                stop.as_mut().enable();
                if self.stopping.load(Ordering::Acquire) {
                    return None;
                }
                tokio::select! {
                    biased;
                    read = &mut read => read,
                    _ = stop => return None,
                    _ = tokio::time::sleep(patience) => return None,
                }
            }
        };
        match read {
            Ok(1) => {
                let mut buffer = BytesMut::with_capacity(HEAD_BUFFER);
                buffer.extend_from_slice(&byte);
                Some(buffer)
            }
            _ => None,
        }
    }

    /// Serves one request, closing the connection if its head is not complete by `deadline`.
    async fn serve(
        self: &Arc<Self>,
        session: ServerSession,
        conn: &ConnectionTls,
        deadline: Duration,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::apps::ReusedHttpStream>
    where
        A: HttpServerApp + Send + Sync + 'static,
    {
        let before = conn.heads_read();
        let work = self.inner.process_new_http(session, shutdown);
        tokio::pin!(work);
        // Usually the whole head came with its first byte: once the request is past its head
        // (or done), no timer is needed.
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
        let tls = stream.get_ssl_digest();
        let conn = tls.as_ref().and_then(|t| t.extension.get::<ConnectionTls>());
        let http1 = !matches!(stream.selected_alpn_proto(), Some(ALPN::H2) | Some(ALPN::Custom(_)));
        let (Some(conn), true) = (conn, http1) else {
            // HTTP/2 goes Pingora's way: its streams arrive with their head read (the h2
            // layer bounds its frames), and an idle h2 connection holds no request session
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        };
        let connected = Instant::now();
        let mut stream = stream;
        let mut previous: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // bytes of a pipelined request that Pingora read with the previous one start the
            // next session as they are; otherwise it waits for the client to send
            let carried = previous.as_ref().is_some_and(carries_pipelined_bytes);
            let (prefix, deadline) = if carried {
                (None, conn.request_header_timeout)
            } else if first {
                let prefix = self.first_byte(&mut stream, conn.request_header_timeout).await?;
                (Some(prefix), conn.request_header_timeout.saturating_sub(connected.elapsed()))
            } else {
                (Some(self.first_byte(&mut stream, KEEPALIVE_IDLE).await?), conn.request_header_timeout)
            };
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
            let (next, settings) = self.serve(session, conn, deadline, shutdown).await?.consume();
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

/// Whether Pingora carries bytes of the next request over from the previous one (a client
/// that pipelines). Pingora 0.9 offers no accessor for them, so this reads its derived
/// `Debug`, into a fixed buffer without allocating; `reads_the_carried_bytes_of_pingoras_settings`
/// pins the reading to Pingora's type.
fn carries_pipelined_bytes(settings: &HttpPersistentSettings) -> bool {
    use std::fmt::Write;
    const FIELD: &[u8] = b"pipelined_prefix: ";
    struct Head {
        bytes: [u8; 256],
        len: usize,
    }
    impl Write for Head {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            // a long prefix stops the formatting once the buffer is full
            if take < s.len() {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut head = Head {
        bytes: [0; 256],
        len: 0,
    };
    let _ = write!(head, "{settings:?}");
    let head = &head.bytes[..head.len];
    head.windows(FIELD.len())
        .position(|w| w == FIELD)
        .is_some_and(|at| head[at + FIELD.len()..].starts_with(b"Some"))
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
