//! `cargo xtask lab` and `cargo xtask run`: the agent on the namespace home network, or
//! on a real bridge.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    agent::{self, Agent},
    lab::{HomeLab, LabOptions},
    metrics, prometheus,
    scenarios::{self, FindingWatch, ScenarioLab, ScenarioLabOptions},
    setup, signal,
    traffic::{self, Traffic},
};

pub const LAB_PREFIX: &str = "iwlab";
pub const LISTEN: &str = "127.0.0.1:9477";
/// The lab's Prometheus, when the port is free (another free port otherwise).
pub const PROMETHEUS_PORT: u16 = 9478;
const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// The scenario lab's device table is 20-odd lines: less often.
const SCENARIO_SUMMARY_EVERY: Duration = Duration::from_secs(15);
/// How often the scenario lab asks the report for new findings and Prometheus for alerts.
const FINDINGS_EVERY: Duration = Duration::from_secs(3);
/// Traffic generators need a bound even when the lab runs "forever" (until Ctrl-C).
const FOREVER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct LabArgs {
    pub duration: Option<u64>,
    pub attach: String,
    /// The four scripted roles (camera, plug, lamp, hub) on `devices` devices instead of the
    /// finding scenarios.
    pub classic: bool,
    pub devices: usize,
    pub extra: Vec<String>,
}

pub fn lab(args: &LabArgs) -> Result<()> {
    setup::setup()?;
    signal::install()?;
    let bin = agent::build_agent()?;
    if args.classic { classic_lab(args, &bin) } else { scenario_lab(args, &bin) }
}

/// The finding scenarios (xtask/src/scenarios/), a real Prometheus, findings printed as they appear.
fn scenario_lab(args: &LabArgs, bin: &Path) -> Result<()> {
    let work = agent::target_dir().join("lab");
    let duration = args.duration.map(Duration::from_secs);
    println!("lab: scenarios (device, MAC, scenario, expected finding, what it does):\n{}", scenarios::table());
    println!(
        "lab: identities (device, MAC, vendor of its OUI, what it plays, DHCP hostname | vendor class | mDNS):\n{}",
        scenarios::identity_table()
    );
    let mut sl = ScenarioLab::start(&ScenarioLabOptions {
        prefix: LAB_PREFIX.to_owned(),
        agent_bin: bin.to_path_buf(),
        attach: args.attach.clone(),
        agent_listen: LISTEN.to_owned(),
        agent_extra: args.extra.clone(),
        work_dir: work.clone(),
        prometheus_port: Some(prometheus::port_or_free(PROMETHEUS_PORT)?),
        duration: duration.unwrap_or(FOREVER),
        capture: None,
    })?;
    println!(
        "lab: bridge {}, gateway {}, internet hosts {:?}, {} devices (device {} joins after {} s)",
        sl.lab.bridge,
        sl.lab.gateway.ip,
        sl.lab.internet.hosts,
        sl.lab.devices.len(),
        scenarios::LATE_DEVICE,
        scenarios::LATE_JOIN.as_secs()
    );
    println!("lab: metrics at {}, report at http://{}/api/v1/report", sl.agent.metrics_url(), sl.agent.listen);
    println!(
        "lab: event log {} (findings: \"kind\": \"finding\"), agent log {}",
        sl.events.display(),
        work.join("iotwatch.log").display()
    );
    if let Some(p) = &sl.prometheus {
        println!(
            "lab: prometheus at {} (alerts: {}/alerts), scraping every 1 s, rules of deploy/prometheus",
            p.url(),
            p.url()
        );
    }
    println!("lab: servers' and clients' logs in {}", sl.scenarios.dir().display());
    println!(
        "lab: the Internet's peer databases in {} (the agent's --enrich.asn-db, --enrich.country-db): {}",
        sl.peer_dbs().display(),
        scenarios::LAB_NETWORKS
            .iter()
            .map(|n| format!("{}-{} AS{} {} {}", n.first, n.last, n.asn, n.provider, n.country))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "lab: {}",
        duration.map_or("Ctrl-C ends the lab".to_owned(), |d| format!("ends in {} s (or Ctrl-C)", d.as_secs()))
    );

    let result = watch_scenarios(&mut sl, duration);
    match (sl.report(), result.is_ok()) {
        (Ok(report), _) => {
            let events = sl.events();
            let v = scenarios::verdicts(&report, &events);
            println!("lab: scenarios after {} s:\n{}", sl.scenarios.elapsed().as_secs(), scenarios::verdict_table(&v));
            println!(
                "lab: identities (vendor, names, DHCP options as the agent saw them):\n{}",
                scenarios::identity_table_seen(&report, &events)
            );
            match scenarios::peer_db_check(&report) {
                Ok(seen) => println!("lab: Internet peers: ok, {seen}"),
                Err(e) => println!("lab: Internet peers: WRONG, {e}"),
            }
        }
        (Err(e), true) => eprintln!("lab: no final report: {e:#}"),
        (Err(_), false) => {}
    }
    println!("lab: clients:\n{}", sl.scenarios.status_table());
    let stopped = sl.stop();
    drop(sl);
    println!("lab: removed");
    result.and(stopped)
}

