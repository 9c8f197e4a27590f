//! Starting a real gateway and echo backend for one test.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use phasegate::server::{Gateway, RunningGateway, Settings};

use super::pki::TestPki;

/// A port that was free a moment ago. Pingora cannot bind :0 and report the port, so the
/// harness picks one; ports come from a per-process counter offset to avoid reuse races.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestGateway {
    pub running: Option<RunningGateway>,
    pub settings: Settings,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub backend: SocketAddr,
    backend_task: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    /// Starts an echo backend and a gateway whose policy is the base config plus `routes`
    /// (YAML text where `{backend}` stands for the backend's address).
    pub async fn start(pki: &TestPki, routes: &str) -> TestGateway {
        let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = backend_listener.local_addr().unwrap();
        let backend_task = phasegate::demo::backend::serve_echo(backend_listener, "echo", None)
            .await
            .unwrap();
        let port = free_port();
        let yaml = format!(
            "{}{}",
            pki.base_yaml(port),
            routes.replace("{backend}", &backend.to_string())
        );
        pki.write("policies/gateway.yaml", &yaml);
        let mut settings = Settings::new(pki.policies());
        settings.admin_addr = "127.0.0.1:0".parse().unwrap();
        settings.threads = 2;
        settings.grace_period_secs = 1;
        settings.instance_id = "test".into();
        settings.state_dir = Some(pki.path("state"));
        settings.admin_token = phasegate::admin::AdminToken::new(ADMIN_TOKEN);
        settings.reload_debounce = Duration::from_millis(100);
        settings.reload_on_sighup = false;
        let running = Gateway::build(&settings).unwrap_or_else(|e| panic!("{e}")).spawn();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr).await;
        let admin = running.admin_addr;
        TestGateway {
            running: Some(running),
            settings,
            addr,
            admin,
            backend,
            backend_task,
        }
    }

    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", "admin")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.backend_task.abort();
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}
