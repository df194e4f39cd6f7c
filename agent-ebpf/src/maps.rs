//! The maps of the contract in agent-common; sizes are defaults the loader may override.

use agent_common::{
    ConvCounters, ConvKey, DEFAULT_MAX_CONVERSATIONS, DEFAULT_MAX_MACS, DeviceCounters, MacKey, ProgramStats,
    sample::{DEFAULT_RING_BYTES, SAMPLE_MAX, Sample, TokenBucket},
};
use aya_ebpf::{
    macros::map,
    maps::{LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};

use crate::{packet::COPY_ROOM, parse::Frame};

#[map]
pub static DEVICE_STATS: PerCpuHashMap<MacKey, DeviceCounters> = PerCpuHashMap::with_max_entries(DEFAULT_MAX_MACS, 0);

#[map]
pub static CONVERSATIONS: LruPerCpuHashMap<ConvKey, ConvCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_MAX_CONVERSATIONS, 0);

#[map]
pub static STATS: PerCpuArray<ProgramStats> = PerCpuArray::with_max_entries(1, 0);

/// Replay's frame program, which replay's entry and the frame program itself call for a batch's
/// next frame (see `replay`).
#[map]
pub static REPLAY_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// This CPU's working state, internal to the program (the agent never reads it).
#[repr(C)]
pub struct CpuState {
    /// The frame being parsed: see `account` for why it is not on the stack.
    pub frame: Frame,
    /// The sample being built, before it is copied to the ring at the size it needs; with room
    /// behind it for what `Packet::copy_prefix` may write.
    pub sample: Sample,
    pub _room: [u8; COPY_ROOM - SAMPLE_MAX],
    /// The CPU's sample budgets: all sources, and sources the program has just met.
    pub budget: TokenBucket,
    pub new_sources: TokenBucket,
    /// The coarse clock as last read, and the tick it was read in (see `account::coarse_ns`).
    pub clock_tick: u64,
    pub clock_ns: u64,
    /// Replay: the frames of the batch this CPU is running, and its next frame (see `replay`).
    pub batch_frames: u32,
    pub batch_next: u32,
}

#[map]
pub static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// The program's statistics, this CPU's slot: one lookup per packet, passed down from there.
pub type Stats = ProgramStats;

#[inline(always)]
pub fn bump(stats: &mut Stats, stat: agent_common::Stat, n: u64) {
    stats.events[stat as usize] += n;
}
