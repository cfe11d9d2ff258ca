//! Harness for celeriac's end-to-end tests: a real `redis-server`, a real Celery 5 worker
//! (tests/python/shopapp.py), the test client (tests/python/client.py), the celeriac binary
//! (started with a config from [`AgentConfig`], `config.rs`, and waited for with
//! [`Agent::start_ready`]), the task counts a test compares, and small std-only HTTP /
//! Prometheus-text helpers. `pki.rs` makes TLS material, `spans.rs` reads what the OTLP sink
//! recorded, `rabbitmq.rs` makes RabbitMQ vhosts.
//!
//! Use from an integration test with `mod support;`. Run the tests through `scripts/test`:
//! it installs redis-server/prometheus and the Python venv, and sets `CELERIAC_TEST_PYTHON`.
//!
//! Every process is started in its own process group and killed (with its children) on Drop,
//! so a failing test leaves nothing running.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod config;
pub mod pki;
pub mod rabbitmq;
pub mod spans;

#[allow(unused_imports)]
pub use config::AgentConfig;

// ---------------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------------

/// A TCP port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits for a freshly spawned server `child` (named `what` in errors) until `ready()`, polling
/// every `poll`: the child once ready; an error with the tail of its `log` if it exits first or
/// is not ready within `timeout` (then it is killed).
fn await_ready(
    mut child: Child,
    what: &str,
    log: &Path,
    timeout: Duration,
    poll: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Child, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited with {status}; log:\n{}",
                tail(&read_lossy(log), 20)
            ));
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            return Err(format!(
                "{what} was not ready within {timeout:?}; log:\n{}",
                tail(&read_lossy(log), 20)
            ));
        }
        sleep(poll);
    }
}

/// Polls `f` every 50 ms until it returns true (→ true) or `timeout` passes (→ false).
pub fn wait_until<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(done) = poll_once(deadline, &mut f) {
            return done;
        }
        sleep(Duration::from_millis(50));
    }
}

