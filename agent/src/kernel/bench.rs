//! `iotwatch bench-kernel`: ns/packet of the accounting programs under BPF_PROG_TEST_RUN for a
//! realistic packet mix, next to baselines measured in the same run (bare pass programs and a
//! minimal two-lookup per-MAC counter). Only ratios within one run mean anything: one run
//! varies by 10-20% on this kind of machine.

use agent_common::wire::{ether_type, ip_proto};
use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use serde_json::{Value, json};

use crate::kernel::{
    load::{self, LoadOptions, REPLAY_FRAME_PROGRAM, TC_PROGRAM, XDP_PROGRAM},
    test_run::SkBuffCtx,
};

static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));

/// (name, share of the mix in percent, frame): what an IoT LAN carries, roughly.
fn packet_mix() -> Vec<(&'static str, u32, Vec<u8>)> {
    let eth = |ether_type: u16| {
        let mut f = vec![0x02, 0x77, 0, 0, 0, 0x01, 0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f
    };
    let ipv4 = |f: &mut Vec<u8>, proto: u8, payload: usize| {
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 192, 168, 77, 11, 203, 0, 113, 10]);
        let total = (20 + payload) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    };
    let tcp = |payload: usize| {
        let mut f = eth(ether_type::IPV4);
        ipv4(&mut f, ip_proto::TCP, 32 + payload);
        f.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f.resize(f.len() + 12 + payload, 0x5a);
        f
    };
    let udp = |dport: u16, payload: usize| {
        let mut f = eth(ether_type::IPV4);
        ipv4(&mut f, ip_proto::UDP, 8 + payload);
        f.extend_from_slice(&[0xd0, 0x00]);
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(f.len() + payload, 0x41);
        f
    };
    let mdns6 = {
        let mut f = eth(ether_type::IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x01, 0xfc, 17, 255]);
        f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x77, 0, 0xff, 0xfe, 0, 0, 0x11]);
        f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb]);
        f.extend_from_slice(&[0x14, 0xe9, 0x14, 0xe9, 0x01, 0xfc, 0, 0]);
        f.resize(f.len() + 500, 0);
        f
    };
    let vlan_udp = {
        let u = udp(123, 48);
        let mut f = u[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        f.extend_from_slice(&u[12..]);
        f
    };
    let mut arp = eth(ether_type::ARP);
    arp.resize(42, 0);
    vec![
        ("tcp_ack_66", 35, tcp(0)),
        ("tcp_data_1514", 20, tcp(1448)),
        ("udp_dns_80", 15, udp(53, 38)),
        ("ssdp_179", 10, udp(1900, 137)),
        ("mdns_ipv6_574", 10, mdns6),
        ("vlan_ntp_94", 5, vlan_udp),
        ("arp_42", 5, arp),
    ]
}

fn mean_ns(result: aya::programs::TestRunResult) -> f64 {
    result.duration.as_nanos() as f64
}

fn time_xdp(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    Ok(mean_ns(prog.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })?))
}

fn time_tc(prog: &SchedClassifier, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    Ok(mean_ns(prog.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })?))
}

/// The reference programs of the benchmark (`agent-ebpf/src/bin/baselines.rs`), loaded: also
/// another user's programs for the tests (`bare_tc` ends a tcx chain).
pub fn load_baselines() -> anyhow::Result<Ebpf> {
    anyhow::ensure!(!BASELINES.is_empty(), "built with AYA_BUILD_SKIP=1: no baseline programs");
    let mut ebpf = EbpfLoader::new().load(BASELINES).context("loading the baseline programs")?;
    for name in ["bare_xdp", "min_mac_xdp"] {
        load::program::<Xdp>(&mut ebpf, name)?.load()?;
    }
    for name in ["bare_tc", "min_mac_tc"] {
        load::program::<SchedClassifier>(&mut ebpf, name)?.load()?;
    }
    Ok(ebpf)
}

/// The programs compared, in the order of every row of results.
const PROGRAMS: [&str; 6] = [TC_PROGRAM, XDP_PROGRAM, "bare_tc", "bare_xdp", "min_mac_tc", "min_mac_xdp"];

/// Shares of the headline mix beyond the frames of established conversations (percent): frames
/// that open a conversation (an LRU insert each) and frames sampled and copied to the ring.
/// Assumptions (a DNS or NTP exchange opens two conversations; bulk transfers open few), not
/// measurements: every class is reported on its own too.
const NEW_CONVERSATION_SHARE: f64 = 2.0;
const SAMPLED_SHARE: f64 = 1.0;

/// Distinct frames that each open a conversation, each run once.
const NEW_CONVERSATIONS: u16 = 16_384;

