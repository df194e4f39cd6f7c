//! Header walk: Ethernet, VLAN stacks, IPv4 (options, fragments), IPv6 (extension headers), TCP
//! and UDP ports. What is cut short or lies is counted and not guessed: a frame keeps the fields
//! read before the problem and nothing after it.

use agent_common::{
    ConvKey, MAX_IPV6_EXT_HEADERS, MAX_VLAN_DEPTH, Stat, ip_version,
    wire::{ether_type, ip_proto, ppp},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    maps::{Stats, bump},
    packet::Packet,
};

/// Where the L4 header may start at the latest: IPv6 extension headers that go further are
/// counted as too deep. Keeps every offset the program reads directly small (see `packet`).
const MAX_L4_OFFSET: usize = 512;

/// 8-byte aligned with the key first, so that [`clear_key`] can clear it a word at a time.
#[repr(C, align(8))]
pub struct Frame {
    pub key: ConvKey,
    /// Bytes of headers (from the Ethernet header through L4) that every GSO segment repeats.
    pub header_len: u64,
    /// Where the TCP/UDP payload (the ICMP message) starts; 0 when the L4 header is not complete
    /// (no payload known).
    pub payload_off: usize,
    /// Where the IP packet ends by its own header; 0 when unknown (no IP header, or a length of
    /// 0 as TSO and jumbograms leave it). Bytes past it are Ethernet padding, not payload: a
    /// 54-byte ACK arrives as 60 bytes.
    pub ip_end: usize,
    /// The TCP sequence number (0 for other frames).
    pub tcp_seq: u32,
}

/// Zeroes the key with six word stores and one half-word store. Left to itself, LLVM makes a
/// `memset` of it, which in BPF is a subprogram call on every packet.
#[inline(always)]
fn clear_key(f: &mut Frame) {
    let words = (&raw mut f.key).cast::<u64>();
    // SAFETY: the key is the first field of an 8-aligned Frame and 52 bytes long: six u64 and one
    // u32 cover it exactly. Volatile, so that the stores are not merged back into a memset.
    unsafe {
        for i in 0..6 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        core::ptr::write_volatile(words.add(6).cast::<u32>(), 0);
    }
}

const _: () = assert!(core::mem::offset_of!(Frame, key) == 0 && size_of::<ConvKey>() == 6 * 8 + 4);

#[inline(always)]
const fn is_vlan(ether_type: u16) -> bool {
    ether_type == ether_type::VLAN || ether_type == ether_type::QINQ
}

/// Fills `f`; false for a runt shorter than an Ethernet header: nothing can be attributed.
#[inline(always)]
pub fn parse<P: Packet>(p: &P, outer_tag_in_meta: bool, f: &mut Frame, st: &mut Stats) -> bool {
    let Some(eth) = p.load::<EthHdr>(0) else { return false };
    clear_key(f);
    f.key.src_mac = eth.src_addr;
    f.key.dst_mac = eth.dst_addr;
    f.header_len = EthHdr::LEN as u64;
    f.payload_off = 0;
    f.ip_end = 0;
    f.tcp_seq = 0;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    let mut tags = u32::from(outer_tag_in_meta);
    for _ in 0..MAX_VLAN_DEPTH {
        if !is_vlan(ether_type) || tags as usize >= MAX_VLAN_DEPTH {
            break;
        }
        let Some(tag) = p.load::<[u8; 4]>(off) else {
            bump(st, Stat::TruncatedL3, 1);
            f.key.ether_type = ether_type;
            return true;
        };
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    if tags > 0 {
        bump(st, Stat::Vlan, 1);
    }
    if tags > 1 {
        bump(st, Stat::VlanStacked, 1);
    }
    if ether_type == ether_type::PPPOE_SESSION {
        // PPPoE (a DSL modem's side of a home network): IP behind 8 bytes of PPPoE and PPP.
        let Some(h) = p.load::<[u8; ppp::PPPOE_LEN + 2]>(off) else {
            bump(st, Stat::TruncatedL3, 1);
            f.key.ether_type = ether_type;
            f.header_len = off as u64;
            return true;
        };
        bump(st, Stat::Pppoe, 1);
        let (protocol, field_len) = ppp::protocol(h[6], h[7]);
        match protocol {
            ppp::IPV4 => ether_type = ether_type::IPV4,
            ppp::IPV6 => ether_type = ether_type::IPV6,
            _ => {}
        }
        off += ppp::PPPOE_LEN + field_len;
    }
    f.key.ether_type = ether_type;
    f.header_len = off as u64;
    match ether_type {
        ether_type::IPV4 => parse_ipv4(p, off, f, st),
        ether_type::IPV6 => parse_ipv6(p, off, f, st),
        ether_type::ARP => bump(st, Stat::Arp, 1),
        t if is_vlan(t) => bump(st, Stat::VlanTooDeep, 1),
        _ => bump(st, Stat::OtherEthertype, 1),
    }
    true
}

#[inline(always)]
fn parse_ipv4<P: Packet>(p: &P, off: usize, f: &mut Frame, st: &mut Stats) {
    let Some(ip) = p.load::<Ipv4Hdr>(off) else {
        bump(st, Stat::TruncatedL3, 1);
        return;
    };
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        bump(st, Stat::Malformed, 1);
        return;
    }
    // The options must be there too before the header is trusted.
    if p.load::<u8>(off + ihl - 1).is_none() {
        bump(st, Stat::TruncatedL3, 1);
        return;
    }
    bump(st, Stat::Ipv4, 1);
    if ihl > Ipv4Hdr::LEN {
        bump(st, Stat::Ipv4Options, 1);
    }
    f.key.ip_version = ip_version::V4;
    let total = usize::from(u16::from_be_bytes(ip.tot_len));
    f.ip_end = if total > 0 { off + total } else { 0 };
    f.key.src_ip[..4].copy_from_slice(&ip.src_addr);
    f.key.dst_ip[..4].copy_from_slice(&ip.dst_addr);
    f.key.proto = ip.proto;
    let frags = u16::from_be_bytes(ip.frags);
    let (more_fragments, frag_offset) = (frags & 0x2000 != 0, frags & 0x1fff);
    if more_fragments || frag_offset != 0 {
        bump(st, Stat::Fragments, 1);
    }
    if frag_offset != 0 {
        bump(st, Stat::FragmentsNonFirst, 1);
        f.header_len = (off + ihl) as u64;
        return;
    }
    parse_l4(p, off + ihl, f, st);
}

