//! A client's TLS connection that goes through OpenSSL only when it must: to read when there
//! is something to read, and to write once per flush.
//!
//! Pingora polls the client's connection when nothing can have arrived: between requests
//! (the end of each request wakes the task more than once) and, while the backend answers,
//! to notice a client that leaves. Each such read through OpenSSL finds nothing at a cost of
//! ~1,800 instructions (OpenSSL's record layer, its error queue, cleared again by Pingora
//! before every call), several times per request. This stream first reads the socket
//! itself, which costs little when it is empty; what it finds goes back in front of the
//! socket, where OpenSSL reads it as it would have.
//!
//! Pingora writes a response's head and body separately (and the h2 layer a frame's head and
//! payload), and OpenSSL makes a TLS record of each write: ~4,500 instructions apiece, most of
//! them setting up the cipher. Writes here gather until the flush that ends them, up to one
//! record's worth (16 KiB, nginx's `ssl_buffer_size`), so a small response leaves as one
//! record. Pingora already flushes wherever bytes must leave: its socket buffers its writes
//! too. Flushes go straight to the socket.

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

/// The most plaintext gathered for one write through OpenSSL: a full TLS record.
const RECORD: usize = 16 * 1024;

#[derive(Debug)]
pub struct ClientStream {
    inner: TlsStream,
    /// Plaintext written since the last write through OpenSSL. Empty, without an
    /// allocation, between responses: an idle connection holds no buffer.
    gathered: Vec<u8>,
    /// How much of `gathered` OpenSSL has taken, while it is being sent.
    sent: usize,
    /// A send of `gathered` is under way. OpenSSL must see the same bytes again when it
    /// asked to be called back, so nothing is added until it is done.
    sending: bool,
}

impl ClientStream {
    /// The connection wrapped, if it is Pingora's OpenSSL stream; otherwise as it was.
    pub fn wrap(stream: Stream) -> Stream {
        if !stream.as_any().is::<TlsStream>() {
            return stream;
        }
        match stream.into_any().downcast::<TlsStream>() {
            Ok(tls) => Box::new(ClientStream {
                inner: *tls,
                gathered: Vec::new(),
                sent: 0,
                sending: false,
            }),
            Err(_) => unreachable!("the type was checked above"),
        }
    }

    /// Sends what was gathered through OpenSSL, as one record when it fits in one.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.gathered.len() {
            self.sending = true;
            match Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.gathered = Vec::new();
        self.sent = 0;
        self.sending = false;
        Poll::Ready(Ok(()))
    }

    /// Takes as much of `bufs` as the gathered record has room for; a write of a record or
    /// more with nothing gathered goes to OpenSSL as it is (nothing to join it to).
    fn poll_gather(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<std::io::Result<usize>> {
        if self.sending || self.gathered.len() >= RECORD {
            std::task::ready!(self.poll_send_gathered(cx))?;
        }
        if self.gathered.is_empty() {
            if let Some(large) = bufs.iter().find(|b| !b.is_empty()).filter(|b| b.len() >= RECORD) {
                return Pin::new(&mut self.inner).poll_write(cx, large);
            }
        }
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            let room = RECORD - self.gathered.len();
            if room == 0 {
                break;
            }
            if self.gathered.capacity() == 0 {
                self.gathered.reserve_exact(RECORD);
            }
            let part = &buf[..buf.len().min(room)];
            self.gathered.extend_from_slice(part);
            taken += part.len();
        }
        Poll::Ready(Ok(taken))
    }
}

