//! What a poll of the kernel's maps saw, and the pure arithmetic over it: per-CPU sums and the
//! deltas of each conversation since the previous poll.

use std::collections::HashMap;

use agent_common::{
    ConvCounters, ConvKey, DeviceCounters,
    sample::{KINDS, outcome},
};

use crate::{
    ledger::{Delta, Totals},
    mac::Mac,
};

/// Samples sent, dropped (ring full) and suppressed (rate limit), per kind.
pub type SampleCounts = [[u64; outcome::OUTCOMES]; KINDS];

/// What one poll saw.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Exact per-MAC counters (DEVICE_STATS), summed over CPUs.
    pub macs: Vec<(Mac, DeviceCounters)>,
    /// The program's statistics, indexed by [`Stat`].
    pub stats: Vec<u64>,
    pub deltas: Vec<Delta>,
    pub conversation_entries: u64,
    pub mac_entries: u64,
    /// Conversations lost to LRU eviction so far (their counts since the previous poll are lost).
    pub evictions: u64,
    pub aged_out: u64,
}

/// A conversation's counters summed over CPUs, with the earliest first and latest last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvTotals {
    pub totals: Totals,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

pub fn sum_conv(values: &[ConvCounters]) -> ConvTotals {
    let mut out = ConvTotals { first_seen_ns: u64::MAX, ..ConvTotals::default() };
    for v in values.iter().filter(|v| v.packets > 0) {
        out.totals.add(v.packets, v.bytes);
        out.first_seen_ns = out.first_seen_ns.min(v.first_seen_ns);
        out.last_seen_ns = out.last_seen_ns.max(v.last_seen_ns);
    }
    if out.first_seen_ns == u64::MAX {
        out.first_seen_ns = 0;
    }
    out
}

/// Deltas between the previous and the current totals of each conversation; `prev` becomes
/// `current`. A total below the previous one means the entry was evicted and made anew: all of
/// it is new.
pub fn diff(prev: &mut HashMap<ConvKey, Totals>, current: &[(ConvKey, ConvTotals)]) -> Vec<Delta> {
    let mut next = HashMap::with_capacity(current.len());
    let mut deltas = Vec::new();
    for (key, seen) in current {
        let now = &seen.totals;
        let before = prev.get(key).copied().unwrap_or_default();
        let (packets, bytes) = if now.packets >= before.packets && now.bytes >= before.bytes {
            (now.packets - before.packets, now.bytes - before.bytes)
        } else {
            (now.packets, now.bytes)
        };
        if packets > 0 || bytes > 0 {
            deltas.push(Delta {
                key: *key,
                packets,
                bytes,
                first_seen_ns: seen.first_seen_ns,
                last_seen_ns: seen.last_seen_ns,
            });
        }
        next.insert(*key, *now);
    }
    *prev = next;
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ConvKey {
        ConvKey { dst_port: port, ..ConvKey::default() }
    }

    fn seen(packets: u64, bytes: u64) -> ConvTotals {
        ConvTotals { totals: Totals { packets, bytes }, first_seen_ns: 7, last_seen_ns: 8 }
    }

    fn delta(port: u16, packets: u64, bytes: u64) -> Delta {
        Delta { key: key(port), packets, bytes, first_seen_ns: 7, last_seen_ns: 8 }
    }

    #[test]
    fn deltas_are_growth_since_last_poll() {
        let mut prev = HashMap::new();
        let d = diff(&mut prev, &[(key(1), seen(2, 200))]);
        assert_eq!(d, vec![delta(1, 2, 200)]);
        let d = diff(&mut prev, &[(key(1), seen(5, 500)), (key(2), seen(1, 60))]);
        assert_eq!(d.len(), 2);
        assert!(d.contains(&delta(1, 3, 300)));
        assert!(d.contains(&delta(2, 1, 60)));
        // No growth, no delta.
        let d = diff(&mut prev, &[(key(1), seen(5, 500))]);
        assert!(d.is_empty());
        // key(2) vanished (aged out or evicted) and comes back: all of it is new.
        let d = diff(&mut prev, &[(key(2), seen(1, 60))]);
        assert_eq!(d, vec![delta(2, 1, 60)]);
        // Recreated below its old total: counted from zero.
        let d = diff(&mut prev, &[(key(2), seen(0, 0))]);
        assert!(d.is_empty());
        let mut prev2 = HashMap::from([(key(3), Totals { packets: 9, bytes: 900 })]);
        let d = diff(&mut prev2, &[(key(3), seen(2, 100))]);
        assert_eq!(d, vec![delta(3, 2, 100)]);
    }

    #[test]
    fn per_cpu_sums_take_the_earliest_first_and_latest_last_seen() {
        let v = |packets, first, last| ConvCounters {
            packets,
            bytes: packets * 10,
            first_seen_ns: first,
            last_seen_ns: last,
            flow_samples: 0,
        };
        let s = sum_conv(&[v(1, 50, 60), v(0, 0, 0), v(2, 40, 45)]);
        assert_eq!(s, ConvTotals { totals: Totals { packets: 3, bytes: 30 }, first_seen_ns: 40, last_seen_ns: 60 });
    }
}
