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
    mixcap, setup, signal,
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

/// Parts of the benchmark besides the throughput configurations, for `--only`.
pub const PARTS: [&str; 3] = ["kernel", "replay", "memory"];

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
    // `--only` names parts (`kernel`, `replay`, `memory`) and throughput configurations; nothing named:
    // everything.
    let all = args.only.is_empty();
    let part = |p: &str| all || args.only.iter().any(|o| o == p);
    let configs: Vec<Observer> = if all {
        ALL.to_vec()
    } else {
        args.only.iter().filter(|n| !PARTS.contains(&n.as_str())).map(|n| Observer::parse(n)).collect::<Result<_>>()?
    };
    if !configs.is_empty() && !configs.contains(&Observer::Bare) {
        bail!("the configurations must include `bare`: every result is a ratio to it");
    }
    let bin = agent::build_agent().context("the benchmark needs the agent")?;
    if part("kernel") {
        kernel(&bin, args.repeat)?;
    }
    if part("replay") {
        replay(&bin, REPLAY_FRAMES, args.rounds)?;
    }
    let tmp = agent::target_dir().join("bench/tmp");
    std::fs::create_dir_all(&tmp)?;
    if part("memory") {
        let path = merge_summary("memory", crate::benchmem::memory(&bin, &tmp)?)?;
        println!("bench: written to {}\n", path.display());
    }
    if configs.is_empty() {
        return Ok(());
    }
    let bin = Some(bin);
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
    // Each class the headline mix weighs in, next to the baselines on the same frames.
    let classes = value["per_frame_ns"].as_object().into_iter().chain(value["classes_ns"].as_object()).flatten();
    println!(
        "\n{:<22} {:>12} {:>12} {:>12} {:>12}",
        "class (ns/packet)", "iotwatch_tc", "min_mac_tc", "iotwatch_xdp", "min_mac_xdp"
    );
    for (class, row) in classes {
        let cell = |p: &str| row[p].as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let [a, b, c, d] = ["iotwatch_tc", "min_mac_tc", "iotwatch_xdp", "min_mac_xdp"].map(cell);
        println!("{class:<22} {a:>12} {b:>12} {c:>12} {d:>12}");
    }
    println!("verified instructions: {}", value["verified_instructions"]);
    let path = merge_summary("kernel", value)?;
    println!("bench: written to {}\n", path.display());
    Ok(())
}

/// Frames in the replay benchmark's capture: the size of the real capture issue 10 measured.
pub const REPLAY_FRAMES: u32 = 490_000;

