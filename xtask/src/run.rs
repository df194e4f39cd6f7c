//! `cargo xtask lab` and `cargo xtask run`: the agent on the namespace home network, or
//! on a real bridge.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{
    agent::{self, Agent},
    lab::{HomeLab, LabOptions},
    metrics, setup, signal,
    traffic::{self, Traffic},
};

pub const LAB_PREFIX: &str = "iwlab";
pub const LISTEN: &str = "127.0.0.1:9477";
const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// Traffic generators need a bound even when the lab runs "forever" (until Ctrl-C).
const FOREVER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct LabArgs {
    pub duration: Option<u64>,
    pub attach: String,
    pub devices: usize,
    pub extra: Vec<String>,
}

pub fn lab(args: &LabArgs) -> Result<()> {
    setup::setup()?;
    signal::install()?;
    let bin = agent::build_agent()?;
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
    let mut agent = Agent::spawn(&bin, &lab.bridge, &args.attach, LISTEN, &args.extra, Some(&log))?;
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
