//! Hostile TLS: silent or non-TLS clients, renegotiation, oversized chains, and stale CRLs
//! under both policies. Resumption, SNI ≠ Host and HTTP/2 reuse are in connections.rs.

mod common;

use std::time::{Duration, Instant};

use common::pki::ClientCert;
use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
routes:
  - name: enforce
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
"#;

/// Reads until the server closes; returns how long that took (capped at `cap`).
async fn time_until_closed(stream: &mut tokio::net::TcpStream, cap: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(cap.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_no_client_hello_is_dropped_after_the_handshake_timeout() {
    let pki = TestPki::new();
    let gw = TestGateway::start_edited(&pki, ROUTES, |b| {
        b.replace("    tls:\n", "    handshake_timeout: 300ms\n    tls:\n")
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let closed = time_until_closed(&mut silent, Duration::from_secs(20)).await;
    assert!(closed.is_some(), "a silent connection was kept open for 20 s");
    // half a ClientHello, then nothing
    let mut trickle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    assert!(time_until_closed(&mut trickle, Duration::from_secs(20)).await.is_some());
    // and real clients still get through
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    assert_eq!(
        common::client::get_once(gw.addr, &opts, "api.test", "/").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_dropped_without_an_answer() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let mut plain = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "answered plain HTTP: {}", String::from_utf8_lossy(&buf));
}

extern "C" {
    fn SSL_renegotiate(ssl: *mut openssl_sys::SSL) -> std::os::raw::c_int;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renegotiation_is_refused() {
    use foreign_types::ForeignTypeRef;
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    // a blocking TLS 1.2 client, which can ask to renegotiate
    let root = pki.root_pem().to_string();
    let addr = gw.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
        b.cert_store_mut()
            .add_cert(openssl::x509::X509::from_pem(root.as_bytes()).unwrap())
            .unwrap();
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2)).unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = b.build().connect("api.test", tcp).unwrap();
        // SAFETY: a valid, connected SSL handle owned by `tls`.
        let asked = unsafe { SSL_renegotiate(tls.ssl().as_ptr()) };
        assert_eq!(asked, 1);
        let _ = tls.do_handshake();
        use std::io::{Read, Write};
        let sent = tls.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let read = tls.read_to_end(&mut out);
        (
            sent.is_ok() && read.is_ok() && out.starts_with(b"HTTP/1.1 "),
            tls.ssl().session_reused(),
        )
    })
    .await
    .unwrap();
    assert!(!outcome.0, "the gateway renegotiated and answered");
}

fn long_chain(pki: &TestPki, extra_copies: usize) -> ClientCert {
    let good = pki.client(ClientKind::Good).unwrap();
    ClientCert {
        chain_pem: format!("{}{}", good.chain_pem, pki.intermediate.cert_pem.repeat(extra_copies)),
        key_pem: good.key_pem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_chains_are_refused_early() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    // more certificates than the limit: the handshake works, the route says why not
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(long_chain(&pki, 9)));
    let reply = common::client::get_once(gw.addr, &opts, "api.test", "/").await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (403, "chain_too_long".into())
    );
    // a chain larger than the byte limit does not even complete the handshake
    let copies = phasegate::tls::MAX_CLIENT_CHAIN_BYTES / pki.intermediate.cert_pem.len() * 2;
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(long_chain(&pki, copies)));
    let failed = match Client::connect(gw.addr, &opts).await {
        Err(_) => true,
        Ok(mut c) => c.request("api.test", "/", &[]).await.is_err(),
    };
    assert!(failed, "a {copies}-certificate chain was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_crl_fails_closed_by_default_and_open_when_the_route_says_so() {
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    pki.write(
        "pki/stale-intermediate.crl",
        &pki.intermediate
            .crl_between(&[], now - time::Duration::days(9), now - time::Duration::days(2))
            .unwrap(),
    );
    let revoked_too = {
        // a client the stale CRL lists: revoked whatever the staleness policy
        let c = pki
            .intermediate
            .issue(&phasegate::devpki::LeafSpec::client(common::pki::GOOD_URI))
            .unwrap();
        let crl = pki
            .intermediate
            .crl_between(&[&c], now - time::Duration::days(9), now - time::Duration::days(2))
            .unwrap();
        pki.write("pki/stale-intermediate.crl", &crl);
        ClientCert {
            chain_pem: format!("{}{}", c.cert_pem, pki.intermediate.cert_pem),
            key_pem: c.key_pem,
        }
    };
    let routes = r#"
routes:
  - name: closed
    match: { host: api.test, path_prefix: /closed }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: stale }
  - name: open
    match: { host: api.test, path_prefix: /open }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: stale, crl_stale: fail-open }
