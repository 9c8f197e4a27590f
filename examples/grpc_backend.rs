//! The gRPC backend of the load bench (`benches/load/`, issue 15): a tonic server answering
//! unary `/<package>.Echo/Unary` calls with the text it was sent, over h2c (HTTP/2 in
//! cleartext with prior knowledge, as gRPC servers inside a cluster speak). The service is
//! written out by hand (no protoc), as in tests/common/grpc.rs.
//!
//! ```text
//! cargo run --release --example grpc_backend -- --addr 127.0.0.1:50051
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use clap::Parser;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, Default)]
struct EchoService;

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<B> tower::Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let unary = req.uri().path().ends_with("/Unary");
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
        Box::pin(async move {
            if !unary {
                let mut r = http::Response::new(tonic::body::Body::default());
                r.headers_mut()
                    .insert("grpc-status", (tonic::Code::Unimplemented as i32).into());
                r.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                return Ok(r);
            }
            let echo = tower::service_fn(|r: Request<EchoRequest>| async move {
                Ok::<_, Status>(Response::new(EchoReply {
                    text: r.into_inner().text,
                }))
            });
            Ok(grpc.unary(echo, req).await)
        })
    }
}

#[derive(Parser, Debug)]
#[command(about = "gRPC Echo backend over h2c for the phasegate load bench")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let served = tonic::transport::Server::builder()
            .add_service(EchoService)
            .serve(args.addr)
            .await;
        if let Err(e) = served {
            eprintln!("grpc_backend: {e}");
            std::process::exit(2);
        }
    });
}
