//! Requests built to confuse: smuggling, oversized headers, folded identity headers.
//! Each gets a clear refusal (or has the identity stripped), and the gateway stays up.

mod common;

use common::client::raw_exchange;
use common::{TestGateway, TestPki};

const ROUTES: &str = r#"
routes:
  - name: audit
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal }
"#;

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_oversized_requests_are_refused_and_the_gateway_stays_up() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let big = "a".repeat(128 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "content-length with transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: api.test\r\n\r\n".to_vec(),
        ),
        (
            "two different content lengths",
            b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        ),
        (
            "an oversized header",
            format!("GET / HTTP/1.1\r\nHost: api.test\r\nX-Big: {big}\r\n\r\n").into_bytes(),
        ),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n".to_vec()),
        (
            "an absolute URI for another host",
            b"GET http://other.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n".to_vec(),
        ),
        ("no Host at all", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "a transfer coding other than chunked",
            b"POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (what, request) in cases {
        let response = raw_exchange(gw.addr, pki.root_pem(), "api.test", &request)
            .await
            .unwrap();
        let code = status(&response);
        // Refused, or (Transfer-Encoding wins over Content-Length, RFC 9112 §6.3) served
        // once with the connection closed so that nothing after the body is read.
        let closed_after = code == 200 && response.to_ascii_lowercase().contains("connection: close");
        assert!(
            response.is_empty() || (400..500).contains(&code) || (what.contains("transfer-encoding") && closed_after),
            "{what}: expected a 4xx or a closed connection, got {code}: {}",
            response.lines().next().unwrap_or("")
        );
        if closed_after {
            assert!(
                !response.contains("content-length\":"),
                "{what}: the conflicting length was forwarded"
            );
            assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{what}: one response only");
        }
        if what == "an oversized header" {
            assert_eq!(code, 431, "{response}");
        }
        // nothing reached the backend as a second, smuggled request
        assert!(
            !response.contains("\"path\":\"/x\""),
            "{what}: smuggled request was served"
        );
    }
    let fine = raw_exchange(
        gw.addr,
        pki.root_pem(),
        "api.test",
        b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&fine), 200, "the gateway still serves: {fine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_or_disguised_identity_headers_never_reach_the_backend() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let attempts: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-Client-Cert: Hash=1;\r\n URI=spiffe://evil\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.test\r\nX-MTLS-VERDICT: pass\r\nx-mtls-verdict: pass\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.test\r\nx_forwarded_client_cert: URI=spiffe://evil\r\nX_Mtls_Verdict: pass\r\nConnection: close\r\n\r\n",
    ];
    for request in attempts {
        let response = raw_exchange(gw.addr, pki.root_pem(), "api.test", request)
            .await
            .unwrap();
        let code = status(&response);
        if code == 200 {
            let echo = common::client::first_echo(&response);
            let body = echo.to_string();
            assert!(!body.contains("evil"), "{body}");
            // the gateway's verdict alone, whatever the client sent under that name
            assert_eq!(
                echo["headers"]["x-mtls-verdict"],
                serde_json::json!(["would-reject; reason=no_cert"]),
                "{body}"
            );
            assert!(
                !body.contains("x_forwarded_client_cert") && !body.contains("x_mtls_verdict"),
                "{body}"
            );
        } else {
            assert!((400..500).contains(&code), "{}", response.lines().next().unwrap_or(""));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelined_requests_are_answered_in_order_or_the_first_alone() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for (what, parts) in [
        (
            "a GET, and a second one while the backend still works on the first",
            vec![
                (&b"GET /first?delay_ms=300 HTTP/1.1\r\nHost: api.test\r\n\r\n"[..], 0),
                (&b"GET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..], 100),
            ],
        ),
        (
            "a POST, and a GET while the backend still works on it",
            vec![
                (&b"POST /first?delay_ms=300 HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello"[..], 0),
                (&b"GET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..], 100),
            ],
        ),
    ]
    .into_iter()
    .chain(
        [
        (
            "two GETs",
            &b"GET /first HTTP/1.1\r\nHost: api.test\r\n\r\nGET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "a POST with a body, then a GET",
            &b"POST /first HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "a chunked POST, then a GET",
            &b"POST /first HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..],
        ),
    ]
        .map(|(what, bytes)| (what, vec![(bytes, 0)])),
    ) {
        let parts: Vec<(&[u8], std::time::Duration)> = parts
            .into_iter()
            .map(|(b, ms)| (b, std::time::Duration::from_millis(ms)))
            .collect();
        let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts)
            .await
            .unwrap();
        let statuses: Vec<&str> = response
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &response[i + 9..i + 12])
            .collect();
        assert_eq!(statuses.first(), Some(&"200"), "{what}: the first request is answered: {response}");
        assert!(response.contains("\"/first\""), "{what}: {response}");
        match statuses.len() {
            // the second is served too, after the first
            2 => {
                assert_eq!(statuses[1], "200", "{what}: {response}");
                assert!(response.find("\"/first\"") < response.find("\"/second\""), "{what}");
            }
            // or the connection closes cleanly after the first
            1 => assert!(!response.contains("/second"), "{what}: {response}"),
            _ => panic!("{what}: {response}"),
        }
    }
}

/// The statuses of the responses in a raw HTTP/1.1 exchange, in order.
fn statuses(response: &str) -> Vec<&str> {
    response
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &response[i + 9..i + 12])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_served_at_once_whether_they_came_in_one_write_or_in_several() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let first = &b"GET /first HTTP/1.1\r\nHost: api.test\r\n\r\n"[..];
    let second = &b"GET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..];
    let together = [first, second].concat();
    let zero = std::time::Duration::ZERO;
    // one write: the gateway reads both at once; two writes: the second waits in OpenSSL
    for parts in [vec![(&together[..], zero)], vec![(first, zero), (second, zero)]] {
        let started = std::time::Instant::now();
        let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts)
            .await
            .unwrap();
        assert_eq!(statuses(&response), ["200", "200"], "{response}");
        let at = |path: &str| {
            response
                .find(path)
                .unwrap_or_else(|| panic!("no answer for {path}: {response}"))
        };
        assert!(at("\"/first\"") < at("\"/second\""), "{response}");
        // answered, not waited out until the client gave up
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_times_the_next_head_from_its_first_byte() {
    let pki = TestPki::new();
    let gw = TestGateway::start_edited(&pki, ROUTES, |b| {
        b.replace("    tls:\n", "    request_header_timeout: 1s\n    tls:\n")
    })
    .await;
    let first = &b"GET /first HTTP/1.1\r\nHost: api.test\r\n\r\n"[..];
    let pause = std::time::Duration::from_millis(1200);
    // idle longer than the head deadline between two requests: both are served
    let parts = [
        (first, std::time::Duration::ZERO),
        (
            &b"GET /second HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"[..],
            pause,
        ),
    ];
    let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts)
        .await
        .unwrap();
    assert_eq!(statuses(&response), ["200", "200"], "{response}");
    // the next head trickles in after the pause: cut off a second after its first byte
    let mut parts = vec![
        (first, std::time::Duration::ZERO),
        (&b"GET /second HTTP/1.1\r\nHost: api.test\r\n"[..], pause),
    ];
    for _ in 0..8 {
        parts.push((&b"X-Slow: 1\r\n"[..], std::time::Duration::from_millis(300)));
    }
    let started = std::time::Instant::now();
    let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts).await;
    let elapsed = started.elapsed();
    assert!(
        response.as_deref().map_or(true, |r| statuses(r) == ["200"]),
        "{response:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_millis(3500),
        "cut off at ~2.2s, not after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_expects_100_continue_gets_it_before_sending_its_body() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let head = b"POST /upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let response = common::client::raw_exchange_timed(
        gw.addr,
        pki.root_pem(),
        "api.test",
        &[
            (&head[..], std::time::Duration::ZERO),
            (b"hello", std::time::Duration::from_millis(300)),
        ],
    )
    .await
    .unwrap();
    let interim = response.find("HTTP/1.1 100 Continue").expect("a 100 Continue");
    let last = response.find("HTTP/1.1 200").expect("the final answer");
    assert!(interim < last, "{response}");
}

