//! Redis Sentinel brokers, with real processes on loopback: a master, a replica
//! (`--replicaof`), three sentinels (`redis-server --sentinel`, `down-after-milliseconds 1000`),
//! and a real Celery worker whose broker is the `sentinel://` URL. The agent follows the master
//! through a failover, reports the move as a reconnect with its gap, counts nothing twice; it
//! survives sentinels that are all down (and names each), and ignores a sentinel that names a
//! replica as master.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const MASTER: &str = "mymaster";

/// One `redis-server --sentinel` monitoring `MASTER`, killed on Drop.
struct Sentinel {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(port: u16, master_port: u16, quorum: u32) -> Sentinel {
        Sentinel::start_with(port, master_port, quorum, "")
    }

    /// With extra lines in sentinel.conf (e.g. `requirepass`, `sentinel auth-pass`).
    fn start_with(port: u16, master_port: u16, quorum: u32, extra: &str) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 3000\n\
                 sentinel parallel-syncs {MASTER} 1\n{extra}",
                dir.path().display(),
                dir.path().join("sentinel.log").display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("redis-server (for --sentinel) must be installed: run through scripts/test");
        let s = Sentinel {
            child: Some(child),
            port,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "sentinel on {port} did not start"
        );
        s
    }

    fn log(&self) -> String {
        fs::read_to_string(self._dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One command on a fresh connection; `None` when the node cannot be reached.
fn query(port: u16, args: &[&str]) -> Option<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).ok()
}

