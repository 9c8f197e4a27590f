//! The README's first command: `phasegate demo` serves the example policies, each mode
//! behaves as the walkthrough says, and the commands it prints work as shown.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use common::{pki::ClientCert, ClientOptions};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client_cert(dir: &std::path::Path, name: &str) -> Option<ClientCert> {
    Some(ClientCert {
        chain_pem: std::fs::read_to_string(dir.join(format!("clients/{name}.crt"))).unwrap(),
        key_pem: std::fs::read_to_string(dir.join(format!("clients/{name}.key"))).unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_audit_passing_and_recording_and_soft_fail_and_enforce_rejecting() {
    let dir = tempfile::tempdir().unwrap();
    // no phasegate on PATH, as after `cargo run --release -- demo` on a fresh checkout
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(["demo", "--dir"])
            .arg(dir.path())
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(demo.0.stdout.take().unwrap());
    let instructions = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        text
    });
    let addr = "127.0.0.1:8443".parse().unwrap();
    common::wait_for_port(addr).await;
    let root = std::fs::read_to_string(dir.path().join("pki/root.pem")).unwrap();
    let get = |cert: Option<ClientCert>, path: &'static str| {
        let opts = ClientOptions::new(&root, "localhost").cert(cert);
        async move { common::client::get_once(addr, &opts, "localhost", path).await }
    };
    let d = dir.path();
    let audit = get(None, "/audit").await;
    assert_eq!(audit.status, 200);
    assert_eq!(
        audit.upstream_header("x-mtls-verdict").unwrap(),
        "would-reject; reason=no_cert"
    );
    assert_eq!(get(client_cert(d, "intruder"), "/audit").await.status, 200);
    assert_eq!(
        get(None, "/soft-fail").await.upstream_header("x-mtls-verdict").unwrap(),
        "unauthenticated"
    );
    assert_eq!(
        get(client_cert(d, "expired"), "/soft-fail").await.json()["reason"],
        "expired"
    );
    assert_eq!(get(client_cert(d, "checkout"), "/enforce").await.status, 200);
    assert_eq!(get(None, "/enforce").await.json()["reason"], "no_cert");
    assert_eq!(
        get(client_cert(d, "reporting"), "/enforce").await.json()["reason"],
        "identity_not_allowed"
    );
    assert_eq!(
        get(client_cert(d, "revoked"), "/enforce").await.json()["reason"],
        "revoked"
    );
    assert_eq!(
        get(client_cert(d, "server-cert"), "/enforce").await.json()["reason"],
        "eku_mismatch"
    );
    assert_eq!(
        get(None, "/off").await.upstream_header("x-mtls-verdict").unwrap(),
        "unauthenticated"
    );

    // the audit route recorded both would-be-rejected clients
    let stream = tokio::net::TcpStream::connect("127.0.0.1:9901").await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut reasons = Vec::new();
    for _ in 0..50 {
        let req = hyper::Request::get("/api/routes/orders-audit/rejections")
            .header("host", "127.0.0.1:9901")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        use http_body_util::BodyExt;
        let body = sender
            .send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        reasons = v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["reason"].as_str().unwrap().to_string())
            .collect();
        if reasons.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    reasons.sort();
    assert_eq!(reasons, ["identity_not_allowed", "no_cert"]);

    // every phasegate command the demo prints, pasted into a shell as they are
    let text = instructions.await.unwrap();
    let exe = text
        .lines()
        .find_map(|l| l.trim().strip_suffix(" readiness orders-audit"))
        .unwrap_or_else(|| panic!("no readiness command in {text}"))
        .to_string();
    let pasted: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export PHASEGATE_ADMIN=") || l.starts_with(&format!("{exe} ")))
        .collect();
    assert_eq!(pasted.len(), 6, "{text}");
    let out = Command::new("sh")
        .args(["-ec", &pasted.join("\n")])
        .env("PATH", "/usr/bin:/bin")
        .env_remove("PHASEGATE_ADMIN")
        .env_remove("PHASEGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{printed}{}",
        pasted.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("payments-enforce: enforce -> audit"), "{printed}");
    assert!(printed.contains("payments-enforce: override cleared"), "{printed}");
    assert!(
        printed.contains("orders-audit (24h): enforce now would reject"),
        "{printed}"
    );
    assert!(
        printed.contains("orders-audit: 2 client(s) enforce would reject"),
        "{printed}"
    );
    assert!(printed.contains("ok: 4 routes"), "{printed}");
    drop(demo);
}
