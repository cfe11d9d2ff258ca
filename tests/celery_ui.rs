//! The `celery_ui` extension end to end, with a real redis-server and a real Celery worker:
//!
//! * its Flower API returns the same tasks, states, task types, queues and workers as Flower 2.2
//!   itself (started from the test venv against the same broker) with the same field names;
//!   without Flower in the venv the test fails (scripts/test installs it and checks the import);
//! * the live page, in headless Chromium driven over WebDriver, shows a task sent after the page
//!   opened without a reload, shows `<script>`/`<img onerror>` task args as text (nothing runs),
//!   and is saved as a screenshot under `target/`;
//! * authentication, redaction, server-side escaping and the 404 of an unknown task;
//! * the control buttons: a task page's Revoke/Terminate (confirmed) end a running task
//!   REVOKED; with `read_only` there is no button and a POST from the page gets 403;
//! * `url_prefix`: pages, assets, API, `/metrics` and `/healthcheck` only under the prefix,
//!   every link of the HTML under it, and the live page (its script's API calls) working there
//!   in Chromium;
//! * the tasks page over the whole view (Flower's default order, pages, filters, `search=`,
//!   sort by any column) and the worker page's tabs from the worker's own answers, checked over
//!   HTTP against the API and driven in Chromium;
//! * `tls`: the dashboard over HTTPS to curl trusting the test CA, nothing in plaintext, and a
//!   missing certificate file refused by `validate` naming `tls.cert_file`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::*;

fn config(redis_url: &str, ui: u16, telemetry: u16, ui_extra: &str) -> String {
    format!(
        r#"
receivers:
  celery_redis:
    endpoint: {redis_url}
connectors:
  celery_correlate:
    metrics_interval: 200ms
exporters:
  debug: {{}}
extensions:
  celery_ui:
    endpoint: 127.0.0.1:{ui}
    stream_interval: 200ms
    inspect: {{ interval: 2s, timeout: 1s }}
    trace_url: "http://tempo.example/trace/{{trace_id}}"
{ui_extra}
service:
  extensions: [celery_ui]
  telemetry:
    endpoint: 127.0.0.1:{telemetry}
  pipelines:
    celery:
      receivers: [celery_redis]
      exporters: [celery_correlate]
    metrics:
      receivers: [celery_correlate]
      exporters: [debug]
"#
    )
}

/// A helper process (Flower, chromedriver) in its own process group, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(mut cmd: Command, what: &str) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-ui-")
            .tempdir()
            .unwrap();
        let log = dir.path().join(format!("{what}.log"));
        let out = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: chromedriver's browsers, Flower's children.
        kill_group(&mut self.child);
    }
}

fn get_json(addr: &str, path: &str) -> Option<(u16, Value)> {
    let r = http_request(addr, "GET", path, &[], &[])?;
    Some((r.status, serde_json::from_slice(&r.body).ok()?))
}

