//! Cumulative per-device traffic, built from conversation deltas. Pure: no maps, no clock.
//!
//! A device is a unicast MAC seen on the bridge. Its tx traffic is what it sent (scope of the
//! destination), its rx traffic what was sent to it (scope of the source).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::{
    ConvKey, ip_version,
    wire::{ether_type, ip_proto},
};

use crate::{
    mac::Mac,
    scope::{Scope, ScopeClassifier},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl Totals {
    pub fn add(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Tx,
    Rx,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub const fn from_proto(proto: u8) -> Option<Self> {
        match proto {
            ip_proto::TCP => Some(Transport::Tcp),
            ip_proto::UDP => Some(Transport::Udp),
            _ => None,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Direction, Transport, FirstDirection);
crate::serialize_as_text!(Direction, Transport, FirstDirection);

/// Packets and bytes one conversation added since the last poll, and when it was seen (program
/// clock: monotonic live, capture time in replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    pub key: ConvKey,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// Sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRx {
    pub tx: Totals,
    pub rx: Totals,
}

/// Who spoke first between a device and a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstDirection {
    Outbound,
    Inbound,
}

impl FirstDirection {
    pub const fn as_str(self) -> &'static str {
        match self {
            FirstDirection::Outbound => "outbound",
            FirstDirection::Inbound => "inbound",
        }
    }
}

/// A remote address a device exchanged IP traffic with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub totals: Totals,
    pub first_seen_ns: u64,
    pub first_direction: FirstDirection,
}

impl Peer {
    fn add(&mut self, d: &Delta, dir: FirstDirection) {
        self.totals.add(d.packets, d.bytes);
        if d.first_seen_ns < self.first_seen_ns {
            self.first_seen_ns = d.first_seen_ns;
            self.first_direction = dir;
        }
    }
}

/// Peers kept per device; the rest are counted in `Ledger::peers_dropped`.
pub const MAX_PEERS_PER_DEVICE: usize = 4096;

/// Source and destination addresses of a conversation key, if it has an IP header.
pub fn conv_ips(key: &ConvKey) -> Option<(IpAddr, IpAddr)> {
    match key.ip_version {
        ip_version::V4 => {
            let a = |b: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Some((a(&key.src_ip), a(&key.dst_ip)))
        }
        ip_version::V6 => Some((IpAddr::V6(Ipv6Addr::from(key.src_ip)), IpAddr::V6(Ipv6Addr::from(key.dst_ip)))),
        _ => None,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub traffic: BTreeMap<(Direction, Scope), Totals>,
    /// Frames the device sent, by transport and destination port.
    pub ports: BTreeMap<(Transport, u16), Totals>,
    /// Remote addresses, both directions.
    pub peers: BTreeMap<IpAddr, Peer>,
    /// Its own addresses: LAN and link-local sources of what it sent.
    pub ips: BTreeSet<IpAddr>,
    /// Sent and received, by IP protocol name ("tcp", "udp", "icmp", ..., "non_ip").
    pub protocols: BTreeMap<&'static str, TxRx>,
}

impl Device {
    pub fn total(&self, dir: Direction) -> Totals {
        let mut t = Totals::default();
        for ((d, _), v) in &self.traffic {
            if *d == dir {
                t.add(v.packets, v.bytes);
            }
        }
        t
    }
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    devices: BTreeMap<Mac, Device>,
    /// Every IP address: as source (tx) and destination (rx) of the outermost IP header.
    ips: BTreeMap<IpAddr, TxRx>,
    /// Every TCP/UDP destination port.
    ports: BTreeMap<(Transport, u16), Totals>,
    peers_dropped: u64,
}

/// Name of an IP protocol for the report.
pub fn protocol_name(key: &ConvKey) -> &'static str {
    if key.ip_version == ip_version::NONE {
        return if key.ether_type == ether_type::ARP { "arp" } else { "non_ip" };
    }
    match key.proto {
        ip_proto::ICMP => "icmp",
        ip_proto::IGMP => "igmp",
        ip_proto::TCP => "tcp",
        ip_proto::UDP => "udp",
        ip_proto::ICMPV6 => "icmpv6",
        _ => "other_ip",
    }
}

fn add_peer(dev: &mut Device, ip: IpAddr, d: &Delta, dir: FirstDirection, dropped: &mut u64) {
    if let Some(p) = dev.peers.get_mut(&ip) {
        p.add(d, dir);
    } else if dev.peers.len() < MAX_PEERS_PER_DEVICE {
        let mut p = Peer { totals: Totals::default(), first_seen_ns: u64::MAX, first_direction: dir };
        p.add(d, dir);
        dev.peers.insert(ip, p);
    } else {
        *dropped += 1;
    }
}

