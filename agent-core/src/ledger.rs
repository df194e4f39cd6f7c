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
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::{
    ConvKey, ip_version,
    wire::{ether_type, ip_proto},
};

use crate::{
    bounded::{Generations, TableSize, entry_bytes, evict_idlest, excess, hash_capacity},
    mac::Mac,
    peerdb::Place,
    scope::{Scope, ScopeClassifier},
    vecmap::VecMap,
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
    /// Both directions: `tx` plus `rx`.
    pub fn totals(&self) -> Totals {
        Totals { packets: self.tx.packets + self.rx.packets, bytes: self.tx.bytes + self.rx.bytes }
    }

    /// `dir`: `Outbound` when the device sent `d`, `Inbound` when it received it.
    fn add(&mut self, d: &Delta, dir: FirstDirection) {
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

/// Peers kept per device: past it, the device's least recently seen make room.
pub const MAX_PEERS_PER_DEVICE: usize = 4096;

/// How many devices, peers (all devices' together) and IP addresses the ledger keeps: 10k
/// devices and 100k conversations fit. Past a bound, the least recently seen are evicted and
/// counted; what they counted stays in the sums (see [`Ledger::enforce_bounds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub devices: usize,
    pub peers: usize,
    pub ips: usize,
}

impl Bounds {
    pub const DEFAULT: Bounds = Bounds { devices: 16_384, peers: 131_072, ips: 131_072 };
}

/// TCP/UDP conversations whose opener the ledger remembers (about as many as the conversation
/// map holds by default; two generations that each fill 32,768 hash slots of about 120 bytes).
/// Past it, those not seen for a generation are forgotten, counted in
/// `Ledger::openers_forgotten`: one that comes back with its reply alone counts under the
/// reply's destination port.
pub const MAX_OPENERS: usize = hash_capacity(65_536);

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
    pub traffic: VecMap<(Direction, Scope), Totals>,
    /// Frames the device sent, by transport and service port: the destination port of the
    /// direction that opened the conversation (its own port when it answers, the server's when
    /// it is the client).
    pub ports: VecMap<(Transport, u16), Totals>,
    /// Remote addresses, both directions.
    pub peers: BTreeMap<IpAddr, Peer>,
    /// Its own addresses: LAN and link-local sources of what it sent.
    pub ips: VecMap<IpAddr, ()>,
    /// Sent and received, by IP protocol name ("tcp", "udp", "icmp", ..., "non_ip").
    pub protocols: VecMap<&'static str, TxRx>,
    /// What it exchanged with Internet peers evicted from `peers`, by their place (country and
    /// provider): sums over
    /// peers by country and provider must not fall when a peer leaves.
    pub departed_peers: BTreeMap<Place, TxRx>,
    /// The latest last-seen of its conversations (program clock): the least recently seen
    /// devices make room first.
    pub last_seen_ns: u64,
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
}

impl Opening {
    /// The direction that opened the conversation: the one first seen (on a tie, the one to
    /// the lower port, so that the order of the deltas does not matter).
    fn opener(&self, id: &ConvId) -> Option<usize> {
        (0..2).filter_map(|i| self.sides[i].map(|s| (s.first_seen_ns, id.dst_port(i), i))).min().map(|(.., i)| i)
    }
}

/// An IP address's traffic: as source (tx) and destination (rx) of the outermost IP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpTraffic {
    pub tx: Totals,
    pub rx: Totals,
    pub last_seen_ns: u64,
}

#[derive(Clone, Debug)]
pub struct Ledger {
    devices: BTreeMap<Mac, Device>,
    ips: BTreeMap<IpAddr, IpTraffic>,
    /// Every TCP/UDP destination port (at most 2 x 65,536).
    ports: BTreeMap<(Transport, u16), Totals>,
    bounds: Bounds,
    /// Devices never evicted: those with metric series of their own (bounded by the metrics'
    /// device cap), whose counters must only rise.
    pinned: BTreeSet<Mac>,
    /// What evicted devices counted, by direction and scope (metrics add it to `other`).
    departed: BTreeMap<(Direction, Scope), Totals>,
    peers: usize,
    devices_evicted: u64,
    peers_evicted: u64,
    ips_evicted: u64,
    /// Openers of conversations, for devices' service ports, the least recently seen forgotten.
    openers: Generations<ConvId, Opening>,
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

/// Counts `d` with the device's peer `ip`; returns whether the peer is new.
fn add_peer(dev: &mut Device, ip: IpAddr, d: &Delta, dir: FirstDirection) -> bool {
    if let Some(p) = dev.peers.get_mut(&ip) {
        p.add(d, dir);
        false
    } else {
        let mut p = Peer {
            tx: Totals::default(),
            rx: Totals::default(),
            first_seen_ns: u64::MAX,
            last_seen_ns: 0,
            first_direction: dir,
        };
        p.add(d, dir);
        dev.peers.insert(ip, p);
        true
    }
}

impl Ledger {
    /// A ledger that remembers the openers of at most `max` conversations (at least one).
    pub fn with_max_openers(max: usize) -> Self {
        Self::with_bounds(Bounds::DEFAULT, max)
    }

