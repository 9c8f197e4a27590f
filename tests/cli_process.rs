//! `phasegate run` as a process: SIGHUP reloads, and `phasegate rollback` rolls one route
//! back and clears it.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{echo_backend, Client, ClientOptions, GatewayProcess, TestPki, ADMIN_TOKEN};

fn routes(mode: &str) -> String {
    format!("routes:\n  - name: payments\n    match: {{ host: api.test }}\n    upstream: {{ address: \"{{backend}}\" }}\n    mtls: {{ mode: {mode}, trust: internal }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_files() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let gw = GatewayProcess::start(&pki, &routes("audit"), backend.addr, &["--no-watch"]).await;
    let yaml = std::fs::read_to_string(pki.path("policies/gateway.yaml")).unwrap();
    pki.write("policies/gateway.yaml", &yaml.replace("mode: audit", "mode: enforce"));
    let admin = gw.admin(None);
    let generation =
        || async { admin.call(http::Method::GET, "/api/config", None).await.unwrap().1["generation"].clone() };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(generation().await, 1, "--no-watch: no reload without a signal");
    gw.signal("HUP");
    for _ in 0..200 {
        if generation().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let history = admin
        .call(http::Method::GET, "/api/config/history", None)
        .await
        .unwrap()
        .1;
    assert_eq!(history["generations"][0]["source"], "sighup", "{history}");
    let reply = common::client::get_once(
        gw.addr,
        &ClientOptions::new(pki.root_pem(), "api.test"),
        "api.test",
        "/",
    )
    .await;
    assert_eq!(reply.status, 403);
}

fn rollback_cli(admin: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phasegate"));
    cmd.arg("rollback")
        .args(args)
        .args(["--admin", admin])
        .env_remove("PHASEGATE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("PHASEGATE_ADMIN_TOKEN", t);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_command_rolls_one_route_back_and_clears_it() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let gw = GatewayProcess::start(&pki, &routes("enforce"), backend.addr, &[]).await;
    let admin = gw.admin_url();
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    assert_eq!(client.get("api.test", "/").await.status, 403);

    let denied = rollback_cli(&admin, &["payments"], None);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("missing bearer token"));

    let out = rollback_cli(&admin, &["payments", "--reason", "503s on checkout"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("payments: enforce -> audit (YAML says enforce"),
        "{stdout}"
    );
    assert_eq!(client.get("api.test", "/").await.status, 200, "the very next request");

    let out = rollback_cli(&admin, &["payments", "--to", "off"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(0));
    let out = rollback_cli(&admin, &["payments", "--clear"], Some(ADMIN_TOKEN));
    assert!(String::from_utf8_lossy(&out.stdout).contains("override cleared; running enforce"));
    assert_eq!(client.get("api.test", "/").await.status, 403);

    let out = rollback_cli(&admin, &["nope"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named \"nope\""));
    let out = rollback_cli(&admin, &["payments", "--to", "strict"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(2));
    let out = rollback_cli("http://127.0.0.1:1", &["payments"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_find_the_gateway_through_phasegate_admin_and_take_the_token_file_under_either_name() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let gw = GatewayProcess::start(&pki, &routes("enforce"), backend.addr, &[]).await;
    let token_file = pki.path("admin-token").display().to_string();
    let phasegate = |args: &[&str], admin: &str| {
        Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(args)
            .env("PHASEGATE_ADMIN", admin)
            .env_remove("PHASEGATE_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let ok = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let admin = gw.admin_url();
    // the same spelling as `run --admin-token-file`
    let out = phasegate(&["rollback", "payments", "--admin-token-file", &token_file], &admin);
    assert!(ok(&out).starts_with("payments: enforce -> audit"));
    // the old spelling still works
    let out = phasegate(
        &["rollback", "payments", "--clear", "--token-file", &token_file],
        &admin,
    );
    assert!(ok(&out).contains("override cleared"));
    assert!(ok(&phasegate(&["readiness", "payments"], &admin)).starts_with("payments (24h): "));
    assert!(ok(&phasegate(&["notify-list", "payments"], &admin)).starts_with("payments: "));
    // --admin wins over the environment
    let out = phasegate(&["readiness", "payments", "--admin", &admin], "http://127.0.0.1:1");
    ok(&out);
    let out = phasegate(&["readiness", "payments"], "http://127.0.0.1:1");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API at 127.0.0.1:1"));
}
