//! A capture of mixed, real-looking home-network traffic for the replay benchmark: 40 devices
//! with real vendors' address blocks (4 of them behind an 802.1Q tag), a router, cloud peers on
//! IPv4 and IPv6, and interleaved sessions of the kinds such a network carries (TLS and HTTP
//! with handshakes, payload both ways and ACKs, firmware-sized downloads, DNS, mDNS, SSDP
//! discovery with a description fetch, NTP, ARP, DHCP, MQTT and CoAP on the LAN, ping), with
//! frame sizes from 42 to 1,518 bytes and irregular gaps between frames (about 1 ms on average,
//! so a 490,000-frame capture spans several of the agent's conversation-idle periods).
//!
//! Deterministic (a fixed seed): every run writes the same bytes. Written byte by byte so that
//! nothing but std is needed.

use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ROUTER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const BROADCAST: [u8; 6] = [0xff; 6];

/// Vendors' address blocks (cameras, plugs, a Raspberry Pi, ESP32s, speakers, TVs, bulbs...).
const OUIS: [[u8; 3]; 10] = [
    [0x80, 0x9f, 0x9b],
    [0x50, 0xc7, 0xbf],
    [0xb8, 0x27, 0xeb],
    [0x24, 0x0a, 0xc4],
    [0x44, 0x65, 0x0d],
    [0xf4, 0xf5, 0xd8],
    [0x00, 0x17, 0x88],
    [0xd0, 0x73, 0xd5],
    [0x18, 0xb4, 0x30],
    [0x70, 0xee, 0x50],
];

const NAMES: [&str; 12] = [
    "device-metrics-us.amazon.com",
    "time.google.com",
    "api.meethue.com",
    "mqtt.tuyaeu.com",
    "firmware.example-cam.net",
    "connectivitycheck.gstatic.com",
    "clients3.google.com",
    "iot.us-east-1.amazonaws.com",
    "a2.tuyaus.com",
    "ota.tplinkcloud.com",
    "pool.ntp.org",
    "cdn.smartthings.com",
];

const AGENTS: [&str; 4] =
    ["Mozilla/5.0 (Linux; Android 13)", "curl/7.88.1", "ESP32 HTTP Client/1.0", "Roku/DVP-12.0 (12.0.0.4182-88)"];

#[derive(Clone, Copy)]
struct Device {
    mac: [u8; 6],
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    vlan: Option<u16>,
}

/// Where a frame goes at layer 2 (the MACs and the tag of the device side).
#[derive(Clone, Copy)]
struct L2 {
    src: [u8; 6],
    dst: [u8; 6],
    vlan: Option<u16>,
}

impl L2 {
    fn rev(self) -> Self {
        Self { src: self.dst, dst: self.src, vlan: self.vlan }
    }
}

#[derive(Clone, Copy)]
enum Ip {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Ip {
    fn rev(self) -> Self {
        match self {
            Self::V4(a, b) => Self::V4(b, a),
            Self::V6(a, b) => Self::V6(b, a),
        }
    }
}

fn ether(l2: L2, ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + body.len());
    f.extend_from_slice(&l2.dst);
    f.extend_from_slice(&l2.src);
    if let Some(vid) = l2.vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip_frame(l2: L2, ip: Ip, proto: u8, l4: &[u8], id: u16) -> Vec<u8> {
    match ip {
        Ip::V4(s, d) => {
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            h.extend_from_slice(&id.to_be_bytes());
            h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(l4);
            ether(l2, 0x0800, &h)
        }
        Ip::V6(s, d) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(l4);
            ether(l2, 0x86dd, &h)
        }
    }
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;
const SYN_ACK: u8 = 0x12;

/// A TCP segment with the timestamp option (32-byte header), as Linux and most stacks send.
fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(32 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x80, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(&[1, 1, 8, 10, 0, 1, 0x23, 0x45, 0, 0, 0x67, 0x89]);
    t.extend_from_slice(payload);
    t
}

/// A DNS name in wire format.
fn qname(name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut d = id.to_be_bytes().to_vec();
    d.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    d.extend_from_slice(&qname(name));
    d.extend_from_slice(&qtype.to_be_bytes());
    d.extend_from_slice(&[0, 1]);
    d
}

fn dns_answer(id: u16, name: &str, answers: &[[u8; 4]]) -> Vec<u8> {
    let mut d = id.to_be_bytes().to_vec();
    d.extend_from_slice(&[0x81, 0x80, 0, 1]);
    d.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0]);
    d.extend_from_slice(&qname(name));
    d.extend_from_slice(&[0, 1, 0, 1]);
    for a in answers {
        d.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
        d.extend_from_slice(a);
    }
    d
}

