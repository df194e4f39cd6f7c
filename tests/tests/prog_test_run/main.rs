//! The accounting program under BPF_PROG_TEST_RUN: crafted frames of every kind the program
//! parses, with the exact map contents asserted and the return code always "pass".
//! One file per subject; the helpers below read the snapshot.

mod headers;
mod lengths;
mod malformed;
mod maps;
mod replay_batch;

use agent_common::{ConvKey, DeviceCounters, Stat, ip_version};
use iotwatch::kernel::{load::LoadOptions, test_run::TcInput};
use iotwatch_core::{mac::Mac, snapshot::Snapshot};
use iotwatch_tests::{frames::*, harness::Harness, privileged_test};

fn mac_counters(s: &Snapshot, mac: [u8; 6]) -> DeviceCounters {
    s.macs.iter().find(|(m, _)| *m == Mac(mac)).map(|(_, c)| *c).unwrap_or_default()
}

fn stat(s: &Snapshot, st: Stat) -> u64 {
    s.stats[st as usize]
}

/// The one conversation of a single-frame test, and its packets and bytes.
fn only_conversation(s: &Snapshot) -> (ConvKey, u64, u64) {
    assert_eq!(s.deltas.len(), 1, "exactly one conversation: {:?}", s.deltas);
    let d = s.deltas[0];
    (d.key, d.packets, d.bytes)
}

fn v4key(src: [u8; 4], dst: [u8; 4]) -> ([u8; 16], [u8; 16]) {
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    a[..4].copy_from_slice(&src);
    b[..4].copy_from_slice(&dst);
    (a, b)
}

/// Only the listed statistics moved, by the listed amounts (buffers and frames included).
fn assert_stats(s: &Snapshot, expected: &[(Stat, u64)]) {
    for st in Stat::ALL {
        let want = expected.iter().find(|(e, _)| e == st).map_or(0, |(_, n)| *n);
        assert_eq!(stat(s, *st), want, "statistic {}", st.name());
    }
}

/// Runs `f` with this thread pinned to `cpu`.
fn on_cpu(cpu: usize, f: impl FnOnce()) {
    iotwatch_tests::harness::pin_to_cpu(cpu);
    f();
}

privileged_test! {
    /// A conversation counted on a second CPU: that CPU's slot was created zeroed by the first
    /// CPU's insert, and must take its own first-seen time, or the earliest over all CPUs reads
    /// 0 (the epoch in replay, the boot time live).
    fn first_seen_is_set_on_every_cpu() {
        assert!(std::thread::available_parallelism().map_or(1, usize::from) >= 2, "needs two CPUs");
        let mut h = Harness::new(true);
        let frame = udp4(DEV_A, DEV_B, IP_A, IP_B, 40_000, 9_999, 1);
        let at = |s: u64| TcInput {
            data: &frame,
            wire_len: frame.len() as u32,
            tstamp_ns: s * 1_000_000_000,
            ..TcInput::default()
        };
        on_cpu(0, || h.tc_input(&at(10)));
        on_cpu(1, || h.tc_input(&at(20)));
        let s = h.poll();
        assert_eq!(s.deltas.len(), 1);
        let d = s.deltas[0];
        assert_eq!((d.packets, d.first_seen_ns, d.last_seen_ns), (2, 10_000_000_000, 20_000_000_000));
    }
}

privileged_test! {
    /// Only the programs that will run are loaded: TC alone for `--attach tc`, so that a kernel
    /// whose verifier refused the XDP program could still run the default mode; replay's two
    /// alone for replay, as `iotwatch replay` asks.
    fn only_the_programs_that_will_run_are_loaded() {
        use aya::programs::{SchedClassifier, Xdp};
        use iotwatch::kernel::load::{self, REPLAY_FRAME_PROGRAM, REPLAY_PROGRAM, TC_PROGRAM, XDP_PROGRAM};
        let mut ebpf = load::load(&LoadOptions { xdp: false, ..LoadOptions::default() }).expect("load");
        assert!(load::program::<SchedClassifier>(&mut ebpf, TC_PROGRAM).expect("TC").fd().is_ok(), "TC is loaded");
        assert!(load::program::<Xdp>(&mut ebpf, XDP_PROGRAM).expect("XDP").fd().is_err(), "XDP is not");
        assert!(load::program::<Xdp>(&mut ebpf, REPLAY_PROGRAM).expect("replay").fd().is_err(), "replay's are not");
        let mut ebpf = load::load(&LoadOptions::default()).expect("load");
        assert!(load::program::<Xdp>(&mut ebpf, XDP_PROGRAM).expect("XDP").fd().is_ok(), "XDP when asked for");
        use clap::Parser as _;
        let cli = iotwatch::cli::Cli::try_parse_from(["iotwatch", "replay", "x.pcap"]).expect("arguments");
        let iotwatch::cli::Command::Replay(args) = cli.command else { panic!("not replay") };
        let mut ebpf = load::load(&args.maps.load_options(&args.sampling, true, false)).expect("load for replay");
        for name in [REPLAY_PROGRAM, REPLAY_FRAME_PROGRAM] {
            assert!(load::program::<Xdp>(&mut ebpf, name).expect("replay").fd().is_ok(), "{name} for replay");
        }
        assert!(load::program::<SchedClassifier>(&mut ebpf, TC_PROGRAM).expect("TC").fd().is_err(), "no TC for replay");
        assert!(load::program::<Xdp>(&mut ebpf, XDP_PROGRAM).expect("XDP").fd().is_err(), "no XDP for replay");
        let err = load::load(&LoadOptions { batch: true, ..LoadOptions::default() }).expect_err("live");
        assert!(err.to_string().contains("replay mode only"), "{err}");
    }
}
