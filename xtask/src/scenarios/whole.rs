//! The whole thing: lab, agent, Prometheus and scenarios, and a capture of the lab's traffic.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::*;
use crate::{
    agent::Agent,
    cmd,
    lab::{HomeLab, LabOptions},
    prometheus::Prometheus,
    tmp::TempDir,
};

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
    /// The flags the lab gives the agent besides its options: its peer databases and its
    /// `new_destination` baseline ([`lab_flags`]). A replay of the lab's capture needs them too.
    pub lab_flags: Vec<String>,
    /// Where the peer databases are; removed after the agent stopped.
    peer_dbs: TempDir,
}

/// Writes the lab's peer databases ([`LAB_NETWORKS`]) into `dir` as the agent's CSVs, each
/// with a header: `asn.csv` (`start,end,asn,organisation`) and `country.csv`
/// (`start,end,country_code`).
pub fn write_peer_dbs(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (asn, country) = (dir.join("asn.csv"), dir.join("country.csv"));
    let mut asn_csv = String::from("start,end,asn,organisation\n");
    let mut country_csv = String::from("start,end,country_code\n");
    for n in &LAB_NETWORKS {
        asn_csv.push_str(&format!("{},{},{},\"{}\"\n", n.first, n.last, n.asn, n.org.replace('"', "\"\"")));
        country_csv.push_str(&format!("{},{},{}\n", n.first, n.last, n.country));
    }
    fs::write(&asn, asn_csv).with_context(|| format!("cannot write {}", asn.display()))?;
    fs::write(&country, country_csv).with_context(|| format!("cannot write {}", country.display()))?;
    Ok((asn, country))
}

/// The lab's flags for the agent, live and in replay: its peer databases in `dir` (written
/// now), in place of the real ones, which know nothing of the lab's addresses, and
/// `--detect.destination-baseline` [`DESTINATION_BASELINE`].
pub fn lab_flags(dir: &Path) -> Result<Vec<String>> {
    let (asn, country) = write_peer_dbs(dir)?;
    Ok(vec![
        s("--enrich.asn-db"),
        asn.display().to_string(),
        s("--enrich.country-db"),
        country.display().to_string(),
        s("--detect.destination-baseline"),
        DESTINATION_BASELINE.as_secs().to_string(),
    ])
}

/// The `--flag value` pairs of `flags` whose flag the user did not give in `given` (a flag of
/// the user's replaces the lab's rather than being given twice).
fn unless_given(flags: Vec<String>, given: &[String]) -> Vec<String> {
    let named = |f: &str| given.iter().any(|g| g == f || g.starts_with(&format!("{f}=")));
    flags.chunks(2).filter(|pair| !named(&pair[0])).flatten().cloned().collect()
}

impl ScenarioLab {
    pub fn start(o: &ScenarioLabOptions) -> Result<Self> {
        let started = Instant::now();
        let options =
            LabOptions { prefix: o.prefix.clone(), devices: EARLY_DEVICES, ipv6: true, static_neighbors: false };
        // The devices' MACs are their identities' (vendors' OUIs).
        let lab = HomeLab::create_with_macs(options, device_mac)?;
        // Before the agent: the capture holds at least what the agent sees.
        let capture = o.capture.as_deref().map(|file| LabCapture::start(&lab.bridge, file)).transpose()?;
        fs::create_dir_all(&o.work_dir)?;
        let events = o.work_dir.join("events.ndjson");
        let _ = fs::remove_file(&events);
        let state = o.work_dir.join("state");
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(&state)?;
        let peer_dbs = TempDir::new("iotwatch-lab-peerdb")?;
        let lab_flags = unless_given(lab_flags(peer_dbs.path())?, &o.agent_extra);
        let mut extra = vec![s("--events"), events.display().to_string()];
        extra.extend(lab_flags.iter().cloned());
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
        Ok(Self { agent, prometheus, scenarios, capture, lab, events, started, lab_flags, peer_dbs })
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

    /// The directory of the lab's peer databases (`asn.csv`, `country.csv`).
    pub fn peer_dbs(&self) -> &Path {
        self.peer_dbs.path()
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

/// The devices' identities as text (for the lab's start and the README): device, MAC, vendor of
/// its OUI, the device it plays, DHCP hostname and vendor class, mDNS host (announced or answered).
pub fn identity_table() -> String {
    let mut out = String::new();
    for (i, sc) in SCENARIOS.iter().enumerate() {
        let id = &sc.identity;
        let vendor = if id.vendor.is_empty() { "(randomised: no vendor)" } else { id.vendor };
        let class = if id.dhcp.vendor_class.is_empty() { "-" } else { id.dhcp.vendor_class };
        let mdns = id.mdns.map_or_else(
            || "-".to_owned(),
            |m| {
                let how = if m.announces { "announces" } else { "answers" };
                let service = m.service.map(|sv| format!(", {}.{}", sv.instance, sv.kind)).unwrap_or_default();
                format!("{}.local ({how}{service})", m.host)
            },
        );
        out.push_str(&format!(
            "  d{:<2} {} {:<46} {:<38} {} | {class} | mDNS {mdns}\n",
            i + 1,
            id.mac,
            vendor,
            id.model,
            id.dhcp.hostname
        ));
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
    fn a_flag_the_user_gives_replaces_the_labs() {
        let lab = ["--enrich.asn-db", "a.csv", "--detect.destination-baseline", "20"].map(s).to_vec();
        let given = [s("--detect.destination-baseline=60")];
        assert_eq!(unless_given(lab.clone(), &given), ["--enrich.asn-db", "a.csv"]);
        assert_eq!(unless_given(lab.clone(), &[s("--log.level"), s("debug")]), lab);
    }
}
