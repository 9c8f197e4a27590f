//! What the backend receives: identity only from the gateway, and proxy → backend mTLS with
//! backend verification that cannot be switched off silently.

mod common;

use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};
use phasegate::demo::backend::{serve_echo, BackendTls};
use phasegate::devpki::{LeafSpec, Usage};

const ROUTES: &str = r#"
routes:
  - name: audit
    match: { host: api.test, path_prefix: /audit }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, allow: [{ uri: "spiffe://test.example/ns/prod/sa/checkout" }] }
  - name: off
    match: { host: api.test, path_prefix: /off }
    upstream: { address: "{backend}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_identity_headers_never_reach_the_backend() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let spoofed = [
        (
            "X-Forwarded-Client-Cert",
            "Hash=0;URI=spiffe://test.example/ns/prod/sa/checkout",
        ),
        ("x-forwarded-client-cert", "By=evil"),
        ("x_forwarded_client_cert", "URI=spiffe://evil"),
        ("X-MTLS-Verdict", "pass"),
        ("x-mtls-verdict", "pass"),
        ("x-ssl-client-s-dn", "CN=admin"),
        ("x-keep-me", "yes"),
    ];
    for (path, cert) in [
        ("/audit", None),
        ("/off", None),
        ("/audit", pki.client(ClientKind::Good)),
    ] {
        for h2 in [false, true] {
            let mut opts = ClientOptions::new(pki.root_pem(), "api.test").cert(cert.clone());
            opts.h2 = h2;
            let mut client = Client::connect(gw.addr, &opts).await.unwrap();
            let reply = client.request("api.test", path, &spoofed).await.unwrap();
            assert_eq!(reply.status, 200);
            let headers = &reply.json()["headers"];
            assert!(headers.get("x_forwarded_client_cert").is_none(), "{headers}");
            assert!(headers.get("x-ssl-client-s-dn").is_none(), "{headers}");
            assert_eq!(headers["x-keep-me"][0], "yes");
            let verdict = reply.upstream_header("x-mtls-verdict").unwrap();
            let xfcc = reply.upstream_header("x-forwarded-client-cert");
            if cert.is_some() {
                assert_eq!(verdict, "pass");
                let xfcc = xfcc.expect("verified identity is forwarded");
                assert!(xfcc.starts_with("Hash="), "{xfcc}");
                assert!(xfcc.contains(";Subject=\""), "{xfcc}");
                assert!(
                    xfcc.contains(";URI=spiffe://test.example/ns/prod/sa/checkout"),
                    "{xfcc}"
                );
                assert!(!xfcc.contains("evil"), "{xfcc}");
            } else {
                assert_ne!(verdict, "pass");
                assert_eq!(xfcc, None);
            }
        }
    }
}

async fn tls_backend(pki: &TestPki, hosts: &[&str], require_client_cert: bool) -> std::net::SocketAddr {
    let server = pki.intermediate.issue(&LeafSpec::server(hosts)).unwrap();
    let cert = pki.write(
        "backend/server.crt",
        &format!("{}{}", server.cert_pem, pki.intermediate.cert_pem),
    );
    let key = pki.write("backend/server.key", &server.key_pem);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = BackendTls {
        cert,
        key,
        client_ca: require_client_cert.then(|| pki.path("pki/root.pem")),
    };
    // the task lives as long as the test's runtime
    std::mem::forget(serve_echo(listener, "tls-backend", Some(tls)).await.unwrap());
    addr
}

fn write_gateway_client_cert(pki: &TestPki) {
    let mut spec = LeafSpec::client("spiffe://test.example/ns/edge/sa/phasegate");
    spec.usage = Usage::Client;
    let c = pki.intermediate.issue(&spec).unwrap();
    pki.write(
        "certs/gateway-client.crt",
        &format!("{}{}", c.cert_pem, pki.intermediate.cert_pem),
    );
    pki.write("certs/gateway-client.key", &c.key_pem);
}

