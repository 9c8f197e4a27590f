//! No client gets a weaker decision because of how its connection was made: resumption,
//! SNI ≠ Host, HTTP/2 reuse, no SNI at all; and two routes on one listener trust different CAs.

mod common;

use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};
use phasegate::devpki::LeafSpec;

const ROUTES: &str = r#"
routes:
  - name: enforce-internal
    match: { host: api.test, path_prefix: /enforce }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
  - name: enforce-partner
    match: { host: api.test, path_prefix: /partner }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: untrusted }
  - name: audit
    match: { host: api.test, path_prefix: /audit }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal }
  - name: open
    match: { host: open.test }
    upstream: { address: "{backend}" }
  - name: other-enforce
    match: { host: other.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_never_skips_verification() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for tls12 in [false, true] {
        let mut opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
        opts.tls12 = tls12;
        let mut first = Client::connect(gw.addr, &opts).await.unwrap();
        assert_eq!(first.get("api.test", "/enforce").await.status, 200);
        let session = first.session();
        assert!(session.is_some(), "tls12={tls12}: no session to offer");
        // Same session offered, no certificate this time.
        let mut again = ClientOptions::new(pki.root_pem(), "api.test");
        again.tls12 = tls12;
        again.session = session;
        let mut second = Client::connect(gw.addr, &again).await.unwrap();
        assert!(!second.session_reused, "tls12={tls12}: the gateway resumed a session");
        let reply = second.get("api.test", "/enforce").await;
        assert_eq!(reply.status, 403, "tls12={tls12}");
        assert_eq!(reply.json()["reason"], "no_cert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_than_the_sni_gets_421() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    // open.test has only an `off` route, so its handshake asks for no certificate.
    let opts = ClientOptions::new(pki.root_pem(), "open.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("open.test", "/").await.status, 200);
    let reply = client.get("api.test", "/enforce").await;
    assert_eq!(reply.status, 421);
    assert_eq!(reply.json()["reason"], "misdirected_request");
    // and the other way round: a verified connection does not carry over to another host
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/enforce").await.status, 200);
    assert_eq!(client.get("other.test", "/").await.status, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_reused_for_another_host_gets_421() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let opts = ClientOptions::new(pki.root_pem(), "open.test")
        .cert(pki.client(ClientKind::Good))
        .h2();
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(client.get("open.test", "/").await.status, 200);
    assert_eq!(client.get("api.test", "/enforce").await.status, 421);
    assert_eq!(client.get("other.test", "/").await.status, 421);
    // while a proper HTTP/2 connection for api.test decides per request, per route
    let opts = ClientOptions::new(pki.root_pem(), "api.test")
        .cert(pki.client(ClientKind::Good))
        .h2();
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/enforce").await.status, 200);
    let reply = client.get("api.test", "/partner").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["reason"], "untrusted_issuer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_whose_routes_are_all_off_do_not_ask_for_a_certificate() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let opts = ClientOptions::new(pki.root_pem(), "open.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("open.test", "/").await.status, 200);
    let (_, stats) = gw.admin_get("/api/stats").await;
    assert_eq!(stats["handshakes"]["client_cert_requested"], 0, "{stats}");
    assert_eq!(stats["handshakes"]["client_cert_presented"], 0, "{stats}");
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/audit").await.status, 200);
    let (_, stats) = gw.admin_get("/api/stats").await;
    assert_eq!(stats["handshakes"]["client_cert_requested"], 1, "{stats}");
    assert_eq!(stats["handshakes"]["client_cert_presented"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sni_a_certificate_is_requested_and_checked_per_route() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let mut opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    opts.sni = None;
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/enforce").await.status, 200);
    assert_eq!(client.get("api.test", "/partner").await.status, 403);
    let mut opts = ClientOptions::new(pki.root_pem(), "api.test");
    opts.sni = None;
    let mut anonymous = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(anonymous.get("api.test", "/enforce").await.json()["reason"], "no_cert");
}

/// The CA names a handshake asks for (with `sni`, or none), and the ALPN protocol chosen,
/// over TLS `version`.
async fn certificate_request(
    gw: &TestGateway,
    pki: &TestPki,
    sni: Option<&str>,
    version: openssl::ssl::SslVersion,
) -> (Vec<String>, Option<Vec<u8>>) {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(pki.root_pem().as_bytes()).unwrap())
        .unwrap();
    b.set_min_proto_version(Some(version)).unwrap();
    b.set_max_proto_version(Some(version)).unwrap();
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let mut config = b.build().configure().unwrap();
    config.set_use_server_name_indication(sni.is_some());
    config.set_verify_hostname(false);
    let ssl = config.into_ssl(sni.unwrap_or("api.test")).unwrap();
    let stream = common::client::tls_connect(gw.addr, ssl).await.unwrap();
    extern "C" {
        fn SSL_get_client_CA_list(ssl: *const openssl_sys::SSL) -> *mut openssl_sys::stack_st_X509_NAME;
    }
    use foreign_types::ForeignTypeRef;
    // SAFETY: on a client after the handshake this is the list the server sent, owned by
    // the connection, which outlives its use here
    let names = unsafe {
        let list = SSL_get_client_CA_list(stream.ssl().as_ptr());
        if list.is_null() {
            Vec::new()
        } else {
            openssl::stack::StackRef::<openssl::x509::X509Name>::from_ptr(list)
                .iter()
                .map(phasegate::tls::describe_name)
                .collect()
        }
    };
    (names, stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_asks_for_the_cas_its_routes_trust_over_tls_1_3_and_1_2() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let name = |pem: &str| {
        phasegate::tls::describe_name(openssl::x509::X509::from_pem(pem.as_bytes()).unwrap().subject_name())
    };
    let (internal, untrusted) = (name(pki.root_pem()), name(&pki.untrusted.cert_pem));
    for version in [openssl::ssl::SslVersion::TLS1_3, openssl::ssl::SslVersion::TLS1_2] {
        let (mut names, alpn) = certificate_request(&gw, &pki, Some("api.test"), version).await;
        names.sort();
        let mut both = vec![internal.clone(), untrusted.clone()];
        both.sort();
        assert_eq!(names, both, "{version:?}");
        // the host's context also chooses the protocol as the listener does
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{version:?}");
        let (names, _) = certificate_request(&gw, &pki, Some("other.test"), version).await;
        assert_eq!(names, std::slice::from_ref(&internal), "{version:?}");
        let (mut names, _) = certificate_request(&gw, &pki, None, version).await;
        names.sort();
        assert_eq!(names, both, "without SNI, every route's CAs: {version:?}");
        // a host whose routes are all off asks for nothing
        let (names, alpn) = certificate_request(&gw, &pki, Some("open.test"), version).await;
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_on_one_listener_trust_different_cas() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let partner = pki
        .untrusted
        .issue(&LeafSpec::client("spiffe://partner.example/sa/x"))
        .unwrap();
    let partner = common::pki::ClientCert {
        chain_pem: partner.cert_pem,
        key_pem: partner.key_pem,
    };
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(partner));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/partner").await.status, 200);
    let reply = client.get("api.test", "/enforce").await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (403, "untrusted_issuer".into())
    );

    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/enforce").await.status, 200);
    assert_eq!(client.get("api.test", "/partner").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_table_holds_over_http2_too() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for kind in ClientKind::ALL {
        let opts = ClientOptions::new(pki.root_pem(), "api.test")
            .cert(pki.client(kind))
            .h2();
        let mut client = Client::connect(gw.addr, &opts).await.unwrap();
        let enforce = client.get("api.test", "/enforce").await;
        let audit = client.get("api.test", "/audit").await;
        assert_eq!(audit.status, 200, "{kind:?}");
        // the allow list of these routes is empty, so identity kinds pass
        let reason = match kind {
            ClientKind::NotAllowed | ClientKind::WildcardSan => None,
            k => k.reason(),
        };
        match reason {
            None => assert_eq!(enforce.status, 200, "{kind:?}: {}", enforce.body),
            Some(r) => {
                assert_eq!(enforce.status, 403, "{kind:?}");
                assert_eq!(enforce.json()["reason"], r, "{kind:?}");
                assert_eq!(
                    audit.upstream_header("x-mtls-verdict").unwrap(),
                    format!("would-reject; reason={r}")
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_hosts_and_paths_get_404_and_ambiguous_paths_400() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    let reply = client.get("api.test", "/nothing-here").await;
    assert_eq!((reply.status, reply.json()["reason"].clone()), (404, "no_route".into()));
    let reply = client.get("api.test", "/audit/..%2fenforce").await;
    assert_eq!((reply.status, reply.json()["reason"].clone()), (400, "bad_path".into()));
    // the gateway closes a connection after a malformed request
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    // a dot segment that climbs out of /audit is resolved, so /enforce decides — and forwards
    let reply = client.get("api.test", "/audit/../enforce/x?q=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/enforce/x");
    assert_eq!(reply.json()["query"], "q=1");
}
