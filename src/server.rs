//! Assembling the process: pingora server, TLS listeners, the proxy, and the control plane
//! (aggregator and admin listener) as a background service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use tokio::sync::watch;

use crate::admin::AdminToken;
use crate::audit::{Aggregator, Recorder};
use crate::control::{ControlHandle, ControlPlane, FileWatcher, StartupError};
use crate::policy::SharedSnapshot;
use crate::proxy::{InFlight, MtlsProxy};
use crate::tls::{ClientHelloDeadline, HandshakeCallbacks};

/// How to run a gateway process.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub admin_addr: SocketAddr,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub grace_period_secs: u64,
    /// Names this process in audit logs and request ids.
    pub instance_id: String,
    /// Where runtime overrides are kept across restarts; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Bearer token for admin changes; without one, changes through the API are refused.
    pub admin_token: Option<AdminToken>,
    /// Host names the admin listener answers to besides loopback and its own address.
    pub admin_hosts: Vec<String>,
    /// Quiet time after a file change before reloading.
    pub reload_debounce: Duration,
    /// Reload on SIGHUP (off in tests that run several gateways in one process).
    pub reload_on_sighup: bool,
    /// Reload when the policy files change.
    pub watch_files: bool,
    /// How long the audit history (would-be-rejected clients, per-minute counts) is kept.
    pub audit_retention: Duration,
    /// Tokio work stealing between the proxy's threads. Off: each thread runs its own
    /// connections start to end, which measured cheaper per request and per handshake.
    pub work_stealing: bool,
    /// Where state shared by a fleet lives (`None` URL: this instance alone).
    pub store: crate::store::StoreSettings,
}

