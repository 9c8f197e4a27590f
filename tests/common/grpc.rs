//! A real gRPC service (tonic) for tests: `test.Echo` with unary, server-streaming,
//! client-streaming and bidirectional methods, an error with details and a slow call, plus
//! the standard health service; served over h2c or TLS (optionally requiring a client
//! certificate), and a tonic client that reaches the gateway over real TLS with a client
//! certificate. The service is written out by hand (no protoc): the messages are prost
//! structs and the routing is what tonic's generated code does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::common::pki::ClientCert;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    /// Replies a server-streaming call sends.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// How long the Slow method waits before answering.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    /// What the backend heard from the gateway about the client.
    #[prost(string, tag = "2")]
    pub verdict: String,
    #[prost(string, tag = "3")]
    pub client_cert: String,
}

type ReplyStream = Pin<Box<dyn futures::Stream<Item = Result<EchoReply, Status>> + Send>>;

fn reply<T>(req: &Request<T>, text: String) -> EchoReply {
    let header = |name: &str| {
        req.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    EchoReply {
        text,
        verdict: header("x-mtls-verdict"),
        client_cert: header("x-forwarded-client-cert"),
    }
}

/// The Echo service, answering any `/<name>.Echo/<Method>` path.
#[derive(Clone, Default)]
pub struct EchoService;

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "test.Echo";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<B> tower::Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
        Box::pin(async move {
            let response = match method.as_str() {
                "Unary" => {
                    let svc = tower::service_fn(|r: Request<EchoRequest>| async move {
                        let text = r.get_ref().text.clone();
                        Ok::<_, Status>(Response::new(reply(&r, text)))
                    });
                    grpc.unary(svc, req).await
                }
                "Slow" => {
                    let svc = tower::service_fn(|r: Request<EchoRequest>| async move {
                        tokio::time::sleep(Duration::from_millis(r.get_ref().delay_ms)).await;
                        let text = r.get_ref().text.clone();
                        Ok::<_, Status>(Response::new(reply(&r, text)))
                    });
                    grpc.unary(svc, req).await
                }
                "Fail" => {
                    let svc = tower::service_fn(|r: Request<EchoRequest>| async move {
                        Err::<Response<EchoReply>, _>(Status::with_details(
                            tonic::Code::InvalidArgument,
                            format!("refusing {}", r.get_ref().text),
                            bytes::Bytes::from_static(b"detail-bytes"),
                        ))
                    });
                    grpc.unary(svc, req).await
                }
                "ServerStream" => {
                    let svc = tower::service_fn(|r: Request<EchoRequest>| async move {
                        let one = reply(&r, String::new());
                        let text = r.get_ref().text.clone();
                        let replies = (0..r.get_ref().count).map(move |i| {
                            Ok(EchoReply {
                                text: format!("{text}-{i}"),
                                ..one.clone()
                            })
                        });
                        Ok::<_, Status>(Response::new(Box::pin(futures::stream::iter(replies)) as ReplyStream))
                    });
                    grpc.server_streaming(svc, req).await
                }
                "ClientStream" => {
                    let svc = tower::service_fn(|r: Request<Streaming<EchoRequest>>| async move {
                        let head = reply(&r, String::new());
                        let mut texts = Vec::new();
                        let mut stream = r.into_inner();
                        while let Some(m) = stream.next().await {
                            texts.push(m?.text);
                        }
                        Ok::<_, Status>(Response::new(EchoReply {
                            text: texts.join("+"),
                            ..head
                        }))
                    });
                    grpc.client_streaming(svc, req).await
                }
                "Bidi" => {
                    let svc = tower::service_fn(|r: Request<Streaming<EchoRequest>>| async move {
                        let head = reply(&r, String::new());
                        let replies = r.into_inner().map(move |m| {
                            m.map(|m| EchoReply {
                                text: format!("echo:{}", m.text),
                                ..head.clone()
                            })
                        });
                        Ok::<_, Status>(Response::new(Box::pin(replies) as ReplyStream))
                    });
                    grpc.streaming(svc, req).await
                }
                _ => {
                    let mut r = http::Response::new(tonic::body::Body::default());
                    r.headers_mut()
                        .insert("grpc-status", (tonic::Code::Unimplemented as i32).into());
                    r.headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    r
                }
            };
            Ok(response)
        })
    }
}

/// A running gRPC backend; dropped, it stops.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The TLS side of a backend: its certificate, and the CA a client certificate must come
/// from (proxy → backend mTLS) if any.
pub struct BackendTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

