//! Turns one parsed buffer into counter updates: per MAC (exact, never evicted) and per
//! conversation (LRU, inserts counted so that the agent can tell evictions).

use agent_common::{
    ConvCounters, ConvKey, DeviceCounters, MacKey, Stat,
    classify::{segments, wire_bytes},
};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::{
    maps::{CONVERSATIONS, DEVICE_STATS, SCRATCH, bump},
    packet::Packet,
    parse::parse,
    sample::maybe_sample,
};

const EEXIST: i32 = 17;

pub struct Meta {
    /// Bytes of the buffer from its Ethernet header (the original length in replay).
    pub len: u64,
    /// Bytes of the frame the program can read (the captured prefix in replay).
    pub data_len: u64,
    pub ifindex: u32,
    pub direction: u8,
    /// Wire frames the buffer stands for (GSO/GRO); 0 when the kernel did not say.
    pub segments: u64,
    /// The GSO segment size, for buffers that carry it without a count (0: not GSO).
    pub gso_size: u64,
    /// The outer VLAN tag is in socket-buffer metadata, not in the data (TC): 4 wire bytes more
    /// per frame.
    pub outer_tag_in_meta: bool,
    pub now_ns: u64,
}

#[inline(always)]
pub fn account<P: Packet>(p: &P, m: &Meta) {
    bump(Stat::Buffers, 1);
    // The parsed frame lives in map memory, not on the stack. The verifier tracks what is
    // written to the stack exactly but not what is written to a map, so the paths of every header
    // layout (VLAN depth, IP options, extension headers) merge here instead of each being walked
    // again through sampling: 6.1 walked 619,263 instructions of the TC program on the stack, of
    // the 1,000,000 it allows, and 30,792 with this.
    // Index 0 of a one-entry array is always there; the verifier wants the check all the same.
    let Some(frame) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; network programs do not nest on a CPU, so nothing else uses it
    // until this run ends.
    let frame = unsafe { &mut *frame };
    if !parse(p, m.outer_tag_in_meta, frame) {
        bump(Stat::TruncatedL2, 1);
        bump(Stat::Frames, if m.segments == 0 { 1 } else { m.segments });
        return;
    }
    let frame = &*frame;
    let segments = segments(m.segments, m.gso_size, m.len, frame.header_len);
    bump(Stat::Frames, segments);
    if segments > 1 {
        bump(Stat::GsoBuffers, 1);
    }
    let tag_bytes = if m.outer_tag_in_meta { 4 } else { 0 };
    let bytes = wire_bytes(m.len, segments, frame.header_len) + segments * tag_bytes;
    add_mac(&frame.key.src_mac, true, segments, bytes);
    add_mac(&frame.key.dst_mac, false, segments, bytes);
    let conversation = add_conversation(&frame.key, segments, bytes, m.now_ns);
    maybe_sample(p, frame, m, conversation);
}

#[inline(always)]
fn bump_device(c: *mut DeviceCounters, tx: bool, packets: u64, bytes: u64) {
    // SAFETY: a per-CPU value; nothing else writes it while this program runs on this CPU.
    unsafe {
        if tx {
            (*c).tx_packets += packets;
            (*c).tx_bytes += bytes;
        } else {
            (*c).rx_packets += packets;
            (*c).rx_bytes += bytes;
        }
    }
}

#[inline(always)]
fn add_mac(mac: &[u8; 6], tx: bool, packets: u64, bytes: u64) {
    let key = MacKey::new(*mac);
    if let Some(c) = DEVICE_STATS.get_ptr_mut(key) {
        bump_device(c, tx, packets, bytes);
        return;
    }
    let mut fresh = DeviceCounters::default();
    bump_device(&mut fresh, tx, packets, bytes);
    match DEVICE_STATS.insert(key, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU created the entry meanwhile: our slot of it exists now.
        Err(e) if e == -EEXIST => match DEVICE_STATS.get_ptr_mut(key) {
            Some(c) => bump_device(c, tx, packets, bytes),
            None => bump(Stat::DeviceInsertFailed, 1),
        },
        Err(_) => bump(Stat::DeviceInsertFailed, 1),
    }
}

/// Adds a frame to this CPU's slot of a conversation. An insert on one CPU creates zeroed slots
/// on the others: the first frame a CPU counts sets its slot's first-seen time, so that the
/// earliest over all CPUs is right (a 0 would read as the epoch, or boot time live).
#[inline(always)]
fn count_conversation(c: *mut ConvCounters, packets: u64, bytes: u64, now_ns: u64) {
    // SAFETY: a per-CPU value, see bump_device.
    unsafe {
        (*c).packets += packets;
        (*c).bytes += bytes;
        if (*c).first_seen_ns == 0 {
            (*c).first_seen_ns = now_ns;
        }
        (*c).last_seen_ns = now_ns;
    }
}

/// Counts the frame in its conversation; returns this CPU's entry (for the flow-sample quota).
#[inline(always)]
fn add_conversation(key: &ConvKey, packets: u64, bytes: u64, now_ns: u64) -> Option<*mut ConvCounters> {
    if let Some(c) = CONVERSATIONS.get_ptr_mut(key) {
        count_conversation(c, packets, bytes, now_ns);
        return Some(c);
    }
    let fresh = ConvCounters { packets, bytes, first_seen_ns: now_ns, last_seen_ns: now_ns, flow_samples: 0 };
    match CONVERSATIONS.insert(key, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            bump(Stat::ConvInserts, 1);
            CONVERSATIONS.get_ptr_mut(key)
        }
        Err(e) if e == -EEXIST => match CONVERSATIONS.get_ptr_mut(key) {
            Some(c) => {
                count_conversation(c, packets, bytes, now_ns);
                Some(c)
            }
            None => {
                bump(Stat::ConvInsertFailed, 1);
                None
            }
        },
        Err(_) => {
            bump(Stat::ConvInsertFailed, 1);
            None
        }
    }
}
