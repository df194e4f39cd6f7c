//! Real Debian daemons as the peers: the agent on the lab bridge must log what nginx, dnsmasq,
//! chrony, mosquitto, avahi-daemon, minidlna and OpenSSL (and their real clients) put on the wire.
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
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iotwatch_tests::{agent_bin, privileged};
use xtask::{
    HomeLab, LabOptions, Sample,
    agent::Agent,
    metrics::{http_get, scrape},
};

// ---------------------------------------------------------------------------------------------
// JSON of the event log and the report, with serde_json; missing fields read as empty.

type Json = serde_json::Value;

trait JsonExt {
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
struct Event {
    line: String,
    v: Json,
}

impl Event {
    fn s(&self, key: &str) -> Option<&str> {
        self.v[key].as_str()
    }
    fn n(&self, key: &str) -> Option<f64> {
        self.v[key].as_f64()
    }
    /// Absent booleans are false (the log leaves false flags out).
    fn flag(&self, key: &str) -> bool {
        self.v[key].as_bool().unwrap_or(false)
    }
    fn kind(&self) -> &str {
        self.s("kind").unwrap_or("")
    }
    fn records(&self) -> Vec<(String, String, String)> {
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
fn read_events(path: &Path) -> Vec<Event> {
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

fn show(events: &[Event], kinds: &[&str]) -> String {
    let lines: Vec<&str> = events.iter().filter(|e| kinds.contains(&e.kind())).map(|e| e.line.as_str()).collect();
    if lines.is_empty() { format!("(no {kinds:?} events; {} events in all)", events.len()) } else { lines.join("\n") }
}

/// A named predicate on one event.
type Check<'a> = (&'a str, &'a dyn Fn(&Event) -> bool);

/// Polls the event log every 200 ms until every check holds, for at most `timeout`; fails
/// naming the checks that never held and the logged events of `kinds`.
fn wait_events(path: &Path, timeout: Duration, kinds: &[&str], checks: &[Check<'_>]) -> Vec<Event> {
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

/// A temporary directory removed (with everything the daemons wrote) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("iotwatch-daemons-{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create the temp dir");
        Self(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn mkdir(&self, name: &str) -> String {
        fs::create_dir_all(self.path(name)).expect("mkdir");
        self.text(name)
    }
    /// Writes `tests/daemons/<template>` to `<dir>/<name>` with `@DIR@` and `vars` replaced.
    fn config(&self, template: &str, name: &str, vars: &[(&str, &str)]) -> String {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemons").join(template);
        let mut text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        text = text.replace("@DIR@", &self.0.display().to_string());
        for (k, v) in vars {
            text = text.replace(k, v);
        }
        fs::write(self.path(name), text).expect("write config");
        self.text(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn lab(prefix: &str, ipv6: bool) -> HomeLab {
    let lab = HomeLab::create(LabOptions { prefix: prefix.into(), devices: 2, ipv6, static_neighbors: false })
        .expect("create the lab");
    // Interfaces coming up send IGMP/ND for a moment; let that pass before the agent starts.
    std::thread::sleep(Duration::from_secs(2));
    lab
}

/// The agent on the lab's bridge, TC, every sample kept, events to `<dir>/events.ndjson`.
fn start_agent(lab: &HomeLab, dir: &TempDir, port: u16) -> (Agent, PathBuf) {
    let events = dir.path("events.ndjson");
    let listen = format!("127.0.0.1:{port}");
    let extra = ["--events".to_owned(), events.display().to_string(), "--sample.rate".to_owned(), "0".to_owned()];
    let log = dir.path("agent.log");
    let mut agent =
        Agent::spawn(&agent_bin(), &lab.bridge, "tc", &listen, &extra, Some(&log)).expect("start the agent");
    agent.wait_ready(Duration::from_secs(20)).expect("agent ready");
    (agent, events)
}

/// A daemon running as a child of `ip netns exec`; SIGTERM (then SIGKILL) and wait on drop.
struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(lab: &HomeLab, ns: &str, dir: &TempDir, name: &str, args: &[&str]) -> Self {
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
    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Fails with the daemon's output if it has exited.
    fn check_alive(&mut self) {
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
fn run(lab: &HomeLab, ns: &str, secs: u32, args: &[&str]) -> String {
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
fn wait_listening(lab: &HomeLab, ns: &str, proto: &str, port: u16, daemon: &mut Daemon) {
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

fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// /metrics counts events of each (mac, kind) and no sample was dropped.
fn check_metrics(agent: &Agent, want: &[(&str, &str)]) {
    let samples = scrape(&agent.listen).expect("scrape /metrics");
    for (mac, kind) in want {
        let n = sum(&samples, "iotwatch_events_total", &[("mac", mac), ("kind", kind)]);
        assert!(n > 0.0, "iotwatch_events_total{{mac=\"{mac}\",kind=\"{kind}\"}} is {n}, expected > 0");
    }
    let dropped = sum(&samples, "iotwatch_samples_total", &[("outcome", "dropped")]);
    assert_eq!(dropped, 0.0, "iotwatch_samples_total{{outcome=\"dropped\"}}");
}

/// The live report, parsed, and its text.
fn report(agent: &Agent) -> (Json, String) {
    let text = http_get(&agent.listen, "/api/v1/report", Duration::from_secs(5)).expect("GET /api/v1/report");
    let body = match text.find("\r\n\r\n") {
        Some(i) if text.starts_with("HTTP/") => text[i + 4..].to_owned(),
        _ => text,
    };
    (serde_json::from_str(&body).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {body}")), body)
}

fn device<'a>(report: &'a Json, mac: &str) -> &'a Json {
    report["devices"]
        .items()
        .iter()
        .find(|d| d["mac"].as_str() == Some(mac))
        .unwrap_or_else(|| panic!("device {mac} missing from the report's devices"))
}

/// Polls the report (every 200 ms, at most 10 s) until `check` holds on it.
fn wait_report(agent: &Agent, what: &str, check: impl Fn(&Json) -> bool) -> Json {
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

fn devices_text(r: &Json, body: &str) -> String {
    match body.find("\"devices\"") {
        Some(i) => body[i..].chars().take(4000).collect(),
        None => format!("{r:?}"),
    }
}

fn same(got: Option<&str>, want: &str) -> bool {
    got == Some(want)
}

fn num_is(got: Option<f64>, want: f64) -> bool {
    got == Some(want)
}

// ---------------------------------------------------------------------------------------------
// 1. nginx: HTTP requests and responses, including a Range request for a firmware image.

#[test]
fn nginx_http_with_range() {
    if !privileged("nginx_http_with_range") {
        return;
    }
    let lab = lab("iwd1", false);
    let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
    let dir = TempDir::new("iwd1");
    for d in ["www/fw", "tmp"] {
        dir.mkdir(d);
    }
    let desc = "<?xml version=\"1.0\"?>\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device><friendlyName>IWD Camera</friendlyName></device></root>\n";
    fs::write(dir.path("www/rootdesc.xml"), desc).expect("write");
    // A firmware-like binary: 64 KiB, deterministic, not text.
    let fw: Vec<u8> = (0u32..65536).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(dir.path("www/fw/camera-2.1.bin"), &fw).expect("write");
    let listen = format!("{}:8815", d2.ip);
    let conf = dir.config("nginx.conf", "nginx.conf", &[("@LISTEN@", &listen)]);
    let (agent, events) = start_agent(&lab, &dir, 19481);
    let mut nginx = Daemon::spawn(
        &lab,
        &d2.ns,
        &dir,
        "nginx",
        &["nginx", "-p", &dir.text(""), "-c", &conf, "-e", &dir.text("nginx-error.log")],
    );
    wait_listening(&lab, &d2.ns, "-t", 8815, &mut nginx);

    let base = format!("http://{listen}");
    let body =
        run(&lab, &d1.ns, 10, &["curl", "-sS", "--fail", "-A", "iwd-camera/2.0", &format!("{base}/rootdesc.xml")]);
    assert_eq!(body, desc, "nginx served the description");
    let part = dir.path("part.bin");
    run(
        &lab,
        &d1.ns,
        10,
        &[
            "curl",
            "-sS",
            "--fail",
            "-A",
            "iwd-camera/2.0",
            "-r",
            "0-4095",
            "-o",
            &part.display().to_string(),
            &format!("{base}/fw/camera-2.1.bin"),
        ],
    );
    assert_eq!(fs::read(&part).expect("part"), fw[..4096], "nginx served the range");

    let (a, b) = (d1.mac.as_str(), d2.mac.as_str());
    let (aip, bip) = (d1.ip.to_string(), d2.ip.to_string());
    let host = listen.as_str();
    let fw_len = fw.len() as f64;
    let desc_len = desc.len() as f64;
    let req = |uri: &'static str| {
        let (a, aip, bip) = (a.to_owned(), aip.clone(), bip.clone());
        move |e: &Event| {
            e.kind() == "http"
                && same(e.s("src_mac"), &a)
                && same(e.s("src_ip"), &aip)
                && same(e.s("dst_ip"), &bip)
                && num_is(e.n("dst_port"), 8815.0)
                && same(e.s("method"), "GET")
                && same(e.s("uri"), uri)
                && same(e.s("host"), host)
                && same(e.s("user_agent"), "iwd-camera/2.0")
        }
    };
    let desc_req = req("/rootdesc.xml");
    let fw_req = req("/fw/camera-2.1.bin");
    let events = wait_events(
        &events,
        Duration::from_secs(15),
        &["http"],
        &[
            ("GET /rootdesc.xml from device 1 (host, user_agent, no range)", &|e| {
                desc_req(e) && e.s("range").is_none()
            }),
            ("GET /fw/camera-2.1.bin with range \"bytes=0-4095\"", &|e| {
                fw_req(e) && same(e.s("range"), "bytes=0-4095")
            }),
            ("200 response from device 2 with content_type text/xml and content_length", &|e| {
                e.kind() == "http"
                    && same(e.s("src_mac"), b)
                    && num_is(e.n("src_port"), 8815.0)
                    && num_is(e.n("status"), 200.0)
                    && same(e.s("content_type"), "text/xml")
                    && num_is(e.n("content_length"), desc_len)
            }),
            ("206 response from device 2 with content_range \"bytes 0-4095/65536\"", &|e| {
                e.kind() == "http"
                    && same(e.s("src_mac"), b)
                    && num_is(e.n("src_port"), 8815.0)
                    && num_is(e.n("status"), 206.0)
                    && same(e.s("content_range"), &format!("bytes 0-4095/{fw_len}"))
                    && num_is(e.n("content_length"), 4096.0)
                    && same(e.s("content_type"), "application/octet-stream")
            }),
        ],
    );
    // Exactly two requests and two responses on port 8815.
    let http: Vec<&Event> = events.iter().filter(|e| e.kind() == "http").collect();
    assert_eq!(
        http.iter().filter(|e| e.s("method").is_some()).count(),
        2,
        "two requests:\n{}",
        show(&events, &["http"])
    );
    assert_eq!(
        http.iter().filter(|e| e.n("status").is_some()).count(),
        2,
        "two responses:\n{}",
        show(&events, &["http"])
    );
    check_metrics(&agent, &[(a, "http"), (b, "http")]);
    nginx.check_alive();
}

// ---------------------------------------------------------------------------------------------
// 2. dnsmasq on the gateway: DHCP with a hostname, DNS for an Internet name, names in the report.

#[test]
fn dnsmasq_dhcp_and_dns() {
    if !privileged("dnsmasq_dhcp_and_dns") {
        return;
    }
    let lab = lab("iwd2", false);
    let d1 = lab.devices[0].clone();
    let gw = lab.gateway.clone();
    let dir = TempDir::new("iwd2");
    let (agent, events) = start_agent(&lab, &dir, 19482);
    let args = [
        "dnsmasq".to_owned(),
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        "--user=root".into(),
        "--group=root".into(),
        "--interface=eth0".into(),
        "--bind-interfaces".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--log-queries".into(),
        "--log-dhcp".into(),
        "--log-facility=-".into(),
        "--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h".into(),
        "--dhcp-authoritative".into(),
        "--host-record=cloud.example.test,203.0.113.10".into(),
        format!("--pid-file={}", dir.text("dnsmasq.pid")),
        format!("--dhcp-leasefile={}", dir.text("dnsmasq.leases")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dnsmasq = Daemon::spawn(&lab, &gw.ns, &dir, "dnsmasq", &args);
    wait_listening(&lab, &gw.ns, "-u", 67, &mut dnsmasq);
    wait_listening(&lab, &gw.ns, "-u", 53, &mut dnsmasq);

    // busybox udhcpc: DISCOVER, REQUEST with hostname camera1; -s /bin/true keeps the lab's
    // address (the lease is not applied).
    run(
        &lab,
        &d1.ns,
        20,
        &[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-x",
            "hostname:camera1",
            "-n",
            "-q",
            "-t",
            "3",
            "-T",
            "2",
            "-s",
            "/bin/true",
        ],
    );
    let leases = fs::read_to_string(dir.path("dnsmasq.leases")).unwrap_or_default();
    assert!(
        leases.contains(&d1.mac) && leases.contains("camera1"),
        "dnsmasq leased to camera1: {leases:?}\n{}",
        dnsmasq.output()
    );
    let answer = run(
        &lab,
        &d1.ns,
        10,
        &["dig", "+short", "+tries=1", "+time=3", &format!("@{}", gw.ip), "cloud.example.test", "A"],
    );
    assert_eq!(answer.trim(), "203.0.113.10", "dnsmasq answered the host record");
    run(&lab, &d1.ns, 10, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.10"]);

    let a = d1.mac.as_str();
    let gwmac = gw.mac.as_str();
    let aip = d1.ip.to_string();
    let dhcp_from_a = |t: &'static str| {
        move |e: &Event| {
            e.kind() == "dhcp"
                && same(e.s("src_mac"), a)
                && same(e.s("message_type"), t)
                && same(e.s("client_mac"), a)
                && same(e.s("hostname"), "camera1")
                && num_is(e.n("ip_version"), 4.0)
                && num_is(e.n("dst_port"), 67.0)
        }
    };
    let (discover, request) = (dhcp_from_a("DISCOVER"), dhcp_from_a("REQUEST"));
    wait_events(
        &events,
        Duration::from_secs(15),
        &["dhcp", "dns"],
        &[
            ("dhcp DISCOVER from device 1 with client_mac and hostname camera1", &discover),
            ("dhcp REQUEST from device 1 with client_mac and hostname camera1", &request),
            ("dhcp OFFER from the gateway to device 1's client_mac", &|e| {
                e.kind() == "dhcp"
                    && same(e.s("src_mac"), gwmac)
                    && same(e.s("message_type"), "OFFER")
                    && same(e.s("client_mac"), a)
            }),
            ("dhcp ACK from the gateway to device 1's client_mac", &|e| {
                e.kind() == "dhcp"
                    && same(e.s("src_mac"), gwmac)
                    && same(e.s("message_type"), "ACK")
                    && same(e.s("client_mac"), a)
            }),
            ("dns query from device 1 for cloud.example.test A", &|e| {
                e.kind() == "dns"
                    && same(e.s("src_mac"), a)
                    && same(e.s("src_ip"), &aip)
                    && num_is(e.n("dst_port"), 53.0)
                    && !e.flag("response")
                    && same(e.s("qname"), "cloud.example.test")
                    && same(e.s("qtype"), "A")
            }),
            ("dns response to device 1 with the A record 203.0.113.10", &|e| {
                e.kind() == "dns"
                    && same(e.s("src_mac"), gwmac)
                    && same(e.s("dst_mac"), a)
                    && num_is(e.n("src_port"), 53.0)
                    && e.flag("response")
                    && num_is(e.n("rcode"), 0.0)
                    && num_is(e.n("answers"), 1.0)
                    && same(e.s("qname"), "cloud.example.test")
                    && e.records().iter().any(|(n, t, d)| n == "cloud.example.test" && t == "A" && d == "203.0.113.10")
            }),
        ],
    );
    wait_report(&agent, "device 1 named camera1 and its peer 203.0.113.10 named cloud.example.test", |r| {
        let dev = device(r, a);
        dev.strs("names").contains(&"camera1")
            && dev["peers"]
                .items()
                .iter()
                .any(|p| p["ip"].as_str() == Some("203.0.113.10") && p.strs("names").contains(&"cloud.example.test"))
    });
    check_metrics(&agent, &[(a, "dhcp"), (a, "dns"), (gwmac, "dhcp"), (gwmac, "dns")]);
    dnsmasq.check_alive();
}

// ---------------------------------------------------------------------------------------------
// 3. chrony: a real NTP server (chronyd -x, local stratum 8) on two Internet addresses, and a
// real client (chronyd -Q) on device 1.

#[test]
fn chrony_ntp_client_and_server() {
    if !privileged("chrony_ntp_client_and_server") {
        return;
    }
    let lab = lab("iwd3", false);
    let d1 = lab.devices[0].clone();
    let inet = lab.internet.ns.clone();
    let dir = TempDir::new("iwd3");
    let server_conf = dir.config("chrony-server.conf", "chrony-server.conf", &[]);
    let client_conf = dir.config("chrony-client.conf", "chrony-client.conf", &[]);
    let (agent, events) = start_agent(&lab, &dir, 19483);
    let mut chronyd = Daemon::spawn(&lab, &inet, &dir, "chronyd-server", &["chronyd", "-x", "-d", "-f", &server_conf]);
    wait_listening(&lab, &inet, "-u", 123, &mut chronyd);
    // Let the local reference settle before the client asks.
    std::thread::sleep(Duration::from_millis(500));
    // -Q: measure the offset once and exit, never setting the clock; -t bounds it.
    run(&lab, &d1.ns, 30, &["chronyd", "-Q", "-t", "20", "-f", &client_conf]);

    let a = d1.mac.as_str();
    let aip = d1.ip.to_string();
    let servers = ["203.0.113.10", "198.51.100.10"];
    let client_to = |server: &'static str| {
        move |e: &Event| {
            e.kind() == "ntp"
                && same(e.s("src_mac"), a)
                && same(e.s("dst_ip"), server)
                && num_is(e.n("dst_port"), 123.0)
                && num_is(e.n("mode"), 3.0)
                && num_is(e.n("version"), 4.0)
        }
    };
    let server_from = |server: &'static str| {
        let aip = aip.clone();
        move |e: &Event| {
            e.kind() == "ntp"
                && same(e.s("src_ip"), server)
                && same(e.s("dst_ip"), &aip)
                && same(e.s("dst_mac"), a)
                && num_is(e.n("src_port"), 123.0)
                && num_is(e.n("mode"), 4.0)
                && num_is(e.n("stratum"), 8.0)
        }
    };
    let (c0, c1, s0, s1) =
        (client_to(servers[0]), client_to(servers[1]), server_from(servers[0]), server_from(servers[1]));
    let events = wait_events(
        &events,
        Duration::from_secs(15),
        &["ntp"],
        &[
            ("ntp mode 3 version 4 from device 1 to 203.0.113.10", &c0),
            ("ntp mode 3 version 4 from device 1 to 198.51.100.10", &c1),
            ("ntp mode 4 stratum 8 from 203.0.113.10 to device 1", &s0),
            ("ntp mode 4 stratum 8 from 198.51.100.10 to device 1", &s1),
        ],
    );
    // Every answer is one of the server's: nothing but mode 3 out and mode 4 back.
    for e in events.iter().filter(|e| e.kind() == "ntp") {
        let mode = e.n("mode");
        assert!(mode == Some(3.0) || mode == Some(4.0), "unexpected ntp mode: {}", e.line);
    }
    wait_report(&agent, "device 1's ntp_servers listing both servers", |r| {
        let got = device(r, a).strs("ntp_servers");
        servers.iter().all(|s| got.contains(s))
    });
    check_metrics(&agent, &[(a, "ntp"), (lab.gateway.mac.as_str(), "ntp")]);
    chronyd.check_alive();
}

// ---------------------------------------------------------------------------------------------
// 4. mosquitto: anonymous and authenticated CONNECTs, PUBLISH; the password never logged.

#[test]
fn mosquitto_mqtt_connect_and_publish() {
    if !privileged("mosquitto_mqtt_connect_and_publish") {
        return;
    }
    const PASSWORD: &str = "Zq7-iwd4-secret-pw";
    let lab = lab("iwd4", false);
    let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
    let dir = TempDir::new("iwd4");
    let passwd = dir.text("mosquitto.passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-c", "-b", &passwd, "camera", PASSWORD])
        .output()
        .expect("mosquitto_passwd");
    assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
    let bip = d2.ip.to_string();
    let conf = dir.config("mosquitto.conf", "mosquitto.conf", &[("@LISTEN_IP@", &bip)]);
    let (agent, events) = start_agent(&lab, &dir, 19484);
    let mut broker = Daemon::spawn(&lab, &d2.ns, &dir, "mosquitto", &["mosquitto", "-c", &conf]);
    wait_listening(&lab, &d2.ns, "-t", 1883, &mut broker);

    let pubargs = |id: &'static str, topic: &'static str, msg: &'static str| {
        vec![
            "mosquitto_pub",
            "-h",
            bip.as_str(),
            "-p",
            "1883",
            "-V",
            "mqttv311",
            "-q",
            "0",
            "-i",
            id,
            "-t",
            topic,
            "-m",
            msg,
        ]
    };
    run(&lab, &d1.ns, 10, &pubargs("iwd-anon", "home/iwd/temperature", "21.5"));
    let mut with_creds = pubargs("iwd-auth", "home/iwd/door", "open!");
    with_creds.extend(["-u", "camera", "-P", PASSWORD]);
    run(&lab, &d1.ns, 10, &with_creds);

    let a = d1.mac.as_str();
    let from_a = |e: &Event, t: &str| {
        e.kind() == "mqtt" && same(e.s("src_mac"), a) && num_is(e.n("dst_port"), 1883.0) && same(e.s("packet_type"), t)
    };
    let events_path = events.clone();
    wait_events(
        &events,
        Duration::from_secs(15),
        &["mqtt"],
        &[
            ("mqtt CONNECT client_id iwd-anon without credentials", &|e| {
                from_a(e, "CONNECT")
                    && same(e.s("client_id"), "iwd-anon")
                    && e.v["has_credentials"].as_bool() == Some(false)
            }),
            ("mqtt CONNECT client_id iwd-auth with credentials", &|e| {
                from_a(e, "CONNECT")
                    && same(e.s("client_id"), "iwd-auth")
                    && e.v["has_credentials"].as_bool() == Some(true)
            }),
            ("mqtt PUBLISH topic home/iwd/temperature, 4 payload bytes", &|e| {
                from_a(e, "PUBLISH") && same(e.s("topic"), "home/iwd/temperature") && num_is(e.n("payload_bytes"), 4.0)
            }),
            ("mqtt PUBLISH topic home/iwd/door, 5 payload bytes", &|e| {
                from_a(e, "PUBLISH") && same(e.s("topic"), "home/iwd/door") && num_is(e.n("payload_bytes"), 5.0)
            }),
        ],
    );
    let log = fs::read_to_string(&events_path).expect("event log");
    assert!(!log.contains(PASSWORD), "the MQTT password appears in the event log:\n{log}");
    let (_, body) = report(&agent);
    assert!(!body.contains(PASSWORD), "the MQTT password appears in the report");
    assert!(!agent.stderr_text().contains(PASSWORD), "the MQTT password appears in the agent's output");
    let broker_log = broker.output();
    assert!(
        broker_log.contains("iwd-auth") && broker_log.contains("u'camera'"),
        "mosquitto accepted the user: {broker_log}"
    );
    check_metrics(&agent, &[(a, "mqtt")]);
    broker.check_alive();
}

// ---------------------------------------------------------------------------------------------
// 5. avahi-daemon (no D-Bus, own /run and services dir in a private mount namespace) announces
// its host name and a static service on start.

#[test]
fn avahi_mdns_announcements() {
    if !privileged("avahi_mdns_announcements") {
        return;
    }
    const HOST: &str = "iwd-cam5";
    let lab = lab("iwd5", false);
    let d2 = lab.devices[1].clone();
    let dir = TempDir::new("iwd5");
    let conf = dir.config("avahi-daemon.conf", "avahi-daemon.conf", &[("@HOST@", HOST)]);
    let run_dir = dir.mkdir("run");
    dir.mkdir("run/avahi-daemon");
    let services = dir.mkdir("services");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("daemons/iwd-camera.service"),
        dir.path("services/iwd-camera.service"),
    )
    .expect("copy service");
    let (agent, events) = start_agent(&lab, &dir, 19485);
    // /run/avahi-daemon (pid, socket) and /etc/avahi/services are compiled-in paths: give this
    // instance its own through bind mounts that only its mount namespace sees.
    let script = format!(
        "mount --bind {run_dir} /run && mount --bind {services} /etc/avahi/services && \
         exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title --debug"
    );
    let mut avahi = Daemon::spawn(
        &lab,
        &d2.ns,
        &dir,
        "avahi-daemon",
        &["unshare", "-m", "--propagation", "private", "sh", "-c", &script],
    );
    wait_listening(&lab, &d2.ns, "-u", 5353, &mut avahi);

    let b = d2.mac.as_str();
    let bip = d2.ip.to_string();
    let fqdn = format!("{HOST}.local");
    let unsolicited_from_b =
        |e: &Event| e.kind() == "mdns" && same(e.s("src_mac"), b) && e.flag("response") && e.flag("unsolicited");
    let events = wait_events(
        &events,
        Duration::from_secs(15),
        &["mdns"],
        &[
            ("unsolicited mdns response from device 2 with A iwd-cam5.local -> its address", &|e| {
                unsolicited_from_b(e) && e.records().iter().any(|(n, t, d)| *n == fqdn && t == "A" && *d == bip)
            }),
            ("unsolicited mdns response from device 2 announcing the _http._tcp service", &|e| {
                unsolicited_from_b(e)
                    && e.records()
                        .iter()
                        .any(|(n, t, d)| n == "_http._tcp.local" && t == "PTR" && d == "IWD Camera._http._tcp.local")
            }),
            ("unsolicited mdns response from device 2 with the service's SRV on iwd-cam5.local", &|e| {
                unsolicited_from_b(e)
                    && e.records()
                        .iter()
                        .any(|(n, t, d)| n == "IWD Camera._http._tcp.local" && t == "SRV" && d.ends_with(&fqdn))
            }),
            ("the service's TXT model=iwd-cam5", &|e| {
                unsolicited_from_b(e) && e.v.strs("txt").contains(&"model=iwd-cam5")
            }),
            ("mdns probe (query) from device 2 for iwd-cam5.local", &|e| {
                e.kind() == "mdns"
                    && same(e.s("src_mac"), b)
                    && !e.flag("response")
                    && e.v.strs("names").iter().any(|n| *n == fqdn)
            }),
        ],
    );
    // Nothing but device 2's probes and announcements: avahi sent no query for other names.
    for e in events.iter().filter(|e| e.kind() == "mdns") {
        assert!(
            same(e.s("src_mac"), b) && e.v.strs("names").iter().any(|n| *n == fqdn),
            "unexpected mdns event: {}",
            e.line
        );
    }
    wait_report(&agent, "device 2 named iwd-cam5.local", |r| device(r, b).strs("names").iter().any(|n| *n == fqdn));
    check_metrics(&agent, &[(b, "mdns")]);
    avahi.check_alive();
}

// ---------------------------------------------------------------------------------------------
// 6. SSDP/UPnP with minidlna (a real UPnP media server): device 1 discovers it with an M-SEARCH,
// device 2 answers with its LOCATION, device 1 fetches the description (lateral movement).

#[test]
fn minidlna_ssdp_discovery_and_description() {
    if !privileged("minidlna_ssdp_discovery_and_description") {
        return;
    }
    const ST: &str = "urn:schemas-upnp-org:device:MediaServer:1";
    let lab = lab("iwd6", false);
    let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
    let dir = TempDir::new("iwd6");
    for d in ["media", "db", "log"] {
        dir.mkdir(d);
    }
    let conf = dir.config("minidlna.conf", "minidlna.conf", &[]);
    let (agent, events) = start_agent(&lab, &dir, 19486);
    // -S: stay in the foreground (as under systemd); -P: our own pid file.
    let mut minidlna = Daemon::spawn(
        &lab,
        &d2.ns,
        &dir,
        "minidlna",
        &["minidlnad", "-S", "-f", &conf, "-P", &dir.text("minidlna.pid")],
    );
    wait_listening(&lab, &d2.ns, "-t", 8200, &mut minidlna);
    wait_listening(&lab, &d2.ns, "-u", 1900, &mut minidlna);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemons/msearch.py").display().to_string();
    let locations = run(&lab, &d1.ns, 15, &["/usr/bin/python3", &script, ST, "3"]);
    let location = format!("http://{}:8200/rootDesc.xml", d2.ip);
    assert!(
        locations.lines().any(|l| l == location),
        "minidlna answered the M-SEARCH with {location}; got {locations:?}\n{}",
        minidlna.output()
    );
    let desc = run(&lab, &d1.ns, 10, &["curl", "-sS", "--fail", "-A", "iwd-cp/1.0", &location]);
    assert!(desc.contains("IWD Media"), "the description names the device: {desc}");

    let (a, b) = (d1.mac.as_str(), d2.mac.as_str());
    let bip = d2.ip.to_string();
    wait_events(
        &events,
        Duration::from_secs(15),
        &["ssdp", "http"],
        &[
            ("ssdp M-SEARCH from device 1 for the MediaServer type, mx 1", &|e| {
                e.kind() == "ssdp"
                    && same(e.s("src_mac"), a)
                    && same(e.s("dst_ip"), "239.255.255.250")
                    && num_is(e.n("dst_port"), 1900.0)
                    && same(e.s("method"), "M-SEARCH")
                    && same(e.s("st"), ST)
                    && num_is(e.n("mx"), 1.0)
                    && same(e.s("user_agent"), "iwd/1.0 UPnP/1.1 msearch/1.0")
            }),
            ("ssdp RESPONSE status 200 from device 2 to device 1 with location", &|e| {
                e.kind() == "ssdp"
                    && same(e.s("src_mac"), b)
                    && same(e.s("dst_mac"), a)
                    && num_is(e.n("src_port"), 1900.0)
                    && same(e.s("method"), "RESPONSE")
                    && num_is(e.n("status"), 200.0)
                    && same(e.s("st"), ST)
                    && same(e.s("location"), &location)
                    && e.s("usn").is_some_and(|u| u.starts_with("uuid:"))
                    && e.s("server").is_some_and(|s| s.contains("UPnP"))
            }),
            ("ssdp NOTIFY ssdp:alive from device 2 with location (minidlna announces on start)", &|e| {
                e.kind() == "ssdp"
                    && same(e.s("src_mac"), b)
                    && same(e.s("method"), "NOTIFY")
                    && same(e.s("nts"), "ssdp:alive")
                    && same(e.s("location"), &location)
            }),
            ("http GET /rootDesc.xml from device 1 to device 2:8200", &|e| {
                e.kind() == "http"
                    && same(e.s("src_mac"), a)
                    && same(e.s("dst_ip"), &bip)
                    && num_is(e.n("dst_port"), 8200.0)
                    && same(e.s("method"), "GET")
                    && same(e.s("uri"), "/rootDesc.xml")
                    && same(e.s("user_agent"), "iwd-cp/1.0")
            }),
            ("http 200 response from device 2:8200", &|e| {
                e.kind() == "http"
                    && same(e.s("src_mac"), b)
                    && num_is(e.n("src_port"), 8200.0)
                    && num_is(e.n("status"), 200.0)
            }),
        ],
    );
    check_metrics(&agent, &[(a, "ssdp"), (b, "ssdp"), (a, "http"), (b, "http")]);
    minidlna.check_alive();
}

#[test]
fn openssl_tls_client_hello_with_sni() {
    if !privileged("openssl_tls_client_hello_with_sni") {
        return;
    }
    let lab = lab("iwd7", false);
    let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
    let dir = TempDir::new("iwd7");
    let (cert, key) = (dir.text("cert.pem"), dir.text("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cam-cloud.example.test",
        ])
        .args(["-keyout", &key, "-out", &cert])
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    let (agent, events) = start_agent(&lab, &dir, 19487);
    // A real TLS server (OpenSSL's) on device 2, a real client (curl) on device 1 that names
    // the server in SNI, as a camera names its cloud.
    let mut server = Daemon::spawn(
        &lab,
        &d2.ns,
        &dir,
        "openssl-s_server",
        &["openssl", "s_server", "-accept", "8443", "-cert", &cert, "-key", &key, "-www", "-quiet"],
    );
    wait_listening(&lab, &d2.ns, "-t", 8443, &mut server);
    let resolve = format!("cam-cloud.example.test:8443:{}", d2.ip);
    run(
        &lab,
        &d1.ns,
        10,
        &[
            "curl",
            "-sS",
            "-k",
            "--fail",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "https://cam-cloud.example.test:8443/",
        ],
    );

    let a = d1.mac.clone();
    let events = wait_events(
        &events,
        Duration::from_secs(15),
        &["tls"],
        &[("ClientHello from device 1 to port 8443 with SNI cam-cloud.example.test and TLS 1.3 offered", &|e| {
            e.kind() == "tls"
                && same(e.s("src_mac"), &a)
                && num_is(e.n("dst_port"), 8443.0)
                && same(e.s("sni"), "cam-cloud.example.test")
                && e.v.strs("versions").contains(&"TLS1.3")
        })],
    );
    assert_eq!(events.iter().filter(|e| e.kind() == "tls").count(), 1, "one ClientHello:\n{}", show(&events, &["tls"]));
    check_metrics(&agent, &[(a.as_str(), "tls")]);
    // The server's name becomes the peer's name in the report.
    let bip = d2.ip.to_string();
    wait_report(&agent, "the peer named by SNI", |r| {
        device(r, &a)["peers"]
            .items()
            .iter()
            .any(|p| p["ip"].as_str() == Some(bip.as_str()) && p.strs("names").contains(&"cam-cloud.example.test"))
    });
}
