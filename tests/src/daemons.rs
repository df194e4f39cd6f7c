//! The daemon lab: real Debian daemons as the peers of the live agent (tests/tests/daemons_*.rs).
//!
//! Each test builds its own lab (prefix `iwdN`), starts the agent with an NDJSON event log and
//! no per-source sample limit (`--sample.rate 0`, so every sample reaches userspace), starts the
//! daemon as a child of `ip netns exec` (killed and waited by a guard, even on panic), with its
//! configuration, pid, logs and state in a temporary directory removed at the end, then drives
//! a real client and checks the event log, the live report and /metrics. Every wait is bounded.
//! Configuration templates and small scripts are in `tests/daemons/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use xtask::{
    HomeLab, LabOptions,
    agent::Agent,
    metrics::{http_get, scrape},
};

use crate::{TempDir, agent_bin, temp_dir};

// ---------------------------------------------------------------------------------------------
// JSON of the event log and the report, with serde_json; missing fields read as empty.

pub type Json = serde_json::Value;

pub trait JsonExt {
    fn items(&self) -> &[Json];
    /// Strings of an array field.
    fn strs(&self, key: &str) -> Vec<&str>;
}

impl JsonExt for Json {
    fn items(&self) -> &[Json] {
        self.as_array().map_or(&[], Vec::as_slice)
    }
    fn strs(&self, key: &str) -> Vec<&str> {
        self[key].items().iter().filter_map(Json::as_str).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Debug, Clone)]
pub struct Event {
    pub line: String,
    pub v: Json,
}

impl Event {
    pub fn s(&self, key: &str) -> Option<&str> {
        self.v[key].as_str()
    }
    pub fn n(&self, key: &str) -> Option<f64> {
        self.v[key].as_f64()
    }
    /// Absent booleans are false (the log leaves false flags out).
    pub fn flag(&self, key: &str) -> bool {
        self.v[key].as_bool().unwrap_or(false)
    }
    pub fn kind(&self) -> &str {
        self.s("kind").unwrap_or("")
    }
    pub fn records(&self) -> Vec<(String, String, String)> {
        self.v["records"]
            .items()
            .iter()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                (f("name"), f("type"), f("data"))
            })
            .collect()
    }
}

/// Complete lines of the event log; a malformed complete line fails the test.
pub fn read_events(path: &Path) -> Vec<Event> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Event {
            line: l.to_owned(),
            v: serde_json::from_str(l).unwrap_or_else(|e| panic!("event log line is not JSON ({e}): {l}")),
        })
        .collect()
}

pub fn show(events: &[Event], kinds: &[&str]) -> String {
    let lines: Vec<&str> = events.iter().filter(|e| kinds.contains(&e.kind())).map(|e| e.line.as_str()).collect();
    if lines.is_empty() { format!("(no {kinds:?} events; {} events in all)", events.len()) } else { lines.join("\n") }
}

/// A named predicate on one event.
pub type Check<'a> = (&'a str, &'a dyn Fn(&Event) -> bool);

