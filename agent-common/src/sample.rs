//! Header sampling: what the program hands to userspace through the `SAMPLES` ring buffer, and
//! the few-byte content checks that decide it. Ports are hints; content decides wherever the
//! payload says what it is (the talk has HTTP on 8815 and SSDP answers from port 3075).

use crate::ConvKey;

/// Ring buffer of [`Sample`] records; its size in bytes is a loader option.
pub const SAMPLES: &str = "SAMPLES";
/// Per-CPU array of `u64`: index `kind * OUTCOMES + outcome`.
pub const SAMPLE_STATS: &str = "SAMPLE_STATS";
/// LRU per-CPU hash keyed by [`crate::MacKey`]: a token bucket per source.
pub const RATE_LIMIT: &str = "RATE_LIMIT";

/// Bytes of the frame (from its Ethernet header) a record can hold: a DHCP message's options
/// start 240 bytes into it, the talk's mDNS responses are over 500 bytes.
pub const SAMPLE_MAX: usize = 1536;
/// Default ring size: a power of two and a multiple of the page size.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
pub const DEFAULT_RATE_LIMIT_SOURCES: u32 = 1024;

/// Read-only globals set at load (u32 each).
pub const GLOBAL_SNAPLEN: &str = "SAMPLE_SNAPLEN";
pub const GLOBAL_FIRST_PACKETS: &str = "SAMPLE_FIRST_PACKETS";
pub const GLOBAL_RATE: &str = "SAMPLE_RATE";
pub const GLOBAL_BURST: &str = "SAMPLE_BURST";
pub const DEFAULT_FIRST_PACKETS: u32 = 2;
/// Samples per second and per source (per CPU), and the burst a source may spend at once.
pub const DEFAULT_RATE: u32 = 20;
pub const DEFAULT_BURST: u32 = 200;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleKind {
    Ssdp = 0,
    Mdns = 1,
    Ntp = 2,
    Http = 3,
    Dns = 4,
    Dhcp = 5,
    Tls = 6,
    Mqtt = 7,
    /// One of the first packets of a new conversation that no other kind claimed.
    Flow = 8,
}

pub const KINDS: usize = 9;

impl SampleKind {
    pub const ALL: [SampleKind; KINDS] = [
        SampleKind::Ssdp,
        SampleKind::Mdns,
        SampleKind::Ntp,
        SampleKind::Http,
        SampleKind::Dns,
        SampleKind::Dhcp,
        SampleKind::Tls,
        SampleKind::Mqtt,
        SampleKind::Flow,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < KINDS { Some(Self::ALL[v as usize]) } else { None }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The event kind in reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            SampleKind::Ssdp => "ssdp",
            SampleKind::Mdns => "mdns",
            SampleKind::Ntp => "ntp",
            SampleKind::Http => "http",
            SampleKind::Dns => "dns",
            SampleKind::Dhcp => "dhcp",
            SampleKind::Tls => "tls",
            SampleKind::Mqtt => "mqtt",
            SampleKind::Flow => "flow",
        }
    }
}

/// What became of a frame chosen for sampling.
pub mod outcome {
    pub const SENT: usize = 0;
    /// The ring buffer was full.
    pub const DROPPED: usize = 1;
    /// Its source was over its rate.
    pub const SUPPRESSED: usize = 2;
    pub const OUTCOMES: usize = 3;
    pub const NAMES: [&str; OUTCOMES] = ["sent", "dropped", "suppressed"];
}

pub const SAMPLE_STATS_LEN: u32 = (KINDS * outcome::OUTCOMES) as u32;

