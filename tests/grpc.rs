//! gRPC through the gateway with real tonic servers and clients: every call shape over h2c
//! and over TLS with proxy → backend mTLS, in every mode, with and without a client
//! certificate; refusals and upstream failures as gRPC statuses; the standard health check
//! driving pool health; gRPC methods in the audit record.

mod common;
#[path = "common/grpc.rs"]
mod grpc;

use std::time::Duration;

use common::{ClientKind, TestGateway, TestPki};
use grpc::{channel, grpc_backend, text, BackendTls, EchoClient, EchoRequest};
use phasegate::devpki::LeafSpec;
use tonic::Code;

/// off, audit, soft-fail and enforce, one host each (the test server certificate's names).
const MODES: [(&str, &str); 4] = [
    ("off", "open.test"),
    ("audit", "api.test"),
    ("soft-fail", "other.test"),
    ("enforce", "strict.test"),
];

fn routes(backend: std::net::SocketAddr, upstream_extra: &str) -> String {
    let mut yaml = String::from("routes:\n");
    for (mode, host) in MODES {
        yaml.push_str(&format!(
            "  - name: echo-{mode}\n    match: {{ host: {host}, path_prefix: / }}\n    upstream:\n      address: \"{backend}\"\n{upstream_extra}    mtls: {{ mode: {mode}, trust: internal }}\n"
        ));
    }
    yaml
}

async fn client(gw: &TestGateway, pki: &TestPki, host: &str, kind: ClientKind) -> EchoClient {
    let cert = pki.client(kind);
    EchoClient::new(channel(gw.addr, pki.root_pem(), host, cert.as_ref()).await, "test.Echo")
}

/// Every call shape works, and the backend hears what the gateway decided.
async fn every_call_works(c: &mut EchoClient, want_verdict: &str, want_identity: bool, what: &str) {
    let r = c
        .unary("Unary", text("hello"))
        .await
        .unwrap_or_else(|e| panic!("{what}: unary: {e}"));
    let r = r.into_inner();
    assert_eq!(r.text, "hello", "{what}");
    assert_eq!(r.verdict, want_verdict, "{what}: verdict the backend heard");
    assert_eq!(
        r.client_cert.contains(common::pki::GOOD_URI),
        want_identity,
        "{what}: forwarded identity {:?}",
        r.client_cert
    );
    let replies = c
        .server_stream(EchoRequest {
            text: "s".into(),
            count: 3,
            delay_ms: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: server streaming: {e}"));
    assert_eq!(
        replies.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        ["s-0", "s-1", "s-2"]
    );
    let joined = c
        .client_stream(&["a", "b", "c"])
        .await
        .unwrap_or_else(|e| panic!("{what}: client streaming: {e}"));
    assert_eq!(joined.text, "a+b+c", "{what}");
    let echoed = c
        .bidi(&["x", "y", "z"])
        .await
        .unwrap_or_else(|e| panic!("{what}: bidi: {e}"));
    assert_eq!(echoed, ["echo:x", "echo:y", "echo:z"], "{what}");
    // an error status with details reaches the client intact (grpc-status in trailers)
    let e = c.unary("Fail", text("this")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "refusing this"),
        "{what}"
    );
    assert_eq!(e.details(), b"detail-bytes", "{what}");
    // the client's deadline travels (grpc-timeout) and ends the call at the backend, which
    // answers as tonic does (CANCELLED, "Timeout expired"); the connection stays usable
    let mut slow = tonic::Request::new(EchoRequest {
        text: "late".into(),
        count: 0,
        delay_ms: 2_000,
    });
    slow.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let e = c.unary("Slow", slow).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded) && started.elapsed() < Duration::from_millis(1500),
        "{what}: {e:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.unary("Unary", text("after")).await.unwrap().into_inner().text,
        "after"
    );
}

