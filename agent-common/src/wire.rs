//! The numbers of the wire formats the program parses and the agent reads back, and the
//! verdicts the programs return: one definition each, for both sides.

/// Ethernet's type field (and the VLAN tags' inner type).
pub mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ's outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// A PPPoE session: 6 bytes of PPPoE header, then PPP's 2-byte protocol.
    pub const PPPOE_SESSION: u16 = 0x8864;
}

/// PPP inside a PPPoE session: 6 bytes of PPPoE, then PPP's protocol field, two bytes, or one
/// when Protocol-Field-Compression left out a zero first byte (RFC 1661: protocol numbers have
/// an even first byte and an odd last one, so an odd first byte is a compressed field).
pub mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
    pub const PPPOE_LEN: usize = 6;

    /// The protocol and the length of its field, from the two bytes after the PPPoE header.
    #[inline(always)]
    pub const fn protocol(b0: u8, b1: u8) -> (u16, usize) {
        if b0 & 1 == 1 { (b0 as u16, 1) } else { (u16::from_be_bytes([b0, b1]), 2) }
    }
}

/// IP protocol numbers, and the IPv6 extension headers that come before the transport.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const IGMP: u8 = 2;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_HOP_BY_HOP: u8 = 0;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const IPV6_AH: u8 = 51;
    pub const IPV6_DEST_OPTS: u8 = 60;

    /// An IPv6 extension header the program walks over to reach the transport header.
    #[inline(always)]
    pub const fn is_ipv6_extension(next: u8) -> bool {
        matches!(next, IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | IPV6_DEST_OPTS)
    }
}

/// What the programs return: always "pass". For TC that is TC_ACT_UNSPEC (tcx's TCX_NEXT), never
/// TC_ACT_OK, which would end the chain and skip other users' filters on the port.
pub mod verdict {
    pub const TC_PASS: i32 = -1;
    pub const XDP_PASS: u32 = 2;
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppp_protocol_fields_full_and_compressed() {
        assert_eq!(super::ppp::protocol(0x00, 0x21), (super::ppp::IPV4, 2));
        assert_eq!(super::ppp::protocol(0x21, 0x45), (super::ppp::IPV4, 1), "compressed: IPv4's header follows");
        assert_eq!(super::ppp::protocol(0x00, 0x57), (super::ppp::IPV6, 2));
        assert_eq!(super::ppp::protocol(0xc0, 0x21), (0xc021, 2), "LCP");
    }
}