/// An mDNS announcement of `host` with a service (PTR, SRV, TXT, A), as avahi and Apple send.
fn mdns_announce(host: &str, service: &str, ip: Ipv4Addr, txt: usize) -> Vec<u8> {
    let mut d = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let instance = format!("{host}.{service}.local");
    d.extend_from_slice(&qname(&format!("{service}.local")));
    d.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0x11, 0x94]);
    let inst = qname(&instance);
    d.extend_from_slice(&(inst.len() as u16).to_be_bytes());
    d.extend_from_slice(&inst);
    d.extend_from_slice(&inst);
    d.extend_from_slice(&[0, 33, 0x80, 1, 0, 0, 0, 120]);
    let target = qname(&format!("{host}.local"));
    d.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0, 0x1f, 0x90]);
    d.extend_from_slice(&target);
    d.extend_from_slice(&inst);
    d.extend_from_slice(&[0, 16, 0x80, 1, 0, 0, 0x11, 0x94]);
    let mut t = Vec::new();
    for i in 0..txt {
        let kv = format!("k{i}=value-{i:04}");
        t.push(kv.len() as u8);
        t.extend_from_slice(kv.as_bytes());
    }
    d.extend_from_slice(&(t.len() as u16).to_be_bytes());
    d.extend_from_slice(&t);
    d.extend_from_slice(&target);
    d.extend_from_slice(&[0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4]);
    d.extend_from_slice(&ip.octets());
    d
}

/// A TLS ClientHello with SNI and ALPN, padded to `len` bytes as browsers pad.
fn client_hello(sni: &str, len: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0, 0x10, 0, 0x0e, 0, 0x0c, 2, b'h', b'2', 8]);
    ext.extend_from_slice(b"http/1.1");
    ext.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    let mut body = vec![3, 3];
    body.extend((0..32).map(|i| (i * 7) as u8));
    body.push(32);
    body.extend((0..32).map(|i| (i * 13) as u8));
    body.extend_from_slice(&[0, 6, 0x13, 1, 0x13, 2, 0x13, 3, 1, 0]);
    let fixed = 4 + body.len() + 2 + ext.len() + 5;
    if len > fixed + 4 {
        let pad = len - fixed - 4;
        ext.extend_from_slice(&[0, 0x15]);
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.resize(ext.len() + pad, 0);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Application data: a TLS record header and opaque bytes, or text.
fn opaque(rng: &mut Rng, len: usize, tls: bool) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    if tls && len >= 5 {
        p[..3].copy_from_slice(&[0x17, 3, 3]);
        p[3..5].copy_from_slice(&((len - 5) as u16).to_be_bytes());
    }
    p
}

/// A TCP connection: frames in order, with sequence numbers kept.
struct Tcp {
    l2: L2,
    ip: Ip,
    sport: u16,
    dport: u16,
    seq: [u32; 2],
    frames: Vec<Vec<u8>>,
}

impl Tcp {
    fn open(l2: L2, ip: Ip, sport: u16, dport: u16, rng: &mut Rng) -> Self {
        let mut c = Self { l2, ip, sport, dport, seq: [rng.next() as u32, rng.next() as u32], frames: Vec::new() };
        c.seg(0, SYN, &[]);
        c.seq[0] = c.seq[0].wrapping_add(1);
        c.seg(1, SYN_ACK, &[]);
        c.seq[1] = c.seq[1].wrapping_add(1);
        c.seg(0, ACK, &[]);
        c
    }
    /// One segment from side 0 (the client) or 1.
    fn seg(&mut self, side: usize, flags: u8, payload: &[u8]) {
        let (l2, ip, sp, dp) = if side == 0 {
            (self.l2, self.ip, self.sport, self.dport)
        } else {
            (self.l2.rev(), self.ip.rev(), self.dport, self.sport)
        };
        let ack = if flags == SYN { 0 } else { self.seq[1 - side] };
        let id = self.frames.len() as u16;
        self.frames.push(ip_frame(l2, ip, 6, &tcp(sp, dp, self.seq[side], ack, flags, payload), id));
        self.seq[side] = self.seq[side].wrapping_add(payload.len() as u32);
    }
    /// `bytes` from `side` in full segments, acknowledged every second one.
    fn send(&mut self, side: usize, bytes: usize, rng: &mut Rng, tls: bool) {
        let mss = if matches!(self.ip, Ip::V6(..)) { 1428 } else { 1448 };
        let mut left = bytes;
        let mut n = 0;
        while left > 0 {
            let len = left.min(mss);
            let p = opaque(rng, len, tls && n == 0);
            self.seg(side, PSH_ACK, &p);
            left -= len;
            n += 1;
            if n % 2 == 0 || left == 0 {
                self.seg(1 - side, ACK, &[]);
            }
        }
    }
    fn close(mut self) -> Vec<Vec<u8>> {
        self.seg(0, FIN_ACK, &[]);
        self.seq[0] = self.seq[0].wrapping_add(1);
        self.seg(1, FIN_ACK, &[]);
        self.seq[1] = self.seq[1].wrapping_add(1);
        self.seg(0, ACK, &[]);
        self.frames
    }
}

