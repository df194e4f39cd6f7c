//! iotwatch's kernel side: count every frame on the ports of a bridge, exactly once, and never
//! drop, delay or alter one. On any error the frame passes and the error is counted in `STATS`.
#![no_std]
#![no_main]

mod account;
mod maps;
mod packet;
mod parse;
mod replay;
mod sample;

use agent_common::{
    REPLAY_MODE, Stat,
    sample::direction,
    wire::verdict::{TC_PASS, XDP_PASS},
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::generated::bpf_check_mtu,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    account::{Meta, account},
    maps::{STATS, bump},
};

/// Set to [`REPLAY_MODE`] by the loader for BPF_PROG_TEST_RUN replays: then the `__sk_buff`
/// context carries the original wire length, segment count and capture time (see agent-common).
#[unsafe(no_mangle)]
static REPLAY: u8 = 0;

#[inline(always)]
fn replay_mode() -> bool {
    // SAFETY: a read-only global set at load; volatile so the compiler keeps the read.
    unsafe { core::ptr::read_volatile(&REPLAY) == REPLAY_MODE }
}

/// TC program for the ingress of every bridge port and the egress of the bridge device.
/// Returns `TC_ACT_UNSPEC` (tcx: next) so that other TC users on the port still run: `TC_ACT_OK`
/// would end the chain and silently switch off someone's shaping filters.
#[classifier]
pub fn iotwatch_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run; the verifier rewrites
    // these field reads into reads of the socket buffer.
    let (gso_segs, gso_size, vlan_present, wire_len, tstamp, ifindex, ingress_ifindex) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.gso_segs, skb.gso_size, skb.vlan_present, skb.wire_len, skb.tstamp, skb.ifindex, skb.ingress_ifindex)
    };
    // Frames the host sends have no ingress interface.
    let direction = if ingress_ifindex == 0 { direction::EGRESS } else { direction::INGRESS };
    let replay = replay_mode();
    let len = u64::from(ctx.len());
    let meta = if replay {
        Meta {
            len: len.max(u64::from(wire_len)),
            data_len: len,
            ifindex,
            direction: direction::INGRESS,
            segments: u64::from(gso_segs),
            gso_size: u64::from(gso_size),
            outer_tag_in_meta: false,
            now_ns: tstamp,
            replay,
            batch_index: 0,
        }
    } else {
        Meta {
            len,
            data_len: len,
            ifindex,
            direction,
            segments: u64::from(gso_segs),
            gso_size: u64::from(gso_size),
            // The kernel moved the outer tag into metadata before TC ingress.
            outer_tag_in_meta: vlan_present != 0,
            // Read in `account`, from this CPU's clock cache.
            now_ns: 0,
            replay,
            batch_index: 0,
        }
    };
    account(&ctx, &meta);
    TC_PASS
}

/// XDP program, for ports whose driver has native XDP (`--attach xdp`). Sees one wire frame at a
/// time with every tag still in the data. Live only: replay has its own entry ([`iotwatch_replay`]).
#[xdp]
pub fn iotwatch_xdp(ctx: XdpContext) -> u32 {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    let meta = Meta {
        len,
        data_len: len,
        ifindex: ctx.ingress_ifindex() as u32,
        direction: direction::INGRESS,
        segments: 1,
        gso_size: 0,
        outer_tag_in_meta: false,
        // Read in `account`, from this CPU's clock cache.
        now_ns: 0,
        replay: false,
        batch_index: 0,
    };
    account(&ctx, &meta);
    if len > OVERSIZED_FLOOR {
        count_if_oversized(&ctx);
    }
    XDP_PASS
}

/// Replay's programs: the entry takes a [`agent_common::ReplayBatch`] (BPF_PROG_TEST_RUN's
/// data), the frame program runs its frames one per run, through the same accounting as live
/// frames (see `replay`).
#[xdp]
pub fn iotwatch_replay(ctx: XdpContext) -> u32 {
    replay::start(&ctx)
}

#[xdp]
pub fn iotwatch_replay_frame(ctx: XdpContext) -> u32 {
    replay::frame(&ctx)
}

/// Room for the VLAN tags the parser reads (four), which the MTU does not include.
const TAGS_LEN: u32 = 16;
/// No port's frame is longer than this unless its MTU is above 1500: the one comparison every
/// frame pays. Longer ones ask the kernel for the port's MTU.
const OVERSIZED_FLOOR: u64 = 1500 + 14 + TAGS_LEN as u64;

/// Generic XDP runs after GRO and is handed a veth peer's TSO buffers as they are: a buffer
/// longer than the port's MTU allows is such an aggregate, counted as one frame. The agent
/// refuses xdp-skb on ports whose offloads it can read; this counts what it could not see.
#[inline(never)]
fn count_if_oversized(ctx: &XdpContext) {
    // 0: compare the buffer's own length (a non-zero value would stand for an L3 length).
    let mut mtu: u32 = 0;
    // SAFETY: the helper reads this program's context and writes the MTU to the stack slot.
    let ret = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu, -(TAGS_LEN as i32), 0) };
    // BPF_MTU_CHK_RET_FRAG_NEEDED: longer than MTU + link header + the tags' room.
    if ret == 1
        && let Some(st) = STATS.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot; account() is done with it and programs do not nest on a CPU.
        bump(unsafe { &mut *st }, Stat::XdpOversized, 1);
    }
}

// The contract's verdicts are the kernel's.
const _: () = assert!(TC_PASS == TC_ACT_UNSPEC && XDP_PASS == xdp_action::XDP_PASS);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible, as the helpers the program calls require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