fn get_ok(addr: &str, path: &str) -> Value {
    match get_json(addr, path) {
        Some((200, v)) => v,
        other => panic!("GET {addr}{path}: {other:?}"),
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn start_stack(ui_extra: &str) -> (RedisServer, CeleryWorker, Agent, String, String) {
    start_stack_at(ui_extra, "")
}

/// [`start_stack`] with the dashboard under `prefix` (its `url_prefix`, e.g. `/ops/flower`).
fn start_stack_at(
    ui_extra: &str,
    prefix: &str,
) -> (RedisServer, CeleryWorker, Agent, String, String) {
    let redis = RedisServer::start();
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default());
    worker.assert_ready(Duration::from_secs(60));
    let (ui, tel) = (free_port(), free_port());
    let ui_addr = format!("127.0.0.1:{ui}");
    let agent = Agent::start_ready(
        &config(&redis.url(), ui, tel, ui_extra),
        Duration::from_secs(20),
        "celery_ui did not come up:",
        || {
            http_get(&ui_addr, &format!("{prefix}/api/task/types"))
                .is_some_and(|(s, _)| s == 200 || s == 401)
        },
    );
    (redis, worker, agent, ui_addr, format!("127.0.0.1:{tel}"))
}

/// What the comparison looks at: key sets per endpoint, from one API.
fn key_sets(addr: &str, ids: &[String]) -> Value {
    let tasks = get_ok(addr, "/api/tasks");
    let task_keys: BTreeSet<String> = ids
        .iter()
        .filter_map(|id| tasks.get(id))
        .flat_map(keys)
        .collect();
    let info_keys: BTreeSet<String> = ids
        .iter()
        .flat_map(|id| keys(&get_ok(addr, &format!("/api/task/info/{id}"))))
        .collect();
    let workers = get_ok(addr, "/api/workers?refresh=1");
    let w = workers.get("w1@host1").cloned().unwrap_or(Value::Null);
    let named = get_ok(addr, "/api/workers?refresh=1&workername=w1%40host1");
    let queues = get_ok(addr, "/api/queues/length");
    json!({
        "worker_named": keys(&named["w1@host1"]),
        "task": task_keys,
        "task_info": info_keys,
        "task_types": keys(&get_ok(addr, "/api/task/types")),
        "queues": keys(&queues),
        "queue": queues["active_queues"].as_array().into_iter().flatten().flat_map(keys).collect::<BTreeSet<_>>(),
        "worker": keys(&w),
        "worker_stats": keys(&w["stats"]),
        "worker_pool": keys(&w["stats"]["pool"]),
        "worker_queue": w["active_queues"].as_array().into_iter().flatten().flat_map(keys).collect::<BTreeSet<_>>(),
    })
}

fn set_of(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn flower_available() -> bool {
    Command::new(python())
        .args(["-c", "import flower"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn flower_api_has_flowers_fields_and_the_same_tasks() {
    let (redis, worker, agent, ui, _tel) = start_stack("");
    let flower_port = free_port();
    let flower_addr = format!("127.0.0.1:{flower_port}");
    let flower = flower_available().then(|| {
        let mut cmd = Command::new(python());
        cmd.args(["-m", "celery", "-A", "shopapp", "flower"])
            .arg(format!("--port={flower_port}"))
            .arg("--address=127.0.0.1")
            .current_dir(repo_root())
            .env("PYTHONPATH", python_dir())
            .env("CELERY_BROKER_URL", redis.url())
            .env("FLOWER_UNAUTHENTICATED_API", "true");
        let p = Proc::start(cmd, "flower");
        let up = wait_until(Duration::from_secs(30), || {
            http_get(&flower_addr, "/api/task/types").is_some_and(|(s, _)| s == 200)
        });
        assert!(up, "Flower did not start:\n{}", p.log());
        // Flower subscribes to events when it starts: give its receiver a moment.
        std::thread::sleep(Duration::from_secs(2));
        p
    });

    let mix = run_client(&redis.url(), &["run_mix"]);
    let names: BTreeMap<String, String> = serde_json::from_value(mix["names"].clone()).unwrap();
    let ids: Vec<String> = names.keys().cloned().collect();
    assert_eq!(ids.len(), 11, "{mix}");
    let finals: BTreeMap<String, String> =
        serde_json::from_value(mix["final_states"].clone()).unwrap();

    // celery_ui: every task with its final state and name, from events alone.
    let mut ours = Value::Null;
    let done = wait_until(Duration::from_secs(20), || {
        ours = get_ok(&ui, "/api/tasks");
        finals
            .iter()
            .all(|(id, st)| ours.get(id).is_some_and(|t| t["state"] == *st))
    });
    assert!(done, "celery_ui tasks never matched {finals:?}: {ours:#}");
    for (id, n) in &names {
        assert_eq!(ours[id]["name"], *n, "{id}");
    }
    let failed = ours
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["state"] == "FAILURE")
        .unwrap();
    assert!(failed["exception"].as_str().unwrap().contains("ValueError"));
    assert!(failed["traceback"].as_str().unwrap().contains("Traceback"));
    assert_eq!(
        set_of(&get_ok(&ui, "/api/task/types")["task-types"]),
        names.values().cloned().collect()
    );
    let filtered = get_ok(&ui, "/api/tasks?state=FAILURE&taskname=shop.send_receipt");
    assert_eq!(filtered.as_object().unwrap().len(), 2, "{filtered}");
    let limited = get_ok(&ui, "/api/tasks?limit=3&sort_by=-received");
    assert_eq!(limited.as_object().unwrap().len(), 3);
    let (code, err) = get_json(&ui, "/api/task/info/no-such-task").unwrap();
    assert_eq!(code, 404);
    assert!(err["error"].as_str().unwrap().contains("no-such-task"));
    let (code, _) = get_json(&ui, "/api/tasks?sort_by=uuid").unwrap();
    assert_eq!(code, 400);

    // Remote control: the worker's pool, prefetch, rusage, queues, registered tasks.
    let workers = get_ok(&ui, "/api/workers?refresh=1");
    let w = &workers["w1@host1"];
    assert_eq!(w["stats"]["pool"]["max-concurrency"], 2, "{workers:#}");
    assert!(w["stats"]["prefetch_count"].is_number());
    assert!(w["stats"]["rusage"]["maxrss"].is_number());
    assert_eq!(w["active_queues"][0]["name"], "celery");
    assert!(set_of(&w["registered"]).contains("shop.charge_card"));
    assert!(w["active"].is_array() && w["reserved"].is_array() && w["scheduled"].is_array());
    let status = get_ok(&ui, "/api/workers?status=1");
    assert_eq!(status["w1@host1"], true);
    let queues = get_ok(&ui, "/api/queues/length");
    assert_eq!(
        queues["active_queues"][0],
        json!({"name": "celery", "messages": 0})
    );

    let our_keys = key_sets(&ui, &ids);
    let flower_keys = match &flower {
        Some(p) => {
            let mut theirs = Value::Null;
            let done = wait_until(Duration::from_secs(20), || {
                theirs = get_json(&flower_addr, "/api/tasks")
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null);
                finals
                    .iter()
                    .all(|(id, st)| theirs.get(id).is_some_and(|t| t["state"] == *st))
            });
            assert!(
                done,
                "Flower's tasks never matched {finals:?}: {theirs:#}\n{}",
                p.log()
            );
            // Flower's `search=`: the same tasks for the same queries (its syntax and rules).
            for search in [
                "state:failure",
                "name:charge",
                "args:SKU",
                "receipt OR slow_report",
                "(name:shop.a OR name:shop.b) state:SUCCESS",
                "\"SKU-42\"",
                "worker:w1@host1 result:total",
            ] {
                let path = format!("/api/tasks?search={}", url_encode(search));
                let ids_of = |v: &Value| -> BTreeSet<String> {
                    v.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.clone())
                        .filter(|k| ids.contains(k))
                        .collect()
                };
                let mine = ids_of(&get_ok(&ui, &path));
                let flowers = ids_of(
                    &get_json(&flower_addr, &path)
                        .map(|(_, v)| v)
                        .unwrap_or(Value::Null),
                );
                assert!(!mine.is_empty(), "search {search:?} found nothing");
                assert_eq!(mine, flowers, "search {search:?}");
            }
            let bad = "/api/tasks?search=ab";
            let (code, mine) = get_json(&ui, bad).unwrap();
            let (fcode, theirs_err) = get_json(&flower_addr, bad).unwrap();
            assert_eq!((code, &mine), (fcode, &theirs_err));
            // Same tasks, same states, same names, same workers.
            for id in &ids {
                for k in [
                    "state",
                    "name",
                    "worker",
                    "retries",
                    "routing_key",
                    "root_id",
                    "parent_id",
                ] {
                    assert_eq!(ours[id][k], theirs[id][k], "task {id} field {k}");
                }
            }
            assert_eq!(
                set_of(&get_ok(&flower_addr, "/api/task/types")["task-types"]),
                set_of(&get_ok(&ui, "/api/task/types")["task-types"])
            );
            key_sets(&flower_addr, &ids)
        }
        None => panic!(
            "flower is not importable with {} (tests/python/requirements.txt pins it; \
             scripts/test installs it): this test compares with the real Flower",
            python().display()
        ),
    };
    for (what, theirs) in flower_keys.as_object().unwrap() {
        let (theirs, ours) = (set_of(theirs), set_of(&our_keys[what]));
        if what == "worker" {
            // celery_ui asks every worker all 8 methods each round; Flower only the 4 without
            // task lists unless one worker is named (`worker_named`, compared exactly): Flower's
            // keys must all be there.
            assert!(
                theirs.is_subset(&ours),
                "{what}: Flower {theirs:?} ours {ours:?}"
            );
        } else {
            assert_eq!(theirs, ours, "{what}: Flower vs celery_ui");
        }
    }
    drop(flower);

    // A worker that does not answer: the round ends at the timeout (1 s) and the worker is
    // still listed, from its earlier answers and its events.
    let pid = worker.pid().expect("worker pid").to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let workers = get_ok(&ui, "/api/workers?refresh=1");
    let took = t0.elapsed();
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    assert!(took < Duration::from_secs(3), "refresh took {took:?}");
    assert!(workers["w1@host1"]["stats"].is_object(), "{workers}");
    drop(agent);
}

/// A minimal W3C WebDriver client over `http_request`.
struct Browser {
    addr: String,
    session: String,
    _driver: Proc,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver = Proc::start(cmd, "chromedriver");
        let up = wait_until(Duration::from_secs(20), || {
            Self::call(&addr, "GET", "/status", None).is_some_and(|v| v["ready"] == true)
        });
        assert!(up, "chromedriver did not start:\n{}", driver.log());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]
            }
        }}});
        let r = Self::call(&addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|| panic!("no WebDriver session:\n{}", driver.log()));
        let session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}\n{}", driver.log()))
            .to_string();
        Browser {
            addr,
            session,
            _driver: driver,
        }
    }

    /// One WebDriver command. chromedriver keeps connections open whatever the request says, so
    /// the response is read by its Content-Length rather than to the end of the stream.
    fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        use std::io::{Read, Write};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())?;
                if raw.len() >= end + 4 + len {
                    let v: Value = serde_json::from_slice(&raw[end + 4..end + 4 + len]).ok()?;
                    return Some(v["value"].clone());
                }
            }
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            raw.extend_from_slice(&buf[..n]);
        }
    }

    fn cmd(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{what}", self.session);
        Self::call(&self.addr, method, &path, body)
            .unwrap_or_else(|| panic!("WebDriver {method} {what} failed"))
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    fn wait_for(&self, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !v.is_null() && v != false {
                return v;
            }
            if Instant::now() > deadline {
                return Value::Null;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = repo_root().join("target").join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Self::call(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

const XSS_ARG: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

#[test]
fn live_page_updates_without_reload_and_shows_args_as_text() {
    let (redis, _worker, agent, ui, _tel) = start_stack("");
    let browser = Browser::start();
    browser.goto(&format!("http://{ui}/"));
    let live = browser.wait_for(
        "return document.querySelector('#conn').textContent === 'live' && document.querySelector('#workers tbody tr[data-hostname=\"w1@host1\"]') !== null",
        Duration::from_secs(20),
    );
    assert_eq!(live, true, "the page never went live:\n{}", agent.output());
    browser.eval("window.__loadMarker = 42; return null;");

    // Sent after the page opened.
    let args = json!([XSS_ARG, 5.0]).to_string();
    let sent = run_client(
        &redis.url(),
        &["send", "shop.charge_card", &args, "--wait", "30"],
    );
    let id = sent["ids"][0].as_str().unwrap().to_string();
    let failed = run_client(&redis.url(), &["fail", "--wait", "30"]);
    let failed_id = failed["ids"][0].as_str().unwrap().to_string();

    let row = browser.wait_for(
        &format!(
            "const r = document.querySelector('#tasks tr[data-uuid=\"{id}\"]');
             return r && r.querySelector('.state').textContent === 'SUCCESS' ? r.querySelector('.args').textContent : null;"
        ),
        Duration::from_secs(20),
    );
    assert!(
        row.as_str().is_some_and(|a| a.contains(XSS_ARG)),
        "row args: {row}"
    );
    let fail_row = browser.wait_for(
        &format!(
            "const r = document.querySelector('#failed tr[data-uuid=\"{failed_id}\"]');
             return r ? r.textContent : null;"
        ),
        Duration::from_secs(20),
    );
    assert!(
        fail_row.as_str().is_some_and(|t| t.contains("ValueError")),
        "{fail_row}"
    );
    // No reload happened, no markup from task args became elements, nothing ran.
    assert_eq!(browser.eval("return window.__loadMarker;"), 42);
    assert_eq!(browser.eval("return window.__pwned === undefined;"), true);
    assert_eq!(
        browser.eval("return document.querySelectorAll('main img, main script').length;"),
        0
    );
    let rates = browser.eval(
        "return Array.from(document.querySelectorAll('#rates tbody tr')).map(r => r.children[0].textContent + ' ' + r.children[1].textContent);",
    );
    assert!(
        rates.to_string().contains("shop.charge_card succeeded"),
        "{rates}"
    );
    let shot = browser.screenshot("celery_ui-dashboard.png");
    eprintln!("screenshot: {}", shot.display());

    // The task page: escaped on the server, trace id linked.
    browser.goto(&format!("http://{ui}/task/{id}"));
    let page = browser.wait_for(
        "const t = document.querySelector('#task'); return t ? t.textContent : null;",
        Duration::from_secs(10),
    );
    assert!(page.as_str().is_some_and(|t| t.contains(XSS_ARG)), "{page}");
    assert_eq!(browser.eval("return window.__pwned === undefined;"), true);
    let trace = browser.eval("return document.querySelector('#trace').getAttribute('href');");
    assert!(
        trace
            .as_str()
            .is_some_and(|h| h.starts_with("http://tempo.example/trace/") && h.len() == 27 + 32),
        "{trace}"
    );
    browser.screenshot("celery_ui-task.png");

    // Shutdown is not held up by open event streams (the browser's and this one).
    browser.goto(&format!("http://{ui}/"));
    let mut sse = std::net::TcpStream::connect(&ui).unwrap();
    std::io::Write::write_all(&mut sse, b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 256];
    let n = std::io::Read::read(&mut sse, &mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("text/event-stream"));
    let mut agent = agent;
    let t0 = Instant::now();
    agent.terminate();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}:\n{}",
        t0.elapsed(),
        agent.output()
    );
    eprintln!("shutdown with open streams took {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn auth_redaction_and_escaping() {
    let (redis, mut worker, _agent, ui, tel) = start_stack(
        "    auth: { username: admin, password: s3cret, bearer_token: tok-123 }\n    redact: { keys: [password] }",
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:s3cret")
    );
    let refused = || {
        let samples = scrape(&tel).expect("telemetry scrape");
        metric_value(
            &samples,
            "celeriac_ui_unauthorized_total",
            &[("component", "extension/celery_ui")],
        )
        .unwrap_or(-1.0)
    };
    let refused_before = refused();
    let get = |path: &str, auth: &str| {
        let h: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        http_request(&ui, "GET", path, &h, &[]).expect("celery_ui answers")
    };
    let r = get("/api/tasks", "");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    assert_eq!(get("/", "Bearer wrong").status, 401);
    assert_eq!(
        get(
            "/api/stream",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("admin:nope")
            )
        )
        .status,
        401
    );
    let index = get("/", &basic);
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'self'")));
    assert_eq!(get("/static/app.js", "Bearer tok-123").status, 200);

    let args = json!([{"user": "bob", "password": "hunter2"}, XSS_ARG]).to_string();
    let sent = run_client(&redis.url(), &["send", "shop.sleep", &args, "--wait", "30"]);
    let id = sent["ids"][0].as_str().unwrap().to_string();
    let mut info = Value::Null;
    let seen = wait_until(Duration::from_secs(20), || {
        let r = get(&format!("/api/task/info/{id}"), "Bearer tok-123");
        info = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        r.status == 200 && info["state"] == "FAILURE"
    });
    assert!(seen, "{info}");
    let a = info["args"].as_str().unwrap();
    assert!(
        a.contains("'password': '***'") && a.contains("'user': 'bob'"),
        "{a}"
    );
    assert!(!info.to_string().contains("hunter2"));
    let listed = get("/api/tasks", &basic).text();
    assert!(listed.contains(&id) && !listed.contains("hunter2"));

    let html = get(&format!("/task/{id}"), &basic).text();
    assert!(!html.contains("hunter2"));
    assert!(!html.contains("<script>window"), "{html}");
    assert!(
        html.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=&quot;")
    );
    let r = get("/task/%3Cscript%3Ealert(1)%3C%2Fscript%3E", &basic);
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("<script>alert") && r.text().contains("&lt;script&gt;alert(1)"));

    assert_eq!(refused() - refused_before, 3.0);

    // A worker that stops is shown offline (its worker-offline event), on the page and the API.
    let alive = |path: &str| -> Value {
        let r = get(path, "Bearer tok-123");
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    };
    assert_eq!(alive("/api/workers?status=1")["w1@host1"], true);
    worker.stop();
    let offline = wait_until(Duration::from_secs(15), || {
        alive("/api/workers?status=1")["w1@host1"] == false
            && alive("/api/dashboard")["workers"][0]["alive"] == false
    });
    assert!(offline, "{}", alive("/api/dashboard")["workers"]);
}

/// A reload that replaces the correlator (new settings) keeps the dashboard running with the
/// tasks it showed; new tasks keep arriving.
#[test]
fn a_reload_keeps_the_dashboard_and_its_tasks() {
    let (redis, _worker, agent, ui, _tel) = start_stack("");
    let first = run_client(&redis.url(), &["fail", "--wait", "30"]);
    let first = first["ids"][0].as_str().unwrap().to_string();
    let info = |id: &str| get_json(&ui, &format!("/api/task/info/{id}"));
    assert!(wait_until(Duration::from_secs(20), || {
        info(&first).is_some_and(|(s, v)| s == 200 && v["state"] == "FAILURE")
    }));

    let text = std::fs::read_to_string(agent.config_path()).unwrap();
    let changed = text.replace(
        "metrics_interval: 200ms",
        "metrics_interval: 300ms\n    max_tasks: 5000",
    );
    assert_ne!(text, changed);
    std::fs::write(agent.config_path(), changed).unwrap();
    let pid = agent.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-s", "HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .stderr()
            .contains("Configuration reloaded.")),
        "{}",
        agent.output()
    );
    assert!(
        !agent.stderr().contains("Extensions changed"),
        "{}",
        agent.output()
    );
    let reloaded = agent
        .stderr()
        .lines()
        .find(|l| l.contains("Configuration reloaded."))
        .unwrap_or_default()
        .to_string();
    eprintln!("{reloaded}");
    // The correlator itself was replaced: its new instance fills the view the page reads.
    assert!(
        reloaded.contains(r#"started=["connector/celery_correlate"]"#),
        "{reloaded}"
    );

    let second = run_client(&redis.url(), &["send", "shop.a", "[1]", "--wait", "30"]);
    let second = second["ids"][0].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(20), || {
            info(&second).is_some_and(|(s, v)| s == 200 && v["state"] == "SUCCESS")
        }),
        "{}",
        agent.output()
    );
    let (code, v) = info(&first).unwrap();
    assert_eq!((code, v["state"].as_str()), (200, Some("FAILURE")), "{v}");
    let tasks = get_ok(&ui, "/api/tasks");
    assert!(tasks.get(&first).is_some() && tasks.get(&second).is_some());
}

