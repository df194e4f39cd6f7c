//! The agent's endpoint as a user protects it: the live agent on a lab bridge with
//! `deploy/prometheus/web-config.example.yml` (TLS 1.3, basic auth), two listen addresses
//! (one a host name), a telemetry path of its own and JSON logs; checked with curl and by a
//! real Prometheus that scrapes it with `scheme: https`, `tls_config` and `basic_auth`, as
//! `deploy/prometheus/prometheus.example.yml` says. A client that opens a connection and
//! sends nothing is closed by the agent while scrapes go on. A broken web configuration and a
//! wrong `--log.level` stop the agent before it attaches, naming what is wrong.
//!
//! The server's limits themselves (slow clients on every slot, 100 scrapes at once, client
//! certificates, TLS versions) are unit-tested on 127.0.0.1 in agent/src/output/web.rs.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iotwatch_tests::{agent_bin, daemons::*, privileged_test};
use xtask::prometheus::{Prometheus, free_port, port_or_free};

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
}
