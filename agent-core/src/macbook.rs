//! Per-MAC totals that outlive the kernel's entries. Pure: no maps, no clock.
//!
//! DEVICE_STATS never evicts, so without help spoofed MACs, randomised phone MACs and the
//! solicited-node multicast destinations of rotating IPv6 privacy addresses would fill it for
//! good, and new devices would go uncounted. The agent removes MACs whose counters have not
//! moved for an idle timeout (taking their last counts in the same step) and keeps what they
//! counted here, so that every MAC's exported totals only ever rise, even when it comes back
//! and the kernel counts it from zero again.
//!
//! The map has no last-seen time: a MAC is idle when its counters, summed over CPUs, read the
//! same at every poll for the whole timeout.

use std::collections::{BTreeMap, BTreeSet};

use agent_common::{DeviceCounters, MacKey};

use crate::{
    bounded::{TableSize, entry_bytes, evict_idlest, excess},
    mac::Mac,
};

/// Adds the counters field by field: by name, because the struct carries other fields (the
/// kernel's own state) that are not counts.
pub fn add_device(into: &mut DeviceCounters, c: &DeviceCounters) {
    into.tx_packets += c.tx_packets;
    into.tx_bytes += c.tx_bytes;
    into.rx_packets += c.rx_packets;
    into.rx_bytes += c.rx_bytes;
}

/// A MAC's per-CPU values summed: the counts only.
pub fn sum_device(values: &[DeviceCounters]) -> DeviceCounters {
    let mut sum = DeviceCounters::default();
    for v in values {
        add_device(&mut sum, v);
    }
    sum
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// What the MAC's removed entries counted.
    retired: DeviceCounters,
    /// The latest reading of its entry in the map (zero when it has none).
    live: DeviceCounters,
    /// When `live` last changed, or the entry appeared.
    changed_ns: u64,
    in_map: bool,
}

/// MACs kept: past it, those gone from the map the longest make room (what they counted stays
/// in [`MacBook::departed`]).
pub const MAX_MACS: usize = 65_536;
pub const TABLE: &str = "macs";

#[derive(Clone, Debug, Default)]
pub struct MacBook {
    entries: BTreeMap<MacKey, Entry>,
    aged_out: u64,
    departed: DeviceCounters,
    evicted: u64,
    /// MACs never evicted (see `Ledger::pin`).
    pinned: BTreeSet<Mac>,
}

impl MacBook {
    /// Records one walk of the map (counts summed over CPUs) taken at `now_ns`, and returns the
    /// entries whose counts have not moved for `idle_ns` (none when `None`): the ones to remove.
    pub fn observe(&mut self, now_ns: u64, live: &[(MacKey, DeviceCounters)], idle_ns: Option<u64>) -> Vec<MacKey> {
        let mut seen = std::collections::BTreeSet::new();
        for (key, counts) in live {
            seen.insert(*key);
            let e = self.entries.entry(*key).or_default();
            if !e.in_map || counts_differ(&e.live, counts) {
                e.changed_ns = now_ns;
            }
            e.live = *counts;
            e.in_map = true;
        }
        // Gone from the map without the agent (nothing else removes entries today): keep what
        // was read last, so the totals do not fall.
        for (key, e) in &mut self.entries {
            if e.in_map && !seen.contains(key) {
                let last = std::mem::take(&mut e.live);
                add_device(&mut e.retired, &last);
                e.in_map = false;
            }
        }
        self.enforce_bound();
        let Some(idle_ns) = idle_ns else { return Vec::new() };
        self.entries
            .iter()
            .filter(|(_, e)| e.in_map && now_ns.saturating_sub(e.changed_ns) >= idle_ns)
            .map(|(k, _)| *k)
            .collect()
    }

    /// An entry the agent removed: `last` are the counts the removal returned (what the kernel
    /// counted until the very end, frames after the last walk included), or `None` when the entry
    /// was gone already (its last reading is kept).
    pub fn retire(&mut self, key: MacKey, last: Option<DeviceCounters>) {
        let e = self.entries.entry(key).or_default();
        let live = std::mem::take(&mut e.live);
        let last = last.map_or(live, |l| sum_device(&[l]));
        add_device(&mut e.retired, &last);
        if e.in_map {
            self.aged_out += 1;
        }
        e.in_map = false;
    }

    /// Evicts the entries out of the map that changed least recently, past [`MAX_MACS`].
    fn enforce_bound(&mut self) {
        let n = excess(self.entries.len(), MAX_MACS);
        let (departed, pinned) = (&mut self.departed, &self.pinned);
        self.evicted += evict_idlest(
            &mut self.entries,
            n,
            |e| e.changed_ns,
            // Never one in the map: the next walk would count its live counts again.
            |k, e| e.in_map || pinned.contains(&Mac(k.mac)),
            |_, e| {
                add_device(departed, &e.retired);
                add_device(departed, &e.live);
            },
        ) as u64;
    }

    /// Keeps these MACs whatever the bound: their exported totals must only rise.
    pub fn pin(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.pinned.extend(macs);
    }

    /// What the evicted MACs counted, all together.
    pub fn departed(&self) -> DeviceCounters {
        self.departed
    }

