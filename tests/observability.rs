//! What operators read: Prometheus metrics, readiness (API and CLI) matching the traffic.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};

const ROUTES: &str = r#"
routes:
  - name: orders
    match: { host: api.test, path_prefix: /orders }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal }
  - name: payments
    match: { host: api.test, path_prefix: /payments }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
"#;

/// 3 clean passes and 2 certificate-less requests on orders, 1 rejection on payments.
async fn traffic(gw: &TestGateway, pki: &TestPki) {
    let mut good = Client::connect(
        gw.addr,
        &ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good)),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(good.get("api.test", "/orders").await.status, 200);
    }
    let mut anonymous = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(anonymous.get("api.test", "/orders").await.status, 200);
    }
    assert_eq!(anonymous.get("api.test", "/payments").await.status, 403);
}

async fn metrics(gw: &TestGateway) -> prometheus_parse::Scrape {
    let stream = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header("host", "127.0.0.1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    use http_body_util::BodyExt;
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses as Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    traffic(&gw, &pki).await;
    gw.admin_post("/api/routes/payments/rollback", serde_json::json!({}))
        .await;
    let scrape = metrics(&gw).await;
    let requests = |labels: &[(&str, &str)]| value(&scrape, "phasegate_requests_total", labels);
    assert_eq!(
        requests(&[("route", "orders"), ("mode", "audit"), ("verdict", "pass")]),
        Some(3.0)
    );
    assert_eq!(
        requests(&[("route", "orders"), ("verdict", "would_reject"), ("reason", "no_cert")]),
        Some(2.0)
    );
    assert_eq!(
        requests(&[
            ("route", "payments"),
            ("mode", "enforce"),
            ("verdict", "reject"),
            ("reason", "no_cert")
        ]),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "phasegate_handshakes_total", &[("client_cert", "presented")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "phasegate_handshakes_total",
            &[("client_cert", "requested_none_presented")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&scrape, "phasegate_config_generation", &[]), Some(1.0));
    assert_eq!(value(&scrape, "phasegate_overrides_active", &[]), Some(1.0));
    assert_eq!(
        value(
            &scrape,
            "phasegate_route_override",
            &[("route", "payments"), ("kind", "rollback")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "phasegate_reloads_total", &[("result", "failed")]),
        Some(0.0)
    );
    let server_days = value(&scrape, "phasegate_certificate_expiry_days", &[("kind", "server")]).unwrap();
    assert!((88.0..=90.0).contains(&server_days), "{server_days}");
    // the test clients' certificates expire within a day
    let mut within = None;
    for _ in 0..100 {
        within = value(
            &metrics(&gw).await,
            "phasegate_client_certificates_expiring",
            &[("within", "7d")],
        );
        if within == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(within, Some(1.0));
    assert_eq!(
        value(&scrape, "phasegate_instance_info", &[("instance", "test")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_matches_the_recorded_traffic_and_gates_ci() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    traffic(&gw, &pki).await;
    let (status, r) = gw.admin_get("/api/routes/orders/readiness?window=1h").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            r["requests"].as_u64(),
            r["would_reject"].as_u64(),
            r["window_secs"].as_u64()
        ),
        (Some(5), Some(2), Some(3600))
    );
    assert_eq!(r["reject_ratio"], 0.4);
    assert_eq!(r["summary"], "enforce now would reject 40.0% of requests from 1 client");
    let (status, bad) = gw.admin_get("/api/routes/orders/readiness?window=forever").await;
    assert_eq!(status, 400, "{bad}");

    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(["readiness", "orders", "--admin", &format!("http://{}", gw.admin)])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["--window", "24h"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "orders (24h): enforce now would reject 40.0% of requests from 1 client"
    );
    let out = cli(&["--max-reject-ratio", "0.5"]);
    assert_eq!(out.status.code(), Some(0));
    let out = cli(&["--max-reject-ratio", "0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not ready: reject ratio 0.4000 is above 0.1"));
    let out = cli(&["--min-requests", "100", "--max-reject-ratio", "0.9"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(&["--window", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(["readiness", "nope", "--admin", &format!("http://{}", gw.admin)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named \"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_probes_answer() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!((status, body["ready"].as_bool()), (200, Some(true)));
    let client = phasegate::cli::admin_client::AdminClient::new(&format!("http://{}", gw.admin), None).unwrap();
    let (status, body) = client.call(http::Method::GET, "/healthz", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, Some("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    // stdout and stderr are pipes here, as under systemd, docker or `demo > file`
    let mut gw = common::GatewayProcess::start_with(&pki, ROUTES, backend.addr, &[], &[], true).await;
    let logs = gw.stop_with_output();
    assert!(logs.contains("phasegate serving"), "{logs}");
    assert!(!logs.contains('\x1b'), "ANSI escape codes in piped logs: {logs:?}");
}
