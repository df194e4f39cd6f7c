//! One bounds-checked way to read the frame, shared by the TC and XDP programs.
//!
//! Reads go straight to the packet data when the bytes are in the linear part the program can
//! address (every header of every frame in practice), and through one bounded helper call
//! otherwise: a socket buffer may keep headers in page fragments, which only
//! `bpf_skb_load_bytes` can reach.

use core::mem::MaybeUninit;

use agent_common::sample::SAMPLE_MAX;
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

/// Bytes a prefix copy may write (see [`Packet::copy_prefix`]): a power of two >= SAMPLE_MAX.
pub const COPY_ROOM: usize = 2048;
const _: () = assert!(COPY_ROOM.is_power_of_two() && COPY_ROOM >= SAMPLE_MAX);

/// Offsets the program reads directly lie below this (the parser stops before, see
/// `parse::MAX_L4_OFFSET`); a power of two, to be a mask.
const DIRECT_WINDOW: usize = 1024;

pub trait Packet {
    /// Whether bytes may lie beyond the linear part (socket buffers); an XDP program without
    /// fragment support sees the whole frame there.
    const NONLINEAR: bool;

    /// Start and end of the bytes the program can address directly.
    fn linear(&self) -> (usize, usize);

    /// Copies `len` bytes from `offset` to `dst` with one helper call.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    unsafe fn load_bytes(&self, offset: usize, dst: *mut u8, len: usize) -> bool;

    /// A `T` read from `offset` bytes into the frame (from its Ethernet header); `None` when the
    /// frame is shorter.
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset >= DIRECT_WINDOW {
            return None;
        }
        // The verifier takes a packet pointer plus a variable offset only when the offset has a
        // small bound it can see (one read back from map memory has none). The mask gives it one;
        // the volatile read keeps LLVM from dropping the mask as a no-op after the test above.
        // SAFETY: reading a local.
        let offset = unsafe { core::ptr::read_volatile(&offset) } & (DIRECT_WINDOW - 1);
        let (start, end) = self.linear();
        if start + offset + size_of::<T>() <= end {
            // SAFETY: the bytes are within the packet's linear data, checked just above.
            return Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) });
        }
        if !Self::NONLINEAR {
            return None;
        }
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: `out` holds size_of::<T>() bytes; on success the helper wrote all of them.
        unsafe { self.load_bytes(offset, out.as_mut_ptr().cast(), size_of::<T>()).then(|| out.assume_init()) }
    }

    /// Copies the frame's first `len` bytes (1 to SAMPLE_MAX) to `dst` in one helper call.
    ///
    /// # Safety
    /// `dst` must be valid for COPY_ROOM bytes of writes.
    #[inline(always)]
    unsafe fn copy_prefix(&self, len: usize, dst: *mut u8) -> bool {
        if len == 0 || len > SAMPLE_MAX {
            return false;
        }
        // 6.1's verifier wants a length it can see is at least 1, and learns nothing from a
        // `!= 0` test; LLVM folds away any arithmetic that would show it. So the length goes
        // through a volatile read, then (len - 1) % COPY_ROOM + 1: the same number, bounded to
        // [1, COPY_ROOM] in a way the verifier follows.
        // SAFETY: reading a local.
        let opaque = unsafe { core::ptr::read_volatile(&len) };
        let len = (opaque.wrapping_sub(1) & (COPY_ROOM - 1)) + 1;
        // SAFETY: len <= COPY_ROOM, which the caller vouches dst holds.
        unsafe { self.load_bytes(0, dst, len) }
    }
}

impl Packet for TcContext {
    const NONLINEAR: bool = true;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    unsafe fn load_bytes(&self, offset: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the caller vouches for dst; the helper checks the packet side.
        unsafe { bpf_skb_load_bytes(self.as_ptr().cast(), offset as u32, dst.cast(), len as u32) == 0 }
    }
}

impl Packet for XdpContext {
    const NONLINEAR: bool = false;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    unsafe fn load_bytes(&self, offset: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the caller vouches for dst; the helper checks the packet side.
        unsafe { bpf_xdp_load_bytes(self.as_ptr().cast(), offset as u32, dst.cast(), len as u32) == 0 }
    }
}