impl AsyncRead for ClientStream {
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

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().poll_gather(cx, &[buf])
    }

    /// What was gathered goes through OpenSSL; then flushing the TLS stream is flushing its
    /// socket (OpenSSL keeps no written data back; the `openssl` crate's flush is the
    /// socket's): Pingora flushes four times per response, and each flush through the TLS
    /// layer first emptied OpenSSL's error queue.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_gathered(cx))?;
        Pin::new(this.inner.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_gathered(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // an h2 frame comes as its head and payload (and Pingora's HTTP/2 writes vectored)
        let mut slices = [&[][..]; 8];
        let n = bufs.len().min(slices.len());
        for (slice, buf) in slices.iter_mut().zip(bufs) {
            *slice = buf;
        }
        self.get_mut().poll_gather(cx, &slices[..n])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

// Everything else is the wrapped stream's.

#[async_trait]
impl Shutdown for ClientStream {
    /// Pingora's TLS shutdown, through this stream's: what was gathered goes first.
    async fn shutdown(&mut self) {
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(self).await {
            tracing::warn!("TLS shutdown failed, {e}");
        }
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
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

impl GetTimingDigest for ClientStream {
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

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
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
        let server = if wrap { ClientStream::wrap(tls) } else { tls };
        assert_eq!(server.as_any().is::<ClientStream>(), wrap);
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

    /// The bytes a client's socket delivered for `plaintext` bytes of application data: TLS
    /// 1.3 adds 22 to each record (5 of header, 1 of inner type, 16 of AES-GCM tag).
    async fn socket_bytes_for(client: &mut tokio_openssl::SslStream<tokio::net::TcpStream>, plaintext: usize) -> u64 {
        let before = crate::tls::socket_bytes_read(client.ssl());
        let mut buf = vec![0; plaintext];
        client.read_exact(&mut buf).await.expect("read");
        crate::tls::socket_bytes_read(client.ssl()) - before
    }

    #[tokio::test]
    async fn a_head_and_body_written_before_one_flush_leave_as_one_tls_record() {
        const OVERHEAD: u64 = 22;
        for wrap in [false, true] {
            let (mut server, mut client) = connection(wrap).await;
            // the handshake's session tickets arrive with the first answer, not counted
            server.write_all(b"hello").await.expect("write");
            server.flush().await.expect("flush");
            let _ = socket_bytes_for(&mut client, 5).await;

            let head = [b'h'; 200];
            let body = [b'b'; 50];
            server.write_all(&head).await.expect("head");
            server.write_all(&body).await.expect("body");
            server.flush().await.expect("flush");
            let records = (socket_bytes_for(&mut client, 250).await - 250) / OVERHEAD;
            assert_eq!(records, if wrap { 1 } else { 2 }, "wrapped: {wrap}");

            // an h2 frame's head and payload, written vectored, make one record too
            let mut frame = bytes::Buf::chain(
                bytes::Bytes::from_static(&[b'f'; 9]),
                bytes::Bytes::from_static(&[b'p'; 100]),
            );
            server.write_all_buf(&mut frame).await.expect("frame");
            server.flush().await.expect("flush");
            let records = (socket_bytes_for(&mut client, 109).await - 109) / OVERHEAD;
            if wrap {
                assert_eq!(records, 1, "a vectored write");
            }
        }
    }

    #[tokio::test]
    async fn writes_of_every_size_to_a_client_that_reads_late_arrive_whole_and_in_order() {
        let (mut server, mut client) = connection(true).await;
        // small pieces that gather, pieces that straddle a record, and pieces of a record
        // or more that go as they are, until the socket is full and writes must wait
        let sizes = [1, 200, RECORD - 1, 3, RECORD, 40_000, 7, RECORD + 1, 100];
        let mut message = Vec::new();
        let mut i = 0;
        while message.len() < 8 << 20 {
            let size = sizes[i % sizes.len()];
            message.extend((0..size).map(|j| ((i * 7 + j) % 251) as u8));
            i += 1;
        }
        let expected = message.clone();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.expect("read");
            received
        });
        let mut at = 0;
        i = 0;
        while at < message.len() {
            let piece = &message[at..(at + sizes[i % sizes.len()]).min(message.len())];
            server.write_all(piece).await.expect("write");
            if i % 5 == 4 {
                server.flush().await.expect("flush");
            }
            at += piece.len();
            i += 1;
        }
        // no flush before the end: Pingora's shutdown sends what was gathered first
        pingora::protocols::Shutdown::shutdown(&mut *server).await;
        let received = reader.await.expect("reader");
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "the bytes arrive as written");
    }
}
