//! Cumulative per-device traffic, built from conversation deltas. Pure: no maps, no clock.
//!
//! A device is a unicast MAC seen on the bridge. Its tx traffic is what it sent (scope of the
//! destination), its rx traffic what was sent to it (scope of the source).
//!
//! Ports per device are service ports: the port of the side that accepted the conversation, so
//! that a server's answers count under its own port and not under each client's ephemeral one.
//! The kernel counts each direction of a conversation on its own; the direction first seen opened
//! it, and its destination port is the service port. The ledger remembers, for a bounded number
//! of conversations, each direction's first-seen time and what it counted under which port, so
//! that it decides from both directions whatever the order (and the poll) their deltas come in,
//! and moves what it counted when a direction seen later turns out to have been first.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
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
    /// Both directions: `tx` plus `rx`.
    pub totals: Totals,
    /// What the device sent to the peer.
    pub tx: Totals,
    /// What the device received from the peer.
    pub rx: Totals,
    pub first_seen_ns: u64,
    /// The latest last-seen of their conversations (program clock, as `first_seen_ns`).
    pub last_seen_ns: u64,
    pub first_direction: FirstDirection,
}

impl Peer {
    /// `dir`: `Outbound` when the device sent `d`, `Inbound` when it received it.
    fn add(&mut self, d: &Delta, dir: FirstDirection) {
        self.totals.add(d.packets, d.bytes);
        match dir {
            FirstDirection::Outbound => self.tx.add(d.packets, d.bytes),
            FirstDirection::Inbound => self.rx.add(d.packets, d.bytes),
        }
        self.last_seen_ns = self.last_seen_ns.max(d.last_seen_ns);
        if d.first_seen_ns < self.first_seen_ns {
            self.first_seen_ns = d.first_seen_ns;
            self.first_direction = dir;
        }
    }
}

/// Peers kept per device; the rest are counted in `Ledger::peers_dropped`.
pub const MAX_PEERS_PER_DEVICE: usize = 4096;

/// TCP/UDP conversations whose opener the ledger remembers (as many as the conversation map
/// holds by default; about 150 bytes each). Past it, the longest idle are forgotten, counted in
/// `Ledger::openers_forgotten`: one that comes back with its reply alone counts under the
/// reply's destination port.
pub const MAX_OPENERS: usize = 65_536;

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
    /// Frames the device sent, by transport and service port: the destination port of the
    /// direction that opened the conversation (its own port when it answers, the server's when
    /// it is the client).
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

/// A TCP/UDP conversation, both directions: its two ends in a fixed order (the lower address
/// and port first), so that a direction and its reverse find the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConvId {
    ip_version: u8,
    proto: u8,
    a: ([u8; 16], u16),
    b: ([u8; 16], u16),
}

impl ConvId {
    /// The conversation of `key`, and which of its directions `key` is (0: a to b, 1: b to a).
    fn of(key: &ConvKey) -> (Self, usize) {
        let (src, dst) = ((key.src_ip, key.src_port), (key.dst_ip, key.dst_port));
        let (a, b, side) = if src <= dst { (src, dst, 0) } else { (dst, src, 1) };
        (ConvId { ip_version: key.ip_version, proto: key.proto, a, b }, side)
    }

    /// The destination port of direction `side`.
    fn dst_port(&self, side: usize) -> u16 {
        if side == 0 { self.b.1 } else { self.a.1 }
    }
}

/// One direction of a remembered conversation.
#[derive(Clone, Copy, Debug)]
struct Side {
    /// The earliest first-seen of its deltas: a kernel entry made anew (aged out, evicted) does
    /// not make the direction younger.
    first_seen_ns: u64,
    /// Its sender, and what the sender's `ports` counted of it under the service port.
    mac: Mac,
    counted: Totals,
}

/// What the ledger remembers of a conversation to find its service port.
#[derive(Clone, Copy, Debug, Default)]
struct Opening {
    sides: [Option<Side>; 2],
    last_seen_ns: u64,
}