/// A real nginx as the backend: it percent-decodes the path before choosing a location,
/// as most backends do, and reads `;` literally.
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn nginx_backend() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr;
events {{}}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
    listen 127.0.0.1:{port};
    location = /b {{ return 200 \"backend-b $uri\\n\"; }}
    location /b/ {{ return 200 \"backend-b $uri\\n\"; }}
    location / {{ return 200 \"backend-root $uri\\n\"; }}
  }}
}}
",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = std::process::Command::new("nginx")
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-p")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx (Debian package nginx-light; .ci/run installs it)");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_for_port(addr).await;
    Nginx { child, addr, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_matched_on_the_path_the_backend_reads() {
    let pki = TestPki::new();
    let nginx = nginx_backend().await;
    let routes = format!(
        r#"
routes:
  - name: open
    match: {{ host: api.test, path_prefix: / }}
    upstream: {{ address: "{0}" }}
  - name: b-enforced
    match: {{ host: api.test, path_prefix: /b }}
    upstream: {{ address: "{0}" }}
    mtls: {{ mode: enforce, trust: internal }}
"#,
        nginx.addr
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let get = |path: &'static str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
        let (addr, ca) = (gw.addr, pki.root_pem().to_string());
        async move { raw_exchange(addr, &ca, "api.test", request.as_bytes()).await.unwrap() }
    };
    // without a certificate, nothing that nginx serves as /b gets through the open route
    for path in [
        "/b",
        "/%62",
        "/%62/x",
        "/a/%2e%2e/b",
        "/b;x",
        "/a/..;/b",
        "/;x/b",
        "/./b",
        "//b",
    ] {
        let response = get(path).await;
        assert_eq!(status(&response), 403, "{path}: {response}");
        assert!(response.contains("\"route\":\"b-enforced\""), "{path}: {response}");
    }
    // the open route still serves what is not /b, as nginx reads it
    for (path, nginx_saw) in [
        ("/a", "/a"),
        ("/x;jsessionid=1", "/x;jsessionid=1"),
        ("/b%2Dnot", "/b-not"),
    ] {
        let response = get(path).await;
        assert_eq!(status(&response), 200, "{path}: {response}");
        assert!(
            response.contains(&format!("backend-root {nginx_saw}")),
            "{path}: {response}"
        );
    }
    // with the certificate, the enforced route's backend hears the normalized path
    let opts = common::ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(common::ClientKind::Good));
    let reply = common::client::get_once(gw.addr, &opts, "api.test", "/%62/%7Euser").await;
    assert_eq!((reply.status, reply.body.trim()), (200, "backend-b /b/~user"));
    // escapes of '/' and '\\' and broken escapes are refused outright
    for path in ["/a%2Fb", "/a%5cb", "/a%zz"] {
        assert_eq!(status(&get(path).await), 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_target_with_a_tab_nul_or_other_control_character_is_refused() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    // raw ones (which Pingora's parser escapes) and escaped ones alike
    for target in [&b"/a\x00b"[..], b"/a\tb", b"/a\x7fb", b"/a\x01b", b"/a%00b", b"/a%09b"] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(gw.addr, pki.root_pem(), "api.test", &request)
            .await
            .unwrap();
        assert!(
            response.is_empty() || status(&response) == 400,
            "{target:?}: {response}"
        );
        assert!(
            !response.contains("\"backend\""),
            "{target:?} reached the backend: {response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_stripped_at_any_length_over_http1_and_http2() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let long = format!("x-ssl-client-{}", "a".repeat(52));
    let longer = format!("X_MTLS_{}", "B".repeat(300));
    for h2 in [false, true] {
        let mut opts = common::ClientOptions::new(pki.root_pem(), "api.test");
        opts.h2 = h2;
        let mut client = common::Client::connect(gw.addr, &opts).await.unwrap();
        let reply = client
            .request(
                "api.test",
                "/",
                &[
                    (long.as_str(), "spoofed"),
                    (longer.as_str(), "spoofed"),
                    ("x-keep", "1"),
                ],
            )
            .await
            .unwrap();
        let headers = &reply.json()["headers"];
        assert!(headers.get(long.as_str()).is_none(), "h2={h2}: {headers}");
        assert!(headers.get(longer.to_ascii_lowercase()).is_none(), "h2={h2}: {headers}");
        assert_eq!(headers["x-keep"][0], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_trickles_in_is_cut_off_at_the_header_deadline() {
    let pki = TestPki::new();
    let gw = TestGateway::start_edited(&pki, ROUTES, |b| {
        b.replace("    tls:\n", "    request_header_timeout: 1s\n    tls:\n")
    })
    .await;
    // one header line every 300 ms: each read is quick, the head never ends
    let mut parts: Vec<(&[u8], std::time::Duration)> =
        vec![(b"GET / HTTP/1.1\r\nHost: api.test\r\n", std::time::Duration::ZERO)];
    for _ in 0..12 {
        parts.push((b"X-Slow: 1\r\n", std::time::Duration::from_millis(300)));
    }
    let started = std::time::Instant::now();
    let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts).await;
    let elapsed = started.elapsed();
    // the connection is closed at the deadline: a write fails, or nothing comes back
    assert!(
        response.as_deref().map_or(true, |r| !r.contains("200 OK")),
        "{response:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "cut off at ~1s, not after {elapsed:?}"
    );
    // a slow but complete head within the deadline is served
    let parts: Vec<(&[u8], std::time::Duration)> = vec![
        (b"GET / HTTP/1.1\r\nHost: api.test\r\n", std::time::Duration::ZERO),
        (b"Connection: close\r\n\r\n", std::time::Duration::from_millis(400)),
    ];
    let response = common::client::raw_exchange_timed(gw.addr, pki.root_pem(), "api.test", &parts)
        .await
        .unwrap();
    assert_eq!(status(&response), 200, "{response}");
}