struct World {
    devices: Vec<Device>,
    cloud4: Vec<Ipv4Addr>,
    cloud6: Vec<Ipv6Addr>,
}

impl World {
    fn new(rng: &mut Rng) -> Self {
        let devices = (0..40u8)
            .map(|i| {
                let o = OUIS[usize::from(i) % OUIS.len()];
                Device {
                    mac: [o[0], o[1], o[2], 0x10 + i, rng.next() as u8, rng.next() as u8],
                    ip: Ipv4Addr::new(192, 168, 77, 20 + i),
                    ip6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x20 + u16::from(i)),
                    // Four devices sit behind a trunk port: every frame to or from them is tagged.
                    vlan: (i % 10 == 3).then_some(20),
                }
            })
            .collect();
        let mut cloud4 = Vec::new();
        for i in 0..48u8 {
            cloud4.push(match i % 4 {
                0 => Ipv4Addr::new(203, 0, 113, 10 + i),
                1 => Ipv4Addr::new(198, 51, 100, 10 + i),
                2 => Ipv4Addr::new(192, 0, 2, 10 + i),
                _ => Ipv4Addr::new(198, 18, i, 7),
            });
        }
        let cloud6 = (0..12u16).map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0x10 + i, 0, 0, 0, 0, 0x443)).collect();
        Self { devices, cloud4, cloud6 }
    }

    fn to_router(d: &Device) -> L2 {
        L2 { src: d.mac, dst: ROUTER_MAC, vlan: d.vlan }
    }

    /// One session's frames, in order.
    fn session(&self, rng: &mut Rng) -> Vec<Vec<u8>> {
        let d = *rng.pick(&self.devices);
        let eph = rng.range(32768, 60999) as u16;
        match rng.below(100) {
            // TLS to a cloud service, over IPv4 (most) or IPv6.
            0..=34 => {
                let v6 = rng.chance(15);
                let ip =
                    if v6 { Ip::V6(d.ip6, *rng.pick(&self.cloud6)) } else { Ip::V4(d.ip, *rng.pick(&self.cloud4)) };
                let port = if rng.chance(85) { 443 } else { 8883 };
                let mut c = Tcp::open(Self::to_router(&d), ip, eph, port, rng);
                let sni = NAMES[rng.below(NAMES.len() as u64) as usize];
                let hello = client_hello(sni, rng.range(250, 520) as usize);
                c.seg(0, PSH_ACK, &hello);
                c.send(1, rng.range(2500, 5200) as usize, rng, true);
                for _ in 0..rng.range(1, 8) {
                    let up = rng.range(60, 1200) as usize;
                    c.send(0, up, rng, true);
                    let down = rng.range(40, 6000) as usize;
                    c.send(1, down, rng, true);
                }
                c.close()
            }
            // A firmware-sized download.
            35..=37 => {
                let mut c = Tcp::open(Self::to_router(&d), Ip::V4(d.ip, *rng.pick(&self.cloud4)), eph, 443, rng);
                c.seg(0, PSH_ACK, &client_hello("firmware.example-cam.net", 517));
                c.send(1, rng.range(200_000, 2_000_000) as usize, rng, true);
                c.close()
            }
            // Cleartext HTTP to the Internet.
            38..=45 => {
                let mut c = Tcp::open(Self::to_router(&d), Ip::V4(d.ip, *rng.pick(&self.cloud4)), eph, 80, rng);
                let req = format!(
                    "GET /api/v1/status?id={} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n\r\n",
                    rng.below(100_000),
                    rng.pick(&NAMES),
                    rng.pick(&AGENTS)
                );
                c.seg(0, PSH_ACK, req.as_bytes());
                let body = rng.range(100, 30_000) as usize;
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n");
                c.seg(1, PSH_ACK, head.as_bytes());
                c.send(1, body, rng, false);
                c.close()
            }
            // DNS to the router, A or AAAA, over IPv4 or IPv6.
            46..=61 => {
                let name = *rng.pick(&NAMES);
                let id = rng.next() as u16;
                let l2 = Self::to_router(&d);
                let ip = if rng.chance(20) {
                    Ip::V6(d.ip6, Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1))
                } else {
                    Ip::V4(d.ip, ROUTER_IP)
                };
                let answers: Vec<[u8; 4]> = (0..rng.range(1, 4)).map(|_| rng.pick(&self.cloud4).octets()).collect();
                vec![
                    ip_frame(l2, ip, 17, &udp(eph, 53, &dns_query(id, name, 1)), id),
                    ip_frame(l2.rev(), ip.rev(), 17, &udp(53, eph, &dns_answer(id, name, &answers)), id),
                ]
            }
            // mDNS announcements, IPv4 and IPv6, and a query.
            62..=69 => {
                let host = format!("dev-{:02x}{:02x}", d.mac[4], d.mac[5]);
                let service = *rng.pick(&["_hap._tcp", "_googlecast._tcp", "_hue._tcp", "_airplay._tcp"]);
                let ann = mdns_announce(&host, service, d.ip, rng.range(2, 20) as usize);
                let m4 = L2 { src: d.mac, dst: [0x01, 0x00, 0x5e, 0, 0, 0xfb], vlan: d.vlan };
                let m6 = L2 { src: d.mac, dst: [0x33, 0x33, 0, 0, 0, 0xfb], vlan: d.vlan };
                let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x20 + u16::from(d.mac[3]));
                let mdns6 = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
                vec![
                    ip_frame(m4, Ip::V4(d.ip, Ipv4Addr::new(224, 0, 0, 251)), 17, &udp(5353, 5353, &ann), 1),
                    ip_frame(m6, Ip::V6(ll, mdns6), 17, &udp(5353, 5353, &ann), 0),
                    ip_frame(
                        m4,
                        Ip::V4(d.ip, Ipv4Addr::new(224, 0, 0, 251)),
                        17,
                        &udp(5353, 5353, &dns_query(0, &format!("{service}.local"), 12)),
                        2,
                    ),
                ]
            }
            // SSDP: a NOTIFY, an M-SEARCH answered by another device, and the description fetch.
            70..=75 => {
                let other = *rng.pick(&self.devices);
                let ssdp = L2 { src: d.mac, dst: [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa], vlan: d.vlan };
                let group = Ipv4Addr::new(239, 255, 255, 250);
                let notify = format!(
                    "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\nLOCATION: \
                     http://{}:49152/description.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\nSERVER: Linux/4.9 \
                     UPnP/1.0 IoT/1.0\r\nUSN: uuid:{:02x}{:02x}-0000::upnp:rootdevice\r\n\r\n",
                    d.ip, d.mac[4], d.mac[5]
                );
                let search = "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: \
                              2\r\nST: ssdp:all\r\n\r\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nLOCATION: http://{}:49152/description.xml\r\n\
                     ST: upnp:rootdevice\r\nUSN: uuid:{:02x}{:02x}::upnp:rootdevice\r\n\r\n",
                    other.ip, other.mac[4], other.mac[5]
                );
                let lan = L2 { src: d.mac, dst: other.mac, vlan: d.vlan.or(other.vlan) };
                let mut out = vec![
                    ip_frame(ssdp, Ip::V4(d.ip, group), 17, &udp(1900, 1900, notify.as_bytes()), 3),
                    ip_frame(ssdp, Ip::V4(d.ip, group), 17, &udp(eph, 1900, search.as_bytes()), 4),
                    ip_frame(lan.rev(), Ip::V4(other.ip, d.ip), 17, &udp(1900, eph, reply.as_bytes()), 5),
                ];
                let mut c = Tcp::open(lan, Ip::V4(d.ip, other.ip), eph.wrapping_add(1), 49152, rng);
                let get = format!(
                    "GET /description.xml HTTP/1.1\r\nHost: {}:49152\r\nUser-Agent: {}\r\n\r\n",
                    other.ip,
                    rng.pick(&AGENTS)
                );
                c.seg(0, PSH_ACK, get.as_bytes());
                c.seg(1, PSH_ACK, b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 2400\r\n\r\n");
                c.send(1, 2400, rng, false);
                out.extend(c.close());
                out
            }
            // NTP.
            76..=80 => {
                let server = *rng.pick(&self.cloud4);
                let mut q = vec![0x23];
                q.resize(48, 0);
                let mut a = vec![0x24, 2, 3, 0xe9];
                a.resize(48, 0x11);
                let l2 = Self::to_router(&d);
                vec![
                    ip_frame(l2, Ip::V4(d.ip, server), 17, &udp(123, 123, &q), 7),
                    ip_frame(l2.rev(), Ip::V4(server, d.ip), 17, &udp(123, 123, &a), 7),
                ]
            }
            // ARP: who-has (broadcast), is-at.
            81..=86 => {
                let other = *rng.pick(&self.devices);
                let arp = |op: u8, smac: [u8; 6], sip: Ipv4Addr, tmac: [u8; 6], tip: Ipv4Addr| {
                    let mut a = vec![0, 1, 8, 0, 6, 4, 0, op];
                    a.extend_from_slice(&smac);
                    a.extend_from_slice(&sip.octets());
                    a.extend_from_slice(&tmac);
                    a.extend_from_slice(&tip.octets());
                    a
                };
                let vlan = d.vlan.or(other.vlan);
                vec![
                    ether(L2 { src: d.mac, dst: BROADCAST, vlan }, 0x0806, &arp(1, d.mac, d.ip, [0; 6], other.ip)),
                    ether(L2 { src: other.mac, dst: d.mac, vlan }, 0x0806, &arp(2, other.mac, other.ip, d.mac, d.ip)),
                ]
            }
            // DHCP renewal: request (broadcast) and ack.
            87 => {
                let mut m = vec![1, 1, 6, 0];
                m.extend_from_slice(&(rng.next() as u32).to_be_bytes());
                m.resize(28, 0);
                m.extend_from_slice(&d.mac);
                m.resize(236, 0);
                m.extend_from_slice(&[0x63, 0x82, 0x53, 0x63, 53, 1, 3, 12, 8]);
                m.extend_from_slice(format!("dev-{:02x}{:02x}", d.mac[4], d.mac[5]).as_bytes());
                m.extend_from_slice(&[55, 4, 1, 3, 6, 15, 255]);
                let mut ack = m.clone();
                ack[0] = 2;
                ack[242] = 5;
                let bc = L2 { src: d.mac, dst: BROADCAST, vlan: d.vlan };
                vec![
                    ip_frame(bc, Ip::V4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST), 17, &udp(68, 67, &m), 9),
                    ip_frame(Self::to_router(&d).rev(), Ip::V4(ROUTER_IP, d.ip), 17, &udp(67, 68, &ack), 9),
                ]
            }
            // MQTT to the broker on the LAN and CoAP between devices.
            88..=95 => {
                let broker = self.devices[2];
                if d.mac == broker.mac {
                    return Vec::new();
                }
                let lan = L2 { src: d.mac, dst: broker.mac, vlan: d.vlan.or(broker.vlan) };
                if rng.chance(50) {
                    let mut c = Tcp::open(lan, Ip::V4(d.ip, broker.ip), eph, 1883, rng);
                    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 8];
                    connect.extend_from_slice(format!("dev{:05}", d.mac[5]).as_bytes());
                    connect[1] = (connect.len() - 2) as u8;
                    c.seg(0, PSH_ACK, &connect);
                    c.seg(1, PSH_ACK, &[0x20, 2, 0, 0]);
                    for _ in 0..rng.range(1, 10) {
                        let mut publish = vec![0x30, 0, 0, 12];
                        publish.extend_from_slice(b"home/sensors");
                        publish.extend_from_slice(format!("{{\"t\":{}}}", rng.below(400)).as_bytes());
                        publish[1] = (publish.len() - 2) as u8;
                        c.seg(0, PSH_ACK, &publish);
                        c.seg(1, ACK, &[]);
                    }
                    c.close()
                } else {
                    let len = rng.range(10, 120) as usize;
                    let payload = opaque(rng, len, false);
                    vec![
                        ip_frame(lan, Ip::V4(d.ip, broker.ip), 17, &udp(eph, 5683, &payload), 11),
                        ip_frame(lan.rev(), Ip::V4(broker.ip, d.ip), 17, &udp(5683, eph, &payload[..8]), 11),
                    ]
                }
            }
            // Ping to the router and to the Internet.
            _ => {
                let target = if rng.chance(50) { ROUTER_IP } else { *rng.pick(&self.cloud4) };
                let l2 = Self::to_router(&d);
                let mut out = Vec::new();
                for seq in 0..rng.range(1, 4) as u16 {
                    let mut echo = vec![8, 0, 0, 0, 0, 1];
                    echo.extend_from_slice(&seq.to_be_bytes());
                    echo.resize(64, 0x42);
                    let c = checksum(&echo);
                    echo[2..4].copy_from_slice(&c.to_be_bytes());
                    let mut reply = echo.clone();
                    reply[0] = 0;
                    reply[2..4].copy_from_slice(&[0, 0]);
                    let c = checksum(&reply);
                    reply[2..4].copy_from_slice(&c.to_be_bytes());
                    out.push(ip_frame(l2, Ip::V4(d.ip, target), 1, &echo, seq));
                    out.push(ip_frame(l2.rev(), Ip::V4(target, d.ip), 1, &reply, seq));
                }
                out
            }
        }
    }
}

