//! Map names, keys, values and default sizes.

/// Per-CPU hash keyed by [`MacKey`], values [`DeviceCounters`]. Never evicts: a failed insert
/// is counted in [`crate::Stat::DeviceInsertFailed`].
pub const DEVICE_STATS: &str = "DEVICE_STATS";
/// LRU per-CPU hash keyed by [`ConvKey`], values [`ConvCounters`]. The program counts its inserts
/// ([`crate::Stat::ConvInserts`]) so the agent can tell entries it aged out from evictions.
pub const CONVERSATIONS: &str = "CONVERSATIONS";
/// Per-CPU array of one [`crate::ProgramStats`]: the program's statistics and sample outcomes.
pub const STATS: &str = "STATS";

/// Default capacity of [`DEVICE_STATS`]: MACs, including multicast and broadcast destinations.
pub const DEFAULT_MAX_MACS: u32 = 4096;
/// Default capacity of [`CONVERSATIONS`].
pub const DEFAULT_MAX_CONVERSATIONS: u32 = 65536;

/// Free entries the kernel's common LRU hands each CPU at a time, at most (LOCAL_FREE_TARGET in
/// kernel/bpf/bpf_lru_list.c; newer kernels, 6.18 among them, make the batch `target_free` =
/// max_entries / CPUs / 2 clamped to 1..=128, older ones such as 6.1 always 128).
pub const LRU_LOCAL_FREE_TARGET: u32 = 128;

/// `max_entries` of an LRU hash map (common LRU, no `BPF_F_NO_COMMON_LRU`) that holds `wanted`
/// entries without evicting, on a machine with `possible_cpus`.
///
/// A CPU that inserts takes free entries from its own list, refilled in batches of up to
/// [`LRU_LOCAL_FREE_TARGET`] from the global free list; when both are empty it evicts, even while
/// other CPUs' lists still hold free entries. Evictions can thus begin with up to one batch per
/// CPU unused: that much headroom on top of `wanted` keeps the first eviction beyond `wanted`
/// live entries.
pub const fn lru_max_entries(wanted: u32, possible_cpus: u32) -> u32 {
    wanted.saturating_add(possible_cpus.saturating_mul(LRU_LOCAL_FREE_TARGET))
}

/// Name of the read-only global that selects replay mode (see [`REPLAY_MODE`]).
pub const GLOBAL_REPLAY: &str = "REPLAY";
/// Replay mode (a `u8` global, 1 = on). Used with BPF_PROG_TEST_RUN, where the `__sk_buff`
/// context handed in by the caller carries what a live socket buffer would:
/// - `wire_len`: the frame's original length on the wire, from its Ethernet header, when the
///   capture cut it short (0 = the data's own length);
/// - `gso_segs`: the number of wire frames the buffer stands for (0 or 1 = one);
/// - `tstamp`: the capture time in nanoseconds since the epoch, used for first/last seen.
///
/// Live, `wire_len` is ignored (at ingress it omits the Ethernet header) and the clock is
/// `bpf_ktime_get_ns`.
pub const REPLAY_MODE: u8 = 1;

/// Replay's programs (XDP) run a batch of frames in one BPF_PROG_TEST_RUN: a system call per
/// frame costs about ten times what the program does with the frame. The test run's data is a
/// [`ReplayBatch`], then the frames last first, each followed by its [`ReplayMeta`] (header,
/// frame N, meta N, ..., frame 1, meta 1). The entry (`iotwatch_replay`) reads the header and
/// tail-calls the frame program (`iotwatch_replay_frame`, through [`REPLAY_NEXT`]), which
/// narrows the data to one frame, accounts for it and tail-calls itself for the next, so the
/// verifier walks it once however many frames a batch holds. The return value is the number of
/// frames that ran. Frames are at least an Ethernet header long (XDP keeps that much).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayBatch {
    pub frames: u32,
    pub _pad: u32,
}

/// One frame of a [`ReplayBatch`]: what a socket buffer's context carries live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayMeta {
    /// Original length of the frame on the wire.
    pub wire_len: u32,
    /// Bytes of the frame in the batch (the captured prefix).
    pub data_len: u32,
    /// Capture time, ns since the epoch.
    pub tstamp_ns: u64,
}

/// Program array through which replay's programs call the frame program for a batch's next
/// frame (index 0, set by the loader).
pub const REPLAY_NEXT: &str = "REPLAY_NEXT";
/// Frames in one [`ReplayBatch`] at most: one tail call each, and the kernel allows 33 per run.
pub const REPLAY_BATCH_FRAMES: usize = 32;

