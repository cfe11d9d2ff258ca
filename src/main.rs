//! The `celeriac` command line: `run` and `validate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use celeriac::config::{self, Config, Diagnostics};
use celeriac::pipeline::{self, Graph};
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
            rt.block_on(run(cfg, graph))
        }
    }
}

async fn run(cfg: Config, graph: Graph) -> ExitCode {
    let telemetry = Telemetry::new();
    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();

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
        tokio::spawn(telemetry::serve_authorized(
            listener,
            bearer,
            move |_, path| telemetry_page(&t, path),
            server_stop.clone(),
        ));
        tracing::info!(%addr, "Serving /metrics and /healthz.");
    }

    let stop2 = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Signal received.");
        stop2.cancel();
    });

    let result = pipeline::run(graph, &cfg.service, telemetry, stop).await;
    server_stop.cancel();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "celeriac stopped with an error.");
            ExitCode::FAILURE
        }
    }
}

fn telemetry_page(t: &Telemetry, path: &str) -> telemetry::Reply {
    use hyper::StatusCode;
    match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            t.render().into(),
        ),
        "/healthz" if t.healthy() => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/healthz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
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
