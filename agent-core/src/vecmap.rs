//! [`VecMap`]: a small ordered map in one sorted `Vec`, for the few entries each device holds
//! (its scopes, service ports, protocols, addresses). A `BTreeMap` allocates a node of eleven
//! slots for its first entry: at 10k devices, four such maps took 12 MB where these take 1.5.

use std::{borrow::Borrow, ops::Index};

/// A map ordered by key, in a `Vec` sorted by key. Lookups are binary searches and an insertion
/// moves the entries after it: meant for tens of entries, not thousands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// The value of `key`, inserted as `V::default()` if absent.
    pub fn or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, key, V::default());
                i
            }
        };
        &mut self.0[i].1
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.insert_at(i, key, value);
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Grows by one slot at a time while small (most devices hold one to four entries of each
    /// map), by half beyond.
    fn insert_at(&mut self, i: usize, key: K, value: V) {
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact(if self.0.len() < 8 { 1 } else { self.0.len() / 2 });
        }
        self.0.insert(i, (key, value));
    }

    pub fn iter(&self) -> Iter<'_, K, V> {
        self.0.iter().map(pair as fn(&(K, V)) -> (&K, &V))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

fn pair<K, V>((k, v): &(K, V)) -> (&K, &V) {
    (k, v)
}

/// [`VecMap::iter`]: entries in key order, as a `BTreeMap` gives them.
pub type Iter<'a, K, V> = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

impl<'a, K: Ord, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// The last value of a key given twice wins, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: of equal keys, the later stays last, and `dedup_by` keeps the first of a run.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|a, b| a.0 == b.0);
        entries.reverse();
        entries.shrink_to_fit();
        Self(entries)
    }
}

/// As a map, in key order: the same JSON as a `BTreeMap`'s.
impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for VecMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> Index<&Q> for VecMap<K, V> {
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key in the VecMap")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn behaves_as_a_btreemap_whatever_the_order_of_inserts_and_removals() {
        let mut v: VecMap<u16, u64> = VecMap::default();
        let mut b: BTreeMap<u16, u64> = BTreeMap::new();
        // A fixed pseudo-random sequence of keys: inserts, updates and removals mixed.
        let mut x: u32 = 12_345;
        for step in 0..5_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (x >> 16) as u16 % 64;
            match step % 5 {
                0 => assert_eq!(v.remove(&key), b.remove(&key)),
                1 => assert_eq!(v.insert(key, step), b.insert(key, step)),
                _ => {
                    *v.or_default(key) += step;
                    *b.entry(key).or_default() += step;
                }
            }
            assert_eq!(v.get(&key), b.get(&key));
        }
        assert_eq!(v.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
        assert_eq!(v.len(), b.len());
        let collected: VecMap<u16, u64> = b.clone().into_iter().chain([(3, 7), (3, 9)]).collect();
        b.insert(3, 9);
        assert_eq!(
            collected.into_iter().collect::<Vec<_>>(),
            b.into_iter().collect::<Vec<_>>(),
            "the last of a key wins"
        );
    }

    #[test]
    fn serialises_as_the_btreemap_of_its_entries() {
        let entries = [("lan", 2u64), ("internet", 1), ("multicast", 3)];
        let v: VecMap<&str, u64> = entries.into_iter().collect();
        let b: BTreeMap<&str, u64> = entries.into_iter().collect();
        assert_eq!(serde_json::to_string(&v).unwrap(), serde_json::to_string(&b).unwrap());
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"internet":1,"lan":2,"multicast":3}"#);
    }

    #[test]
    fn a_small_map_holds_no_more_slots_than_entries() {
        let mut v: VecMap<u8, u64> = VecMap::default();
        for k in 0..8 {
            v.or_default(k);
            assert_eq!(v.0.capacity(), v.len());
        }
        let strs: VecMap<&'static str, u8> = [("udp", 1), ("tcp", 2)].into_iter().collect();
        assert_eq!((strs["tcp"], strs["udp"]), (2, 1), "looked up by a borrowed key");
    }
}
