//! WebSocket through the gateway, with a real client and server (tokio-tungstenite): echo,
//! a 1 MiB message, a stream that stays quiet longer than the route's read timeout, the
//! stream idle timeout ending in a clean close, and a close handshake.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use common::{TestGateway, TestPki};
use futures::{SinkExt, StreamExt};
use openssl::ssl::{SslConnector, SslMethod};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// An echo WebSocket server: every text or binary message comes back.
async fn ws_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_openssl::SslStream<tokio::net::TcpStream>>;

async fn connect(gw: &TestGateway, pki: &TestPki, path: &str) -> Ws {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(pki.root_pem().as_bytes()).unwrap())
        .unwrap();
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    let ssl = b.build().configure().unwrap().into_ssl("api.test").unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls).connect().await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(format!("wss://api.test{path}"), tls)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws
}

const ROUTES: &str = r#"
routes:
  - name: ws
    match: { host: api.test, path_prefix: /ws }
    upstream:
      address: "{backend}"
      timeouts: { read: 300ms, stream_idle: 1500ms }
    mtls: { mode: audit, trust: internal }
"#;

async fn gateway(pki: &TestPki) -> TestGateway {
    let backend = ws_backend().await;
    TestGateway::start(pki, &ROUTES.replace("{backend}", &backend.to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_large_and_small_survive_quiet_periods_past_the_read_timeout() {
    let pki = TestPki::new();
    let gw = gateway(&pki).await;
    let mut ws = connect(&gw, &pki, "/ws/chat").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data(), big);
    // quiet for three times the read timeout: the stream idle timeout applies, not `read`
    tokio::time::sleep(Duration::from_millis(900)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still here"));
    // a close handshake from the client completes
    ws.close(None).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        Some(Ok(other)) => panic!("after close: {other:?}"),
        Some(Err(e)) => panic!("the close handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_quiet_past_the_stream_idle_timeout_is_closed_cleanly() {
    let pki = TestPki::new();
    let gw = gateway(&pki).await;
    let mut ws = connect(&gw, &pki, "/ws/idle").await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
    // no bytes of an HTTP answer inside the stream: a WebSocket close, going away
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed in time");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away, "{frame:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
