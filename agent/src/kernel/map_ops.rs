//! BPF_MAP_LOOKUP_AND_DELETE_ELEM on per-CPU hash and LRU hash maps (Linux 5.14), which aya 0.14
//! offers only for queues and stacks. Reading an entry and then deleting it loses whatever the
//! program counts in between; this takes the values and removes the entry in one step, under the
//! hash bucket's lock.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `enum bpf_cmd` in uapi/linux/bpf.h.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The part of `union bpf_attr` the map element commands read.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Takes a key's values, one per possible CPU, out of a per-CPU hash map and removes the entry;
/// `Ok(None)` when the key is not in the map.
pub fn lookup_and_delete_per_cpu<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<Vec<V>>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel writes each CPU's value at a stride of the value size rounded up to 8 bytes.
    let stride = size_of::<V>().next_multiple_of(8);
    let mut buf = vec![0u64; stride / 8 * cpus];
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: buf.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix (the kernel zero-fills the rest) whose pointers
    // stay valid for the call: `key` is a whole K, and `buf` holds `stride` bytes for each
    // possible CPU, which is what the kernel writes for a per-CPU map.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_AND_DELETE_ELEM, &raw const attr, size_of::<MapElemAttr>() as u32)
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    let bytes = buf.as_ptr().cast::<u8>();
    let values = (0..cpus)
        // SAFETY: each read is within `buf` (cpus * stride bytes) and V is Pod, valid for any
        // bytes; read_unaligned needs no alignment.
        .map(|cpu| unsafe { bytes.add(cpu * stride).cast::<V>().read_unaligned() })
        .collect();
    Ok(Some(values))
}
