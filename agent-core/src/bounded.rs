//! Bounds of the agent's tables. Every table fed by traffic has a cap in entries (and, where
//! its entries' size depends on the traffic, in bytes); past it, the entries seen least
//! recently make room, an eighth of the table at a time (amortised: one scan per eighth), and
//! are counted. A flood of spoofed MACs or addresses then replaces old strangers, not the
//! devices that keep talking.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

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

/// A hash table bounded at `max` entries that forgets the least recently used a generation at a
/// time. An entry lives in the current generation or in the previous one, and a use moves it to
/// the current one; when the current one is full (half the bound), what is left in the previous
/// one was not used for a whole generation: it is forgotten, and the current generation becomes
/// the previous one.
///
/// No entry is ever removed from a table that is still inserted into, and a full generation is
/// cleared whole, so neither table leaves tombstones, grows past its half or is copied. A bounded
/// `std` table that evicts some entries at a time does all three: each removal leaves a tombstone,
/// and once they use up its free slots the table grows to twice its slots, holding both tables
/// while it moves (25 MB at the peak of a poll for the ledger's openers, against 8.5 MB).
#[derive(Clone, Debug)]
pub struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    half: usize,
    forgotten: u64,
}

impl<K: Hash + Eq, V: Default> Generations<K, V> {
    /// At most `max` entries (rounded up to even, at least two).
    pub fn new(max: usize) -> Self {
        Self { current: HashMap::new(), previous: HashMap::new(), half: max.div_ceil(2).max(1), forgotten: 0 }
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn max(&self) -> usize {
        2 * self.half
    }

    /// Entries forgotten to stay within the bound, since the start.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Whether `key` is held (not a use: it does not move).
    pub fn contains(&self, key: &K) -> bool {
        self.current.contains_key(key) || self.previous.contains_key(key)
    }

    /// The value of `key` if it is held, moved to the current generation (a use).
    pub fn get(&mut self, key: K) -> Option<&mut V> {
        if self.contains(&key) { Some(self.get_or_default(key)) } else { None }
    }

    /// The value of `key` (the default for a key not held), moved to the current generation.
    pub fn get_or_default(&mut self, key: K) -> &mut V {
        if !self.current.contains_key(&key) {
            let value = self.previous.remove(&key).unwrap_or_default();
            if self.current.len() >= self.half {
                self.forgotten += self.previous.len() as u64;
                self.previous.clear();
                std::mem::swap(&mut self.current, &mut self.previous);
            }
            return self.current.entry(key).or_insert(value);
        }
        self.current.entry(key).or_default()
    }
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
    fn generations_forget_what_went_unused_for_a_generation_and_count_it() {
        let mut g: Generations<u32, u32> = Generations::new(4);
        for k in 0..4 {
            *g.get_or_default(k) += 1;
        }
        assert_eq!((g.len(), g.forgotten()), (4, 0));
        // 0 is used again: it moves to the current generation, and 1 is the one left behind.
        *g.get_or_default(0) += 1;
        *g.get_or_default(4) += 1;
        assert_eq!((g.len(), g.forgotten()), (4, 1));
        assert!(g.contains(&0) && !g.contains(&1) && g.contains(&4));
        assert_eq!(*g.get_or_default(0), 2, "what a kept entry counted stays");
        assert_eq!(*g.get_or_default(1), 0, "a forgotten one starts anew");
        assert!(g.len() <= g.max());
    }

    #[test]
    fn generations_churning_within_the_bound_never_grow_past_it() {
        let mut g: Generations<u64, u64> = Generations::new(hash_capacity(1024));
        let slots = |g: &Generations<u64, u64>| g.current.capacity().max(g.previous.capacity());
        for i in 0..10 * 1024 {
            *g.get_or_default(i) += 1;
            // A few long-lived keys keep being used.
            *g.get_or_default(i % 7) += 1;
        }
        assert_eq!(slots(&g), hash_capacity(1024) / 2, "each generation stays within its half");
        assert!(g.len() <= g.max());
        assert!((0..7).all(|k| g.contains(&k)), "the keys in use stayed");
        assert_eq!(g.forgotten(), 10 * 1024 - g.len() as u64, "every key but those held was forgotten once");
    }

    #[test]
    fn excess_leaves_an_eighth_of_room() {
        assert_eq!(excess(8, 8), 0);
        assert_eq!(excess(9, 8), 2);
        assert_eq!(excess(1001, 1000), 126);
        assert_eq!(excess(5, 0), 5);
    }
}
