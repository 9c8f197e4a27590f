//! The would-be-rejected picture survives restarts, and a `kill -9` loses at most the last
//! flush interval while the store reopens cleanly.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, ClientKind, ClientOptions, GatewayProcess, TestGateway, TestPki};

const ROUTES: &str = r#"
routes:
  - name: orders
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
"#;

/// The rejections view once it counts `rejections` requests in all: recording is off the
/// request path, so a client can be listed before its second rejection lands.
async fn wait_for_rejections(gw: &TestGateway, rejections: u64) -> serde_json::Value {
    let counted = |v: &serde_json::Value| -> u64 {
        v["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    };
    gw.admin_get_until("/api/routes/orders/rejections", |v| counted(v) >= rejections)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_audit_history_readiness_and_overrides() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for kind in [
        ClientKind::NoCert,
        ClientKind::NotAllowed,
        ClientKind::Expired,
        ClientKind::Good,
    ] {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(kind));
        let mut c = Client::connect(gw.addr, &opts).await.unwrap();
        for _ in 0..2 {
            assert_eq!(c.get("api.test", "/").await.status, 200);
        }
    }
    let before = wait_for_rejections(&gw, 6).await;
    gw.admin_post(
        "/api/routes/orders/mode",
        serde_json::json!({"mode": "soft-fail", "reason": "trying"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2_200)).await; // two flushes
    let (_, readiness_before) = gw.admin_get("/api/routes/orders/readiness?window=24h").await;
    gw.stop();

    let gw = TestGateway::start(&pki, ROUTES).await;
    let (_, after) = gw.admin_get("/api/routes/orders/rejections").await;
    let key = |v: &serde_json::Value| {
        let mut c: Vec<(String, String, u64, i64)> = v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["client"].as_str().unwrap().into(),
                    c["reason"].as_str().unwrap().into(),
                    c["count"].as_u64().unwrap(),
                    c["first_seen"].as_i64().unwrap(),
                )
            })
            .collect();
        c.sort();
        c
    };
    assert_eq!(key(&after), key(&before));
    let intruder = after["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reason"] == "identity_not_allowed")
        .expect("the intruder is remembered");
    assert_eq!(intruder["certificate"]["uris"][0], common::pki::NOT_ALLOWED_URI);
    assert_eq!(intruder["sources"][0], "127.0.0.1");
    let (_, readiness_after) = gw.admin_get("/api/routes/orders/readiness?window=24h").await;
    assert_eq!(
        readiness_after["requests"], readiness_before["requests"],
        "{readiness_after}"
    );
    assert_eq!(readiness_after["requests"], 8);
    assert_eq!(readiness_after["would_reject"], 6);
    assert_eq!(
        gw.admin_get("/api/routes/orders").await.1["mode"],
        "soft-fail",
        "overrides survive too"
    );
    let (_, config) = gw.admin_get("/api/config").await;
    assert!(config["audit_store"]["path"]
        .as_str()
        .unwrap()
        .ends_with("audit.sqlite"));
    assert_eq!(config["audit_store"]["last_error"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_at_most_the_last_flush_and_the_store_reopens() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let mut gw = GatewayProcess::start(&pki, ROUTES, backend.addr, &[]).await;
    let addr = gw.addr;

    // traffic keeps flowing while the process is killed
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2, root) = (stop.clone(), sent.clone(), pki.root_pem().to_string());
    let load = tokio::spawn(async move {
        let mut c = Client::connect(addr, &ClientOptions::new(&root, "api.test"))
            .await
            .unwrap();
        while !stop2.load(Ordering::Relaxed) {
            if c.request("api.test", "/", &[]).await.is_err() {
                break;
            }
            sent2.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let sent_before_last_flush = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gw.kill_and_restart().await; // SIGKILL mid-traffic, then start again on the same state
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let sent_total = sent.load(Ordering::Relaxed);
    assert!(sent_before_last_flush > 20, "traffic flowed: {sent_before_last_flush}");

    let admin = gw.admin(None);
    let (_, v) = admin
        .call(http::Method::GET, "/api/routes/orders/rejections", None)
        .await
        .unwrap();
    let count = v["clients"][0]["count"].as_u64().unwrap_or(0);
    let (_, config) = admin.call(http::Method::GET, "/api/config", None).await.unwrap();
    assert_eq!(config["audit_store"]["last_error"], serde_json::Value::Null, "{config}");
    // everything up to a second or more before the kill is there; nothing invented
    assert!(
        count >= sent_before_last_flush,
        "kept {count}, had {sent_before_last_flush} a second and a half before the kill"
    );
    assert!(count <= sent_total, "kept {count} of {sent_total}");
}
