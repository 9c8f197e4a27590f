//! Fleet mode: three gateway processes sharing a real PostgreSQL started by the test. The
//! three daily moves hold for the fleet — a rollback through one instance is in force on
//! every instance, clients seen by any instance are on every instance's page — and the
//! way back never depends on the store.

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{ClientKind, ClientOptions, GatewayProcess, TestPki, ADMIN_TOKEN};

const ROUTES: &str = r#"
routes:
  - name: payments
    match: { host: api.test, path_prefix: /payments }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
  - name: orders
    match: { host: api.test, path_prefix: /orders }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, allow: [{ uri: "spiffe://test.example/ns/prod/sa/nobody" }] }
"#;

struct Fleet {
    pki: TestPki,
    pg: Postgres,
    _backend: common::process::EchoBackend,
    gateways: Vec<GatewayProcess>,
}

impl Fleet {
    async fn start(routes: &str) -> Fleet {
        let pki = TestPki::new();
        let pg = Postgres::start();
        let backend = common::echo_backend().await;
        let mut gateways = Vec::new();
        for name in ["a", "b", "c"] {
            let store = pg.url.clone();
            gateways.push(GatewayProcess::start_named(&pki, name, routes, backend.addr, &["--store", &store]).await);
        }
        let fleet = Fleet {
            pki,
            pg,
            _backend: backend,
            gateways,
        };
        // every instance reaches the store and sees the others
        for g in &fleet.gateways {
            wait_until(Duration::from_secs(15), || async {
                let (_, v) = get_json(g, "/api/fleet").await;
                v["health"]["state"] == "reachable" && v["instances"].as_array().is_some_and(|i| i.len() == 3)
            })
            .await;
        }
        fleet
    }

    fn opts(&self, kind: ClientKind) -> ClientOptions {
        ClientOptions::new(self.pki.root_pem(), "api.test").cert(self.pki.client(kind))
    }

    async fn status(&self, i: usize, kind: ClientKind, path: &str) -> u16 {
        common::client::get_once(self.gateways[i].addr, &self.opts(kind), "api.test", path)
            .await
            .status
    }

