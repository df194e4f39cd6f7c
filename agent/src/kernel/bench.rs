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

use crate::kernel::load::{self, LoadOptions, TC_PROGRAM, XDP_PROGRAM};

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

/// Runs every program on every frame of the mix, interleaved, and returns the weighted means.
pub fn run(repeat: u32) -> anyhow::Result<Value> {
    let mut ours = load::load(&LoadOptions::default())?;
    let mut base = load_baselines()?;
    let mix = packet_mix();
    let names = ["iotwatch_tc", "iotwatch_xdp", "bare_tc", "bare_xdp", "min_mac_tc", "min_mac_xdp"];
    let mut weighted = [0f64; 6];
    let mut per_frame = serde_json::Map::new();
    for (name, share, frame) in &mix {
        let t = [
            time_tc(load::program(&mut ours, TC_PROGRAM)?, frame, repeat)?,
            time_xdp(load::program(&mut ours, XDP_PROGRAM)?, frame, repeat)?,
            time_tc(load::program(&mut base, "bare_tc")?, frame, repeat)?,
            time_xdp(load::program(&mut base, "bare_xdp")?, frame, repeat)?,
            time_tc(load::program(&mut base, "min_mac_tc")?, frame, repeat)?,
            time_xdp(load::program(&mut base, "min_mac_xdp")?, frame, repeat)?,
        ];
        for (w, v) in weighted.iter_mut().zip(t) {
            *w += v * f64::from(*share) / 100.0;
        }
        per_frame.insert(
            (*name).to_owned(),
            json!(names.iter().zip(t).map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()),
        );
    }
    let ns: serde_json::Map<String, Value> =
        names.iter().zip(weighted).map(|(n, v)| (n.to_string(), json!((v * 10.0).round() / 10.0))).collect();
    let ratio = |a: usize, b: usize| json!((weighted[a] / weighted[b] * 100.0).round() / 100.0);
    Ok(json!({
        "repeat": repeat,
        "mix": mix.iter().map(|(n, s, f)| json!({"frame": n, "percent": s, "bytes": f.len()})).collect::<Vec<_>>(),
        "ns_per_packet": ns,
        "ratios": {
            "iotwatch_tc_to_bare_tc": ratio(0, 2),
            "iotwatch_tc_to_min_mac_tc": ratio(0, 4),
            "iotwatch_xdp_to_bare_xdp": ratio(1, 3),
            "iotwatch_xdp_to_min_mac_xdp": ratio(1, 5),
        },
        "per_frame_ns": per_frame,
    }))
}
