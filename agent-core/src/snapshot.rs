//! What a poll of the kernel's maps saw, and the pure arithmetic over it: per-CPU sums and the
//! deltas of each conversation since the previous poll.

use std::collections::{HashMap, hash_map::Entry};

use agent_common::{
    ConvCounters, ConvKey, DeviceCounters,
    sample::{KINDS, outcome},
};

use crate::{
    bounded::TableSize,
    ledger::{Delta, Totals},
    mac::Mac,
};

/// Conversations' totals at the previous poll, by key.
pub type Readings = HashMap<ConvKey, Totals, foldhash::fast::RandomState>;

/// Samples sent, dropped (ring full) and suppressed (rate limit), per kind.
pub type SampleCounts = [[u64; outcome::OUTCOMES]; KINDS];

/// What one poll saw.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Exact per-MAC counters (DEVICE_STATS), summed over CPUs, of every MAC since the start:
    /// what MACs aged out of the map counted is kept (see `macbook`).
    pub macs: Vec<(Mac, DeviceCounters)>,
    /// The program's statistics, indexed by [`Stat`].
    pub stats: Vec<u64>,
    /// What became of the samples the program chose, per kind and outcome.
    pub samples: SampleCounts,
    pub deltas: Vec<Delta>,
    pub conversation_entries: u64,
    pub mac_entries: u64,
    /// MACs removed from DEVICE_STATS after being idle (their counts kept in `macs`).
    pub macs_aged_out: u64,
    /// Conversations lost to LRU eviction so far (their counts since the previous poll are lost).
    pub evictions: u64,
    /// Conversations removed from CONVERSATIONS after being idle, with their last counts.
    pub aged_out: u64,
    /// What the MACs evicted from the agent's table (`macbook`) counted, all together.
    pub macs_departed: DeviceCounters,
    pub mac_table: TableSize,
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

/// What a conversation added between two readings: the difference, or all of `now` when it is
/// below `before` (the entry was evicted and made anew).
pub fn growth(before: Totals, now: Totals) -> Totals {
    if now.packets >= before.packets && now.bytes >= before.bytes {
        Totals { packets: now.packets - before.packets, bytes: now.bytes - before.bytes }
    } else {
        now
    }
}

fn delta(key: ConvKey, grown: Totals, seen: &ConvTotals) -> Option<Delta> {
    (grown.packets > 0 || grown.bytes > 0).then_some(Delta {
        key,
        packets: grown.packets,
        bytes: grown.bytes,
        first_seen_ns: seen.first_seen_ns,
        last_seen_ns: seen.last_seen_ns,
    })
}

/// Deltas between the previous and the current totals of each conversation; `prev` becomes
/// `current`, one entry per key.
///
/// `current` is one walk of the map and may hold a key more than once: walking an LRU map while
/// it evicts, the kernel's get-next-key restarts from the first bucket when the key under the
/// cursor was evicted, and every key before it comes again. A later reading of a key counts only
/// its growth since the earlier one, so a delta is taken once per key per walk.
pub fn diff(prev: &mut Readings, current: &[(ConvKey, ConvTotals)]) -> Vec<Delta> {
    let mut next = Readings::with_capacity_and_hasher(current.len(), Default::default());
    let mut deltas = Vec::new();
    for (key, seen) in current {
        let before = match next.entry(*key) {
            Entry::Occupied(mut e) => e.insert(seen.totals),
            Entry::Vacant(e) => {
                e.insert(seen.totals);
                prev.get(key).copied().unwrap_or_default()
            }
        };
        deltas.extend(delta(*key, growth(before, seen.totals), seen));
    }
    *prev = next;
    deltas
}

/// Keys whose latest reading in the walk was last seen before `before_ns` (idle conversations to
/// age out), each once.
pub fn idle_keys(current: &[(ConvKey, ConvTotals)], before_ns: u64) -> Vec<ConvKey> {
    let mut latest: HashMap<ConvKey, u64, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(current.len(), Default::default());
    for (key, seen) in current {
        latest.insert(*key, seen.last_seen_ns);
    }
    let mut idle: Vec<ConvKey> = latest.into_iter().filter(|(_, last)| *last < before_ns).map(|(k, _)| k).collect();
    idle.sort_unstable();
    idle
}

/// A conversation taken out of the map (lookup-and-delete): what it counted after the walk read
/// it, and it leaves `prev`. Frames counted between the read and the removal are not lost.
pub fn removed(prev: &mut Readings, key: ConvKey, last: &ConvTotals) -> Option<Delta> {
    let before = prev.remove(&key).unwrap_or_default();
    delta(key, growth(before, last.totals), last)
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
        let mut prev = Readings::default();
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
        let mut prev2 = Readings::from_iter([(key(3), Totals { packets: 9, bytes: 900 })]);
        let d = diff(&mut prev2, &[(key(3), seen(2, 100))]);
        assert_eq!(d, vec![delta(3, 2, 100)]);
    }

    /// Walking an LRU map while it evicts returns a key again when the key under the walk's
    /// cursor was evicted: the kernel's get-next-key restarts from the first bucket.
    #[test]
    fn a_key_read_twice_in_one_walk_counts_once() {
        let mut prev = Readings::from_iter([(key(1), Totals { packets: 2, bytes: 200 })]);
        let walk = [(key(1), seen(5, 500)), (key(2), seen(1, 60)), (key(1), seen(6, 600)), (key(2), seen(1, 60))];
        let d = diff(&mut prev, &walk);
        let of = |port| d.iter().filter(|d| d.key == key(port)).fold((0, 0), |(p, b), d| (p + d.packets, b + d.bytes));
        assert_eq!(of(1), (4, 400), "growth from 2 to 6 packets, once: {d:?}");
        assert_eq!(of(2), (1, 60), "{d:?}");
        assert_eq!(prev.len(), 2);
        assert_eq!(prev[&key(1)], Totals { packets: 6, bytes: 600 }, "the latest reading is kept");
        // The next walk counts from the latest reading.
        assert!(diff(&mut prev, &[(key(1), seen(6, 600))]).is_empty());
    }

    #[test]
    fn idle_keys_use_the_latest_reading_and_removal_counts_what_came_after_the_read() {
        let at = |packets, last| ConvTotals {
            totals: Totals { packets, bytes: packets * 10 },
            first_seen_ns: 1,
            last_seen_ns: last,
        };
        let walk = [(key(1), at(1, 5)), (key(2), at(1, 5)), (key(1), at(2, 50)), (key(2), at(1, 5))];
        assert_eq!(idle_keys(&walk, 10), vec![key(2)], "key(1) was active again in its later reading");
        let mut prev = Readings::default();
        diff(&mut prev, &walk);
        // Two frames arrived between the read (1 packet) and the removal (3 packets).
        let d = removed(&mut prev, key(2), &at(3, 12)).expect("a delta");
        assert_eq!((d.packets, d.bytes), (2, 20));
        assert!(!prev.contains_key(&key(2)));
        assert_eq!(removed(&mut prev, key(1), &at(2, 50)), None, "nothing new");
    }

    #[test]
    fn per_cpu_sums_take_the_earliest_first_and_latest_last_seen() {
        let v = |packets, first, last| ConvCounters {
            packets,
            bytes: packets * 10,
            first_seen_ns: first,
            last_seen_ns: last,
            flow_samples: 0,
            flow_end: 0,
        };
        let s = sum_conv(&[v(1, 50, 60), v(0, 0, 0), v(2, 40, 45)]);
        assert_eq!(s, ConvTotals { totals: Totals { packets: 3, bytes: 30 }, first_seen_ns: 40, last_seen_ns: 60 });
    }
}
