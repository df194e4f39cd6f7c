//! Scripted lab traffic (xtask/lab/traffic.py and ping), bounded in rate and time and kept
//! between lab namespaces: every destination is a lab address or the LAN's SSDP group.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, lab::HomeLab, workspace_root};

/// The role a lab device plays, by index (1 camera, 2 plug, 3 lamp, 4 hub, then lamps).
pub fn role(index: usize) -> &'static str {
    match index {
        1 => "camera",
        2 => "plug",
        4 => "hub",
        _ => "lamp",
    }
}

const PYTHON: &str = "/usr/bin/python3";
const SINK_UDP: u16 = 5000;
const HUB_HTTP: u16 = 8080;

/// The running generators; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug, Default)]
pub struct Traffic {
    children: Vec<(String, Child)>,
}

impl Traffic {
    /// Starts the sink in the internet namespace and each device's role. Every process
    /// ends by itself after `duration` (plus a margin) even if no one stops it.
    pub fn start(lab: &HomeLab, duration: Duration) -> Result<Self> {
        let script = workspace_root().join("xtask/lab/traffic.py");
        let script = script.to_str().context("workspace path is not UTF-8")?.to_owned();
        let secs = (duration.as_secs() + 30).to_string();
        let mut t = Self::default();
        let py = |extra: &[&str]| -> Vec<String> {
            let mut v = vec![PYTHON.to_owned(), script.clone(), "--duration".to_owned(), secs.clone()];
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        let udp = SINK_UDP.to_string();
        t.spawn(lab, "internet sink", &lab.internet.ns, py(&["--serve-udp", &udp, "--serve-tcp", "80"]))?;
        let hub = lab.device(4).map(|d| format!("{}:{HUB_HTTP}", d.ip));
        for d in &lab.devices {
            match role(d.index) {
                "camera" => {
                    let mut args = vec![
                        "--udp-stream".to_owned(),
                        format!("{}:{SINK_UDP}", lab.internet.hosts[0]),
                        "--rate".into(),
                        "20".into(),
                        "--size".into(),
                        "800".into(),
                    ];
                    if let Some(hub) = &hub {
                        args.extend(["--http-get".to_owned(), hub.clone(), "--http-interval".into(), "10".into()]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    t.spawn(lab, "camera stream", &d.ns, py(&args))?;
                    t.spawn(lab, "camera ping", &d.ns, ping(&lab.gateway.ip.to_string(), 2, duration))?;
                }
                "plug" => t.spawn(lab, "plug ping", &d.ns, ping(&lab.internet.hosts[1].to_string(), 5, duration))?,
                "hub" => {
                    let location = format!("http://{}:{HUB_HTTP}/description.xml", d.ip);
                    let target = format!("{}:{SINK_UDP}", lab.internet.hosts[2]);
                    t.spawn(
                        lab,
                        "hub",
                        &d.ns,
                        py(&[
                            "--serve-tcp",
                            &HUB_HTTP.to_string(),
                            "--udp-periodic",
                            &target,
                            "--interval",
                            "5",
                            "--ssdp-notify",
                            &location,
                        ]),
                    )?;
                }
                _ => {} // idle
            }
        }
        Ok(t)
    }

    fn spawn(&mut self, lab: &HomeLab, what: &str, ns: &str, argv: Vec<String>) -> Result<()> {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut c = lab.exec(ns, &args);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        cmd::supervised(&mut c, libc::SIGTERM);
        let child = c.spawn().with_context(|| format!("cannot start {what}: `{}`", cmd::display(&c)))?;
        self.children.push((what.to_owned(), child));
        Ok(())
    }

    /// Fails if a generator exited (they run for the whole lab).
    pub fn check_alive(&mut self) -> Result<()> {
        for (what, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("lab traffic `{what}` exited early ({status}); its stderr is above");
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        for (_, mut child) in self.children.drain(..) {
            cmd::stop(&mut child, libc::SIGTERM, Duration::from_secs(3));
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ping -i INTERVAL -w DEADLINE -q HOST`: bounded by its own deadline.
fn ping(host: &str, interval: u32, duration: Duration) -> Vec<String> {
    let deadline = (duration.as_secs() + 30).to_string();
    ["ping", "-q", "-n", "-i", &interval.to_string(), "-w", &deadline, host].iter().map(|s| s.to_string()).collect()
}