    pub fn with_bounds(bounds: Bounds, max_openers: usize) -> Self {
        Self {
            devices: BTreeMap::new(),
            ips: BTreeMap::new(),
            ports: BTreeMap::new(),
            bounds,
            pinned: BTreeSet::new(),
            departed: BTreeMap::new(),
            peers: 0,
            devices_evicted: 0,
            peers_evicted: 0,
            ips_evicted: 0,
            openers: Generations::new(max_openers),
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
            let src = self.ips.entry(src_ip).or_default();
            src.tx.add(d.packets, d.bytes);
            src.last_seen_ns = src.last_seen_ns.max(d.last_seen_ns);
            let dst = self.ips.entry(dst_ip).or_default();
            dst.rx.add(d.packets, d.bytes);
            dst.last_seen_ns = dst.last_seen_ns.max(d.last_seen_ns);
        }
        if let Some(t) = transport {
            self.ports.entry((t, d.key.dst_port)).or_default().add(d.packets, d.bytes);
        }
        if let Some(t) = transport {
            self.count_service_port(d, t);
        }
        if !src.is_group() {
            let dev = self.devices.entry(src).or_default();
            dev.traffic.or_default((Direction::Tx, tx_scope)).add(d.packets, d.bytes);
            dev.last_seen_ns = dev.last_seen_ns.max(d.last_seen_ns);
            dev.protocols.or_default(protocol).tx.add(d.packets, d.bytes);
            if let Some((src_ip, dst_ip)) = ips {
                // rx_scope is the source address's scope.
                if matches!(rx_scope, Scope::Lan | Scope::LinkLocal) && !src_ip.is_unspecified() {
                    dev.ips.insert(src_ip, ());
                }
                self.peers += usize::from(add_peer(dev, dst_ip, d, FirstDirection::Outbound));
            }
        }
        if !dst.is_group() {
            let dev = self.devices.entry(dst).or_default();
            dev.traffic.or_default((Direction::Rx, rx_scope)).add(d.packets, d.bytes);
            dev.last_seen_ns = dev.last_seen_ns.max(d.last_seen_ns);
            dev.protocols.or_default(protocol).rx.add(d.packets, d.bytes);
            if let Some((src_ip, _)) = ips {
                self.peers += usize::from(add_peer(dev, src_ip, d, FirstDirection::Inbound));
            }
        }
    }

    /// Counts `d` in its sender's ports under the conversation's service port. When `d` shows
    /// that the other direction was not the first after all, what both directions counted moves
    /// to the new service port.
    fn count_service_port(&mut self, d: &Delta, t: Transport) {
        let (id, side) = ConvId::of(&d.key);
        let conv = self.openers.get_or_default(id);
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
            dev.ports.or_default((t, port)).add(d.packets, d.bytes);
            if let Some(s) = conv.sides[side].as_mut() {
                s.counted.add(d.packets, d.bytes);
            }
        }
    }

    pub fn devices(&self) -> &BTreeMap<Mac, Device> {
        &self.devices
    }

    pub fn ips(&self) -> &BTreeMap<IpAddr, IpTraffic> {
        &self.ips
    }

    pub fn ports(&self) -> &BTreeMap<(Transport, u16), Totals> {
        &self.ports
    }

    /// What evicted devices counted, by direction and scope.
    pub fn departed(&self) -> &BTreeMap<(Direction, Scope), Totals> {
        &self.departed
    }

    /// Devices that are never evicted (see [`Ledger::pin`]).
    pub fn pinned(&self) -> &BTreeSet<Mac> {
        &self.pinned
    }

    /// Keeps these devices whatever the bounds (the metrics' devices with series of their own,
    /// at most their cap): their counters must only rise.
    pub fn pin(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.pinned.extend(macs);
    }

