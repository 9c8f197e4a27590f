//! Fleet mode against a real PostgreSQL started here (issue 18):
//!
//! 1. **Propagation**: three `phasegate run` processes share the store; 20 times, a
//!    rollback (then a clear) goes through instance A, and the time from A's answer until
//!    the change is in force on B and C is measured. Target: p99 < 500 ms.
//! 2. **Store throughput**: 20 simulated instances each publish one batch a second with
//!    1,000 distinct clients (and their per-minute rows); the latency of every batch is
//!    measured. Target: p99 < 1 s. The tables are sized afterwards, and the growth per day
//!    stated: client rows are upserted per (instance, route, client), so they grow with
//!    distinct clients, not with time; minute rows grow by routes × instances × 1,440 a
//!    day and are pruned past the retention (7 days).
//!
//! `cargo bench --bench fleet` prints both and exits non-zero when a target is missed.

// the bench uses part of the test harness
#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phasegate::audit::{Bucket, ClientRecord, Totals};
use phasegate::policy::{Mode, Reason, Verdict};
use phasegate::store::{InstanceBatch, InstanceInfo, Store};

use common::{free_port, postgres, wait_for_port};

struct Gateway {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The dev PKI and example policies the demo writes, with one instance's own ports.
fn policies_for(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, SocketAddr, SocketAddr) {
    let layout = phasegate::demo::prepare(&dir.join(name)).expect("demo layout");
    let port = free_port();
    let listeners = layout.policies.join("00-listeners.yaml");
    let text = std::fs::read_to_string(&listeners).unwrap();
    std::fs::write(&listeners, text.replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"))).unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (layout.policies, format!("127.0.0.1:{port}").parse().unwrap(), admin)
}

async fn admin_call(admin: SocketAddr, method: http::Method, path: &str, token: Option<&str>) -> serde_json::Value {
    let client =
        phasegate::cli::admin_client::AdminClient::new(&format!("http://{admin}"), token.map(str::to_string)).unwrap();
    client.call(method, path, Some(serde_json::json!({}))).await.unwrap().1
}

async fn mode_of(admin: SocketAddr, route: &str) -> String {
    admin_call(admin, http::Method::GET, &format!("/api/routes/{route}"), None).await["mode"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn propagation(pg: &postgres::Postgres) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let token = "bench-token";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let mut gateways = Vec::new();
    for name in ["a", "b", "c"] {
        let (policies, _addr, admin) = policies_for(dir.path(), name);
        let child = Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args([
                "run",
                "--threads",
                "1",
                "--instance-id",
                name,
                "--store",
                &pg.url,
                "--admin",
            ])
            .arg(admin.to_string())
            .arg("--config")
            .arg(&policies)
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{name}")))
            .arg("--admin-token-file")
            .arg(dir.path().join("token"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(admin).await;
        gateways.push(Gateway { child, admin });
    }
    // every instance connected
    for g in &gateways {
        let mut complete = false;
        for _ in 0..200 {
            let v = admin_call(g.admin, http::Method::GET, "/api/fleet", None).await;
            if v["health"]["state"] == "reachable" && v["instances"].as_array().is_some_and(|i| i.len() == 3) {
                complete = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(complete, "{}: the fleet of three never formed", g.admin);
    }
    let route = "payments-enforce";
    let mut times = Vec::new();
    for trial in 0..20 {
        let (path, method, want) = if trial % 2 == 0 {
            (format!("/api/routes/{route}/rollback"), http::Method::POST, "audit")
        } else {
            (format!("/api/routes/{route}/override"), http::Method::DELETE, "enforce")
        };
        let outcome = admin_call(gateways[0].admin, method, &path, Some(token)).await;
        assert_eq!(outcome["fleet"]["delivery"], "fleet", "{outcome}");
        let answered = Instant::now();
        for g in &gateways[1..] {
            while mode_of(g.admin, route).await != want {
                assert!(
                    answered.elapsed() < Duration::from_secs(10),
                    "trial {trial} never arrived"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        times.push(answered.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    times
}

fn record(i: usize, now: i64) -> ClientRecord {
    ClientRecord {
        client: format!("uri:spiffe://bench.example/ns/prod/sa/client-{i}"),
        reason: Reason::IdentityNotAllowed,
        detail: Some("no SAN on the allow list".into()),
        last_verdict: Verdict::WouldReject(Reason::IdentityNotAllowed),
        last_mode: Mode::Audit,
        count: 1,
        first_seen: now,
        last_seen: now,
        certificate: None,
        sources: vec![std::net::IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8])],
        grpc_method: None,
        seen_by: vec![],
    }
}

async fn throughput(pg: &postgres::Postgres, instances: usize, clients: usize, seconds: u32) -> Vec<Duration> {
    let target = phasegate::store::postgres::PgTarget::parse(&pg.url, None).unwrap();
    let store = phasegate::store::postgres::PgStore::new(target);
    store.clone().start();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(store.health(), phasegate::store::StoreHealth::Reachable) {
        assert!(std::time::Instant::now() < deadline, "the store never became reachable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store: Arc<dyn Store> = store;
    let mut tasks = Vec::new();
    for n in 0..instances {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let route: Arc<str> = "orders-audit".into();
            let mut latencies = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for second in 0..seconds {
                tick.tick().await;
                let now = phasegate::proxy::unix_now();
                let me = InstanceInfo {
                    id: format!("sim-{n:02}"),
                    version: "bench".into(),
                    started_at: now - 60,
                    generation: 1,
                    content_hash: "bench".into(),
                    last_seen: now,
                };
                let mut batch = InstanceBatch::default();
                for i in 0..clients {
                    let mut r = record(i, now);
                    r.count = u64::from(second) + 1;
                    batch.records.push((route.clone(), r));
                }
                batch.minutes.push((
                    route.clone(),
                    Bucket {
                        minute: now - now.rem_euclid(60),
                        counts: Totals {
                            requests: clients as u64,
                            would_reject: clients as u64,
                            ..Totals::default()
                        },
                    },
                ));
                batch.route_totals.push((route.clone(), clients as u64, 0));
                let started = Instant::now();
                store.heartbeat(&me).await.unwrap();
                store.publish(&me, &batch).await.unwrap();
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn table_sizes(pg: &postgres::Postgres) -> Vec<(String, i64, i64)> {
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut out = Vec::new();
    for table in ["clients", "minutes", "route_totals", "instances", "override_log"] {
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        let bytes: i64 = client
            .query_one("SELECT pg_total_relation_size($1::text::regclass)", &[&table])
            .await
            .unwrap()
            .get(0);
        out.push((table.to_string(), rows, bytes));
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pg = postgres::Postgres::start();
        let mut failed = false;

        let mut times = propagation(&pg).await;
        times.sort();
        let p99 = percentile(&times, 0.99);
        println!(
            "propagation of a rollback to 2 other instances, 20 trials: p50 {:?}, p99 {p99:?}, max {:?} (target p99 < 500ms)",
            percentile(&times, 0.5),
            times[times.len() - 1]
        );
        failed |= p99 >= Duration::from_millis(500);

        let (instances, clients, seconds) = (20, 1000, 15);
        let mut latencies = throughput(&pg, instances, clients, seconds).await;
        latencies.sort();
        let p99 = percentile(&latencies, 0.99);
        println!(
            "store throughput, {instances} instances x 1 batch/s x {clients} clients for {seconds}s ({} batches): p50 {:?}, p99 {p99:?}, max {:?} (target p99 < 1s)",
            latencies.len(),
            percentile(&latencies, 0.5),
            latencies[latencies.len() - 1]
        );
        failed |= p99 >= Duration::from_secs(1);
        for (table, rows, bytes) in table_sizes(&pg).await {
            println!("  table {table}: {rows} rows, {} KiB", bytes / 1024);
        }
        println!(
            "  growth per day at this load: clients stay at instances x distinct clients ({}), minutes grow by routes x instances x 1440 ({} rows/day), both pruned past 7 days",
            instances * clients,
            instances * 1440
        );
        if failed {
            eprintln!("a target was missed");
            std::process::exit(1);
        }
    });
}
