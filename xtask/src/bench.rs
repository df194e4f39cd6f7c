//! `cargo xtask bench`: TCP throughput across the namespace bridge with and without an
//! observer (the agent in each attach mode, tcpdump, pmacctd), as the median of
//! alternating rounds (iperf3 over veth varies by +-30% between runs; shared/toolchain.md).
//! Results go to target/bench/summary.json under "throughput", next to "kernel" (written by
//! another subcommand) and "machine".

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    agent::{self, Agent},
    cmd,
    lab::{HomeLab, LabOptions},
    setup, signal,
};

pub const BENCH_PREFIX: &str = "iwbn";
const AGENT_LISTEN: &str = "127.0.0.1:9478";

/// What watches the bridge during a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    Bare,
    Agent(&'static str),
    /// `tcpdump -w` on every bridge port: the fair "capture everything" comparison, since
    /// tcpdump on the bridge device only sees frames to and from the host.
    TcpdumpPorts,
    /// pmacctd (memory plugin) on every bridge port.
    PmacctPorts,
}

pub const ALL: [Observer; 6] = [
    Observer::Bare,
    Observer::Agent("tc"),
    Observer::Agent("xdp-skb"),
    Observer::Agent("xdp"),
    Observer::TcpdumpPorts,
    Observer::PmacctPorts,
];

impl Observer {
    pub fn name(self) -> String {
        match self {
            Self::Bare => "bare".into(),
            Self::Agent(mode) => format!("agent-{mode}"),
            Self::TcpdumpPorts => "tcpdump".into(),
            Self::PmacctPorts => "pmacctd".into(),
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        ALL.into_iter()
            .find(|o| o.name() == name)
            .with_context(|| format!("unknown configuration {name:?}; known: {}", ALL.map(Self::name).join(", ")))
    }
}

#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// BPF_PROG_TEST_RUN repetitions per program and frame.
    pub repeat: u32,
    pub rounds: usize,
    pub seconds: u32,
    /// Empty: all configurations.
    pub only: Vec<String>,
}

/// A started observer, stopped on drop.
enum Running {
    None,
    Agent(Agent),
    Procs(Vec<Child>),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Self::Procs(children) = self {
            for mut c in children.drain(..) {
                cmd::stop(&mut c, libc::SIGTERM, Duration::from_secs(5));
            }
        }
    }
}

fn start(obs: Observer, lab: &HomeLab, bin: Option<&PathBuf>, tmp: &std::path::Path) -> Result<Running> {
    let ports: Vec<String> = lab.devices.iter().map(|d| d.port.clone()).chain([lab.gateway.port.clone()]).collect();
    let spawn_all = |make: &dyn Fn(&str) -> Vec<String>| -> Result<Running> {
        let mut children = Vec::new();
        for port in &ports {
            let argv = make(port);
            let mut c = cmd::command(&argv[0], &argv[1..]);
            c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            cmd::supervised(&mut c, libc::SIGTERM);
            children
                .push(c.spawn().with_context(|| format!("cannot start {}: `cargo xtask setup` installs it", argv[0]))?);
        }
        // No readiness signal without parsing their stderr: give them time to open the port.
        std::thread::sleep(Duration::from_millis(1500));
        for c in &mut children {
            if let Some(status) = c.try_wait()? {
                bail!("{} exited at start ({status}); run it by hand to see why", obs.name());
            }
        }
        Ok(Running::Procs(children))
    };
    if !matches!(obs, Observer::Agent(_)) {
        lab.set_segmentation(true)?;
    }
    Ok(match obs {
        Observer::Bare => Running::None,
        Observer::Agent(mode) => {
            let bin = bin.context("the agent was not built")?;
            // xdp-skb refuses ports that receive TSO aggregates (it cannot count their frames):
            // measured as it must run, with the veths' segmentation offloads off; the others with
            // a new veth's defaults.
            lab.set_segmentation(mode != "xdp-skb")?;
            let mut a =
                Agent::spawn(bin, &lab.bridge, mode, AGENT_LISTEN, &[], Some(&tmp.join(format!("agent-{mode}.log"))))?;
            a.wait_ready(Duration::from_secs(30))?;
            Running::Agent(a)
        }
        // To /dev/null: full frames at tens of Gbit/s would fill the disk; the cost measured
        // is the capture (copy to user space), not the file system.
        Observer::TcpdumpPorts => {
            spawn_all(&|port| ["tcpdump", "-n", "-q", "-i", port, "-w", "/dev/null"].map(String::from).to_vec())?
        }
        Observer::PmacctPorts => spawn_all(&|port| {
            let pipe = tmp.join(format!("pmacct-{port}.pipe")).to_string_lossy().into_owned();
            [
                "pmacctd",
                "-i",
                port,
                "-P",
                "memory",
                "-p",
                &pipe,
                "-c",
                "src_mac,dst_mac,src_host,dst_host,proto,src_port,dst_port",
            ]
            .map(String::from)
            .to_vec()
        })?,
    })
}