    /// Evicts the least recently seen devices, peers and addresses past the bounds. What an
    /// evicted device counted goes to [`Ledger::departed`]; what a device exchanged with an
    /// evicted Internet peer goes to its `departed_peers` under `place(ip)` (None: not an
    /// Internet peer). Called after each poll's deltas, so a table exceeds its bound at most by
    /// one poll's worth.
    pub fn enforce_bounds(&mut self, place: impl Fn(IpAddr) -> Option<Place>) {
        let Bounds { devices: max_devices, peers: max_peers, ips: max_ips } = self.bounds;
        let departed = &mut self.departed;
        let mut peers_gone = 0;
        let n = excess(self.devices.len(), max_devices);
        self.devices_evicted += evict_idlest(
            &mut self.devices,
            n,
            |d| d.last_seen_ns,
            |mac, _| self.pinned.contains(mac),
            |_, dev| {
                peers_gone += dev.peers.len();
                for (k, t) in dev.traffic {
                    departed.entry(k).or_default().add(t.packets, t.bytes);
                }
            },
        ) as u64;
        self.peers -= peers_gone;
        // Per device, then all together: the least recently seen of all devices' peers.
        for dev in self.devices.values_mut() {
            let n = excess(dev.peers.len(), MAX_PEERS_PER_DEVICE);
            self.peers -= evict_peers(dev, n, &place);
            self.peers_evicted += n as u64;
        }
        if self.peers > max_peers {
            let mut seen: Vec<u64> =
                self.devices.values().flat_map(|d| d.peers.values().map(|p| p.last_seen_ns)).collect();
            let n = excess(seen.len(), max_peers);
            let cutoff = *seen.select_nth_unstable(n - 1).1;
            // No more than n, whatever the ties at the cutoff.
            let mut left = n;
            for dev in self.devices.values_mut() {
                let older = dev.peers.values().filter(|p| p.last_seen_ns <= cutoff).count();
                let gone = evict_peers(dev, older.min(left), &place);
                left -= gone;
                self.peers -= gone;
                self.peers_evicted += gone as u64;
            }
        }
        let n = excess(self.ips.len(), max_ips);
        self.ips_evicted += evict_idlest(&mut self.ips, n, |t| t.last_seen_ns, |_, _| false, |_, _| {}) as u64;
    }

    /// The ledger's tables, for the metrics and the report.
    pub fn tables(&self) -> [TableSize; 4] {
        let peer_bytes = entry_bytes::<IpAddr, Peer>();
        let device_bytes: usize = self
            .devices
            .values()
            .map(|d| {
                entry_bytes::<Mac, Device>()
                    + d.ports.len() * entry_bytes::<(Transport, u16), Totals>()
                    + d.ips.len() * entry_bytes::<IpAddr, ()>()
                    + (d.traffic.len() + d.protocols.len()) * entry_bytes::<(Direction, Scope), TxRx>()
                    + d.departed_peers
                        .keys()
                        .map(|(c, p)| entry_bytes::<Place, TxRx>() + c.len() + p.len())
                        .sum::<usize>()
            })
            .sum();
        [
            TableSize {
                table: "devices",
                entries: self.devices.len(),
                bytes: device_bytes,
                max_entries: self.bounds.devices,
                evicted: self.devices_evicted,
            },
            TableSize {
                table: "peers",
                entries: self.peers,
                bytes: self.peers * peer_bytes,
                max_entries: self.bounds.peers,
                evicted: self.peers_evicted,
            },
            TableSize {
                table: "ips",
                entries: self.ips.len(),
                bytes: self.ips.len() * entry_bytes::<IpAddr, IpTraffic>(),
                max_entries: self.bounds.ips,
                evicted: self.ips_evicted,
            },
            TableSize {
                table: "openers",
                entries: self.openers.len(),
                bytes: self.openers.len() * entry_bytes::<ConvId, Opening>(),
                max_entries: self.openers.max(),
                evicted: self.openers.forgotten(),
            },
        ]
    }

    /// Conversations whose opener was forgotten to stay within [`MAX_OPENERS`].
    pub fn openers_forgotten(&self) -> u64 {
        self.openers.forgotten()
    }
}

