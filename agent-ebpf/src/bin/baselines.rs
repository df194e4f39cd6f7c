//! Baselines for the kernel benchmark: bare pass programs and a minimal per-MAC counter (two
//! per-CPU hash updates, source and destination MAC), as XDP and as TC.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK, xdp_action::XDP_PASS},
    macros::{classifier, map, xdp},
    maps::PerCpuHashMap,
    programs::{TcContext, XdpContext},
};

#[map]
static MIN_MACS: PerCpuHashMap<[u8; 8], [u64; 2]> = PerCpuHashMap::with_max_entries(1024, 0);

#[xdp]
pub fn bare_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[classifier]
pub fn bare_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[inline(always)]
fn count(mac: [u8; 6], slot: usize, len: u64) {
    let key = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0];
    match MIN_MACS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        Some(v) => unsafe { (*v)[slot & 1] += len },
        None => {
            let mut v = [0u64; 2];
            v[slot & 1] = len;
            let _ = MIN_MACS.insert(key, v, u64::from(BPF_NOEXIST));
        }
    }
}

#[xdp]
pub fn min_mac_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 <= end {
        // SAFETY: bounds checked just above.
        let (dst, src) = unsafe { (*(start as *const [u8; 6]), *((start + 6) as *const [u8; 6])) };
        let len = (end - start) as u64;
        count(src, 0, len);
        count(dst, 1, len);
    }
    XDP_PASS
}

#[classifier]
pub fn min_mac_tc(ctx: TcContext) -> i32 {
    if let (Ok(dst), Ok(src)) = (ctx.load::<[u8; 6]>(0), ctx.load::<[u8; 6]>(6)) {
        let len = u64::from(ctx.len());
        count(src, 0, len);
        count(dst, 1, len);
    }
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
