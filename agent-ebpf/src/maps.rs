//! The maps of the contract in agent-common; sizes are defaults the loader may override.

use agent_common::{
    ConvCounters, ConvKey, DEFAULT_MAX_CONVERSATIONS, DEFAULT_MAX_MACS, DeviceCounters, MacKey, Stat,
    sample::{DEFAULT_RATE_LIMIT_SOURCES, DEFAULT_RING_BYTES, SAMPLE_STATS_LEN, TokenBucket},
    stats::STATS_LEN,
};
use aya_ebpf::{
    macros::map,
    maps::{LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

use crate::parse::Frame;

#[map]
pub static DEVICE_STATS: PerCpuHashMap<MacKey, DeviceCounters> = PerCpuHashMap::with_max_entries(DEFAULT_MAX_MACS, 0);

#[map]
pub static CONVERSATIONS: LruPerCpuHashMap<ConvKey, ConvCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_MAX_CONVERSATIONS, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
pub static SAMPLE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SAMPLE_STATS_LEN, 0);

#[map]
pub static RATE_LIMIT: LruPerCpuHashMap<MacKey, TokenBucket> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_RATE_LIMIT_SOURCES, 0);

/// The frame being parsed, one per CPU: see `account` for why it is not on the stack. Internal to
/// the program (not in the contract): the agent never reads it.
#[map]
pub static SCRATCH: PerCpuArray<Frame> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn bump_sample(index: usize) {
    if let Some(slot) = SAMPLE_STATS.get_ptr_mut(index as u32) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot += 1 }
    }
}

#[inline(always)]
pub fn bump(stat: Stat, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot += n }
    }
}