fn watch_scenarios(sl: &mut ScenarioLab, duration: Option<Duration>) -> Result<()> {
    let start = Instant::now();
    let mut next_summary = start + SCENARIO_SUMMARY_EVERY;
    let mut next_findings = start + FINDINGS_EVERY;
    let mut watch = FindingWatch::default();
    let mut alerts: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        if duration.is_some_and(|d| start.elapsed() >= d) {
            return Ok(());
        }
        if signal::sleep(Duration::from_millis(500)) {
            println!("lab: interrupted");
            return Ok(());
        }
        for line in sl.tick()? {
            println!("lab: {line}");
        }
        let now = Instant::now();
        if now >= next_findings {
            next_findings = now + FINDINGS_EVERY;
            match sl.report() {
                Ok(r) => {
                    for f in watch.new_findings(&scenarios::report_findings(&r)) {
                        println!("finding: {}", scenarios::describe(&f));
                    }
                }
                Err(e) => eprintln!("lab: report failed: {e:#}"),
            }
            if let Some(p) = &sl.prometheus {
                match scenarios::firing(p) {
                    Ok(now_firing) => {
                        for (name, mac) in now_firing.keys().filter(|k| !alerts.contains_key(*k)) {
                            let who = scenarios::device_of(mac)
                                .and_then(|i| scenarios::scenario(i).map(|s| format!(" (d{i} {})", s.name)))
                                .unwrap_or_default();
                            println!("alert firing: {name} mac={mac}{who}");
                        }
                        alerts = now_firing;
                    }
                    Err(e) => eprintln!("lab: prometheus alerts failed: {e:#}"),
                }
            }
        }
        if now >= next_summary {
            next_summary = now + SCENARIO_SUMMARY_EVERY;
            match metrics::scrape(&sl.agent.listen) {
                Ok(samples) => {
                    let rows = metrics::device_summaries(&samples);
                    let gateway = sl.lab.gateway.mac.clone();
                    let bridge = sl.lab.bridge_mac.clone();
                    let name_of = |mac: &str| -> Option<String> {
                        if mac == gateway {
                            return Some("gateway".into());
                        }
                        if mac == bridge {
                            return Some("host".into());
                        }
                        scenarios::device_of(mac).and_then(scenarios::scenario).map(|s| s.name.to_owned())
                    };
                    println!("--- {:>4} s\n{}", start.elapsed().as_secs(), metrics::summary_table(&rows, name_of));
                }
                Err(e) => eprintln!("lab: scrape failed: {e:#}"),
            }
        }
    }
}

