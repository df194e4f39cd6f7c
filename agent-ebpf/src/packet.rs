//! One bounds-checked way to read the frame, shared by the TC and XDP programs.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

pub trait Packet {
    /// Copies a `T` from `offset` bytes into the frame (from its Ethernet header); `None` when the
    /// frame is shorter. Helper-based, so it works on non-linear socket buffers and any offset.
    fn load<T: Copy>(&self, offset: usize) -> Option<T>;

    /// Copies `N` bytes (a constant, as the verifier wants) from `offset` to `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for `N` bytes of writes.
    unsafe fn copy<const N: usize>(&self, offset: usize, dst: *mut u8) -> bool;
}

impl Packet for TcContext {
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        TcContext::load(self, offset).ok()
    }

    #[inline(always)]
    unsafe fn copy<const N: usize>(&self, offset: usize, dst: *mut u8) -> bool {
        // SAFETY: the caller vouches for dst; the helper checks the packet side.
        unsafe { bpf_skb_load_bytes(self.as_ptr().cast(), offset as u32, dst.cast(), N as u32) == 0 }
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes into `out` or fails.
        let ret = unsafe {
            bpf_xdp_load_bytes(self.as_ptr().cast(), offset as u32, out.as_mut_ptr().cast(), size_of::<T>() as u32)
        };
        // SAFETY: ret == 0 means all bytes were written.
        (ret == 0).then(|| unsafe { out.assume_init() })
    }

    #[inline(always)]
    unsafe fn copy<const N: usize>(&self, offset: usize, dst: *mut u8) -> bool {
        // SAFETY: the caller vouches for dst; the helper checks the packet side.
        unsafe { bpf_xdp_load_bytes(self.as_ptr().cast(), offset as u32, dst.cast(), N as u32) == 0 }
    }
}