/// The control buttons in headless Chromium: with `read_only: false` a task page's Revoke
/// button (confirmed) ends a running task REVOKED at the worker; with the default `read_only`
/// the page has no button and a POST from the page is refused.
#[test]
fn revoke_button_revokes_a_running_task_and_read_only_has_none() {
    let (user, pass) = ("admin", "pw-for-buttons");
    let extra =
        format!("    read_only: false\n    auth: {{ username: {user}, password: {pass} }}\n");
    let (redis, _worker, agent, ui, _tel) = start_stack(&extra);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let sent = run_client(&redis.url(), &["send", "shop.sleep", "[30]"]);
    let id = sent["ids"][0].as_str().unwrap().to_string();
    let info = |id: &str| -> Value {
        http_request(
            &ui,
            "GET",
            &format!("/api/task/info/{id}"),
            &[("Authorization", &auth)],
            &[],
        )
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or(Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(20), || info(&id)["state"] == "STARTED"),
        "the task never started: {}\n{}",
        info(&id),
        agent.output()
    );

    let browser = Browser::start();
    // The browser sends the credentials as a user's browser would after the login prompt.
    browser.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(&json!({"cmd": "Network.enable", "params": {}})),
    );
    browser.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(&json!({"cmd": "Network.setExtraHTTPHeaders", "params": {"headers": {"Authorization": auth}}})),
    );
    browser.goto(&format!("http://{ui}/task/{id}"));
    assert_eq!(
        browser.wait_for(
            "return document.querySelector('#revoke') !== null",
            Duration::from_secs(10)
        ),
        true,
        "no revoke button"
    );
    // The confirmation is asked (and accepted); the message names the task.
    browser.eval("window.__asked = []; window.confirm = (m) => { window.__asked.push(m); return true; }; return null;");
    browser.eval("document.querySelector('#revoke').click(); return null;");
    let shown = browser.wait_for(
        "const t = document.querySelector('#control-result').textContent; return t.length > 0 ? t : null;",
        Duration::from_secs(10),
    );
    assert_eq!(shown, format!("Revoked '{id}'"), "{}", agent.output());
    let asked = browser.eval("return window.__asked;");
    assert!(asked[0].as_str().unwrap().contains(&id), "{asked}");
    // Revoking a running task without `terminate` only keeps it from running again: Terminate
    // stops it, and the worker reports it REVOKED.
    browser.goto(&format!("http://{ui}/task/{id}"));
    browser.wait_for(
        "return document.querySelector('#terminate') !== null",
        Duration::from_secs(10),
    );
    browser.eval(
        "window.confirm = () => true; document.querySelector('#terminate').click(); return null;",
    );
    assert!(
        wait_until(Duration::from_secs(20), || info(&id)["state"] == "REVOKED"),
        "not REVOKED after the button: {}\n{}",
        info(&id),
        agent.output()
    );
    // Two confirmed presses, two revokes sent and counted.
    let before = scrape(&_tel).and_then(|m| {
        metric_value(
            &m,
            "celeriac_ui_control_total",
            &[("action", "task.revoke"), ("result", "ok")],
        )
    });
    assert_eq!(before, Some(2.0));
    drop(browser);
    drop(agent);

    // Read-only (the default): no buttons, and a POST from the page is refused.
    let (_redis2, _w2, agent2, ui2, _tel2) = start_stack("");
    let sent = run_client(&_redis2.url(), &["send", "shop.sleep", "[30]"]);
    let id2 = sent["ids"][0].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(20), || {
        http_get(&ui2, &format!("/api/task/info/{id2}")).is_some_and(|(s, _)| s == 200)
    }));
    let browser = Browser::start();
    browser.goto(&format!("http://{ui2}/task/{id2}"));
    assert_eq!(
        browser.wait_for(
            "return document.querySelector('#read-only') !== null",
            Duration::from_secs(10)
        ),
        true
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('button[data-post]').length;"),
        0
    );
    browser.eval(&format!(
        "window.__r = null; fetch('/api/task/revoke/{id2}', {{method: 'POST'}}).then(async r => {{ window.__r = r.status + ' ' + await r.text(); }}); return null;"
    ));
    let r = browser.wait_for("return window.__r;", Duration::from_secs(10));
    assert_eq!(r, "403 Read only mode is enabled", "{}", agent2.output());
}

