//! The `phasegate` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use phasegate::admin::AdminToken;
use phasegate::cli::admin_client::read_token;
use phasegate::cli::notify::ListFormat;
use phasegate::cli::rollback::Change;
use phasegate::cli::verify::{self, VerifyReport};
use phasegate::policy::AllowEntry;
use phasegate::server::{Gateway, Settings};
use phasegate::tls::RequiredEku;

/// mimalloc: the request path and config compilation are allocation-heavy, and glibc malloc
/// cost ~12–15% of both in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "phasegate", version, about = "Phase in mutual TLS one route at a time")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Eku {
    #[value(name = "clientAuth")]
    ClientAuth,
    #[value(name = "serverAuth")]
    ServerAuth,
    Any,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the policies in DIR.
    Run {
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Admin listener (API and page). Loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// A host name the admin listener answers to besides loopback names and its own
        /// address (e.g. the name operators reach it by); repeatable. Others get 421.
        #[arg(long = "admin-host", value_name = "NAME")]
        admin_hosts: Vec<String>,
        /// Proxy worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Seconds in-flight requests get to finish after SIGTERM.
        #[arg(long, default_value_t = 10)]
        grace_period: u64,
        /// Names this instance in audit logs (default: $HOSTNAME).
        #[arg(long)]
        instance_id: Option<String>,
        /// Where runtime overrides (rollbacks) are kept across restarts.
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// File holding the admin bearer token (else $PHASEGATE_ADMIN_TOKEN); without a
        /// token, admin changes are refused.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Do not watch the policy files; reload only on SIGHUP or POST /api/config/reload.
        #[arg(long)]
        no_watch: bool,
        /// The fleet's shared store, `postgresql://user@host:port/db[?sslmode=verify-full&sslrootcert=CA]`;
        /// without it this instance keeps everything in its state directory.
        #[arg(long, env = "PHASEGATE_STORE", value_name = "URL", hide_env_values = true)]
        store: Option<String>,
        /// File holding the store's password (else the URL's, else $PGPASSWORD).
        #[arg(long, env = "PHASEGATE_STORE_PASSWORD_FILE", value_name = "FILE")]
        store_password_file: Option<PathBuf>,
    },
    /// How ready a route is for enforce: the share of its requests enforce would have
    /// rejected over the window. With --max-reject-ratio, exits 1 above it (a CI gate for
    /// the YAML change that flips the route).
    Readiness {
        route: String,
        #[arg(long, default_value = "24h")]
        window: String,
        #[arg(long)]
        max_reject_ratio: Option<f64>,
        /// Fail (exit 1) when the window holds fewer requests than this: no evidence.
        #[arg(long, default_value_t = 0)]
        min_requests: u64,
        /// The admin API.
        #[arg(long, env = "PHASEGATE_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Per owner, the clients a route would break and why (live enforce, or with --shadow
    /// what promoting the shadow policy would newly reject): the list to send before the flip.
    NotifyList {
        route: String,
        #[arg(long)]
        shadow: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
        /// The admin API.
        #[arg(long, env = "PHASEGATE_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Roll one route back (to the mode before its last tightening, or --to MODE), or
    /// clear its override; takes effect on the next request, without a reload.
    Rollback {
        route: String,
        #[arg(long, value_parser = parse_mode)]
        to: Option<phasegate::policy::Mode>,
        #[arg(long)]
        reason: Option<String>,
        /// Remove the route's override so the YAML mode applies again.
        #[arg(long, conflicts_with_all = ["to", "reason"])]
        clear: bool,
        /// The admin API.
        #[arg(long, env = "PHASEGATE_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// File holding the admin token (else $PHASEGATE_ADMIN_TOKEN).
        #[arg(long, alias = "token-file")]
        admin_token_file: Option<PathBuf>,
    },
    /// Validate the policies in DIR without serving; exit 1 on any problem. Warnings (what
    /// compiles but will fail clients, such as a stale CRL) are printed too.
    Check {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        /// Exit 1 on warnings as well.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Verify a certificate offline, through the same code as live traffic.
    /// Exit 0 accept, 1 reject, 2 usage or other error.
    Verify(VerifyArgs),
    /// Generate a dev PKI and run the gateway on the example policies with a demo backend.
    Demo {
        /// Where to write the PKI and policies (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Policy directory; verify as ROUTE would (in enforce mode).
    #[arg(long, requires = "route", conflicts_with_all = ["trust_anchors"])]
    config: Option<PathBuf>,
    #[arg(long)]
    route: Option<String>,
    /// Trust anchors (PEM) when verifying without a config.
    #[arg(long, required_unless_present = "config")]
    trust_anchors: Option<PathBuf>,
    #[arg(long)]
    intermediates: Option<PathBuf>,
    /// CRL file: one DER CRL, or PEM holding one or more CRLs; repeatable.
    #[arg(long = "crl")]
    crls: Vec<PathBuf>,
    /// Verification time, RFC 3339 (default: now).
    #[arg(long, conflicts_with = "no_time_check")]
    at: Option<String>,
    /// Skip validity periods (offline checks of archived chains); CRL times too.
    #[arg(long)]
    no_time_check: bool,
    /// Relax a strict profile check, as a trust bundle's `relax` does; repeatable.
    #[arg(long = "relax", value_name = "CHECK", value_parser = parse_strict_check)]
    relax: Vec<phasegate::tls::StrictCheck>,
    /// Allowed SAN (uri:V, dns:V, ip:V, email:V); repeatable; none = any identity.
    #[arg(long = "allow-san")]
    allow_san: Vec<String>,
    #[arg(long, value_enum, default_value = "clientAuth")]
    require_eku: Eku,
    /// Intermediate CAs allowed between the leaf and the anchor (as OpenSSL's -verify_depth).
    #[arg(long)]
    max_depth: Option<u32>,
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
    /// The certificate (PEM), optionally followed by its intermediates.
    cert: PathBuf,
}

fn main() -> ExitCode {
    // before anything can make OpenSSL allocate
    let openssl_on_mimalloc = phasegate::tls::openssl_allocates_with_mimalloc();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if !openssl_on_mimalloc {
        tracing::warn!("OpenSSL had already allocated; it keeps the system allocator");
    }
    match cli.command {
        Command::Run {
            config,
            admin,
            admin_hosts,
            threads,
            grace_period,
            instance_id,
            state_dir,
            admin_token_file,
            no_watch,
            store,
            store_password_file,
        } => {
            let mut settings = Settings::new(config);
            settings.store = phasegate::store::StoreSettings {
                url: store,
                password_file: store_password_file,
            };
            settings.watch_files = !no_watch;
            settings.state_dir = Some(state_dir);
            settings.admin_token = match read_token(admin_token_file.as_deref()) {
                Ok(token) => token.as_deref().and_then(AdminToken::new),
                Err(e) => {
                    eprintln!("phasegate: {e}");
                    return ExitCode::from(2);
                }
            };
            settings.admin_addr = admin;
            settings.admin_hosts = admin_hosts;
            if let Some(t) = threads {
                settings.threads = t;
            }
            settings.grace_period_secs = grace_period;
            if let Some(id) = instance_id {
                settings.instance_id = id;
            }
            exit_on_error(run(settings))
        }
        Command::Check {
            dir,
            format,
            deny_warnings,
        } => check(&dir, format, deny_warnings),
        Command::Verify(args) => verify_command(args),
        Command::Demo { dir } => exit_on_error(demo(dir)),
        Command::NotifyList {
            route,
            shadow,
            format,
            admin,
        } => phasegate::cli::notify::run(&route, shadow, format, &admin),
        Command::Readiness {
            route,
            window,
            max_reject_ratio,
            min_requests,
            admin,
            format,
        } => phasegate::cli::readiness::run(
            &route,
            &window,
            max_reject_ratio,
            min_requests,
            &admin,
            format == OutputFormat::Json,
        ),
        Command::Rollback {
            route,
            to,
            reason,
            clear,
            admin,
            admin_token_file,
        } => {
            let change = if clear {
                Change::Clear
            } else {
                Change::Rollback { to, reason }
            };
            phasegate::cli::rollback::run(&route, change, &admin, admin_token_file.as_deref())
        }
    }
}

fn parse_strict_check(text: &str) -> Result<phasegate::tls::StrictCheck, String> {
    phasegate::tls::StrictCheck::parse(text)
}

fn parse_mode(text: &str) -> Result<phasegate::policy::Mode, String> {
    text.parse().map_err(|e: phasegate::policy::UnknownMode| e.to_string())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // colour codes only for a person at a terminal, not in files or log collectors
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn exit_on_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phasegate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let gateway = Gateway::build(&settings)?;
    tracing::info!(listeners = ?gateway.listeners, admin = %gateway.admin_addr, "phasegate serving");
    gateway.run_forever();
    Ok(())
}

fn check(dir: &std::path::Path, format: OutputFormat, deny_warnings: bool) -> ExitCode {
    match phasegate::config::load(dir) {
        Ok(config) => {
            let warnings = &config.warnings;
            if format == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "routes": config.routes.len(), "listeners": config.listeners.len(), "trust_bundles": config.bundles.len(), "content_hash": config.content_hash, "warnings": warnings})
                );
            } else {
                for w in warnings {
                    println!("warning: {w}");
                }
                println!(
                    "ok: {} routes, {} listeners, {} trust bundles (content hash {}){}",
                    config.routes.len(),
                    config.listeners.len(),
                    config.bundles.len(),
                    &config.content_hash[..12],
                    match warnings.len() {
                        0 => String::new(),
                        n => format!(", {n} warning(s)"),
                    }
                );
            }
            if deny_warnings && !warnings.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(diagnostics) => {
            if format == OutputFormat::Json {
                println!("{}", serde_json::json!({"ok": false, "problems": diagnostics}));
            } else {
                println!("{diagnostics}");
                println!("{} problem(s)", diagnostics.0.len());
            }
            ExitCode::from(1)
        }
    }
}