impl Settings {
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Settings {
            config_dir: config_dir.into(),
            admin_addr: "127.0.0.1:9901".parse().expect("valid literal"),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            grace_period_secs: 10,
            instance_id: default_instance_id(),
            state_dir: None,
            admin_token: None,
            admin_hosts: Vec::new(),
            reload_debounce: Duration::from_millis(200),
            reload_on_sighup: true,
            watch_files: true,
            audit_retention: Duration::from_secs(7 * 86_400),
            work_stealing: false,
            store: crate::store::StoreSettings::default(),
        }
    }
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid{}", std::process::id()))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy files do not compile, or the state file is unreadable; nothing was started.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A listener could not be bound (address in use, permission).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS for listener {listener}: {message}")]
    Tls { listener: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The recorder, with its history in `<state dir>/audit.sqlite` when there is a state
/// directory. An unreadable database is set aside and a fresh one started; if none can be
/// opened (read-only or full disk), recording goes on in memory and the error is shown.
fn open_recorder(settings: &Settings) -> (Recorder, Aggregator) {
    let Some(dir) = &settings.state_dir else {
        return Recorder::new();
    };
    let path = dir.join("audit.sqlite");
    let retention = settings.audit_retention.as_secs() as i64;
    let first = match Recorder::durable(&path, retention) {
        Ok(r) => return r,
        Err(e) => e,
    };
    if path.exists() {
        let aside = path.with_extension(format!("sqlite.unreadable-{}", crate::proxy::unix_now()));
        tracing::error!(error = %first, moved_to = %aside.display(), "audit history unreadable; starting a new one");
        if std::fs::rename(&path, &aside).is_ok() {
            if let Ok(r) = Recorder::durable(&path, retention) {
                return r;
            }
        }
    }
    tracing::error!(error = %first, "audit history cannot be kept on disk; recording in memory only");
    let (recorder, aggregator) = Recorder::new();
    recorder.note_store_error(&first.to_string());
    (recorder, aggregator)
}

/// A gateway that has been built and is ready to run.
pub struct Gateway {
    server: Server,
    pub control: ControlHandle,
    pub snapshot: SharedSnapshot,
    pub recorder: Recorder,
    pub listeners: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    in_flight: Arc<InFlight>,
    grace_period: Duration,
}

impl Gateway {
    pub fn build(settings: &Settings) -> Result<Gateway, StartError> {
        let store = crate::store::open(&settings.store)?;
        let (recorder, mut aggregator) = open_recorder(settings);
        // in a fleet, changes made through the control plane go to the fleet's log
        let joined = store.is_fleet().then(|| {
            crate::control::fleet::Fleet::new(store.clone(), &settings.instance_id, settings.state_dir.as_deref())
        });
        let (plane, control, snapshot) = ControlPlane::start(
            settings.config_dir.clone(),
            settings.state_dir.clone(),
            recorder.clone(),
            joined.clone(),
        )?;
        let config = snapshot.load().config.clone();
        let fleet = joined.map(|fleet| {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            aggregator.publish_to(&recorder, tx);
            (fleet, rx)
        });
        let watcher = settings
            .watch_files
            .then(|| {
                FileWatcher::arm(
                    control.clone(),
                    snapshot.clone(),
                    settings.config_dir.clone(),
                    settings.reload_debounce,
                )
            })
            .flatten();

        let admin = std::net::TcpListener::bind(settings.admin_addr).map_err(|source| StartError::Bind {
            address: settings.admin_addr,
            source,
        })?;
        let admin_addr = admin.local_addr().unwrap_or(settings.admin_addr);

        let conf = ServerConf {
            threads: settings.threads.max(1),
            work_stealing: settings.work_stealing,
            grace_period_seconds: Some(settings.grace_period_secs),
            graceful_shutdown_timeout_seconds: Some(settings.grace_period_secs.max(1)),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        let in_flight = Arc::new(InFlight::default());
        let proxy = MtlsProxy::new(
            snapshot.clone(),
            recorder.clone(),
            &settings.instance_id,
            in_flight.clone(),
        );
        // the proxy app behind the wait for each request's first byte and a total deadline for
        // its head (proxy/head_deadline.rs)
        let app = crate::proxy::HeadDeadline::new(pingora::proxy::http_proxy(&server.configuration, proxy));
        let mut service = pingora::services::listening::Service::new("phasegate proxy".to_string(), app);
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let tls =
                HandshakeCallbacks::tls_settings(snapshot.clone(), &listener.name, recorder.clone()).map_err(|e| {
                    StartError::Tls {
                        listener: listener.name.clone(),
                        message: e.to_string(),
                    }
                })?;
            // Unbuffered reads: Pingora's default 64 KiB read buffer would be held by every
            // connection, idle or not; OpenSSL's read-ahead does the buffering (accept.rs).
            service.endpoints().add_listener(
                ListenerConfig::tcp(listener.address.to_string())
                    .tls(tls)
                    .l4_buffer(L4BufferSettings::default().read(0)),
            );
            listeners.push(listener.address);
        }
        service.endpoints().set_pre_tls_callback(Arc::new(ClientHelloDeadline {
            snapshot: snapshot.clone(),
        }));
        server.add_service(service);

        if !admin_addr.ip().is_loopback() && settings.admin_token.is_none() {
            tracing::warn!(admin = %admin_addr, "the admin listener is not on loopback and has no token: client identities are readable from the network");
        }
        let service = ControlPlaneService {
            parts: Mutex::new(Some(ControlParts {
                admin,
                aggregator,
                plane,
                watcher,
                store,
                fleet,
            })),
            admin_state: crate::admin::AdminState {
                snapshot: snapshot.clone(),
                recorder: recorder.clone(),
                control: control.clone(),
                token: settings.admin_token.clone(),
                instance: settings.instance_id.as_str().into(),
                hosts: crate::admin::AdminHosts::new(&settings.admin_hosts),
            },
            reload_on_sighup: settings.reload_on_sighup,
        };
        server.add_service(background_service("control plane", service));
        Ok(Gateway {
            server,
            control,
            snapshot,
            recorder,
            listeners,
            admin_addr,
            in_flight,
            grace_period: Duration::from_secs(settings.grace_period_secs),
        })
    }

    /// Runs until SIGINT (at once), or SIGTERM or SIGQUIT: then new connections are refused,
    /// idle ones closed, and the process ends as soon as the requests in flight are done —
    /// at the latest when the grace period is over.
    ///
    /// Pingora's own graceful stop always sleeps the whole grace period, busy or not; so
    /// this thread takes the signals, tells the server thread to stop, and returns once
    /// nothing is in flight (the server thread is left sleeping; the process ends with it).
    pub fn run_forever(self) {
        let mut signals = match StopSignals::register() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for signals; SIGTERM waits the whole grace period");
                return self.server.run(RunArgs::default());
            }
        };
        let (in_flight, grace, recorder) = (self.in_flight.clone(), self.grace_period, self.recorder.clone());
        let mut running = self.spawn();
        let Stop::Graceful = signals.wait() else {
            running.shutdown(Stop::Fast);
            return;
        };
        let deadline = std::time::Instant::now() + grace;
        let _ = running.stop.send(Some(Stop::Graceful));
        // a head read just before the stop reaches the proxy a moment later
        std::thread::sleep(SETTLE.min(grace));
        if !in_flight.wait_until_idle(deadline) {
            tracing::warn!(
                in_flight = in_flight.count(),
                grace_secs = grace.as_secs(),
                "grace period over; requests still in flight are cut off"
            );
        }
        // what those requests recorded, on disk before the process ends
        if !recorder.flush(Duration::from_secs(2)) {
            tracing::warn!("the last audit records may not have been written");
        }
        tracing::info!("stopped");
        // not joined: Pingora's thread sleeps out the rest of its grace period
        running.thread.take();
    }

    /// Runs on a thread of its own until [`RunningGateway::stop`].
    pub fn spawn(self) -> RunningGateway {
        let (tx, rx) = watch::channel(None);
        let server = self.server;
        let thread = std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopSignal(rx)),
            })
        });
        RunningGateway {
            stop: tx,
            thread: Some(thread),
            control: self.control,
            snapshot: self.snapshot,
            recorder: self.recorder,
            listeners: self.listeners,
            admin_addr: self.admin_addr,
        }
    }
}