impl Opening {
    /// The direction that opened the conversation: the one first seen (on a tie, the one to
    /// the lower port, so that the order of the deltas does not matter).
    fn opener(&self, id: &ConvId) -> Option<usize> {
        (0..2).filter_map(|i| self.sides[i].map(|s| (s.first_seen_ns, id.dst_port(i), i))).min().map(|(.., i)| i)
    }
}

#[derive(Clone, Debug)]
pub struct Ledger {
    devices: BTreeMap<Mac, Device>,
    /// Every IP address: as source (tx) and destination (rx) of the outermost IP header.
    ips: BTreeMap<IpAddr, TxRx>,
    /// Every TCP/UDP destination port.
    ports: BTreeMap<(Transport, u16), Totals>,
    peers_dropped: u64,
    /// Openers of conversations, for devices' service ports; at most `max_openers`.
    openers: HashMap<ConvId, Opening>,
    max_openers: usize,
    openers_forgotten: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::with_max_openers(MAX_OPENERS)
    }
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
        let mut p = Peer {
            totals: Totals::default(),
            tx: Totals::default(),
            rx: Totals::default(),
            first_seen_ns: u64::MAX,
            last_seen_ns: 0,
            first_direction: dir,
        };
        p.add(d, dir);
        dev.peers.insert(ip, p);
    } else {
        *dropped += 1;
    }
}

