//! Memory of the audit recording (issue 9): recording is bounded per route, and each
//! recorded client costs at most 1 KiB.
//!
//! Fills one route's rejection store to its cap with distinct clients, each with its own
//! certificate (a SPIFFE URI SAN, as in production), the allow-list detail that names its
//! SANs and five IPv6 source addresses — the largest record there is — and counts the live
//! heap bytes the store holds, with a counting allocator around mimalloc (the gateway's
//! allocator). Then the same for clients without a certificate (named by address), and one
//! client past the cap, which must not grow anything.
//!
//! `cargo bench --bench memory` prints bytes per client and exits non-zero above the target.

use std::alloc::{GlobalAlloc, Layout};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use phasegate::audit::{RejectionEvent, RejectionStore, RECORDS_PER_ROUTE};
use phasegate::devpki::{CertificateAuthority, LeafSpec};
use phasegate::policy::{Mode, Reason, Verdict};
use phasegate::tls::PeerCertificate;

const TARGET_BYTES_PER_CLIENT: isize = 1024;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn source(client: usize, n: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0x10,
        0x20,
        0x30,
        0,
        client as u16,
        (client >> 16) as u16,
        n as u16,
    ))
}

fn event(route: &Arc<str>, peer: Option<Arc<PeerCertificate>>, source: IpAddr, at: i64) -> RejectionEvent {
    let reason = if peer.is_some() {
        Reason::IdentityNotAllowed
    } else {
        Reason::NoCert
    };
    RejectionEvent {
        route: route.clone(),
        mode: Mode::Audit,
        verdict: Verdict::WouldReject(reason),
        detail: None,
        peer,
        source: Some(source),
        at,
        grpc_method: None,
    }
}

/// Live bytes the store gained per client while `fill` ran, in the steady state (after the
/// flush has taken the changed records) and at the peak (before it).
fn measure(store: &mut RejectionStore, clients: usize, fill: impl FnOnce(&mut RejectionStore)) -> (isize, isize) {
    let before = live();
    fill(store);
    let peak = live() - before;
    drop(store.take_dirty());
    let steady = live() - before;
    (steady / clients as isize, peak / clients as isize)
}

fn main() {
    let n = RECORDS_PER_ROUTE;
    let route: Arc<str> = Arc::from("payments-api");
    let ca = CertificateAuthority::root("Corp Internal Root CA").unwrap();
    eprintln!("issuing {n} client certificates ...");
    let peers: Vec<Arc<PeerCertificate>> = (0..n)
        .map(|i| {
            let uri = format!("spiffe://corp.example/ns/prod-{:02}/sa/service-{i:05}", i % 50);
            let issued = ca.issue(&LeafSpec::client(&uri)).unwrap();
            Arc::new(PeerCertificate::from_pem(issued.cert_pem.as_bytes()).unwrap())
        })
        .collect();

    // The events own the certificates (the request path's Arcs); what the store keeps is
    // its own, so the events are built outside the measured region and dropped inside it.
    let mut with_cert = RejectionStore::new(n);
    let events: Vec<Vec<RejectionEvent>> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (0..5)
                .map(|s| event(&route, Some(p.clone()), source(i, s), 1_800_000_000 + s as i64))
                .collect()
        })
        .collect();
    let (cert_steady, cert_peak) = measure(&mut with_cert, n, |store| {
        for client in events {
            for e in client {
                store.add(e);
            }
        }
    });

    let mut no_cert = RejectionStore::new(n);
    let events: Vec<RejectionEvent> = (0..n)
        .map(|i| event(&route, None, source(i, 0), 1_800_000_000))
        .collect();
    let (addr_steady, addr_peak) = measure(&mut no_cert, n, |store| {
        for e in events {
            store.add(e);
        }
    });

    // Past the cap: counted as dropped, nothing kept.
    let extra = event(&route, None, source(n + 1, 0), 1_800_000_000);
    let before = live();
    no_cert.add(extra);
    let past_cap = live() - before;
    assert_eq!(no_cert.view("payments-api").dropped, 1);

    println!("recorded clients per route (cap): {n}");
    println!("client with certificate, 5 IPv6 sources: {cert_steady} B steady, {cert_peak} B before the flush");
    println!("client without certificate:              {addr_steady} B steady, {addr_peak} B before the flush");
    println!("a client past the cap:                   {past_cap} B");
    let worst = cert_steady.max(addr_steady);
    let met = worst <= TARGET_BYTES_PER_CLIENT && past_cap <= 0;
    println!(
        "target ≤ {TARGET_BYTES_PER_CLIENT} B per recorded client, nothing past the cap: {}",
        if met { "met" } else { "NOT met" }
    );
    drop(peers);
    if !met {
        std::process::exit(1);
    }
}