/// A gateway running on its own thread (tests, the demo).
pub struct RunningGateway {
    stop: watch::Sender<Option<Stop>>,
    thread: Option<JoinHandle<()>>,
    pub control: ControlHandle,
    pub snapshot: SharedSnapshot,
    pub recorder: Recorder,
    pub listeners: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
}

impl RunningGateway {
    /// Stops at once, without a grace period, and waits for the server thread.
    pub fn stop(mut self) {
        self.shutdown(Stop::Fast);
    }

    /// Stops like SIGTERM: in-flight requests get the grace period to finish.
    pub fn stop_gracefully(mut self) {
        self.shutdown(Stop::Graceful);
    }

    fn shutdown(&mut self, signal: Stop) {
        let _ = self.stop.send(Some(signal));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown(Stop::Fast);
    }
}

#[derive(Clone, Copy)]
enum Stop {
    Graceful,
    Fast,
}

/// How long a graceful stop waits before it trusts an in-flight count of zero.
const SETTLE: Duration = Duration::from_millis(100);

/// SIGTERM and SIGQUIT stop gracefully, SIGINT at once (as Pingora's own handling, minus
/// the socket hand-over of SIGQUIT, which phasegate does not use).
struct StopSignals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Registered before the server starts, so that no signal finds the default action.
    fn register() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let _in = rt.enter();
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
            int: signal(SignalKind::interrupt())?,
            rt,
        })
    }

    fn wait(&mut self) -> Stop {
        let StopSignals { rt, term, quit, int } = self;
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => Stop::Graceful,
                _ = quit.recv() => Stop::Graceful,
                _ = int.recv() => Stop::Fast,
            }
        })
    }
}

struct StopSignal(watch::Receiver<Option<Stop>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        loop {
            let requested = *rx.borrow_and_update();
            match requested {
                Some(Stop::Graceful) => return ShutdownSignal::GracefulTerminate,
                Some(Stop::Fast) => return ShutdownSignal::FastShutdown,
                None => {}
            }
            if rx.changed().await.is_err() {
                return ShutdownSignal::FastShutdown;
            }
        }
    }
}

/// The control plane's tasks, on a runtime of their own so that admin traffic and reloads
/// never compete with the proxy's workers: the control plane itself, the file watcher,
/// SIGHUP, the audit aggregator and the admin listener.
struct ControlPlaneService {
    parts: Mutex<Option<ControlParts>>,
    admin_state: crate::admin::AdminState,
    reload_on_sighup: bool,
}

struct ControlParts {
    admin: std::net::TcpListener,
    aggregator: Aggregator,
    plane: ControlPlane,
    watcher: Option<FileWatcher>,
    store: crate::store::SharedStore,
    /// In a fleet: the sync state and the aggregator's batches for the store.
    fleet: Option<(
        std::sync::Arc<crate::control::fleet::Fleet>,
        tokio::sync::mpsc::Receiver<crate::store::InstanceBatch>,
    )>,
}

#[async_trait]
impl BackgroundService for ControlPlaneService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(parts) = self.parts.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        tokio::spawn(parts.aggregator.run());
        tokio::spawn(parts.plane.run());
        let control = self.admin_state.control.clone();
        parts.store.clone().start();
        if let Some((fleet, batches)) = parts.fleet {
            crate::control::fleet::spawn(
                fleet,
                control.clone(),
                self.admin_state.snapshot.clone(),
                self.admin_state.recorder.clone(),
                batches,
                crate::proxy::unix_now(),
            );
        }
        if let Some(watcher) = parts.watcher {
            tokio::spawn(watcher.run());
        }
        crate::upstream::spawn_maintenance(self.admin_state.snapshot.clone());
        crate::control::spawn_route_watch(control.clone(), self.admin_state.snapshot.clone());
        if self.reload_on_sighup {
            crate::control::spawn_sighup_listener(control);
        }
        let admin = parts.admin;
        let listener = match admin
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(admin))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let app = crate::admin::router(self.admin_state.clone());
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    }
}
