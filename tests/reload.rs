//! Hot reload and instant per-route rollback: no restart, no other route touched, no
//! request dropped, and a bad change never takes effect.

mod common;

use std::time::Duration;

use common::{Client, ClientOptions, TestGateway, TestPki, ADMIN_TOKEN};

fn routes(payments_mode: &str) -> String {
    format!(
        r#"
routes:
  - name: payments
    match: {{ host: api.test, path_prefix: /payments }}
    upstream: {{ address: "{{backend}}" }}
    mtls: {{ mode: {payments_mode}, trust: internal }}
  - name: orders
    match: {{ host: api.test, path_prefix: /orders }}
    upstream: {{ address: "{{backend}}" }}
    mtls: {{ mode: enforce, trust: internal }}
"#
    )
}

/// Rewrites the policy file the way editors do: write a temporary file, rename it over.
fn save_policy(pki: &TestPki, gw: &TestGateway, routes: &str) {
    let yaml = format!(
        "{}{}",
        pki.base_yaml(gw.addr.port()),
        routes.replace("{backend}", &gw.backend.to_string())
    );
    let tmp = pki.write("policies/.gateway.yaml.swp", &yaml);
    std::fs::rename(tmp, pki.path("policies/gateway.yaml")).unwrap();
}

async fn anonymous(gw: &TestGateway, pki: &TestPki) -> Client {
    Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_a_mode_in_yaml_takes_effect_without_a_restart() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("audit")).await;
    let mut client = anonymous(&gw, &pki).await;
    assert_eq!(client.get("api.test", "/payments").await.status, 200);
    save_policy(&pki, &gw, &routes("enforce"));
    let status = gw.wait_for_generation(2).await;
    assert_eq!(status["last_error"], serde_json::Value::Null);
    // the same keep-alive connection is decided by the new mode
    let reply = client.get("api.test", "/payments").await;
    assert_eq!((reply.status, reply.json()["reason"].clone()), (403, "no_cert".into()));
    let (_, history) = gw.admin_get("/api/config/history").await;
    let newest = &history["generations"][0];
    assert_eq!(newest["generation"], 2);
    assert_eq!(newest["source"], "file_change");
    assert_eq!(
        newest["changes"][0],
        serde_json::json!({"change": "mode_changed", "route": "payments", "from": "audit", "to": "enforce"})
    );
    assert_eq!(
        newest["changes"].as_array().unwrap().len(),
        1,
        "orders untouched: {newest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_change_never_takes_effect_and_its_error_is_shown() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("audit")).await;
    // a valid first route and a broken second one: nothing of it may apply
    let broken = routes("enforce").replace(
        "  - name: orders\n    match: { host: api.test, path_prefix: /orders }",
        "  - name: orders\n    match: { host: api.test, path_prefix: /orders }\n    colour: blue",
    );
    save_policy(&pki, &gw, &broken);
    let (_, status) = gw.admin_get_until("/api/config", |s| !s["last_error"].is_null()).await;
    let problem = &status["last_error"]["problems"][0];
    assert!(
        problem["file"].as_str().unwrap().ends_with("policies/gateway.yaml"),
        "{status}"
    );
    assert_eq!(problem["path"], "routes[1].colour");
    let text = std::fs::read_to_string(pki.path("policies/gateway.yaml")).unwrap();
    let colour_line = text.lines().position(|l| l.contains("colour: blue")).unwrap() + 1;
    assert_eq!(problem["line"], colour_line, "{problem}");
    assert!(problem["message"].as_str().unwrap().contains("unknown field `colour`"));
    assert_eq!(status["generation"], 1);
    assert_eq!(status["reloads_failed"].as_u64().unwrap(), 1);
    // payments still audits: the valid half of the broken file did not apply
    assert_eq!(
        anonymous(&gw, &pki).await.get("api.test", "/payments").await.status,
        200
    );
    // fixing the file applies it and clears the error
    save_policy(&pki, &gw, &routes("enforce"));
    let status = gw.wait_for_generation(2).await;
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(
        anonymous(&gw, &pki).await.get("api.test", "/payments").await.status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_takes_effect_on_the_next_request_over_keep_alive_and_http2() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    let mut h1 = anonymous(&gw, &pki).await;
    let mut h2 = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test").h2())
        .await
        .unwrap();
    assert_eq!(h1.get("api.test", "/payments").await.status, 403);
    assert_eq!(h2.get("api.test", "/payments").await.status, 403);

    let (status, outcome) = gw
        .admin_post(
            "/api/routes/payments/rollback",
            serde_json::json!({"reason": "checkout is failing"}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["previous_mode"], "enforce");
    assert_eq!(outcome["mode"], "audit");
    assert_eq!(outcome["persisted"], true);
    let reply = h1.get("api.test", "/payments").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.upstream_header("x-mtls-verdict").unwrap(),
        "would-reject; reason=no_cert"
    );
    assert_eq!(h2.get("api.test", "/payments").await.status, 200);
    // no other route touched
    assert_eq!(h1.get("api.test", "/orders").await.status, 403);
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["yaml_mode"], "enforce");
    assert_eq!(route["mode"], "audit");
    let summary = route["override"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("YAML says enforce; running audit since "),
        "{summary}"
    );
    assert!(summary.ends_with("rolled back: checkout is failing"), "{summary}");
    // rolling back again never tightens
    let (_, again) = gw
        .admin_post("/api/routes/payments/rollback", serde_json::json!({}))
        .await;
    assert_eq!(again["mode"], "audit");
    // set a mode directly, then clear the override
    let (status, set) = gw
        .admin_post("/api/routes/payments/mode", serde_json::json!({"mode": "soft-fail"}))
        .await;
    assert_eq!((status, set["mode"].as_str()), (200, Some("soft-fail")));
    assert_eq!(
        h1.get("api.test", "/payments")
            .await
            .upstream_header("x-mtls-verdict")
            .unwrap(),
        "unauthenticated"
    );
    let (status, cleared) = gw
        .admin_call("DELETE", "/api/routes/payments/override", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!((status, cleared["mode"].as_str()), (200, Some("enforce")));
    assert_eq!(h2.get("api.test", "/payments").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_without_history_goes_to_audit_and_to_a_given_mode_on_request() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("audit")).await;
    save_policy(&pki, &gw, &routes("soft-fail"));
    gw.wait_for_generation(2).await;
    save_policy(&pki, &gw, &routes("enforce"));
    gw.wait_for_generation(3).await;
    let (_, first) = gw
        .admin_post("/api/routes/payments/rollback", serde_json::json!({}))
        .await;
    assert_eq!(
        first["mode"], "soft-fail",
        "the mode before the last tightening: {first}"
    );
    let (_, orders) = gw
        .admin_post("/api/routes/orders/rollback", serde_json::json!({}))
        .await;
    assert_eq!(orders["mode"], "audit", "no history: audit");
    let (_, off) = gw
        .admin_post("/api/routes/orders/rollback", serde_json::json!({"to": "off"}))
        .await;
    assert_eq!(off["mode"], "off");
    // a rollback only loosens: one that would tighten is refused and changes nothing
    let (status, refused) = gw
        .admin_post("/api/routes/payments/rollback", serde_json::json!({"to": "enforce"}))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("would tighten"),
        "{refused}"
    );
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["mode"], "soft-fail", "{route}");
    // tightening stays possible as a mode change
    let (status, _) = gw
        .admin_post("/api/routes/payments/mode", serde_json::json!({"mode": "enforce"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_without_the_token_get_401() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    let mutations: [(&str, &str); 4] = [
        ("POST", "/api/routes/payments/rollback"),
        ("POST", "/api/routes/payments/mode"),
        ("DELETE", "/api/routes/payments/override"),
        ("POST", "/api/config/reload"),
    ];
    for (method, path) in mutations {
        for token in [None, Some("wrong"), Some("")] {
            let (status, body) = gw
                .admin_call(method, path, token, Some(serde_json::json!({"mode": "off"})))
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["reason"], "unauthorized");
        }
    }
    assert_eq!(
        anonymous(&gw, &pki).await.get("api.test", "/payments").await.status,
        403,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_calls_get_clear_errors() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    let (status, body) = gw.admin_post("/api/routes/nope/rollback", serde_json::json!({})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no route named \"nope\"")));
    let (status, body) = gw
        .admin_post("/api/routes/payments/mode", serde_json::json!({"mode": "strict"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("unknown variant `strict`"),
        "{body}"
    );
    let (status, body) = gw.admin_post("/api/routes/payments/mode", serde_json::json!({})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("missing mode"), "{body}");
    let (status, body) = gw
        .admin_post("/api/routes/payments/rollback", serde_json::json!({"too": "audit"}))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_survive_a_restart_and_reapplying_the_yaml_does_not_undo_them() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    gw.admin_post(
        "/api/routes/payments/rollback",
        serde_json::json!({"reason": "incident 42"}),
    )
    .await;
    // re-applying the same YAML (a touch, or a CI job rewriting the file) keeps the override
    save_policy(&pki, &gw, &routes("enforce"));
    gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(gw.admin_get("/api/routes/payments").await.1["mode"], "audit");
    let state_dir = gw.settings.state_dir.clone();
    gw.stop();

    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    assert_eq!(gw.settings.state_dir, state_dir);
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["mode"], "audit", "{route}");
    assert_eq!(route["override"]["reason"], "incident 42");
    assert_eq!(
        anonymous(&gw, &pki).await.get("api.test", "/payments").await.status,
        200
    );
    // the YAML moving under an override is flagged
    save_policy(&pki, &gw, &routes("soft-fail"));
    gw.wait_for_generation(2).await;
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["override"]["conflict"], true, "{route}");
    assert!(route["override"]["summary"]
        .as_str()
        .unwrap()
        .contains("the YAML changed from enforce to soft-fail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_configmap_swaps_and_deleted_files_each_end_in_the_expected_generation() {
    let pki = TestPki::new();
    // A ConfigMap-style directory: files are symlinks into ..data, which is swapped whole.
    let gw = TestGateway::start(&pki, &routes("audit")).await;
    let base = pki.base_yaml(gw.addr.port());
    let routes_yaml = |mode: &str| routes(mode).replace("{backend}", &gw.backend.to_string());

    // 1. editor-style rename of a single file
    save_policy(&pki, &gw, &routes("soft-fail"));
    gw.wait_for_generation(2).await;
    assert_eq!(gw.admin_get("/api/routes/payments").await.1["mode"], "soft-fail");

    // 2. split into two files at once (several files changing together: one debounced reload)
    pki.write("policies/.routes.tmp", &routes_yaml("enforce"));
    pki.write("policies/.base.tmp", &base);
    std::fs::rename(pki.path("policies/.routes.tmp"), pki.path("policies/routes.yaml")).unwrap();
    std::fs::rename(pki.path("policies/.base.tmp"), pki.path("policies/gateway.yaml")).unwrap();
    let status = gw.wait_for_generation(3).await;
    assert_eq!(status["files"].as_array().unwrap().len(), 2, "{status}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gw.generation().await, 3, "one reload for one change");
    assert_eq!(gw.admin_get("/api/routes/payments").await.1["mode"], "enforce");

    // 3. deleting the routes file: the remaining config is valid (no routes), so it applies
    std::fs::remove_file(pki.path("policies/routes.yaml")).unwrap();
    gw.wait_for_generation(4).await;
    assert_eq!(gw.admin_get("/api/routes").await.1.as_array().unwrap().len(), 0);
    // ...and restoring it brings the routes back
    pki.write("policies/routes.yaml", &routes_yaml("enforce"));
    gw.wait_for_generation(5).await;
    assert_eq!(gw.admin_get("/api/routes").await.1.as_array().unwrap().len(), 2);

    // 4. deleting the file with the listener makes the config invalid: generation stays
    std::fs::remove_file(pki.path("policies/gateway.yaml")).unwrap();
    let (_, status) = gw.admin_get_until("/api/config", |s| !s["last_error"].is_null()).await;
    assert_eq!(status["generation"], 5, "{status}");
    assert_eq!(
        anonymous(&gw, &pki).await.get("api.test", "/payments").await.status,
        403,
        "last good config serves"
    );
    std::fs::write(pki.path("policies/gateway.yaml"), &base).unwrap();
    let (_, status) = gw.admin_get_until("/api/config", |s| s["last_error"].is_null()).await;
    assert!(status["last_error"].is_null(), "the restored file is read: {status}");
    assert_eq!(
        status["generation"], 5,
        "restoring the same content is no new generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("audit")).await;
    let dir = pki.policies();
    let full = |mode: &str| {
        format!(
            "{}{}",
            pki.base_yaml(gw.addr.port()),
            routes(mode).replace("{backend}", &gw.backend.to_string())
        )
    };
    // turn the directory into the kubelet's layout: gateway.yaml -> ..data/gateway.yaml
    let v1 = dir.join("..2026_11_28_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("gateway.yaml"), full("audit")).unwrap();
    std::os::unix::fs::symlink("..2026_11_28_v1", dir.join("..data")).unwrap();
    std::fs::remove_file(dir.join("gateway.yaml")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let generation = gw.generation().await;
    // the kubelet's update: a new timestamped directory, then an atomic swap of ..data
    let v2 = dir.join("..2026_11_28_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("gateway.yaml"), full("enforce")).unwrap();
    std::os::unix::fs::symlink("..2026_11_28_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    gw.wait_for_generation(generation + 1).await;
    assert_eq!(gw.admin_get("/api/routes/payments").await.1["mode"], "enforce");
}

/// `count` more routes in front of the test backend, as a second policy file.
fn many_routes(count: usize) -> String {
    let mut yaml = String::from("routes:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "  - {{ name: bulk-{i}, match: {{ host: bulk.test, path_prefix: /r{i} }}, upstream: {{ address: \"127.0.0.1:9\" }}, mtls: {{ mode: audit, trust: internal }} }}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_never_waits_behind_a_reload_that_is_still_compiling() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    // a large, valid configuration: compiling it takes far longer than a rollback
    pki.write("policies/zz-bulk.yaml", &many_routes(5_000));
    let control = gw.running.as_ref().unwrap().control.clone();
    let reload = tokio::spawn(async move { control.reload(phasegate::control::ReloadSource::Api).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = gw
        .admin_post(
            "/api/routes/payments/rollback",
            serde_json::json!({"reason": "during a reload"}),
        )
        .await;
    assert_eq!((status, body["mode"].as_str()), (200, Some("audit")), "{body}");
    assert!(
        !reload.is_finished(),
        "the rollback was answered while the reload still compiled"
    );
    let outcome = reload.await.unwrap().unwrap();
    assert!(
        matches!(outcome, phasegate::control::ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    // the rollback made during the compile survives the reload it did not wait for
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["mode"], "audit", "{route}");
    assert_eq!(gw.admin_get("/api/routes/bulk-4999").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_nested_too_deep_is_refused_quickly_with_its_line() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    let deep = format!("routes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    pki.write("policies/deep.yaml", &deep);
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(outcome["result"], "rejected", "{outcome}");
    let problem = &outcome["problems"][0];
    assert!(problem["file"].as_str().unwrap().ends_with("deep.yaml"), "{problem}");
    assert!(
        problem["message"].as_str().unwrap().contains("nesting deeper than 64"),
        "{problem}"
    );
    assert_eq!(problem["line"], 1);
    // the last good configuration keeps serving
    let mut client = anonymous(&gw, &pki).await;
    assert_eq!(client.get("api.test", "/payments").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangling_policy_symlink_is_an_error_not_a_silently_missing_file() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, &routes("enforce")).await;
    // the routes move to their own file; then that file becomes a link to nowhere
    let base = pki.base_yaml(gw.addr.port());
    let routes_yaml = routes("enforce").replace("{backend}", &gw.backend.to_string());
    pki.write("policies/gateway.yaml", &base);
    pki.write("policies/routes-real.yml.bak", &routes_yaml);
    std::os::unix::fs::symlink(
        pki.path("policies/missing-target.yaml"),
        pki.path("policies/routes.yaml"),
    )
    .unwrap();
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(outcome["result"], "rejected", "{outcome}");
    let message = outcome["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("symbolic link that leads nowhere"), "{outcome}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .arg("check")
        .arg(pki.policies())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        out.contains("routes.yaml: is a symbolic link that leads nowhere"),
        "{out}"
    );
    let mut client = anonymous(&gw, &pki).await;
    assert_eq!(
        client.get("api.test", "/payments").await.status,
        403,
        "the old routes still serve"
    );
    // a link that loops is the same error
    std::fs::remove_file(pki.path("policies/routes.yaml")).unwrap();
    std::os::unix::fs::symlink(pki.path("policies/routes.yaml"), pki.path("policies/routes.yaml")).unwrap();
    let (_, outcome) = gw.admin_post("/api/config/reload", serde_json::json!({})).await;
    assert_eq!(outcome["result"], "rejected", "{outcome}");
}
