//! The command line: `validate` verdicts and positions, `run` lifecycle on the default pipeline.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn validate(path: &Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .expect("run celeriac");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits up to 15 s for the agent's `/healthz` at `addr` to answer 200.
fn await_healthz(addr: &str) {
    let up = wait_until(Duration::from_secs(15), || {
        matches!(http_get(addr, "/healthz"), Some((200, _)))
    });
    assert!(up, "healthz never became ready");
}

/// SIGTERM to `child`, then its exit status; None if it has not exited within 10 s.
fn term_and_wait(child: &mut Child) -> Option<ExitStatus> {
    let t0 = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent `child` exited with `status`: success, and its stderr says the shutdown completed.
fn assert_shut_down_cleanly(child: &mut Child, status: ExitStatus) {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(err.contains("Shutdown complete."), "{err}");
}

#[test]
fn shipped_pipelines_are_valid() {
    for entry in std::fs::read_dir(repo_root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let (code, stdout, stderr) = validate(&path);
        assert_eq!(code, 0, "{}: {stdout}{stderr}", path.display());
        assert!(stdout.contains("valid"), "{stdout}");
    }
    // No -c: the built-in copy of pipelines/default.yaml.
    let out = Command::new(bin()).arg("validate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_mistake_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  celery_redis:\n    endpoint: redis://127.0.0.1:6379/0\n    timeout: 5s\nexporters:\n  logs:\n  prometheus:\n    endpoint: not-an-address\nservice:\n  pipelines:\n    logs:\n      receivers: [celery_redis]\n      exporters: [logs, otlp]\n",
    )
    .unwrap();
    let (code, _, stderr) = validate(&path);
    assert_eq!(code, 1, "{stderr}");
    let file = path.display().to_string();
    for want in [
        format!("{file}:4:5: error: receiver celery_redis: unknown field `timeout`"),
        format!("{file}:8:5: error: exporter prometheus:"),
        format!("{file}:13:25: error: pipeline `logs` uses exporter otlp which is not declared"),
        format!("{file}:12:19: error: receiver celery_redis cannot produce logs"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("warning: exporter prometheus is declared but no pipeline uses it")
            || stderr.contains("error"),
        "{stderr}"
    );
}

#[test]
fn invalid_yaml_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "receivers:\n  celery_redis: {endpoint: [\n").unwrap();
    let (code, _, stderr) = validate(&path);
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    let (code, _, stderr) = validate(&dir.path().join("missing.yaml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[test]
fn default_pipeline_runs_and_stops_on_sigterm() {
    let redis = RedisServer::start();
    // The default pipeline's ports are fixed (8888, 9540): wait for another process to let go.
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    assert!(
        wait_until(Duration::from_secs(120), || free(8888) && free(9540)),
        "ports 8888 and 9540 are busy"
    );
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .env("CELERIAC_REDIS_URL", redis.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn celeriac");
    await_healthz("127.0.0.1:8888");
    let (status, body) = http_get("127.0.0.1:8888", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("celeriac_celery_redis_connected"), "{body}");
    assert!(
        matches!(http_get("127.0.0.1:9540", "/metrics"), Some((200, _))),
        "prometheus exporter on 9540"
    );
    let status = term_and_wait(&mut child).expect("did not exit within the shutdown deadline");
    assert_shut_down_cleanly(&mut child, status);
}

/// A service manager (or a shell's `nohup`/`trap '' TERM`) may start the agent with SIGTERM and
/// SIGINT ignored. The agent installs its own handlers before it starts anything, so SIGTERM
/// still drains and exits cleanly.
#[test]
fn sigterm_stops_the_agent_even_when_started_with_it_ignored() {
    let tel = free_port();
    let otlp = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp: {{ protocols: {{ grpc: {{ endpoint: "127.0.0.1:{otlp}" }} }} }}
exporters:
  debug: {{}}
service:
  telemetry: {{ endpoint: "127.0.0.1:{tel}" }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [debug] }}
"#
        ),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("trap '' TERM INT; exec \"$0\" run -c \"$1\"")
        .arg(bin())
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let addr = format!("127.0.0.1:{tel}");
    await_healthz(&addr);
    let status = term_and_wait(&mut child).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("SIGTERM (inherited as ignored) did not stop the agent within 10 s");
    });
    assert_shut_down_cleanly(&mut child, status);
}
