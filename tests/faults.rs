//! Faults: the policy directory vanishes, the state directory cannot be written, SIGTERM
//! arrives mid-request. Serving goes on (or drains), and every problem is shown.

mod common;

use std::time::Duration;

use common::{ClientKind, ClientOptions, GatewayProcess, TestGateway, TestPki};

const ROUTES: &str = r#"
routes:
  - name: payments
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
"#;

async fn wait_for_error(gw: &TestGateway) -> serde_json::Value {
    for _ in 0..200 {
        let (_, status) = gw.admin_get("/api/config").await;
        if !status["last_error"].is_null() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no reload error shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policy_directory_keeps_the_last_good_config_serving_and_shows_the_error() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let good = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    let saved = std::fs::read_to_string(pki.path("policies/gateway.yaml")).unwrap();
    std::fs::remove_dir_all(pki.policies()).unwrap();
    let status = wait_for_error(&gw).await;
    let problem = &status["last_error"]["problems"][0];
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot read policy directory"),
        "{problem}"
    );
    assert_eq!(status["generation"], 1);
    assert_eq!(
        common::client::get_once(gw.addr, &good, "api.test", "/").await.status,
        200
    );
    // the directory comes back (a redeploy): the watcher re-arms and reloads on its own
    std::fs::create_dir_all(pki.policies()).unwrap();
    std::fs::write(
        pki.path("policies/gateway.yaml"),
        saved.replace("mode: enforce", "mode: audit"),
    )
    .unwrap();
    let status = gw.wait_for_generation(2).await;
    assert!(status["last_error"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_policy_file_is_an_error_not_a_smaller_config() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    // a directory where a file should be: reading fails however privileged we are
    std::fs::create_dir(pki.path("policies/extra.yaml")).unwrap();
    pki.write(
        "policies/gateway.yaml",
        &std::fs::read_to_string(pki.path("policies/gateway.yaml"))
            .unwrap()
            .replace("mode: enforce", "mode: audit"),
    );
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    // a directory named *.yaml is skipped (not a file); the change applies
    assert_eq!(outcome["result"], "applied", "{outcome}");
    // a file that exists but cannot be read as text is an error
    std::fs::write(pki.path("policies/binary.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let (status, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(
        (status, outcome["result"].as_str()),
        (422, Some("rejected")),
        "{outcome}"
    );
    assert!(outcome["problems"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("binary.yaml"));
    assert_eq!(
        gw.admin_get("/api/routes/payments").await.1["mode"],
        "audit",
        "the last good config serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_directory_keeps_serving_and_shows_and_counts_the_error() {
    let pki = TestPki::new();
    // a file where the state directory should be: nothing can be written under it
    pki.write("state", "not a directory");
    let gw = TestGateway::start(&pki, ROUTES).await;
    let (_, config) = gw.admin_get("/api/config").await;
    assert!(config["audit_store"]["last_error"].is_string(), "{config}");
    assert!(config["audit_store"]["errors"].as_u64().unwrap() >= 1);
    // a rollback still takes effect, and says it was not saved
    let (status, outcome) = gw
        .admin_post(
            "/api/routes/payments/rollback",
            serde_json::json!({"reason": "disk full"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(outcome["mode"], "audit");
    assert_eq!(outcome["persisted"], false);
    assert!(
        outcome["persist_error"]
            .as_str()
            .unwrap()
            .contains("cannot write state file"),
        "{outcome}"
    );
    let anonymous = ClientOptions::new(pki.root_pem(), "api.test");
    assert_eq!(
        common::client::get_once(gw.addr, &anonymous, "api.test", "/")
            .await
            .status,
        200
    );
    let (_, config) = gw.admin_get("/api/config").await;
    assert!(
        config["state_error"]
            .as_str()
            .unwrap()
            .contains("cannot write state file"),
        "{config}"
    );
    // and audit records keep being kept in memory
    let listed = |r: &serde_json::Value| r["clients"].as_array().is_some_and(|c| !c.is_empty());
    let (_, rejections) = gw.admin_get_until("/api/routes/payments/rejections", listed).await;
    assert!(listed(&rejections), "{rejections}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_complete_then_exits_without_waiting_out_the_grace_period() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let routes = ROUTES.replace("enforce", "audit");
    let mut gw = GatewayProcess::start(&pki, &routes, backend.addr, &["--grace-period", "8"]).await;
    let anonymous = ClientOptions::new(pki.root_pem(), "api.test");
    let mut idle = common::Client::connect(gw.addr, &anonymous).await.unwrap();
    assert_eq!(idle.get("api.test", "/").await.status, 200);
    let in_flight = common::client::spawn_get_once(gw.addr, &anonymous, "api.test", "/?delay_ms=1500");
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal("TERM");
    let signalled = std::time::Instant::now();
    // an idle kept-alive connection is closed at once, while the request in flight goes on
    while !idle.is_closed() {
        assert!(
            signalled.elapsed() < Duration::from_millis(700),
            "the idle connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "closed only after the request in flight ended"
    );
    let reply = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the request finished")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let exited = tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    let took = signalled.elapsed();
    assert_eq!(exited.status.code(), Some(0), "{:?}", exited.status);
    // the request had ~1.1 s left; the grace period is 8 s
    assert!(took < Duration::from_secs(4), "exited {took:?} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_exits_at_once_and_keeps_what_was_recorded() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let routes = ROUTES.replace("enforce", "audit");
    let mut gw = GatewayProcess::start(&pki, &routes, backend.addr, &["--grace-period", "10"]).await;
    // an idle kept-alive connection is not a request in flight
    let mut idle = common::Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    assert_eq!(idle.get("api.test", "/").await.status, 200);
    gw.signal("TERM");
    let signalled = std::time::Instant::now();
    let exited = tokio::task::spawn_blocking(move || (gw.wait(), gw)).await.unwrap();
    let took = signalled.elapsed();
    let (exited, mut gw) = exited;
    assert_eq!(exited.status.code(), Some(0), "{:?}", exited.status);
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM (grace period 10 s)"
    );
    drop(idle);

    // the request just before the signal was written to the audit store on the way out
    gw.kill_and_restart().await;
    let (status, v) = gw
        .admin(None)
        .call(http::Method::GET, "/api/routes/payments/rejections", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{v}");
    assert_eq!(
        (clients[0]["reason"].as_str(), clients[0]["count"].as_u64()),
        (Some("no_cert"), Some(1))
    );
}

/// Makes the files of a directory immutable until dropped.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        set_immutable(&self.0, false);
    }
}

/// `chattr +i` / `-i` on every file of the state directory (root on ext4 and most Linux
/// file systems); false where the attribute cannot be set.
fn set_immutable(dir: &std::path::Path, on: bool) -> bool {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.iter().all(|f| {
        std::process::Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(f)
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_state_files_do_not_take_the_gateway_down() {
    let pki = TestPki::new();
    let backend = common::echo_backend().await;
    let audited = format!(
        "{}  - name: spare\n    match: {{ host: other.test }}\n    upstream: {{ address: \"{{backend}}\" }}\n    mtls: {{ mode: audit, trust: internal }}\n",
        ROUTES.replace("mode: enforce", "mode: audit")
    );
    let mut gw = GatewayProcess::start(&pki, &audited, backend.addr, &[]).await;
    let admin = gw.admin(Some(common::ADMIN_TOKEN));
    let (status, _) = admin
        .call(
            http::Method::POST,
            "/api/routes/spare/rollback",
            Some(serde_json::json!({"to": "off"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "an override on disk before the files turn immutable");
    let anonymous = ClientOptions::new(pki.root_pem(), "api.test");
    let certified = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(ClientKind::Good));
    // some history on disk first, so the database and its WAL files exist
    for _ in 0..5 {
        common::client::get_once(gw.addr, &anonymous, "api.test", "/").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = pki.path("state");
    let guard = Immutable(state.clone());
    if !set_immutable(&state, true) {
        eprintln!("skipped: chattr +i is not available here (needs root on a file system with the attribute)");
        return;
    }
    // traffic that must be recorded, flushes that fail, a rollback that cannot be saved
    let mut served = 0;
    for round in 0..30 {
        let opts = if round % 2 == 0 { &anonymous } else { &certified };
        let Ok(mut client) = common::Client::connect(gw.addr, opts).await else {
            break;
        };
        let Ok(reply) = client.request("api.test", &format!("/r{round}"), &[]).await else {
            break;
        };
        served += usize::from(reply.status == 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clear = admin
        .call(http::Method::DELETE, "/api/routes/spare/override", None)
        .await;
    let alive = gw.exited();
    drop(guard);
    assert_eq!(alive, None, "the gateway died");
    assert_eq!(served, 30);
    let (status, outcome) = clear.unwrap();
    assert_eq!(
        (status, outcome["persisted"].as_bool()),
        (200, Some(false)),
        "{outcome}"
    );
    assert_eq!(outcome["mode"], "audit", "in force although not saved: {outcome}");
    let (_, config) = gw
        .admin(None)
        .call(http::Method::GET, "/api/config", None)
        .await
        .unwrap();
    assert!(config["audit_store"]["errors"].as_u64().unwrap() >= 1, "{config}");
}
