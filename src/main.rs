//! The `celeriac` command line: `run`, `validate`, `components` and `reload`; like `otelcol`,
//! `celeriac --config=URI [--config=URI…] [--set k=v]` with no subcommand runs.

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
    about = "Telemetry pipeline agent for Celery",
    long_about = "Telemetry pipeline agent for Celery. Like `otelcol`, `celeriac --config=FILE` \
                  with no subcommand runs the pipelines of FILE.",
    args_conflicts_with_subcommands = false
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the config comes from, as `otelcol` takes it.
#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// A config file or URI (`file:PATH`, `env:VAR`, `yaml:a::b: value`); repeat to merge
    /// several, later ones win (the OpenTelemetry Collector's merge rules).
    #[arg(short, long = "config", value_name = "URI")]
    config: Vec<String>,
    /// Override one setting: `--set processors.batch.timeout=2s` (applied after every --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The collector's feature gates (`gate,-gate,+gate`): celeriac has none; unknown gates
    /// are listed and ignored.
    #[arg(long = "feature-gates", value_name = "GATES")]
    feature_gates: Vec<String>,
}

impl ConfigArgs {
    fn merged(mut self, other: ConfigArgs) -> ConfigArgs {
        self.config.extend(other.config);
        self.set.extend(other.set);
        self.feature_gates.extend(other.feature_gates);
        self
    }

    /// The URIs to load, `--set`s last; `None` means the built-in default pipeline.
    fn uris(&self) -> Result<Option<Vec<String>>, String> {
        let gates: Vec<&str> = self
            .feature_gates
            .iter()
            .flat_map(|g| g.split(','))
            .map(|g| g.trim().trim_start_matches(['+', '-']))
            .filter(|g| !g.is_empty())
            .collect();
        if !gates.is_empty() {
            eprintln!(
                "warning: celeriac has no feature gates; ignoring unknown gate(s): {}",
                gates.join(", ")
            );
        }
        if self.config.is_empty() {
            if !self.set.is_empty() {
                return Err("--set needs a --config to apply to".into());
            }
            return Ok(None);
        }
        let mut uris = self.config.clone();
        for s in &self.set {
            uris.push(config::set_to_uri(s)?);
        }
        Ok(Some(uris))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of a config (the built-in default pipeline without --config).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check a config and report every problem; exit 0 when valid, 1 when not.
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
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

fn load(uris: Option<&[String]>) -> (Option<(Config, Graph)>, Diagnostics) {
    let (cfg, mut d) = match uris {
        Some(u) => config::load_uris_partial(u),
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
    let top = cli.config;
    let (command, args) = match cli.command {
        // Like otelcol, the bare command needs a --config; `run` alone runs the built-in pipeline.
        None if top.config.is_empty() => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            eprintln!("\nerror: give --config=FILE (as for otelcol), or a subcommand");
            return ExitCode::from(2);
        }
        None => ("run", top),
        Some(Command::Run { config }) => ("run", top.merged(config)),
        Some(Command::Validate { config }) => ("validate", top.merged(config)),
        Some(Command::Components) => {
            print!("{}", celeriac::registry::catalog());
            return ExitCode::SUCCESS;
        }
        Some(Command::Reload {
            endpoint,
            bearer_token_file,
        }) => {
            return match reload::request_with_token_file(&endpoint, bearer_token_file.as_deref()) {
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
            };
        }
    };
    let uris = match args.uris() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (built, d) = load(uris.as_deref());
    eprint!("{}", d.render());
    if command == "validate" {
        return if built.is_some() {
            let name = uris
                .as_ref()
                .map_or("built-in default pipeline".to_string(), |u| u.join(" + "));
            println!("{name}: valid");
            ExitCode::SUCCESS
        } else {
            eprintln!("{} error(s)", d.errors());
            ExitCode::FAILURE
        };
    }
    let Some((cfg, graph)) = built else {
        eprintln!("{} error(s); not starting", d.errors());
        return ExitCode::FAILURE;
    };
    telemetry::init_logging(
        &cfg.service.telemetry.log_level,
        cfg.service.telemetry.log_encoding == config::LogEncoding::Json,
    );
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
    rt.block_on(run(cfg, graph, uris))
}

async fn run(cfg: Config, graph: Graph, uris: Option<Vec<String>>) -> ExitCode {
    let telemetry = Telemetry::new();
    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();
    // Reload requests (SIGHUP, POST /-/reload); one pending request is enough.
    let (request_tx, request_rx) = tokio::sync::mpsc::channel::<()>(1);

    // Register SIGTERM/SIGINT before anything starts, so a signal sent the moment the
    // process is up is never lost (and a registration failure stops the start, loudly).
    let signals = match Signals::register() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot install the SIGTERM/SIGINT handlers.");
            return ExitCode::FAILURE;
        }
    };

    if let Some(addr) = cfg.service.telemetry.endpoint {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "Cannot bind the telemetry endpoint (service.telemetry.endpoint).");
                return ExitCode::FAILURE;
            }
        };
        let t = telemetry.clone();
        let target_info = target_info(&cfg.service.telemetry.resource);
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
            move |method, path| telemetry_page(&t, &target_info, &requests, method, path),
            server_stop.clone(),
        ));
        tracing::info!(%addr, "Serving /metrics, /healthz and POST /-/reload.");
    }

    let stop2 = stop.clone();
    tokio::spawn(async move {
        signals.recv().await;
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
        Box::new(move || load(uris.as_deref())),
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

/// `service.telemetry.resource` as the collector's Prometheus reader shows it: one
/// `target_info` series whose labels are the resource attributes.
fn target_info(resource: &std::collections::BTreeMap<String, String>) -> String {
    if resource.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = resource
        .iter()
        .map(|(k, v)| {
            let name: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let value = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!(
        "# HELP target_info Target metadata (service.telemetry.resource).\n# TYPE target_info gauge\ntarget_info{{{}}} 1\n",
        labels.join(",")
    )
}

fn telemetry_page(
    t: &Telemetry,
    target_info: &str,
    reloads: &tokio::sync::mpsc::Sender<()>,
    method: &hyper::Method,
    path: &str,
) -> telemetry::Reply {
    use hyper::{Method, StatusCode};
    match (method, path) {
        (_, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            format!("{}{target_info}", t.render()).into(),
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

/// The stop signals, registered up front: SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
