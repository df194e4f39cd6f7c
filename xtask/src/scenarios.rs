//! The lab's finding scenarios: every behaviour the detectors report (issue 12), each on a lab
//! device of its own so that findings are attributed per MAC, and a negative twin for each that
//! must raise nothing, with real daemons as the peers (minidlna, avahi-daemon, chrony, nginx,
//! mosquitto) and xtask/lab/scenarios.py for the rest.
//!
//! [`SCENARIOS`] is the table: device index (position + 1) → scenario → the finding it must
//! raise, or the rules it must not. [`Scenarios`] starts the servers once, then runs each
//! client on a schedule from the main thread's [`Scenarios::tick`] (no threads: children are
//! spawned and reaped), adds the late device, and reports how every client fared.
//! [`traffic_check`] is the independent oracle that a scenario's traffic did happen, from the
//! agent's event log and report (its protocol events and peers, which exist without the
//! detectors); [`verdicts`] compares the report's findings with the table.
//!
//! Bounds: every client runs under `timeout(1)` or has its own deadline, long-running ones end
//! after the lab's duration, servers are children of the lab that are stopped on drop (and
//! killed with their namespace otherwise), and all traffic stays between lab namespaces: the
//! "Internet" is the lab's internet namespace (documentation addresses, 25 more of them on its
//! `lo` for the NTP fan-out), and the scan's /24 has no route beyond it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{
    agent::Agent,
    cmd,
    lab::{HomeLab, LabOptions, device_ip, device_mac},
    metrics, netns,
    prometheus::Prometheus,
    tmp::TempDir,
    workspace_root,
};

/// What a scenario's device must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A finding with this rule, for this device.
    Finding(&'static str),
    /// No finding with any of these rules for this device (a negative twin, or a peer).
    Quiet(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub expect: Expect,
    /// One line: what the device does.
    pub what: &'static str,
}

/// The stable rule names of the detectors (issue 12).
pub const RULES: [&str; 10] = [
    "lateral_movement",
    "unsolicited_mdns",
    "ntp_fanout",
    "firmware_over_http",
    "cleartext",
    "gateway_ping",
    "cloud_initiated",
    "new_device",
    "scan",
    "dns_unreachable",
];

const fn finding(name: &'static str, rule: &'static str, what: &'static str) -> Scenario {
    Scenario { name, expect: Expect::Finding(rule), what }
}

const fn quiet(name: &'static str, rules: &'static [&'static str], what: &'static str) -> Scenario {
    Scenario { name, expect: Expect::Quiet(rules), what }
}

/// Device index `i` plays `SCENARIOS[i - 1]`. The last one joins after the agent started.
pub const SCENARIOS: [Scenario; 22] = [
    finding(
        "lateral-movement",
        "lateral_movement",
        "SSDP M-SEARCH, then fetches the answering UPnP device's description over HTTP (port 8200)",
    ),
    quiet("upnp-device", &["lateral_movement"], "minidlna: answers M-SEARCHes, serves its description on 8200"),
    quiet("discovery-only", &["lateral_movement"], "SSDP M-SEARCH, reads the answers, fetches nothing"),
    finding(
        "mdns-announcer",
        "unsolicited_mdns",
        "avahi-daemon announcing its host and a service with md=, sn=, mac=, fw= TXT keys",
    ),
    quiet("mdns-responder", &["unsolicited_mdns"], "answers mDNS queries for iwlab-sensor.local, never announces"),
    quiet(
        "mdns-querier",
        &["unsolicited_mdns", "lateral_movement"],
        "asks for iwlab-sensor.local over mDNS every 10 s",
    ),
    finding("ntp-fanout", "ntp_fanout", "chronyd -Q against 25 NTP servers (198.51.100.100-124)"),
    quiet("ntp-single", &["ntp_fanout"], "chronyd -Q against one NTP server"),
    finding(
        "firmware-http",
        "firmware_over_http",
        "downloads a 2 MiB firmware.bin over plain HTTP in 4 Range requests on 4 connections",
    ),
    quiet("firmware-https", &["firmware_over_http", "cleartext"], "downloads the same firmware.bin over HTTPS"),
    quiet("image-http", &["firmware_over_http"], "downloads a 2 MiB image/jpeg over plain HTTP"),
    finding("mqtt-cleartext", "cleartext", "MQTT CONNECT with user name and password to port 1883, no TLS"),
    quiet("mqtt-tls", &["cleartext"], "the same MQTT CONNECT over TLS (port 8883)"),
    finding("udp-xml", "cleartext", "cleartext XML with serial number, MAC and public IP over UDP every 5 s"),
    finding("telnet", "cleartext", "a Telnet login (user name, password) to an Internet host"),
    finding("gateway-ping", "gateway_ping", "pings the gateway (192.168.77.1) every second"),
    quiet("internet-ping", &["gateway_ping"], "pings an Internet host every second"),
    finding("cloud-initiated", "cloud_initiated", "an Internet host opens TCP to its port 9000 and exchanges bytes"),
    quiet("three-hosts", &["scan", "cloud_initiated"], "HTTP to three Internet hosts every 10 s"),
    finding("telnet-scan", "scan", "one connection attempt to port 23 on each of 203.0.113.1-254"),
    finding(
        "dns-refused",
        "dns_unreachable",
        "asks the gateway for DNS every 10 s; nothing listens there, it answers ICMP port unreachable",
    ),
    finding(
        "new-device",
        "new_device",
        "joins the bridge 40 s after the agent started (past the 30 s in which a first start learns its devices), then fetches a status",
    ),
];

/// Index of the device that joins late (the last of the table).
pub const LATE_DEVICE: usize = SCENARIOS.len();
/// Devices present when the agent starts.
pub const EARLY_DEVICES: usize = SCENARIOS.len() - 1;
/// When the late device joins, after the scenarios started.
pub const LATE_JOIN: Duration = Duration::from_secs(40);
/// The NTP servers of the fan-out: 198.51.100.100 and the next ones, on the internet's `lo`.
pub const FANOUT_SERVERS: u8 = 25;
/// Size of firmware.bin and photo.jpg.
pub const DOWNLOAD_BYTES: usize = 2 * 1024 * 1024;
/// How long the first round of every scenario takes (the late device's first fetch is the
/// last, at 41 s): a run shorter than this has not shown everything.
pub const FIRST_ROUND: Duration = Duration::from_secs(45);

const MDNS_NAME: &str = "iwlab-sensor.local";
const MQTT_USER: &str = "iwlab";
const MQTT_PASSWORD: &str = "iwlab-mqtt-pw";
const ST_MEDIA_SERVER: &str = "urn:schemas-upnp-org:device:MediaServer:1";

/// The scenario of device `index` (1-based).
pub fn scenario(index: usize) -> Option<&'static Scenario> {
    index.checked_sub(1).and_then(|i| SCENARIOS.get(i))
}

/// Index of the scenario with this name.
pub fn index_of(name: &str) -> Option<usize> {
    SCENARIOS.iter().position(|s| s.name == name).map(|i| i + 1)
}

fn idx(name: &str) -> usize {
    index_of(name).unwrap_or_else(|| panic!("no scenario {name}"))
}

/// The alert of a rule in deploy/prometheus: `lateral_movement` → `IotwatchLateralMovement`.
pub fn alert_name(rule: &str) -> String {
    let mut s = String::from("Iotwatch");
    for part in rule.split('_') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            s.extend(first.to_uppercase());
            s.push_str(c.as_str());
        }
    }
    s
}