/// One iperf3 TCP run from device 1 to device 2; returns bits per second received.
fn iperf(lab: &HomeLab, seconds: u32) -> Result<f64> {
    let server = lab.devices[1].ip.to_string();
    let secs = seconds.to_string();
    let out = cmd::output(&mut lab.exec(&lab.devices[0].ns, &["iperf3", "-c", &server, "-t", &secs, "-J"]))
        .or_else(|_| {
            // The server may not be listening yet in the first round.
            std::thread::sleep(Duration::from_secs(1));
            cmd::output(&mut lab.exec(&lab.devices[0].ns, &["iperf3", "-c", &server, "-t", &secs, "-J"]))
        })
        .context("iperf3 client failed")?;
    iperf_bps(&out)
}

/// `end.sum_received.bits_per_second` of iperf3 -J output.
pub fn iperf_bps(json_text: &str) -> Result<f64> {
    let v: Value = serde_json::from_str(json_text).context("iperf3 printed invalid JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 JSON lacks end.sum_received.bits_per_second")
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn machine() -> Value {
    let kernel = cmd::output(&mut cmd::command("uname", &["-r"])).map(|s| s.trim().to_owned()).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({ "kernel": kernel, "nproc": nproc, "cpu": cpu })
}

/// Reads summary.json (if any), replaces `key` and "machine", writes it back.
pub fn merge_summary(key: &str, value: Value) -> Result<PathBuf> {
    let dir = agent::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("summary.json");
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            eprintln!("bench: {} is not valid JSON ({e}); starting a new one", path.display());
            json!({})
        }),
        Err(_) => json!({}),
    };
    if !doc.is_object() {
        doc = json!({});
    }
    doc[key] = value;
    doc["machine"] = machine();
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    setup::setup()?;
    signal::install()?;
    let configs: Vec<Observer> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        args.only.iter().map(|n| Observer::parse(n)).collect::<Result<_>>()?
    };
    if !configs.contains(&Observer::Bare) {
        bail!("the configurations must include `bare`: every result is a ratio to it");
    }
    let bin = agent::build_agent().context("the benchmark needs the agent")?;
    kernel(&bin, args.repeat)?;
    replay(&bin, 300_000)?;
    let bin = Some(bin);
    let tmp = agent::target_dir().join("bench/tmp");
    std::fs::create_dir_all(&tmp)?;
    let lab = HomeLab::create(LabOptions {
        prefix: BENCH_PREFIX.to_owned(),
        devices: 2,
        ipv6: false,
        static_neighbors: false,
    })?;
    let mut server = lab.exec(&lab.devices[1].ns, &["iperf3", "-s"]);
    // Its stderr would only say "interrupt - the server has terminated" when stopped.
    server.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd::supervised(&mut server, libc::SIGTERM);
    let mut server = server.spawn().context("cannot start the iperf3 server")?;
    std::thread::sleep(Duration::from_millis(500));

    let mut results: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let outcome = (|| -> Result<()> {
        for round in 0..args.rounds {
            // Rotate the order each round so slow drift does not favour one configuration.
            for k in 0..configs.len() {
                let i = (k + round) % configs.len();
                if signal::interrupted() {
                    bail!("interrupted");
                }
                let running = start(configs[i], &lab, bin.as_ref(), &tmp)?;
                let bps = iperf(&lab, args.seconds)?;
                if let Running::Agent(a) = &running {
                    agent_answers(a)?;
                }
                drop(running);
                println!(
                    "bench: round {}/{} {:<14} {:>8.2} Gbit/s",
                    round + 1,
                    args.rounds,
                    configs[i].name(),
                    bps / 1e9
                );
                results[i].push(bps);
            }
        }
        Ok(())
    })();
    cmd::stop(&mut server, libc::SIGTERM, Duration::from_secs(3));
    drop(lab);
    outcome?;

    let bare = median(&results[configs.iter().position(|c| *c == Observer::Bare).unwrap_or(0)]);
    let mut table = serde_json::Map::new();
    println!("\n{:<14} {:>12} {:>8}", "configuration", "median Gb/s", "ratio");
    for (c, r) in configs.iter().zip(&results) {
        let m = median(r);
        println!("{:<14} {:>12.2} {:>7.0}%", c.name(), m / 1e9, 100.0 * m / bare);
        table.insert(c.name(), json!({ "median_bps": m, "ratio_to_bare": m / bare, "runs_bps": r }));
    }
    let value = json!({ "tool": "iperf3 TCP, device 1 -> device 2 over the namespace bridge", "seconds_per_run": args.seconds, "rounds": args.rounds, "configurations": table });
    let path = merge_summary("throughput", value)?;
    println!("bench: written to {}", path.display());
    Ok(())
}