impl Ledger {
    pub fn apply(&mut self, d: &Delta, scopes: &ScopeClassifier) {
        let (src, dst) = (Mac(d.key.src_mac), Mac(d.key.dst_mac));
        let ips = conv_ips(&d.key);
        let (tx_scope, rx_scope) = match ips {
            Some((src_ip, dst_ip)) => (scopes.of_ip(dst_ip), scopes.of_ip(src_ip)),
            None => (ScopeClassifier::of_mac(dst), Scope::Lan),
        };
        let transport = Transport::from_proto(d.key.proto).filter(|_| d.key.dst_port != 0 || d.key.src_port != 0);
        let protocol = protocol_name(&d.key);
        if let Some((src_ip, dst_ip)) = ips {
            self.ips.entry(src_ip).or_default().tx.add(d.packets, d.bytes);
            self.ips.entry(dst_ip).or_default().rx.add(d.packets, d.bytes);
        }
        if let Some(t) = transport {
            self.ports.entry((t, d.key.dst_port)).or_default().add(d.packets, d.bytes);
        }
        if !src.is_group() {
            let dev = self.devices.entry(src).or_default();
            dev.traffic.entry((Direction::Tx, tx_scope)).or_default().add(d.packets, d.bytes);
            dev.protocols.entry(protocol).or_default().tx.add(d.packets, d.bytes);
            if let Some(t) = transport {
                dev.ports.entry((t, d.key.dst_port)).or_default().add(d.packets, d.bytes);
            }
            if let Some((src_ip, dst_ip)) = ips {
                // rx_scope is the source address's scope.
                if matches!(rx_scope, Scope::Lan | Scope::LinkLocal) && !src_ip.is_unspecified() {
                    dev.ips.insert(src_ip);
                }
                add_peer(dev, dst_ip, d, FirstDirection::Outbound, &mut self.peers_dropped);
            }
        }
        if !dst.is_group() {
            let dev = self.devices.entry(dst).or_default();
            dev.traffic.entry((Direction::Rx, rx_scope)).or_default().add(d.packets, d.bytes);
            dev.protocols.entry(protocol).or_default().rx.add(d.packets, d.bytes);
            if let Some((src_ip, _)) = ips {
                add_peer(dev, src_ip, d, FirstDirection::Inbound, &mut self.peers_dropped);
            }
        }
    }

    pub fn devices(&self) -> &BTreeMap<Mac, Device> {
        &self.devices
    }

    pub fn ips(&self) -> &BTreeMap<IpAddr, TxRx> {
        &self.ips
    }

    pub fn ports(&self) -> &BTreeMap<(Transport, u16), Totals> {
        &self.ports
    }

    /// Peers not kept because a device already had [`MAX_PEERS_PER_DEVICE`].
    pub fn peers_dropped(&self) -> u64 {
        self.peers_dropped
    }
}

