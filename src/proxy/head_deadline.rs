//! A total deadline for each request head. Pingora times each read of a request head, not
//! the head as a whole, so a client sending one header line every few seconds could hold a
//! connection for as long as it liked; this wraps the proxy app and closes a connection
//! whose head is not complete in time (as nginx's `client_header_timeout` does).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::tls::ConnectionTls;

/// How long Pingora waits for the next request on a kept-alive HTTP/1.1 connection; the
/// head deadline of a reused connection starts when that wait ends at the latest.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

pub struct HeadDeadline<A> {
    inner: Arc<A>,
}

impl<A> HeadDeadline<A> {
    pub fn new(inner: A) -> Self {
        HeadDeadline { inner: Arc::new(inner) }
    }
}

#[async_trait]
impl<A> HttpServerApp for HeadDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // HTTP/2 streams arrive with their head read (the h2 layer bounds its frames)
        let tls = session.digest().and_then(|d| d.ssl_digest.clone());
        let conn = tls.as_ref().and_then(|t| t.extension.get::<ConnectionTls>());
        let (Some(conn), false) = (conn, session.is_http2()) else {
            return self.inner.process_new_http(session, shutdown).await;
        };
        let before = conn.heads_read();
        // on a kept-alive connection the wait for the next request comes first
        let idle = if before == 0 { Duration::ZERO } else { KEEPALIVE_IDLE };
        let work = self.inner.process_new_http(session, shutdown);
        tokio::pin!(work);
        tokio::select! {
            biased;
            done = &mut work => done,
            _ = tokio::time::sleep(idle + conn.request_header_timeout) => {
                if conn.heads_read() == before {
                    // the head never completed: dropping the session closes the connection
                    tracing::debug!("request head not complete within the deadline; connection closed");
                    None
                } else {
                    work.await
                }
            }
        }
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}