/// ns/packet of the programs under BPF_PROG_TEST_RUN (`iotwatch bench-kernel`), next to the
/// baselines measured in the same run; merged into summary.json under "kernel".
fn kernel(bin: &std::path::Path, repeat: u32) -> Result<()> {
    println!("bench: kernel programs under BPF_PROG_TEST_RUN, {repeat} repetitions per frame and program");
    let out =
        cmd::output(&mut cmd::command(&bin.to_string_lossy(), &["bench-kernel", "--repeat", &repeat.to_string()]))?;
    let value: Value = serde_json::from_str(&out).context("bench-kernel printed invalid JSON")?;
    let ns = &value["ns_per_packet"];
    println!("\n{:<14} {:>10} {:>10}", "program", "ns/packet", "ratio");
    for (prog, base) in [
        ("iotwatch_tc", "bare_tc"),
        ("min_mac_tc", "bare_tc"),
        ("bare_tc", "bare_tc"),
        ("iotwatch_xdp", "bare_xdp"),
        ("min_mac_xdp", "bare_xdp"),
        ("bare_xdp", "bare_xdp"),
    ] {
        let (a, b) = (ns[prog].as_f64().unwrap_or(f64::NAN), ns[base].as_f64().unwrap_or(f64::NAN));
        println!("{prog:<14} {a:>10.1} {:>9.2}x {base}", a / b);
    }
    let path = merge_summary("kernel", value)?;
    println!("bench: written to {}\n", path.display());
    Ok(())
}