/// Serves Echo and Health on a free port: h2c without `tls`, TLS (ALPN h2) with it.
pub async fn grpc_backend(tls: Option<BackendTls>) -> GrpcBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoService>().await;
    let router = tonic::transport::Server::builder()
        .add_service(EchoService)
        .add_service(health_service);
    let task = match tls {
        None => tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = router.serve_with_incoming(incoming).await;
        }),
        Some(tls) => {
            let acceptor = Arc::new(acceptor(&tls));
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsIo, std::io::Error>>(16);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                        if Pin::new(&mut stream).accept().await.is_ok() {
                            let _ = tx.send(Ok(TlsIo(stream))).await;
                        }
                    });
                }
            });
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                let _ = router.serve_with_incoming(incoming).await;
            })
        }
    };
    GrpcBackend { addr, health, task }
}

fn acceptor(tls: &BackendTls) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    let mut certs = openssl::x509::X509::stack_from_pem(tls.cert_pem.as_bytes())
        .unwrap()
        .into_iter();
    b.set_certificate(&certs.next().unwrap()).unwrap();
    for c in certs {
        b.add_extra_chain_cert(c).unwrap();
    }
    b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(tls.key_pem.as_bytes()).unwrap())
        .unwrap();
    b.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2", offered).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    if let Some(ca) = &tls.client_ca_pem {
        b.cert_store_mut()
            .add_cert(openssl::x509::X509::from_pem(ca.as_bytes()).unwrap())
            .unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    b.build()
}

/// A TLS connection tonic can serve.
pub struct TlsIo(tokio_openssl::SslStream<tokio::net::TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A gRPC channel to the gateway at `addr`: real TLS to `host` (SNI), ALPN h2, with the
/// client certificate if given; one HTTP/2 connection.
pub async fn channel(addr: SocketAddr, ca_pem: &str, host: &str, cert: Option<&ClientCert>) -> Channel {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(ca_pem.as_bytes()).unwrap())
        .unwrap();
    b.set_alpn_protos(b"\x02h2").unwrap();
    if let Some(cert) = cert {
        let mut certs = openssl::x509::X509::stack_from_pem(cert.chain_pem.as_bytes())
            .unwrap()
            .into_iter();
        b.set_certificate(&certs.next().unwrap()).unwrap();
        for c in certs {
            b.add_extra_chain_cert(c).unwrap();
        }
        b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(cert.key_pem.as_bytes()).unwrap())
            .unwrap();
    }
    let connector = Arc::new(b.build());
    let host = host.to_string();
    Endpoint::from_shared(format!("https://{host}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, host) = (connector.clone(), host.clone());
            async move {
                let ssl = connector.configure().unwrap().into_ssl(&host).unwrap();
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
                Pin::new(&mut stream).connect().await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// A client of `<service>.Echo`, written as tonic's generated clients are.
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
    service: String,
}

impl EchoClient {
    pub fn new(channel: Channel, service: &str) -> Self {
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
            service: service.to_string(),
        }
    }

    fn path(&self, method: &str) -> PathAndQuery {
        PathAndQuery::try_from(format!("/{}/{method}", self.service)).unwrap()
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))
    }

    pub async fn unary(&mut self, method: &str, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let path = self.path(method);
        self.grpc.unary(req, path, ProstCodec::default()).await
    }

    pub async fn server_stream(&mut self, req: EchoRequest) -> Result<Vec<EchoReply>, Status> {
        self.ready().await?;
        let path = self.path("ServerStream");
        let mut stream = self
            .grpc
            .server_streaming(Request::new(req), path, ProstCodec::default())
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok(out)
    }

    pub async fn client_stream(&mut self, texts: &[&str]) -> Result<EchoReply, Status> {
        self.ready().await?;
        let path = self.path("ClientStream");
        let messages: Vec<EchoRequest> = texts
            .iter()
            .map(|t| EchoRequest {
                text: t.to_string(),
                ..Default::default()
            })
            .collect();
        let req = Request::new(futures::stream::iter(messages));
        Ok(self
            .grpc
            .client_streaming(req, path, ProstCodec::default())
            .await?
            .into_inner())
    }

    /// Sends `texts` one at a time, waiting for each echo before the next: a conversation.
    pub async fn bidi(&mut self, texts: &[&str]) -> Result<Vec<String>, Status> {
        self.ready().await?;
        let path = self.path("Bidi");
        let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
        let req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut replies = self
            .grpc
            .streaming(req, path, ProstCodec::<EchoRequest, EchoReply>::default())
            .await?
            .into_inner();
        let mut out = Vec::new();
        for t in texts {
            tx.send(EchoRequest {
                text: t.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|_| Status::internal("request stream closed"))?;
            match replies.message().await? {
                Some(r) => out.push(r.text),
                None => return Err(Status::internal("reply stream ended early")),
            }
        }
        drop(tx);
        while replies.message().await?.is_some() {}
        Ok(out)
    }
}

pub fn text(t: &str) -> Request<EchoRequest> {
    Request::new(EchoRequest {
        text: t.to_string(),
        ..Default::default()
    })
}
