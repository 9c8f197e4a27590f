//! Starting a real gateway and echo backend for one test.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use phasegate::server::{Gateway, RunningGateway, Settings};

use super::pki::TestPki;

/// A port that was free a moment ago. Pingora cannot bind :0 and report the port, so the
/// harness picks one, below the kernel's ephemeral range (from 32768 on Linux): that range
/// hands out the ports of listeners bound to :0 (the tests' backends) and of outgoing
/// connections, which could take a port given here before the gateway binds it. A
/// per-process counter, offset by the process id, never gives a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = (FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
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
        Self::start_edited(pki, routes, |base| base).await
    }

    /// Like [`TestGateway::start`], with the base config (listener, bundles) edited first.
    pub async fn start_edited(pki: &TestPki, routes: &str, edit: impl FnOnce(String) -> String) -> TestGateway {
        let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = backend_listener.local_addr().unwrap();
        let backend_task = phasegate::demo::backend::serve_echo(backend_listener, "echo", None)
            .await
            .unwrap();
        let port = free_port();
        let yaml = format!(
            "{}{}",
            edit(pki.base_yaml(port)),
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
        // Pingora's no-steal runtime keeps per-thread handles in a global that a second
        // server in the same process can inherit from a finished one; in-process tests use
        // the work-stealing runtime (the process tests run the binary's default).
        settings.work_stealing = true;
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
        self.admin_call("GET", path, None, None).await
    }

    /// A mutation with the admin token.
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.admin_call("POST", path, Some(ADMIN_TOKEN), Some(body)).await
    }

    pub async fn admin_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = phasegate::cli::admin_client::AdminClient::new(
            &format!("http://{}", self.admin),
            token.map(str::to_string),
        )
        .unwrap();
        client.call(method.parse().unwrap(), path, body).await.unwrap()
    }

    pub async fn generation(&self) -> u64 {
        self.admin_get("/api/config").await.1["generation"].as_u64().unwrap()
    }

    /// GETs `path` until `done` holds for the body (for up to 5 s), and returns the last
    /// answer either way, for the caller's assertion to show. For what the gateway records
    /// or reloads off the request path.
    pub async fn admin_get_until(
        &self,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> (u16, serde_json::Value) {
        let mut reply = (0, serde_json::Value::Null);
        for _ in 0..200 {
            reply = self.admin_get(path).await;
            if done(&reply.1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        reply
    }

    /// Waits until the config generation reaches `n` (file-change reloads are asynchronous).
    pub async fn wait_for_generation(&self, n: u64) -> serde_json::Value {
        let reached = |status: &serde_json::Value| status["generation"].as_u64() >= Some(n);
        let (_, status) = self.admin_get_until("/api/config", reached).await;
        assert!(reached(&status), "generation {n} never came: {status}");
        status
    }

    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
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