/// Replay speed: `iotwatch replay` (its default workers, and one worker per CPU) on a capture of
/// mixed traffic ([`mixcap`]), next to tshark computing its Ethernet and IP conversation tables
/// and `tcpdump -r` merely reading the file, in alternating rounds of the same run; and the
/// fixed cost of a replay (loading the program) as the time to replay 10 frames. Merged into
/// summary.json under "replay".
fn replay(bin: &std::path::Path, frames: u32, rounds: usize) -> Result<()> {
    let dir = agent::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("replay-mix.pcap");
    mixcap::write(&file, frames)?;
    let tiny = dir.join("replay-10.pcap");
    mixcap::write(&tiny, 10)?;
    let path = file.to_string_lossy().into_owned();
    let tiny = tiny.to_string_lossy().into_owned();
    // Wall time, and the CPU time (user + system) the command used: on a machine shared with
    // other work, CPU time says what a command costs even when the wall time is stretched.
    let children_cpu = || {
        // SAFETY: a zeroed rusage is valid; getrusage fills it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a stack value.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut u) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(u.ru_utime) + secs(u.ru_stime)
    };
    let timed = |c: &mut std::process::Command| -> Result<(f64, f64)> {
        let cpu = children_cpu();
        let t = std::time::Instant::now();
        let out = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", cmd::display(c)))?;
        anyhow::ensure!(out.success(), "{} failed: {out}", cmd::display(c));
        Ok((t.elapsed().as_secs_f64(), children_cpu() - cpu))
    };
    let bin = bin.to_string_lossy().into_owned();
    let per_cpu = std::thread::available_parallelism().map_or(1, usize::from).to_string();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg.split_whitespace().next().unwrap_or("").to_owned();
    println!("bench: replay of {frames} frames of mixed traffic ({path}), load average {loadavg}");
    let runs: [(&str, Vec<&str>); 5] = [
        ("iotwatch", vec![&bin, "replay", "--format", "json", &path]),
        ("iotwatch_worker_per_cpu", vec![&bin, "replay", "--format", "json", "--workers", &per_cpu, &path]),
        ("iotwatch_10_frames", vec![&bin, "replay", "--format", "json", &tiny]),
        ("tshark", vec!["tshark", "-r", &path, "-q", "-z", "conv,eth", "-z", "conv,ip"]),
        ("tcpdump", vec!["tcpdump", "-r", &path, "-w", "/dev/null"]),
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds.max(1) {
        for k in 0..runs.len() {
            let i = (k + round) % runs.len();
            let argv = &runs[i].1;
            let (s, c) = timed(&mut cmd::command(argv[0], &argv[1..]))?;
            println!("bench: replay round {}/{} {:<20} {s:>8.3} s ({c:.3} s CPU)", round + 1, rounds.max(1), runs[i].0);
            secs[i].push(s);
            cpu[i].push(c);
        }
    }
    let m: Vec<f64> = secs.iter().map(|s| median(s)).collect();
    let fps = |i: usize| f64::from(frames) / m[i];
    // Within a round the runs follow one another, so a ratio per round is the least disturbed
    // by other work on the machine; the median of those is the figure.
    let ratios: Vec<f64> = secs[3].iter().zip(&secs[0]).map(|(t, i)| t / i).collect();
    let ratios_per_cpu: Vec<f64> = secs[3].iter().zip(&secs[1]).map(|(t, i)| t / i).collect();
    let speedup = median(&ratios);
    println!(
        "\nbench: replay of {frames} frames: iotwatch {:.3} s ({:.0} frames/s; {:.3} s with a worker per CPU), tshark {:.3} s \
         ({:.0} frames/s): iotwatch {speedup:.2}x tshark's speed (median of the rounds' ratios; goal 5x); tcpdump -r \
         {:.3} s; 10 frames: {:.3} s",
        m[0],
        fps(0),
        m[1],
        m[3],
        fps(3),
        m[4],
        m[2]
    );
    let c: Vec<f64> = cpu.iter().map(|s| median(s)).collect();
    println!(
        "bench: CPU time (user + system): iotwatch {:.3} s, with a worker per CPU {:.3} s, tshark {:.3} s, 10 frames {:.3} s",
        c[0], c[1], c[3], c[2]
    );
    let mut table = serde_json::Map::new();
    for (i, (name, argv)) in runs.iter().enumerate() {
        let frames = if i == 2 { 10 } else { frames };
        table.insert(
            (*name).to_owned(),
            json!({
                "command": argv.join(" "),
                "median_s": m[i],
                "frames_per_s": f64::from(frames) / m[i],
                "runs_s": secs[i],
                "median_cpu_s": median(&cpu[i]),
                "runs_cpu_s": cpu[i],
            }),
        );
    }
    let value = json!({
        "capture": "mixed traffic (xtask/src/mixcap.rs)",
        "frames": frames,
        "load_average_at_start": loadavg,
        "iotwatch_replay_fps": fps(0),
        "tshark_fps": fps(3),
        "tcpdump_read_fps": fps(4),
        "speed_vs_tshark": speedup,
        "speed_vs_tshark_per_round": ratios,
        "speed_vs_tshark_worker_per_cpu": median(&ratios_per_cpu),
        "startup_s": m[2],
        "runs": table,
    });
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
