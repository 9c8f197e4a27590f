//! A real HTTPS client (OpenSSL + hyper) with the knobs the tests need: client
//! certificate, SNI, ALPN, session resumption, and raw headers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use tokio::net::TcpStream;

use super::pki::ClientCert;

#[derive(Clone, Default)]
pub struct ClientOptions {
    pub cert: Option<ClientCert>,
    /// SNI to send; `None` sends none.
    pub sni: Option<String>,
    pub h2: bool,
    /// CA that must have issued the gateway's certificate.
    pub ca_pem: String,
    /// A session to offer for resumption.
    pub session: Option<SslSession>,
    pub tls12: bool,
    /// OpenSSL security level of the client's own context (0 lets it use a weak key).
    pub security_level: Option<u32>,
}

impl ClientOptions {
    pub fn new(ca_pem: &str, sni: &str) -> Self {
        ClientOptions {
            ca_pem: ca_pem.to_string(),
            sni: Some(sni.to_string()),
            ..Default::default()
        }
    }

    pub fn cert(mut self, cert: Option<ClientCert>) -> Self {
        self.cert = cert;
        self
    }

    pub fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One TLS connection to the gateway; requests go over it (keep-alive or HTTP/2).
pub struct Client {
    sender: Sender,
    /// The latest session the server issued (TLS 1.3 tickets arrive after the handshake).
    sessions: Arc<Mutex<Option<SslSession>>>,
    pub session_reused: bool,
    pub alpn: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header the echo backend received, if it echoed this request.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let v = self.json();
        let values = v["headers"][name].as_array()?;
        assert_eq!(values.len(), 1, "{name} forwarded {} times", values.len());
        values[0].as_str().map(str::to_string)
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr, opts: &ClientOptions) -> Result<Client, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        let ca = X509::from_pem(opts.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        b.cert_store_mut().add_cert(ca).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::PEER);
        if let Some(level) = opts.security_level {
            b.set_security_level(level);
        }
        if opts.tls12 {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        }
        b.set_alpn_protos(if opts.h2 { b"\x02h2" } else { b"\x08http/1.1" })
            .unwrap();
        if let Some(cert) = &opts.cert {
            let mut certs = X509::stack_from_pem(cert.chain_pem.as_bytes()).unwrap().into_iter();
            b.set_certificate(&certs.next().unwrap()).unwrap();
            for c in certs {
                b.add_extra_chain_cert(c).unwrap();
            }
            b.set_private_key(&PKey::private_key_from_pem(cert.key_pem.as_bytes()).unwrap())
                .unwrap();
        }
        let sessions: Arc<Mutex<Option<SslSession>>> = Arc::default();
        let store = sessions.clone();
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        b.set_new_session_callback(move |_, session| *store.lock().unwrap() = Some(session));
        let connector = b.build();
        let mut config = connector.configure().map_err(|e| e.to_string())?;
        config.set_use_server_name_indication(opts.sni.is_some());
        config.set_verify_hostname(opts.sni.is_some());
        let mut ssl = config
            .into_ssl(opts.sni.as_deref().unwrap_or("unused"))
            .map_err(|e| e.to_string())?;
        if let Some(session) = &opts.session {
            // SAFETY: the session comes from a connection made with an equivalent context.
            unsafe { ssl.set_session(session).map_err(|e| e.to_string())? };
        }
        let stream = tls_connect(addr, ssl).await?;
        if let Some(s) = stream.ssl().session() {
            sessions.lock().unwrap().get_or_insert_with(|| s.to_owned());
        }
        let session_reused = stream.ssl().session_reused();
        let alpn = stream.ssl().selected_alpn_protocol().map(|p| p.to_vec());
        let io = TokioIo::new(stream);
        let sender = if opts.h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Client {
            sender,
            sessions,
            session_reused,
            alpn,
        })
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub fn session(&self) -> Option<SslSession> {
        self.sessions.lock().unwrap().clone()
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.request(host, path, &[]).await.unwrap()
    }

    /// Sends a GET with extra headers (repeated names are sent repeatedly).
    pub async fn request(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut b = hyper::Request::builder().method("GET");
        b = match &self.sender {
            Sender::H1(_) => b.uri(path).header("host", host),
            Sender::H2(_) => b.uri(format!("https://{host}{path}")),
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A TCP connection to `addr` with `ssl`'s TLS handshake done.
pub async fn tls_connect(
    addr: SocketAddr,
    ssl: openssl::ssl::Ssl,
) -> Result<tokio_openssl::SslStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(stream)
}

/// [`get_once`] as a background task, for a request that must be in flight while the test
/// goes on.
pub fn spawn_get_once(
    addr: SocketAddr,
    opts: &ClientOptions,
    host: &str,
    path: &str,
) -> tokio::task::JoinHandle<Reply> {
    let (opts, host, path) = (opts.clone(), host.to_string(), path.to_string());
    tokio::spawn(async move { get_once(addr, &opts, &host, &path).await })
}

/// One request on a fresh connection.
pub async fn get_once(addr: SocketAddr, opts: &ClientOptions, host: &str, path: &str) -> Reply {
    let mut c = Client::connect(addr, opts)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    c.get(host, path).await
}

/// What the echo backend saw of the first request, from a raw exchange's first answer
/// (chunked or not): the JSON object that starts its body.
pub fn first_echo(response: &str) -> serde_json::Value {
    let body = response
        .find("\r\n{")
        .map(|at| &response[at + 2..])
        .unwrap_or_else(|| panic!("no JSON body in: {response}"));
    serde_json::Deserializer::from_str(body)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("the body is not the echo's JSON: {response}"))
}

/// Sends raw bytes over a fresh TLS connection and returns what came back (until the server
/// closes or 3 s pass) — for requests no well-behaved client library would send.
pub async fn raw_exchange(addr: SocketAddr, ca_pem: &str, sni: &str, request: &[u8]) -> Result<String, String> {
    raw_exchange_timed(addr, ca_pem, sni, &[(request, std::time::Duration::ZERO)]).await
}

/// [`raw_exchange`] with the request sent in parts, each after its pause: bytes that arrive
/// while the gateway is busy with what came before.
pub async fn raw_exchange_timed(
    addr: SocketAddr,
    ca_pem: &str,
    sni: &str,
    parts: &[(&[u8], std::time::Duration)],
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.cert_store_mut()
        .add_cert(X509::from_pem(ca_pem.as_bytes()).unwrap())
        .unwrap();
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    let ssl = b.build().configure().unwrap().into_ssl(sni).unwrap();
    let mut stream = tls_connect(addr, ssl).await?;
    for (bytes, pause) in parts {
        tokio::time::sleep(*pause).await;
        stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
