//! A bounded soak: mixed traffic with reloads and rollbacks for SOAK_SECS (default 600),
//! against the `phasegate` binary. RSS must stay flat and nothing may fail beyond the
//! expected 403s. Not part of the default run:
//!
//!     SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, ClientKind, ClientOptions, GatewayProcess, TestPki, ADMIN_TOKEN};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn routes(mode: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "routes:\n  - name: flip\n    match: {{ host: api.test, path_prefix: /flip }}\n    upstream: {{ address: \"{backend}\" }}\n    mtls: {{ mode: {mode}, trust: internal, allow: [{{ uri_prefix: \"spiffe://test.example/ns/prod/\" }}] }}\n  - name: audit\n    match: {{ host: api.test, path_prefix: /audit }}\n    upstream: {{ address: \"{backend}\" }}\n    mtls: {{ mode: audit, trust: internal }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak; run explicitly"]
async fn mixed_traffic_with_reloads_and_rollbacks_keeps_rss_flat_and_fails_nothing() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let backend_addr = backend.addr;
    let mut gw = GatewayProcess::start_with(
        &pki,
        &routes("audit", backend_addr),
        backend_addr,
        &["--threads", "2"],
        &[("RUST_LOG", "warn")],
        false,
    )
    .await;
    let (pid, addr) = (gw.pid(), gw.addr);
    let base = pki.base_yaml(addr.port());
    let admin = gw.admin(Some(ADMIN_TOKEN));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, forbidden, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut workers = Vec::new();
    for (i, kind) in [
        ClientKind::Good,
        ClientKind::NoCert,
        ClientKind::Expired,
        ClientKind::NotAllowed,
        ClientKind::Good,
        ClientKind::NoCert,
    ]
    .into_iter()
    .enumerate()
    {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(kind));
        let (stop, ok, forbidden, failed) = (stop.clone(), ok.clone(), forbidden.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let h2 = i % 2 == 1;
            while !stop.load(Ordering::Relaxed) {
                // a new connection every 50 requests: handshakes are part of the mix
                let mut o = opts.clone();
                o.h2 = h2;
                let Ok(mut c) = Client::connect(addr, &o).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                for n in 0..50 {
                    let path = if n % 2 == 0 { "/flip" } else { "/audit" };
                    match c.request("api.test", path, &[]).await {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) if r.status == 403 => forbidden.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }));
    }
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        match tick % 10 {
            // reloads: valid flips and a broken change
            3 => drop(pki.write(
                "policies/gateway.yaml",
                &format!("{base}{}", routes("enforce", backend_addr)),
            )),
            5 => drop(pki.write(
                "policies/gateway.yaml",
                &format!("{base}{}", routes("sideways", backend_addr)),
            )),
            7 => drop(pki.write(
                "policies/gateway.yaml",
                &format!("{base}{}", routes("soft-fail", backend_addr)),
            )),
            // rollbacks and clears
            8 => drop(
                admin
                    .call(
                        http::Method::POST,
                        "/api/routes/flip/rollback",
                        Some(serde_json::json!({"reason": "soak"})),
                    )
                    .await,
            ),
            9 => drop(
                admin
                    .call(http::Method::DELETE, "/api/routes/flip/override", None)
                    .await,
            ),
            _ => {}
        }
        if tick.is_multiple_of(10) {
            rss.push(rss_kib(pid));
            println!(
                "{:>4}s rss {:>7} KiB  ok {} forbidden {} failed {}",
                started.elapsed().as_secs(),
                rss.last().unwrap(),
                ok.load(Ordering::Relaxed),
                forbidden.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    gw.kill();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed beyond the expected 403s"
    );
    assert!(ok.load(Ordering::Relaxed) > 0 && forbidden.load(Ordering::Relaxed) > 0);
    // after warm-up, memory stays within 20% of where it settled
    let settled = rss.len() / 4;
    if rss.len() >= 8 {
        let early = rss[settled..settled * 2].iter().sum::<u64>() / settled as u64;
        let late = rss[rss.len() - settled..].iter().sum::<u64>() / settled as u64;
        assert!(
            late <= early + early / 5,
            "RSS grew from {early} KiB to {late} KiB: {rss:?}"
        );
    }
}
