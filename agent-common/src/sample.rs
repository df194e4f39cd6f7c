//! Header sampling: what the program hands to userspace through the `SAMPLES` ring buffer, and
//! the few-byte content checks that decide it. Ports are hints; content decides wherever the
//! payload says what it is (the talk has HTTP on 8815 and SSDP answers from port 3075).

use crate::ConvKey;

/// Ring buffer of [`Sample`] records; its size in bytes is a loader option.
pub const SAMPLES: &str = "SAMPLES";

/// Bytes of the frame (from its Ethernet header) a record can hold: a DHCP message's options
/// start 240 bytes into it, the talk's mDNS responses are over 500 bytes.
pub const SAMPLE_MAX: usize = 1536;
/// Default ring size: a power of two and a multiple of the page size.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Read-only globals set at load (u32 each).
pub const GLOBAL_SNAPLEN: &str = "SAMPLE_SNAPLEN";
pub const GLOBAL_FIRST_PACKETS: &str = "SAMPLE_FIRST_PACKETS";
pub const GLOBAL_RATE: &str = "SAMPLE_RATE";
pub const GLOBAL_BURST: &str = "SAMPLE_BURST";
pub const GLOBAL_CPU_RATE: &str = "SAMPLE_CPU_RATE";
pub const GLOBAL_NEW_SOURCE_RATE: &str = "SAMPLE_NEW_SOURCE_RATE";
pub const DEFAULT_FIRST_PACKETS: u32 = 2;
/// Samples per second and per source (per CPU), and the burst a source may save up.
pub const DEFAULT_RATE: u32 = 20;
pub const DEFAULT_BURST: u32 = 200;
/// What a source starts with: enough for a device's first DHCP and DNS exchange, not the whole
/// burst (a thousand spoofed MACs would otherwise bring a burst each).
pub const NEW_SOURCE_TOKENS: u64 = 5;
/// A source is new for this long after the program first counted it (on that CPU): its samples
/// also draw on the CPU's budget for new sources, which a flood of spoofed MACs exhausts without
/// touching the budget that known devices draw on.
pub const NEW_SOURCE_NS: u64 = 1_000_000_000;
/// Samples per second per CPU from all new sources together (the burst is one second's worth).
pub const DEFAULT_NEW_SOURCE_RATE: u32 = 50;
/// Samples per second per CPU, whatever the number of sources (the burst is one second's worth):
/// what bounds the ring and the agent's work under any flood.
pub const DEFAULT_CPU_RATE: u32 = 1000;

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
    /// An ICMP or ICMPv6 destination unreachable: it quotes the datagram it answers (the talk: a
    /// gateway answering a device's DNS queries with port unreachable).
    Icmp = 9,
}

pub const KINDS: usize = 10;

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
        SampleKind::Icmp,
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
            SampleKind::Icmp => "icmp",
        }
    }
}

/// What became of a frame chosen for sampling.
pub mod outcome {
    pub const SENT: usize = 0;
    /// The ring buffer was full.
    pub const DROPPED: usize = 1;
    /// Its source was over its rate (or, new, the CPU's budget for new sources was spent).
    pub const SUPPRESSED: usize = 2;
    /// The CPU's budget for all sources was spent.
    pub const CAPPED: usize = 3;
    pub const OUTCOMES: usize = 4;
    pub const NAMES: [&str; OUTCOMES] = ["sent", "dropped", "suppressed", "capped"];
}

/// Sample counters: index `kind * OUTCOMES + outcome`.
pub const SAMPLE_STATS_LEN: usize = KINDS * outcome::OUTCOMES;

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
    /// Replay: the frame's place in its test run's batch (see [`crate::ReplayBatch`]), which
    /// tells the replay which frame made the record. 0 live.
    pub batch_index: u32,
}

/// A record as the program builds it. In the ring it is cut after `cap_len` bytes of `data`:
/// a DNS query takes 160 bytes of the ring, not 1,616.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub header: SampleHeader,
    pub data: [u8; SAMPLE_MAX],
}

/// A token bucket on the program clock (capture time in replay, so a replay samples the same
/// however fast it runs), in thousandths of a sample so that slow rates refill smoothly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub milli_tokens: u64,
    /// Last refill; 0 = never used (a clock reading of 0 is stored as 1).
    pub last_ns: u64,
}

