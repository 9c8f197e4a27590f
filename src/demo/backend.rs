//! A small HTTP backend that echoes what it received as JSON: the demo's upstream and the
//! tests' witness of what the gateway forwards. Optionally TLS, optionally requiring a
//! client certificate (the gateway's, for proxy → backend mTLS).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use tokio::net::TcpListener;

/// TLS for the echo backend, from PEM files.
#[derive(Clone, Debug)]
pub struct BackendTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// When set, a client certificate issued by this CA is required.
    pub client_ca: Option<std::path::PathBuf>,
}

/// Serves until the returned handle is aborted.
pub async fn serve_echo(
    listener: TcpListener,
    name: &str,
    tls: Option<BackendTls>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_echo_with(listener, name, tls, EchoControl::default()).await
}

/// [`serve_echo`] with levers for tests.
pub async fn serve_echo_with(
    listener: TcpListener,
    name: &str,
    tls: Option<BackendTls>,
    control: EchoControl,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let acceptor = match tls {
        Some(tls) => Some(Arc::new(tls_acceptor(&tls).map_err(std::io::Error::other)?)),
        None => None,
    };
    let name: Arc<str> = name.into();
    Ok(tokio::spawn(async move {
        // connections live in this set, so aborting the server closes them too
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let acceptor = acceptor.clone();
            let name = name.clone();
            let control = control.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(req, name.clone(), peer, control.clone()));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(acceptor) => {
                        let Ok(ssl) = Ssl::new(acceptor.context()) else { return };
                        let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
                            return;
                        };
                        if std::pin::Pin::new(&mut stream).accept().await.is_err() {
                            return;
                        }
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    }))
}

fn tls_acceptor(tls: &BackendTls) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_certificate_chain_file(&tls.cert)?;
    b.set_private_key_file(&tls.key, SslFiletype::PEM)?;
    if let Some(ca) = &tls.client_ca {
        b.set_ca_file(ca)?;
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(b.build())
}

/// Levers for tests: whether `/healthz` answers 200, and how many requests were served.
#[derive(Clone, Debug, Default)]
pub struct EchoControl {
    pub unhealthy: Arc<std::sync::atomic::AtomicBool>,
    pub served: Arc<std::sync::atomic::AtomicU64>,
}

async fn echo(
    req: Request<Incoming>,
    name: Arc<str>,
    peer: SocketAddr,
    control: EchoControl,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    use std::sync::atomic::Ordering;
    if req.uri().path() == "/healthz" {
        let status = if control.unhealthy.load(Ordering::Relaxed) {
            503
        } else {
            200
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"health\n")))
            .expect("static response parts are valid"));
    }
    control.served.fetch_add(1, Ordering::Relaxed);
    // `?delay_ms=N` answers late: a slow backend for timeout tests and the SIGTERM drain
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    // the body is read (and counted), as a real backend would: that is also what makes
    // hyper answer `Expect: 100-continue`
    let body_bytes = match http_body_util::Limited::new(body, 8 * 1024 * 1024).collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = serde_json::json!({
        "backend": &*name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "peer": peer.to_string(),
        "version": format!("{:?}", req.version()),
        "body_bytes": body_bytes,
        "headers": headers,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid"))
}
