//! Upstream pools with real backends on free ports: distribution, failover without failed
//! idempotent requests, revival, health-check thresholds, timeouts, mTLS to every backend,
//! and a pool change under traffic.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, ClientOptions, TestGateway, TestPki};
use phasegate::demo::backend::{serve_echo_with, BackendTls, EchoControl};
use tokio::task::JoinHandle;

struct Backend {
    addr: SocketAddr,
    name: String,
    control: EchoControl,
    task: Option<JoinHandle<()>>,
    tls: Option<BackendTls>,
}

impl Backend {
    async fn start(name: &str, tls: Option<BackendTls>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = EchoControl::default();
        let task = serve_echo_with(listener, name, tls.clone(), control.clone())
            .await
            .unwrap();
        Backend {
            addr,
            name: name.to_string(),
            control,
            task: Some(task),
            tls,
        }
    }

    /// Stops accepting and closes every open connection.
    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Serves again on the same address.
    async fn revive(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(
            serve_echo_with(listener, &self.name, self.tls.clone(), self.control.clone())
                .await
                .unwrap(),
        );
    }
}

fn pool_route(backends: &[&Backend], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address: \"{}\" }}", b.addr))
        .collect();
    format!(
        "routes:\n  - name: pool\n    match: {{ host: api.test }}\n    upstream:\n      backends: [{}]\n{extra}",
        list.join(", ")
    )
}

/// One backend's entry in `GET /api/routes/{name}`.
fn backend_entry(route: &serde_json::Value, addr: SocketAddr) -> serde_json::Value {
    route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not listed: {route}"))
        .clone()
}

