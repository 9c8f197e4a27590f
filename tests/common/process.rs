//! `phasegate run` as a real process, for what only a process shows: signals, exit codes,
//! `kill -9`, logs, RSS.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};

use tokio::task::JoinHandle;

use super::gateway::{free_port, wait_for_port, ADMIN_TOKEN};
use super::pki::TestPki;

/// An echo backend on a free port, stopped when dropped.
pub struct EchoBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_backend() -> EchoBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = phasegate::demo::backend::serve_echo(listener, "echo", None)
        .await
        .unwrap();
    EchoBackend { addr, task }
}

pub struct GatewayProcess {
    child: Option<Child>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    capture: bool,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl GatewayProcess {
    /// Writes `policies/gateway.yaml` (base config + `routes`, with `{backend}` replaced),
    /// then starts `phasegate run` with a state directory and the admin token, plus
    /// `extra` arguments; returns once both listeners accept.
    pub async fn start(pki: &TestPki, routes: &str, backend: SocketAddr, extra: &[&str]) -> GatewayProcess {
        Self::start_with(pki, routes, backend, extra, &[], false).await
    }

    /// With environment variables, and stdout/stderr captured (see [`Self::stop_with_output`]).
    pub async fn start_with(
        pki: &TestPki,
        routes: &str,
        backend: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> GatewayProcess {
        Self::start_in(pki, "policies", "state", routes, backend, extra, env, capture).await
    }

    /// One instance of several on one machine: its own policy directory (the same routes,
    /// its own ports) and state directory, named after `name`.
    pub async fn start_named(
        pki: &TestPki,
        name: &str,
        routes: &str,
        backend: SocketAddr,
        extra: &[&str],
    ) -> GatewayProcess {
        let extra: Vec<&str> = ["--instance-id", name]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::start_in(
            pki,
            &format!("policies-{name}"),
            &format!("state-{name}"),
            routes,
            backend,
            &extra,
            &[],
            false,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_in(
        pki: &TestPki,
        policies: &str,
        state: &str,
        routes: &str,
        backend: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> GatewayProcess {
        let port = free_port();
        let admin_port = free_port();
        pki.write(
            &format!("{policies}/gateway.yaml"),
            &format!(
                "{}{}",
                pki.base_yaml(port),
                routes.replace("{backend}", &backend.to_string())
            ),
        );
        let token = pki.write("admin-token", ADMIN_TOKEN);
        let mut command: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            pki.path(policies).display().to_string(),
            "--admin".into(),
            format!("127.0.0.1:{admin_port}"),
            "--state-dir".into(),
            pki.path(state).display().to_string(),
            "--admin-token-file".into(),
            token.display().to_string(),
        ];
        if !extra.contains(&"--threads") {
            command.extend(["--threads".to_string(), "1".to_string()]);
        }
        command.extend(extra.iter().map(|s| s.to_string()));
        let mut p = GatewayProcess {
            child: None,
            command,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            capture,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin_addr: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let output = || if self.capture { Stdio::piped() } else { Stdio::null() };
        let child = Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(&self.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.addr).await;
        wait_for_port(self.admin_addr).await;
    }

    /// `None` while the process runs; its exit status once it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn admin(&self, token: Option<&str>) -> phasegate::cli::admin_client::AdminClient {
        phasegate::cli::admin_client::AdminClient::new(&self.admin_url(), token.map(str::to_string)).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM (the process saves what it recorded), then the same command again.
    pub async fn restart(&mut self) {
        self.signal("TERM");
        self.wait();
        self.spawn().await;
    }

    /// SIGKILL, then the same command again (same ports, state directory and policies).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit (after a signal) and returns its output.
    pub fn wait(&mut self) -> Output {
        self.child.take().expect("running").wait_with_output().unwrap()
    }

    /// SIGKILL and what it printed.
    pub fn stop_with_output(&mut self) -> String {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let out = c.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
