//! The `celery_redis` receiver against a broker that misbehaves after (or while) accepting the
//! subscription: a fake broker on loopback, so each fault is exact and repeatable.
//!
//! * a pub/sub message announcing a 1 GiB payload, then junk: the receiver gives up on the
//!   connection after `max_message_size_mib`, counts a protocol error, memory stays bounded;
//! * an array of more than 64 elements: consumed whole, the next message still read;
//! * one bad frame after every subscription: reconnects back off (no storm);
//! * a broker that confirms each pattern slowly: `connect_timeout` bounds the whole handshake.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// The agent under test; `CELERIAC_TEST_BIN` runs these faults against another build (e.g. an
/// older release, to see a fault it had).
fn bin() -> std::path::PathBuf {
    std::env::var_os("CELERIAC_TEST_BIN")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_celeriac")).to_path_buf())
}

/// What the fake broker does once a client has sent its PSUBSCRIBE.
#[derive(Clone, Copy)]
enum Mode {
    /// Confirm, then a message claiming a 1 GiB payload followed by up to 300 MiB of junk.
    HugeBulk,
    /// Confirm, then `payload` (raw RESP), then stay quiet.
    Send(&'static [u8]),
    /// Confirm, then one frame that is not RESP.
    BadFrame,
    /// Confirm each pattern after `delay`.
    Slow(Duration),
}

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    /// Bytes the broker managed to write after the confirmations, over all connections.
    sent_after_confirm: AtomicU64,
    /// Connections whose handshake the client abandoned (closed before all confirmations).
    abandoned: AtomicU64,
}

/// A fake Redis on 127.0.0.1: answers AUTH/PING with +OK/+PONG, confirms PSUBSCRIBE, then
/// follows `mode`. Stops accepting when dropped.
struct FakeBroker {
    port: u16,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The confirmation of pattern `p` (`*3 psubscribe <p> <count>`).
fn confirm(p: &[u8], i: usize) -> Vec<u8> {
    let mut v = format!("*3\r\n$10\r\npsubscribe\r\n${}\r\n", p.len()).into_bytes();
    v.extend_from_slice(p);
    v.extend_from_slice(format!("\r\n:{i}\r\n").as_bytes());
    v
}

/// Reads until the client's PSUBSCRIBE arrived; its patterns (bulk strings after the command).
fn read_psubscribe(s: &mut TcpStream) -> Option<Vec<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf
            .windows(10)
            .position(|w| w.eq_ignore_ascii_case(b"PSUBSCRIBE"))
        {
            // `*N\r\n` before it gives the count; each pattern is `$len\r\n<pattern>\r\n`.
            let head = &buf[..at];
            let star = head.iter().rposition(|&b| b == b'*')?;
            let n: usize = std::str::from_utf8(&head[star + 1..])
                .ok()?
                .split("\r\n")
                .next()?
                .parse()
                .ok()?;
            let mut rest = &buf[at + 12..];
            let mut pats = Vec::new();
            while pats.len() < n - 1 {
                let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
                    break;
                };
                let len: usize = std::str::from_utf8(&rest[1..nl]).ok()?.parse().ok()?;
                if rest.len() < nl + 2 + len + 2 {
                    break;
                }
                pats.push(rest[nl + 2..nl + 2 + len].to_vec());
                rest = &rest[nl + 2 + len + 2..];
            }
            if pats.len() == n - 1 {
                return Some(pats);
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve(mut s: TcpStream, mode: Mode, stats: &Stats) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(patterns) = read_psubscribe(&mut s) else {
        return;
    };
    let mut confirmations = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        confirmations.push(confirm(p, i + 1));
    }
    match mode {
        Mode::Slow(delay) => {
            for c in confirmations {
                thread::sleep(delay);
                if s.write_all(&c).is_err() {
                    stats.abandoned.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            // Then hold the connection until the client goes.
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            return;
        }
        _ => {
            if s.write_all(&confirmations.concat()).is_err() {
                return;
            }
        }
    }
    let count = |n: usize| {
        stats
            .sent_after_confirm
            .fetch_add(n as u64, Ordering::Relaxed)
    };
    match mode {
        Mode::HugeBulk => {
            let head = b"*4\r\n$8\r\npmessage\r\n$13\r\n/0.celeryev/*\r\n$21\r\n/0.celeryev/task.sent\r\n$1073741824\r\n";
            if s.write_all(head).is_err() {
                return;
            }
            count(head.len());
            let junk = vec![b'x'; 1 << 20];
            let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
            for _ in 0..300 {
                if s.write_all(&junk).is_err() {
                    return;
                }
                count(junk.len());
            }
        }
        Mode::Send(payload) => {
            if s.write_all(payload).is_ok() {
                count(payload.len());
            }
            let mut b = [0u8; 4096];
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        }
        Mode::BadFrame => {
            if s.write_all(b"?this is not RESP\r\n").is_ok() {
                count(19);
            }
            let mut b = [0u8; 4096];
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        }
        Mode::Slow(_) => unreachable!(),
    }
}

fn fake_broker(mode: Mode) -> FakeBroker {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (stats, stop) = (stats.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let stats = stats.clone();
                thread::spawn(move || serve(conn, mode, &stats));
            }
        });
    }
    FakeBroker { port, stats, stop }
}

