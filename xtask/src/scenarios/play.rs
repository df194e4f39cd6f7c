//! Running the scenarios: servers once, clients on a schedule, the late device.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::*;
use crate::{
    cmd, dhcp,
    lab::{HomeLab, device_ip},
    netns,
    tmp::TempDir,
    workspace_root,
};

// ---------------------------------------------------------------------------------------------
// Processes

/// Where a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Device(usize),
    /// The gateway's namespace (its DHCP server).
    Gateway,
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

pub(super) fn s(v: &str) -> String {
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
            let mut c = format!("# chronyd -Q of the {name} scenario (xtask/src/scenarios/play.rs)\n");
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
            Place::Gateway => lab.gateway.ns.clone(),
            Place::Device(i) => lab.device(*i).with_context(|| format!("no lab device {i}"))?.ns.clone(),
        })
    }

    /// The Internet's servers (chronyd, nginx, mosquitto, a UDP sink, a Telnet login) and the
    /// LAN's (dnsmasq's DHCP on the gateway, minidlna, avahi-daemon, the mDNS responders, the
    /// control port the cloud opens).
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
        let mdns = identity(announcer).and_then(|i| i.mdns).context("the announcer has no mDNS identity")?;
        let service = mdns.service.context("the announcer has no service")?;
        let conf = self.config("avahi-daemon.conf", &[("@HOST@", mdns.host)])?;
        let txt: Vec<String> = service.txt.iter().map(|t| format!("    <txt-record>{t}</txt-record>")).collect();
        let port = service.port.to_string();
        let service = self.config(
            "avahi-camera.service",
            &[("@NAME@", service.instance), ("@TYPE@", service.kind), ("@PORT@", &port), ("@TXT@", &txt.join("\n"))],
        )?;
        fs::rename(&service, self.dir.join("avahi-services/iwlab-camera.service"))?;
        let script = format!(
            "mount --bind {dir}/run /run && mount --bind {dir}/avahi-services /etc/avahi/services && \
             exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title"
        );
        let place = Place::Device(announcer);
        let argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", &script];
        let i = self.server_argv(lab, &place, "avahi-daemon", &argv)?;
        waits.push((i, place, "-u", 5353));

        // The devices that answer on mDNS and never announce: the sensor its host name, the NAS,
        // the speaker and the display their services too, when the home hub browses.
        for (device, mdns) in answering_mdns() {
            let place = Place::Device(device);
            let mut argv = vec![
                s("/usr/bin/python3"),
                Self::script(),
                s("mdns-respond"),
                s("--name"),
                format!("{}.local", mdns.host),
                s("--ip"),
                device_ip(device).to_string(),
                s("--duration"),
                secs.to_string(),
            ];
            if let Some(sv) = mdns.service {
                argv.extend([s("--service"), format!("{}.local", sv.kind), s("--instance"), s(sv.instance)]);
                argv.extend([s("--port"), sv.port.to_string()]);
                for t in sv.txt {
                    argv.extend([s("--txt"), s(t)]);
                }
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let name = format!("mdns-responder-d{device}");
            let i = self.server_argv(lab, &place, &name, &argv)?;
            waits.push((i, place, "-u", 5353));
        }

        // dnsmasq on the gateway: DHCP only (no DNS: the dns-refused scenario needs port 53
        // closed), a reservation for every device at the address it already has.
        let mut argv = dhcp::dnsmasq_argv(&self.path("dnsmasq.pid"), &self.path("dnsmasq.leases"));
        argv.extend([s("--port=0"), s("--dhcp-range=192.168.77.0,static,255.255.255.0,12h")]);
        argv.extend((1..=SCENARIOS.len()).map(|i| format!("--dhcp-host={},{}", device_mac(i), device_ip(i))));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let i = self.server_argv(lab, &Place::Gateway, "dnsmasq", &argv)?;
        waits.push((i, Place::Gateway, "-u", 67));

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
        let [h0, h1, h2, h3] = [0, 1, 2, 3].map(internet_host);
        let ip = |name: &str| device_ip(idx(name));
        let mqtt = format!("mosquitto_pub -h {h1} -V mqttv311 -u {MQTT_USER} -P {MQTT_PASSWORD}");
        let curl = "curl -sS --fail --max-time 15 -o /dev/null";
        // The service types the answering devices offer, as a home hub browses for them.
        let kinds: std::collections::BTreeSet<&str> =
            answering_mdns().into_iter().filter_map(|(_, m)| m.service.map(|sv| sv.kind)).collect();
        let browse: Vec<String> = kinds.iter().map(|k| format!("--service {k}.local")).collect();
        let browse = browse.join(" ");
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
                "mdns-querier",
                Place::Device(0),
                "mDNS browse for services",
                format!("{py} mdns-browse --ip {} --timeout 3 {browse}", ip("mdns-querier")),
                5,
                30,
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
                "new-destination",
                Place::Device(0),
                "HTTPS to its cloud",
                format!("{curl} --cacert {cert} -A iwlab-cam/1.0 https://{h0}/status.json"),
                2,
                10,
                15,
            ),
            (
                "new-destination",
                Place::Device(0),
                "HTTPS to a new cloud (past baseline)",
                format!("{curl} --cacert {cert} -A iwlab-cam/1.0 https://{h3}/status.json"),
                LATER_HOST_AT.as_secs(),
                10,
                15,
            ),
            (
                "same-cloud",
                Place::Device(0),
                "HTTPS to its cloud",
                format!("{curl} --cacert {cert} -A iwlab-vacuum/1.0 https://{h0}/status.json"),
                2,
                10,
                15,
            ),
            (
                "same-cloud",
                Place::Device(0),
                "HTTPS to a new host, same cloud",
                format!("{curl} --cacert {cert} -A iwlab-vacuum/1.0 https://{h2}/status.json"),
                LATER_HOST_AT.as_secs(),
                10,
                15,
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
        // Every device asks for an address once when it starts (the late one when it joins), as
        // real ones do, with its own identity; the lease is not applied.
        let dhcp = SCENARIOS.iter().enumerate().map(|(i, sc)| {
            let device = i + 1;
            let mut argv: Vec<String> = ["timeout", "-k", "2", "15"].map(str::to_owned).to_vec();
            argv.extend(dhcp::udhcpc_argv(&sc.identity.dhcp));
            Action {
                device,
                place: Place::Device(device),
                what: "DHCP with its identity (udhcpc)",
                argv,
                start: if device == LATE_DEVICE { LATE_JOIN } else { Duration::ZERO },
                period: None,
                long_running: false,
            }
        });
        let dhcp: Vec<Action> = dhcp.collect();
        dhcp.into_iter()
            .chain(table.into_iter().map(|(name, place, what, command, start, period, bound)| {
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
            }))
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
                Place::Gateway => lab.gateway.ns.clone(),
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
pub(super) fn jpeg_like(n: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01,
        0x00, 0x00,
    ];
    v.extend(pseudo_random(n - v.len() - 2, 0x7a));
    v.extend([0xFF, 0xD9]);
    v
}