/// One round of a polling wait: `Some(true)` once `f` holds, `Some(false)` once `deadline` has
/// passed, `None` to sleep and ask again (the loop of [`wait_until`], shared with async waits).
pub fn poll_once(deadline: Instant, f: &mut impl FnMut() -> bool) -> Option<bool> {
    if f() {
        return Some(true);
    }
    if Instant::now() >= deadline {
        return Some(false);
    }
    None
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tests/python, the Celery app and client.
pub fn python_dir() -> PathBuf {
    repo_root().join("tests").join("python")
}

/// The venv Python that scripts/test prepared (`CELERIAC_TEST_PYTHON`).
pub fn python() -> PathBuf {
    match std::env::var_os("CELERIAC_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "CELERIAC_TEST_PYTHON is not set: run the tests through scripts/test \
             (it installs the Python venv with Celery and sets it)"
        ),
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Sends `sig` (e.g. "TERM", "KILL") to `pid`, or to the whole process group when `group`.
fn send_signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .args(["-s", sig, "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` to exit, up to `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGKILLs the child's process group (it was spawned as a group leader) and reaps it.
pub fn kill_group(child: &mut Child) {
    send_signal(child.id(), "KILL", true);
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_or_explain(cmd: &mut Command, what: &str) -> Child {
    match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{what} not found ({:?}): run the tests through scripts/test, which installs it",
            cmd.get_program()
        ),
        Err(e) => panic!("could not start {what} ({:?}): {e}", cmd.get_program()),
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A reply of [`RedisServer::cmd`] (minimal RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_string(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Options for [`RedisServer`]; `RedisServer::builder().pubsub_unlimited().start()`.
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    port: Option<u16>,
    args: Vec<String>,
}

impl RedisBuilder {
    /// `--client-output-buffer-limit "pubsub 0 0 0"`: a slow subscriber falls behind instead of
    /// being disconnected (as in the performance measurements).
    pub fn pubsub_unlimited(self) -> Self {
        self.arg("--client-output-buffer-limit").arg("pubsub 0 0 0")
    }
    /// Any extra redis-server argument (each call adds one argv element).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    /// A fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-redis-")
            .tempdir()
            .expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port: self.port.unwrap_or(0),
            args: self.args,
            dir,
        };
        // A port picked by free_port() can be taken by someone else before redis binds it: retry.
        let tries = if self.port.is_some() { 1 } else { 5 };
        for attempt in 1..=tries {
            if self.port.is_none() {
                server.port = free_port();
            }
            match server.spawn() {
                Ok(()) => return server,
                Err(e) if attempt < tries => eprintln!("redis-server start failed, retrying: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }
}

/// A private `redis-server` on 127.0.0.1 (no persistence, data dir in a tempdir), killed on Drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no` on a free port.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }
    /// Same with `--client-output-buffer-limit "pubsub 0 0 0"`.
    pub fn start_pubsub_unlimited() -> RedisServer {
        RedisServer::builder().pubsub_unlimited().start()
    }
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        self.url_db(0)
    }
    pub fn url_db(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL (abrupt: clients see the connection drop). No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Starts it again on the same port (killing it first if it still runs). Data is gone.
    pub fn restart(&mut self) {
        self.kill();
        // Sockets of the old process can linger for a moment; retry the bind for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("redis-server restart failed, retrying: {e}");
                    sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let _ = fs::remove_file(&log);
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = spawn_or_explain(&mut cmd, "redis-server");
        let port = self.port;
        let child = await_ready(
            child,
            &format!("redis-server on port {port}"),
            &log,
            Duration::from_secs(10),
            Duration::from_millis(20),
            || ping(port),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// Runs one command over a fresh connection, e.g. `cmd(&["LLEN", "celery"])`.
    /// Panics on I/O errors (use it while the server runs).
    pub fn cmd(&self, args: &[&str]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).expect("write to redis");
        let mut r = std::io::BufReader::new(s);
        read_resp(&mut r).expect("read redis reply")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raw `PING\r\n` → `+PONG` on 127.0.0.1:port.
fn ping(port: u16) -> bool {
    let addr = ("127.0.0.1", port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    let Some(addr) = addr else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 7 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"+PONG")
}

fn read_resp(r: &mut impl std::io::BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad RESP: {line:?}"),
        )
    };
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(Resp::Simple(rest.to_string())),
        "-" => Ok(Resp::Error(rest.to_string())),
        ":" => rest.parse().map(Resp::Int).map_err(|_| bad()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Resp::Bulk(Some(buf)))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            (0..n)
                .map(|_| read_resp(r))
                .collect::<Result<_, _>>()
                .map(|v| Resp::Array(Some(v)))
        }
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------------
// Celery worker and client
// ---------------------------------------------------------------------------------------------

/// Options for [`CeleryWorker::start`]. `WorkerOpts::default()` is the fixtures' worker:
/// `-n w1@host1 --concurrency 2 --pool prefork -Q celery`, default heartbeat (2 s).
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// `-n`
    pub hostname: String,
    /// `-Q` (joined with commas)
    pub queues: Vec<String>,
    pub concurrency: u32,
    /// `--heartbeat-interval` in whole seconds (Celery's option is an integer).
    pub heartbeat_interval: Option<u32>,
    /// Sets `CELERY_RESULT_BACKEND` (e.g. a redis URL on db 1).
    pub result_backend: Option<String>,
    /// Sets `CELERIAC_OTEL=1`: the pool children instrument Celery with OpenTelemetry and
    /// export over OTLP; pass `OTEL_EXPORTER_OTLP_ENDPOINT` etc. in `env`.
    pub otel: bool,
    /// Extra environment, e.g. `("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")`,
    /// `("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")`, `("TZ", "Asia/Kolkata")`.
    pub env: Vec<(String, String)>,
    /// Extra worker arguments, e.g. `--without-mingle`.
    pub extra_args: Vec<String>,
}

impl Default for WorkerOpts {
    fn default() -> Self {
        WorkerOpts {
            hostname: "w1@host1".into(),
            queues: vec!["celery".into()],
            concurrency: 2,
            heartbeat_interval: None,
            result_backend: None,
            otel: false,
            env: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

impl WorkerOpts {
    pub fn heartbeat(mut self, seconds: u32) -> Self {
        self.heartbeat_interval = Some(seconds);
        self
    }
    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = queues.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.into();
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn otel(mut self, endpoint: &str, protocol: &str) -> Self {
        self.otel = true;
        self.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    }
}

fn celery_env(cmd: &mut Command, broker_url: &str) {
    let pythonpath = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut v = python_dir().into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => python_dir().into_os_string(),
    };
    cmd.current_dir(repo_root())
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONUNBUFFERED", "1")
        .env("CELERY_BROKER_URL", broker_url)
        .env_remove("CELERY_RESULT_BACKEND")
        .env_remove("CELERIAC_OTEL");
}

/// A real `celery -A shopapp worker` (prefork) in its own process group. Its stdout+stderr go
/// to a log file. SIGKILLed (with its pool children) on Drop if still running.
pub struct CeleryWorker {
    child: Option<Child>,
    dir: TempDir,
    log: PathBuf,
    status: Option<ExitStatus>,
    pub opts: WorkerOpts,
}

impl CeleryWorker {
    pub fn start(broker_url: &str, opts: WorkerOpts) -> CeleryWorker {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-worker-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("worker.log");
        let out = File::create(&log).expect("worker log");
        let mut cmd = Command::new(python());
        cmd.args(["-m", "celery", "-A", "shopapp", "worker", "-E", "-n"])
            .arg(&opts.hostname)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args([
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "-Q",
                &opts.queues.join(","),
            ]);
        if let Some(hb) = opts.heartbeat_interval {
            cmd.args(["--heartbeat-interval", &hb.to_string()]);
        }
        cmd.args(&opts.extra_args);
        celery_env(&mut cmd, broker_url);
        if let Some(backend) = &opts.result_backend {
            cmd.env("CELERY_RESULT_BACKEND", backend);
        }
        if opts.otel {
            cmd.env("CELERIAC_OTEL", "1");
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0);
        let child = spawn_or_explain(&mut cmd, "python (CELERIAC_TEST_PYTHON)");
        CeleryWorker {
            child: Some(child),
            dir,
            log,
            status: None,
            opts,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Everything the worker logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(st))) => {
                self.status = Some(st);
                false
            }
            _ => false,
        }
    }

    /// Waits until the log contains `needle`; false on timeout or if the worker exited.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log().contains(needle) || !self.is_running()
        }) && self.log().contains(needle)
    }

    /// Waits for Celery's "<hostname> ready." line (typically 3–8 s on this machine).
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let needle = format!("{} ready.", self.opts.hostname);
        self.wait_for_log(&needle, timeout)
    }

    /// Like `wait_ready` but panics with the log tail.
    pub fn assert_ready(&mut self, timeout: Duration) {
        if !self.wait_ready(timeout) {
            panic!(
                "celery worker not ready after {timeout:?} (running: {}); log:\n{}",
                self.is_running(),
                tail(&self.log(), 40)
            );
        }
    }

    /// Warm shutdown: SIGTERM to the main process, wait up to 30 s (then SIGKILL the group).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_timeout(Duration::from_secs(30))
    }

    pub fn stop_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        send_signal(child.id(), "TERM", false);
        let status = wait_child(&mut child, timeout);
        // Mop up pool children that might outlive the main process.
        send_signal(child.id(), "KILL", true);
        let status = status.or_else(|| {
            let _ = child.kill();
            child.wait().ok()
        });
        self.status = status;
        status
    }

    /// SIGKILL the whole group (worker lost without warm shutdown: no worker-offline event).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
            self.status = child.try_wait().ok().flatten();
        }
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `python tests/python/client.py ARGS...` against `broker_url` and returns the JSON line it
/// prints (see the docstring of client.py for the actions and the exact output). Panics with the
/// client's stderr if it fails or runs longer than 120 s.
pub fn run_client(broker_url: &str, script_args: &[&str]) -> serde_json::Value {
    run_client_env(broker_url, script_args, &[])
}

/// The task ids a client action printed (its `ids` list).
pub fn client_ids(v: &serde_json::Value) -> Vec<String> {
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("id").to_string())
        .collect()
}

