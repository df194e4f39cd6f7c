//! `cargo xtask lab-check`: proves the namespace lab works on this machine without the
//! agent: connectivity between every kind of host, clean teardown, teardown on panic.

use std::panic::AssertUnwindSafe;

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    cmd,
    lab::{HomeLab, LabOptions},
    netns,
};

const PREFIX: &str = "iwchk";

fn ping(lab: &HomeLab, ns: Option<&str>, target: &str) -> Result<()> {
    let args = ["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", "-n", target];
    let mut c = match ns {
        Some(ns) => lab.exec(ns, &args),
        None => cmd::command(args[0], &args[1..]),
    };
    cmd::output(&mut c).with_context(|| format!("ping {} -> {target}", ns.unwrap_or("root")))?;
    println!("lab-check: ping {:<9} -> {target:<15} ok", ns.unwrap_or("root"));
    Ok(())
}

/// With IPv6 off and static neighbours, a port carries exactly the frames sent: 3 pings
/// give 6 frames on device 1's port, nothing else (no ARP, ND, MLD).
fn exact_frames(lab: &HomeLab) -> Result<()> {
    let pcap = std::env::temp_dir().join(format!("{PREFIX}-exact.pcap"));
    let pcap_s = pcap.to_string_lossy().into_owned();
    let port = lab.devices[0].port.clone();
    let mut dump = cmd::command("tcpdump", &["-n", "-U", "-i", &port, "-w", &pcap_s]);
    dump.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd::supervised(&mut dump, libc::SIGTERM).spawn().context("cannot start tcpdump")?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let target = lab.devices[1].ip.to_string();
    let r = cmd::output(&mut lab.exec(&lab.devices[0].ns, &["ping", "-c", "3", "-i", "0.2", "-q", "-n", &target]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    cmd::stop(&mut child, libc::SIGINT, std::time::Duration::from_secs(5));
    r?;
    let text = cmd::output(&mut cmd::command("tcpdump", &["-n", "-r", &pcap_s]))?;
    let _ = std::fs::remove_file(&pcap);
    ensure!(text.lines().count() == 6, "expected exactly 6 frames on {port}, got:\n{text}");
    println!("lab-check: exactly 6 frames for 3 pings on {port} (no ARP/ND/MLD)");
    Ok(())
}

fn leftovers() -> Result<Vec<String>> {
    let mut v: Vec<String> = netns::list_netns()?.into_iter().filter(|n| netns::netns_owned_by(PREFIX, n)).collect();
    v.extend(netns::list_links()?.into_iter().filter(|l| netns::link_owned_by(PREFIX, l)));
    Ok(v)
}

fn check_variant(ipv6: bool, static_neighbors: bool) -> Result<()> {
    println!("lab-check: ipv6={ipv6} static_neighbors={static_neighbors}");
    let mut lab = HomeLab::create(LabOptions { prefix: PREFIX.to_owned(), devices: 3, ipv6, static_neighbors })?;
    let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
    ping(&lab, Some(&d1.ns), &d2.ip.to_string())?;
    ping(&lab, Some(&d1.ns), &lab.bridge_ip.to_string())?;
    ping(&lab, None, &d2.ip.to_string())?;
    for host in lab.internet.hosts.clone() {
        ping(&lab, Some(&d1.ns), &host.to_string())?;
    }
    if !ipv6 && static_neighbors {
        exact_frames(&lab)?;
    }
    lab.set_offloads(false)?;
    lab.set_offloads(true)?;
    println!("lab-check: offloads off and on ok");
    // A port leaving and a new one joining at run time.
    lab.remove_device(2)?;
    ensure!(!std::path::Path::new(&format!("/sys/class/net/{}", d2.port)).exists(), "port {} still exists", d2.port);
    let d4 = lab.add_device()?.clone();
    ensure!(d4.index == 4 && d4.mac == "02:77:00:00:00:0e", "unexpected new device {d4:?}");
    ping(&lab, Some(&d4.ns), &d1.ip.to_string())?;
    if !static_neighbors {
        // Static entries must have kept ARP away; dynamic ones show up as REACHABLE/STALE.
    } else {
        let neigh = netns::ns_ip(&d1.ns, &["neigh", "show"])?;
        ensure!(neigh.lines().all(|l| l.contains("PERMANENT")), "dynamic neighbours in {}: {neigh}", d1.ns);
    }
    drop(lab);
    let left = leftovers()?;
    ensure!(left.is_empty(), "left behind after drop: {left:?}");
    println!("lab-check: teardown left nothing");
    Ok(())
}

pub fn lab_check() -> Result<()> {
    check_variant(true, false)?;
    check_variant(false, true)?;

    // A panic inside a test-like scope must still remove everything.
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _lab =
            HomeLab::create(LabOptions { prefix: PREFIX.to_owned(), devices: 2, ipv6: false, static_neighbors: false })
                .expect("lab");
        panic!("deliberate panic with the lab alive");
    }));
    ensure!(r.is_err(), "the deliberate panic did not happen");
    let left = leftovers()?;
    if !left.is_empty() {
        bail!("left behind after a panic: {left:?}");
    }
    println!("lab-check: teardown on panic left nothing");

    // What a SIGKILLed run leaves is swept by the next create.
    let lab =
        HomeLab::create(LabOptions { prefix: PREFIX.to_owned(), devices: 1, ipv6: false, static_neighbors: false })?;
    std::mem::forget(lab);
    ensure!(!leftovers()?.is_empty(), "forgotten lab vanished");
    drop(HomeLab::create(LabOptions { prefix: PREFIX.to_owned(), devices: 1, ipv6: false, static_neighbors: false })?);
    let left = leftovers()?;
    ensure!(left.is_empty(), "sweep left: {left:?}");
    println!("lab-check: sweep of a leaked lab ok");
    println!("lab-check: all ok");
    Ok(())
}
