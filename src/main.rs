//! The `celeriac` command line: `run`, `validate`, `components` and `reload`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use celeriac::config::{self, Config, Diagnostics};
use celeriac::pipeline::{self, Graph};
use celeriac::reload;
use celeriac::telemetry::{self, Telemetry};

/// mimalloc instead of glibc malloc: the hot path allocates and frees several small strings per
/// event across threads (receiver → correlator); glibc's per-thread arenas cost ~2× the
/// instructions there and let RSS drift upward under a flood (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Telemetry pipeline agent for Celery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of a config file (the built-in default pipeline without -c).
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file and report every problem; exit 0 when valid, 1 when not.
    Validate {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List every component type, the signals it takes and gives, and all its settings with
    /// their defaults (as YAML that can be pasted into a config file).
    Components,
    /// Ask a running agent to re-read its config file (like SIGHUP) and wait for the outcome;
    /// exit 0 when it swapped its pipelines, 1 when it kept the running ones.
    Reload {
        /// The agent's telemetry endpoint (`service.telemetry.endpoint`).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8888")]
        endpoint: String,
        /// A file holding `service.telemetry.bearer_token`, when the endpoint requires one.
        #[arg(long, value_name = "FILE")]
        bearer_token_file: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> (Option<(Config, Graph)>, Diagnostics) {
    let (cfg, mut d) = match path {
        Some(p) => config::load(p),
        None => config::parse(
            config::DEFAULT_PIPELINE,
            "<built-in pipelines/default.yaml>",
        ),
    };
    let built = cfg.and_then(|c| Graph::build(&c, &mut d).map(|g| (c, g)));
    (built, d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Components => {
            print!("{}", celeriac::registry::catalog());
            ExitCode::SUCCESS
        }
        Command::Reload {
            endpoint,
            bearer_token_file,
        } => match reload::request_with_token_file(&endpoint, bearer_token_file.as_deref()) {
            Ok(reload::Outcome::Reloaded) => {
                println!("{endpoint}: configuration reloaded");
                ExitCode::SUCCESS
            }
            Ok(reload::Outcome::Rejected) => {
                eprintln!("{endpoint}: the new configuration was rejected; the agent kept the running one (its log says why)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{endpoint}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Validate { config } => {
            let (built, d) = load(config.as_ref());
            eprint!("{}", d.render());
            if built.is_some() {
                let name = config
                    .as_ref()
                    .map_or("built-in default pipeline".to_string(), |p| {
                        p.display().to_string()
                    });
                println!("{name}: valid");
                ExitCode::SUCCESS
            } else {
                eprintln!("{} error(s)", d.errors());
                ExitCode::FAILURE
            }
        }
        Command::Run { config } => {
            let (built, d) = load(config.as_ref());
            eprint!("{}", d.render());
            let Some((cfg, graph)) = built else {
                eprintln!("{} error(s); not starting", d.errors());
                return ExitCode::FAILURE;
            };
            telemetry::init_logging(&cfg.service.telemetry.log_level);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(run(cfg, graph, config))
        }
    }
}

async fn run(cfg: Config, graph: Graph, path: Option<PathBuf>) -> ExitCode {
    let telemetry = Telemetry::new();
    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();
    // Reload requests (SIGHUP, POST /-/reload); one pending request is enough.
    let (request_tx, request_rx) = tokio::sync::mpsc::channel::<()>(1);

    if let Some(addr) = cfg.service.telemetry.endpoint {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "Cannot bind the telemetry endpoint (service.telemetry.endpoint).");
                return ExitCode::FAILURE;
            }
        };
        let t = telemetry.clone();
        let bearer = cfg
            .service
            .telemetry
            .bearer_token
            .as_ref()
            .map(|s| std::sync::Arc::from(s.expose()));
        let requests = request_tx.clone();
        tokio::spawn(telemetry::serve_authorized(
            listener,
            bearer,
            move |method, path| telemetry_page(&t, &requests, method, path),
            server_stop.clone(),
        ));
        tracing::info!(%addr, "Serving /metrics, /healthz and POST /-/reload.");
    }

    let stop2 = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Signal received.");
        stop2.cancel();
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let requests = request_tx.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the configuration.");
                        let _ = requests.try_send(());
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot handle SIGHUP; reload with POST /-/reload.")
            }
        }
    }
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(reload::serve(
        path,
        load,
        request_rx,
        reload_tx,
        telemetry.clone(),
    ));

    let components = cfg.components.clone();
    let result =
        pipeline::run_with_reloads(graph, &components, &cfg.service, telemetry, stop, reload_rx)
            .await;
    server_stop.cancel();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "celeriac stopped with an error.");
            ExitCode::FAILURE
        }
    }
}

fn telemetry_page(
    t: &Telemetry,
    reloads: &tokio::sync::mpsc::Sender<()>,
    method: &hyper::Method,
    path: &str,
) -> telemetry::Reply {
    use hyper::{Method, StatusCode};
    match (method, path) {
        (_, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            t.render().into(),
        ),
        (_, "/healthz") if t.healthy() => (StatusCode::OK, "text/plain", "ok\n".into()),
        (_, "/healthz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        (&Method::POST, "/-/reload") => {
            // Full means a reload is already pending, which will read the same file.
            let _ = reloads.try_send(());
            (
                StatusCode::ACCEPTED,
                "text/plain",
                "reload requested; the outcome is counted in celeriac_config_reloads_total\n"
                    .into(),
            )
        }
        (_, "/-/reload") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or POST /-/reload\n".into(),
        ),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