/// The four scripted roles of traffic.rs.
fn classic_lab(args: &LabArgs, bin: &Path) -> Result<()> {
    let mut lab = HomeLab::create(LabOptions {
        prefix: LAB_PREFIX.to_owned(),
        devices: args.devices,
        ipv6: true,
        static_neighbors: false,
    })?;
    println!(
        "lab: bridge {} with {} devices, gateway {}, internet hosts {:?}",
        lab.bridge,
        lab.devices.len(),
        lab.gateway.ip,
        lab.internet.hosts
    );
    for d in &lab.devices {
        println!("lab:   {:<6} {} {} {} (port {})", traffic::role(d.index), d.ns, d.mac, d.ip, d.port);
    }
    let duration = args.duration.map(Duration::from_secs);
    let mut traffic = Traffic::start(&lab, duration.unwrap_or(FOREVER))?;
    let log = agent::target_dir().join("lab/iotwatch.log");
    let mut agent = Agent::spawn(bin, &lab.bridge, &args.attach, LISTEN, &args.extra, Some(&log))?;
    agent.wait_ready(Duration::from_secs(30))?;
    println!("lab: metrics at {} (agent log {})", agent.metrics_url(), log.display());
    println!(
        "lab: {}",
        duration.map_or("Ctrl-C ends the lab".to_owned(), |d| format!("ends in {} s (or Ctrl-C)", d.as_secs()))
    );

    let result = watch(&mut lab, &mut agent, &mut traffic, duration);
    // Order: agent first (it detaches from the ports), then traffic, then the lab (drop).
    let stopped = agent.stop();
    traffic.stop();
    drop(lab);
    println!("lab: removed");
    result.and(stopped)
}

fn watch(lab: &mut HomeLab, agent: &mut Agent, traffic: &mut Traffic, duration: Option<Duration>) -> Result<()> {
    let start = Instant::now();
    loop {
        let remaining = duration.map(|d| d.saturating_sub(start.elapsed()));
        if remaining == Some(Duration::ZERO) {
            return Ok(());
        }
        if signal::sleep(remaining.map_or(SUMMARY_EVERY, |r| r.min(SUMMARY_EVERY))) {
            println!("lab: interrupted");
            return Ok(());
        }
        agent.check_alive()?;
        traffic.check_alive()?;
        match metrics::scrape(&agent.listen) {
            Ok(samples) => {
                let rows = metrics::device_summaries(&samples);
                let name_of = |mac: &str| -> Option<String> {
                    if mac == lab.gateway.mac {
                        return Some("gateway".into());
                    }
                    if mac == lab.bridge_mac {
                        return Some("host".into());
                    }
                    lab.devices.iter().find(|d| d.mac == mac).map(|d| traffic::role(d.index).to_owned())
                };
                println!("--- {:>4} s\n{}", start.elapsed().as_secs(), metrics::summary_table(&rows, name_of));
            }
            Err(e) => eprintln!("lab: scrape failed: {e:#}"),
        }
    }
}

/// `cargo xtask run --bridge BR [-- agent args]`: the agent in the foreground on a real bridge.
pub fn run_on_bridge(bridge: &str, attach: &str, extra: &[String]) -> Result<()> {
    setup::setup()?;
    signal::install()?;
    if !std::path::Path::new(&format!("/sys/class/net/{bridge}/bridge")).exists() {
        bail!("{bridge} is not a bridge on this machine (see `ip -d link show type bridge`)");
    }
    let bin = agent::build_agent()?;
    let listen = extra
        .iter()
        .position(|a| a == "--web.listen-address")
        .and_then(|i| extra.get(i + 1))
        .cloned()
        .unwrap_or_else(|| LISTEN.to_owned());
    let extra: Vec<String> = strip_listen(extra);
    let mut agent = Agent::spawn(&bin, bridge, attach, &listen, &extra, None)?;
    agent.wait_ready(Duration::from_secs(30))?;
    println!("run: metrics at {}; Ctrl-C stops the agent", agent.metrics_url());
    while !signal::sleep(Duration::from_secs(1)) {
        agent.check_alive()?;
    }
    agent.stop()
}

/// Removes `--web.listen-address X` (passed separately) from the extra arguments.
fn strip_listen(extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in extra {
        if skip {
            skip = false;
        } else if a == "--web.listen-address" {
            skip = true;
        } else {
            out.push(a.clone());
        }
    }
    out
}