/// Evicts the `n` least recently seen peers of `dev`; an Internet peer's traffic stays in the
/// device's `departed_peers`. Returns how many went.
fn evict_peers(dev: &mut Device, n: usize, place: &impl Fn(IpAddr) -> Option<Place>) -> usize {
    let departed = &mut dev.departed_peers;
    evict_idlest(
        &mut dev.peers,
        n,
        |p| p.last_seen_ns,
        |_, _| false,
        |ip, p| {
            if let Some(k) = place(ip) {
                let t = departed.entry(k).or_default();
                t.tx.add(p.tx.packets, p.tx.bytes);
                t.rx.add(p.rx.packets, p.rx.bytes);
            }
        },
    )
}

/// Moves `t` from one key of `ports` to another; a key left with nothing goes.
fn move_totals(ports: &mut VecMap<(Transport, u16), Totals>, from: (Transport, u16), to: (Transport, u16), t: Totals) {
    if let Some(f) = ports.get_mut(&from) {
        f.packets = f.packets.saturating_sub(t.packets);
        f.bytes = f.bytes.saturating_sub(t.bytes);
        if *f == Totals::default() {
            ports.remove(&from);
        }
    }
    ports.or_default(to).add(t.packets, t.bytes);
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
        assert_eq!(cam.ips.keys().copied().collect::<Vec<_>>(), vec![cam_ip]);
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
        assert_eq!(peer.totals(), Totals { packets: 2, bytes: 120 });
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
        assert_eq!(peer.totals(), Totals { packets: 3, bytes: 3150 });
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

    #[test]
    fn bounds_evict_the_least_recently_seen_and_keep_every_count_in_the_sums() {
        let bounds = Bounds { devices: 8, peers: 40, ips: 30 };
        let mut l = Ledger::with_bounds(bounds, 64);
        l.pin([Mac(CAM)]);
        let place = |ip: IpAddr| Some((format!("c{}", ip.to_string().len() % 3), "p".to_owned()));
        let mut sent = Totals::default();
        let mut cam_sent = Totals::default();
        // The camera talks first and never again; 50 spoofed MACs, each to 5 Internet peers,
        // come later, one poll each.
        for n in 0..51u32 {
            let mac = if n == 0 { CAM } else { [2, 0x66, 0, 0, (n >> 8) as u8, n as u8] };
            for p in 0..5u32 {
                let dst = [203, 0, 113, (n * 5 + p) as u8];
                let key = v4(mac, GW, [192, 168, 77, 10 + n as u8], dst, 17, 1000 + p as u16);
                let ns = u64::from(n) * 10 + u64::from(p);
                l.apply(&Delta { key, packets: 1, bytes: 100, first_seen_ns: ns, last_seen_ns: ns }, &scopes());
                sent.add(1, 100);
                if n == 0 {
                    cam_sent.add(1, 100);
                }
            }
            l.enforce_bounds(place);
            let t = l.tables();
            assert!(t[0].entries <= bounds.devices + 1 && t[1].entries <= bounds.peers, "{t:?}");
            assert!(t[2].entries <= bounds.ips, "{t:?}");
        }
        // Pinned: never evicted, though it was seen least recently.
        assert_eq!(l.devices()[&Mac(CAM)].total(Direction::Tx), cam_sent);
        let t = l.tables();
        assert!(t[0].evicted > 30 && t[1].evicted > 0 && t[2].evicted > 0, "{t:?}");
        // The latest spoofed MAC is kept; the earliest unpinned ones went.
        assert!(l.devices().contains_key(&Mac([2, 0x66, 0, 0, 0, 50])));
        assert!(!l.devices().contains_key(&Mac([2, 0x66, 0, 0, 0, 1])));
        // What every device sent: the kept devices' and the departed ones' together.
        let mut tx = Totals::default();
        for (_, d) in l.devices().iter().filter(|(m, _)| **m != Mac(GW)) {
            let t = d.total(Direction::Tx);
            tx.add(t.packets, t.bytes);
        }
        for ((dir, _), t) in l.departed() {
            if *dir == Direction::Tx {
                tx.add(t.packets, t.bytes);
            }
        }
        assert_eq!(tx, sent);
        // The gateway received it all: its kept peers and the departed ones' places together.
        let gw = &l.devices()[&Mac(GW)];
        let mut rx: u64 = gw.peers.values().map(|p| p.rx.bytes).sum();
        rx += gw.departed_peers.values().map(|t| t.rx.bytes).sum::<u64>();
        assert_eq!((gw.total(Direction::Rx).bytes, rx), (sent.bytes, sent.bytes));
    }
}
