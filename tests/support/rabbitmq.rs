//! RabbitMQ for the AMQP tests: the broker on 127.0.0.1:5672 (guest/guest, started by `scripts/test`)
//! and one vhost per test, made with `rabbitmqctl add_vhost` and deleted on Drop. There is no
//! skipping: when RabbitMQ or `rabbitmqctl` is missing the test fails and says why.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::{metric_value, python, python_dir, repo_root, scrape, wait_until, Agent};

pub const HOST: &str = "127.0.0.1:5672";

/// Runs `rabbitmqctl ARGS` and returns its stdout; panics with its output when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("rabbitmqctl {args:?}: {e} (install rabbitmq-server; scripts/test starts it)")
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost of this test's own, with full permissions for guest. Deleted on Drop.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn create(tag: &str) -> Vhost {
        if TcpStream::connect_timeout(&HOST.parse().unwrap(), Duration::from_secs(2)).is_err() {
            panic!(
                "RabbitMQ is not reachable on {HOST}: start rabbitmq-server (scripts/test does)"
            );
        }
        let name = format!("celeriac-{tag}-{}", std::process::id());
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &name])
            .output();
        rabbitmqctl(&["add_vhost", &name]);
        Vhost::grant(&name);
        Vhost { name }
    }

    fn grant(name: &str) {
        rabbitmqctl(&["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]);
    }

    /// Deletes the vhost now (RabbitMQ closes every connection to it).
    pub fn delete(&self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }

    /// Creates it again after [`Vhost::delete`].
    pub fn recreate(&self) {
        rabbitmqctl(&["add_vhost", &self.name]);
        Vhost::grant(&self.name);
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`, as Celery takes it.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{HOST}/{}", self.name)
    }

    /// `[(queue, ready messages, consumers)]` as RabbitMQ itself reports them.
    pub fn queues(&self) -> Vec<(String, u64, u64)> {
        rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "consumers",
        ])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                f.get(2)?.parse().ok()?,
            ))
        })
        .collect()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Closes, as the server does, every connection to `vhost` whose client-given connection name
/// is `name` (the agent names its connections `celeriac <component id>`); returns how many.
pub fn close_connections_named(vhost: &str, name: &str) -> usize {
    let listed = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "vhost",
        "client_properties",
    ]);
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in listed.lines() {
        let mut f = line.split('\t');
        let (Some(pid), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        if v == vhost && line.contains(&wanted) {
            rabbitmqctl(&["close_connection", pid, "closed by the test"]);
            closed += 1;
        }
    }
    closed
}

/// Runs `python tests/python/amqp_tool.py ARGS` (publishes raw AMQP messages) and returns the
/// JSON line it prints; panics with its stderr when it fails.
pub fn amqp_tool(args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(python_dir().join("amqp_tool.py"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("python amqp_tool.py: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "amqp_tool.py {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("amqp_tool.py printed no JSON ({e}): {stdout}"))
}

/// Sample `name{labels}` scraped from the metrics endpoint at `addr`, if there.
pub fn value(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape(addr).and_then(|s| metric_value(&s, name, labels))
}

/// Waits up to `secs` seconds for sample `name{labels}` at `addr` to be there and satisfy `ok`;
/// panics with the agent's output otherwise.
pub fn await_sample(
    agent: &Agent,
    secs: u64,
    addr: &str,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) {
    assert!(
        wait_until(Duration::from_secs(secs), || value(addr, name, labels)
            .is_some_and(&ok)),
        "{name}{labels:?} at {addr}\n{}",
        agent.output()
    );
}

/// Waits up to 15 s until the agent's `celery_amqp` receivers consume (telemetry at `tel_addr`).
pub fn await_consuming(agent: &Agent, tel_addr: &str) {
    await_sample(
        agent,
        15,
        tel_addr,
        "celeriac_celery_amqp_connected",
        &[],
        |v| v == 1.0,
    );
}

/// Waits up to 10 s until `celery_task_sent_total{name=task}` at `prom_addr` is `total`.
pub fn await_sent(agent: &Agent, prom_addr: &str, task: &str, total: f64) {
    await_sample(
        agent,
        10,
        prom_addr,
        "celery_task_sent_total",
        &[("name", task)],
        |v| v == total,
    );
}

/// Publishes `n` `task-sent` events of task `task` to `url`'s `celeryev` (amqp_tool.py `sent`)
/// and checks they all went out.
pub fn publish_sent(url: &str, n: u64, task: &str) {
    let sent = amqp_tool(&[url, "sent", &n.to_string(), task]);
    assert_eq!(sent["published"].as_u64(), Some(n), "{sent}");
}
