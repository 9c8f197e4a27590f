//! Staged enforcement: exemptions with an end date, enforce_percent by stable client
//! bucket, and automatic rollback.

mod common;

use std::time::Duration;

use common::{pki::ClientCert, Client, ClientKind, ClientOptions, TestGateway, TestPki};
use phasegate::devpki::LeafSpec;

const PROD: &str = "spiffe://test.example/ns/prod/";

async fn get(gw: &TestGateway, pki: &TestPki, cert: Option<ClientCert>, path: &str) -> common::Reply {
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(cert);
    common::client::get_once(gw.addr, &opts, "api.test", path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemptions_let_clients_pass_before_their_date_and_not_after() {
    let pki = TestPki::new();
    let routes = format!(
        r#"
routes:
  - name: current
    match: {{ host: api.test, path_prefix: /current }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: enforce
      trust: internal
      allow: [{{ uri_prefix: "{PROD}" }}]
      exempt:
        - {{ identity: "uri:{intruder}", until: 2999-01-31, reason: "migrating by Q1" }}
        - {{ cidr: 127.0.0.0/8, until: 2999-01-31, reason: "legacy batch host" }}
  - name: lapsed
    match: {{ host: api.test, path_prefix: /lapsed }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: enforce
      trust: internal
      allow: [{{ uri_prefix: "{PROD}" }}]
      exempt:
        - {{ identity: "uri:{intruder}", until: 2020-01-31, reason: "was migrating" }}
"#,
        intruder = common::pki::NOT_ALLOWED_URI
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let intruder = pki.client(ClientKind::NotAllowed);
    let reply = get(&gw, &pki, intruder.clone(), "/current").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-mtls-verdict").unwrap(), "exempt");
    // no certificate, but from an exempt network
    assert_eq!(get(&gw, &pki, None, "/current").await.status, 200);
    // revocation is never exempt, whatever the network
    let revoked = get(&gw, &pki, pki.client(ClientKind::Revoked), "/current").await;
    assert_eq!(
        (revoked.status, revoked.json()["reason"].clone()),
        (403, "revoked".into())
    );
    // past its date, the exemption no longer applies
    let lapsed = get(&gw, &pki, intruder, "/lapsed").await;
    assert_eq!(
        (lapsed.status, lapsed.json()["reason"].clone()),
        (403, "identity_not_allowed".into())
    );

    let (_, route) = gw.admin_get("/api/routes/lapsed").await;
    assert_eq!(route["exemptions"][0]["active"], false, "{route}");
    let (_, route) = gw.admin_get("/api/routes/current").await;
    assert_eq!(route["exemptions"][0]["active"], true);
    assert_eq!(
        route["exemptions"][0]["client"],
        format!("uri:{}", common::pki::NOT_ALLOWED_URI)
    );
    // exempt clients are recorded as exempt and do not count against readiness
    let (_, records) = gw
        .admin_get_until("/api/routes/current/rejections?verdict=all", |r| {
            r["clients"].as_array().map_or(0, |c| c.len()) >= 3
        })
        .await;
    let verdicts: Vec<&str> = records["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["last_verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts.iter().filter(|v| **v == "exempt").count(), 2, "{records}");
    let (_, readiness) = gw.admin_get("/api/routes/current/readiness?window=1h").await;
    assert_eq!(readiness["requests"], 3);
    assert_eq!(readiness["would_reject"], 1, "only the revoked client: {readiness}");
    assert_eq!(readiness["clients"], 1, "only the revoked client: {readiness}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_percent_enforces_the_same_clients_every_time() {
    let pki = TestPki::new();
    let routes = r#"
routes:
  - name: staged
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal, enforce_percent: 50, allow: [{ uri: "spiffe://test.example/ns/prod/sa/checkout" }] }
"#;
    let gw = TestGateway::start(&pki, routes).await;
    let mut enforced = 0;
    for i in 0..24 {
        let uri = format!("spiffe://test.example/ns/team-{i}/sa/worker");
        let cert = pki.issue(&LeafSpec::client(&uri));
        let expected_enforced = phasegate::policy::percentile(format!("uri:{uri}").as_bytes()) < 50;
        for _ in 0..2 {
            let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(cert.clone()));
            let mut client = Client::connect(gw.addr, &opts).await.unwrap();
            let reply = client.get("api.test", "/").await;
            let status = if expected_enforced { 403 } else { 200 };
            assert_eq!(reply.status, status, "{uri}: {}", reply.body);
        }
        enforced += usize::from(expected_enforced);
    }
    assert!(
        (4..=20).contains(&enforced),
        "both groups exercised: {enforced} of 24 enforced"
    );
    // the allowed client passes whichever group it is in
    assert_eq!(get(&gw, &pki, pki.client(ClientKind::Good), "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rollback_trips_and_the_next_request_passes() {
    let pki = TestPki::new();
    let routes = r#"
routes:
  - name: fragile
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls:
      mode: enforce
      trust: internal
      auto_rollback: { max_reject_ratio: 0.5, window: 60s, min_requests: 5 }
"#;
    let gw = TestGateway::start(&pki, routes).await;
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    for _ in 0..6 {
        assert_eq!(client.get("api.test", "/").await.status, 403);
    }
    let (_, route) = gw
        .admin_get_until("/api/routes/fragile", |r| r["mode"] == "audit")
        .await;
    assert_eq!(route["mode"], "audit", "{route}");
    assert_eq!(route["override"]["kind"], "auto_rollback");
    let reason = route["override"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("rejected 100.0% of "), "{reason}");
    assert!(route["override"]["summary"]
        .as_str()
        .unwrap()
        .contains("rolled back automatically"));
    assert_eq!(client.get("api.test", "/").await.status, 200, "the next request passes");
}

/// The API through the real binary, as `readiness` and `notify-list` read it.
async fn admin_get(gw: &common::GatewayProcess, path: &str) -> (u16, serde_json::Value) {
    gw.admin(None).call(http::Method::GET, path, None).await.unwrap()
}

fn cli(gw: &common::GatewayProcess, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(args)
        .env("PHASEGATE_ADMIN", gw.admin_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls until `path` lists `n` clients (recording is asynchronous).
async fn clients(gw: &common::GatewayProcess, path: &str, n: usize) -> Vec<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, v) = admin_get(gw, path).await;
        assert_eq!(status, 200, "{v}");
        if v["clients"].as_array().is_some_and(|c| c.len() == n) {
            return v["clients"].as_array().unwrap().clone();
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path}: expected {n} clients, got {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_clients_are_neither_counted_nor_listed_as_would_be_rejected() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let routes = format!(
        r#"
routes:
  - name: legacy
    match: {{ host: api.test, path_prefix: /legacy }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: audit
      trust: internal
      exempt: [{{ cidr: 127.0.0.0/8, until: 2999-01-31, reason: "batch hosts" }}]
  - name: orders
    match: {{ host: api.test, path_prefix: /orders }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: audit
      trust: internal
      allow: [{{ uri_prefix: "{PROD}" }}]
      exempt: [{{ identity: "uri:{intruder}", until: 2999-01-31, reason: "migrating by Q1" }}]
"#,
        intruder = common::pki::NOT_ALLOWED_URI
    );
    let mut gw = common::GatewayProcess::start(&pki, &routes, backend.addr, &[]).await;
    let get = |cert: Option<ClientCert>, path: &'static str| {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(cert);
        let addr = gw.addr;
        async move { common::client::get_once(addr, &opts, "api.test", path).await.status }
    };
    // the issue's minimal case: one certificate-less request from an exempt network
    assert_eq!(get(None, "/legacy").await, 200);
    let exempt = clients(&gw, "/api/routes/legacy/rejections?verdict=exempt", 1).await;
    assert_eq!(exempt[0]["last_verdict"], "exempt");
    let (_, r) = admin_get(&gw, "/api/routes/legacy/readiness").await;
    assert_eq!(
        (
            r["requests"].as_u64(),
            r["would_reject"].as_u64(),
            r["clients"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["summary"], "enforce now would reject 0.0% of requests from 0 clients");
    assert_eq!(clients(&gw, "/api/routes/legacy/rejections", 0).await.len(), 0);

    // one exempt client and one that would break, on one route
    assert_eq!(get(pki.client(ClientKind::NotAllowed), "/orders").await, 200);
    assert_eq!(get(None, "/orders").await, 200);
    assert_eq!(get(None, "/orders").await, 200);
    clients(&gw, "/api/routes/orders/rejections?verdict=all", 2).await;
    let would = clients(&gw, "/api/routes/orders/rejections", 1).await;
    assert_eq!(
        (would[0]["reason"].as_str(), would[0]["count"].as_u64()),
        (Some("no_cert"), Some(2))
    );
    let exempt = clients(&gw, "/api/routes/orders/rejections?verdict=exempt", 1).await;
    assert_eq!(exempt[0]["client"], format!("uri:{}", common::pki::NOT_ALLOWED_URI));
    assert_eq!(exempt[0]["reason"], "identity_not_allowed");
    let (_, r) = admin_get(&gw, "/api/routes/orders/readiness").await;
    assert_eq!(
        (r["would_reject"].as_u64(), r["clients"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    let (_, route) = admin_get(&gw, "/api/routes/orders").await;
    assert_eq!(route["last_day"]["clients"], 1, "the overview's Clients column");
    assert_eq!(route["exemptions"][0]["ends"], "through 2999-01-31 (UTC)");
    let (status, bad) = admin_get(&gw, "/api/routes/orders/rejections?verdict=maybe").await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("expected would_reject, exempt or all"),
        "{bad}"
    );

    let text = cli(&gw, &["readiness", "orders"]);
    assert_eq!(
        text.trim(),
        "orders (24h): enforce now would reject 66.7% of requests from 1 client"
    );
    let list = cli(&gw, &["notify-list", "orders"]);
    assert!(list.starts_with("orders: 1 client(s) enforce would reject"), "{list}");
    // the CSV says which is which
    let (status, csv) = admin_get(
        &gw,
        "/api/routes/orders/rejections?verdict=all&format=csv&sort=client&order=asc",
    )
    .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap().to_string();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("client,issuer,reason,last_verdict,count,"),
        "{csv}"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("addr:127.0.0.1,,no_cert,would_reject,2,"),
        "{csv}"
    );
    assert!(
        lines.next().unwrap().contains(",identity_not_allowed,exempt,1,"),
        "{csv}"
    );

    // after a restart each client is back in its own set
    tokio::time::sleep(phasegate::audit::FLUSH_EVERY * 2).await;
    gw.kill_and_restart().await;
    assert_eq!(
        clients(&gw, "/api/routes/orders/rejections", 1).await[0]["reason"],
        "no_cert"
    );
    assert_eq!(
        clients(&gw, "/api/routes/orders/rejections?verdict=exempt", 1).await[0]["reason"],
        "identity_not_allowed"
    );
}