/// `run_client` with extra environment (e.g. `CELERIAC_OTEL=1`, `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn run_client_env(
    broker_url: &str,
    script_args: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let dir = tempfile::Builder::new()
        .prefix("celeriac-client-")
        .tempdir()
        .expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(python());
    cmd.arg(python_dir().join("client.py")).args(script_args);
    celery_env(&mut cmd, broker_url);
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .process_group(0);
    let mut child = spawn_or_explain(&mut cmd, "python (CELERIAC_TEST_PYTHON)");
    let status = wait_child(&mut child, Duration::from_secs(120));
    if status.is_none() {
        kill_group(&mut child);
    }
    let (stdout, stderr) = (read_lossy(&out_path), read_lossy(&err_path));
    match status {
        Some(st) if st.success() => {}
        _ => panic!(
            "client.py {script_args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "timed out after 120 s".into()),
            tail(&stderr, 40)
        ),
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "client.py {script_args:?} printed no JSON ({e}):\n{stdout}\nstderr:\n{}",
            tail(&stderr, 20)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// task counts: what celeriac scraped, what the client expected
// ---------------------------------------------------------------------------------------------

/// The task events celeriac counts as `celery_task_<event>_total`.
pub const EVENTS: [&str; 7] = [
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
];

/// `{event: {task name: count}}` from celeriac's scrape.
pub fn scraped_counts(samples: &[Sample]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ev in EVENTS {
        let name = format!("celery_task_{ev}_total");
        for (n, labels, v) in samples {
            if *n == name && *v > 0.0 {
                *out.entry(ev.to_string())
                    .or_default()
                    .entry(labels["name"].clone())
                    .or_default() += *v as u64;
            }
        }
    }
    out
}

/// `{event: {task name: count}}` the test client expected (`v["expected"]`), zeros left out.
pub fn expected_counts(v: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (ev, per) in v["expected"].as_object().expect("expected") {
        for (name, n) in per.as_object().expect("per name") {
            let n = n.as_u64().expect("count");
            if n > 0 {
                out.entry(ev.clone()).or_default().insert(name.clone(), n);
            }
        }
    }
    out
}

/// The `logs` exporter's `event` for each task event: `(log event, task event)`.
pub const LOG_EVENTS: [(&str, &str); 7] = [
    ("task.sent", "sent"),
    ("task.received", "received"),
    ("task.started", "started"),
    ("task.completed", "succeeded"),
    ("task.failed", "failed"),
    ("task.retried", "retried"),
    ("task.revoked", "revoked"),
];

/// How many lines of the `logs` exporter's file at `path` carry each `event`.
pub fn log_events(path: &Path) -> BTreeMap<String, u64> {
    let text = fs::read_to_string(path).unwrap();
    let mut per_event: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        *per_event
            .entry(v["event"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    per_event
}

/// What `run_mix` leaves in the metrics beyond the counts: its two failures carry the exception
/// class, the queue wait is observed at each of its 12 starts, and `host1` missed no event.
pub fn assert_mix_details(samples: &[Sample]) {
    assert_eq!(
        metric_value(
            samples,
            "celery_task_failed_total",
            &[("name", "shop.send_receipt"), ("exception", "ValueError")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(samples, "celery_task_queue_wait_time_count", &[]),
        Some(12.0)
    );
    assert_eq!(
        metric_value(
            samples,
            "celeriac_celery_events_missed_total",
            &[("hostname", "host1")]
        ),
        Some(0.0)
    );
}

/// One line in the `logs` exporter's file at `path` per task event of `want` (the counts
/// [`assert_mix_counted`] returns), for each of [`LOG_EVENTS`].
pub fn assert_logged_per_event(path: &Path, want: &BTreeMap<String, BTreeMap<String, u64>>) {
    let per_event = log_events(path);
    let total_of = |ev: &str| want.get(ev).map_or(0, |m| m.values().sum::<u64>());
    for (log, ev) in LOG_EVENTS {
        assert_eq!(
            per_event.get(log).copied().unwrap_or(0),
            total_of(ev),
            "{log}: {per_event:?}"
        );
    }
}

/// Waits up to `timeout` for `celery_worker_up{hostname}` on the Prometheus endpoint at
/// `prom_addr` to read `want`.
pub fn worker_up_is(prom_addr: &str, hostname: &str, want: f64, timeout: Duration) -> bool {
    wait_until(timeout, || {
        scrape(prom_addr)
            .and_then(|s| metric_value(&s, "celery_worker_up", &[("hostname", hostname)]))
            == Some(want)
    })
}

/// Runs the test client's `run_mix` on `broker_url` (asserting it saw the events it expected),
/// then waits until celeriac's scrape at `prom_addr` counts exactly what the client expected, per
/// event and task name; panics with `agent`'s output otherwise. The expected counts.
pub fn assert_mix_counted(
    broker_url: &str,
    prom_addr: &str,
    agent: &Agent,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mix = run_client(broker_url, &["run_mix"]);
    assert_eq!(
        mix["match"],
        serde_json::Value::Bool(true),
        "the client saw the events it expected: {mix}"
    );
    let want = expected_counts(&mix);
    let mut last = BTreeMap::new();
    let converged = wait_until(Duration::from_secs(15), || {
        last = scrape(prom_addr)
            .map(|s| scraped_counts(&s))
            .unwrap_or_default();
        last == want
    });
    assert!(
        converged,
        "counters\n got {last:?}\nwant {want:?}\n{}",
        agent.output()
    );
    want
}

// ---------------------------------------------------------------------------------------------
// OTLP sender (tests/python/otlp_send.py: the OpenTelemetry Python SDK's exporters)
// ---------------------------------------------------------------------------------------------

/// `python otlp_send.py <args>`, for the caller to add options to before [`otlp_send`].
pub fn otlp_send_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(python_dir().join("otlp_send.py")).args(args);
    cmd
}

/// Runs an [`otlp_send_command`]; panics unless it succeeds. Its last stdout line, as JSON.
pub fn otlp_send(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "otlp_send.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON line")
}

// ---------------------------------------------------------------------------------------------
// OTLP/gRPC sink (tests/python/otlp_sink.py: grpcio + PyPI opentelemetry-proto)
// ---------------------------------------------------------------------------------------------

/// A Python OTLP/gRPC receiver on 127.0.0.1 that appends every accepted Export request as a JSON
/// line to a file (see the docstring of otlp_sink.py). Killed on Drop.
pub struct OtlpSink {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    fail_first: u32,
    extra_args: Vec<String>,
}

impl OtlpSink {
    /// On a free port; `fail_first` calls are answered UNAVAILABLE.
    pub fn start(fail_first: u32) -> OtlpSink {
        OtlpSink::start_with_args(fail_first, &[])
    }

    /// With extra otlp_sink.py arguments (e.g. `["--delay-ms", "100"]`), kept on restart.
    pub fn start_with_args(fail_first: u32, args: &[&str]) -> OtlpSink {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-otlp-sink-")
            .tempdir()
            .expect("tempdir");
        let mut sink = OtlpSink {
            child: None,
            port: free_port(),
            dir,
            fail_first,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
        };
        sink.spawn();
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn out_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// Every request received so far: `{"signal", "request", "metadata", "compression"}`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        read_lossy(&self.out_path())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGKILL: clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Starts again on the same port, appending to the same file (no failures this time).
    pub fn restart(&mut self) {
        self.kill();
        self.fail_first = 0;
        self.spawn();
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.dir.path().join("sink.log");
            let mut cmd = Command::new(python());
            cmd.arg(python_dir().join("otlp_sink.py"))
                .arg("--port")
                .arg(self.port.to_string())
                .arg("--out")
                .arg(self.out_path())
                .arg("--fail-first")
                .arg(self.fail_first.to_string())
                .args(&self.extra_args)
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(File::create(&log).unwrap())
                .stderr(File::create(self.dir.path().join("sink.err")).unwrap())
                .process_group(0);
            let mut child = spawn_or_explain(&mut cmd, "python (CELERIAC_TEST_PYTHON)");
            let up = wait_until(Duration::from_secs(15), || {
                read_lossy(&log).contains("listening on") || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return;
            }
            kill_group(&mut child);
            let err = read_lossy(&self.dir.path().join("sink.err"));
            if Instant::now() >= deadline {
                panic!(
                    "otlp_sink.py did not start on port {}:\n{}",
                    self.port,
                    tail(&err, 20)
                );
            }
            eprintln!("otlp_sink.py start failed, retrying: {}", tail(&err, 3));
            sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// the celeriac binary
// ---------------------------------------------------------------------------------------------

/// The celeriac binary running `run -c <dir>/config.yaml`, stdout/stderr in files in the same
/// tempdir. SIGKILLed on Drop if still running.
pub struct Agent {
    child: Option<Child>,
    dir: TempDir,
    status: Option<ExitStatus>,
}

/// The celeriac binary Cargo built for the calling test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

/// `celeriac_celery_redis_connected` on the agent's telemetry at `telemetry_addr`.
pub fn redis_connected_value(telemetry_addr: &str) -> Option<f64> {
    scrape(telemetry_addr).and_then(|s| metric_value(&s, "celeriac_celery_redis_connected", &[]))
}

/// Whether the agent whose telemetry listens on `telemetry_addr` reports `celery_redis` connected.
pub fn redis_connected(telemetry_addr: &str) -> bool {
    redis_connected_value(telemetry_addr) == Some(1.0)
}

impl Agent {
    /// `bin` is the binary to run, [`bin`] for the one Cargo built.
    pub fn start(bin: &Path, config_yaml: &str) -> Agent {
        Agent::start_with(bin, config_yaml, &[], &[])
    }

    /// [`bin`] with `config_yaml`, then waits until `ready` holds (panics with `what` and the
    /// agent's output after `timeout`).
    pub fn start_ready(
        config_yaml: &str,
        timeout: Duration,
        what: &str,
        ready: impl FnMut() -> bool,
    ) -> Agent {
        let agent = Agent::start(bin(), config_yaml);
        agent.assert_ready(timeout, what, ready);
        agent
    }

    /// SIGTERM, then panics with the agent's output unless it exits successfully within `timeout`.
    pub fn stop_ok(&mut self, timeout: Duration) {
        self.terminate();
        let status = self.wait_exit(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "exit {status:?}\n{}",
            self.output()
        );
    }

    /// Panics with `what` and the agent's output unless `ready` holds within `timeout`.
    pub fn assert_ready(&self, timeout: Duration, what: &str, ready: impl FnMut() -> bool) {
        assert!(wait_until(timeout, ready), "{what}\n{}", self.output());
    }

    /// With extra CLI arguments (after `run -c FILE`) and environment.
    pub fn start_with(
        bin: &Path,
        config_yaml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-agent-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("config.yaml");
        fs::write(&config, config_yaml).expect("write config");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .args(extra_args)
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).unwrap())
            .stderr(File::create(dir.path().join("stderr")).unwrap())
            .process_group(0);
        let child = spawn_or_explain(&mut cmd, "celeriac");
        Agent {
            child: Some(child),
            dir,
            status: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout"))
    }
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr"))
    }
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
    /// SIGTERM (graceful shutdown); see `wait_exit`.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            send_signal(c.id(), "TERM", false);
        }
    }
    /// SIGINT.
    pub fn interrupt(&self) {
        if let Some(c) = &self.child {
            send_signal(c.id(), "INT", false);
        }
    }
    /// Waits up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.as_mut().and_then(|c| wait_child(c, timeout));
        }
        self.status
    }
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                kill_group(&mut c);
                self.status = c.try_wait().ok().flatten();
            }
        }
    }
    /// A diagnostic dump for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- celeriac stdout (tail) ---\n{}\n--- celeriac stderr (tail) ---\n{}",
            tail(&self.stdout(), 40),
            tail(&self.stderr(), 60)
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A response of [`http_request`]; header names are lower-cased.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr` ("127.0.0.1:9540"); (status, body) or None if it could not connect or
/// the response was not HTTP.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, &[], &[]).map(|r| (r.status, r.text()))
}

/// `POST path` with a body and content type.
/// Whether `GET path` on `addr` answers 200.
pub fn http_ok(addr: &str, path: &str) -> bool {
    http_get(addr, path).is_some_and(|(s, _)| s == 200)
}

pub fn http_post(addr: &str, path: &str, content_type: &str, body: &[u8]) -> Option<HttpResponse> {
    http_request(addr, "POST", path, &[("Content-Type", content_type)], body)
}

/// One HTTP/1.1 request with `Connection: close` (5 s connect, 10 s read timeouts). Handles
/// Content-Length, chunked and read-to-close bodies.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: celeriac-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw); // a timeout after a complete response is fine
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body =
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest.get(..len)?.to_vec()
        } else {
            rest.to_vec()
        };
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

/// One sample: (metric name, labels, value).
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text exposition format (0.0.4; OpenMetrics' `# EOF` is ignored too):
/// comments and blank lines are skipped, label values are unescaped, timestamps ignored.
/// Panics on a malformed sample line, quoting it.
pub fn parse_prometheus_text(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            parse_sample(l).unwrap_or_else(|| panic!("malformed Prometheus sample line: {l:?}"))
        })
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            // skip separators
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let &(start, c) = chars.peek()?;
            if c == '}' {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find('=')? + start;
            let key = r[start..eq].trim().to_string();
            while chars.peek()?.0 <= eq {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    ch => value.push(ch),
                }
            }
            labels.insert(key, value);
        }
    }
    let value_str = rest.split_whitespace().next()?;
    let value = match value_str {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, value))
}

