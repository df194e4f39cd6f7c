//! The agent's endpoint as a user protects it: the live agent on a lab bridge with
//! `deploy/prometheus/web-config.example.yml` (TLS 1.3, basic auth), two listen addresses
//! (one a host name), a telemetry path of its own and JSON logs; checked with curl and by a
//! real Prometheus that scrapes it with `scheme: https`, `tls_config` and `basic_auth`, as
//! `deploy/prometheus/prometheus.example.yml` says. A client that opens a connection and
//! sends nothing is closed by the agent while scrapes go on. A broken web configuration and a
//! wrong `--log.level` stop the agent before it attaches, naming what is wrong.
//!
//! Under a sample flood from a lab device (more than the agent parses), 100 scrapes at once and
//! a client that dribbles its request head: every scrape gets a whole, valid exposition, none a
//! 503, the counters in them fit one order (none went back), the flood's frames are all counted,
//! and the agent exits 0.
//!
//! The server's limits themselves (slow clients on every slot, 100 scrapes at once, client
//! certificates, TLS versions) are unit-tested on 127.0.0.1 in agent/src/output/web.rs.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iotwatch_tests::{agent_bin, daemons::*, privileged_test};
use xtask::{
    metrics::parse_metrics,
    prometheus::{Prometheus, free_port, port_or_free},
};

fn openssl(dir: &Workdir, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir.path("")).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and the agent's certificate for 127.0.0.1 and localhost, under the names
/// the example file gives (`iotwatch.crt`, `iotwatch.key`).
fn certificates(dir: &Workdir) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"][..], &ec, &["-days", "2", "-subj", "/CN=iwtest CA", "-keyout", "ca.key", "-out", "ca.pem"]]
            .concat(),
    );
    fs::write(dir.path("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .expect("ext");
    openssl(
        dir,
        &[&["req"][..], &ec, &["-subj", "/CN=iotwatch", "-keyout", "iotwatch.key", "-out", "iotwatch.csr"]].concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "iotwatch.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "iotwatch.crt",
        ],
    );
}

/// curl's exit status, HTTP status and output (headers included).
fn curl(dir: &Workdir, url: &str, extra: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-i", "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.path("ca.pem"))
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    (out.status.code().unwrap_or(-1), code, text)
}

/// The agent as the unit runs it, but with these arguments; its stderr in `log`.
struct Running(Option<Child>);

impl Running {
    fn start(args: &[&str], log: &Path) -> Self {
        let f = fs::File::create(log).expect("log");
        let mut c = Command::new(agent_bin());
        c.args(args).stdin(Stdio::null()).stdout(f.try_clone().expect("log")).stderr(f);
        xtask::cmd::supervised(&mut c, libc::SIGINT);
        Self(Some(c.spawn().expect("start the agent")))
    }

    fn wait_listening(&mut self, log: &Path) {
        let end = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(log).unwrap_or_default().contains("listening on") {
            if let Some(s) = self.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the agent exited ({s}): {}", fs::read_to_string(log).unwrap_or_default());
            }
            assert!(Instant::now() < end, "the agent did not start: {}", fs::read_to_string(log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.0.take()?;
        xtask::cmd::stop(&mut c, libc::SIGINT, Duration::from_secs(15))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the agent to its end (it must fail at the start); its exit code and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(agent_bin()).args(args).stdin(Stdio::null()).output().expect("run the agent");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// GET /metrics over HTTP/1.1, read to the end: the status and the body, which must be as long
/// as its Content-Length says (a cut answer fails here). The read time-out only keeps a hang
/// from stalling the test: the agent answers within its own budget (30 s) or says 503.
fn get_metrics(addr: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head: {text}"));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "the body is as long as its Content-Length: {head}");
    (status, body.to_owned())
}

/// Series of one exposition, `name{labels}` (labels sorted) to value.
type Series = BTreeMap<String, f64>;

/// Checks that `body` is a whole exposition with the series every answer under the flood has
/// (the build, the flooding device's frames, mDNS samples) and returns its counters, the
/// families whose `# TYPE` says counter.
fn counters_of(body: &str, flooder: &str) -> Series {
    assert!(body.ends_with('\n'), "an exposition ends with a newline: ...{}", &body[body.len().saturating_sub(200)..]);
    let lines = body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let samples = parse_metrics(body);
    assert_eq!(samples.len(), lines, "every sample line parses");
    let counters: Vec<&str> =
        body.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v))).map(|s| s.value)
    };
    assert_eq!(value("iotwatch_build_info", &[]), Some(1.0), "iotwatch_build_info");
    assert!(
        value("iotwatch_mac_packets_total", &[("mac", flooder), ("direction", "tx")]).is_some_and(|v| v > 0.0),
        "the flooding device's frames"
    );
    assert!(
        value("iotwatch_samples_total", &[("kind", "mdns"), ("outcome", "sent")]).is_some_and(|v| v > 0.0),
        "mDNS samples handed over"
    );
    samples
        .iter()
        .filter(|s| counters.contains(&s.name.as_str()))
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
        })
        .collect()
}

