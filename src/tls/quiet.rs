//! A client's TLS connection that goes through OpenSSL to read only when there is something
//! to read.
//!
//! Pingora polls the client's connection when nothing can have arrived: between requests
//! (the end of each request wakes the task more than once) and, while the backend answers,
//! to notice a client that leaves. Each such read through OpenSSL finds nothing at a cost of
//! ~1,800 instructions (OpenSSL's record layer, its error queue, cleared again by Pingora
//! before every call), several times per request. This stream first reads the socket
//! itself, which costs little when it is empty; what it finds goes back in front of the
//! socket, where OpenSSL reads it as it would have. Flushes go straight to the socket.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client connection as Pingora's TLS listener makes it (OpenSSL over a TCP stream).
type TlsStream = pingora::protocols::tls::SslStream<pingora::protocols::l4::stream::Stream>;

/// How much of the socket one look reads (a request head, usually all there is).
const LOOK: usize = 4096;

#[derive(Debug)]
pub struct QuietReads {
    inner: TlsStream,
}

impl QuietReads {
    /// The connection wrapped, if it is Pingora's OpenSSL stream; otherwise as it was.
    pub fn wrap(stream: Stream) -> Stream {
        if !stream.as_any().is::<TlsStream>() {
            return stream;
        }
        match stream.into_any().downcast::<TlsStream>() {
            Ok(tls) => Box::new(QuietReads { inner: *tls }),
            Err(_) => unreachable!("the type was checked above"),
        }
    }
}

impl AsyncRead for QuietReads {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let inner = &mut self.get_mut().inner;
        if !super::has_buffered_input(inner.ssl()) {
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); LOOK];
            let mut look = ReadBuf::uninit(&mut scratch);
            let socket = inner.get_mut();
            match Pin::new(&mut *socket).poll_read(cx, &mut look) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // bytes go back for OpenSSL; the end of the stream is left for OpenSSL to
                // find itself, so that it tells a close_notify from a cut connection
                Poll::Ready(Ok(())) => socket.rewind(look.filled()),
            }
        }
        Pin::new(inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuietReads {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    /// Flushing a TLS stream is flushing its socket (OpenSSL keeps no written data back; the
    /// `openssl` crate's flush is the socket's): Pingora flushes four times per response, and
    /// each flush through the TLS layer first emptied OpenSSL's error queue.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().inner.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// Everything else is the wrapped stream's.

#[async_trait]
impl Shutdown for QuietReads {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut self.inner).await
    }
}

impl UniqueID for QuietReads {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for QuietReads {
    fn get_ssl(&self) -> Option<&openssl::ssl::SslRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for QuietReads {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for QuietReads {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for QuietReads {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for QuietReads {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::{CertificateAuthority, LeafSpec};
    use openssl::ssl::{Ssl as OpenSsl, SslConnector, SslMethod, SslVerifyMode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One real TLS connection: the server side as Pingora's listener makes it (wrapped or
    /// not), and the client's.
    async fn connection(wrap: bool) -> (Stream, tokio_openssl::SslStream<tokio::net::TcpStream>) {
        let ca = CertificateAuthority::root("quiet reads test root").expect("root");
        let server = ca.issue(&LeafSpec::server(&["localhost"])).expect("server");
        let mut acceptor = crate::tls::test_acceptor(&server);
        acceptor.set_read_ahead(true);
        let acceptor = acceptor.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut connector = SslConnector::builder(SslMethod::tls()).expect("connector");
            connector.set_verify(SslVerifyMode::NONE);
            let ssl = OpenSsl::new(connector.build().context()).expect("ssl");
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
            Pin::new(&mut tls).connect().await.expect("client handshake");
            tls
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let l4 = pingora::protocols::l4::stream::Stream::from(tcp);
        let tls: Stream = Box::new(
            pingora::protocols::tls::server::handshake(&acceptor, l4)
                .await
                .expect("server handshake"),
        );
        let server = if wrap { QuietReads::wrap(tls) } else { tls };
        assert_eq!(server.as_any().is::<QuietReads>(), wrap);
        assert!(server.get_ssl().is_some());
        (server, client.await.expect("client"))
    }

    /// What the server reads, and how the stream ends, when the client sends `message` in
    /// pieces that split records and straddle the look's size, then ends as `end` says.
    async fn exchange(wrap: bool, message: &[u8], end: End) -> (Vec<u8>, Result<usize, std::io::ErrorKind>) {
        let (mut server, mut client) = connection(wrap).await;
        let sent = message.to_vec();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(LOOK + 1000) {
                client.write_all(piece).await.expect("write");
                client.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            match end {
                End::CloseNotify => client.shutdown().await.expect("close_notify"),
                // the TCP connection ends (FIN) without a TLS close_notify
                End::Cut => client.get_mut().shutdown().await.expect("tcp shutdown"),
            }
            client
        });
        let mut received = Vec::new();
        let ended = server.read_to_end(&mut received).await.map_err(|e| e.kind());
        drop(writer.await.expect("writer"));
        (received, ended)
    }

    /// What the client reads when the server writes `message` in pieces, flushing each,
    /// then closes.
    async fn served(wrap: bool, message: &[u8]) -> Vec<u8> {
        let (mut server, mut client) = connection(wrap).await;
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.expect("read");
            received
        });
        for piece in message.chunks(LOOK + 1000) {
            server.write_all(piece).await.expect("write");
            server.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.shutdown().await.expect("close_notify");
        reader.await.expect("reader")
    }

    #[derive(Clone, Copy, Debug)]
    enum End {
        CloseNotify,
        Cut,
    }

    #[tokio::test]
    async fn the_wrapped_stream_reads_and_writes_what_pingoras_does_and_ends_as_it_ends() {
        let message: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        for end in [End::CloseNotify, End::Cut] {
            let (plain, plain_end) = exchange(false, &message, end).await;
            let (wrapped, wrapped_end) = exchange(true, &message, end).await;
            assert!(plain == message, "{end:?}: the bytes arrive as sent");
            assert!(
                wrapped == message,
                "{end:?}: the bytes arrive as sent through the wrapper"
            );
            assert_eq!(wrapped_end, plain_end, "{end:?}");
        }
        assert!(served(false, &message).await == message, "the bytes go out as written");
        assert!(
            served(true, &message).await == message,
            "the bytes go out as written through the wrapper"
        );
    }
}
