//! Map commands aya 0.14 does not offer for hash maps:
//!
//! - BPF_MAP_LOOKUP_AND_DELETE_ELEM on per-CPU hash and LRU hash maps (Linux 5.14), which aya
//!   offers only for queues and stacks. Reading an entry and then deleting it loses whatever the
//!   program counts in between; this takes the values and removes the entry in one step, under
//!   the hash bucket's lock.
//! - BPF_MAP_LOOKUP_BATCH (Linux 5.6 for every hash map type, LRU and per-CPU ones included):
//!   a walk that copies many entries per system call, where get-next-key plus a lookup costs two
//!   system calls per entry.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `enum bpf_cmd` in uapi/linux/bpf.h.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The kernel's internal "operation not supported" (include/linux/errno.h), which `bpf()` hands
/// to userspace as is when a map type has no batch operations; libc has no name for it.
const ENOTSUPP: i32 = 524;

/// The part of `union bpf_attr` the map element commands read.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The part of `union bpf_attr` the map batch commands read (`batch` in uapi/linux/bpf.h).
#[repr(C)]
struct MapBatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room for this many entries; out: entries copied.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Bytes the kernel writes for one CPU's value in a per-CPU map: the value size rounded up to 8.
pub const fn per_cpu_stride<V>() -> usize {
    size_of::<V>().next_multiple_of(8)
}

/// Decodes one entry's per-CPU values as the kernel lays them out (one value per possible CPU at
/// a stride of [`per_cpu_stride`]) into `out`, which it clears first.
///
/// # Panics
///
/// When `bytes` is shorter than `cpus` strides.
pub fn decode_per_cpu<V: Pod>(bytes: &[u8], cpus: usize, out: &mut Vec<V>) {
    let stride = per_cpu_stride::<V>();
    assert!(bytes.len() >= cpus * stride, "{} bytes hold fewer than {cpus} per-CPU values", bytes.len());
    out.clear();
    out.extend(bytes.chunks_exact(stride).take(cpus).map(|slot| {
        // SAFETY: `slot` holds `stride` >= size_of::<V>() bytes, V is Pod (valid for any bytes),
        // and read_unaligned needs no alignment.
        unsafe { slot.as_ptr().cast::<V>().read_unaligned() }
    }));
}

/// Takes a key's values, one per possible CPU, out of a per-CPU hash map and removes the entry;
/// `Ok(None)` when the key is not in the map.
pub fn lookup_and_delete_per_cpu<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<Vec<V>>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let mut buf = vec![0u8; per_cpu_stride::<V>() * cpus];
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: buf.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix (the kernel zero-fills the rest) whose pointers
    // stay valid for the call: `key` is a whole K, and `buf` holds a stride for each possible
    // CPU, which is what the kernel writes for a per-CPU map.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_AND_DELETE_ELEM, &raw const attr, size_of::<MapElemAttr>() as u32)
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    let mut values = Vec::with_capacity(cpus);
    decode_per_cpu(&buf, cpus, &mut values);
    Ok(Some(values))
}

/// No bucket of a hash map holds more entries than the map, and no map here holds a million.
const MAX_BATCH_ENTRIES: usize = 1 << 20;

/// What one batched walk took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchWalk {
    /// Entries handed to the callback.
    pub entries: usize,
    /// BPF_MAP_LOOKUP_BATCH calls, retries after ENOSPC included.
    pub calls: usize,
    /// Entries asked for in the last call (more than at the start when a bucket did not fit).
    pub batch_entries: usize,
}