struct Programs {
    ours: Ebpf,
    base: Ebpf,
}

impl Programs {
    /// ns per run of program `i` (of [`PROGRAMS`]) on `frame`, `repeat` runs.
    fn time_one(&mut self, i: usize, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let ebpf = if i < 2 { &mut self.ours } else { &mut self.base };
        let name = PROGRAMS[i];
        if name.ends_with("_xdp") {
            time_xdp(load::program(ebpf, name)?, frame, repeat)
        } else {
            time_tc(load::program(ebpf, name)?, frame, repeat)
        }
    }

    /// ns per run of each program on `frame`, `repeat` runs each.
    fn time(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<[f64; 6]> {
        let mut t = [0f64; 6];
        for (i, t) in t.iter_mut().enumerate() {
            *t = self.time_one(i, frame, repeat)?;
        }
        Ok(t)
    }
}

fn row(t: [f64; 6]) -> Value {
    json!(
        PROGRAMS
            .iter()
            .zip(t)
            .map(|(n, v)| (n.to_string(), json!((v * 10.0).round() / 10.0)))
            .collect::<serde_json::Map<_, _>>()
    )
}

/// Frames that each open a new conversation: TCP SYNs from other ports and addresses.
fn new_conversation_frames() -> Vec<Vec<u8>> {
    let syn = packet_mix().into_iter().find(|(n, ..)| *n == "tcp_ack_66").map(|(.., f)| f).unwrap_or_default();
    (0..NEW_CONVERSATIONS)
        .map(|i| {
            let mut f = syn.clone();
            f[29] = (i >> 8) as u8; // source address, last byte
            f[34..36].copy_from_slice(&(10_000 + i).to_be_bytes()); // source port
            f
        })
        .collect()
}

/// Mean ns per run of each program over `frames`, each run once. iotwatch's TC and XDP
/// programs share their maps, so the XDP programs get the frames from another source MAC: each
/// of their runs opens a conversation too, not only the first program's.
fn time_once_each(p: &mut Programs, frames: &[Vec<u8>]) -> anyhow::Result<[f64; 6]> {
    let mut sum = [0f64; 6];
    for f in frames {
        let mut other = f.clone();
        other[11] ^= 0x40;
        for (i, s) in sum.iter_mut().enumerate() {
            *s += p.time_one(i, if PROGRAMS[i].ends_with("_xdp") { &other } else { f }, 1)?;
        }
    }
    Ok(sum.map(|s| s / frames.len() as f64))
}

/// ns per run of the TC programs on a GSO buffer of two 1,448-byte segments (the context carries
/// the segment size and count, as the kernel's GRO leaves them). BPF_PROG_TEST_RUN only makes
/// linear buffers: what this measures is the segment arithmetic, not a fragment walk.
fn time_gso(p: &mut Programs, repeat: u32) -> anyhow::Result<Value> {
    let one = packet_mix().into_iter().find(|(n, ..)| *n == "tcp_data_1514").map(|(.., f)| f).unwrap_or_default();
    let mut frame = one.clone();
    frame.extend_from_slice(&one[54..]);
    let total = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    let ctx = SkBuffCtx { gso_segs: 2, gso_size: 1448, ..SkBuffCtx::default() };
    let ctx = ctx.bytes();
    let time = |ebpf: &mut Ebpf, name: &str| -> anyhow::Result<f64> {
        let prog: &mut SchedClassifier = load::program(ebpf, name)?;
        let opts = TestRunOptions { data_in: Some(&frame), ctx_in: Some(ctx), repeat, ..TestRunOptions::default() };
        Ok(mean_ns(prog.test_run(opts)?))
    };
    let t = [time(&mut p.ours, TC_PROGRAM)?, time(&mut p.base, "bare_tc")?, time(&mut p.base, "min_mac_tc")?];
    Ok(json!({ "bytes": frame.len(), "iotwatch_tc": t[0], "bare_tc": t[1], "min_mac_tc": t[2] }))
}

/// ns per run of the programs on a DNS query that is sampled every time (rate limits off): the
/// copy into the ring, which the rate-limited path of the mix never reaches. The ring is read in
/// between, so that no run finds it full.
fn time_sampled(p: &mut Programs, frame: &[u8], repeat: u32) -> anyhow::Result<[f64; 6]> {
    let sampling = load::SampleOptions { rate: 0, ..load::SampleOptions::default() };
    let mut unlimited = load::load(&LoadOptions { sampling, ..LoadOptions::default() })?;
    let mut ring = crate::kernel::ring::Samples::take(&mut unlimited)?;
    let batch = repeat.min(10_000);
    let (mut ours, mut copied) = ([0f64; 2], 0usize);
    let mut batches = 0;
    for _ in 0..repeat.div_ceil(batch) {
        ours[0] += time_tc(load::program(&mut unlimited, TC_PROGRAM)?, frame, batch)?;
        copied += ring.drain(usize::MAX, |_| {});
        ours[1] += time_xdp(load::program(&mut unlimited, XDP_PROGRAM)?, frame, batch)?;
        copied += ring.drain(usize::MAX, |_| {});
        batches += 1;
    }
    anyhow::ensure!(copied as u64 == 2 * u64::from(batch) * batches, "samples were lost: the figure would be wrong");
    let mut t = [ours[0] / batches as f64, ours[1] / batches as f64, 0.0, 0.0, 0.0, 0.0];
    for (i, t) in t.iter_mut().enumerate().skip(2) {
        *t = p.time_one(i, frame, repeat)?;
    }
    Ok(t)
}

/// Runs every program on every frame of the mix, interleaved, then on the classes the steady
/// mix hides; returns the weighted means, each class, and the verifier's work per program.
pub fn run(repeat: u32) -> anyhow::Result<Value> {
    let mut p = Programs { ours: load::load(&LoadOptions::default())?, base: load_baselines()? };
    let mix = packet_mix();
    let established_share = 100.0 - NEW_CONVERSATION_SHARE - SAMPLED_SHARE;
    let mut weighted = [0f64; 6];
    let mut per_frame = serde_json::Map::new();
    for (name, share, frame) in &mix {
        let t = p.time(frame, repeat)?;
        for (w, v) in weighted.iter_mut().zip(t) {
            *w += v * f64::from(*share) / 100.0 * established_share / 100.0;
        }
        per_frame.insert((*name).to_owned(), row(t));
    }
    let new_conversation = time_once_each(&mut p, &new_conversation_frames())?;
    let dns = mix.iter().find(|(n, ..)| *n == "udp_dns_80").map(|(.., f)| f.clone()).unwrap_or_default();
    let sampled = time_sampled(&mut p, &dns, repeat.min(100_000))?;
    for (w, (n, s)) in weighted.iter_mut().zip(new_conversation.iter().zip(sampled)) {
        *w += n * NEW_CONVERSATION_SHARE / 100.0 + s * SAMPLED_SHARE / 100.0;
    }
    let ratio = |a: usize, b: usize| json!((weighted[a] / weighted[b] * 100.0).round() / 100.0);
    // Replay's frame program, loaded as `iotwatch replay` loads it (no per-CPU sample caps), for
    // its verifier's work.
    let replay = load::load(&LoadOptions {
        replay: true,
        tc: false,
        xdp: false,
        batch: true,
        sampling: load::SampleOptions { cpu_rate: 0, new_source_rate: 0, ..load::SampleOptions::default() },
        ..LoadOptions::default()
    })?;
    let verified = |ebpf: &Ebpf, name: &str| -> Value {
        let info = ebpf.program(name).and_then(|prog| prog.info().ok());
        json!(info.and_then(|i| i.verified_instruction_count()))
    };
    Ok(json!({
        "repeat": repeat,
        "mix": mix.iter().map(|(n, s, f)| json!({"frame": n, "percent": f64::from(*s) * established_share / 100.0, "bytes": f.len()}))
            .chain([
                json!({"frame": "new_conversation_66", "percent": NEW_CONVERSATION_SHARE, "bytes": 66}),
                json!({"frame": "sampled_dns_80", "percent": SAMPLED_SHARE, "bytes": dns.len()}),
            ])
            .collect::<Vec<_>>(),
        "ns_per_packet": row(weighted),
        "ratios": {
            "iotwatch_tc_to_bare_tc": ratio(0, 2),
            "iotwatch_tc_to_min_mac_tc": ratio(0, 4),
            "iotwatch_xdp_to_bare_xdp": ratio(1, 3),
            "iotwatch_xdp_to_min_mac_xdp": ratio(1, 5),
        },
        "per_frame_ns": per_frame,
        "classes_ns": {
            "new_conversation": row(new_conversation),
            "sampled_and_copied": row(sampled),
            "gso_2x1448_tc": time_gso(&mut p, repeat)?,
        },
        "verified_instructions": {
            "iotwatch_tc": verified(&p.ours, TC_PROGRAM),
            "iotwatch_xdp": verified(&p.ours, XDP_PROGRAM),
            "iotwatch_replay_frame": verified(&replay, REPLAY_FRAME_PROGRAM),
        },
    }))
}