fn config(port: u16, tel: u16, extra: &str) -> String {
    format!(
        "receivers:\n  celery_redis:\n    endpoint: redis://127.0.0.1:{port}/0\n{extra}exporters:\n  debug: {{}}\nservice:\n  telemetry:\n    endpoint: 127.0.0.1:{tel}\n  pipelines:\n    celery:\n      receivers: [celery_redis]\n      exporters: [debug]\n"
    )
}

fn tel_value(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(addr)
        .and_then(|s| metric_value(&s, name, labels))
        .unwrap_or(0.0)
}

/// VmHWM (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[test]
fn a_message_claiming_a_gibibyte_is_cut_off_at_the_cap() {
    let broker = fake_broker(Mode::HugeBulk);
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start(&bin(), &config(broker.port, tel, ""));
    let protocol = [("reason", "protocol")];
    assert!(
        wait_until(Duration::from_secs(20), || {
            tel_value(&tel_addr, "celeriac_receiver_errors_total", &protocol) >= 1.0
        }),
        "no protocol error counted\n{}",
        agent.output()
    );
    let sent = broker.stats.sent_after_confirm.load(Ordering::Relaxed);
    let peak = peak_rss_mib(agent.pid().unwrap()).unwrap();
    eprintln!("FIGURES huge_bulk: broker wrote {} KiB before the agent dropped the connection; agent peak RSS {peak} MiB", sent / 1024);
    // 4 MiB cap + loopback socket buffers on both sides (up to ~25 MiB seen); never the 300 MiB
    // on offer.
    assert!(
        sent < 64 << 20,
        "the agent read {sent} bytes of one message"
    );
    assert!(peak < 64, "peak RSS {peak} MiB");
    assert!(
        agent.stderr().contains("larger than 4194304 bytes"),
        "{}",
        agent.output()
    );
}

/// A `pmessage` of one real Celery event envelope (task-sent) from the capture.
fn real_pmessage() -> Vec<u8> {
    let (channel, data) = fixture_envelopes()
        .into_iter()
        .find(|(c, _)| c.ends_with("task.sent"))
        .expect("a task-sent envelope in the capture");
    let mut v = b"*4\r\n$8\r\npmessage\r\n$13\r\n/0.celeryev/*\r\n".to_vec();
    v.extend_from_slice(format!("${}\r\n{channel}\r\n", channel.len()).as_bytes());
    v.extend_from_slice(format!("${}\r\n{data}\r\n", data.len()).as_bytes());
    v
}

