//! A clean pass allocates nothing: route match, cached chain verdict, decision, counters.
//! Counted with a wrapping global allocator (deterministic, not timed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use phasegate::devpki::{CertificateAuthority, LeafSpec};
use phasegate::policy::{Snapshot, Verdict};
use phasegate::proxy::decide_request;
use phasegate::tls::{ConnectionTls, PeerCertificate};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_clean_pass_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = CertificateAuthority::root("root").unwrap();
    let server = root.issue(&LeafSpec::server(&["api.test"])).unwrap();
    let client = root.issue(&LeafSpec::client("spiffe://t/ns/prod/sa/a")).unwrap();
    std::fs::write(dir.path().join("root.pem"), &root.cert_pem).unwrap();
    std::fs::write(dir.path().join("s.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.path().join("s.key"), &server.key_pem).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "listeners: [{name: e, address: \"127.0.0.1:1\", tls: {certificates: [{hosts: [api.test], cert: s.crt, key: s.key}]}}]\n\
         trust_bundles: {internal: {ca: root.pem}}\n\
         routes: [{name: r, match: {host: api.test, path_prefix: /pay}, upstream: {address: \"127.0.0.1:2\"},\n\
         mtls: {mode: enforce, trust: internal, allow: [{uri_prefix: \"spiffe://t/ns/prod/\"}]}}]\n",
    )
    .unwrap();
    let config = Arc::new(phasegate::config::load(dir.path()).unwrap());
    let snapshot = Snapshot::detached(config);
    let conn = ConnectionTls::new(
        None,
        true,
        Some(PeerCertificate::from_pem(client.cert_pem.as_bytes()).unwrap()),
    );

    let mut req = pingora_http::RequestHeader::build("GET", b"/pay/x?y=1", None).unwrap();
    req.insert_header("host", "api.test").unwrap();
    let source = Some("10.0.0.1".parse().unwrap());
    let decide_once = || {
        decide_request(&snapshot, Some(&conn), &req, source, 1)
            .unwrap()
            .decision
            .verdict
    };
    assert_eq!(decide_once(), Verdict::Pass); // the first request verifies and caches
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..1000 {
        assert_eq!(decide_once(), Verdict::Pass);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0);
}