impl TokenBucket {
    /// Refills for the time since the last call, up to `burst` samples; a bucket never used
    /// starts with `initial`. Time going backwards refills nothing; at most 1,000 s are counted
    /// at once, which keeps the product below `u64::MAX`.
    #[inline(always)]
    pub fn refill(&mut self, now_ns: u64, rate: u64, burst: u64, initial: u64) {
        let full = burst * 1000;
        if self.last_ns == 0 {
            self.milli_tokens = if initial < burst { initial } else { burst } * 1000;
            self.last_ns = if now_ns == 0 { 1 } else { now_ns };
            return;
        }
        if now_ns > self.last_ns {
            let elapsed =
                if now_ns - self.last_ns < 1_000_000_000_000 { now_ns - self.last_ns } else { 1_000_000_000_000 };
            let tokens = self.milli_tokens + elapsed * rate / 1_000_000;
            self.milli_tokens = if tokens < full { tokens } else { full };
            self.last_ns = now_ns;
        }
    }

    #[inline(always)]
    pub const fn has_one(&self) -> bool {
        self.milli_tokens >= 1000
    }

    /// Spends one sample; call only after [`TokenBucket::has_one`].
    #[inline(always)]
    pub fn spend(&mut self) {
        self.milli_tokens -= 1000;
    }
}

const _: () = assert!(core::mem::size_of::<SampleHeader>() == 80);
const _: () = assert!(core::mem::size_of::<Sample>() == 80 + SAMPLE_MAX);

#[cfg(feature = "user")]
crate::pod!(SampleHeader, TokenBucket);

/// Bytes of payload the content checks look at.
pub const PEEK: usize = 12;

/// The first [`PEEK`] bytes of a payload, held as two little-endian words so that every content
/// check is a mask and a compare on scalars. A payload that ends before [`PEEK`] bytes reads as
/// [`Peek::EMPTY`], which no check matches (every prefix looked for starts with a non-zero byte).
///
/// Why words and not the `Option<&[u8; PEEK]>` compared byte by byte that came before: 6.1's
/// verifier refused that (TC: `R4 !read_ok`, a register one path left unset; XDP: `bitwise
/// operator &= on pointer prohibited`, LLVM masking the pointer-or-null it made of the option).
/// Two scalars passed by value leave it nothing to lose track of. Keep it that way: users run
/// kernels from 6.1 on, and the 6.18 verifier of this machine accepts both forms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peek {
    head: u64,
    tail: u32,
}

impl Peek {
    pub const EMPTY: Peek = Peek { head: 0, tail: 0 };