impl Ledger {
    /// A ledger that remembers the openers of at most `max` conversations (at least one).
    pub fn with_max_openers(max: usize) -> Self {
        Self {
            devices: BTreeMap::new(),
            ips: BTreeMap::new(),
            ports: BTreeMap::new(),
            peers_dropped: 0,
            openers: HashMap::new(),
            max_openers: max.max(1),
            openers_forgotten: 0,
        }
    }

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
        if let Some(t) = transport {
            self.count_service_port(d, t);
        }
        if !src.is_group() {
            let dev = self.devices.entry(src).or_default();
            dev.traffic.entry((Direction::Tx, tx_scope)).or_default().add(d.packets, d.bytes);
            dev.protocols.entry(protocol).or_default().tx.add(d.packets, d.bytes);
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

    /// Counts `d` in its sender's ports under the conversation's service port. When `d` shows
    /// that the other direction was not the first after all, what both directions counted moves
    /// to the new service port.
    fn count_service_port(&mut self, d: &Delta, t: Transport) {
        let (id, side) = ConvId::of(&d.key);
        if !self.openers.contains_key(&id) && self.openers.len() >= self.max_openers {
            self.forget_idlest();
        }
        let conv = self.openers.entry(id).or_default();
        let before = conv.opener(&id).map(|i| id.dst_port(i));
        let src = Mac(d.key.src_mac);
        let s = conv.sides[side].get_or_insert(Side {
            first_seen_ns: d.first_seen_ns,
            mac: src,
            counted: Totals::default(),
        });
        s.first_seen_ns = s.first_seen_ns.min(d.first_seen_ns);
        if s.mac != src {
            // Another sender for the same addresses and ports (a gateway that changed): what the
            // old one counted stays where it is.
            *s = Side { first_seen_ns: s.first_seen_ns, mac: src, counted: Totals::default() };
        }
        conv.last_seen_ns = conv.last_seen_ns.max(d.last_seen_ns);
        let port = conv.opener(&id).map_or(d.key.dst_port, |i| id.dst_port(i));
        if let Some(old) = before.filter(|old| *old != port) {
            for s in conv.sides.iter().flatten().filter(|s| s.counted != Totals::default()) {
                if let Some(dev) = self.devices.get_mut(&s.mac) {
                    move_totals(&mut dev.ports, (t, old), (t, port), s.counted);
                }
            }
        }
        if !src.is_group() {
            let dev = self.devices.entry(src).or_default();
            dev.ports.entry((t, port)).or_default().add(d.packets, d.bytes);
            if let Some(s) = conv.sides[side].as_mut() {
                s.counted.add(d.packets, d.bytes);
            }
        }
    }

    /// Forgets the openers of the longest idle eighth of the remembered conversations.
    fn forget_idlest(&mut self) {
        let keep = self.max_openers - self.max_openers.div_ceil(8);
        let drop = self.openers.len().saturating_sub(keep).max(1);
        let mut idle: Vec<u64> = self.openers.values().map(|o| o.last_seen_ns).collect();
        let cutoff = *idle.select_nth_unstable(drop - 1).1;
        let before = self.openers.len();
        self.openers.retain(|_, o| o.last_seen_ns > cutoff);
        self.openers_forgotten += (before - self.openers.len()) as u64;
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

    /// Conversations whose opener was forgotten to stay within [`MAX_OPENERS`].
    pub fn openers_forgotten(&self) -> u64 {
        self.openers_forgotten
    }
}

/// Moves `t` from one key of `ports` to another; a key left with nothing goes.
fn move_totals(
    ports: &mut BTreeMap<(Transport, u16), Totals>,
    from: (Transport, u16),
    to: (Transport, u16),
    t: Totals,
) {
    if let Some(f) = ports.get_mut(&from) {
        f.packets = f.packets.saturating_sub(t.packets);
        f.bytes = f.bytes.saturating_sub(t.bytes);
        if *f == Totals::default() {
            ports.remove(&from);
        }
    }
    ports.entry(to).or_default().add(t.packets, t.bytes);
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

    const HUB: [u8; 6] = [2, 0x77, 0, 0, 0, 0x14];

    /// A TCP/UDP direction from (mac, ip, port) to (mac, ip, port), first seen at `first`.
    fn dir(from: ([u8; 6], [u8; 4], u16), to: ([u8; 6], [u8; 4], u16), proto: u8, first: u64, bytes: u64) -> Delta {
        let key = v4_key(from.0, to.0, from.1, to.1, proto, from.2, to.2);
        Delta { key, packets: 1, bytes, first_seen_ns: first, last_seen_ns: first + 5 }
    }

    fn ports(l: &Ledger, mac: [u8; 6]) -> Vec<(Transport, u16, u64)> {
        l.devices()[&Mac(mac)].ports.iter().map(|((t, p), v)| (*t, *p, v.bytes)).collect()
    }

    #[test]
    fn a_server_answering_many_clients_has_its_own_port_and_the_clients_have_it_too() {
        let mut l = Ledger::default();
        let hub = (HUB, [192, 168, 77, 20], 8815);
        for i in 0..23u8 {
            let cam = ([2, 0x77, 0, 0, 1, i], [192, 168, 77, 100 + i], 50_000 + u16::from(i));
            l.apply(&dir(cam, hub, 6, 10 + u64::from(i) * 10, 100), &scopes());
            l.apply(&dir(hub, cam, 6, 11 + u64::from(i) * 10, 1000), &scopes());
            assert_eq!(ports(&l, cam.0), vec![(Transport::Tcp, 8815, 100)], "the client counts the server's port");
        }
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 8815, 23_000)], "not 23 ephemeral ports");
        // The ledger's own ports stay by destination port.
        assert_eq!(l.ports().len(), 24);
        assert_eq!(l.ports()[&(Transport::Tcp, 8815)].bytes, 2300);
    }

    #[test]
    fn udp_request_and_response_count_under_the_servers_port() {
        let mut l = Ledger::default();
        let (cam, gw) = ((CAM, [192, 168, 77, 11], 40_002), (GW, [192, 168, 77, 1], 53));
        // The same poll, the answer read first.
        l.apply(&dir(gw, cam, 17, 21, 120), &scopes());
        l.apply(&dir(cam, gw, 17, 20, 60), &scopes());
        assert_eq!(ports(&l, CAM), vec![(Transport::Udp, 53, 60)]);
        assert_eq!(ports(&l, GW), vec![(Transport::Udp, 53, 120)]);
        // More of both later.
        l.apply(&dir(cam, gw, 17, 20, 60), &scopes());
        l.apply(&dir(gw, cam, 17, 21, 120), &scopes());
        assert_eq!(ports(&l, CAM), vec![(Transport::Udp, 53, 120)]);
        assert_eq!(ports(&l, GW), vec![(Transport::Udp, 53, 240)]);
    }

    #[test]
    fn the_opening_direction_arriving_in_a_later_poll_moves_what_the_answer_counted() {
        let mut l = Ledger::default();
        let (cam, hub) = ((CAM, [192, 168, 77, 11], 43_412), (HUB, [192, 168, 77, 20], 8815));
        // Poll 1 read only the answer: alone, it looks like a conversation the hub opened.
        l.apply(&dir(hub, cam, 6, 20, 1000), &scopes());
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 43_412, 1000)]);
        // Poll 2: the request, first seen before the answer.
        l.apply(&dir(cam, hub, 6, 10, 100), &scopes());
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 8815, 1000)], "the answer's bytes moved");
        assert_eq!(ports(&l, CAM), vec![(Transport::Tcp, 8815, 100)]);
        // The request's kernel entry aged out and came back, first seen after the answer: still
        // the camera's conversation.
        l.apply(&dir(cam, hub, 6, 500, 100), &scopes());
        l.apply(&dir(hub, cam, 6, 20, 1000), &scopes());
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 8815, 2000)]);
        assert_eq!(ports(&l, CAM), vec![(Transport::Tcp, 8815, 200)]);
        assert_eq!(l.openers_forgotten(), 0);
    }

    #[test]
    fn openers_are_remembered_within_a_bound_and_forgetting_is_counted() {
        let mut l = Ledger::with_max_openers(2);
        let hub = (HUB, [192, 168, 77, 20], 8815);
        for (i, port) in [40_001, 40_002, 40_003].into_iter().enumerate() {
            l.apply(&dir((CAM, [192, 168, 77, 11], port), hub, 6, 10 * (i as u64 + 1), 100), &scopes());
        }
        assert_eq!(l.openers_forgotten(), 1, "the idlest of three went");
        // The forgotten one's answer comes alone: counted under the client's port, as a
        // conversation of its own.
        l.apply(&dir(hub, (CAM, [192, 168, 77, 11], 40_001), 6, 11, 1000), &scopes());
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 40_001, 1000)]);
        // A remembered one's answer counts under the server's port.
        l.apply(&dir(hub, (CAM, [192, 168, 77, 11], 40_003), 6, 31, 1000), &scopes());
        assert_eq!(ports(&l, HUB), vec![(Transport::Tcp, 8815, 1000), (Transport::Tcp, 40_001, 1000)]);
        assert_eq!(l.openers_forgotten(), 2, "room for the answer's conversation");
    }

    #[test]
    fn peers_split_sent_and_received_and_keep_the_latest_time() {
        let mut l = Ledger::default();
        let (cam, cloud) = ((CAM, [192, 168, 77, 11], 40_000), (GW, [203, 0, 113, 10], 443));
        l.apply(&dir(cam, cloud, 6, 10, 100), &scopes());
        l.apply(&dir(cloud, cam, 6, 12, 3000), &scopes());
        l.apply(&Delta { last_seen_ns: 90, ..dir(cam, cloud, 6, 10, 50) }, &scopes());
        let peer = l.devices()[&Mac(CAM)].peers[&"203.0.113.10".parse::<IpAddr>().unwrap()];
        assert_eq!((peer.tx, peer.rx), (Totals { packets: 2, bytes: 150 }, Totals { packets: 1, bytes: 3000 }));
        assert_eq!(peer.totals, Totals { packets: 3, bytes: 3150 });
        assert_eq!((peer.first_seen_ns, peer.last_seen_ns), (10, 90));
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