const _: () = assert!(core::mem::size_of::<ReplayBatch>() == 8);
const _: () = assert!(core::mem::size_of::<ReplayMeta>() == 16);

/// Maximum number of VLAN tags parsed (802.1Q/802.1ad stacks; real captures carry three);
/// deeper stacks are counted.
pub const MAX_VLAN_DEPTH: usize = 4;
/// Maximum number of IPv6 extension headers walked before giving up on the L4 header.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(mac: [u8; 6]) -> Self {
        Self { mac, _pad: [0; 2] }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Frames whose Ethernet source is the MAC.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames whose Ethernet destination is the MAC.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Program clock when this CPU first counted the MAC (0 = not yet; a reading of 0 is kept
    /// as 1). Per CPU: take the minimum of the non-zero values.
    pub first_seen_ns: u64,
    /// The source's sample rate limit on this CPU: it lives here, where the program already
    /// looked, rather than in a map of its own (one lookup fewer, and no second table for a
    /// flood of spoofed MACs to fill).
    pub sample_bucket: crate::sample::TokenBucket,
}

/// Version of the IP header in a [`ConvKey`]; `NONE` for non-IP frames and for frames whose IP
/// header was truncated or malformed (those are counted at L2 only, nothing is guessed).
pub mod ip_version {
    pub const NONE: u8 = 0;
    pub const V4: u8 = 4;
    pub const V6: u8 = 6;
}

/// A conversation: one direction of traffic between two endpoints.
///
/// IPv4 addresses sit in the first four bytes of the 16-byte fields, the rest zero. Ports are in
/// host byte order and 0 where the frame has none (non-TCP/UDP, non-first fragments, truncated
/// L4 header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvKey {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_version: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...); 0 without IP.
    pub proto: u8,
    /// Ethertype of the innermost header (host byte order), so non-IP traffic stays visible.
    pub ether_type: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Nanoseconds: `bpf_ktime_get_ns` live, capture time in replay. Per CPU: take min/max.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Flow samples taken of this conversation (first packets with payload; per CPU).
    pub flow_samples: u32,
    /// Where the TCP segment of the latest of them ends (its sequence number plus its payload
    /// length): a repeat of that segment (a retransmission, or a capture where each frame passes
    /// twice) is no new first packet and spends no sample, which the next segment may need (the
    /// rest of an HTTP head whose method came alone).
    pub flow_end: u32,
}

const _: () = assert!(core::mem::size_of::<MacKey>() == 8);
const _: () = assert!(core::mem::size_of::<DeviceCounters>() == 56);
const _: () = assert!(core::mem::size_of::<ConvKey>() == 52);
const _: () = assert!(core::mem::size_of::<ConvCounters>() == 40);

#[cfg(feature = "user")]
crate::pod!(MacKey, DeviceCounters, ConvKey, ConvCounters, ReplayBatch, ReplayMeta);

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn conv_key_layout_is_fixed() {
        assert_eq!(offset_of!(ConvKey, src_ip), 0);
        assert_eq!(offset_of!(ConvKey, dst_ip), 16);
        assert_eq!(offset_of!(ConvKey, src_mac), 32);
        assert_eq!(offset_of!(ConvKey, dst_mac), 38);
        assert_eq!(offset_of!(ConvKey, src_port), 44);
        assert_eq!(offset_of!(ConvKey, dst_port), 46);
        assert_eq!(offset_of!(ConvKey, ip_version), 48);
        assert_eq!(offset_of!(ConvKey, proto), 49);
        assert_eq!(offset_of!(ConvKey, ether_type), 50);
        assert_eq!(size_of::<ConvKey>(), 52);
    }

    #[test]
    fn the_lru_gets_one_free_batch_per_cpu_on_top() {
        assert_eq!(lru_max_entries(65536, 4), 65536 + 512);
        assert_eq!(lru_max_entries(200, 2), 456);
        assert_eq!(lru_max_entries(u32::MAX, 2), u32::MAX);
    }

    #[test]
    fn counters_are_four_u64() {
        assert_eq!(offset_of!(DeviceCounters, rx_packets), 16);
        assert_eq!(offset_of!(ConvCounters, last_seen_ns), 24);
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(MacKey::new([1, 2, 3, 4, 5, 6]).mac, [1, 2, 3, 4, 5, 6]);
    }
}
