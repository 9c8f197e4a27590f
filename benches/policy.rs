//! Policy engine costs: compile + swap of a whole config, a rollback, the per-request
//! route match + decision, what audit adds to a request against off, and recording under
//! contention.
//!
//! Targets (issues 3 and 9): 10,000 routes compile + swap in < 200 ms; decision at 10,000
//! routes < 1 µs with no allocation on a clean pass.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phasegate::audit::{Recorder, RejectionEvent};
use phasegate::control::route_runtime;
use phasegate::devpki::{CertificateAuthority, LeafSpec};
use phasegate::policy::{Mode, Override, OverrideKind, Overrides, Reason, Snapshot, Verdict};
use phasegate::proxy::{decide_request, prepare_upstream_request};
use phasegate::tls::{ConnectionTls, PeerCertificate};
use phasegate::upstream::PoolRegistry;

/// mimalloc: the request path and config compilation are allocation-heavy, and glibc malloc
/// cost ~12–15% of both in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A policy directory with `n` routes over n/10 hosts, a listener and a trust bundle.
fn write_config(dir: &Path, n: usize) -> (CertificateAuthority, String) {
    let root = CertificateAuthority::root("bench root").unwrap();
    let server = root.issue(&LeafSpec::server(&["svc0.bench"])).unwrap();
    std::fs::write(dir.join("root.pem"), &root.cert_pem).unwrap();
    std::fs::write(dir.join("server.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    let mut yaml = String::from(
        "listeners:\n  - name: edge\n    address: 127.0.0.1:1\n    tls:\n      certificates:\n        - hosts: [svc0.bench]\n          cert: server.crt\n          key: server.key\ntrust_bundles:\n  internal:\n    ca: root.pem\nroutes:\n",
    );
    for i in 0..n {
        let mode = ["off", "audit", "soft-fail", "enforce"][i % 4];
        yaml.push_str(&format!(
            "  - name: route-{i}\n    match: {{ host: svc{}.bench, path_prefix: /api/v1/team-{i}/items }}\n    upstream: {{ address: \"10.0.{}.{}:8080\" }}\n    mtls: {{ mode: {mode}, trust: internal, allow: [{{ uri_prefix: \"spiffe://bench/ns/{}/\" }}] }}\n",
            i / 10,
            (i / 250) % 250,
            i % 250,
            i % 7
        ));
    }
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
    let client = root.issue(&LeafSpec::client("spiffe://bench/ns/3/sa/client")).unwrap();
    (root, client.cert_pem)
}

/// What a reload does before the swap: compile, then attach each route's counters and
/// pool (kept when unchanged).
fn snapshot_of(dir: &Path, recorder: &Recorder, pools: &PoolRegistry) -> Snapshot {
    let config = Arc::new(phasegate::config::load(dir).unwrap());
    let runtime = route_runtime(&config, recorder, pools);
    Snapshot::new(1, 0, config, Arc::new(Overrides::new()), runtime)
}

fn compile_and_swap(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_and_swap");
    group.sample_size(10);
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), n);
        let (recorder, _aggregator) = Recorder::new();
        let pools = PoolRegistry::default();
        let live = ArcSwap::from_pointee(snapshot_of(dir.path(), &recorder, &pools));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| live.store(Arc::new(snapshot_of(dir.path(), &recorder, &pools))))
        });
    }
    group.finish();
}

fn rollback(c: &mut Criterion) {
    let mut group = c.benchmark_group("rollback");
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), n);
        let (recorder, _aggregator) = Recorder::new();
        let pools = PoolRegistry::default();
        let live = ArcSwap::from_pointee(snapshot_of(dir.path(), &recorder, &pools));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // what the control plane does: copy the overrides, add one, swap a snapshot
            b.iter(|| {
                let current = live.load_full();
                let mut overrides = (*current.overrides).clone();
                overrides.insert(
                    "route-7".into(),
                    Override {
                        mode: Mode::Audit,
                        kind: OverrideKind::Rollback,
                        yaml_mode_when_set: Mode::Enforce,
                        since: 0,
                        reason: None,
                    },
                );
                live.store(Arc::new(current.with_overrides(Arc::new(overrides))));
            })
        });
    }
    group.finish();
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_and_decide");
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let (_root, client_pem) = write_config(dir.path(), n);
        let (recorder, _aggregator) = Recorder::new();
        let pools = PoolRegistry::default();
        let snapshot = snapshot_of(dir.path(), &recorder, &pools);
        let peer = PeerCertificate::from_pem(client_pem.as_bytes()).unwrap();
        let conn = ConnectionTls::new(None, true, Some(peer));
        // the last enforce route whose allow list admits the client: a clean pass
        let target = (0..n).rev().find(|i| i % 4 == 3 && i % 7 == 3).unwrap();
        let host = format!("svc{}.bench", target / 10);
        let path = format!("/api/v1/team-{target}/items/42");
        let mut req = pingora_http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        req.insert_header("host", host.as_str()).unwrap();
        let source = Some("10.0.0.1".parse().unwrap());
        let decide = || decide_request(&snapshot, Some(&conn), black_box(&req), source, 1).unwrap();
        assert_eq!(decide().decision.verdict, Verdict::Pass);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(decide));
    }
    group.finish();
}