    /// A connection to the fleet's store, to check what the instances wrote to it.
    async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.pg.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

async fn get_json(g: &GatewayProcess, path: &str) -> (u16, serde_json::Value) {
    g.admin(None).call(http::Method::GET, path, None).await.unwrap()
}

async fn post_json(g: &GatewayProcess, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    g.admin(Some(ADMIN_TOKEN))
        .call(http::Method::POST, path, Some(body))
        .await
        .unwrap()
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_through_one_instance_is_in_force_on_every_instance() {
    let f = Fleet::start(ROUTES).await;
    for i in 0..3 {
        assert_eq!(f.status(i, ClientKind::NoCert, "/payments").await, 403);
    }
    let (status, outcome) = post_json(
        &f.gateways[0],
        "/api/routes/payments/rollback",
        serde_json::json!({"reason": "checkout 403s"}),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["fleet"]["delivery"], "fleet", "{outcome}");
    for i in 0..3 {
        wait_until(Duration::from_secs(5), || async {
            f.status(i, ClientKind::NoCert, "/payments").await == 200
        })
        .await;
        let (_, route) = get_json(&f.gateways[i], "/api/routes/payments").await;
        assert_eq!(route["override"]["reason"], "checkout 403s", "instance {i}: {route}");
    }
    // clearing it anywhere clears it everywhere
    let (status, _) = f.gateways[2]
        .admin(Some(ADMIN_TOKEN))
        .call(http::Method::DELETE, "/api/routes/payments/override", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    for i in 0..3 {
        wait_until(Duration::from_secs(5), || async {
            f.status(i, ClientKind::NoCert, "/payments").await == 403
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_seen_by_one_instance_are_on_every_instance_with_summed_counts() {
    let f = Fleet::start(ROUTES).await;
    // the good client is not on the orders allow list: audit records it as would-reject
    for _ in 0..3 {
        assert_eq!(f.status(2, ClientKind::Good, "/orders").await, 200);
    }
    for _ in 0..2 {
        assert_eq!(f.status(1, ClientKind::Good, "/orders").await, 200);
    }
    let client = format!("uri:{}", common::pki::GOOD_URI);
    let started = Instant::now();
    let record = loop {
        let (_, v) = get_json(&f.gateways[0], "/api/routes/orders/rejections").await;
        let record = v["clients"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["client"] == client.as_str()).cloned())
            .unwrap_or_default();
        if record["count"] == 5 {
            break record;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["reason"], "identity_not_allowed", "{record}");
    let seen: Vec<(String, u64)> = record["seen_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instance"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("b".to_string(), 2), ("c".to_string(), 3)], "{record}");
    // filtered by instance, with that instance's own count
    let (_, only_c) = get_json(&f.gateways[0], "/api/routes/orders/rejections?instance=c").await;
    assert_eq!(only_c["clients"][0]["count"], 3, "{only_c}");
    let (_, only_a) = get_json(&f.gateways[0], "/api/routes/orders/rejections?instance=a").await;
    assert_eq!(only_a["clients"].as_array().unwrap().len(), 0, "{only_a}");
    // readiness counts the fleet's requests
    let (_, readiness) = get_json(&f.gateways[0], "/api/routes/orders/readiness?window=1h").await;
    assert_eq!(readiness["requests"], 5, "{readiness}");
    assert_eq!(readiness["would_reject"], 5, "{readiness}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_no_request_fails_a_rollback_still_works_and_nothing_is_lost() {
    let mut f = Fleet::start(ROUTES).await;
    assert_eq!(f.status(1, ClientKind::NoCert, "/payments").await, 403);
    // requests in flight on b and c while the store goes away and comes back (a restarts)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (addrs, opts, stop) = (
            f.gateways[1..].iter().map(|g| g.addr).collect::<Vec<_>>(),
            f.opts(ClientKind::Good),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for addr in &addrs {
                    statuses.push(
                        common::client::get_once(*addr, &opts, "api.test", "/payments")
                            .await
                            .status,
                    );
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.pg.pause();
    // traffic goes on while the store is gone: audit records pile up on every instance
    for round in 0..6 {
        for i in 0..3 {
            assert_eq!(
                f.status(i, ClientKind::NoCert, "/orders").await,
                200,
                "round {round}, instance {i}"
            );
        }
    }
    let started = Instant::now();
    let (status, outcome) = post_json(
        &f.gateways[0],
        "/api/routes/payments/rollback",
        serde_json::json!({"reason": "store is down"}),
    )
    .await;
    let answered_in = started.elapsed();
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["fleet"]["delivery"], "this_instance_only", "{outcome}");
    assert!(
        outcome["fleet"]["message"]
            .as_str()
            .unwrap()
            .starts_with("applied on this instance only: fleet store unreachable since"),
        "{outcome}"
    );
    assert!(
        answered_in < Duration::from_secs(2),
        "the way back answered in {answered_in:?}"
    );
    assert_eq!(f.status(0, ClientKind::NoCert, "/payments").await, 200, "in force here");
    assert_eq!(
        f.status(1, ClientKind::NoCert, "/payments").await,
        403,
        "not yet elsewhere"
    );
    // the change waits in the state directory: a restart before the store is back keeps it
    f.gateways[0].restart().await;
    assert_eq!(
        f.status(0, ClientKind::NoCert, "/payments").await,
        200,
        "kept over a restart"
    );
    f.pg.resume();
    // the change reaches the fleet log once the store is back, and every instance
    for i in 0..3 {
        wait_until(Duration::from_secs(15), || async {
            f.status(i, ClientKind::NoCert, "/payments").await == 200
        })
        .await;
    }
    // the audit data spooled during the outage arrives: 18 requests from 127.0.0.1
    wait_until(Duration::from_secs(15), || async {
        let (_, v) = get_json(&f.gateways[1], "/api/routes/orders/rejections").await;
        v["clients"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "no_cert").cloned())
            .is_some_and(|c| c["count"] == 18)
    })
    .await;
    // it went to the fleet log from instance a, once
    let logged: i64 = f
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM override_log WHERE route = 'payments' AND instance = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(statuses.len() >= 30, "{} requests", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_while_the_store_is_down_serves_with_the_last_known_overrides() {
    let mut f = Fleet::start(ROUTES).await;
    let (_, outcome) = post_json(&f.gateways[0], "/api/routes/payments/rollback", serde_json::json!({})).await;
    assert_eq!(outcome["fleet"]["delivery"], "fleet", "{outcome}");
    wait_until(Duration::from_secs(5), || async {
        f.status(1, ClientKind::NoCert, "/payments").await == 200
    })
    .await;
    f.pg.pause();
    f.gateways[1].kill_and_restart().await;
    assert_eq!(
        f.status(1, ClientKind::NoCert, "/payments").await,
        200,
        "the restarted instance keeps the rollback it last knew"
    );
    let (_, fleet) = get_json(&f.gateways[1], "/api/fleet").await;
    assert_eq!(fleet["health"]["state"], "unreachable", "{fleet}");
    f.pg.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_changes_made_at_once_on_two_instances_end_in_one_state_everywhere() {
    let f = Fleet::start(ROUTES).await;
    for round in 0..3 {
        let (x, y) = tokio::join!(
            post_json(
                &f.gateways[0],
                "/api/routes/payments/mode",
                serde_json::json!({"mode": "off"})
            ),
            post_json(
                &f.gateways[1],
                "/api/routes/payments/mode",
                serde_json::json!({"mode": "audit"})
            ),
        );
        assert_eq!((x.0, y.0), (200, 200), "{x:?} {y:?}");
        // both changes are in the log; the later one is the store's state ...
        let sql = f.sql().await;
        let logged: i64 = sql
            .query_one("SELECT count(*) FROM override_log WHERE route = 'payments'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(logged, 2 * (round + 1), "round {round}");
        let stored: String = sql
            .query_one("SELECT value->>'mode' FROM overrides WHERE route = 'payments'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(stored == "off" || stored == "audit", "round {round}: {stored}");
        // ... and every instance ends in it
        let started = Instant::now();
        loop {
            let mut modes = Vec::new();
            for g in &f.gateways {
                modes.push(get_json(g, "/api/routes/payments").await.1["mode"].clone());
            }
            if modes.iter().all(|m| *m == stored.as_str()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: {modes:?}, store {stored}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rollback_trips_once_for_the_fleet_on_the_fleets_figures() {
    let routes = r#"
routes:
  - name: payments
    match: { host: api.test, path_prefix: /payments }
    upstream: { address: "{backend}" }
    mtls:
      mode: enforce
      trust: internal
      auto_rollback: { max_reject_ratio: 0.5, window: 120s, min_requests: 12 }
"#;
    let f = Fleet::start(routes).await;
    // five refused requests per instance: no instance alone reaches min_requests
    for i in 0..3 {
        for _ in 0..5 {
            assert_eq!(f.status(i, ClientKind::NoCert, "/payments").await, 403);
        }
    }
    for i in 0..3 {
        wait_until(Duration::from_secs(10), || async {
            f.status(i, ClientKind::NoCert, "/payments").await == 200
        })
        .await;
    }
    let (_, route) = get_json(&f.gateways[2], "/api/routes/payments").await;
    let reason = route["override"]["reason"].as_str().unwrap_or("").to_string();
    assert_eq!(route["override"]["kind"], "auto_rollback", "{route}");
    assert!(reason.contains("across the fleet; decided by instance"), "{reason}");
    // one decision, one entry in the fleet's log — and no second one a few ticks later
    let sql = f.sql().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let logged: i64 = sql
            .query_one("SELECT count(*) FROM override_log WHERE route = 'payments'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(logged, 1, "after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_any_instance_shows_the_fleet_and_the_clients_other_instances_saw() {
    let f = Fleet::start(ROUTES).await;
    for _ in 0..2 {
        assert_eq!(f.status(2, ClientKind::Good, "/orders").await, 200);
    }
    assert_eq!(f.status(1, ClientKind::Good, "/orders").await, 200);
    let d = common::browser::browser(1280, 900).await;
    let admin = f.gateways[0].admin_addr;
    d.b().goto(&format!("http://{admin}/#/route/orders")).await.unwrap();
    let row_css = format!(
        "#rejections tr[data-client='uri:{}'] [data-field='count']",
        common::pki::GOOD_URI
    );
    let count = d.text_of(&row_css, |t| t.trim() == "3").await;
    assert_eq!(count.trim(), "3", "b and c together");
    // one instance's share
    d.text_of("#instance-filter", |t| t.contains('c')).await;
    d.b()
        .find(fantoccini::Locator::Css("#instance-filter"))
        .await
        .unwrap()
        .select_by_value("c")
        .await
        .unwrap();
    let count = d.text_of(&row_css, |t| t.trim() == "2").await;
    assert_eq!(count.trim(), "2", "what c saw");
    d.b().goto(&format!("http://{admin}/#/config")).await.unwrap();
    let c = d
        .text_of("#fleet-instances tr[data-instance='c']", |t| !t.is_empty())
        .await;
    // each instance here listens on its own port, so each runs a policy of its own: skew
    assert!(c.contains("another policy"), "{c}");
    let a = d
        .text_of("#fleet-instances tr[data-instance='a']", |t| !t.is_empty())
        .await;
    assert!(a.contains("this one") && !a.contains("another policy"), "{a}");
    let summary = d.text_of("#fleet-summary", |t| t.contains("reachable")).await;
    assert!(summary.contains("3 instance(s)"), "{summary}");
    d.screenshot("fleet-config").await;
    // with the store gone, every view says so
    f.pg.pause();
    d.b().goto(&format!("http://{admin}/#/")).await.unwrap();
    let alert = d
        .text_of("#config-alert", |t| t.contains("Fleet store unreachable"))
        .await;
    assert!(alert.contains("serves with what it knows"), "{alert}");
    d.screenshot("fleet-store-down").await;
    f.pg.resume();
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_reached_over_verified_tls_and_its_password_never_logged() {
    let pki = TestPki::new();
    let server = pki
        .intermediate
        .issue(&phasegate::devpki::LeafSpec::server(&["localhost"]))
        .unwrap();
    let pg = Postgres::start_tls(
        &format!("{}{}", server.cert_pem, pki.intermediate.cert_pem),
        &server.key_pem,
    );
    let backend = common::echo_backend().await;
    let root = pki.path("pki/root.pem");
    let other = pki.path("pki/untrusted-root.pem");
    for (ca, reachable) in [(&root, true), (&other, false)] {
        let url = format!(
            "postgresql://postgres:s3cret-not-for-logs@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            pg.port,
            ca.display()
        );
        let mut g = GatewayProcess::start_with(&pki, ROUTES, backend.addr, &["--store", &url], &[], true).await;
        let mut last = serde_json::Value::Null;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            last = get_json(&g, "/api/fleet").await.1;
            if (last["health"]["state"] == "reachable") == reachable && started.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last["health"]["state"] == "reachable", reachable, "{last}");
        if !reachable {
            // refused for its certificate, not for some other failure
            assert!(last["health"].to_string().contains("certificate"), "{last}");
        }
        assert!(
            last["store"].as_str().unwrap().ends_with("sslmode=verify-full"),
            "{last}"
        );
        assert!(!last.to_string().contains("s3cret"), "{last}");
        // the gateway serves either way
        let opts = ClientOptions::new(pki.root_pem(), "api.test");
        assert_eq!(
            common::client::get_once(g.addr, &opts, "api.test", "/orders")
                .await
                .status,
            200
        );
        let logs = g.stop_with_output();
        assert!(!logs.contains("s3cret"), "the password was logged:\n{logs}");
    }
}