/// Sends `n` GETs over one keep-alive connection; counts answers per backend name.
async fn spread(gw: &TestGateway, pki: &TestPki, n: usize, path: &str) -> HashMap<String, usize> {
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let reply = client.get("api.test", path).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        *seen
            .entry(reply.json()["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_over_every_backend_by_weight() {
    let pki = TestPki::new();
    let (a, b, c) = (
        Backend::start("a", None).await,
        Backend::start("b", None).await,
        Backend::start("c", None).await,
    );
    let routes = format!(
        "routes:\n  - name: pool\n    match: {{ host: api.test }}\n    upstream:\n      backends: [{{ address: \"{}\" }}, {{ address: \"{}\" }}, {{ address: \"{}\", weight: 2 }}]\n",
        a.addr, b.addr, c.addr
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let seen = spread(&gw, &pki, 40, "/").await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        (7..=13).contains(&seen["a"]) && (7..=13).contains(&seen["b"]),
        "{seen:?}"
    );
    assert!((16..=24).contains(&seen["c"]), "weight 2 gets about half: {seen:?}");
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    assert_eq!(route["backends"].as_array().unwrap().len(), 3, "{route}");
    assert_eq!(route["balance"], "round_robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_no_idempotent_request_and_rejoins_when_revived() {
    let pki = TestPki::new();
    let (a, mut b) = (Backend::start("a", None).await, Backend::start("b", None).await);
    // the ejection outlasts the requests below even on a slow, busy machine
    let extra = "      passive_ejection: { max_failures: 1, ejection: 4s }\n      retries: 1\n";
    let gw = TestGateway::start(&pki, &pool_route(&[&a, &b], extra)).await;
    assert_eq!(spread(&gw, &pki, 10, "/").await.len(), 2);
    b.kill();
    // every request still succeeds: the failed connect is retried on the other backend
    let seen = spread(&gw, &pki, 20, "/").await;
    assert_eq!(seen.get("b"), None, "{seen:?}");
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    let dead = backend_entry(&route, b.addr);
    assert!(dead["ejected_until"].is_i64(), "passively ejected: {dead}");
    assert!(dead["connect_failures"].as_u64().unwrap() >= 1);
    b.revive().await;
    let mut ended = false;
    for _ in 0..100 {
        let (_, route) = gw.admin_get("/api/routes/pool").await;
        if backend_entry(&route, b.addr)["ejected_until"].is_null() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the ejection ends");
    let seen = spread(&gw, &pki, 20, "/").await;
    assert!(seen.get("b").is_some_and(|n| *n >= 5), "back in rotation: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_backend_out_after_the_unhealthy_threshold_and_back_after_the_healthy_one() {
    let pki = TestPki::new();
    let (a, b) = (Backend::start("a", None).await, Backend::start("b", None).await);
    let extra = "      health_check: { type: http, path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 3, healthy_threshold: 2 }\n";
    let gw = TestGateway::start(&pki, &pool_route(&[&a, &b], extra)).await;
    let health = |route: &serde_json::Value, addr: SocketAddr| backend_entry(route, addr)["healthy"].as_bool().unwrap();
    b.control.unhealthy.store(true, Ordering::Relaxed);
    let (_, route) = gw.admin_get_until("/api/routes/pool", |r| !health(r, b.addr)).await;
    assert!(!health(&route, b.addr), "b never marked unhealthy: {route}");
    let seen = spread(&gw, &pki, 12, "/").await;
    assert_eq!(seen.get("b"), None, "unhealthy backends get no traffic: {seen:?}");
    b.control.unhealthy.store(false, Ordering::Relaxed);
    let (_, route) = gw.admin_get_until("/api/routes/pool", |r| health(r, b.addr)).await;
    assert!(health(&route, b.addr), "b never came back: {route}");
    assert!(spread(&gw, &pki, 12, "/").await.contains_key("b"));
    // with every backend unhealthy, clients get a clear 503
    a.control.unhealthy.store(true, Ordering::Relaxed);
    b.control.unhealthy.store(true, Ordering::Relaxed);
    let mut reply = None;
    for _ in 0..100 {
        let r = common::client::get_once(
            gw.addr,
            &ClientOptions::new(pki.root_pem(), "api.test"),
            "api.test",
            "/",
        )
        .await;
        if r.status == 503 {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = reply.expect("503 once nothing is healthy");
    assert_eq!(reply.json()["reason"], "no_healthy_upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gives_504_with_a_reason() {
    let pki = TestPki::new();
    let a = Backend::start("a", None).await;
    let extra = "      timeouts: { read: 300ms }\n";
    let gw = TestGateway::start(&pki, &pool_route(&[&a], extra)).await;
    let opts = ClientOptions::new(pki.root_pem(), "api.test");
    let slow = common::client::get_once(gw.addr, &opts, "api.test", "/?delay_ms=2000").await;
    assert_eq!(
        (slow.status, slow.json()["reason"].clone()),
        (504, "upstream_timeout".into())
    );
    assert_eq!(
        common::client::get_once(gw.addr, &opts, "api.test", "/?delay_ms=10")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_backend_with_fewer_requests_in_flight() {
    let pki = TestPki::new();
    let (a, b) = (Backend::start("a", None).await, Backend::start("b", None).await);
    let gw = TestGateway::start(&pki, &pool_route(&[&a, &b], "      balance: least_connections\n")).await;
    // five slow requests pile up somewhere; the quick ones then go elsewhere
    let anonymous = ClientOptions::new(pki.root_pem(), "api.test");
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(common::client::spawn_get_once(
            gw.addr,
            &anonymous,
            "api.test",
            "/?delay_ms=1500",
        ));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    let loads: Vec<u64> = route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["in_flight"].as_u64().unwrap())
        .collect();
    assert_eq!(loads.iter().sum::<u64>(), 5, "{route}");
    assert!(loads.iter().all(|l| *l >= 2), "slow requests were spread: {loads:?}");
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    assert_eq!(route["balance"], "least_connections");
    assert!(
        route["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["in_flight"] == 0),
        "released: {route}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_holds_for_every_backend_of_a_pool() {
    let pki = TestPki::new();
    let server = pki
        .intermediate
        .issue(&phasegate::devpki::LeafSpec::server(&["backend.test"]))
        .unwrap();
    let cert = pki.write(
        "backend/server.crt",
        &format!("{}{}", server.cert_pem, pki.intermediate.cert_pem),
    );
    let key = pki.write("backend/server.key", &server.key_pem);
    let client = pki
        .intermediate
        .issue(&phasegate::devpki::LeafSpec::client(
            "spiffe://test.example/ns/edge/sa/phasegate",
        ))
        .unwrap();
    pki.write(
        "certs/gateway-client.crt",
        &format!("{}{}", client.cert_pem, pki.intermediate.cert_pem),
    );
    pki.write("certs/gateway-client.key", &client.key_pem);
    let tls = BackendTls {
        cert,
        key,
        client_ca: Some(pki.path("pki/root.pem")),
    };
    let (a, b) = (
        Backend::start("a", Some(tls.clone())).await,
        Backend::start("b", Some(tls)).await,
    );
    let extra = "      health_check: { type: http, path: /healthz, interval: 100ms }\n      tls: { sni: backend.test, ca: ../pki/root.pem, client_cert: ../certs/gateway-client.crt, client_key: ../certs/gateway-client.key }\n";
    let gw = TestGateway::start(&pki, &pool_route(&[&a, &b], extra)).await;
    let seen = spread(&gw, &pki, 10, "/").await;
    assert_eq!((seen["a"], seen["b"]), (5, 5), "{seen:?}");
    // the health checks present the client certificate too, or the backends would be down
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    assert!(
        route["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["healthy"] == true),
        "{route}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_pool_on_reload_loses_no_request_in_flight_or_after() {
    let pki = TestPki::new();
    let (a, b, c) = (
        Backend::start("a", None).await,
        Backend::start("b", None).await,
        Backend::start("c", None).await,
    );
    let gw = TestGateway::start(&pki, &pool_route(&[&a, &b], "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (stop, done, addr, root) = (stop.clone(), done.clone(), gw.addr, pki.root_pem().to_string());
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &ClientOptions::new(&root, "api.test"))
                .await
                .unwrap();
            let mut seen = HashMap::<String, u64>::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .request("api.test", "/?delay_ms=5", &[])
                    .await
                    .expect("request failed");
                assert_eq!(reply.status, 200, "{}", reply.body);
                *seen
                    .entry(reply.json()["backend"].as_str().unwrap().to_string())
                    .or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = pki.base_yaml(gw.addr.port());
    pki.write("policies/gateway.yaml", &format!("{base}{}", pool_route(&[&b, &c], "")));
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(outcome["result"], "applied", "{outcome}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_c = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total: HashMap<String, u64> = HashMap::new();
    for c in clients {
        for (k, v) in c.await.expect("a client saw a failure") {
            *total.entry(k).or_default() += v;
        }
    }
    assert!(
        total.get("c").is_some_and(|n| *n > 0),
        "the new backend serves: {total:?}"
    );
    assert!(done.load(Ordering::Relaxed) > before_c, "traffic kept flowing");
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    let addrs: Vec<&str> = route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap())
        .collect();
    assert!(!addrs.contains(&a.addr.to_string().as_str()), "{addrs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_target_serves_and_is_resolved_again_periodically() {
    let pki = TestPki::new();
    let a = Backend::start("a", None).await;
    let routes = format!(
        "routes:\n  - name: pool\n    match: {{ host: api.test }}\n    upstream: {{ dns: \"localhost:{}\", dns_refresh: 100ms }}\n",
        a.addr.port()
    );
    let gw = TestGateway::start(&pki, &routes).await;
    for _ in 0..3 {
        // across several refreshes, the pool keeps serving from what the name resolves to
        assert_eq!(spread(&gw, &pki, 5, "/").await.get("a"), Some(&5));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, route) = gw.admin_get("/api/routes/pool").await;
    assert_eq!(route["upstream"], format!("dns:localhost:{}", a.addr.port()));
    assert!(
        route["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["address"] == a.addr.to_string()),
        "{route}"
    );
}