/// Issue 9's "audit vs off on the same route": everything phasegate does per request on a
/// keep-alive connection — match and decide (with the connection's cached chain verdict),
/// then the upstream request built from a copy of the client's, as Pingora does — for one
/// route in audit mode (client certificate, verified) and the same route rolled back to off
/// (no certificate asked). The difference is what audit adds to a request.
fn audit_vs_off(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_vs_off");
    let n = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (_root, client_pem) = write_config(dir.path(), n);
    let (recorder, _aggregator) = Recorder::new();
    let pools = PoolRegistry::default();
    let audit = snapshot_of(dir.path(), &recorder, &pools);
    // the last audit route whose allow list admits the client
    let target = (0..n).rev().find(|i| i % 4 == 1 && i % 7 == 3).unwrap();
    let mut overrides = Overrides::new();
    overrides.insert(
        format!("route-{target}"),
        Override {
            mode: Mode::Off,
            kind: OverrideKind::SetMode,
            yaml_mode_when_set: Mode::Audit,
            since: 0,
            reason: None,
        },
    );
    let off = audit.with_overrides(Arc::new(overrides));
    let host = format!("svc{}.bench", target / 10);
    let with_cert = ConnectionTls::new(
        Some(host.clone().into()),
        true,
        Some(PeerCertificate::from_pem(client_pem.as_bytes()).unwrap()),
    );
    let without_cert = ConnectionTls::new(Some(host.clone().into()), false, None);
    let path = format!("/api/v1/team-{target}/items/42");
    let mut req = pingora_http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    req.insert_header("host", host.as_str()).unwrap();
    req.insert_header("user-agent", "loadgen").unwrap();
    req.insert_header("accept", "*/*").unwrap();
    let source = Some("10.0.0.1".parse().unwrap());
    for (label, snapshot, conn, verdict) in [
        ("off", &off, &without_cert, Verdict::NotEvaluated),
        ("audit", &audit, &with_cert, Verdict::Pass),
    ] {
        let per_request = || {
            let decided = decide_request(snapshot, Some(conn), black_box(&req), source, 1).unwrap();
            let xfcc = decided.forwarded_certificate(Some(conn));
            let mut upstream = req.clone();
            prepare_upstream_request(
                &mut upstream,
                xfcc,
                Some(decided.decision.verdict),
                decided.rewritten_path,
            )
            .unwrap();
            (decided.decision.verdict, upstream)
        };
        let (got, upstream) = per_request();
        let route = snapshot.config.table.lookup(&host, &path).unwrap();
        assert_eq!((got, snapshot.effective_mode(route).as_str()), (verdict, label));
        assert_eq!(
            upstream.headers.contains_key("x-forwarded-client-cert"),
            label == "audit"
        );
        group.bench_function(label, |b| b.iter(per_request));
    }
    group.finish();
}

fn recording_under_contention(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (recorder, aggregator) = Recorder::new();
    rt.spawn(aggregator.run());
    let route: Arc<str> = "route".into();
    c.bench_function("record_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u8 {
                    let (recorder, route) = (recorder.clone(), route.clone());
                    s.spawn(move || {
                        for i in 0..iters {
                            recorder.record(RejectionEvent {
                                route: route.clone(),
                                mode: Mode::Audit,
                                verdict: Verdict::WouldReject(Reason::NoCert),
                                detail: None,
                                peer: None,
                                source: Some(std::net::IpAddr::from([10, t, (i % 200) as u8, 1])),
                                at: 0,
                                grpc_method: None,
                            });
                        }
                    });
                }
            });
            start.elapsed() / 2
        })
    });
}

criterion_group!(
    benches,
    decision,
    audit_vs_off,
    rollback,
    compile_and_swap,
    recording_under_contention
);
criterion_main!(benches);
