//! The accounting program under BPF_PROG_TEST_RUN: crafted frames of every kind the program
//! parses, with the exact map contents asserted and the return code always "pass".
//! One file per subject; the helpers below read the snapshot.

mod headers;
mod lengths;
mod malformed;

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
