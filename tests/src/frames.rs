//! Crafted frames for BPF_PROG_TEST_RUN: plain byte builders, so every test shows what it sends.

pub const DEV_A: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x11];
pub const DEV_B: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x12];
pub const IP_A: [u8; 4] = [192, 168, 77, 11];
pub const IP_B: [u8; 4] = [192, 168, 77, 12];
pub const INET: [u8; 4] = [203, 0, 113, 10];

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_8021Q: u16 = 0x8100;
pub const ETH_8021AD: u16 = 0x88a8;

pub fn eth(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// Appends a VLAN tag: the frame so far must end with the TPID (as its ethertype).
pub fn vlan(mut f: Vec<u8>, vid: u16, inner_type: u16) -> Vec<u8> {
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&inner_type.to_be_bytes());
    f
}

pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// Option bytes (a multiple of 4).
    pub options: Vec<u8>,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub frag_offset: u16,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8) -> Self {
        Self { src, dst, proto, options: Vec::new(), more_fragments: false, frag_offset: 0 }
    }

    pub fn push(&self, f: &mut Vec<u8>, payload_len: usize) {
        let ihl = 5 + self.options.len() / 4;
        let total = ihl * 4 + payload_len;
        f.push(0x40 | ihl as u8);
        f.push(0);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34]);
        let frags = (u16::from(self.more_fragments) << 13) | (self.frag_offset & 0x1fff);
        f.extend_from_slice(&frags.to_be_bytes());
        f.extend_from_slice(&[64, self.proto, 0, 0]);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.options);
    }
}

pub fn udp(f: &mut Vec<u8>, sport: u16, dport: u16, payload: &[u8]) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
}

/// A TCP header with `options` bytes of options (a multiple of 4), ACK|PSH.
pub fn tcp(f: &mut Vec<u8>, sport: u16, dport: u16, options: usize, payload: &[u8]) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    f.push((((20 + options) / 4) as u8) << 4);
    f.push(0x18);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(1u8, options));
    f.extend_from_slice(payload);
}

/// Ethernet + IPv4 + UDP with `payload` bytes.
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: usize,
) -> Vec<u8> {
    let mut f = eth(dst_mac, src_mac, ETH_IPV4);
    Ipv4::new(src, dst, 17).push(&mut f, 8 + payload);
    udp(&mut f, sport, dport, &vec![0xab; payload]);
    f
}

pub fn ipv6_header(f: &mut Vec<u8>, src: [u8; 16], dst: [u8; 16], next: u8, payload_len: usize) {
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload_len as u16).to_be_bytes());
    f.push(next);
    f.push(64);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("test address").octets()
}

pub fn arp_request(src_mac: [u8; 6], src: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = eth([0xff; 6], src_mac, ETH_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}