/// An IPv4 conversation's key, as the program would have made it (the core's tests build
/// frames' keys with it).
#[cfg(test)]
pub(crate) fn v4_key(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    sport: u16,
    dport: u16,
) -> ConvKey {
    let mut k = ConvKey {
        src_mac,
        dst_mac,
        ip_version: ip_version::V4,
        proto,
        src_port: sport,
        dst_port: dport,
        ether_type: ether_type::IPV4,
        ..ConvKey::default()
    };
    k.src_ip[..4].copy_from_slice(&src);
    k.dst_ip[..4].copy_from_slice(&dst);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAM: [u8; 6] = [2, 0x77, 0, 0, 0, 0x11];
    const GW: [u8; 6] = [2, 0x77, 0, 0, 0, 0x01];

    fn v4(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> ConvKey {
        v4_key(src_mac, dst_mac, src, dst, proto, 40000, dport)
    }

    fn delta(key: ConvKey, packets: u64, bytes: u64) -> Delta {
        Delta { key, packets, bytes, first_seen_ns: 1, last_seen_ns: 1 }
    }

    fn scopes() -> ScopeClassifier {
        ScopeClassifier::new(vec!["192.168.77.0/24".parse().unwrap()])
    }

    #[test]
    fn internet_traffic_counts_for_both_ends_with_their_peer_scope() {
        let mut l = Ledger::default();
        let key = v4(CAM, GW, [192, 168, 77, 11], [203, 0, 113, 10], 17, 6000);
        l.apply(&Delta { key, packets: 3, bytes: 300, first_seen_ns: 5, last_seen_ns: 9 }, &scopes());
        let cam = &l.devices()[&Mac(CAM)];
        assert_eq!(cam.traffic[&(Direction::Tx, Scope::Internet)], Totals { packets: 3, bytes: 300 });
        assert_eq!(cam.ports[&(Transport::Udp, 6000)], Totals { packets: 3, bytes: 300 });
        // The gateway received it from a LAN address.
        let gw = &l.devices()[&Mac(GW)];
        assert_eq!(gw.traffic[&(Direction::Rx, Scope::Lan)], Totals { packets: 3, bytes: 300 });
        assert!(gw.ports.is_empty());
        // Addresses, ports and peers for the report.
        let inet: IpAddr = "203.0.113.10".parse().unwrap();
        let cam_ip: IpAddr = "192.168.77.11".parse().unwrap();
        assert_eq!(l.ips()[&inet].rx, Totals { packets: 3, bytes: 300 });
        assert_eq!(l.ips()[&cam_ip].tx, Totals { packets: 3, bytes: 300 });
        assert_eq!(l.ports()[&(Transport::Udp, 6000)].packets, 3);
        assert_eq!(cam.ips.iter().copied().collect::<Vec<_>>(), vec![cam_ip]);
        assert_eq!(cam.peers[&inet].first_direction, FirstDirection::Outbound);
        assert_eq!(cam.protocols["udp"].tx.bytes, 300);
        // The gateway forwards for the Internet host: not one of its own addresses.
        assert!(gw.ips.is_empty());
        assert_eq!(gw.peers[&cam_ip].first_direction, FirstDirection::Inbound);
    }

    #[test]
    fn first_direction_is_who_spoke_first_whatever_the_order_of_polls() {
        let mut l = Ledger::default();
        let out = v4(CAM, GW, [192, 168, 77, 11], [203, 0, 113, 10], 6, 443);
        let back = v4(GW, CAM, [203, 0, 113, 10], [192, 168, 77, 11], 6, 40000);
        // The reply is polled first but was seen later.
        l.apply(&Delta { key: back, packets: 1, bytes: 60, first_seen_ns: 20, last_seen_ns: 20 }, &scopes());
        l.apply(&Delta { key: out, packets: 1, bytes: 60, first_seen_ns: 10, last_seen_ns: 10 }, &scopes());
        let peer = l.devices()[&Mac(CAM)].peers[&"203.0.113.10".parse::<IpAddr>().unwrap()];
        assert_eq!(peer.first_direction, FirstDirection::Outbound);
        assert_eq!(peer.first_seen_ns, 10);
        assert_eq!(peer.totals, Totals { packets: 2, bytes: 120 });
    }

    #[test]
    fn group_destinations_are_not_devices_and_non_ip_uses_the_mac() {
        let mut l = Ledger::default();
        let mcast = [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa];
        l.apply(&delta(v4(CAM, mcast, [192, 168, 77, 11], [239, 255, 255, 250], 17, 1900), 2, 200), &scopes());
        let arp = ConvKey { src_mac: CAM, dst_mac: [0xff; 6], ether_type: 0x0806, ..ConvKey::default() };
        l.apply(&delta(arp, 1, 42), &scopes());
        assert_eq!(l.devices().len(), 1);
        let cam = &l.devices()[&Mac(CAM)];
        assert_eq!(cam.traffic[&(Direction::Tx, Scope::Multicast)].bytes, 200);
        assert_eq!(cam.traffic[&(Direction::Tx, Scope::Broadcast)].bytes, 42);
        assert_eq!(cam.total(Direction::Tx), Totals { packets: 3, bytes: 242 });
        assert_eq!(cam.total(Direction::Rx), Totals::default());
    }

    #[test]
    fn portless_frames_count_without_a_port() {
        let mut l = Ledger::default();
        // A later fragment: UDP, but no port was read (the program leaves both at 0).
        let key = ConvKey { src_port: 0, ..v4(CAM, GW, [192, 168, 77, 11], [198, 51, 100, 10], 17, 0) };
        l.apply(&delta(key, 1, 1514), &scopes());
        let cam = &l.devices()[&Mac(CAM)];
        assert!(cam.ports.is_empty());
        assert!(l.ports().is_empty());
        assert_eq!(cam.total(Direction::Tx).bytes, 1514);
    }

    #[test]
    fn ipv6_keys_decode() {
        let mut k = ConvKey { ip_version: ip_version::V6, ..ConvKey::default() };
        k.src_ip = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        k.dst_ip = "ff02::fb".parse::<Ipv6Addr>().unwrap().octets();
        let (s, d) = conv_ips(&k).unwrap();
        assert_eq!(s.to_string(), "fe80::1");
        assert_eq!(d.to_string(), "ff02::fb");
        assert_eq!(conv_ips(&ConvKey::default()), None);
    }
}
