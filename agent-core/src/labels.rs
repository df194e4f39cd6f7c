//! Bounded label sets. Every label value that comes from traffic (MACs, ports, later names)
//! goes through a budget: the first `cap` keys get their own series, later ones share `other`,
//! and every key folded into `other` is counted once (exactly up to [`EXACT_FOLDED`] keys, then
//! estimated in fixed memory: a flood of spoofed MACs must not grow the count's own memory).

use std::{
    collections::HashSet,
    hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher, Hash},
};

pub const OTHER: &str = "other";

/// Folded keys counted exactly (their hashes kept); past it, a HyperLogLog sketch estimates.
pub const EXACT_FOLDED: usize = 4096;
/// Registers of the sketch: 2^10, 1 KiB, a standard error of 1.04/sqrt(1024), about 3%.
const SKETCH_BITS: u32 = 10;
const REGISTERS: usize = 1 << SKETCH_BITS;

/// Distinct 64-bit hashes: exact while few, then a HyperLogLog sketch (Flajolet et al. 2007).
#[derive(Debug)]
enum Distinct {
    Exact(HashSet<u64>),
    Sketch(Box<[u8; REGISTERS]>),
}

impl Distinct {
    fn insert(&mut self, h: u64) {
        match self {
            Distinct::Exact(set) => {
                set.insert(h);
                if set.len() > EXACT_FOLDED {
                    let mut regs = Box::new([0u8; REGISTERS]);
                    for h in set.iter() {
                        observe(&mut regs, *h);
                    }
                    *self = Distinct::Sketch(regs);
                }
            }
            Distinct::Sketch(regs) => observe(regs, h),
        }
    }

    fn count(&self) -> u64 {
        match self {
            Distinct::Exact(set) => set.len() as u64,
            Distinct::Sketch(regs) => {
                let m = REGISTERS as f64;
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let raw = alpha * m * m / regs.iter().map(|r| 2f64.powi(-i32::from(*r))).sum::<f64>();
                let zeros = regs.iter().filter(|r| **r == 0).count();
                let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
                // It only replaced an exact count above EXACT_FOLDED.
                (estimate.round() as u64).max(EXACT_FOLDED as u64 + 1)
            }
        }
    }
}

fn observe(regs: &mut [u8; REGISTERS], h: u64) {
    let index = (h >> (64 - SKETCH_BITS)) as usize;
    let rest = h << SKETCH_BITS;
    let rank = (rest.leading_zeros() + 1).min(64 - SKETCH_BITS + 1) as u8;
    regs[index] = regs[index].max(rank);
}

#[derive(Debug)]
pub struct LabelBudget<K> {
    cap: usize,
    admitted: HashSet<K>,
    folded: Distinct,
}

impl<K: Eq + Hash + Clone> LabelBudget<K> {
    pub fn new(cap: usize) -> Self {
        Self { cap, admitted: HashSet::new(), folded: Distinct::Exact(HashSet::new()) }
    }

    /// Whether `key` has (or now gets) a series of its own. Sticky: once admitted, always admitted,
    /// so counters stay monotonic.
    pub fn admit(&mut self, key: &K) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted.len() < self.cap {
            self.admitted.insert(key.clone());
            return true;
        }
        // A fixed hasher: the same key always makes the same hash, across budgets and runs.
        self.folded.insert(BuildHasherDefault::<DefaultHasher>::default().hash_one(key));
        false
    }

    /// The keys with series of their own.
    pub fn admitted(&self) -> impl Iterator<Item = &K> {
        self.admitted.iter()
    }

    /// Distinct keys folded into `other` so far (estimated past [`EXACT_FOLDED`]).
    pub fn overflow(&self) -> u64 {
        self.folded.count()
    }
}

/// Makes text safe and short enough for a label value: control characters become `?`, and it is
/// cut at `max` characters. The text format's own escaping (`\`, `"`, newline) is the encoder's.
pub fn sanitize(value: &str, max: usize) -> String {
    value.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_cap_then_folds_and_counts_distinct() {
        let mut b = LabelBudget::new(2);
        assert!(b.admit(&1));
        assert!(b.admit(&2));
        assert!(!b.admit(&3));
        assert!(!b.admit(&3));
        assert!(!b.admit(&4));
        assert!(b.admit(&1), "admitted keys stay admitted");
        assert_eq!(b.overflow(), 2);
    }

    #[test]
    fn a_flood_of_keys_is_counted_in_fixed_memory_within_a_few_percent() {
        let mut b = LabelBudget::new(1);
        let mut last = 0;
        for n in 0..200_000u64 {
            b.admit(&n);
            // Repeats count once.
            b.admit(&(n / 2));
            if n % 10_000 == 0 {
                assert!(b.overflow() + 50 >= last, "roughly monotonic: {} after {last}", b.overflow());
                last = b.overflow();
            }
            if n == EXACT_FOLDED as u64 {
                assert_eq!(b.overflow(), EXACT_FOLDED as u64, "exact up to the switch");
            }
        }
        assert!(matches!(b.folded, Distinct::Sketch(_)), "the exact set gave way to the sketch");
        let error = (b.overflow() as f64 - 199_999.0).abs() / 199_999.0;
        assert!(error < 0.1, "estimate {} for 199,999 (error {error:.3})", b.overflow());
    }

    #[test]
    fn zero_cap_folds_everything() {
        let mut b = LabelBudget::new(0);
        assert!(!b.admit(&"a"));
        assert_eq!(b.overflow(), 1);
    }

    #[test]
    fn sanitizes_hostile_text() {
        assert_eq!(sanitize("cam\nera\u{7}", 64), "cam?era?");
        assert_eq!(sanitize("ééééé", 3), "ééé");
        assert_eq!(sanitize("quote\"back\\", 64), "quote\"back\\");
    }
}
