//! Replay's programs: a batch of captured frames per BPF_PROG_TEST_RUN (layout in agent-common's
//! [`ReplayBatch`]). The entry reads the batch's header and tail-calls the frame program, which
//! narrows the data to one frame, accounts for it exactly as live, and tail-calls itself for the
//! next: the verifier walks one frame's path once, and the system call, which costs ten times
//! what the program does with a frame, is paid once per batch.
//!
//! The frames lie last first, each followed by its [`ReplayMeta`], so that the data can always be
//! narrowed to the next frame: moving the data's start back over bytes already passed and cutting
//! its end short are the moves XDP allows without touching the bytes (growing the end would
//! zero them; XDP metadata would be moved over the bytes before the data at every step).

use agent_common::{REPLAY_BATCH_FRAMES, ReplayBatch, ReplayMeta, sample::direction};
use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};

use crate::{
    account::{Meta, account},
    maps::{CPU_STATE, REPLAY_NEXT},
    packet::Packet,
};

const META: usize = size_of::<ReplayMeta>();

/// The frame the data was narrowed to. Its bounds are read from the context at every header, as
/// the live program reads them, through a pointer LLVM must load again each time: otherwise it
/// keeps the address of the context's `data_end` field around, which the verifier refuses
/// ("dereference of modified ctx ptr").
struct Narrowed<'a> {
    ctx: &'a XdpContext,
}

impl Packet for Narrowed<'_> {
    const NONLINEAR: bool = false;

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        // SAFETY: reading a local; the context is valid for the whole run.
        unsafe {
            let md = core::ptr::read_volatile(&self.ctx.ctx);
            ((*md).data as usize, (*md).data_end as usize)
        }
    }

    #[inline(always)]
    unsafe fn load_bytes(&self, offset: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the caller vouches for dst.
        unsafe { self.ctx.load_bytes(offset, dst, len) }
    }
}

/// Moves the data's start by `delta` bytes; false if the kernel refused.
#[inline(always)]
fn move_start(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: this program's context; the helper checks the bounds.
    unsafe { bpf_xdp_adjust_head(ctx.as_ptr().cast(), delta) == 0 }
}

/// Cuts `by` bytes off the data's end; false if the kernel refused.
#[inline(always)]
fn cut_end(ctx: &XdpContext, by: usize) -> bool {
    // SAFETY: as move_start.
    unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), -(by as i32)) == 0 }
}

#[inline(always)]
fn data_len(ctx: &XdpContext) -> usize {
    ctx.data_end().saturating_sub(ctx.data())
}

/// The entry: notes the batch on this CPU, moves the data's start to the first frame's metadata
/// (the last bytes) and hands over to the frame program. Returns the frames that ran, or for a
/// batch of no frames the length of the data it can reach.
#[inline(always)]
pub fn start(ctx: &XdpContext) -> u32 {
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else { return 0 };
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + size_of::<ReplayBatch>() > end {
        return 0;
    }
    // SAFETY: within the data, checked just above.
    let batch = unsafe { core::ptr::read_unaligned(start as *const ReplayBatch) };
    // SAFETY: this CPU's slot; network programs do not nest on a CPU.
    unsafe {
        (*cpu).batch_frames = batch.frames.min(REPLAY_BATCH_FRAMES as u32);
        (*cpu).batch_next = 0;
    }
    let len = data_len(ctx);
    if batch.frames == 0 {
        // A probe: how much of the data the program can reach (the rest went to fragments).
        return len as u32;
    }
    if len < size_of::<ReplayBatch>() + META || !move_start(ctx, (len - META) as i32) {
        return 0;
    }
    // SAFETY: this program's context; on success the call does not return.
    unsafe { REPLAY_NEXT.tail_call(ctx, 0) };
    0
}

/// Runs the batch's next frame (its metadata at the data's start) and tail-calls itself for the
/// one after. Returns how many of the batch's frames have run: all of them, unless the data or a
/// tail call failed.
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> u32 {
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's slot, see `start`. `account` takes it again below, after these reads.
    let (index, frames) = unsafe { ((*cpu).batch_next, (*cpu).batch_frames) };
    if index >= frames {
        return index;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + META > end {
        return index;
    }
    // SAFETY: within the data, checked just above.
    let meta = unsafe { core::ptr::read_unaligned(start as *const ReplayMeta) };
    let frame_len = meta.data_len as usize;
    // Back to the frame's start, then its end: the data is the frame, as a port hands it over.
    if !move_start(ctx, -(frame_len as i32)) {
        return index;
    }
    let len = data_len(ctx);
    if len < frame_len || !cut_end(ctx, len - frame_len) {
        return index;
    }
    // SAFETY: as above.
    unsafe { (*cpu).batch_next = index + 1 };
    let m = Meta {
        len: u64::from(meta.wire_len.max(meta.data_len)),
        data_len: frame_len as u64,
        ifindex: ctx.ingress_ifindex() as u32,
        direction: direction::INGRESS,
        segments: 1,
        gso_size: 0,
        outer_tag_in_meta: false,
        now_ns: meta.tstamp_ns,
        replay: true,
        batch_index: index,
    };
    account(&Narrowed { ctx }, &m);
    // The next frame's metadata lies just before this frame.
    if index + 1 < frames && move_start(ctx, -(META as i32)) {
        // SAFETY: this program's context; on success the call does not return.
        unsafe { REPLAY_NEXT.tail_call(ctx, 0) };
    }
    index + 1
}
