//! The program's own statistics: one slot of the `STATS` per-CPU array each.

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Index into the `STATS` array. Exported as `iotwatch_bpf_events_total{event=NAME}`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat { $($(#[doc = $doc])* $variant,)* }

        impl Stat {
            pub const ALL: &[Stat] = &[$(Stat::$variant,)*];
            /// The metric label value of this statistic.
            pub const fn name(self) -> &'static str {
                match self { $(Stat::$variant => $name,)* }
            }
        }
    };
}

stats! {
    /// Socket buffers (TC) or frames (XDP) the program ran on.
    Buffers => "buffers",
    /// Wire frames counted: a GSO/GRO buffer stands for `gso_segs` of them.
    Frames => "frames",
    /// Buffers that carried more than one wire frame (GSO/GRO).
    GsoBuffers => "gso_buffers",
    /// Frames with at least one VLAN tag (802.1Q or 802.1ad).
    Vlan => "vlan",
    /// Frames with two stacked tags (QinQ).
    VlanStacked => "vlan_stacked",
    /// Frames with more tags than the program parses; counted at L2 only.
    VlanTooDeep => "vlan_too_deep",
    /// PPPoE session frames (IPv4 and IPv6 in them are parsed as without PPPoE).
    Pppoe => "pppoe",
    Ipv4 => "ipv4",
    Ipv4Options => "ipv4_options",
    Ipv6 => "ipv6",
    Ipv6ExtHeaders => "ipv6_ext_headers",
    /// IPv6 extension header chains longer than the program walks; no ports taken.
    Ipv6ExtTooDeep => "ipv6_ext_too_deep",
    /// IP fragments (first and later ones).
    Fragments => "fragments",
    /// Later IP fragments: they carry no L4 header, so no ports are counted.
    FragmentsNonFirst => "fragments_non_first",
    Arp => "arp",
    /// Frames of other ethertypes (neither IPv4, IPv6 nor ARP).
    OtherEthertype => "other_ethertype",
    /// Frames shorter than an Ethernet header: counted, not parsed.
    TruncatedL2 => "truncated_l2",
    /// IP header cut short: counted at L2, no addresses taken.
    TruncatedL3 => "truncated_l3",
    /// TCP/UDP header cut short: counted with addresses, and ports if their 4 bytes are there.
    TruncatedL4 => "truncated_l4",
    /// IP headers that lie (bad version or header length): counted at L2.
    Malformed => "malformed",
    /// A DEVICE_STATS insert failed (map full): that frame is missing from per-MAC counters.
    DeviceInsertFailed => "device_insert_failed",
    /// New CONVERSATIONS entries created by the program.
    ConvInserts => "conversation_inserts",
    /// A CONVERSATIONS insert failed.
    ConvInsertFailed => "conversation_insert_failed",
    /// XDP buffers longer than the port's MTU allows (with four VLAN tags): GRO/TSO aggregates
    /// that generic XDP (`--attach xdp-skb`) sees once, with no segment count, so their frames
    /// beyond the first are missing from every count. Use `--attach tc` on such ports.
    XdpOversized => "xdp_oversized",
}

pub const STATS_LEN: usize = Stat::ALL.len();

/// The one entry of the `STATS` per-CPU array: everything the program counts about itself, in
/// one value so that a packet costs one lookup for all of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// Indexed by [`Stat`].
    pub events: [u64; STATS_LEN],
    /// Indexed by `kind * OUTCOMES + outcome` (see [`crate::sample::outcome`]).
    pub samples: [u64; crate::sample::SAMPLE_STATS_LEN],
}

impl Default for ProgramStats {
    fn default() -> Self {
        Self { events: [0; STATS_LEN], samples: [0; crate::sample::SAMPLE_STATS_LEN] }
    }
}

#[cfg(feature = "user")]
crate::pod!(ProgramStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        let mut names: Vec<_> = Stat::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Stat::ALL.len());
    }
}