/// Every `href`, `src` and `action` attribute value of an HTML page.
fn html_links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\"", "action=\"", "data-post=\""] {
        for part in html.split(attr).skip(1) {
            out.push(part.split('"').next().unwrap_or("").replace("&amp;", "&"));
        }
    }
    out
}

#[test]
fn url_prefix_serves_everything_under_it_and_nothing_at_the_root() {
    const P: &str = "/ops/flower";
    let (redis, _worker, agent, ui, _tel) = start_stack_at(
        "    url_prefix: /ops/flower/\n    read_only: false\n    auth: { bearer_token: t0k }\n",
        P,
    );
    let auth = [("Authorization", "Bearer t0k")];
    let get = |path: &str| http_request(&ui, "GET", path, &auth, &[]).expect("an answer");
    let sent = run_client(&redis.url(), &["send", "shop.a", "[2]"]);
    let id = sent["ids"][0].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(20), || {
            get(&format!("{P}/api/task/info/{id}")).status == 200
        }),
        "{}",
        agent.output()
    );
    // Under the prefix: the API, Flower's metrics and health check, the pages and assets.
    let tasks: Value = serde_json::from_slice(&get(&format!("{P}/api/tasks")).body).unwrap();
    assert!(tasks.get(&id).is_some(), "{tasks}");
    assert_eq!(get(&format!("{P}/healthcheck")).text(), "OK");
    assert!(get(&format!("{P}/metrics"))
        .text()
        .contains("flower_events_total{"));
    for asset in ["/static/app.js", "/static/style.css", "/static/control.js"] {
        assert_eq!(get(&format!("{P}{asset}")).status, 200, "{asset}");
    }
    // Nothing at the root, not even the health check (as Flower's rewritten routes).
    for path in [
        "/",
        "/api/tasks",
        "/healthcheck",
        "/metrics",
        "/static/app.js",
        &format!("/task/{id}"),
        "/opsx/flower/",
    ] {
        assert_eq!(get(path).status, 404, "{path}");
    }
    // The prefix without its slash leads to the page.
    let r = get(P);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("/ops/flower/"))
    );
    // Every link, asset and form of the pages carries the prefix.
    for page in [format!("{P}/"), format!("{P}/task/{id}")] {
        let r = get(&page);
        assert_eq!(r.status, 200, "{page}");
        let html = r.text();
        let links = html_links(&html);
        assert!(links.len() >= 3, "{page}: {links:?}");
        // The trace link goes to another site (`trace_url`); every other link stays under P.
        for l in links
            .iter()
            .filter(|l| !l.starts_with("http://tempo.example/"))
        {
            assert!(
                l.starts_with(&format!("{P}/")),
                "{page}: link {l} outside the prefix"
            );
        }
    }
    assert!(get(&format!("{P}/"))
        .text()
        .contains("<meta name=\"url-prefix\" content=\"/ops/flower\">"));
    // A write under the prefix works; at the root it is not routed.
    let r = http_request(&ui, "POST", &format!("/api/task/revoke/{id}"), &auth, &[]).unwrap();
    assert_eq!(r.status, 404);
    let r = http_request(
        &ui,
        "POST",
        &format!("{P}/api/task/revoke/{id}"),
        &auth,
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The live page under the prefix: its stream and links work in Chromium (bearer auth is
    // not something a browser sends, so a second agent without auth, read-only).
    drop(agent);
    let (ui2, tel2) = (free_port(), free_port());
    let agent = Agent::start(
        bin(),
        &config(&redis.url(), ui2, tel2, "    url_prefix: ops/flower\n"),
    );
    let ui2 = format!("127.0.0.1:{ui2}");
    assert!(wait_until(Duration::from_secs(20), || {
        http_get(&ui2, &format!("{P}/healthcheck")).is_some_and(|(s, _)| s == 200)
    }));
    let sent = run_client(&redis.url(), &["send", "shop.a", "[4]"]);
    let id2 = sent["ids"][0].as_str().unwrap().to_string();
    let browser = Browser::start();
    browser.goto(&format!("http://{ui2}{P}/"));
    let live = browser.wait_for(
        &format!("return document.querySelector('#conn').textContent === 'live' && document.querySelector('#tasks tr[data-uuid=\"{id2}\"] a') !== null;"),
        Duration::from_secs(20),
    );
    assert_eq!(live, true, "{}", agent.output());
    let href = browser.eval(&format!(
        "return document.querySelector('#tasks tr[data-uuid=\"{id2}\"] a').getAttribute('href');"
    ));
    assert_eq!(href, format!("{P}/task/{id2}"));
    browser.eval(&format!(
        "document.querySelector('#tasks tr[data-uuid=\"{id2}\"] a').click(); return null;"
    ));
    let landed = browser.wait_for(
        "return location.pathname.includes('/task/') && document.querySelector('#task') !== null ? location.pathname : null;",
        Duration::from_secs(10),
    );
    assert_eq!(landed, format!("{P}/task/{id2}"));
    drop(browser);
    drop(agent);
}

/// `curl` over HTTPS trusting only `ca`: (status, body), or None when no TLS answer.
fn curl_https(ca: &std::path::Path, url: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

#[test]
fn tls_serves_the_dashboard_over_https_only() {
    let pki = pki::Pki::generate();
    let tls = format!(
        "    tls: {{ cert_file: {}, key_file: {} }}\n",
        pki.server_cert().display(),
        pki.server_key().display()
    );
    let redis = RedisServer::start();
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default());
    worker.assert_ready(Duration::from_secs(60));
    let (ui, tel) = (free_port(), free_port());
    let agent = Agent::start(bin(), &config(&redis.url(), ui, tel, &tls));
    let base = format!("https://localhost:{ui}");
    assert!(
        wait_until(Duration::from_secs(20), || curl_https(
            &pki.ca(),
            &format!("{base}/healthcheck")
        )
        .is_some_and(|(s, b)| s == 200 && b == "OK")),
        "{}",
        agent.output()
    );
    let sent = run_client(&redis.url(), &["send", "shop.a", "[1]"]);
    let id = sent["ids"][0].as_str().unwrap().to_string();
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            last = curl_https(&pki.ca(), &format!("{base}/api/task/info/{id}"));
            last.as_ref()
                .is_some_and(|(s, b)| *s == 200 && b.contains("\"SUCCESS\""))
        }),
        "{last:?}\n{}",
        agent.output()
    );
    let (status, page) = curl_https(&pki.ca(), &format!("{base}/")).unwrap();
    assert!(status == 200 && page.contains("app.js"));
    // A client that does not trust the CA, and plaintext HTTP, get nothing.
    let other_ca = pki.stranger_cert();
    assert!(curl_https(&other_ca, &format!("{base}/healthcheck")).is_none());
    assert!(!matches!(
        http_get(&format!("127.0.0.1:{ui}"), "/healthcheck"),
        Some((200, _))
    ));
    // The refused handshakes are counted.
    let metrics = http_get(&format!("127.0.0.1:{tel}"), "/metrics").unwrap().1;
    let failed = metric_value(
        &parse_prometheus_text(&metrics),
        "celeriac_ui_tls_handshake_failures_total",
        &[],
    )
    .unwrap_or(0.0);
    assert!(failed >= 2.0, "{metrics}");
    drop(agent);

    // A missing certificate file: `validate` names the setting and the file.
    let (ok, err) = validate_config(
        bin(),
        &config(
            &redis.url(),
            free_port(),
            free_port(),
            &format!(
                "    tls: {{ cert_file: /nonexistent/missing.pem, key_file: {} }}\n",
                pki.server_key().display()
            ),
        ),
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("tls.cert_file") && err.contains("missing.pem"),
        "{err}"
    );
}