/// Buffers for walking per-CPU hash maps with BPF_MAP_LOOKUP_BATCH, kept from walk to walk.
#[derive(Debug)]
pub struct BatchReader {
    /// Entries asked for per call; grows when one hash bucket holds more (ENOSPC).
    entries: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl BatchReader {
    /// A reader that asks for up to `entries` entries per call (at least 1).
    pub fn new(entries: usize) -> Self {
        Self { entries: entries.max(1), keys: Vec::new(), values: Vec::new() }
    }

    /// Entries asked for per call (grown past the start when a bucket did not fit).
    pub fn batch_entries(&self) -> usize {
        self.entries
    }

    /// Calls `f` with every key of a per-CPU hash map and its values, one per possible CPU.
    /// `Ok(None)` when the kernel has no batch lookup for this map (EINVAL from a kernel without
    /// the command, ENOTSUPP from a map type without it) before any entry was read; the caller
    /// then walks the map with get-next-key.
    ///
    /// The kernel copies whole hash buckets under each bucket's lock and resumes at a bucket
    /// index, so the walk never restarts and returns a key at most once (get-next-key restarts
    /// from the first bucket when the key under its cursor was removed). Entries inserted into a
    /// bucket already passed are not seen until the next walk.
    pub fn for_each_per_cpu<K: Pod, V: Pod>(
        &mut self,
        map: BorrowedFd<'_>,
        mut f: impl FnMut(K, &[V]),
    ) -> io::Result<Option<BatchWalk>> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let key_size = size_of::<K>();
        let value_size = per_cpu_stride::<V>() * cpus;
        // The token is a bucket index (u32) for hash maps; 8 bytes leave room for any map type's.
        let mut token = [0u64; 1];
        let mut next = [0u64; 1];
        let mut started = false;
        let mut walk = BatchWalk { entries: 0, calls: 0, batch_entries: self.entries };
        let mut values = Vec::with_capacity(cpus);
        loop {
            self.keys.resize(self.entries * key_size, 0);
            self.values.resize(self.entries * value_size, 0);
            let mut attr = MapBatchAttr {
                in_batch: if started { token.as_ptr() as u64 } else { 0 },
                out_batch: next.as_mut_ptr() as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: u32::try_from(self.entries).unwrap_or(u32::MAX),
                map_fd: map.as_raw_fd() as u32,
                elem_flags: 0,
                flags: 0,
            };
            walk.calls += 1;
            walk.batch_entries = self.entries;
            // SAFETY: `attr` is a valid bpf_attr prefix (the kernel zero-fills the rest). Its
            // pointers stay valid for the call: the tokens are 8 bytes (the kernel reads and
            // writes a u32 for hash maps), `keys` holds `count` keys and `values` `count` values
            // of a stride per possible CPU, which is what the kernel writes at most. The kernel
            // writes the copied count back into `attr`, which is ours and mutable.
            let ret = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<MapBatchAttr>() as u32)
            };
            let err = (ret < 0).then(io::Error::last_os_error);
            let errno = err.as_ref().and_then(io::Error::raw_os_error);
            match errno {
                None | Some(libc::ENOENT) => {}
                // Not one bucket fits: ask for twice as many and read the same bucket again.
                Some(libc::ENOSPC) if attr.count == 0 && self.entries < MAX_BATCH_ENTRIES => {
                    self.entries = (self.entries * 2).min(MAX_BATCH_ENTRIES);
                    continue;
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if walk.entries == 0 && !started => {
                    return Ok(None);
                }
                _ => return Err(err.unwrap_or_else(|| io::Error::other("bpf() failed"))),
            }
            let count = (attr.count as usize).min(self.entries);
            for i in 0..count {
                // SAFETY: entry i's key lies within `keys` (count <= entries); K is Pod, valid
                // for any bytes; read_unaligned needs no alignment (keys are packed).
                let key = unsafe { self.keys.as_ptr().add(i * key_size).cast::<K>().read_unaligned() };
                decode_per_cpu(&self.values[i * value_size..(i + 1) * value_size], cpus, &mut values);
                f(key, &values);
            }
            walk.entries += count;
            // ENOENT: the walk is over; the last entries came with it.
            if errno == Some(libc::ENOENT) {
                return Ok(Some(walk));
            }
            token = next;
            started = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of_u32s(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn per_cpu_values_sit_at_a_stride_rounded_up_to_8_bytes() {
        assert_eq!(per_cpu_stride::<[u32; 3]>(), 16);
        assert_eq!(per_cpu_stride::<u64>(), 8);
        assert_eq!(per_cpu_stride::<[u8; 1]>(), 8);
        assert_eq!(per_cpu_stride::<[u64; 5]>(), 40);
        // Three CPUs of a 12-byte value: 4 bytes of padding after each (filled with garbage here:
        // the kernel's are zeros, but they must not be read either way).
        let bytes = bytes_of_u32s(&[1, 2, 3, 0xdead, 4, 5, 6, 0xbeef, 7, 8, 9, 0xf00d]);
        let mut out: Vec<[u32; 3]> = vec![[42; 3]];
        decode_per_cpu(&bytes, 3, &mut out);
        assert_eq!(out, [[1, 2, 3], [4, 5, 6], [7, 8, 9]]);
        // Fewer CPUs than the buffer holds: only those, from the start.
        decode_per_cpu(&bytes, 2, &mut out);
        assert_eq!(out, [[1, 2, 3], [4, 5, 6]]);
    }

    #[test]
    fn values_of_a_multiple_of_8_bytes_are_packed() {
        let words: Vec<u64> = (1..=6).collect();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out: Vec<[u64; 2]> = Vec::new();
        // An unaligned start: the decoder must not care.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        decode_per_cpu(&shifted[1..], 3, &mut out);
        assert_eq!(out, [[1, 2], [3, 4], [5, 6]]);
    }

    #[test]
    #[should_panic(expected = "fewer than 3 per-CPU values")]
    fn a_short_buffer_is_refused() {
        let mut out: Vec<[u32; 3]> = Vec::new();
        decode_per_cpu(&[0u8; 40], 3, &mut out);
    }
}