fn internet_host(i: usize) -> Ipv4Addr {
    crate::lab::INTERNET_HOSTS[i]
}

fn fanout_server(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + i)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Where a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Device(usize),
    Internet,
}

/// A child in a lab namespace with its output in a file; SIGTERM, then SIGKILL, on drop.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(lab: &HomeLab, ns: &str, name: &str, log: PathBuf, args: &[&str]) -> Result<Self> {
        let f = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut c = lab.exec(ns, args);
        c.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        cmd::supervised(&mut c, libc::SIGTERM);
        let child = c.spawn().with_context(|| format!("cannot start {name}: `{}`", cmd::display(&c)))?;
        Ok(Self { name: name.to_owned(), child: Some(child), log })
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its output, for a message.
    fn tail(&self) -> String {
        let out = self.output();
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(6)..].join(" | ")
    }

    /// None while it runs; its exit status once it ended (reaped).
    fn poll(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    fn check_alive(&mut self) -> Result<()> {
        if self.child.is_none() {
            bail!("{} is not running", self.name);
        }
        if let Some(status) = self.poll() {
            bail!("{} exited ({status}): {}", self.name, self.tail());
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            cmd::stop(&mut c, libc::SIGTERM, Duration::from_secs(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scenario's client: started `start` after the scenarios, then every `period` (None: once).
#[derive(Debug)]
struct Action {
    device: usize,
    place: Place,
    what: &'static str,
    argv: Vec<String>,
    start: Duration,
    period: Option<Duration>,
    /// Runs for the whole lab (ping, the UDP sender): "ok" while alive.
    long_running: bool,
}

/// How one client fared so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionStatus {
    pub device: usize,
    pub scenario: &'static str,
    pub what: &'static str,
    pub runs: u32,
    pub ok: u32,
    pub failed: u32,
    pub running: bool,
    pub last_error: Option<String>,
}

impl ActionStatus {
    /// Ran at least once and never failed (a long-running one: alive or ended well).
    pub fn healthy(&self) -> bool {
        self.failed == 0 && (self.ok > 0 || (self.running && self.runs > 0))
    }
}

struct Slot {
    action: Action,
    next: Option<Duration>,
    proc: Option<Proc>,
    status: ActionStatus,
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// The running scenarios: servers, scheduled clients, the late device. Everything stops on drop.
pub struct Scenarios {
    slots: Vec<Slot>,
    servers: Vec<Proc>,
    started: Instant,
    late_joined: Option<Duration>,
    duration: Duration,
    // Last: removed once every process is gone.
    dir: TempDir,
}

fn s(v: &str) -> String {
    v.to_owned()
}

impl Scenarios {
    /// Writes the servers' files, adds the fan-out's NTP addresses to the internet namespace,
    /// starts every server and waits (bounded) until each listens. The lab must have
    /// [`EARLY_DEVICES`] devices; clients start on the first [`Scenarios::tick`]. Long-running
    /// clients end by themselves after `duration` (plus a margin).
    pub fn start(lab: &HomeLab, duration: Duration) -> Result<Self> {
        ensure!(
            lab.devices.iter().map(|d| d.index).collect::<Vec<_>>() == (1..=EARLY_DEVICES).collect::<Vec<_>>(),
            "the scenarios need a lab with devices 1..={EARLY_DEVICES}"
        );
        let dir = TempDir::new("iotwatch-scenarios")?;
        let mut me =
            Self { slots: Vec::new(), servers: Vec::new(), started: Instant::now(), late_joined: None, duration, dir };
        me.write_files()?;
        for i in 0..FANOUT_SERVERS {
            netns::ns_ip(&lab.internet.ns, &["addr", "add", &format!("{}/32", fanout_server(i)), "dev", "lo"])?;
        }
        me.start_servers(lab)?;
        me.slots = me.actions().into_iter().map(Self::slot).collect();
        me.started = Instant::now();
        Ok(me)
    }

    fn slot(action: Action) -> Slot {
        let status = ActionStatus {
            device: action.device,
            scenario: scenario(action.device).map_or("?", |s| s.name),
            what: action.what,
            ..ActionStatus::default()
        };
        Slot { next: Some(action.start), action, proc: None, status }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn script() -> String {
        workspace_root().join("xtask/lab/scenarios.py").display().to_string()
    }

    /// `xtask/lab/daemons/<template>` with `@DIR@` and `vars` replaced, written to the directory.
    fn config(&self, template: &str, vars: &[(&str, &str)]) -> Result<String> {
        let src = workspace_root().join("xtask/lab/daemons").join(template);
        let mut text = fs::read_to_string(&src).with_context(|| format!("cannot read {}", src.display()))?;
        text = text.replace("@DIR@", &self.dir.path().display().to_string());
        for (k, v) in vars {
            text = text.replace(k, v);
        }
        let out = self.dir.join(template);
        fs::write(&out, text)?;
        Ok(out.display().to_string())
    }

    fn write_files(&self) -> Result<()> {
        let dirs = "www/fw www/media tmp logs media minidlna-db minidlna-log run/avahi-daemon avahi-services";
        for d in dirs.split(' ') {
            fs::create_dir_all(self.dir.join(d))?;
        }
        fs::write(self.dir.join("www/fw/firmware.bin"), pseudo_random(DOWNLOAD_BYTES, 0x1f))?;
        fs::write(self.dir.join("www/media/photo.jpg"), jpeg_like(DOWNLOAD_BYTES))?;
        fs::write(self.dir.join("www/status.json"), "{\"status\":\"ok\"}\n")?;
        fs::write(self.dir.join("media/README.txt"), "iotwatch lab media\n")?;
        // One certificate for every TLS server of the "Internet", valid for its addresses.
        let san = format!(
            "subjectAltName=DNS:cloud.iwlab.example.test,{}",
            crate::lab::INTERNET_HOSTS.iter().map(|h| format!("IP:{h}")).collect::<Vec<_>>().join(",")
        );
        let key = self.path("key.pem");
        let cert = self.path("cert.pem");
        let args = format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=cloud.iwlab.example.test -keyout {key} -out {cert} -addext"
        );
        let mut args: Vec<&str> = args.split_whitespace().collect();
        args.push(&san);
        cmd::output(&mut cmd::command("openssl", &args)).context("cannot make the lab's test certificate")?;
        cmd::output(&mut cmd::command(
            "mosquitto_passwd",
            &["-c", "-b", &self.path("mosquitto.passwd"), MQTT_USER, MQTT_PASSWORD],
        ))?;
        // chronyd -Q clients: 25 servers, and one.
        let client = |servers: &[Ipv4Addr], name: &str| -> String {
            let mut c = format!("# chronyd -Q of the {name} scenario (xtask/src/scenarios.rs)\n");
            for s in servers {
                c.push_str(&format!("server {s} iburst\n"));
            }
            c.push_str(&format!(
                "cmdport 0\nbindcmdaddress /\npidfile {dir}/chronyd-{name}.pid\ndriftfile {dir}/chronyd-{name}.drift\n",
                dir = self.dir.path().display()
            ));
            c
        };
        let fanout: Vec<Ipv4Addr> = (0..FANOUT_SERVERS).map(fanout_server).collect();
        fs::write(self.dir.join("chrony-fanout.conf"), client(&fanout, "fanout"))?;
        fs::write(self.dir.join("chrony-single.conf"), client(&[internet_host(1)], "single"))?;
        Ok(())
    }

    /// Starts a server; `command` is split at spaces (no argument has one).
    fn server(&mut self, lab: &HomeLab, place: &Place, name: &str, command: &str) -> Result<usize> {
        self.server_argv(lab, place, name, &command.split_whitespace().collect::<Vec<_>>())
    }

    fn server_argv(&mut self, lab: &HomeLab, place: &Place, name: &str, args: &[&str]) -> Result<usize> {
        let ns = self.ns_of(lab, place)?;
        let log = self.dir.join(format!("logs/{name}.out"));
        self.servers.push(Proc::spawn(lab, &ns, name, log, args)?);
        Ok(self.servers.len() - 1)
    }

    fn ns_of(&self, lab: &HomeLab, place: &Place) -> Result<String> {
        Ok(match place {
            Place::Internet => lab.internet.ns.clone(),
            Place::Device(i) => lab.device(*i).with_context(|| format!("no lab device {i}"))?.ns.clone(),
        })
    }

    /// The Internet's servers (chronyd, nginx, mosquitto, a UDP sink, a Telnet login) and the
    /// LAN's (minidlna, avahi-daemon, the mDNS responder, the control port the cloud opens).
    fn start_servers(&mut self, lab: &HomeLab) -> Result<()> {
        let py = format!("/usr/bin/python3 {}", Self::script());
        let secs = self.duration.as_secs() + 30;
        let dir = self.dir.path().display().to_string();
        let inet = Place::Internet;
        let mut waits: Vec<(usize, Place, &str, u16)> = Vec::new();

        let conf = self.config("chrony-server.conf", &[])?;
        let i = self.server(lab, &inet, "chronyd-server", &format!("chronyd -x -d -u root -f {conf}"))?;
        waits.push((i, inet.clone(), "-u", 123));

        let conf = self.config("nginx.conf", &[])?;
        let i = self.server(lab, &inet, "nginx", &format!("nginx -p {dir}/ -c {conf} -e {dir}/nginx-error.log"))?;
        waits.extend([(i, inet.clone(), "-t", 80), (i, inet.clone(), "-t", 443)]);

        let conf = self.config("mosquitto.conf", &[("@IP@", &internet_host(1).to_string())])?;
        let i = self.server(lab, &inet, "mosquitto", &format!("mosquitto -c {conf}"))?;
        waits.extend([(i, inet.clone(), "-t", 1883), (i, inet.clone(), "-t", 8883)]);

        let i = self.server(lab, &inet, "udp-sink", &format!("{py} udp-sink --port 5000 --duration {secs}"))?;
        waits.push((i, inet.clone(), "-u", 5000));

        let command = format!("{py} telnet-serve --bind {} --duration {secs}", internet_host(2));
        let i = self.server(lab, &inet, "telnet-server", &command)?;
        waits.push((i, inet.clone(), "-t", 23));

        let upnp = Place::Device(idx("upnp-device"));
        let conf = self.config("minidlna.conf", &[])?;
        let i = self.server(lab, &upnp, "minidlna", &format!("minidlnad -S -f {conf} -P {dir}/minidlna.pid"))?;
        waits.extend([(i, upnp.clone(), "-t", 8200), (i, upnp.clone(), "-u", 1900)]);

        // avahi-daemon: /run/avahi-daemon and /etc/avahi/services are compiled-in paths, so this
        // instance gets its own through bind mounts that only its mount namespace sees.
        let announcer = idx("mdns-announcer");
        let conf = self.config("avahi-daemon.conf", &[("@HOST@", "iwlab-cam")])?;
        let service = self.config("avahi-camera.service", &[("@MAC@", &device_mac(announcer))])?;
        fs::rename(&service, self.dir.join("avahi-services/iwlab-camera.service"))?;
        let script = format!(
            "mount --bind {dir}/run /run && mount --bind {dir}/avahi-services /etc/avahi/services && \
             exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title"
        );
        let place = Place::Device(announcer);
        let argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", &script];
        let i = self.server_argv(lab, &place, "avahi-daemon", &argv)?;
        waits.push((i, place, "-u", 5353));

        let responder = idx("mdns-responder");
        let place = Place::Device(responder);
        let command = format!("{py} mdns-respond --name {MDNS_NAME} --ip {} --duration {secs}", device_ip(responder));
        let i = self.server(lab, &place, "mdns-responder", &command)?;
        waits.push((i, place, "-u", 5353));

        let place = Place::Device(idx("cloud-initiated"));
        let i =
            self.server(lab, &place, "control-port", &format!("{py} tcp-serve-binary --port 9000 --duration {secs}"))?;
        waits.push((i, place, "-t", 9000));

        let end = Instant::now() + Duration::from_secs(15);
        for (i, place, proto, port) in waits {
            let ns = self.ns_of(lab, &place)?;
            let filter = format!("sport = :{port}");
            loop {
                self.servers[i].check_alive()?;
                if !netns::ns_run(&ns, &["ss", "-Hln", proto, &filter])?.trim().is_empty() {
                    break;
                }
                if Instant::now() > end {
                    let p = &self.servers[i];
                    bail!("{} does not listen on {proto} port {port} after 15 s: {}", p.name, p.tail());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The clients, on a schedule spread over the first 16 seconds so that the gateway's sample
    /// budget (every Internet reply comes from its MAC) is not spent at once. Command lines are
    /// written as one string and split at spaces (no argument has one).
    fn actions(&self) -> Vec<Action> {
        let py = format!("/usr/bin/python3 {}", Self::script());
        let secs = self.duration.as_secs() + 30;
        let cert = self.path("cert.pem");
        let dir = self.dir.path().display().to_string();
        let [h0, h1, h2] = [0, 1, 2].map(internet_host);
        let ip = |name: &str| device_ip(idx(name));
        let mqtt = format!("mosquitto_pub -h {h1} -V mqttv311 -u {MQTT_USER} -P {MQTT_PASSWORD}");
        let curl = "curl -sS --fail --max-time 15 -o /dev/null";
        // (device, place, what, command, start s, period s (0: once), bound s (0: long-running))
        let table: Vec<(&str, Place, &'static str, String, u64, u64, u64)> = vec![
            (
                "gateway-ping",
                Place::Device(0),
                "ping -i 1 the gateway",
                format!("ping -q -n -i 1 -w {secs} 192.168.77.1"),
                1,
                0,
                0,
            ),
            (
                "dns-refused",
                Place::Device(0),
                "DNS query to the gateway, refused",
                format!("{py} dns-refused --server 192.168.77.1"),
                6,
                10,
                5,
            ),
            (
                "internet-ping",
                Place::Device(0),
                "ping -i 1 an Internet host",
                format!("ping -q -n -i 1 -w {secs} {h0}"),
                1,
                0,
                0,
            ),
            (
                "lateral-movement",
                Place::Device(0),
                "M-SEARCH, then fetch",
                format!("{py} msearch --st {ST_MEDIA_SERVER} --wait 2 --fetch"),
                2,
                20,
                15,
            ),
            (
                "discovery-only",
                Place::Device(0),
                "M-SEARCH only",
                format!("{py} msearch --st {ST_MEDIA_SERVER} --wait 2"),
                3,
                20,
                15,
            ),
            (
                "three-hosts",
                Place::Device(0),
                "curl three hosts",
                format!(
                    "{curl} -o /dev/null -o /dev/null -A iwlab-hub/1.0 http://{h0}/status.json http://{h1}/status.json http://{h2}/status.json"
                ),
                3,
                10,
                20,
            ),
            (
                "mdns-querier",
                Place::Device(0),
                "mDNS query",
                format!("{py} mdns-query --name {MDNS_NAME} --ip {} --timeout 3", ip("mdns-querier")),
                4,
                10,
                10,
            ),
            (
                "udp-xml",
                Place::Device(0),
                "XML over UDP every 5 s",
                format!(
                    "{py} udp-xml --target {h0}:5000 --serial IWLAB0009876 --mac {} --interval 5 --duration {secs}",
                    device_mac(idx("udp-xml"))
                ),
                4,
                0,
                0,
            ),
            (
                "ntp-fanout",
                Place::Device(0),
                "chronyd -Q, 25 servers",
                format!("chronyd -Q -u root -t 25 -f {dir}/chrony-fanout.conf"),
                5,
                30,
                30,
            ),
            (
                "ntp-single",
                Place::Device(0),
                "chronyd -Q, 1 server",
                format!("chronyd -Q -u root -t 25 -f {dir}/chrony-single.conf"),
                5,
                30,
                30,
            ),
            (
                "mqtt-cleartext",
                Place::Device(0),
                "MQTT 1883, credentials",
                format!("{mqtt} -p 1883 -i iwlab-plug -t iwlab/plug/state -m on"),
                6,
                15,
                10,
            ),
            (
                "mqtt-tls",
                Place::Device(0),
                "MQTT 8883 (TLS), credentials",
                format!("{mqtt} -p 8883 --cafile {cert} -i iwlab-lock -t iwlab/lock/state -m locked"),
                6,
                15,
                10,
            ),
            (
                "cloud-initiated",
                Place::Internet,
                "Internet host connects to :9000",
                format!("{py} tcp-exchange --bind {h0} --target {}:9000", ip("cloud-initiated")),
                6,
                15,
                10,
            ),
            ("telnet", Place::Device(0), "Telnet login", format!("{py} telnet-session --target {h2}:23"), 7, 20, 10),
            (
                "firmware-http",
                Place::Device(0),
                "4 Range GETs of firmware.bin",
                format!(
                    "{py} ranged-get --url http://{h2}/fw/firmware.bin --chunk 524288 --expect-size {DOWNLOAD_BYTES}"
                ),
                8,
                30,
                20,
            ),
            (
                "firmware-https",
                Place::Device(0),
                "HTTPS GET of firmware.bin",
                format!("{curl} --cacert {cert} -A iwlab-updater/1.0 https://{h0}/fw/firmware.bin"),
                9,
                30,
                20,
            ),
            (
                "image-http",
                Place::Device(0),
                "HTTP GET of photo.jpg",
                format!("{curl} -A iwlab-frame/1.0 http://{h2}/media/photo.jpg"),
                10,
                30,
                20,
            ),
            (
                "telnet-scan",
                Place::Device(0),
                "sweep 203.0.113.0/24 port 23",
                format!("{py} scan --net 203.0.113.0 --port 23 --timeout 0.3 --parallel 32"),
                12,
                0,
                30,
            ),
            (
                "new-device",
                Place::Device(0),
                "HTTP GET of a status",
                format!("{curl} -A iwlab-bulb/1.0 http://{h0}/status.json"),
                LATE_JOIN.as_secs() + 1,
                10,
                15,
            ),
        ];
        table
            .into_iter()
            .map(|(name, place, what, command, start, period, bound)| {
                let device = idx(name);
                let mut argv: Vec<String> = Vec::new();
                if bound > 0 {
                    argv.extend(["timeout", "-k", "2"].map(str::to_owned));
                    argv.push(bound.to_string());
                }
                argv.extend(command.split_whitespace().map(str::to_owned));
                Action {
                    device,
                    place: if place == Place::Internet { place } else { Place::Device(device) },
                    what,
                    argv,
                    start: Duration::from_secs(start),
                    period: (period > 0).then(|| Duration::from_secs(period)),
                    long_running: bound == 0,
                }
            })
            .collect()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Adds the late device when it is due, reaps finished clients and starts the due ones.
    /// Returns lines worth printing (the late device joining, a client failing).
    pub fn tick(&mut self, lab: &mut HomeLab) -> Result<Vec<String>> {
        let now = self.started.elapsed();
        let mut said = Vec::new();
        if self.late_joined.is_none() && now >= LATE_JOIN {
            let d = lab.add_device()?;
            ensure!(d.index == LATE_DEVICE, "the late device got index {}, not {LATE_DEVICE}", d.index);
            said.push(format!(
                "scenario new-device: device {} ({}, {}) joined the bridge on {}",
                d.index, d.mac, d.ip, d.port
            ));
            self.late_joined = Some(now);
        }
        for server in &mut self.servers {
            server.check_alive()?;
        }
        let ends = self.duration;
        for slot in &mut self.slots {
            if let Some(p) = slot.proc.as_mut()
                && let Some(status) = p.poll()
            {
                if status.success() {
                    slot.status.ok += 1;
                } else {
                    slot.status.failed += 1;
                    let e = format!("{status}: {}", p.tail());
                    said.push(format!("scenario {}: `{}` failed ({e})", slot.status.scenario, slot.action.what));
                    slot.status.last_error = Some(e);
                }
                slot.proc = None;
                slot.status.running = false;
            }
            let due = slot.next.is_some_and(|t| now >= t) && slot.proc.is_none() && now < ends;
            if !due || (slot.action.device == LATE_DEVICE && self.late_joined.is_none()) {
                continue;
            }
            let ns = match &slot.action.place {
                Place::Internet => lab.internet.ns.clone(),
                Place::Device(i) => match lab.device(*i) {
                    Some(d) => d.ns.clone(),
                    None => continue,
                },
            };
            slot.status.runs += 1;
            let log = self.dir.join(format!("logs/{}-{}.log", slot.status.scenario, slot.status.runs));
            let args: Vec<&str> = slot.action.argv.iter().map(String::as_str).collect();
            slot.proc = Some(Proc::spawn(lab, &ns, slot.status.scenario, log, &args)?);
            slot.status.running = true;
            slot.next = slot.action.period.map(|p| now + p);
        }
        Ok(said)
    }

    pub fn status(&self) -> Vec<ActionStatus> {
        self.slots.iter().map(|s| s.status.clone()).collect()
    }

    /// One line per client: runs, failures, the last error.
    pub fn status_table(&self) -> String {
        let mut out = String::new();
        for s in self.status() {
            out.push_str(&format!(
                "  d{:<2} {:<17} {:<38} runs {:>2} ok {:>2} failed {:>2}{}{}\n",
                s.device,
                s.scenario,
                s.what,
                s.runs,
                s.ok,
                s.failed,
                if s.running { " (running)" } else { "" },
                s.last_error.as_ref().map(|e| format!("  last error: {e}")).unwrap_or_default()
            ));
        }
        out
    }

    /// Stops every client, then every server.
    pub fn stop(&mut self) {
        for s in &mut self.slots {
            if let Some(mut p) = s.proc.take() {
                p.stop();
            }
        }
        for p in self.servers.iter_mut().rev() {
            p.stop();
        }
    }

    /// The servers' and clients' files (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn long_running_alive(&self) -> bool {
        self.slots.iter().filter(|s| s.action.long_running).all(|s| s.proc.is_some())
    }
}

impl Drop for Scenarios {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deterministic bytes that look like nothing (a firmware image's compressed payload).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A JPEG's start (SOI, JFIF APP0) and end (EOI) around pseudo-random bytes: served as
/// image/jpeg, as large as the firmware.
fn jpeg_like(n: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01,
        0x00, 0x00,
    ];
    v.extend(pseudo_random(n - v.len() - 2, 0x7a));
    v.extend([0xFF, 0xD9]);
    v
}

// ---------------------------------------------------------------------------------------------
// Reading what the agent saw

/// Complete lines of an NDJSON event log; lines that are not JSON are skipped.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The agent's live report.
pub fn report(listen: &str) -> Result<Value> {
    let body = metrics::http_get(listen, "/api/v1/report", Duration::from_secs(5))?;
    serde_json::from_str(&body).context("the report is not JSON")
}

fn st<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str().unwrap_or("")
}

fn num(e: &Value, k: &str) -> f64 {
    e[k].as_f64().unwrap_or(f64::NAN)
}

/// A finding as the report and the event log give it (issue 12's contract).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub rule: String,
    pub mac: String,
    pub summary: String,
}

impl Finding {
    pub fn from_json(v: &Value) -> Self {
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            Value::Null => format!("{}-{}-{}", st(v, "rule"), st(v, "mac"), v["ts"]),
            other => other.to_string(),
        };
        Self { id, rule: st(v, "rule").to_owned(), mac: st(v, "mac").to_owned(), summary: st(v, "summary").to_owned() }
    }
}

/// The report's findings.
pub fn report_findings(report: &Value) -> Vec<Finding> {
    report["findings"].as_array().into_iter().flatten().map(Finding::from_json).collect()
}

/// The event log's `"kind": "finding"` lines.
pub fn logged_findings(events: &[Value]) -> Vec<Finding> {
    events.iter().filter(|e| st(e, "kind") == "finding").map(Finding::from_json).collect()
}

/// Device index of a lab MAC (`02:77:00:00:00:xx`, xx = 10 + index).
pub fn device_of(mac: &str) -> Option<usize> {
    let last = mac.strip_prefix("02:77:00:00:00:")?;
    usize::from_str_radix(last, 16).ok()?.checked_sub(10).filter(|i| (1..=SCENARIOS.len()).contains(i))
}

/// One line for a finding: rule, device and scenario, what the table says of it, summary.
pub fn describe(f: &Finding) -> String {
    let (who, verdict) = match device_of(&f.mac).and_then(|i| scenario(i).map(|s| (i, s))) {
        Some((i, s)) => {
            let verdict = match s.expect {
                Expect::Finding(r) if r == f.rule => "expected",
                Expect::Quiet(rules) if rules.contains(&f.rule.as_str()) => "FALSE ALARM (negative twin)",
                _ => "not in the table",
            };
            (format!("d{i} {}", s.name), verdict)
        }
        None => (f.mac.clone(), "not a scenario device"),
    };
    format!("{:<18} {:<21} {} [{verdict}] {}", f.rule, who, f.mac, f.summary)
}

/// Prints each finding once, as it first appears.
#[derive(Debug, Default)]
pub struct FindingWatch {
    seen: BTreeSet<String>,
}

impl FindingWatch {
    /// The findings not shown before.
    pub fn new_findings(&mut self, findings: &[Finding]) -> Vec<Finding> {
        findings.iter().filter(|f| self.seen.insert(f.id.clone())).cloned().collect()
    }
}

/// One scenario's result: did its traffic happen, and did the findings match the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub device: usize,
    pub scenario: &'static str,
    pub expect: Expect,
    pub traffic: Result<String, String>,
    /// Rules of the device's findings in the report.
    pub rules: Vec<String>,
    pub findings_ok: bool,
}

/// Every scenario's verdict from the report and the event log.
pub fn verdicts(report: &Value, events: &[Value]) -> Vec<Verdict> {
    let findings = report_findings(report);
    SCENARIOS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let device = i + 1;
            let mac = device_mac(device);
            let rules: Vec<String> = findings
                .iter()
                .filter(|f| f.mac == mac)
                .map(|f| f.rule.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let findings_ok = match s.expect {
                Expect::Finding(r) => rules.iter().any(|x| x == r),
                Expect::Quiet(no) => !rules.iter().any(|x| no.contains(&x.as_str())),
            };
            Verdict {
                device,
                scenario: s.name,
                expect: s.expect,
                traffic: traffic_check(device, report, events),
                rules,
                findings_ok,
            }
        })
        .collect()
}

/// The verdicts as a table.
pub fn verdict_table(v: &[Verdict]) -> String {
    let mut out =
        format!("  {:<4} {:<17} {:<42} {:<7} {:<30} {}\n", "dev", "scenario", "expects", "traffic", "findings", "");
    for x in v {
        let expects = match x.expect {
            Expect::Finding(r) => r.to_owned(),
            Expect::Quiet(rules) => format!("no {}", rules.join(",")),
        };
        let traffic = if x.traffic.is_ok() { "ok" } else { "MISSING" };
        let found = if x.rules.is_empty() { "-".to_owned() } else { x.rules.join(",") };
        out.push_str(&format!(
            "  d{:<3} {:<17} {:<42} {:<7} {:<30} {}\n",
            x.device,
            x.scenario,
            expects,
            traffic,
            found,
            if x.findings_ok { "ok" } else { "WRONG" }
        ));
        if let Err(e) = &x.traffic {
            out.push_str(&format!("        traffic: {e}\n"));
        }
    }
    out
}

fn device_json<'a>(report: &'a Value, mac: &str) -> Option<&'a Value> {
    report["devices"].as_array()?.iter().find(|d| st(d, "mac") == mac)
}

fn peers(report: &Value, mac: &str) -> Vec<Value> {
    device_json(report, mac).and_then(|d| d["peers"].as_array().cloned()).unwrap_or_default()
}

fn peer<'a>(peers: &'a [Value], ip: &str) -> Option<&'a Value> {
    peers.iter().find(|p| st(p, "ip") == ip)
}

/// The independent oracle: did scenario `device`'s traffic happen, as the agent's protocol events
/// and per-peer counts (which exist without any detector) show? Ok says what was seen.
pub fn traffic_check(device: usize, report: &Value, events: &[Value]) -> Result<String, String> {
    let Some(sc) = scenario(device) else { return Err(format!("no scenario for device {device}")) };
    let mac = device_mac(device);
    let ip = device_ip(device).to_string();
    let from = |kind: &str| -> Vec<&Value> {
        events.iter().filter(|e| st(e, "kind") == kind && st(e, "src_mac") == mac).collect()
    };
    let to = |kind: &str| -> Vec<&Value> {
        events.iter().filter(|e| st(e, "kind") == kind && st(e, "dst_mac") == mac).collect()
    };
    let need = |ok: bool, what: String| if ok { Ok(what) } else { Err(what) };
    let all_peers = peers(report, &mac);
    let peer_bytes = |ip: &str| peer(&all_peers, ip).map_or(0.0, |p| num(p, "bytes"));
    let h = |i: usize| internet_host(i).to_string();
    let msearch = |e: &&Value| st(e, "method") == "M-SEARCH";
    match sc.name {
        "lateral-movement" => {
            let upnp = device_ip(idx("upnp-device")).to_string();
            let searched = from("ssdp").iter().any(msearch);
            let fetched = from("http")
                .iter()
                .any(|e| st(e, "method") == "GET" && st(e, "dst_ip") == upnp && num(e, "dst_port") == 8200.0);
            need(
                searched && fetched,
                format!("M-SEARCH sent: {searched}; GET of the description from {upnp}:8200: {fetched}"),
            )
        }
        "upnp-device" => {
            let answered = from("ssdp").iter().any(|e| st(e, "method") == "RESPONSE");
            let served = from("http").iter().any(|e| num(e, "status") == 200.0 && num(e, "src_port") == 8200.0);
            need(answered && served, format!("SSDP answers sent: {answered}; description served on 8200: {served}"))
        }
        "discovery-only" => {
            let searched = from("ssdp").iter().any(msearch);
            let answered = to("ssdp").iter().any(|e| st(e, "method") == "RESPONSE");
            let fetched = from("http").len();
            need(
                searched && answered && fetched == 0,
                format!("M-SEARCH sent: {searched}; answer received: {answered}; HTTP requests: {fetched} (want 0)"),
            )
        }
        "mdns-announcer" => {
            let ann: Vec<&Value> =
                from("mdns").into_iter().filter(|e| e["response"] == true && e["unsolicited"] == true).collect();
            let txt = ann
                .iter()
                .any(|e| e["txt"].as_array().is_some_and(|t| t.iter().any(|x| x.as_str() == Some("sn=IWLAB0001234"))));
            need(txt, format!("{} unsolicited mDNS responses, one with TXT sn=IWLAB0001234: {txt}", ann.len()))
        }
        "mdns-responder" => {
            let querier = device_mac(idx("mdns-querier"));
            let queries: Vec<f64> = events
                .iter()
                .filter(|e| st(e, "kind") == "mdns" && st(e, "src_mac") == querier && e["response"] != true)
                .map(|e| num(e, "ts"))
                .collect();
            let answers: Vec<f64> =
                from("mdns").iter().filter(|e| e["response"] == true).map(|e| num(e, "ts")).collect();
            let unprompted = answers.iter().filter(|t| !queries.iter().any(|q| *q <= **t && **t - *q < 1.0)).count();
            need(
                !answers.is_empty() && unprompted == 0,
                format!(
                    "{} mDNS answers, {unprompted} without a query from the querier in the second before",
                    answers.len()
                ),
            )
        }
        "mdns-querier" => {
            let asked = from("mdns").iter().filter(|e| e["response"] != true).count();
            let responder = device_mac(idx("mdns-responder"));
            let answered = events
                .iter()
                .filter(|e| st(e, "kind") == "mdns" && st(e, "src_mac") == responder && e["response"] == true)
                .count();
            need(asked > 0 && answered > 0, format!("{asked} mDNS queries sent, {answered} answers from the responder"))
        }
        "ntp-fanout" | "ntp-single" => {
            let servers: BTreeSet<&str> =
                from("ntp").iter().filter(|e| num(e, "mode") == 3.0).map(|e| st(e, "dst_ip")).collect();
            let want = if sc.name == "ntp-fanout" { servers.len() >= 20 } else { servers.len() == 1 };
            need(want, format!("NTP client requests to {} distinct servers", servers.len()))
        }
        "firmware-http" => {
            let ranges: BTreeSet<&str> = from("http")
                .iter()
                .filter(|e| st(e, "uri") == "/fw/firmware.bin" && !st(e, "range").is_empty())
                .map(|e| st(e, "range"))
                .collect();
            let partials = to("http")
                .iter()
                .filter(|e| num(e, "status") == 206.0 && st(e, "content_type") == "application/octet-stream")
                .count();
            let bytes = peer_bytes(&h(2));
            need(
                ranges.len() >= 4 && partials >= 1 && bytes >= DOWNLOAD_BYTES as f64,
                format!(
                    "{} distinct Range requests, {partials} 206 octet-stream responses seen, {bytes} bytes with {}",
                    ranges.len(),
                    h(2)
                ),
            )
        }
        "firmware-https" => {
            let hellos = from("tls").iter().filter(|e| num(e, "dst_port") == 443.0).count();
            let http = from("http").len();
            let bytes = peer_bytes(&h(0));
            need(
                hellos > 0 && http == 0 && bytes >= DOWNLOAD_BYTES as f64,
                format!("{hellos} ClientHellos to 443, {http} HTTP events (want 0), {bytes} bytes with {}", h(0)),
            )
        }
        "image-http" => {
            let got = from("http").iter().any(|e| st(e, "uri") == "/media/photo.jpg");
            let jpeg = to("http").iter().any(|e| st(e, "content_type") == "image/jpeg");
            let bytes = peer_bytes(&h(2));
            need(
                got && bytes >= DOWNLOAD_BYTES as f64,
                format!("GET /media/photo.jpg: {got}; image/jpeg response seen: {jpeg}; {bytes} bytes with {}", h(2)),
            )
        }
        "mqtt-cleartext" => {
            let connects = from("mqtt")
                .iter()
                .filter(|e| {
                    st(e, "packet_type") == "CONNECT" && e["has_credentials"] == true && num(e, "dst_port") == 1883.0
                })
                .count();
            need(connects > 0, format!("{connects} MQTT CONNECTs with credentials to port 1883"))
        }
        "mqtt-tls" => {
            let hellos = from("tls").iter().filter(|e| num(e, "dst_port") == 8883.0).count();
            let mqtt = from("mqtt").len();
            need(
                hellos > 0 && mqtt == 0,
                format!("{hellos} ClientHellos to 8883, {mqtt} cleartext MQTT events (want 0)"),
            )
        }
        "udp-xml" => {
            let text = events
                .iter()
                .filter(|e| {
                    st(e, "src_mac") == mac
                        && st(e, "dst_ip") == h(0)
                        && num(e, "dst_port") == 5000.0
                        && st(e, "payload_class") == "text"
                })
                .count();
            need(text > 0, format!("{text} text payloads to {}:5000", h(0)))
        }
        "telnet" => {
            let sent = events
                .iter()
                .filter(|e| st(e, "src_mac") == mac && st(e, "dst_ip") == h(2) && num(e, "dst_port") == 23.0)
                .count();
            need(sent > 0, format!("{sent} sampled payloads to {}:23", h(2)))
        }
        "gateway-ping" | "internet-ping" => {
            let gw = peer(&all_peers, "192.168.77.1").map_or(0.0, |p| num(p, "packets"));
            let inet = peer(&all_peers, &h(0)).map_or(0.0, |p| num(p, "packets"));
            let ok = if sc.name == "gateway-ping" { gw >= 20.0 } else { inet >= 20.0 && gw == 0.0 };
            need(ok, format!("packets with the gateway: {gw}; with {}: {inet}", h(0)))
        }
        "cloud-initiated" => {
            let p = peer(&all_peers, &h(0));
            let inbound = p.is_some_and(|p| st(p, "first_direction") == "inbound");
            let bytes = p.map_or(0.0, |p| num(p, "bytes"));
            let opened =
                events.iter().any(|e| st(e, "src_ip") == h(0) && st(e, "dst_ip") == ip && num(e, "dst_port") == 9000.0);
            need(
                inbound && bytes > 0.0 && opened,
                format!(
                    "peer {} first seen inbound: {inbound}, {bytes} bytes; payload from it to port 9000 seen: {opened}",
                    h(0)
                ),
            )
        }
        "three-hosts" => {
            let internet: BTreeSet<&str> =
                all_peers.iter().filter(|p| st(p, "scope") == "internet").map(|p| st(p, "ip")).collect();
            let want: BTreeSet<String> = (0..3).map(h).collect();
            let ok = internet.len() == 3 && want.iter().all(|w| internet.contains(w.as_str()));
            need(ok, format!("Internet peers: {internet:?}"))
        }
        "telnet-scan" => {
            let swept = all_peers.iter().filter(|p| st(p, "ip").starts_with("203.0.113.")).count();
            need(swept >= 254, format!("{swept} peers in 203.0.113.0/24 (want 254)"))
        }
        "dns-refused" => {
            let refused =
                to("icmp").iter().filter(|e| num(e, "original_dst_port") == 53.0 && st(e, "reason") == "port").count();
            need(refused > 0, format!("{refused} ICMP port unreachables quoting its DNS queries"))
        }
        "new-device" => {
            let seen = device_json(report, &mac).is_some();
            let fetched = from("http").iter().any(|e| st(e, "method") == "GET");
            need(seen && fetched, format!("in the report: {seen}; its HTTP GET seen: {fetched}"))
        }
        other => Err(format!("no traffic check for {other}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The whole thing: lab, agent, Prometheus, scenarios

#[derive(Debug, Clone)]
pub struct ScenarioLabOptions {
    /// Namespace prefix ("iwlab" for `cargo xtask lab`, "iwf" for the test).
    pub prefix: String,
    pub agent_bin: PathBuf,
    pub attach: String,
    pub agent_listen: String,
    pub agent_extra: Vec<String>,
    /// Where the agent's log, its event log and its state directory go.
    pub work_dir: PathBuf,
    /// None: no Prometheus.
    pub prometheus_port: Option<u16>,
    /// Bound of the long-running traffic.
    pub duration: Duration,
    /// A capture of the lab's traffic to write here (see [`LabCapture`]), or none.
    pub capture: Option<PathBuf>,
}

/// `tcpdump -i BRIDGE -s 0 -w FILE`: the whole lab's traffic as one capture, for replaying it
/// through `iotwatch replay`. On the bridge device rather than on its ports: tcpdump puts the
/// bridge in promiscuous mode, and a promiscuous bridge hands a copy of every frame it forwards
/// between ports up to its own device, so the bridge alone sees each frame once (forwarded,
/// flooded, to and from the host), where the ports would hold every port-to-port frame twice
/// (egress of one, ingress of the other); it also sees the port of the device that joins late
/// without being told. Frames a port's own interface would send never cross the bridge, but
/// the lab's ports send none (findings_lab checks that every MAC the agent saw is captured).
pub struct LabCapture {
    child: Option<Child>,
    pub file: PathBuf,
    log: PathBuf,
}

/// What tcpdump said when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub captured: u64,
    pub dropped: u64,
}

impl LabCapture {
    /// Starts and waits (bounded) until tcpdump listens. Immediate mode and a 32 MiB buffer:
    /// frames are written as they come (none waits in a block that SIGINT could discard) and a
    /// burst (the scan's SYNs, a download) is not dropped.
    pub fn start(iface: &str, file: &Path) -> Result<Self> {
        let log = file.with_extension("tcpdump.log");
        let f = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let file_s = file.display().to_string();
        let args = ["-n", "-i", iface, "-s", "0", "-B", "32768", "-U", "--immediate-mode", "-w", &file_s];
        let mut c = cmd::command("tcpdump", &args);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(f);
        cmd::supervised(&mut c, libc::SIGTERM);
        let child = c.spawn().context("cannot start tcpdump (cargo xtask setup installs it)")?;
        let mut me = Self { child: Some(child), file: file.to_path_buf(), log };
        let end = Instant::now() + Duration::from_secs(10);
        while !me.output().contains("listening on") {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("tcpdump on {iface} exited ({status}): {}", me.output().trim());
            }
            ensure!(Instant::now() < end, "tcpdump on {iface} does not listen after 10 s: {}", me.output().trim());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (SIGINT: tcpdump flushes the file and prints its counts) and returns the counts.
    pub fn stop(&mut self) -> Result<CaptureStats> {
        let Some(mut c) = self.child.take() else { bail!("the capture was stopped already") };
        let status = cmd::stop(&mut c, libc::SIGINT, Duration::from_secs(10));
        let out = self.output();
        ensure!(status.is_some_and(|s| s.success()), "tcpdump did not stop cleanly ({status:?}): {}", out.trim());
        // "123 packets captured", "0 packets dropped by kernel"
        let count = |what: &str| -> Result<u64> {
            out.lines()
                .find_map(|l| l.strip_suffix(what).and_then(|n| n.trim().parse().ok()))
                .with_context(|| format!("no \"{what}\" in tcpdump's output: {}", out.trim()))
        };
        Ok(CaptureStats { captured: count(" packets captured")?, dropped: count(" packets dropped by kernel")? })
    }
}

impl Drop for LabCapture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            cmd::stop(&mut c, libc::SIGINT, Duration::from_secs(5));
        }
    }
}

/// The lab with its agent (event log in `work_dir/events.ndjson`), Prometheus and scenarios,
/// and the capture if asked for. Dropped in order: agent (detaches), Prometheus, scenarios,
/// capture, then the lab's namespaces.
pub struct ScenarioLab {
    pub agent: Agent,
    pub prometheus: Option<Prometheus>,
    pub scenarios: Scenarios,
    /// Before the lab: it stops before the bridge goes.
    pub capture: Option<LabCapture>,
    pub lab: HomeLab,
    pub events: PathBuf,
    pub started: Instant,
}

impl ScenarioLab {
    pub fn start(o: &ScenarioLabOptions) -> Result<Self> {
        let started = Instant::now();
        let lab = HomeLab::create(LabOptions {
            prefix: o.prefix.clone(),
            devices: EARLY_DEVICES,
            ipv6: true,
            static_neighbors: false,
        })?;
        // Before the agent: the capture holds at least what the agent sees.
        let capture = o.capture.as_deref().map(|file| LabCapture::start(&lab.bridge, file)).transpose()?;
        fs::create_dir_all(&o.work_dir)?;
        let events = o.work_dir.join("events.ndjson");
        let _ = fs::remove_file(&events);
        let state = o.work_dir.join("state");
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(&state)?;
        let mut extra = vec![s("--events"), events.display().to_string()];
        extra.extend(o.agent_extra.iter().cloned());
        let mut agent = Agent::spawn_with_env(
            &o.agent_bin,
            &lab.bridge,
            &o.attach,
            &o.agent_listen,
            &extra,
            Some(&o.work_dir.join("iotwatch.log")),
            &[("STATE_DIRECTORY", &state)],
        )?;
        agent.wait_ready(Duration::from_secs(30))?;
        let prometheus = o
            .prometheus_port
            .map(|port| Prometheus::start(&o.agent_listen, port, Duration::from_secs(30)))
            .transpose()?;
        let scenarios = Scenarios::start(&lab, o.duration)?;
        Ok(Self { agent, prometheus, scenarios, capture, lab, events, started })
    }

    /// One step: late device, clients, and every process still alive.
    pub fn tick(&mut self) -> Result<Vec<String>> {
        self.agent.check_alive()?;
        if let Some(p) = self.prometheus.as_mut() {
            p.check_alive()?;
        }
        self.scenarios.tick(&mut self.lab)
    }

    /// Stops in order; the lab itself goes when this is dropped.
    pub fn stop(&mut self) -> Result<()> {
        let stopped = self.agent.stop();
        if let Some(p) = self.prometheus.as_mut() {
            p.stop();
        }
        self.scenarios.stop();
        stopped
    }

    pub fn report(&self) -> Result<Value> {
        report(&self.agent.listen)
    }

    pub fn events(&self) -> Vec<Value> {
        read_events(&self.events)
    }
}

/// The scenario table as text (for the lab's start and the README).
pub fn table() -> String {
    let mut out = String::new();
    for (i, s) in SCENARIOS.iter().enumerate() {
        let expects = match s.expect {
            Expect::Finding(r) => r.to_owned(),
            Expect::Quiet(rules) => format!("none ({})", rules.join(", ")),
        };
        out.push_str(&format!("  d{:<2} {} {:<17} {:<40} {}\n", i + 1, device_mac(i + 1), s.name, expects, s.what));
    }
    out
}

/// Per-device alert state from Prometheus: (alert name, mac) of every firing alert.
pub fn firing(p: &Prometheus) -> Result<BTreeMap<(String, String), String>> {
    Ok(p.alerts()?
        .into_iter()
        .filter(|a| a.state == "firing")
        .map(|a| ((a.name.clone(), a.label("mac").unwrap_or("").to_owned()), a.state.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let names: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len(), "scenario names are unique");
        for s in &SCENARIOS {
            let rules: Vec<&str> = match s.expect {
                Expect::Finding(r) => vec![r],
                Expect::Quiet(r) => r.to_vec(),
            };
            for r in rules {
                assert!(RULES.contains(&r), "{}: unknown rule {r}", s.name);
            }
        }
        // Every rule has a positive scenario.
        for r in RULES {
            assert!(SCENARIOS.iter().any(|s| s.expect == Expect::Finding(r)), "no scenario raises {r}");
        }
        assert_eq!(scenario(LATE_DEVICE).map(|s| s.name), Some("new-device"));
        assert_eq!(device_of(&device_mac(7)), Some(7));
        assert_eq!(device_of("02:77:00:00:00:02"), None);
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name("lateral_movement"), "IotwatchLateralMovement");
        assert_eq!(alert_name("firmware_over_http"), "IotwatchFirmwareOverHttp");
        assert_eq!(alert_name("scan"), "IotwatchScan");
    }

    #[test]
    fn traffic_checks_read_events_and_peers() {
        let mac = device_mac(idx("ntp-fanout"));
        let events: Vec<Value> = (0..21)
            .map(|i| serde_json::json!({"kind": "ntp", "src_mac": mac, "dst_ip": format!("198.51.100.{}", 100 + i), "mode": 3}))
            .collect();
        let report = serde_json::json!({"devices": []});
        assert!(traffic_check(idx("ntp-fanout"), &report, &events).is_ok());
        assert!(traffic_check(idx("ntp-single"), &report, &events).is_err());
        let mac = device_mac(idx("gateway-ping"));
        let report = serde_json::json!({"devices": [{"mac": mac, "peers": [{"ip": "192.168.77.1", "packets": 40}]}]});
        assert!(traffic_check(idx("gateway-ping"), &report, &[]).is_ok());
    }

    #[test]
    fn verdicts_compare_findings_with_the_table() {
        let report = serde_json::json!({"devices": [], "findings": [
            {"id": "1", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-fanout")), "summary": "25 servers"},
            {"id": "2", "rule": "ntp_fanout", "mac": device_mac(idx("ntp-single")), "summary": "1 server"},
        ]});
        let v = verdicts(&report, &[]);
        assert!(v[idx("ntp-fanout") - 1].findings_ok);
        assert!(!v[idx("ntp-single") - 1].findings_ok, "a negative twin raised its rule");
        let f = report_findings(&report);
        assert!(describe(&f[1]).contains("FALSE ALARM"), "{}", describe(&f[1]));
        let mut w = FindingWatch::default();
        assert_eq!(w.new_findings(&f).len(), 2);
        assert_eq!(w.new_findings(&f).len(), 0);
    }

    #[test]
    fn files() {
        let j = jpeg_like(4096);
        assert_eq!((j.len(), &j[..3], &j[j.len() - 2..]), (4096, &[0xFF, 0xD8, 0xFF][..], &[0xFF, 0xD9][..]));
        let r = pseudo_random(65536, 1);
        let printable = r.iter().filter(|b| b.is_ascii_graphic()).count();
        assert!(printable < 65536 / 2, "binary, not text: {printable}");
    }
}