/// Polls the event log every 200 ms until every check holds, for at most `timeout`; fails
/// naming the checks that never held and the logged events of `kinds`.
pub fn wait_events(path: &Path, timeout: Duration, kinds: &[&str], checks: &[Check<'_>]) -> Vec<Event> {
    let end = Instant::now() + timeout;
    loop {
        let events = read_events(path);
        let missing: Vec<&str> = checks.iter().filter(|(_, f)| !events.iter().any(f)).map(|(what, _)| *what).collect();
        if missing.is_empty() {
            return events;
        }
        if Instant::now() > end {
            panic!(
                "after {timeout:?}, no event in the log matched:\n  - {}\nlogged {kinds:?} events:\n{}",
                missing.join("\n  - "),
                show(&events, kinds)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Lab, agent, daemons

/// A test's working directory (configurations, pid files, logs, state, the event log), from
/// the shared temporary-directory helper: removed, with everything the daemons wrote, when
/// dropped.
pub struct Workdir(TempDir);

impl Workdir {
    pub fn new(prefix: &str) -> Self {
        Self(temp_dir(&format!("iotwatch-daemons-{prefix}")))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    pub fn mkdir(&self, name: &str) -> String {
        fs::create_dir_all(self.path(name)).expect("mkdir");
        self.text(name)
    }
    /// Writes `tests/daemons/<template>` to `<dir>/<name>` with `@DIR@` and `vars` replaced.
    pub fn config(&self, template: &str, name: &str, vars: &[(&str, &str)]) -> String {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemons").join(template);
        let mut text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        text = text.replace("@DIR@", &self.0.path().display().to_string());
        for (k, v) in vars {
            text = text.replace(k, v);
        }
        fs::write(self.path(name), text).expect("write config");
        self.text(name)
    }
}

pub fn lab(prefix: &str, ipv6: bool) -> HomeLab {
    let lab = HomeLab::create(LabOptions { prefix: prefix.into(), devices: 2, ipv6, static_neighbors: false })
        .expect("create the lab");
    // Interfaces coming up send IGMP/ND for a moment; let that pass before the agent starts.
    std::thread::sleep(Duration::from_secs(2));
    lab
}

/// The agent on the lab's bridge, TC, every sample kept, events to `<dir>/events.ndjson`.
pub fn start_agent(lab: &HomeLab, dir: &Workdir, port: u16) -> (Agent, PathBuf) {
    start_agent_with(lab, dir, port, &[])
}

/// [`start_agent`] with more arguments (its stderr in `<dir>/agent.log`, overwritten).
pub fn start_agent_with(lab: &HomeLab, dir: &Workdir, port: u16, more: &[&str]) -> (Agent, PathBuf) {
    start_agent_env(lab, dir, port, more, &[])
}

/// [`start_agent_with`] with environment variables for the agent.
pub fn start_agent_env(
    lab: &HomeLab,
    dir: &Workdir,
    port: u16,
    more: &[&str],
    env: &[(&str, &Path)],
) -> (Agent, PathBuf) {
    let events = dir.path("events.ndjson");
    let listen = format!("127.0.0.1:{port}");
    let mut extra =
        vec!["--events".to_owned(), events.display().to_string(), "--sample.rate".to_owned(), "0".to_owned()];
    extra.extend(more.iter().map(|a| (*a).to_owned()));
    let log = dir.path("agent.log");
    let mut agent = Agent::spawn_with_env(&agent_bin(), &lab.bridge, "tc", &listen, &extra, Some(&log), env)
        .expect("start the agent");
    agent.wait_ready(Duration::from_secs(20)).expect("agent ready");
    (agent, events)
}

/// A daemon running as a child of `ip netns exec`; SIGTERM (then SIGKILL) and wait on drop.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(lab: &HomeLab, ns: &str, dir: &Workdir, name: &str, args: &[&str]) -> Self {
        let log = dir.path(&format!("{name}.out"));
        let f = fs::File::create(&log).expect("daemon log");
        let child = lab
            .exec(ns, args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name: name.to_owned(), child: Some(child), log }
    }
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Fails with the daemon's output if it has exited.
    pub fn check_alive(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            panic!("{} exited early ({status}); its output:\n{}", self.name, self.output());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs a client to completion in a namespace, bounded by `timeout(1)`; fails on error.
pub fn run(lab: &HomeLab, ns: &str, secs: u32, args: &[&str]) -> String {
    let secs = secs.to_string();
    let mut all = vec!["timeout", "-k", "2", secs.as_str()];
    all.extend_from_slice(args);
    let out = lab.exec(ns, &all).stdin(Stdio::null()).output().expect("run in namespace");
    assert!(
        out.status.success(),
        "{args:?} in {ns} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most 10 s) until something in `ns` listens on `port` (`-t` TCP, `-u` UDP).
pub fn wait_listening(lab: &HomeLab, ns: &str, proto: &str, port: u16, daemon: &mut Daemon) {
    let end = Instant::now() + Duration::from_secs(10);
    let filter = format!("sport = :{port}");
    loop {
        daemon.check_alive();
        let out = lab.exec(ns, &["ss", "-Hln", proto, &filter]).output().expect("ss");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "{} does not listen on {proto} port {port} after 10 s; its output:\n{}",
            daemon.name,
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub use xtask::metrics::total as sum;

/// /metrics counts events of each (mac, kind) and no sample was dropped.
pub fn check_metrics(agent: &Agent, want: &[(&str, &str)]) {
    let samples = scrape(&agent.listen).expect("scrape /metrics");
    for (mac, kind) in want {
        let n = sum(&samples, "iotwatch_events_total", &[("mac", mac), ("kind", kind)]);
        assert!(n > 0.0, "iotwatch_events_total{{mac=\"{mac}\",kind=\"{kind}\"}} is {n}, expected > 0");
    }
    let dropped = sum(&samples, "iotwatch_samples_total", &[("outcome", "dropped")]);
    assert_eq!(dropped, 0.0, "iotwatch_samples_total{{outcome=\"dropped\"}}");
}

/// The live report, parsed, and its text.
pub fn report(agent: &Agent) -> (Json, String) {
    let text = http_get(&agent.listen, "/api/v1/report", Duration::from_secs(5)).expect("GET /api/v1/report");
    let body = match text.find("\r\n\r\n") {
        Some(i) if text.starts_with("HTTP/") => text[i + 4..].to_owned(),
        _ => text,
    };
    (serde_json::from_str(&body).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {body}")), body)
}

pub fn device<'a>(report: &'a Json, mac: &str) -> &'a Json {
    report["devices"]
        .items()
        .iter()
        .find(|d| d["mac"].as_str() == Some(mac))
        .unwrap_or_else(|| panic!("device {mac} missing from the report's devices"))
}

/// Polls the report (every 200 ms, at most 10 s) until `check` holds on it.
pub fn wait_report(agent: &Agent, what: &str, check: impl Fn(&Json) -> bool) -> Json {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (r, body) = report(agent);
        if check(&r) {
            return r;
        }
        assert!(Instant::now() < end, "after 10 s the report still lacks {what}; devices: {}", devices_text(&r, &body));
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn devices_text(r: &Json, body: &str) -> String {
    match body.find("\"devices\"") {
        Some(i) => body[i..].chars().take(4000).collect(),
        None => format!("{r:?}"),
    }
}

pub fn same(got: Option<&str>, want: &str) -> bool {
    got == Some(want)
}

pub fn num_is(got: Option<f64>, want: f64) -> bool {
    got == Some(want)
}
