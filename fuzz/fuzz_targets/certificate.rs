//! Any bytes presented as a client certificate chain: a reason, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phasegate::devpki::CertificateAuthority;
use phasegate::tls::{ChainLimits, PeerCertificate, RequiredEku, TrustAnchors};

fn anchors() -> &'static TrustAnchors {
    static A: OnceLock<TrustAnchors> = OnceLock::new();
    A.get_or_init(|| {
        let root = CertificateAuthority::root("fuzz root").unwrap();
        let cert = openssl::x509::X509::from_pem(root.cert_pem.as_bytes()).unwrap();
        TrustAnchors::new(vec![cert], vec![], &[], ChainLimits::default(), false, None).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // as DER (what a handshake hands over) ...
    if let Ok(leaf) = openssl::x509::X509::from_der(data) {
        let _ = anchors().verify(&PeerCertificate::new(leaf, Vec::new()), RequiredEku::ClientAuth);
    }
    // ... and as a PEM file given to `phasegate verify`
    if let Ok(peer) = PeerCertificate::from_pem(data) {
        let _ = anchors().verify(&peer, RequiredEku::ClientAuth);
    }
});
