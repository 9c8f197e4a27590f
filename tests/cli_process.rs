//! `phasegate run` as a process: SIGHUP reloads, `phasegate rollback` rolls one route back,
//! and SIGTERM lets in-flight requests finish.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, Client, ClientOptions, TestPki, ADMIN_TOKEN};

struct Gateway {
    child: Child,
    admin: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn routes(mode: &str, backend: std::net::SocketAddr) -> String {
    format!("routes:\n  - name: payments\n    match: {{ host: api.test }}\n    upstream: {{ address: \"{backend}\" }}\n    mtls: {{ mode: {mode}, trust: internal }}\n")
}

async fn start(pki: &TestPki, port: u16, extra: &[&str]) -> Gateway {
    let admin_port = free_port();
    let token = pki.write("admin-token", ADMIN_TOKEN);
    let child = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(["run", "--config"])
        .arg(pki.policies())
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--state-dir"])
        .arg(pki.path("state"))
        .arg("--admin-token-file")
        .arg(token)
        .args(["--threads", "1", "--grace-period", "3"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    common::wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    Gateway {
        child,
        admin: format!("http://127.0.0.1:{admin_port}"),
    }
}

async fn status(gw: &Gateway) -> serde_json::Value {
    let client = phasegate::cli::admin_client::AdminClient::new(&gw.admin, None).unwrap();
    client.call(http::Method::GET, "/api/config", None).await.unwrap().1
}

fn signal(gw: &Gateway, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn echo_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    std::mem::forget(phasegate::demo::backend::serve_echo(l, "echo", None).await.unwrap());
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_files() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let port = free_port();
    pki.write(
        "policies/gateway.yaml",
        &format!("{}{}", pki.base_yaml(port), routes("audit", backend)),
    );
    let gw = start(&pki, port, &["--no-watch"]).await;
    pki.write(
        "policies/gateway.yaml",
        &format!("{}{}", pki.base_yaml(port), routes("enforce", backend)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&gw).await["generation"],
        1,
        "--no-watch: no reload without a signal"
    );
    signal(&gw, "HUP");
    for _ in 0..200 {
        if status(&gw).await["generation"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let history = phasegate::cli::admin_client::AdminClient::new(&gw.admin, None)
        .unwrap()
        .call(http::Method::GET, "/api/config/history", None)
        .await
        .unwrap()
        .1;
    assert_eq!(history["generations"][0]["source"], "sighup", "{history}");
    let reply = common::client::get_once(
        gw_addr(port),
        &ClientOptions::new(pki.root_pem(), "api.test"),
        "api.test",
        "/",
    )
    .await;
    assert_eq!(reply.status, 403);
}

fn gw_addr(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
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
    let port = free_port();
    pki.write(
        "policies/gateway.yaml",
        &format!("{}{}", pki.base_yaml(port), routes("enforce", backend)),
    );
    let gw = start(&pki, port, &[]).await;
    let opts = ClientOptions::new(pki.root_pem(), "api.test");
    let mut client = Client::connect(gw_addr(port), &opts).await.unwrap();
    assert_eq!(client.get("api.test", "/").await.status, 403);

    let denied = rollback_cli(&gw.admin, &["payments"], None);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("missing bearer token"));

    let out = rollback_cli(
        &gw.admin,
        &["payments", "--reason", "503s on checkout"],
        Some(ADMIN_TOKEN),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("payments: enforce -> audit (YAML says enforce"),
        "{stdout}"
    );
    assert_eq!(client.get("api.test", "/").await.status, 200, "the very next request");

    let out = rollback_cli(&gw.admin, &["payments", "--to", "off"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(0));
    let out = rollback_cli(&gw.admin, &["payments", "--clear"], Some(ADMIN_TOKEN));
    assert!(String::from_utf8_lossy(&out.stdout).contains("override cleared; running enforce"));
    assert_eq!(client.get("api.test", "/").await.status, 403);

    let out = rollback_cli(&gw.admin, &["nope"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named \"nope\""));
    let out = rollback_cli(&gw.admin, &["payments", "--to", "strict"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(2));
    let out = rollback_cli("http://127.0.0.1:1", &["payments"], Some(ADMIN_TOKEN));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}