/// What `ROLE` says (`master`, `slave`).
fn role(port: u16) -> Option<String> {
    match query(port, &["ROLE"])? {
        redis::Value::Array(v) => match v.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

fn count(v: Option<redis::Value>) -> usize {
    match v {
        Some(redis::Value::Array(v)) => v.len(),
        _ => 0,
    }
}

/// A master, a replica, three sentinels that know each other and the replica.
struct Cluster {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

/// A redis-server replicating `master`.
fn replica_of(master: &RedisServer) -> RedisServer {
    RedisServer::builder()
        .arg("--replicaof")
        .arg("127.0.0.1")
        .arg(master.port().to_string())
        .start()
}

impl Cluster {
    fn start(sentinel_ports: [u16; 3]) -> Cluster {
        let master = RedisServer::start();
        let replica = replica_of(&master);
        assert!(
            wait_until(Duration::from_secs(15), || {
                matches!(query(replica.port(), &["INFO", "replication"]),
                    Some(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up"))
            }),
            "replica not in sync"
        );
        let sentinels: Vec<Sentinel> = sentinel_ports
            .iter()
            .map(|&p| Sentinel::start(p, master.port(), 2))
            .collect();
        assert!(
            wait_until(Duration::from_secs(20), || {
                sentinels.iter().all(|s| {
                    count(query(s.port, &["SENTINEL", "sentinels", MASTER])) == 2
                        && count(query(s.port, &["SENTINEL", "replicas", MASTER])) == 1
                })
            }),
            "sentinels did not discover each other and the replica:\n{}",
            sentinels[0].log()
        );
        Cluster {
            master,
            replica,
            sentinels,
        }
    }

    fn url(&self) -> String {
        sentinel_url(&self.sentinels.iter().map(|s| s.port).collect::<Vec<_>>())
    }
}

fn sentinel_url(ports: &[u16]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| format!("sentinel://127.0.0.1:{p}"))
        .collect();
    format!("{}/0", list.join(";"))
}

fn agent_config(url: &str, prom: u16, tel: u16) -> String {
    sentinel_config(url, prom, tel)
        .pipeline("metrics", &["celery_correlate"], &["prometheus"])
        .yaml()
}

fn sentinel_config(url: &str, prom: u16, tel: u16) -> AgentConfig {
    AgentConfig::new()
        .receiver(
            "celery_redis",
            &format!("endpoint: \"{url}\"\nmaster_name: {MASTER}\nconnect_timeout: 2s"),
        )
        .connector("celery_correlate", "metrics_interval: 100ms")
        .exporter("prometheus", &format!("endpoint: 127.0.0.1:{prom}"))
        .telemetry(tel)
        .pipeline("celery", &["celery_redis"], &["celery_correlate"])
}

/// The same with the `redis_queues` receiver (queue `backlog`) and the `celery_ui` extension
/// (inspect), both on the sentinel URL too.
fn full_config(url: &str, prom: u16, tel: u16, ui: u16) -> String {
    sentinel_config(url, prom, tel)
        .receiver(
            "redis_queues",
            &format!(
                "endpoint: \"{url}\"\nmaster_name: {MASTER}\nqueues: [backlog]\ninterval: 300ms"
            ),
        )
        .extension(
            "celery_ui",
            &format!("endpoint: 127.0.0.1:{ui}\ninspect: {{ interval: 2s, timeout: 1s }}"),
        )
        .pipeline(
            "metrics",
            &["celery_correlate", "redis_queues"],
            &["prometheus"],
        )
        .yaml()
}

/// `/api/workers?refresh=1` of celery_ui (Flower's API): the worker's pool size, asked over
/// the broker.
fn inspected_pool(ui: &str) -> Option<i64> {
    let (code, body) = http_get(ui, "/api/workers?refresh=1")?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["w1@host1"]["stats"]["pool"]["max-concurrency"].as_i64()
}

fn value(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(addr)
        .and_then(|s| metric_value(&s, name, labels))
        .unwrap_or(0.0)
}

const OPTIONS: &str = r#"{"master_name": "mymaster"}"#;

/// Sends `shop.a(i)` for each `i` through the sentinel URL (each client asks the sentinels).
fn send_tasks(url: &str, from: u32, n: u32) {
    for i in from..from + n {
        run_client_env(
            url,
            &["send", "shop.a", &format!("[{i}]")],
            &[("CELERIAC_TRANSPORT_OPTIONS", OPTIONS)],
        );
    }
}

#[test]
fn follows_the_master_through_a_failover_with_a_real_worker() {
    let mut cluster = Cluster::start([free_port(), free_port(), free_port()]);
    let url = cluster.url();
    let (prom, tel, ui) = (free_port(), free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let ui_addr = format!("127.0.0.1:{ui}");
    let agent = Agent::start_ready(
        &full_config(&url, prom, tel, ui),
        Duration::from_secs(20),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );
    let backlog = || {
        scrape(&prom_addr)
            .and_then(|s| metric_value(&s, "celery_queue_length", &[("queue_name", "backlog")]))
    };
    let mut worker = CeleryWorker::start(
        &url,
        WorkerOpts::default()
            .heartbeat(1)
            .env("CELERIAC_TRANSPORT_OPTIONS", OPTIONS),
    );
    worker.assert_ready(Duration::from_secs(60));
    let succeeded = || {
        value(
            &prom_addr,
            "celery_task_succeeded_total",
            &[("name", "shop.a")],
        )
    };
    let received = || {
        value(
            &prom_addr,
            "celery_task_received_total",
            &[("name", "shop.a")],
        )
    };

    send_tasks(&url, 0, 3);
    assert!(
        wait_until(Duration::from_secs(20), || succeeded() == 3.0),
        "before the failover: {} succeeded\n{}",
        succeeded(),
        agent.output()
    );
    // redis_queues and celery_ui: the queue length and the worker's pool, asked over the broker.
    let queues_and_inspect = |backlog_len: f64, timeout: Duration, when: &str| {
        assert!(
            wait_until(timeout, || backlog() == Some(backlog_len)),
            "redis_queues {when}: {:?}\n{}",
            backlog(),
            agent.output()
        );
        assert!(
            wait_until(Duration::from_secs(15), || inspected_pool(&ui_addr)
                == Some(2)),
            "celery_ui inspect {when}\n{}",
            agent.output()
        );
    };
    cluster.master.cmd(&["RPUSH", "backlog", "x"]);
    queues_and_inspect(1.0, Duration::from_secs(10), "before the failover");

    // The master dies; the sentinels promote the replica.
    let old_master = cluster.master.port();
    let new_master = cluster.replica.port();
    let killed = Instant::now();
    cluster.master.kill();
    assert!(
        wait_until(Duration::from_secs(30), || role(new_master).as_deref()
            == Some("master")),
        "replica not promoted:\n{}",
        cluster.sentinels[0].log()
    );
    let promoted = killed.elapsed();
    assert!(
        wait_until(Duration::from_secs(20), || {
            value(&tel_addr, "celeriac_celery_redis_reconnects_total", &[]) >= 1.0
                && value(&tel_addr, "celeriac_celery_redis_connected", &[]) == 1.0
        }),
        "{}",
        agent.output()
    );
    let resubscribed = killed.elapsed();
    // Subscribed on the new master.
    assert!(
        matches!(query(new_master, &["PUBSUB", "NUMPAT"]), Some(redis::Value::Int(n)) if n >= 4),
        "no pattern subscription on the new master"
    );

    send_tasks(&url, 3, 3);
    assert!(
        wait_until(Duration::from_secs(40), || succeeded() == 6.0),
        "after the failover: {} succeeded\n{}\nworker:\n{}",
        succeeded(),
        agent.output(),
        worker.log()
    );
    // redis_queues and celery_ui found the new master too.
    query(new_master, &["RPUSH", "backlog", "y", "z"]).expect("RPUSH on the new master");
    queues_and_inspect(3.0, Duration::from_secs(15), "after the failover");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(succeeded(), 6.0, "counted twice?");
    assert_eq!(received(), 6.0, "counted twice?");
    let gap_ms = value(
        &tel_addr,
        "celeriac_celery_redis_gap_milliseconds_total",
        &[],
    );
    let reconnects = value(&tel_addr, "celeriac_celery_redis_reconnects_total", &[]);
    assert!(gap_ms > 0.0);
    let log = agent.stderr();
    assert!(
        log.contains(&format!("127.0.0.1:{old_master}"))
            && log.contains(&format!("new=redis://127.0.0.1:{new_master}/0")),
        "old and new address logged\n{}",
        agent.output()
    );
    eprintln!(
        "FIGURES sentinel_failover: master SIGKILLed; replica promoted after {promoted:?}; agent resubscribed on the new master {resubscribed:?} after the kill; reconnects={reconnects} gap_reported_ms={gap_ms}; tasks counted 3 before + 3 after = {} succeeded, {} received",
        succeeded(),
        received()
    );
    for line in log.lines().filter(|l| {
        l.contains("failover")
            || l.contains("Moved")
            || l.contains("Resubscribed")
            || l.contains("Lost")
    }) {
        eprintln!("agent: {line}");
    }
    worker.stop();
}

#[test]
fn all_sentinels_down_at_start_is_an_error_naming_each_then_recovers() {
    let ports = [free_port(), free_port(), free_port()];
    let url = sentinel_url(&ports);
    let (prom, tel) = (free_port(), free_port());
    let tel_addr = format!("127.0.0.1:{tel}");
    let mut agent = Agent::start(bin(), &agent_config(&url, prom, tel));
    let connect = [("reason", "connect")];
    assert!(
        wait_until(Duration::from_secs(15), || value(
            &tel_addr,
            "celeriac_receiver_errors_total",
            &connect
        ) >= 1.0),
        "{}",
        agent.output()
    );
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let errors = value(&tel_addr, "celeriac_receiver_errors_total", &connect);
    let watched = t0.elapsed();
    assert!(agent.is_running(), "{}", agent.output());
    let log = agent.stderr();
    for p in ports {
        assert!(
            log.contains(&format!("127.0.0.1:{p}: ")),
            "sentinel {p} not named\n{}",
            agent.output()
        );
    }
    assert!(
        log.contains("no sentinel named a usable master"),
        "{}",
        agent.output()
    );
    // Backoff: 100 ms doubling → about 6 attempts in the first 4 s, never a storm.
    assert!(
        (2.0..=9.0).contains(&errors),
        "{errors} attempts in {watched:?}"
    );

    // The sentinels come up (on those ports): the agent finds the master.
    let master = RedisServer::start();
    let _sentinels: Vec<Sentinel> = ports
        .iter()
        .map(|&p| Sentinel::start(p, master.port(), 1))
        .collect();
    let up = Instant::now();
    assert!(
        wait_until(Duration::from_secs(25), || value(
            &tel_addr,
            "celeriac_celery_redis_connected",
            &[]
        ) == 1.0),
        "{}",
        agent.output()
    );
    eprintln!(
        "FIGURES sentinels_down: {errors} connect attempts counted while watching {watched:?} (each naming all 3 sentinels); subscribed {:?} after they came up",
        up.elapsed()
    );
}

/// A fake sentinel naming `addr` as the master of anything; answers SUBSCRIBE and PING.
fn lying_sentinel(addr: (String, u16)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let addr = addr.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                    let reply = if req.contains("get-master-addr-by-name") {
                        let p = addr.1.to_string();
                        format!(
                            "*2\r\n${}\r\n{}\r\n${}\r\n{p}\r\n",
                            addr.0.len(),
                            addr.0,
                            p.len()
                        )
                    } else if req.contains("subscribe") {
                        "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".into()
                    } else {
                        "+PONG\r\n".into()
                    };
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_sentinel_naming_a_replica_is_ignored() {
    let master = RedisServer::start();
    let replica = replica_of(&master);
    let liar = lying_sentinel(("127.0.0.1".into(), replica.port()));
    let honest = Sentinel::start(free_port(), master.port(), 1);
    let url = sentinel_url(&[liar, honest.port]);
    let (prom, tel) = (free_port(), free_port());
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start_ready(
        &agent_config(&url, prom, tel),
        Duration::from_secs(20),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );
    assert!(
        matches!(query(master.port(), &["PUBSUB", "NUMPAT"]), Some(redis::Value::Int(n)) if n >= 4),
        "not subscribed on the master"
    );
    assert!(
        matches!(
            query(replica.port(), &["PUBSUB", "NUMPAT"]),
            Some(redis::Value::Int(0))
        ),
        "subscribed on the replica"
    );
    let log = agent.stderr();
    assert!(
        log.contains("names as master a node that says it is not"),
        "{}",
        agent.output()
    );
    let _ = TcpStream::connect(("127.0.0.1", liar));
}

#[test]
fn data_node_and_sentinel_passwords_are_separate_secrets() {
    let master = RedisServer::start();
    // Set after the start (the harness checks readiness with an unauthenticated PING).
    master.cmd(&["CONFIG", "SET", "requirepass", "node-pw"]);
    let sentinel = Sentinel::start_with(
        free_port(),
        master.port(),
        1,
        &format!("sentinel auth-pass {MASTER} node-pw\nrequirepass sentinel-pw\n"),
    );
    // The URL's password is the data nodes' (as in kombu); the sentinels' is `sentinel_password`.
    let url = format!("sentinel://:node-pw@127.0.0.1:{}/0", sentinel.port);
    let (prom, tel) = (free_port(), free_port());
    let tel_addr = format!("127.0.0.1:{tel}");
    let cfg = agent_config(&url, prom, tel).replace(
        "    connect_timeout: 2s\n",
        "    connect_timeout: 2s\n    sentinel_password: sentinel-pw\n",
    );
    let agent = Agent::start_ready(
        &cfg,
        Duration::from_secs(20),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );
    let out = agent.output();
    assert!(
        !out.contains("node-pw") && !out.contains("sentinel-pw"),
        "{out}"
    );

    // Without the sentinel password: refused by the sentinel, said so, never connected.
    let (prom, tel) = (free_port(), free_port());
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start(bin(), &agent_config(&url, prom, tel));
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .stderr()
            .contains("NOAUTH")
            || agent.stderr().contains("Authentication required")),
        "{}",
        agent.output()
    );
    assert_eq!(
        value(&tel_addr, "celeriac_celery_redis_connected", &[]),
        0.0
    );
}
