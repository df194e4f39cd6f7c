//! Bounded label sets. Every label value that comes from traffic (MACs, ports, later names)
//! goes through a budget: the first `cap` keys get their own series, later ones share `other`,
//! and every key folded into `other` is counted once.

use std::{collections::HashSet, hash::Hash};

pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct LabelBudget<K> {
    cap: usize,
    admitted: HashSet<K>,
    folded: HashSet<K>,
}

impl<K: Eq + Hash + Clone> LabelBudget<K> {
    pub fn new(cap: usize) -> Self {
        Self { cap, admitted: HashSet::new(), folded: HashSet::new() }
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
        self.folded.insert(key.clone());
        false
    }

    /// Distinct keys folded into `other` so far.
    pub fn overflow(&self) -> u64 {
        self.folded.len() as u64
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