pub mod direction {
    /// Arrived on a bridge port (from a device).
    pub const INGRESS: u8 = 0;
    /// Sent by the host into the bridge.
    pub const EGRESS: u8 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// Program clock: monotonic live, capture time in replay.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// The frame's length on the wire (one segment's worth is not known for GSO: the buffer's).
    pub wire_len: u32,
    /// Bytes of the frame in `data`.
    pub cap_len: u32,
    /// Offset of the TCP/UDP payload in `data`.
    pub payload_off: u16,
    pub kind: u8,
    pub direction: u8,
    /// Addresses and ports, as the program parsed them.
    pub key: ConvKey,
    pub _pad: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub header: SampleHeader,
    pub data: [u8; SAMPLE_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Thousandths of a sample.
    pub milli_tokens: u64,
    pub last_ns: u64,
}

const _: () = assert!(core::mem::size_of::<SampleHeader>() == 80);
const _: () = assert!(core::mem::size_of::<Sample>() == 80 + SAMPLE_MAX);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer fields and explicit padding only (sizes asserted above).
    unsafe impl aya::Pod for super::SampleHeader {}
    unsafe impl aya::Pod for super::TokenBucket {}
}

/// Bytes of payload the content checks look at.
pub const PEEK: usize = 12;

#[inline(always)]
const fn starts(peek: &[u8; PEEK], prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() {
        if peek[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
const fn either(sport: u16, dport: u16, port: u16) -> bool {
    sport == port || dport == port
}

/// SSDP text on any port: discovery, announcements and the unicast answers to discovery.
#[inline(always)]
pub const fn is_ssdp_text(peek: &[u8; PEEK]) -> bool {
    starts(peek, b"M-SEARCH") || starts(peek, b"NOTIFY *") || starts(peek, b"HTTP/1.1 200")
}

#[inline(always)]
pub const fn is_http(peek: &[u8; PEEK]) -> bool {
    starts(peek, b"GET ")
        || starts(peek, b"POST ")
        || starts(peek, b"PUT ")
        || starts(peek, b"HEAD ")
        || starts(peek, b"DELETE ")
        || starts(peek, b"OPTIONS ")
        || starts(peek, b"PATCH ")
        || starts(peek, b"HTTP/1.")
}

/// A TLS handshake record (22) of version 3.x whose first message is a ClientHello (1).
#[inline(always)]
pub const fn is_tls_client_hello(peek: &[u8; PEEK]) -> bool {
    peek[0] == 0x16 && peek[1] == 0x03 && peek[2] <= 0x04 && peek[5] == 0x01
}

/// MQTT CONNECT (0x10) with a 1- or 2-byte remaining length and protocol name "MQTT" (3.1.1, 5)
/// or "MQIsdp" (3.1).
#[inline(always)]
pub const fn is_mqtt_connect(peek: &[u8; PEEK]) -> bool {
    if peek[0] != 0x10 {
        return false;
    }
    let name = if peek[1] & 0x80 == 0 { 2 } else { 3 };
    (peek[name] == 0 && peek[name + 1] == 4 && peek[name + 2] == b'M' && peek[name + 3] == b'Q' && peek[name + 4] == b'T' && peek[name + 5] == b'T')
        || (peek[name] == 0 && peek[name + 1] == 6 && peek[name + 2] == b'M' && peek[name + 3] == b'Q' && peek[name + 4] == b'I' && peek[name + 5] == b's')
}

/// Kind of a UDP datagram; `peek` is `None` when the payload is shorter than [`PEEK`].
#[inline(always)]
pub const fn classify_udp(sport: u16, dport: u16, peek: Option<&[u8; PEEK]>) -> Option<SampleKind> {
    if either(sport, dport, 5353) {
        return Some(SampleKind::Mdns);
    }
    if either(sport, dport, 1900) {
        return Some(SampleKind::Ssdp);
    }
    if either(sport, dport, 123) {
        return Some(SampleKind::Ntp);
    }
    if either(sport, dport, 53) {
        return Some(SampleKind::Dns);
    }
    if either(sport, dport, 67) || either(sport, dport, 68) || either(sport, dport, 546) || either(sport, dport, 547) {
        return Some(SampleKind::Dhcp);
    }
    match peek {
        Some(p) if is_ssdp_text(p) => Some(SampleKind::Ssdp),
        _ => None,
    }
}

/// Kind of a TCP segment with payload; `peek` is `None` when the payload is shorter than [`PEEK`].
#[inline(always)]
pub const fn classify_tcp(sport: u16, dport: u16, peek: Option<&[u8; PEEK]>) -> Option<SampleKind> {
    if either(sport, dport, 53) {
        return Some(SampleKind::Dns);
    }
    let Some(p) = peek else { return None };
    if is_http(p) {
        Some(SampleKind::Http)
    } else if is_tls_client_hello(p) {
        Some(SampleKind::Tls)
    } else if is_mqtt_connect(p) || (either(sport, dport, 1883) && p[0] >> 4 == 3) {
        // CONNECT anywhere; PUBLISH (type 3) only on MQTT's port: its header is too generic.
        Some(SampleKind::Mqtt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(b: &[u8]) -> [u8; PEEK] {
        let mut p = [0u8; PEEK];
        p[..b.len().min(PEEK)].copy_from_slice(&b[..b.len().min(PEEK)]);
        p
    }

    #[test]
    fn udp_by_port_then_by_content() {
        assert_eq!(classify_udp(5353, 5353, None), Some(SampleKind::Mdns));
        assert_eq!(classify_udp(40000, 1900, None), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(123, 40000, None), Some(SampleKind::Ntp));
        assert_eq!(classify_udp(68, 67, None), Some(SampleKind::Dhcp));
        assert_eq!(classify_udp(546, 547, None), Some(SampleKind::Dhcp));
        assert_eq!(classify_udp(53, 40000, None), Some(SampleKind::Dns));
        // The talk: the answer to discovery comes from port 3075 to 58002.
        assert_eq!(classify_udp(3075, 58002, Some(&peek(b"HTTP/1.1 200 OK\r\n"))), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(40000, 40001, Some(&peek(b"M-SEARCH * HTTP/1.1"))), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(27091, 6000, Some(&peek(b"\x01\x02binary stuff"))), None);
        assert_eq!(classify_udp(27091, 6000, None), None);
    }

    #[test]
    fn tcp_by_content_on_any_port() {
        assert_eq!(classify_tcp(43412, 8815, Some(&peek(b"GET /rootdesc.xml HTTP/1.1"))), Some(SampleKind::Http));
        assert_eq!(classify_tcp(8088, 16210, Some(&peek(b"HTTP/1.1 206 Partial"))), Some(SampleKind::Http));
        assert_eq!(classify_tcp(50000, 443, Some(&peek(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 0]))), Some(SampleKind::Tls));
        assert_eq!(classify_tcp(50000, 443, Some(&peek(&[0x17, 0x03, 0x03, 0x02, 0x00, 0x01]))), None, "application data");
        let connect = [0x10, 0x1a, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
        assert_eq!(classify_tcp(50000, 31006, Some(&connect)), Some(SampleKind::Mqtt));
        let connect31 = [0x10, 0x1c, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02];
        assert_eq!(classify_tcp(50000, 1884, Some(&connect31)), Some(SampleKind::Mqtt));
        assert_eq!(classify_tcp(50000, 1883, Some(&peek(&[0x30, 0x0c, 0x00, 0x04, b't']))), Some(SampleKind::Mqtt));
        assert_eq!(classify_tcp(50000, 8080, Some(&peek(&[0x30, 0x0c, 0x00, 0x04, b't']))), None);
        assert_eq!(classify_tcp(50000, 53, None), Some(SampleKind::Dns));
        assert_eq!(classify_tcp(50000, 80, None), None);
    }

    #[test]
    fn kinds_round_trip() {
        for k in SampleKind::ALL {
            assert_eq!(SampleKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(SampleKind::from_u8(9), None);
    }
}