#[inline(always)]
fn parse_ipv6<P: Packet>(p: &P, off: usize, f: &mut Frame, st: &mut Stats) {
    let Some(ip) = p.load::<Ipv6Hdr>(off) else {
        bump(st, Stat::TruncatedL3, 1);
        return;
    };
    if ip.vcf[0] >> 4 != 6 {
        bump(st, Stat::Malformed, 1);
        return;
    }
    bump(st, Stat::Ipv6, 1);
    f.key.ip_version = ip_version::V6;
    let payload = usize::from(u16::from_be_bytes(ip.payload_len));
    f.ip_end = if payload > 0 { off + Ipv6Hdr::LEN + payload } else { 0 };
    f.key.src_ip = ip.src_addr;
    f.key.dst_ip = ip.dst_addr;
    let mut next = ip.next_hdr;
    let mut off = off + Ipv6Hdr::LEN;
    let mut walked = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !ip_proto::is_ipv6_extension(next) {
            break;
        }
        walked = true;
        // Every extension header starts with (next header, length); the fragment header is 8
        // bytes with the offset in bytes 2-3, AH counts 4-byte units, the others 8-byte units.
        let Some(h) = p.load::<[u8; 4]>(off) else {
            bump(st, Stat::TruncatedL3, 1);
            f.key.proto = next;
            return;
        };
        let this = next;
        next = h[0];
        off += match this {
            ip_proto::IPV6_FRAGMENT => 8,
            ip_proto::IPV6_AH => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if off > MAX_L4_OFFSET {
            bump(st, Stat::Ipv6ExtTooDeep, 1);
            f.key.proto = next;
            return;
        }
        if this == ip_proto::IPV6_FRAGMENT {
            bump(st, Stat::Fragments, 1);
            if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                bump(st, Stat::FragmentsNonFirst, 1);
                f.key.proto = next;
                f.header_len = off as u64;
                return;
            }
        }
    }
    if walked {
        bump(st, Stat::Ipv6ExtHeaders, 1);
    }
    f.key.proto = next;
    if ip_proto::is_ipv6_extension(next) {
        bump(st, Stat::Ipv6ExtTooDeep, 1);
        return;
    }
    parse_l4(p, off, f, st);
}

/// Ports are the first 4 bytes of TCP and UDP: read whenever they are there. A minimal header
/// (TCP 20 bytes, UDP 8) cut short is counted; GSO needs TCP's full header length.
#[inline(always)]
fn parse_l4<P: Packet>(p: &P, off: usize, f: &mut Frame, st: &mut Stats) {
    f.header_len = off as u64;
    if f.key.proto == ip_proto::ICMP || f.key.proto == ip_proto::ICMPV6 {
        // The message is the payload: an unreachable is sampled for the datagram it quotes.
        f.payload_off = off;
        return;
    }
    if f.key.proto != ip_proto::TCP && f.key.proto != ip_proto::UDP {
        return;
    }
    let Some(ports) = p.load::<[u8; 4]>(off) else {
        bump(st, Stat::TruncatedL4, 1);
        return;
    };
    f.key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
    f.key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    if f.key.proto == ip_proto::TCP {
        match p.load::<TcpHdr>(off) {
            Some(tcp) if tcp.doff() >= 5 => {
                f.payload_off = off + usize::from(tcp.doff()) * 4;
                f.header_len = f.payload_off as u64;
                f.tcp_seq = u32::from_be_bytes(tcp.seq);
            }
            Some(_) => bump(st, Stat::Malformed, 1),
            None => bump(st, Stat::TruncatedL4, 1),
        }
    } else {
        match p.load::<UdpHdr>(off) {
            Some(_) => {
                f.payload_off = off + UdpHdr::LEN;
                f.header_len = f.payload_off as u64;
            }
            None => bump(st, Stat::TruncatedL4, 1),
        }
    }
}