fn upstream_route(name: &str, path: &str, backend: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"
  - name: {name}
    match: {{ host: api.test, path_prefix: {path} }}
    upstream:
      address: "{backend}"
      tls: {tls}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_presents_the_gateway_certificate_and_verifies_the_backend() {
    let pki = TestPki::new();
    write_gateway_client_cert(&pki);
    let backend = tls_backend(&pki, &["backend.test"], true).await;
    let good = "{ sni: backend.test, ca: ../pki/root.pem, client_cert: ../certs/gateway-client.crt, client_key: ../certs/gateway-client.key }";
    let no_client_cert = "{ sni: backend.test, ca: ../pki/root.pem }";
    let wrong_ca = "{ sni: backend.test, ca: ../pki/untrusted-root.pem, client_cert: ../certs/gateway-client.crt, client_key: ../certs/gateway-client.key }";
    let wrong_name = "{ sni: impostor.test, ca: ../pki/root.pem, client_cert: ../certs/gateway-client.crt, client_key: ../certs/gateway-client.key }";
    let routes = format!(
        "routes:{}{}{}{}",
        upstream_route("mtls", "/mtls", backend, good),
        upstream_route("no-client-cert", "/no-client-cert", backend, no_client_cert),
        upstream_route("wrong-ca", "/wrong-ca", backend, wrong_ca),
        upstream_route("wrong-name", "/wrong-name", backend, wrong_name),
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    let reply = client.get("api.test", "/mtls/x").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["backend"], "tls-backend");
    for path in ["/no-client-cert", "/wrong-ca", "/wrong-name"] {
        let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
            .await
            .unwrap();
        let reply = client.get("api.test", path).await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.body);
        assert_eq!(reply.json()["reason"], "upstream_unavailable", "{path}");
        assert_eq!(reply.json()["route"], &path[1..], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_gives_502_with_a_reason_and_the_gateway_stays_up() {
    let pki = TestPki::new();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let routes = format!("routes:\n  - name: dead\n    match: {{ host: api.test, path_prefix: /dead }}\n    upstream: {{ address: \"{dead}\" }}\n{}", &ROUTES["\nroutes:\n".len()..]);
    let gw = TestGateway::start(&pki, &routes).await;
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    let reply = client.get("api.test", "/dead").await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (502, "upstream_unavailable".into())
    );
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    assert_eq!(client.get("api.test", "/off").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clients_reach_an_h2c_backend_and_te_trailers_travels() {
    let pki = TestPki::new();
    let routes = r#"
routes:
  - name: h2c
    match: { host: api.test, path_prefix: /h2c }
    upstream: { address: "{backend}", protocol: h2c }
    mtls: { mode: audit, trust: internal }
"#;
    let gw = TestGateway::start(&pki, routes).await;
    for h2 in [false, true] {
        let mut opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(common::ClientKind::Good));
        opts.h2 = h2;
        let mut client = Client::connect(gw.addr, &opts).await.unwrap();
        let reply = client
            .request("api.test", "/h2c/x", &[("te", "trailers")])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "h2={h2}: {}", reply.body);
        let seen = reply.json();
        assert_eq!(
            seen["version"], "HTTP/2.0",
            "h2={h2}: the backend was spoken to in h2: {seen}"
        );
        assert_eq!(reply.upstream_header("x-mtls-verdict").as_deref(), Some("pass"));
        if h2 {
            assert_eq!(reply.upstream_header("te").as_deref(), Some("trailers"), "{seen}");
        }
    }
}

/// Hop-by-hop fields, and those `Connection` nominates, end at the gateway (RFC 9110 §7.6.1)
/// whichever one alone a request carries; everything else reaches the backend as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_end_at_the_gateway_one_by_one() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let cases: [(&str, &[&str]); 10] = [
        ("", &[]),
        ("Connection: x-nominated\r\n", &["connection", "x-nominated"]),
        (
            "Connection: keep-alive, X-Nominated\r\n",
            &["connection", "x-nominated"],
        ),
        ("Keep-Alive: timeout=5\r\n", &["keep-alive"]),
        ("Proxy-Connection: keep-alive\r\n", &["proxy-connection"]),
        ("Proxy-Authenticate: Basic\r\n", &["proxy-authenticate"]),
        ("Proxy-Authorization: Basic Zm9vOmJhcg==\r\n", &["proxy-authorization"]),
        ("TE: trailers\r\n", &["te"]),
        ("Trailer: x-checksum\r\n", &["trailer"]),
        (
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            &["upgrade", "http2-settings"],
        ),
    ];
    for (fields, stripped) in cases {
        // No `Connection: close` on the request under test (it would be a hop-by-hop field
        // of its own): a second, pipelined request closes the connection.
        let request = format!(
            "GET /off HTTP/1.1\r\nHost: api.test\r\n{fields}X-Nominated: secret\r\nX-Keep-Me: yes\r\n\r\n\
             GET /off HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
        );
        let response = common::client::raw_exchange(gw.addr, pki.root_pem(), "api.test", request.as_bytes())
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{fields:?}: {response}");
        let seen = common::client::first_echo(&response);
        let headers = &seen["headers"];
        // exactly what was sent and not stripped, and the gateway's verdict: nothing added
        let got: std::collections::BTreeSet<&str> = headers.as_object().unwrap().keys().map(String::as_str).collect();
        let want: std::collections::BTreeSet<&str> = ["host", "x-nominated", "x-keep-me", "x-mtls-verdict"]
            .into_iter()
            .filter(|name| !stripped.contains(name))
            .collect();
        assert_eq!(got, want, "{fields:?}: {headers}");
        assert_eq!(headers["x-keep-me"][0], "yes", "{fields:?}: {headers}");
        assert_eq!(headers["host"][0], "api.test", "{fields:?}: {headers}");
        if !stripped.contains(&"x-nominated") {
            assert_eq!(headers["x-nominated"][0], "secret", "{fields:?}: {headers}");
        }
    }
}