/// Writes a classic (microsecond) pcap of `frames` frames of mixed traffic to `path`.
pub fn write(path: &Path, frames: u32) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0])?;
    let mut rng = Rng(0x1077_5eed_2026_1130);
    let world = World::new(&mut rng);
    // Sessions run side by side: each frame comes from one of the open sessions, picked at random.
    let mut open: Vec<(Vec<Vec<u8>>, usize)> = Vec::new();
    let mut ts_us: u64 = 1_700_000_000_000_000;
    for _ in 0..frames {
        while open.len() < 24 {
            let s = world.session(&mut rng);
            if !s.is_empty() {
                open.push((s, 0));
            }
        }
        let i = rng.below(open.len() as u64) as usize;
        let at = open[i].1;
        let frame = std::mem::take(&mut open[i].0[at]);
        open[i].1 += 1;
        if open[i].1 == open[i].0.len() {
            open.swap_remove(i);
        }
        // Mostly sub-millisecond gaps, sometimes a few milliseconds, rarely a quiet second.
        ts_us += match rng.below(1000) {
            0 => rng.range(500_000, 3_000_000),
            1..=100 => rng.range(1_000, 8_000),
            _ => rng.range(1, 600),
        };
        let len = frame.len() as u32;
        for v in [(ts_us / 1_000_000) as u32, (ts_us % 1_000_000) as u32, len, len] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&frame)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_capture_is_whole_records_of_many_sizes_and_sources() {
        let tmp = crate::tmp::TempDir::new("iotwatch-mixcap").unwrap();
        let path = tmp.join("mix.pcap");
        write(&path, 5000).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (mut off, mut n, mut last_ts) = (24, 0, 0u64);
        let mut sources = std::collections::BTreeSet::new();
        let (mut tagged, mut small, mut full) = (0, 0, 0);
        while off < bytes.len() {
            let word = |at: usize| u64::from(u32::from_le_bytes(bytes[off + at..off + at + 4].try_into().unwrap()));
            let ts = word(0) * 1_000_000 + word(4);
            let incl = word(8) as usize;
            assert_eq!(incl as u64, word(12));
            assert!((42..=1518).contains(&incl), "frame {n} is {incl} bytes");
            assert!(ts > last_ts, "timestamps increase");
            last_ts = ts;
            let f = &bytes[off + 16..off + 16 + incl];
            sources.insert(f[6..12].to_vec());
            tagged += usize::from(f[12..14] == [0x81, 0x00]);
            small += usize::from(incl < 100);
            full += usize::from(incl > 1400);
            off += 16 + incl;
            n += 1;
        }
        assert_eq!((off, n), (bytes.len(), 5000));
        assert!(sources.len() > 30, "{} sources", sources.len());
        assert!(tagged > 50 && small > 500 && full > 200, "tagged {tagged}, small {small}, full {full}");
        // Deterministic: the same bytes again.
        let again = tmp.join("again.pcap");
        write(&again, 5000).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
    }
}