/// Writes a classic pcap of `frames` frames of an IoT-like mix (TCP, UDP to several ports, ARP,
/// IPv6 multicast) from 64 devices to 256 peers, with increasing timestamps.
pub fn write_bench_pcap(path: &std::path::Path, frames: u32) -> Result<()> {
    use std::io::Write as _;
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    w.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0])?;
    for i in 0..frames {
        let (dev, peer) = ((i % 64) as u8, (i / 7 % 256) as u8);
        let mut f = vec![0x02, 0x77, 0, 0, 0, 0x01, 0x02, 0x77, 0, 0, 1, dev];
        match i % 10 {
            9 => {
                f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                f.resize(42, 0);
            }
            8 => {
                f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0xfb]);
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 108, 17, 255]);
                f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, dev]);
                f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb]);
                f.extend_from_slice(&[0x14, 0xe9, 0x14, 0xe9, 0, 108, 0, 0]);
                f.resize(14 + 40 + 108, 0);
            }
            k => {
                let (proto, dport, payload): (u8, u16, usize) = match k {
                    0..=3 => (6, 443, if k == 0 { 1448 } else { 0 }),
                    4 | 5 => (17, 53, 40),
                    6 => (17, 123, 48),
                    _ => (6, 8088, 200),
                };
                let l4 = if proto == 6 { 20 } else { 8 };
                let total = (20 + l4 + payload) as u16;
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[
                    0,
                    0,
                    0x40,
                    0,
                    64,
                    proto,
                    0,
                    0,
                    192,
                    168,
                    77,
                    10 + (dev % 200),
                    203,
                    0,
                    113,
                    peer,
                ]);
                f.extend_from_slice(&(40000 + u16::from(dev)).to_be_bytes());
                f.extend_from_slice(&dport.to_be_bytes());
                f.resize(f.len() + l4 - 4 + payload, 0);
            }
        }
        let len = f.len() as u32;
        let ts = 1_600_000_000u32 + i / 1000;
        for v in [ts, (i % 1000) * 1000, len, len] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&f)?;
    }
    w.flush()?;
    Ok(())
}

/// Replay throughput: `iotwatch replay` on a generated capture, next to `tcpdump -r` reading
/// the same file (the cost of just reading it), in the same run; merged under "replay".
fn replay(bin: &std::path::Path, frames: u32) -> Result<()> {
    let dir = agent::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("replay-mix.pcap");
    write_bench_pcap(&file, frames)?;
    let path = file.to_string_lossy().into_owned();
    let timed = |c: &mut std::process::Command| -> Result<f64> {
        let t = std::time::Instant::now();
        let out = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", cmd::display(c)))?;
        anyhow::ensure!(out.success(), "{} failed: {out}", cmd::display(c));
        Ok(t.elapsed().as_secs_f64())
    };
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..3 {
        ours.push(
            frames as f64 / timed(&mut cmd::command(&bin.to_string_lossy(), &["replay", "--format", "json", &path]))?,
        );
        base.push(frames as f64 / timed(&mut cmd::command("tcpdump", &["-r", &path, "-w", "/dev/null"]))?);
    }
    let (o, b) = (median(&ours), median(&base));
    println!(
        "\nbench: replay of {frames} frames: iotwatch {o:.0} frames/s, tcpdump -r {b:.0} frames/s ({:.1}% of reading alone)",
        100.0 * o / b
    );
    let value = json!({ "frames": frames, "iotwatch_replay_fps": o, "tcpdump_read_fps": b, "ratio": o / b, "runs": { "iotwatch": ours, "tcpdump": base } });
    let path = merge_summary("replay", value)?;
    println!("bench: written to {}\n", path.display());
    Ok(())
}

/// An agent that died during the run invalidates the round.
fn agent_answers(a: &Agent) -> Result<()> {
    crate::metrics::http_get(&a.listen, "/metrics", Duration::from_secs(5))
        .map(drop)
        .context("the agent stopped answering during the run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_pcap_is_a_sequence_of_whole_records() {
        let tmp = crate::tmp::TempDir::new("iotwatch-bench").unwrap();
        let path = tmp.join("bench.pcap");
        write_bench_pcap(&path, 50).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
        let (mut off, mut n) = (24, 0);
        while off < bytes.len() {
            let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
            let orig = u32::from_le_bytes(bytes[off + 12..off + 16].try_into().unwrap()) as usize;
            assert_eq!(incl, orig);
            assert!(incl >= 42, "frame {n} is {incl} bytes");
            off += 16 + incl;
            n += 1;
        }
        assert_eq!((off, n), (bytes.len(), 50));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn iperf_json() {
        let j = r#"{"end":{"sum_received":{"bits_per_second":1.5e10}}}"#;
        assert_eq!(iperf_bps(j).expect("valid"), 1.5e10);
        assert!(iperf_bps(r#"{"error":"unable to connect"}"#).is_err());
    }

    #[test]
    fn observer_names_round_trip() {
        for o in ALL {
            assert_eq!(Observer::parse(&o.name()).expect("known"), o);
        }
    }
}