#[test]
fn an_array_of_more_than_64_elements_is_skipped_whole() {
    let pm = real_pmessage();
    // 65 messages inside one array (no server sends that: its elements must not be read as
    // messages), then one real message.
    let mut payload = b"*65\r\n".to_vec();
    for _ in 0..65 {
        payload.extend_from_slice(&pm);
    }
    payload.extend_from_slice(&pm);
    let payload: &'static [u8] = Box::leak(payload.into_boxed_slice());
    let broker = fake_broker(Mode::Send(payload));
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start(&bin(), &config(broker.port, tel, ""));
    assert!(
        wait_until(Duration::from_secs(20), || {
            tel_value(&tel_addr, "celeriac_celery_messages_total", &[]) >= 1.0
        }),
        "{}",
        agent.output()
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tel_value(&tel_addr, "celeriac_celery_messages_total", &[]),
        1.0,
        "{}",
        agent.output()
    );
    assert_eq!(
        tel_value(&tel_addr, "celeriac_receiver_errors_total", &[]),
        0.0
    );
    assert_eq!(broker.stats.connections.load(Ordering::Relaxed), 1);
}

#[test]
fn a_broker_that_garbles_every_subscription_is_not_hammered() {
    // Seen: 12 671 reconnects in 8 s (no wait after a loss).
    let broker = fake_broker(Mode::BadFrame);
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start(&bin(), &config(broker.port, tel, ""));
    assert!(
        wait_until(Duration::from_secs(20), || {
            broker.stats.connections.load(Ordering::Relaxed) >= 1
        }),
        "{}",
        agent.output()
    );
    let window = Duration::from_secs(8);
    let t0 = Instant::now();
    thread::sleep(window);
    let conns = broker.stats.connections.load(Ordering::Relaxed);
    let protocol = tel_value(
        &tel_addr,
        "celeriac_receiver_errors_total",
        &[("reason", "protocol")],
    );
    eprintln!(
        "FIGURES reconnect_storm: {conns} connections in {:?} (protocol errors counted: {protocol})",
        t0.elapsed()
    );
    // 100 ms doubling (±20 %): 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s ≈ 6.3 s → about 7 in 8 s.
    assert!((4..=10).contains(&conns), "{conns} connections in 8 s");
    assert!(
        protocol >= conns as f64 - 1.0,
        "each loss counted: {protocol}"
    );
    assert!(
        agent.stderr().contains("retry_in"),
        "the warning names the wait\n{}",
        agent.output()
    );
}

#[test]
fn connect_timeout_bounds_the_whole_handshake() {
    // Each of the 4 patterns confirmed after 400 ms: 1.6 s in all, each step under the 1 s
    // bound. Seen: the bound applied per step (subscribed after ~6× it with slow steps).
    let broker = fake_broker(Mode::Slow(Duration::from_millis(400)));
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start(
        &bin(),
        &config(broker.port, tel, "    connect_timeout: 1s\n"),
    );
    let connect = [("reason", "connect")];
    assert!(
        wait_until(Duration::from_secs(20), || {
            tel_value(&tel_addr, "celeriac_receiver_errors_total", &connect) >= 2.0
        }),
        "{}",
        agent.output()
    );
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        tel_value(&tel_addr, "celeriac_celery_redis_connected", &[]),
        0.0,
        "subscribed although the handshake took longer than connect_timeout\n{}",
        agent.output()
    );
    let abandoned = broker.stats.abandoned.load(Ordering::Relaxed);
    eprintln!(
        "FIGURES connect_timeout: {} connections, {abandoned} abandoned mid-handshake, 0 subscribed ({:?} watched)",
        broker.stats.connections.load(Ordering::Relaxed),
        t0.elapsed()
    );
    assert!(abandoned >= 1, "{}", agent.output());
    assert!(
        agent.stderr().contains("not done within connect_timeout"),
        "{}",
        agent.output()
    );
}