/// The `data-uuid` of each row of a tasks-page table, in order.
fn row_ids(html: &str) -> Vec<String> {
    html.split("<tr data-uuid=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn tasks_page_and_worker_page_against_a_real_worker() {
    let (redis, _worker, agent, ui, _tel) = start_stack("");
    let url = redis.url();
    // 120 tasks that succeed, 3 that fail, one that keeps running.
    run_client(&url, &["fill_queue", "celery", "80"]);
    let failing: BTreeSet<String> = (0..3)
        .map(|i| {
            run_client(&url, &["send", "shop.send_receipt", &format!("[{i}]")])["ids"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let sleeping = run_client(&url, &["send", "shop.sleep", "[60]"])["ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let count = |q: &str| {
        get_json(&ui, &format!("/api/tasks?{q}"))
            .and_then(|(_, v)| v.as_object().map(|m| m.len()))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || count("state=SUCCESS") >= 120
            && count("state=FAILURE") == 3
            && count("state=STARTED") == 1),
        "{}",
        agent.output()
    );

    // Flower's page order (started, newest first; never started last), computed here from
    // the API's tasks, against the page's rows over the whole view.
    let all = get_ok(&ui, "/api/tasks");
    let mut expected: Vec<(Option<f64>, String)> = all
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, t)| (t["started"].as_f64(), id.clone()))
        .collect();
    expected.sort_by(|a, b| {
        b.0.is_some()
            .cmp(&a.0.is_some())
            .then(b.0.unwrap_or(0.0).total_cmp(&a.0.unwrap_or(0.0)))
            .then(b.1.cmp(&a.1))
    });
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    let total = expected.len();
    assert!(total >= 124, "{total}");
    let page = |q: &str| {
        let (s, html) = http_get(&ui, &format!("/tasks?{q}")).unwrap();
        assert_eq!(s, 200, "/tasks?{q}: {html}");
        html
    };
    let first = page("");
    assert!(first.contains(&format!("of {total} tasks")), "{first}");
    assert_eq!(row_ids(&first), expected[..50].to_vec());
    // The running task was sent last, so it starts among the last: Celery does not promise it
    // starts after every task sent before it (a prefork pool starts several at once).
    assert!(
        row_ids(&first).contains(&sleeping),
        "the running task is on the first page"
    );
    let third = page("length=50&page=3");
    assert_eq!(row_ids(&third), expected[100..total.min(150)].to_vec());
    // Filters: state, task name with worker, Flower's search.
    let failed = page("state=FAILURE");
    assert_eq!(
        row_ids(&failed).into_iter().collect::<BTreeSet<_>>(),
        failing
    );
    assert!(failed.contains(&format!("of 3 tasks (filtered from {total} total)")));
    let named = page("taskname=shop.send_receipt&workername=w1%40host1");
    assert_eq!(
        row_ids(&named).into_iter().collect::<BTreeSet<_>>(),
        failing
    );
    let searched = page("search=state%3Afailure+name%3Asend_receipt");
    assert_eq!(
        row_ids(&searched).into_iter().collect::<BTreeSet<_>>(),
        failing
    );
    // Sort by another column, both ways.
    let by_name = page("sort=-name&length=15");
    assert_eq!(row_ids(&by_name)[0], sleeping);
    let by_name = page("sort=name&length=500");
    let names: Vec<String> = row_ids(&by_name)
        .iter()
        .map(|id| all[id]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let (s, bad) = http_get(&ui, "/tasks?search=%28").unwrap();
    assert_eq!(s, 400, "{bad}");

    // The worker page: Flower's tabs from the worker's own answers.
    let workers = get_ok(&ui, "/api/workers?refresh=1");
    let w = &workers["w1@host1"];
    let (s, html) = http_get(&ui, "/worker/w1%40host1").unwrap();
    assert_eq!(s, 200, "{html}");
    for tab in [
        "pool", "broker", "queues", "tasks", "limits", "config", "system",
    ] {
        assert!(html.contains(&format!("id=\"tab-{tab}\"")), "tab {tab}");
    }
    let max = w["stats"]["pool"]["max-concurrency"].as_i64().unwrap();
    assert!(
        html.contains(&format!("<th>Max concurrency</th><td>{max}</td>")),
        "{html}"
    );
    let pid = w["stats"]["pid"].as_i64().unwrap();
    assert!(html.contains(&format!("<th>Worker PID</th><td>{pid}</td>")));
    let host = w["stats"]["broker"]["hostname"].as_str().unwrap();
    assert!(html.contains(&format!("<th>Hostname</th><td>{host}</td>")));
    assert!(html.contains("<td>celery</td>"), "queues tab");
    assert!(
        html.contains(&format!("href=\"/task/{sleeping}\"")),
        "active task"
    );
    assert!(html.contains("<td>shop.charge_card</td>"), "limits tab");
    let processed = w["stats"]["total"]["shop.charge_card"].as_i64().unwrap();
    assert!(html.contains(&format!("<th>shop.charge_card</th><td>{processed}</td>")));
    assert!(html.contains("<th>maxrss</th>"), "system tab");
    for (k, v) in w["conf"].as_object().unwrap() {
        if !v.is_null() {
            assert!(html.contains(&format!(">{k}</a></th>")), "conf {k}");
        }
    }
    let (s, html) = http_get(&ui, "/worker/nobody%40nowhere").unwrap();
    assert_eq!(s, 404);
    assert!(
        html.contains("Unknown worker &#39;nobody@nowhere&#39;"),
        "{html}"
    );

    // In Chromium: sort by clicking a header, page with Next, filter with the form, and the
    // worker page's tabs switch.
    let browser = Browser::start();
    browser.goto(&format!("http://{ui}/tasks"));
    browser.eval("document.querySelector('th[data-sort=\"name\"] a').click(); return null;");
    let sorted = browser.wait_for(
        "return location.search.includes('sort=name') ? document.querySelector('th[data-sort=\"name\"]').getAttribute('aria-sort') : null;",
        Duration::from_secs(10),
    );
    assert_eq!(sorted, "ascending");
    browser.eval("document.querySelector('#tasks-pager a[rel=\"next\"]').click(); return null;");
    let page2 = browser.wait_for(
        "return location.search.includes('page=2') ? document.querySelector('#tasks-info').dataset.page : null;",
        Duration::from_secs(10),
    );
    assert_eq!(page2, "2");
    browser.eval(
        "const f = document.querySelector('#tasks-filter'); f.state.value = 'FAILURE'; f.submit(); return null;",
    );
    let rows = browser.wait_for(
        "return location.search.includes('state=FAILURE') ? [...document.querySelectorAll('#tasks-table tbody tr')].map(r => r.dataset.uuid) : null;",
        Duration::from_secs(10),
    );
    let rows: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(rows, failing);
    browser.goto(&format!("http://{ui}/worker/w1%40host1"));
    let shown = "return [...document.querySelectorAll('.tab-pane')].filter(p => getComputedStyle(p).display !== 'none').map(p => p.id);";
    assert_eq!(
        browser.wait_for(shown, Duration::from_secs(10)),
        json!(["tab-pool"])
    );
    browser.eval("document.querySelector('#worker-tab-queues').click(); return null;");
    assert_eq!(browser.eval(shown), json!(["tab-queues"]));
    browser.screenshot("celery_ui-worker-page.png");
    drop(browser);
    drop(agent);
}
