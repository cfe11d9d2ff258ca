//! What the receivers' unit tests share: a real redis-server on a free port, and a receiver
//! running on the test's runtime into a channel.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::component::{Context, Output, Receiver};
use crate::signal::{Batch, SignalKind};
use crate::telemetry::{Counter, Telemetry};

pub(crate) struct RedisServer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_available() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) async fn start_redis(port: u16) -> RedisServer {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    RedisServer { child, _dir: dir }
}

/// A free local port, and a redis-server started on it.
pub(crate) async fn redis_on_free_port() -> (u16, RedisServer) {
    assert!(
        redis_server_available(),
        "redis-server is not on PATH (scripts/test installs Debian's redis-server)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (port, start_redis(port).await)
}

/// A receiver running on this runtime into a channel of 64 batches of `kind`.
pub(crate) struct Running {
    pub rx: async_channel::Receiver<Batch>,
    pub telemetry: Telemetry,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), crate::component::ComponentError>>,
}

pub(crate) fn run_receiver(receiver: Box<dyn Receiver>, id: &str, kind: SignalKind) -> Running {
    let (tx, rx) = async_channel::bounded(64);
    let ctx = Context {
        id: id.into(),
        shutdown: CancellationToken::new(),
        telemetry: Telemetry::new(),
        ready: Default::default(),
    };
    let telemetry = ctx.telemetry.clone();
    let shutdown = ctx.shutdown.clone();
    let out = Output::new(
        vec![(kind, vec![tx])],
        Counter::default(),
        Counter::default(),
    );
    let task = tokio::spawn(receiver.run(ctx, out));
    Running {
        rx,
        telemetry,
        shutdown,
        task,
    }
}
