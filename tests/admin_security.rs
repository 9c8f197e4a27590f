//! The admin surface: every way to change state needs the token, the listener stays on
//! loopback by default, and neither the token nor key material ever reaches the logs.

mod common;

use std::process::Command;

use common::{GatewayProcess, TestGateway, TestPki, ADMIN_TOKEN};

const ROUTES: &str = r#"
routes:
  - name: payments
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
"#;

/// Every path the admin listener serves.
const PATHS: [&str; 15] = [
    "/",
    "/app.js",
    "/style.css",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/stats",
    "/api/config",
    "/api/config/history",
    "/api/config/reload",
    "/api/certificates",
    "/api/routes",
    "/api/routes/payments",
    "/api/routes/payments/rollback",
    "/api/routes/payments/mode",
];
const MORE_PATHS: [&str; 6] = [
    "/api/fleet",
    "/route.js",
    "/config.js",
    "/api/routes/payments/override",
    "/api/routes/payments/rejections",
    "/api/routes/payments/readiness",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_changes_anything_without_the_token() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let before = gw.admin_get("/api/config").await.1;
    for path in PATHS.iter().chain(MORE_PATHS.iter()) {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            for token in [None, Some("wrong"), Some("Bearer")] {
                let (status, body) = gw
                    .admin_call(
                        method,
                        path,
                        token,
                        Some(serde_json::json!({"mode": "off", "to": "off"})),
                    )
                    .await;
                assert!(
                    matches!(status, 401 | 404 | 405),
                    "{method} {path} with {token:?} answered {status}: {body}"
                );
            }
        }
    }
    // nothing moved
    assert_eq!(gw.admin_get("/api/routes/payments").await.1["mode"], "enforce");
    assert_eq!(gw.admin_get("/api/config").await.1["generation"], before["generation"]);
    // and the token does work
    let (status, _) = gw
        .admin_post("/api/routes/payments/rollback", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
}

#[test]
fn the_admin_listener_binds_loopback_unless_told_otherwise() {
    let settings = phasegate::server::Settings::new("policies");
    assert!(settings.admin_addr.ip().is_loopback(), "{}", settings.admin_addr);
    let help = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[default: 127.0.0.1:9901]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_token_nor_private_keys_reach_the_logs() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let mut gw = GatewayProcess::start_with(&pki, ROUTES, backend.addr, &[], &[("RUST_LOG", "debug")], true).await;
    let admin = gw.admin(Some(ADMIN_TOKEN));
    let (status, _) = admin
        .call(
            http::Method::POST,
            "/api/routes/payments/rollback",
            Some(serde_json::json!({"reason": "test"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let wrong = phasegate::cli::admin_client::AdminClient::new(&gw.admin_url(), Some("guess-1234".into())).unwrap();
    wrong
        .call(http::Method::POST, "/api/config/reload", None)
        .await
        .unwrap();
    // a broken key file makes the reload fail and be logged
    pki.write(
        "certs/server.key",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
    );
    admin
        .call(http::Method::POST, "/api/config/reload", None)
        .await
        .unwrap();
    let opts = common::ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(common::ClientKind::Good));
    common::client::get_once(gw.addr, &opts, "api.test", "/").await;
    let logs = gw.stop_with_output();
    assert!(logs.contains("route mode changed at runtime"), "the logs were captured");
    assert!(logs.contains("configuration rejected"), "the failed reload was logged");
    assert!(!logs.contains(ADMIN_TOKEN), "the admin token was logged");
    assert!(!logs.contains("guess-1234"), "a presented token was logged");
    assert!(
        !logs.contains("PRIVATE KEY") && !logs.contains("MIGHAgEAMBMGByqGSM49"),
        "key material was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_only_its_own_names_so_dns_rebinding_reads_nothing() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, "").await;
    let get = |host: &'static str| {
        let admin = gw.admin;
        async move {
            let request = format!("GET /api/routes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            tcp.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    // a page on evil.example whose name now resolves to 127.0.0.1
    let rebound = get("evil.example:9901").await;
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(
        rebound.contains("unknown_admin_host") && !rebound.contains("\"name\""),
        "{rebound}"
    );
    for ok in ["127.0.0.1:9901", "localhost", "[::1]:9901"] {
        let answer = get(ok).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{ok}: {answer}");
    }
}
