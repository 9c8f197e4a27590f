//! TLS mechanics: the handshake, identity parsed once per connection, and chain
//! verification per trust bundle. Decisions are left to `policy`.

mod accept;
mod client_stream;
mod connection;
mod crl;
mod ffi;
mod identity;
mod memo;
mod peer;
mod strict;
mod verify;
mod xfcc;

pub use accept::{CertificateRequests, ClientHelloDeadline, HandshakeCallbacks, MAX_CLIENT_CHAIN_BYTES};
pub use client_stream::ClientStream;
pub use connection::{ConnectionTls, Evidence};
pub use crl::{read_crls, CrlEntry};
pub use ffi::{has_buffered_input, openssl_allocates_with_mimalloc, socket_bytes_read, verify_error_string};
pub use identity::{hex, parse_identity};
pub use peer::PeerCertificate;
pub use strict::{is_host_name, Relaxed, StrictCheck};
pub use verify::{
    evidence_of, unix_time, ChainFailure, ChainLimits, ChainOk, ChainOutcome, RequiredEku, TrustAnchors, VerifyOptions,
};
pub use xfcc::xfcc_value;

use openssl::x509::X509Ref;

/// `CN=…,O=…` of a name, for messages.
pub fn describe_name(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            Some(format!("{key}={value}"))
        })
        .collect();
    if parts.is_empty() {
        "no subject".to_string()
    } else {
        parts.join(",")
    }
}

/// A short description of a certificate for messages: its subject and first SAN.
pub fn describe(cert: &X509Ref) -> String {
    let subject = describe_name(cert.subject_name());
    let san = cert.subject_alt_names().and_then(|names| {
        names.iter().find_map(|n| {
            n.uri()
                .map(|u| format!("uri:{u}"))
                .or_else(|| n.dnsname().map(|d| format!("dns:{d}")))
        })
    });
    match san {
        Some(san) => format!("{subject} {san}"),
        None => subject,
    }
}

/// An acceptor with `server`'s certificate and key, for the tests that make real handshakes.
#[cfg(test)]
fn test_acceptor(server: &crate::devpki::Issued) -> openssl::ssl::SslAcceptorBuilder {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    acceptor
        .set_certificate(&openssl::x509::X509::from_pem(server.cert_pem.as_bytes()).expect("pem"))
        .expect("server cert");
    acceptor
        .set_private_key(&openssl::pkey::PKey::private_key_from_pem(server.key_pem.as_bytes()).expect("key"))
        .expect("server key");
    acceptor
}