    pub fn table(&self) -> TableSize {
        TableSize {
            table: TABLE,
            entries: self.entries.len(),
            bytes: self.entries.len() * entry_bytes::<MacKey, Entry>(),
            max_entries: MAX_MACS,
            evicted: self.evicted,
        }
    }

    /// MACs removed from the map after being idle, since the start.
    pub fn aged_out(&self) -> u64 {
        self.aged_out
    }

    /// Entries in the map at the last walk, less those removed since.
    pub fn in_map(&self) -> u64 {
        self.entries.values().filter(|e| e.in_map).count() as u64
    }

    /// Every MAC seen since the start with all it counted: removed entries plus the live one.
    pub fn totals(&self) -> Vec<(Mac, DeviceCounters)> {
        self.entries
            .iter()
            .map(|(k, e)| {
                let mut t = e.retired;
                add_device(&mut t, &e.live);
                (Mac(k.mac), t)
            })
            .collect()
    }
}

fn counts_differ(a: &DeviceCounters, b: &DeviceCounters) -> bool {
    (a.tx_packets, a.tx_bytes, a.rx_packets, a.rx_bytes) != (b.tx_packets, b.tx_bytes, b.rx_packets, b.rx_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(n: u8) -> MacKey {
        MacKey::new([2, 0, 0, 0, 0, n])
    }

    fn tx(packets: u64) -> DeviceCounters {
        DeviceCounters { tx_packets: packets, tx_bytes: packets * 100, ..Default::default() }
    }

    fn total(book: &MacBook, n: u8) -> u64 {
        book.totals().iter().find(|(m, _)| *m == Mac(key(n).mac)).map_or(0, |(_, c)| c.tx_packets)
    }

    #[test]
    fn past_its_bound_the_book_forgets_macs_gone_longest_and_keeps_their_counts() {
        let mut b = MacBook::default();
        let mac = |i: u32| {
            let x = i.to_be_bytes();
            MacKey::new([2, 0x66, x[0], x[1], x[2], x[3]])
        };
        b.pin([Mac(mac(0).mac)]);
        // A flood of MACs, each in the map for one walk only, a thousand a walk.
        let n = MAX_MACS as u32 + 10_000;
        for walk in 0..n.div_ceil(1000) {
            let live: Vec<_> = (walk * 1000..(walk * 1000 + 1000).min(n)).map(|i| (mac(i), tx(1))).collect();
            b.observe(u64::from(walk), &live, None);
        }
        let t = b.table();
        assert!(t.entries <= MAX_MACS && t.evicted > 0, "{t:?}");
        let totals = b.totals();
        assert!(totals.iter().any(|(m, _)| *m == Mac(mac(0).mac)), "pinned");
        assert!(totals.iter().any(|(m, _)| *m == Mac(mac(n - 1).mac)), "the one in the map");
        assert!(!totals.iter().any(|(m, _)| *m == Mac(mac(1).mac)), "gone longest");
        let kept: u64 = totals.iter().map(|(_, c)| c.tx_packets).sum();
        assert_eq!(kept + b.departed().tx_packets, u64::from(n));
    }

    #[test]
    fn only_macs_idle_for_the_whole_timeout_age_out_and_totals_never_fall() {
        let mut b = MacBook::default();
        let idle = Some(60 * S);
        assert!(b.observe(0, &[(key(1), tx(1)), (key(2), tx(1))], idle).is_empty());
        // key(2) moves at 30 s; at 60 s only key(1) has been still for 60 s.
        assert!(b.observe(30 * S, &[(key(1), tx(1)), (key(2), tx(2))], idle).is_empty());
        assert_eq!(b.observe(60 * S, &[(key(1), tx(1)), (key(2), tx(2))], idle), vec![key(1)]);
        // Removed with one more frame counted after the walk: kept.
        b.retire(key(1), Some(tx(2)));
        assert_eq!((b.aged_out(), b.in_map(), total(&b, 1)), (1, 1, 2));
        // It comes back and the kernel counts it from zero: its total goes on rising.
        assert!(b.observe(70 * S, &[(key(1), tx(1)), (key(2), tx(2))], idle).is_empty());
        assert_eq!(total(&b, 1), 3);
        assert_eq!(b.observe(90 * S, &[(key(1), tx(1)), (key(2), tx(2))], idle), vec![key(2)]);
        // Without a timeout nothing ages.
        assert!(b.observe(1000 * S, &[(key(1), tx(1)), (key(2), tx(2))], None).is_empty());
    }

    #[test]
    fn an_entry_that_vanished_keeps_its_last_reading() {
        let mut b = MacBook::default();
        b.observe(0, &[(key(1), tx(4))], None);
        b.observe(S, &[], None);
        assert_eq!((total(&b, 1), b.in_map(), b.aged_out()), (4, 0, 0));
        // A removal that found nothing keeps the last reading too, once.
        b.observe(2 * S, &[(key(2), tx(5))], None);
        b.retire(key(2), None);
        assert_eq!((total(&b, 2), b.aged_out()), (5, 1));
        assert_eq!(sum_device(&[tx(1), tx(2)]).tx_bytes, 300);
    }
}