/// Sum of the samples named `name` whose labels include all of `labels` (other labels are
/// ignored); None if no sample matches.
pub fn metric_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for (n, l, v) in samples {
        if n == name
            && labels
                .iter()
                .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want))
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `celeriac_celery_events_dropped_total{reason}` in `samples`, 0 when the series is not there yet.
pub fn events_dropped(samples: &[Sample], reason: &str) -> f64 {
    metric_value(
        samples,
        "celeriac_celery_events_dropped_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Polls `get(path)` for `/api/task/result/{id}` (the dashboard's and Flower's answer) until the
/// task's state is SUCCESS or FAILURE; panics with the last answer after `timeout`.
pub fn wait_task_result(
    timeout: Duration,
    id: &str,
    mut get: impl FnMut(&str) -> serde_json::Value,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = wait_until(timeout, || {
        last = get(&format!("/api/task/result/{id}"));
        last["state"] == "SUCCESS" || last["state"] == "FAILURE"
    });
    assert!(done, "task {id} never finished: {last}");
    last
}

/// A worker's pool size and its sorted queue names, from its `/api/workers` entry (the
/// dashboard's and Flower's shape).
pub fn worker_pool_and_queues(worker: &serde_json::Value) -> (usize, Vec<String>) {
    let procs = worker["stats"]["pool"]["processes"]
        .as_array()
        .map_or(0, Vec::len);
    let mut queues: Vec<String> = worker["active_queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .collect();
    queues.sort();
    (procs, queues)
}

/// Waits up to 10 s for the agent's telemetry at `tel_addr` to satisfy `ok`, and returns the
/// samples; panics with its `celeriac_celery*` series and the agent's output otherwise.
pub fn await_celery_telemetry(
    agent: &Agent,
    tel_addr: &str,
    mut ok: impl FnMut(&[Sample]) -> bool,
) -> Vec<Sample> {
    let mut t = Vec::new();
    let done = wait_until(Duration::from_secs(10), || {
        t = scrape(tel_addr).unwrap_or_default();
        ok(&t)
    });
    assert!(
        done,
        "telemetry:\n{:?}\n{}",
        t.iter()
            .filter(|s| s.0.starts_with("celeriac_celery"))
            .collect::<Vec<_>>(),
        agent.output()
    );
    t
}

/// GET `http://addr/metrics` and parse it; None if the endpoint did not answer 200.
pub fn scrape(addr: &str) -> Option<Vec<Sample>> {
    match http_get(addr, "/metrics")? {
        (200, body) => Some(parse_prometheus_text(&body)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------

/// A private Debian `prometheus` (from PATH, else /usr/bin/prometheus) on a free loopback port
/// with the remote-write receiver on, an empty scrape config and its TSDB in a tempdir. Killed
/// on Drop.
pub struct PrometheusServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// (CA, client certificate, client key) when it serves HTTPS and requires client certificates.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

fn prometheus_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

impl PrometheusServer {
    pub fn start() -> PrometheusServer {
        Self::start_with(None, "global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    }

    /// With this `prometheus.yml` (scrape jobs of its own).
    pub fn start_with_config(prometheus_yml: &str) -> PrometheusServer {
        Self::start_with(None, prometheus_yml)
    }

    /// Serves HTTPS with `pki`'s server certificate and requires a client certificate signed by
    /// `pki`'s CA (mutual TLS, Prometheus' `--web.config.file`).
    pub fn start_tls(pki: &pki::Pki) -> PrometheusServer {
        Self::start_with(
            Some(pki),
            "global:\n  scrape_interval: 1m\nscrape_configs: []\n",
        )
    }

    fn start_with(pki: Option<&pki::Pki>, prometheus_yml: &str) -> PrometheusServer {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-prometheus-")
            .tempdir()
            .expect("tempdir");
        fs::write(dir.path().join("prometheus.yml"), prometheus_yml).expect("write prometheus.yml");
        let tls = pki.map(|p| {
            fs::write(
                dir.path().join("web.yml"),
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
                     client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
                    p.server_cert().display(),
                    p.server_key().display(),
                    p.ca().display()
                ),
            )
            .expect("write web.yml");
            (p.ca(), p.client_cert(), p.client_key())
        });
        let mut server = PrometheusServer {
            child: None,
            port: 0,
            dir,
            tls,
        };
        // A free port can be taken before prometheus binds it: retry with another.
        for attempt in 1..=3 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) if attempt < 3 => eprintln!("prometheus start failed, retrying: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let out = File::create(&log).expect("prometheus log");
        let tsdb = self.dir.path().join(format!("data-{}", self.port));
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg("--config.file")
            .arg(self.dir.path().join("prometheus.yml"))
            .arg("--storage.tsdb.path")
            .arg(&tsdb)
            .arg("--web.listen-address")
            .arg(self.addr())
            .arg("--web.enable-remote-write-receiver")
            .current_dir(self.dir.path())
            .args(if self.tls.is_some() {
                vec!["--web.config.file".to_string(), "web.yml".to_string()]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0);
        let child = spawn_or_explain(&mut cmd, "prometheus");
        let child = await_ready(
            child,
            &format!("prometheus on port {}", self.port),
            &log,
            Duration::from_secs(30),
            Duration::from_millis(50),
            || matches!(self.get("/-/ready"), Some((200, _))),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `http(s)://127.0.0.1:PORT/api/v1/write`
    pub fn write_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/api/v1/write", self.addr())
    }

    /// GET `path`: over plain HTTP, or with `curl` and the client certificate when TLS is on.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let Some((ca, cert, key)) = &self.tls else {
            return http_get(&self.addr(), path);
        };
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("https://{}{path}", self.addr()))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// An instant query through the HTTP API: `(labels incl. __name__, value)` per series of
    /// the resulting vector; None if Prometheus did not answer with a vector.
    pub fn query(&self, promql: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = self.get(&path)?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        if v["data"]["resultType"] != "vector" {
            return None;
        }
        v["data"]["result"]
            .as_array()?
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect::<Option<BTreeMap<_, _>>>()?;
                let value = match r["value"][1].as_str()? {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    s => s.parse().ok()?,
                };
                Some((labels, value))
            })
            .collect()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// Percent-encode everything but unreserved characters (for query strings).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The captured Celery traffic of tests/fixtures/celery-events-redis.jsonl as (channel,
/// envelope) pairs, event channels only (no pidbox): replayed with `PUBLISH`, 12 tasks succeed.
pub fn fixture_envelopes() -> Vec<(String, String)> {
    fs::read_to_string(repo_root().join("tests/fixtures/celery-events-redis.jsonl"))
        .expect("fixture")
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let ch = v["channel"].as_str()?.to_string();
            ch.contains("celeryev")
                .then(|| (ch, v["data"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// `PUBLISH`es every `(channel, payload)` pipelined over one fresh connection to the Redis on
/// `port`, then reads the replies: per message `Some(subscribers it reached)`, or `None` for
/// every message from the first that got no reply (connect or I/O failure, e.g. Redis killed).
pub fn publish_pipelined<C: AsRef<[u8]>, P: AsRef<[u8]>>(
    port: u16,
    messages: &[(C, P)],
) -> Vec<Option<u64>> {
    use std::io::BufRead;
    let mut replies = vec![None; messages.len()];
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return replies;
    };
    if s.set_read_timeout(Some(Duration::from_secs(30))).is_err() {
        return replies;
    }
    // Redis queues the (small) replies while we write, so writing everything first is safe.
    let mut buf = Vec::with_capacity(1 << 20);
    for (ch, data) in messages {
        buf.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        for a in [ch.as_ref(), data.as_ref()] {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        if buf.len() > 512 << 10 {
            if s.write_all(&buf).is_err() {
                return replies;
            }
            buf.clear();
        }
    }
    if s.write_all(&buf).is_err() {
        return replies;
    }
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    for reply in replies.iter_mut() {
        line.clear();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 && line.starts_with(':') => {
                *reply = Some(line[1..].trim().parse().unwrap_or(0));
            }
            _ => break,
        }
    }
    replies
}

/// `celeriac validate -c FILE` on `config_yaml`: whether it passed, and what it printed
/// (stderr, then stdout).
pub fn validate_config(bin: &Path, config_yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config_yaml).expect("the config written");
    let out = Command::new(bin)
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .expect("celeriac runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

/// `tests/corpus/<sub>`, the committed bad-input corpus.
pub fn corpus_dir(sub: &str) -> PathBuf {
    repo_root().join("tests/corpus").join(sub)
}

/// Every file of `tests/corpus/<sub>` as (name, bytes), by name.
pub fn corpus(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The OTLP/HTTP headers of an `otlp` corpus file: JSON or protobuf by its name, gzip for `.gz`.
pub fn corpus_headers(name: &str) -> Vec<(&'static str, &'static str)> {
    let ctype = if name.ends_with(".json") {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let mut headers = vec![("content-type", ctype)];
    if name.ends_with(".gz") {
        headers.push(("content-encoding", "gzip"));
    }
    headers
}
