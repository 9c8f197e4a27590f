//! The mode table, end to end: every mode × every kind of client, over real handshakes.

mod common;

use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};

const ROUTES: &str = r#"
routes:
  - name: off-route
    match: { host: api.test, path_prefix: /off }
    upstream: { address: "{backend}" }
    mtls: { mode: off, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
  - name: audit-route
    match: { host: api.test, path_prefix: /audit }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
  - name: soft-route
    match: { host: api.test, path_prefix: /soft }
    upstream: { address: "{backend}" }
    mtls: { mode: soft-fail, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
  - name: enforce-route
    match: { host: api.test, path_prefix: /enforce }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
"#;

/// (status, x-mtls-verdict seen by the backend or the 403 reason) for a mode and client.
fn expected(mode: &str, kind: ClientKind) -> (u16, String) {
    let reason = kind.reason();
    match (mode, reason) {
        ("off", _) => (200, "unauthenticated".into()),
        (_, None) => (200, "pass".into()),
        ("audit", Some(r)) => (200, format!("would-reject; reason={r}")),
        ("soft", Some("no_cert")) => (200, "unauthenticated".into()),
        (_, Some(r)) => (403, r.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_treats_every_kind_of_client_as_the_table_says() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for kind in ClientKind::ALL {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(kind));
        let mut client = Client::connect(gw.addr, &opts).await.unwrap();
        for mode in ["off", "audit", "soft", "enforce"] {
            let reply = client.get("api.test", &format!("/{mode}/x")).await;
            let (status, verdict) = expected(mode, kind);
            assert_eq!(reply.status, status, "{mode} × {kind:?}: {}", reply.body);
            if status == 200 {
                assert_eq!(
                    reply.upstream_header("x-mtls-verdict").as_deref(),
                    Some(verdict.as_str()),
                    "{mode} × {kind:?}"
                );
                let xfcc = reply.upstream_header("x-forwarded-client-cert");
                let identity_genuine = mode != "off"
                    && matches!(
                        kind,
                        ClientKind::Good | ClientKind::NotAllowed | ClientKind::WildcardSan
                    );
                assert_eq!(xfcc.is_some(), identity_genuine, "{mode} × {kind:?}: xfcc {xfcc:?}");
            } else {
                let body = reply.json();
                assert_eq!(body["reason"], verdict, "{mode} × {kind:?}");
                assert_eq!(
                    body["route"],
                    format!("{}-route", if mode == "soft" { "soft" } else { mode })
                );
                assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
                assert_eq!(
                    body.as_object().unwrap().len(),
                    4,
                    "403 body carries no internals: {body}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_every_would_be_rejected_client_with_its_reason() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    for kind in ClientKind::ALL {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(kind));
        let mut client = Client::connect(gw.addr, &opts).await.unwrap();
        for _ in 0..2 {
            assert_eq!(client.get("api.test", "/audit").await.status, 200);
        }
    }
    let mut want: Vec<(String, u64)> = ClientKind::ALL
        .iter()
        .filter_map(|k| k.reason())
        .map(|r| (r.to_string(), 2))
        .collect();
    // the missing-intermediate and untrusted-CA clients share a reason but are different clients
    want.sort();
    let reasons_of = |body: &serde_json::Value| -> Vec<(String, u64)> {
        let mut reasons: Vec<(String, u64)> = body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["reason"].as_str().unwrap().to_string(), c["count"].as_u64().unwrap()))
            .collect();
        reasons.sort();
        reasons
    };
    // recording is off the request path: a client can be listed before its second request lands
    let (status, body) = gw
        .admin_get_until("/api/routes/audit-route/rejections", |body| reasons_of(body) == want)
        .await;
    assert_eq!(status, 200);
    assert_eq!(reasons_of(&body), want);
}
