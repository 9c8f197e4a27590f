//! 50 reloads, valid and broken, while clients keep sending requests: no request fails, and
//! each one is decided wholly by one snapshot — its mode and its upstream always agree.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{Client, ClientOptions, TestGateway, TestPki};
use phasegate::demo::backend::serve_echo;

fn routes(mode: &str, backend: &str) -> String {
    format!(
        r#"
routes:
  - name: flip
    match: {{ host: api.test }}
    upstream: {{ address: "{backend}" }}
    mtls: {{ mode: {mode}, trust: internal }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_continuous_traffic_fail_no_request_and_never_mix_snapshots() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_b = listener.local_addr().unwrap();
    let _b = serve_echo(listener, "echo-b", None).await.unwrap();
    let gw = TestGateway::start(&pki, &routes("audit", "{backend}")).await;
    let backend_a = gw.backend.to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut opts = ClientOptions::new(pki.root_pem(), "api.test");
        opts.h2 = i % 2 == 1;
        let (stop, counts, addr) = (stop.clone(), counts.clone(), gw.addr);
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &opts).await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .request("api.test", "/x", &[])
                    .await
                    .expect("request failed during reload");
                assert_eq!(reply.status, 200, "{}", reply.body);
                let body = reply.json();
                let verdict = reply.upstream_header("x-mtls-verdict").unwrap();
                match body["backend"].as_str().unwrap() {
                    "echo" => {
                        assert_eq!(verdict, "would-reject; reason=no_cert", "audit config, audit decision");
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    }
                    "echo-b" => {
                        assert_eq!(verdict, "unauthenticated", "soft-fail config, soft-fail decision");
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unknown backend {other}"),
                }
                n += 1;
            }
            n
        }));
    }

    let base = pki.base_yaml(gw.addr.port());
    let mut applied = 0;
    let mut rejected = 0;
    for i in 0..50 {
        let yaml = match i % 3 {
            0 => format!("{base}{}", routes("soft-fail", &backend_b.to_string())),
            1 => format!("{base}{}", routes("audit", &backend_a)),
            _ => format!("{base}{}", routes("sideways", &backend_a)),
        };
        pki.write("policies/gateway.yaml", &yaml);
        let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
        match outcome["result"].as_str().unwrap() {
            "applied" => applied += 1,
            "rejected" => rejected += 1,
            "unchanged" => {} // the file watcher got there first
            other => panic!("{other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("a client task failed");
    }
    let (a, b) = (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed));
    assert!(
        a > 0 && b > 0,
        "both configurations served traffic: audit {a}, soft-fail {b}"
    );
    assert!(rejected >= 10, "broken configs were rejected: {rejected}");
    assert!(applied + rejected > 20);
    assert!(total > 100, "traffic kept flowing: {total}");
    let (_, status) = gw.admin_get("/api/config").await;
    assert!(status["generation"].as_u64().unwrap() >= 30, "{status}");
}