"#;
    let gw = TestGateway::start_edited(&pki, routes, |b| {
        format!("{b}  stale:\n    ca: ../pki/root.pem\n    crl: [../pki/root.crl, ../pki/stale-intermediate.crl]\n")
    })
    .await;
    let good = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let mut client = Client::connect(gw.addr, &good).await.unwrap();
    let closed = client.get("api.test", "/closed").await;
    assert_eq!(
        (closed.status, closed.json()["reason"].clone()),
        (403, "crl_invalid".into())
    );
    assert_eq!(client.get("api.test", "/open").await.status, 200);
    let revoked = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(revoked_too));
    let mut client = Client::connect(gw.addr, &revoked).await.unwrap();
    let open = client.get("api.test", "/open").await;
    assert_eq!((open.status, open.json()["reason"].clone()), (403, "revoked".into()));
    let (_, route) = gw.admin_get("/api/routes/open").await;
    assert_eq!(route["crl_stale"], "fail-open", "{route}");
    let (_, certs) = gw.admin_get("/api/certificates").await;
    let stale_crl = certs["crls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bundle"] == "stale" && c["stale"] == true);
    assert!(stale_crl.is_some(), "{certs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_update_revokes_a_client_on_its_open_connection_and_its_next_one() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let issued = pki
        .intermediate
        .issue(&phasegate::devpki::LeafSpec::client(common::pki::GOOD_URI))
        .unwrap();
    let cert = ClientCert {
        chain_pem: format!("{}{}", issued.cert_pem, pki.intermediate.cert_pem),
        key_pem: issued.key_pem.clone(),
    };
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(cert));
    let mut open = Client::connect(gw.addr, &opts).await.unwrap();
    assert_eq!(open.get("api.test", "/").await.status, 200);
    // a second connection with the same chain is served from the verified-chain memory
    assert_eq!(
        common::client::get_once(gw.addr, &opts, "api.test", "/").await.status,
        200
    );
    let later = OffsetDateTime::now_utc() + time::Duration::days(7);
    pki.write(
        "pki/intermediate.crl",
        &pki.intermediate.crl(&[&issued], later).unwrap(),
    );
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert!(
        matches!(outcome["result"].as_str(), Some("applied") | Some("unchanged")),
        "{outcome}"
    );
    gw.wait_for_generation(2).await;
    let reply = open.get("api.test", "/").await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (403, "revoked".into()),
        "the open connection"
    );
    let reply = common::client::get_once(gw.addr, &opts, "api.test", "/").await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (403, "revoked".into()),
        "a new connection"
    );
}

/// `count` self-signed CA certificates with long names (one key for speed), as one PEM file.
fn many_anchors(count: usize) -> String {
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut pem = String::new();
    for i in 0..count {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("O", "Legacy Partner Federation of Example Organisations")
            .unwrap();
        name.append_entry_by_text("CN", &format!("Partner Issuing CA number {i:05}"))
            .unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let serial = openssl::bn::BigNum::from_u32(i as u32 + 1).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(365).unwrap())
            .unwrap();
        let bc = openssl::x509::extension::BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .unwrap();
        b.append_extension(bc).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        pem.push_str(std::str::from_utf8(&b.build().to_pem().unwrap()).unwrap());
    }
    pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_bundle_too_large_for_a_certificate_request_sends_no_ca_names_and_handshakes_work() {
    let pki = TestPki::new();
    pki.write(
        "pki/federation.pem",
        &format!("{}{}", pki.root_pem(), many_anchors(1800)),
    );
    let routes = r#"
routes:
  - name: open
    match: { host: api.test, path_prefix: / }
    upstream: { address: "{backend}" }
  - name: federated
    match: { host: api.test, path_prefix: /partners }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: federation }
"#;
    let gw = TestGateway::start_edited(&pki, routes, |base| {
        base.replace(
            "trust_bundles:\n",
            "trust_bundles:\n  federation:\n    ca: ../pki/federation.pem\n",
        )
    })
    .await;
    // the off route and the audited one both answer, with and without a certificate
    for kind in [ClientKind::NoCert, ClientKind::Good] {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(kind));
        let reply = common::client::get_once(gw.addr, &opts, "api.test", "/").await;
        assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
        let reply = common::client::get_once(gw.addr, &opts, "api.test", "/partners/x").await;
        assert_eq!(reply.status, 200, "{kind:?}");
        let want = if kind == ClientKind::Good {
            "pass"
        } else {
            "would-reject; reason=no_cert"
        };
        assert_eq!(reply.upstream_header("x-mtls-verdict").as_deref(), Some(want));
    }
    // check and the API say why no CA names are sent
    let (_, config) = gw.admin_get("/api/config").await;
    let warnings = config["warnings"].to_string();
    assert!(warnings.contains("sends no CA names for api.test"), "{warnings}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .arg("check")
        .arg(pki.policies())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning:") && text.contains("trust_bundles.federation: the CA names that host api.test"),
        "{text}"
    );
}