/// The first series of `later` below its value in `earlier`, if any.
fn went_back(earlier: &Series, later: &Series) -> Option<(String, f64, f64)> {
    earlier.iter().find_map(|(k, &v)| later.get(k).filter(|&&w| w < v).map(|&w| (k.clone(), v, w)))
}

/// Sends a request head a byte every 200 ms and never ends it: true once the agent closed the
/// connection (it owes no answer to a head that never ended), false if it was still open after
/// `bound`.
fn dribble(addr: &str, bound: Duration) -> bool {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    while start.elapsed() < bound {
        if s.write_all(b"a").is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => panic!("an answer to a head that never ended: {}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Frames a bridge port received, by the kernel's count.
fn port_rx(port: &str) -> u64 {
    let path = format!("/sys/class/net/{port}/statistics/rx_packets");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().expect("a count")
}

/// The device's frames (`iotwatch_mac_packets_total`, tx) and the mDNS, SSDP and DNS samples of
/// every outcome in one exposition.
fn flood_frames(body: &str, mac: &str) -> (f64, f64) {
    let samples = parse_metrics(body);
    let tx = sum(&samples, "iotwatch_mac_packets_total", &[("mac", mac), ("direction", "tx")]);
    let sampled = ["mdns", "ssdp", "dns"].iter().map(|k| sum(&samples, "iotwatch_samples_total", &[("kind", k)])).sum();
    (tx, sampled)
}

/// The counts the flood script printed when it stopped (its last line).
fn flood_counts(out: &str) -> BTreeMap<String, u64> {
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("the flood's counts ({e}): {out}"))
}

privileged_test! {
    fn protected_endpoint_with_curl_and_prometheus() {
        let lab = lab("iww1", false);
        let dir = Workdir::new("iww1");
        certificates(&dir);
        let example = xtask::workspace_root().join("deploy/prometheus/web-config.example.yml");
        fs::copy(&example, dir.path("web-config.yml")).expect("copy the example");
        let config = dir.path("web-config.yml").display().to_string();
        let (p1, p2) = (port_or_free(19491).expect("port"), port_or_free(19492).expect("port"));
        let (l1, l2) = (format!("127.0.0.1:{p1}"), format!("localhost:{p2}"));
        let log = dir.path("agent.log");
        let mut agent = Running::start(
            &[
                "--log.format", "json", "run", "--bridge", &lab.bridge, "--web.listen-address", &l1, "--web.listen-address", &l2,
                "--web.telemetry-path", "/prom", "--web.config.file", &config,
            ],
            &log,
        );
        agent.wait_listening(&log);
        let started = fs::read_to_string(&log).unwrap_or_default();
        assert!(started.contains(&format!("https://127.0.0.1:{p1}/prom")), "the log names each address: {started}");

        let user = ["-u", "prometheus:change me"];
        let url = format!("https://127.0.0.1:{p1}/prom");
        let (exit, code, text) = curl(&dir, &url, &user);
        assert_eq!((exit, code), (0, 200), "the example's user and password: {text}");
        assert!(text.contains("iotwatch_build_info"), "the metrics: {text}");
        let (exit, code, text) = curl(&dir, &format!("https://localhost:{p2}/prom"), &user);
        assert_eq!((exit, code), (0, 200), "the second --web.listen-address, a host name: {text}");
        let (_, code, text) = curl(&dir, &url, &[]);
        assert_eq!(code, 401, "no password: {text}");
        assert!(text.to_ascii_lowercase().contains("www-authenticate: basic"), "{text}");
        assert_eq!(curl(&dir, &url, &["-u", "prometheus:wrong"]).1, 401, "a wrong password");
        assert_eq!(curl(&dir, &format!("https://127.0.0.1:{p1}/metrics"), &user).1, 404, "the metrics moved to /prom");
        let (_, code, text) = curl(&dir, &format!("http://127.0.0.1:{p1}/prom"), &user);
        assert!(code != 200 && !text.contains("iotwatch_build_info"), "plain HTTP is refused: {text}");
        let (exit, code, _) = curl(&dir, &url, &[&user[..], &["--tls-max", "1.2"]].concat());
        assert!(exit != 0 && code != 200, "TLS 1.2 refused (the example's min_version TLS13)");

        // A client that connects and sends nothing: closed by the agent (TLS handshake
        // timeout, 10 s) while a real Prometheus scrapes over HTTPS with basic auth.
        let mut idle = TcpStream::connect(("127.0.0.1", p1)).expect("connect");
        fs::write(dir.path("iotwatch.password"), "change me").expect("password file");
        let job = format!(
            "    metrics_path: /prom\n    scheme: https\n    tls_config:\n      ca_file: {}\n      min_version: TLS13\n    basic_auth:\n      username: prometheus\n      password_file: {}\n",
            dir.path("ca.pem").display(),
            dir.path("iotwatch.password").display()
        );
        let prometheus = Prometheus::start_with(&l1, &job, free_port().expect("port"), Duration::from_secs(60))
            .expect("Prometheus scrapes the protected endpoint (up == 1)");
        assert!(prometheus.target_up(&l1).expect("query"), "up == 1 over https with basic auth");
        idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let read = idle.read(&mut [0u8; 16]);
        let still_open =
            matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(!still_open && !matches!(read, Ok(n) if n > 0), "the silent client was closed by the agent: {read:?}");
        drop(prometheus);

        assert!(agent.stop().is_some_and(|s| s.success()), "SIGINT: exit 0");
        let text = fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains('\u{1b}'), "no colour codes in a log that is not a terminal: {text}");
        for line in BufReader::new(fs::File::open(&log).expect("log")).lines().map_while(Result::ok) {
            if line.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["time"].is_string() && v["level"].is_string() && v["msg"].is_string(), "{line}");
            } else {
                assert!(line.starts_with("iotwatch: "), "every other line is the agent's own status line: {line}");
            }
        }
    }

    fn wrong_web_configuration_or_log_level_stop_the_start() {
        let lab = lab("iww2", false);
        let dir = Workdir::new("iww2");
        fs::write(dir.path("web.yml"), "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n").expect("write");
        let config = dir.path("web.yml").display().to_string();
        let port = port_or_free(19493).expect("port");
        let listen = format!("127.0.0.1:{port}");
        let (code, err) = refused(&["run", "--bridge", &lab.bridge, "--web.listen-address", &listen, "--web.config.file", &config]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&config) && err.contains("tls_server_config.cert_file"), "names the file and the key: {err}");
        let (code, err) = refused(&["run", "--bridge", &lab.bridge, "--log.level", "verbose"]);
        assert_eq!(code, 2, "a usage error: {err}");
        assert!(err.contains("--log.level"), "{err}");
    }

    fn scrapes_answer_during_a_sample_flood() {
        let lab = lab("iww3", false);
        let dir = Workdir::new("iww3");
        let port = port_or_free(19494).expect("port");
        // No per-CPU cap: every mDNS, SSDP and DNS frame is a sample for the ring's reader.
        let (mut agent, _events) = start_agent_with(&lab, &dir, port, &["--sample.cpu-rate", "0"]);
        let addr = agent.listen.clone();
        let dev = lab.devices[0].clone();
        // The oracle: frames the device's bridge port received (the kernel's veth counters).
        let before = (port_rx(&dev.port), flood_frames(&get_metrics(&addr).1, &dev.mac));
        let script = xtask::workspace_root().join("tests/daemons/sample_flood.py");
        let (src, dns) = (dev.ip.to_string(), lab.gateway.ip.to_string());
        // Three senders: more samples than the agent's share of this machine can parse, so the
        // ring's reader always has work.
        let mut flood: Vec<Daemon> = (0..3)
            .map(|i| {
                let args = ["python3", &script.display().to_string(), "--src", &src, "--dns", &dns, "--seconds", "300"];
                Daemon::spawn(&lab, &dev.ns, &dir, &format!("flood{i}"), &args)
            })
            .collect();
        // Samples flowing: the ring's reader has work from here on.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            flood.iter_mut().for_each(Daemon::check_alive);
            let (status, body) = get_metrics(&addr);
            assert_eq!(status, 200, "{body}");
            let events = parse_metrics(&body)
                .iter()
                .filter(|s| s.name == "iotwatch_events_total" && s.label("mac") == Some(&dev.mac))
                .map(|s| s.value)
                .sum::<f64>();
            if events > 1000.0 {
                break;
            }
            assert!(Instant::now() < end, "no events from the flood after 20 s: {}", flood[0].output());
            std::thread::sleep(Duration::from_millis(200));
        }

        // A client that dribbles its head, one that scrapes again and again, and 100 at once.
        let slow = {
            let addr = addr.clone();
            std::thread::spawn(move || dribble(&addr, Duration::from_secs(60)))
        };
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serial = {
            let (addr, done) = (addr.clone(), done.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !done.load(std::sync::atomic::Ordering::SeqCst) || answers.len() < 5 {
                    answers.push(get_metrics(&addr));
                }
                answers
            })
        };
        let burst: Vec<_> = (0..100)
            .map(|_| {
                let addr = addr.clone();
                std::thread::spawn(move || get_metrics(&addr))
            })
            .collect();
        let burst: Vec<(u16, String)> = burst.into_iter().map(|t| t.join().expect("scrape thread")).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let serial = serial.join().expect("serial scrapes");
        assert!(slow.join().expect("slow client"), "the agent cut off the head sent a byte at a time");
        flood.iter_mut().for_each(Daemon::check_alive);

        for (status, body) in burst.iter().chain(&serial) {
            assert_eq!(*status, 200, "every scrape answered in time (no 503): {body}");
        }
        // One at a time, in order: no counter went back.
        let serial: Vec<Series> = serial.iter().map(|(_, b)| counters_of(b, &dev.mac)).collect();
        for pair in serial.windows(2) {
            assert_eq!(went_back(&pair[0], &pair[1]), None, "a counter went back between two scrapes in a row");
        }
        // At once: the answers fit one order (series only appear, values only grow, so the sum
        // of the counters orders them), and none went back in it.
        let mut burst: Vec<Series> = burst.iter().map(|(_, b)| counters_of(b, &dev.mac)).collect();
        burst.sort_by(|a, b| a.values().sum::<f64>().total_cmp(&b.values().sum::<f64>()));
        for (i, a) in burst.iter().enumerate() {
            for b in &burst[i + 1..] {
                assert_eq!(went_back(a, b), None, "two answers of the burst do not fit one order");
            }
        }

        // The flood stops: every frame the device's port received was counted, and every sample
        // handed over or counted as lost. A lab device is quiet otherwise (IPv6 off), but for an
        // ARP exchange now and then.
        drop(flood);
        let mut counts = BTreeMap::<String, u64>::new();
        for i in 0..3 {
            for (kind, n) in flood_counts(&fs::read_to_string(dir.path(&format!("flood{i}.out"))).expect("flood output")) {
                *counts.entry(kind).or_default() += n;
            }
        }
        assert!(counts.values().sum::<u64>() > 10_000, "a flood: {counts:?}");
        std::thread::sleep(Duration::from_secs(1));
        let after = (port_rx(&dev.port), flood_frames(&get_metrics(&addr).1, &dev.mac));
        let received = after.0 - before.0;
        let ((tx0, sampled0), (tx1, sampled1)) = (before.1, after.1);
        assert!(received as f64 >= counts["mdns"] as f64, "the port received the flood: {received}, {counts:?}");
        assert!(
            (tx1 - tx0 - received as f64).abs() <= 10.0,
            "frames from {}: {} counted, {received} received by its port",
            dev.mac,
            tx1 - tx0
        );
        let sampled = sampled1 - sampled0;
        let dropped = sum(&parse_metrics(&get_metrics(&addr).1), "iotwatch_samples_total", &[("outcome", "dropped")]);
        eprintln!("flood: {counts:?} sent, {received} frames received, {sampled} sampled, {dropped} lost to a full ring");
        assert!(
            sampled <= tx1 - tx0 && sampled + 10.0 >= tx1 - tx0,
            "mDNS, SSDP and DNS samples of every outcome: {sampled}; the device's frames: {}",
            tx1 - tx0
        );
        agent.stop().expect("the agent exits 0 on SIGINT");
    }
}