    #[inline(always)]
    pub const fn new(b: [u8; PEEK]) -> Self {
        Peek {
            head: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            tail: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// The peek the kernel takes of `payload`: [`Peek::EMPTY`] when it is shorter than [`PEEK`].
    pub const fn of(payload: &[u8]) -> Self {
        match payload.first_chunk::<PEEK>() {
            Some(b) => Peek::new(*b),
            None => Peek::EMPTY,
        }
    }

    #[inline(always)]
    pub const fn byte(self, i: usize) -> u8 {
        if i < 8 { (self.head >> (8 * i)) as u8 } else { (self.tail >> (8 * (i - 8))) as u8 }
    }

    #[inline(always)]
    pub const fn starts(self, p: Prefix) -> bool {
        self.head & p.head_mask == p.head && self.tail & p.tail_mask == p.tail
    }
}

/// A payload prefix of up to [`PEEK`] bytes as the masks and values [`Peek::starts`] compares;
/// built in `const` items so that the program only holds the constants.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    head: u64,
    head_mask: u64,
    tail: u32,
    tail_mask: u32,
}

impl Prefix {
    pub const fn new(text: &[u8]) -> Self {
        assert!(text.len() <= PEEK, "a prefix is at most PEEK bytes");
        let mut p = Prefix { head: 0, head_mask: 0, tail: 0, tail_mask: 0 };
        let mut i = 0;
        while i < text.len() {
            if i < 8 {
                p.head |= (text[i] as u64) << (8 * i);
                p.head_mask |= 0xff << (8 * i);
            } else {
                p.tail |= (text[i] as u32) << (8 * (i - 8));
                p.tail_mask |= 0xff << (8 * (i - 8));
            }
            i += 1;
        }
        p
    }
}

#[inline(always)]
const fn either(sport: u16, dport: u16, port: u16) -> bool {
    sport == port || dport == port
}

const M_SEARCH: Prefix = Prefix::new(b"M-SEARCH");
const NOTIFY: Prefix = Prefix::new(b"NOTIFY *");
const HTTP_200: Prefix = Prefix::new(b"HTTP/1.1 200");
const HTTP_RESPONSE: Prefix = Prefix::new(b"HTTP/1.");
const HTTP_METHODS: [Prefix; 7] = [
    Prefix::new(b"GET "),
    Prefix::new(b"POST "),
    Prefix::new(b"PUT "),
    Prefix::new(b"HEAD "),
    Prefix::new(b"DELETE "),
    Prefix::new(b"OPTIONS "),
    Prefix::new(b"PATCH "),
];

/// SSDP text on any port: discovery, announcements and the unicast answers to discovery.
#[inline(always)]
pub const fn is_ssdp_text(peek: Peek) -> bool {
    peek.starts(M_SEARCH) || peek.starts(NOTIFY) || peek.starts(HTTP_200)
}

#[inline(always)]
pub const fn is_http(peek: Peek) -> bool {
    let mut i = 0;
    while i < HTTP_METHODS.len() {
        if peek.starts(HTTP_METHODS[i]) {
            return true;
        }
        i += 1;
    }
    peek.starts(HTTP_RESPONSE)
}

/// A TLS handshake record (22) of version 3.x whose first message is a ClientHello (1).
#[inline(always)]
pub const fn is_tls_client_hello(peek: Peek) -> bool {
    peek.byte(0) == 0x16 && peek.byte(1) == 0x03 && peek.byte(2) <= 0x04 && peek.byte(5) == 0x01
}

/// MQTT CONNECT (0x10) with a 1- or 2-byte remaining length and protocol name "MQTT" (3.1.1, 5)
/// or "MQIsdp" (3.1).
#[inline(always)]
pub const fn is_mqtt_connect(peek: Peek) -> bool {
    if peek.byte(0) != 0x10 {
        return false;
    }
    let n = if peek.byte(1) & 0x80 == 0 { 2 } else { 3 };
    let (len, b4, b5) = (peek.byte(n + 1), peek.byte(n + 4), peek.byte(n + 5));
    peek.byte(n) == 0
        && peek.byte(n + 2) == b'M'
        && peek.byte(n + 3) == b'Q'
        && ((len == 4 && b4 == b'T' && b5 == b'T') || (len == 6 && b4 == b'I' && b5 == b's'))
}

/// Kind of a UDP datagram by port, then by content.
#[inline(always)]
pub const fn classify_udp(sport: u16, dport: u16, peek: Peek) -> Option<SampleKind> {
    match udp_by_port(sport, dport) {
        Some(kind) => Some(kind),
        None if is_ssdp_text(peek) => Some(SampleKind::Ssdp),
        None => None,
    }
}

/// Kind of a UDP datagram by its ports alone: the program needs no look at the payload then.
#[inline(always)]
pub const fn udp_by_port(sport: u16, dport: u16) -> Option<SampleKind> {
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
    None
}

/// ICMP destination unreachable (type 3) and ICMPv6 destination unreachable (type 1); echo and
/// the rest are counted, not sampled.
#[inline(always)]
pub const fn classify_icmp(proto: u8, peek: Peek) -> Option<SampleKind> {
    let unreachable = match proto {
        crate::wire::ip_proto::ICMP => 3,
        crate::wire::ip_proto::ICMPV6 => 1,
        _ => return None,
    };
    if peek.byte(0) == unreachable { Some(SampleKind::Icmp) } else { None }
}

/// Kind of a TCP segment with payload, by content (DNS by port).
#[inline(always)]
pub const fn classify_tcp(sport: u16, dport: u16, peek: Peek) -> Option<SampleKind> {
    if either(sport, dport, 53) {
        return Some(SampleKind::Dns);
    }
    if is_http(peek) {
        Some(SampleKind::Http)
    } else if is_tls_client_hello(peek) {
        Some(SampleKind::Tls)
    } else if is_mqtt_connect(peek) || (either(sport, dport, 1883) && peek.byte(0) >> 4 == 3) {
        // CONNECT anywhere; PUBLISH (type 3) only on MQTT's port: its header is too generic.
        Some(SampleKind::Mqtt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `b` zero-padded to PEEK bytes (as a frame's padding would read).
    fn peek(b: &[u8]) -> Peek {
        let mut p = [0u8; PEEK];
        p[..b.len().min(PEEK)].copy_from_slice(&b[..b.len().min(PEEK)]);
        Peek::new(p)
    }

    #[test]
    fn icmp_unreachables_only() {
        assert_eq!(classify_icmp(1, peek(&[3, 3])), Some(SampleKind::Icmp));
        assert_eq!(classify_icmp(58, peek(&[1, 4])), Some(SampleKind::Icmp));
        assert_eq!(classify_icmp(1, peek(&[8, 0])), None, "echo request");
        assert_eq!(classify_icmp(58, peek(&[128, 0])), None, "ICMPv6 echo request");
        assert_eq!(classify_icmp(58, peek(&[3, 0])), None, "ICMPv6 type 3 is time exceeded");
        assert_eq!(classify_icmp(17, peek(&[3, 3])), None);
    }

    #[test]
    fn udp_by_port_then_by_content() {
        assert_eq!(classify_udp(5353, 5353, Peek::EMPTY), Some(SampleKind::Mdns));
        assert_eq!(classify_udp(40000, 1900, Peek::EMPTY), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(123, 40000, Peek::EMPTY), Some(SampleKind::Ntp));
        assert_eq!(classify_udp(68, 67, Peek::EMPTY), Some(SampleKind::Dhcp));
        assert_eq!(classify_udp(546, 547, Peek::EMPTY), Some(SampleKind::Dhcp));
        assert_eq!(classify_udp(53, 40000, Peek::EMPTY), Some(SampleKind::Dns));
        // The talk: the answer to discovery comes from port 3075 to 58002.
        assert_eq!(classify_udp(3075, 58002, peek(b"HTTP/1.1 200 OK\r\n")), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(40000, 40001, peek(b"M-SEARCH * HTTP/1.1")), Some(SampleKind::Ssdp));
        assert_eq!(classify_udp(27091, 6000, peek(b"\x01\x02binary stuff")), None);
        assert_eq!(classify_udp(27091, 6000, Peek::EMPTY), None);
    }

    #[test]
    fn tcp_by_content_on_any_port() {
        assert_eq!(classify_tcp(43412, 8815, peek(b"GET /rootdesc.xml HTTP/1.1")), Some(SampleKind::Http));
        assert_eq!(classify_tcp(8088, 16210, peek(b"HTTP/1.1 206 Partial")), Some(SampleKind::Http));
        assert_eq!(classify_tcp(50000, 443, peek(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 0])), Some(SampleKind::Tls));
        assert_eq!(classify_tcp(50000, 443, peek(&[0x17, 0x03, 0x03, 0x02, 0x00, 0x01])), None, "application data");
        let connect = [0x10, 0x1a, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
        assert_eq!(classify_tcp(50000, 31006, Peek::new(connect)), Some(SampleKind::Mqtt));
        let connect31 = [0x10, 0x1c, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02];
        assert_eq!(classify_tcp(50000, 1884, Peek::new(connect31)), Some(SampleKind::Mqtt));
        assert_eq!(classify_tcp(50000, 1883, peek(&[0x30, 0x0c, 0x00, 0x04, b't'])), Some(SampleKind::Mqtt));
        assert_eq!(classify_tcp(50000, 8080, peek(&[0x30, 0x0c, 0x00, 0x04, b't'])), None);
        assert_eq!(classify_tcp(50000, 53, Peek::EMPTY), Some(SampleKind::Dns));
        assert_eq!(classify_tcp(50000, 80, Peek::EMPTY), None);
    }

    #[test]
    fn words_compare_like_bytes() {
        // Every byte of a 12-byte prefix counts, the tail word included.
        assert_eq!(classify_udp(40000, 40001, peek(b"HTTP/1.1 404 Not Found")), None);
        assert!(peek(b"HTTP/1.0 200").starts(HTTP_RESPONSE));
        let inputs: [&[u8]; 6] =
            [b"GET / HTTP/1.1", b"GET/", b"POST /x", b"HTTP/1.1 200 OK", b"M-SEARCH * H", b"NOTIFY * HTTP"];
        for input in inputs {
            for text in [&b"GET "[..], b"POST ", b"HTTP/1.1 200", b"M-SEARCH", b"NOTIFY *"] {
                assert_eq!(peek(input).starts(Prefix::new(text)), input.starts_with(text), "{input:?} {text:?}");
            }
        }
        // What the kernel reads of a payload shorter than PEEK: nothing to match.
        assert_eq!(Peek::of(b"GET /"), Peek::EMPTY);
        assert_eq!(Peek::of(b"GET / HTTP/1.1"), peek(b"GET / HTTP/1.1"));
        assert_eq!(peek(b"\x16\x03\x01\x02\x00\x01").byte(5), 1);
        assert_eq!(peek(b"0123456789ab").byte(11), b'b');
    }

    #[test]
    fn buckets_start_small_refill_and_cap() {
        let mut b = TokenBucket::default();
        b.refill(5_000_000_000, 2, 10, 3);
        assert_eq!(b.milli_tokens, 3000, "a new bucket starts with its initial samples");
        for _ in 0..3 {
            assert!(b.has_one());
            b.spend();
        }
        assert!(!b.has_one());
        b.refill(5_500_000_000, 2, 10, 3);
        assert_eq!(b.milli_tokens, 1000, "half a second at 2/s");
        b.refill(4_000_000_000, 2, 10, 3);
        assert_eq!(b.milli_tokens, 1000, "time going backwards refills nothing");
        b.refill(u64::MAX, 2, 10, 3);
        assert_eq!(b.milli_tokens, 10_000, "at most the burst");
        let mut zero = TokenBucket::default();
        zero.refill(0, 2, 10, 20);
        assert_eq!((zero.milli_tokens, zero.last_ns), (10_000, 1), "initial at most the burst; time 0 kept as 1");
    }

    #[test]
    fn kinds_round_trip() {
        for k in SampleKind::ALL {
            assert_eq!(SampleKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(SampleKind::from_u8(KINDS as u8), None);
    }
}
