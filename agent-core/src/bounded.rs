//! Bounds of the agent's tables. Every table fed by traffic has a cap in entries (and, where
//! its entries' size depends on the traffic, in bytes); past it, the entries seen least
//! recently make room, an eighth of the table at a time (amortised: one scan per eighth), and
//! are counted. A flood of spoofed MACs or addresses then replaces old strangers, not the
//! devices that keep talking.

use std::collections::BTreeMap;

use serde::Serialize;

/// One table's size for the metrics and the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableSize {
    pub table: &'static str,
    pub entries: usize,
    /// Estimated heap bytes: entries times their size, plus the text they hold.
    pub bytes: usize,
    pub max_entries: usize,
    /// Entries removed to stay within the bounds, since the start.
    pub evicted: u64,
}

/// Estimated bytes of one entry of a B-tree or hash map: key and value, plus the map's own
/// share (node or control bytes, free slots).
pub const fn entry_bytes<K, V>() -> usize {
    (size_of::<K>() + size_of::<V>()) * 3 / 2 + 8
}

/// The most entries a hash table of `slots` slots (a power of two) holds: `std`'s (hashbrown's)
/// load limit is 7/8. A bound of exactly `slots` entries would make the table grow to twice the
/// slots and take twice the memory for the last eighth.
pub const fn hash_capacity(slots: usize) -> usize {
    slots / 8 * 7
}

/// Removes the entries of a hash table bounded at `max` entries that `keep` refuses, and rebuilds
/// the table for `max`: a removal leaves a tombstone, and a table out of free slots grows to
/// twice its slots when it is more than half full, whatever the bound, so a table that churns
/// would otherwise end at twice the memory.
pub fn retain_within<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
    max: usize,
    keep: impl FnMut(&K, &mut V) -> bool,
) {
    map.retain(keep);
    map.shrink_to(max);
}

/// How many entries to evict from a table of `len` entries bounded at `max`: none within the
/// bound, else enough to be an eighth below it.
pub fn excess(len: usize, max: usize) -> usize {
    if len <= max { 0 } else { len - max + max.div_ceil(8) }
}

/// Removes the `count` entries of `map` with the smallest `seen` (least recently seen), never
/// one to `keep`, and hands each to `gone`. Returns how many went.
pub fn evict_idlest<K: Ord + Clone, V>(
    map: &mut BTreeMap<K, V>,
    count: usize,
    seen: impl Fn(&V) -> u64,
    keep: impl Fn(&K, &V) -> bool,
    mut gone: impl FnMut(K, V),
) -> usize {
    if count == 0 {
        return 0;
    }
    let mut candidates: Vec<(u64, &K)> = map.iter().filter(|(k, v)| !keep(k, v)).map(|(k, v)| (seen(v), k)).collect();
    let count = count.min(candidates.len());
    if count == 0 {
        return 0;
    }
    if count < candidates.len() {
        candidates.select_nth_unstable(count - 1);
    }
    let keys: Vec<K> = candidates[..count].iter().map(|(_, k)| (*k).clone()).collect();
    for k in keys {
        if let Some(v) = map.remove(&k) {
            gone(k, v);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hash_table_that_churns_within_its_bound_keeps_its_slots() {
        let max = super::hash_capacity(1024);
        let mut map = std::collections::HashMap::with_capacity(max);
        let slots = map.capacity();
        for i in 0..100 * max {
            if map.len() == max {
                super::retain_within(&mut map, max, |k, _| k % 2 == 0 && *k > i - max / 2);
            }
            map.insert(i, i);
        }
        assert_eq!(map.capacity(), slots, "the table never grew past the slots its bound needs");
    }

    use super::*;

    #[test]
    fn evicts_the_least_recently_seen_and_spares_the_pinned() {
        let mut m: BTreeMap<u32, u64> = (0..10).map(|k| (k, 100 - u64::from(k))).collect();
        let mut gone = Vec::new();
        // Key 9 was seen least recently, then 8, 7; 9 is pinned.
        let n = evict_idlest(&mut m, 3, |v| *v, |k, _| *k == 9, |k, _| gone.push(k));
        gone.sort_unstable();
        assert_eq!((n, gone), (3, vec![6, 7, 8]));
        assert_eq!(m.len(), 7);
        assert!(m.contains_key(&9));
        // Never more than there is to evict.
        assert_eq!(evict_idlest(&mut m, 100, |v| *v, |k, _| *k == 9, |_, _| {}), 6);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![9]);
        assert_eq!(evict_idlest(&mut m, 1, |v| *v, |_, _| true, |_, _| {}), 0);
    }

    #[test]
    fn excess_leaves_an_eighth_of_room() {
        assert_eq!(excess(8, 8), 0);
        assert_eq!(excess(9, 8), 2);
        assert_eq!(excess(1001, 1000), 126);
        assert_eq!(excess(5, 0), 5);
    }
}
