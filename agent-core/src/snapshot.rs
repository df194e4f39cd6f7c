//! What a poll of the kernel's maps saw, and the pure arithmetic over it: per-CPU sums and the
//! deltas of each conversation since the previous poll.

use std::collections::HashMap;

use agent_common::{
    ConvCounters, ConvKey, DeviceCounters,
    sample::{KINDS, outcome},
};

use crate::{
    bounded::TableSize,
    ledger::{Delta, Totals},
    mac::Mac,
};

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

/// The latest reading of each conversation, to take the next poll's deltas from. A walk of the
/// map goes through it entry by entry ([`Readings::read`], then [`Readings::end_walk`]): no copy
/// of the map nor a second table of readings is made (100k conversations: about 10 MB each).
/// Hashed with foldhash: SipHash's resistance to chosen keys buys nothing here (the kernel's map
/// bounds the keys), and it cost a third of the polls of a replay (66 ms of CPU against 45 ms).
#[derive(Debug, Default, Clone)]
pub struct Readings(HashMap<ConvKey, Reading, foldhash::fast::RandomState>);

#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    totals: Totals,
    last_seen_ns: u64,
    /// Read in the walk going on: the others leave when it ends.
    in_walk: bool,
}

impl Readings {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &ConvKey) -> Option<Totals> {
        self.0.get(key).map(|r| r.totals)
    }

    pub fn remove(&mut self, key: &ConvKey) -> Option<Totals> {
        self.0.remove(key).map(|r| r.totals)
    }

    /// One entry of a walk: what it grew since its latest reading, which it becomes.
    ///
    /// A walk may read a key more than once: walking an LRU map while it evicts, the kernel's
    /// get-next-key restarts from the first bucket when the key under the cursor was evicted, and
    /// every key before it comes again. A later reading counts only its growth since the earlier
    /// one, so a key's delta is taken once per walk.
    pub fn read(&mut self, key: ConvKey, seen: &ConvTotals) -> Option<Delta> {
        let reading = self.0.entry(key).or_default();
        let grown = growth(reading.totals, seen.totals);
        *reading = Reading { totals: seen.totals, last_seen_ns: seen.last_seen_ns, in_walk: true };
        delta(key, grown, seen)
    }

    /// Ends a walk: the conversations it did not read are gone from the map and leave. Returns
    /// those whose latest reading was last seen before `idle_before_ns` (idle, to age out),
    /// sorted.
    pub fn end_walk(&mut self, idle_before_ns: Option<u64>) -> Vec<ConvKey> {
        let mut idle = Vec::new();
        self.0.retain(|key, r| {
            let read = std::mem::take(&mut r.in_walk);
            if read && idle_before_ns.is_some_and(|t| r.last_seen_ns < t) {
                idle.push(*key);
            }
            read
        });
        idle.sort_unstable();
        idle
    }

    /// Ends a walk that failed part way: what it read stays as the latest readings (the deltas
    /// it took must then be kept by the caller), and nothing leaves.
    pub fn abandon_walk(&mut self) {
        self.0.values_mut().for_each(|r| r.in_walk = false);
    }
}

impl FromIterator<(ConvKey, Totals)> for Readings {
    fn from_iter<I: IntoIterator<Item = (ConvKey, Totals)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, totals)| (k, Reading { totals, ..Reading::default() })).collect())
    }
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

    /// One walk of `entries`: its deltas, and the idle keys it found.
    fn walk(
        prev: &mut Readings,
        entries: &[(ConvKey, ConvTotals)],
        idle_before_ns: Option<u64>,
    ) -> (Vec<Delta>, Vec<ConvKey>) {
        let deltas = entries.iter().filter_map(|(k, seen)| prev.read(*k, seen)).collect();
        (deltas, prev.end_walk(idle_before_ns))
    }

    fn diff(prev: &mut Readings, entries: &[(ConvKey, ConvTotals)]) -> Vec<Delta> {
        walk(prev, entries, None).0
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
        let entries = [(key(1), seen(5, 500)), (key(2), seen(1, 60)), (key(1), seen(6, 600)), (key(2), seen(1, 60))];
        let d = diff(&mut prev, &entries);
        let of = |port| d.iter().filter(|d| d.key == key(port)).fold((0, 0), |(p, b), d| (p + d.packets, b + d.bytes));
        assert_eq!(of(1), (4, 400), "growth from 2 to 6 packets, once: {d:?}");
        assert_eq!(of(2), (1, 60), "{d:?}");
        assert_eq!(prev.len(), 2);
        assert_eq!(prev.get(&key(1)), Some(Totals { packets: 6, bytes: 600 }), "the latest reading is kept");
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
        let entries = [(key(1), at(1, 5)), (key(2), at(1, 5)), (key(1), at(2, 50)), (key(2), at(1, 5))];
        let mut prev = Readings::default();
        let (_, idle) = walk(&mut prev, &entries, Some(10));
        assert_eq!(idle, vec![key(2)], "key(1) was active again in its later reading");
        // Two frames arrived between the read (1 packet) and the removal (3 packets).
        let d = removed(&mut prev, key(2), &at(3, 12)).expect("a delta");
        assert_eq!((d.packets, d.bytes), (2, 20));
        assert_eq!(prev.get(&key(2)), None);
        assert_eq!(removed(&mut prev, key(1), &at(2, 50)), None, "nothing new");
    }

    #[test]
    fn a_walk_that_fails_part_way_keeps_what_it_read_and_drops_nothing() {
        let mut prev = Readings::from_iter([
            (key(1), Totals { packets: 1, bytes: 10 }),
            (key(2), Totals { packets: 1, bytes: 10 }),
        ]);
        assert_eq!(prev.read(key(1), &seen(3, 30)), Some(delta(1, 2, 20)));
        prev.abandon_walk();
        assert_eq!(prev.len(), 2, "key(2) was not read, but the walk did not end");
        // The next walk counts key(1) from the failed walk's reading, and ends normally.
        assert_eq!(diff(&mut prev, &[(key(1), seen(4, 40))]), vec![delta(1, 1, 10)]);
        assert_eq!(prev.len(), 1);
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