async fn refused(c: &mut EchoClient, code: Code, reason: &str, route: &str) {
    let e = c.unary("Unary", text("hello")).await.unwrap_err();
    assert_eq!(e.code(), code, "{e:?}");
    let m = e.message();
    assert!(
        m.contains(&format!("reason {reason}")) && m.contains(&format!("route {route}")) && m.contains("request test-"),
        "{m}"
    );
    // streaming calls get the same answer
    let e = c.client_stream(&["a"]).await.unwrap_err();
    assert_eq!(e.code(), code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_works_in_every_mode_and_refusals_are_grpc_statuses() {
    let pki = TestPki::new();
    let backend = grpc_backend(None).await;
    let gw = TestGateway::start(&pki, &routes(backend.addr, "      protocol: h2c\n")).await;
    for (mode, host) in MODES {
        let mut anonymous = client(&gw, &pki, host, ClientKind::NoCert).await;
        let mut good = client(&gw, &pki, host, ClientKind::Good).await;
        let mut untrusted = client(&gw, &pki, host, ClientKind::UntrustedCa).await;
        let route = format!("echo-{mode}");
        match mode {
            "off" => {
                every_call_works(&mut anonymous, "unauthenticated", false, "off, no cert").await;
                every_call_works(&mut good, "unauthenticated", false, "off, cert").await;
            }
            "audit" => {
                every_call_works(&mut anonymous, "would-reject; reason=no_cert", false, "audit, no cert").await;
                every_call_works(&mut good, "pass", true, "audit, cert").await;
                every_call_works(
                    &mut untrusted,
                    "would-reject; reason=untrusted_issuer",
                    false,
                    "audit, untrusted",
                )
                .await;
            }
            "soft-fail" => {
                every_call_works(&mut anonymous, "unauthenticated", false, "soft-fail, no cert").await;
                every_call_works(&mut good, "pass", true, "soft-fail, cert").await;
                refused(&mut untrusted, Code::PermissionDenied, "untrusted_issuer", &route).await;
            }
            _ => {
                refused(&mut anonymous, Code::Unauthenticated, "no_cert", &route).await;
                refused(&mut untrusted, Code::PermissionDenied, "untrusted_issuer", &route).await;
                every_call_works(&mut good, "pass", true, "enforce, cert").await;
            }
        }
        // the standard health check answers through the gateway
        let ch = channel(gw.addr, pki.root_pem(), host, pki.client(ClientKind::Good).as_ref()).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "test.Echo".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{mode}: health check: {e}"));
        assert_eq!(
            status.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{mode}"
        );
    }
    // the audit record names the gRPC method of each would-be-rejected client
    let methods_of = |body: &serde_json::Value| -> Vec<String> {
        body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["grpc_method"].as_str().map(str::to_string))
            .collect()
    };
    let (_, body) = gw
        .admin_get_until("/api/routes/echo-audit/rejections", |b| methods_of(b).len() >= 2)
        .await;
    let methods = methods_of(&body);
    assert_eq!(methods.len(), 2, "{methods:?}");
    assert!(
        methods
            .iter()
            .all(|m| m.starts_with("test.Echo/") || m.starts_with("grpc.health")),
        "{methods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_to_the_backend_keeps_proxy_to_backend_mtls() {
    let pki = TestPki::new();
    let server = pki.intermediate.issue(&LeafSpec::server(&["backend.test"])).unwrap();
    let backend = grpc_backend(Some(BackendTls {
        cert_pem: format!("{}{}", server.cert_pem, pki.intermediate.cert_pem),
        key_pem: server.key_pem,
        client_ca_pem: Some(pki.root_pem().to_string()),
    }))
    .await;
    let gateway_client = pki.issue(&LeafSpec::client("spiffe://test.example/ns/edge/sa/phasegate"));
    pki.write("certs/gateway-client.crt", &gateway_client.chain_pem);
    pki.write("certs/gateway-client.key", &gateway_client.key_pem);
    let tls = "      tls: { sni: backend.test, ca: ../pki/root.pem, client_cert: ../certs/gateway-client.crt, client_key: ../certs/gateway-client.key }\n";
    for protocol in ["h2", "auto"] {
        let extra = format!("      protocol: {protocol}\n{tls}");
        let gw = TestGateway::start(&pki, &routes(backend.addr, &extra)).await;
        let mut good = client(&gw, &pki, "strict.test", ClientKind::Good).await;
        every_call_works(&mut good, "pass", true, protocol).await;
        let mut anonymous = client(&gw, &pki, "strict.test", ClientKind::NoCert).await;
        refused(&mut anonymous, Code::Unauthenticated, "no_cert", "echo-enforce").await;
        let mut audited = client(&gw, &pki, "api.test", ClientKind::NoCert).await;
        every_call_works(&mut audited, "would-reject; reason=no_cert", false, protocol).await;
    }
    // without the gateway's client certificate the backend refuses the connection
    let no_client_cert = "      protocol: h2\n      tls: { sni: backend.test, ca: ../pki/root.pem }\n";
    let gw = TestGateway::start(&pki, &routes(backend.addr, no_client_cert)).await;
    let mut good = client(&gw, &pki, "strict.test", ClientKind::Good).await;
    let e = good.unary("Unary", text("x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("upstream_unavailable"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_unavailable_and_deadline_exceeded() {
    let pki = TestPki::new();
    let backend = grpc_backend(None).await;
    let dead = common::free_port();
    let yaml = format!(
        "routes:
  - name: dead
    match: {{ host: open.test, path_prefix: /test.Echo }}
    upstream: {{ address: \"127.0.0.1:{dead}\", protocol: h2c }}
  - name: slow
    match: {{ host: api.test, path_prefix: /test.Echo }}
    upstream: {{ address: \"{}\", protocol: h2c, timeouts: {{ stream_idle: 300ms }} }}
",
        backend.addr
    );
    let gw = TestGateway::start(&pki, &yaml).await;
    let mut c = client(&gw, &pki, "open.test", ClientKind::NoCert).await;
    let e = c.unary("Unary", text("x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("upstream_unavailable") && e.message().contains("route dead"),
        "{e:?}"
    );
    let mut c = client(&gw, &pki, "api.test", ClientKind::NoCert).await;
    let slow = tonic::Request::new(EchoRequest {
        text: "late".into(),
        count: 0,
        delay_ms: 3_000,
    });
    let e = c.unary("Slow", slow).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("upstream_timeout"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_health_check_takes_a_backend_out_and_back() {
    let pki = TestPki::new();
    let backend = grpc_backend(None).await;
    let yaml = format!(
        "routes:
  - name: echo
    match: {{ host: open.test, path_prefix: /test.Echo }}
    upstream:
      address: \"{}\"
      protocol: h2c
      health_check: {{ type: grpc, service: test.Echo, interval: 100ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
",
        backend.addr
    );
    let gw = TestGateway::start(&pki, &yaml).await;
    let healthy = || async {
        let (_, v) = gw.admin_get("/api/routes/echo").await;
        v["backends"][0]["healthy"].as_bool()
    };
    let wait_for = |want: bool| async move {
        for _ in 0..100 {
            if healthy().await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("backend never became healthy={want}");
    };
    wait_for(true).await;
    backend.health.set_not_serving::<grpc::EchoService>().await;
    wait_for(false).await;
    let mut c = client(&gw, &pki, "open.test", ClientKind::NoCert).await;
    let e = c.unary("Unary", text("x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("no_healthy_upstream"), "{e:?}");
    backend.health.set_serving::<grpc::EchoService>().await;
    wait_for(true).await;
    assert_eq!(c.unary("Unary", text("back")).await.unwrap().into_inner().text, "back");
}