fn verify_command(args: VerifyArgs) -> ExitCode {
    let report = (|| -> Result<VerifyReport, String> {
        let cert = std::fs::read(&args.cert).map_err(|e| format!("cannot read {}: {e}", args.cert.display()))?;
        if let (Some(dir), Some(route)) = (&args.config, &args.route) {
            return verify::against_route(dir, route, &cert);
        }
        let at = match &args.at {
            Some(text) => Some(
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| format!("--at {text:?} is not RFC 3339 (expected e.g. 2026-12-01T00:00:00Z): {e}"))?
                    .unix_timestamp(),
            ),
            None => None,
        };
        let allow = args
            .allow_san
            .iter()
            .map(|s| AllowEntry::parse_san(s).map_err(|e| format!("--allow-san: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = verify::Standalone {
            trust_anchors: args
                .trust_anchors
                .clone()
                .ok_or("--trust-anchors is required without --config")?,
            intermediates: args.intermediates.clone(),
            crls: args.crls.clone(),
            at,
            allow,
            require_eku: match args.require_eku {
                Eku::ClientAuth => RequiredEku::ClientAuth,
                Eku::ServerAuth => RequiredEku::ServerAuth,
                Eku::Any => RequiredEku::Any,
            },
            max_depth: args.max_depth,
            check_time: !args.no_time_check,
            relax: args.relax.clone(),
        };
        verify::standalone(&opts, &cert)
    })();
    match report {
        Ok(report) => {
            match args.format {
                OutputFormat::Json => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
                OutputFormat::Text => println!("{}", report.text()),
            }
            if report.accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("phasegate verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("phasegate-demo-{}", std::process::id())),
    };
    let layout = phasegate::demo::prepare(&dir).map_err(anyhow::Error::msg)?;
    // The echo backend gets a small runtime of its own; the gateway runs pingora's.
    let backend = std::net::TcpListener::bind(phasegate::demo::BACKEND_ADDR)
        .with_context(|| format!("demo backend cannot listen on {}", phasegate::demo::BACKEND_ADDR))?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            backend.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(backend).expect("tokio listener");
            let task = phasegate::demo::backend::serve_echo(listener, "demo-backend", None)
                .await
                .expect("backend");
            let _ = task.await;
        });
    });
    let mut settings = Settings::new(&layout.policies);
    settings.state_dir = Some(layout.dir.join("state"));
    settings.admin_token = AdminToken::new(&layout.admin_token);
    let gateway = Gateway::build(&settings)?;
    println!(
        "{}",
        phasegate::demo::instructions(
            &layout,
            &gateway.admin_addr.to_string(),
            &phasegate::cli::invocation::self_command()
        )
    );
    gateway.run_forever();
    Ok(())
}
