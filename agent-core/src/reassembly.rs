//! TCP's first bytes put back together before they are classified, and retransmissions dropped.
//!
//! Why: the kernel samples segments, and a message does not always start and end in one
//! segment. Some stacks send an HTTP request's method alone (`POST ` in a 5-byte segment) and the
//! rest next; others cut a head anywhere (`GET /firmware/cam-5.3` + `.0.bin HTTP/1.1...`). Alone,
//! neither segment makes an HTTP event: the kernel's content check reads 12 bytes, so `POST `
//! goes out as a conversation's first-packet `flow` sample, and so does its continuation, which
//! starts with no method. And a retransmitted segment (a real one, or a capture where each frame
//! passes twice) is not a new message: it must not make a second event (shared/design.md,
//! "Userspace").
//!
//! What happens to a sampled TCP segment (any other sample passes through untouched):
//! 1. Its TCP header is found by walking the frame forward (Ethernet, up to four VLAN tags, a
//!    PPPoE session, IPv4 with options or IPv6 with extension headers), as the kernel's parser
//!    walks it. The header must end exactly where the kernel said the payload starts; a segment
//!    that does not parse so, or a fragment, passes through untouched.
//! 2. A repeat is dropped: same directional conversation, sequence number, length and payload
//!    as one of the last [`Limits::recent_segments`] TCP segments (kept as 64-bit fingerprints;
//!    two different segments share one with odds of about 2^-64 per pair).
//! 3. An incomplete head is held for its conversation direction: a payload that is a strict
//!    prefix of a method or of `HTTP/1.` (the kernel's list, [`classify_tcp`]), or a head that the
//!    HTTP parser finds cut, when the segment was captured to its end. The next segment of that
//!    direction that starts where it ended (`seq == held.seq + held.len`) is joined to it; the
//!    joined bytes are classified with the kernel's own content check ([`classify_tcp`]) and make
//!    one message, with the first segment's header and time. Still incomplete, they wait for the
//!    next segment, up to [`Limits::max_bytes`]. Bytes that turn out to be no protocol go out as
//!    the segments they came in, unchanged.
//! 4. A held head is never lost: it goes out as it came when the next segment of its direction
//!    does not continue it, when it has waited [`Limits::hold_ns`] of the samples' clock, when the
//!    table of held heads is full (the least recently used goes first), and on [`Reassembler::flush`]
//!    (replay's end, the agent's exit).
//!
//! Only in-order joining: a continuation that arrives before its head passes through alone.
//! Samples of one direction reach userspace in the order the program saw them (live, one
//! conversation's frames come in on one queue; replay hands records on in frame order). A
//! retransmission that repacketizes (same start, more bytes) is not a repeat by rule 2; when it
//! covers a held head, the head is dropped for it (counted as a retransmission).
//!
//! Bounds: at most [`Limits::max_held`] held heads of at most [`Limits::max_bytes`] each (8 MiB at
//! the very worst; a held method is 5 bytes), and [`Limits::recent_segments`] fingerprints.
//!
//! Written here rather than with a crate: a TCP reassembly crate rebuilds whole streams from
//! every segment, and we see sampled segments only and need two or three of them joined; the
//! frame walk follows the kernel's rules (etherparse's sliced packet holds at most two VLAN tags
//! and knows no PPPoE).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    hash::{DefaultHasher, Hash as _, Hasher as _},
};

use agent_common::{
    ConvKey, MAX_IPV6_EXT_HEADERS, MAX_VLAN_DEPTH,
    sample::{Peek, SampleHeader, SampleKind, classify_tcp},
    wire::{ether_type, ip_proto, ppp},
};

use crate::proto::http;

/// The bounds of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Conversation directions with a held head.
    pub max_held: usize,
    /// Bytes held per direction: a head longer than this goes out cut (and says so).
    pub max_bytes: usize,
    /// TCP segments remembered to tell a retransmission.
    pub recent_segments: usize,
    /// How long a held head waits for its continuation, on the samples' clock.
    pub hold_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_held: 4096, max_bytes: 2048, recent_segments: 8192, hold_ns: 5_000_000_000 }
    }
}

/// What the reassembly did (the report's `agent` section).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Segments joined to the held head before them.
    pub segments_joined: u64,
    /// Held heads that went out alone: no continuation came in time, or at all.
    pub segments_unjoined: u64,
    /// Of those, the heads pushed out because the table was full.
    pub evictions: u64,
    /// TCP segments dropped as repeats of one already seen.
    pub retransmissions: u64,
}

/// A sample's payload on its way to a parser: the header of its (first) segment, the kind its
/// bytes were classified as, and the bytes (joined when several segments made it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: SampleHeader,
    pub kind: SampleKind,
    pub payload: Cow<'a, [u8]>,
}

/// A TCP segment in a sampled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    pub seq: u32,
    /// Payload bytes on the wire, by the IP header.
    pub len: usize,
    /// Where its payload ends in the captured frame (before the Ethernet padding, or where the
    /// capture stopped).
    pub end: usize,
}

impl TcpSegment {
    /// The whole payload was captured.
    pub fn whole(&self, payload_off: usize) -> bool {
        self.end - payload_off == self.len
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The TCP segment of `frame` (from its Ethernet header) whose payload the kernel found at
/// `payload_off`; `None` when it is not TCP, a fragment, its IP length is too short (0, as TSO
/// leaves it), the walk does not end at `payload_off`, or the capture ends before it.
pub fn tcp_segment(frame: &[u8], payload_off: usize) -> Option<TcpSegment> {
    let mut ether = be16(frame, 12)?;
    let mut off = 14;
    for _ in 0..MAX_VLAN_DEPTH {
        if ether != ether_type::VLAN && ether != ether_type::QINQ {
            break;
        }
        ether = be16(frame, off + 2)?;
        off += 4;
    }
    if ether == ether_type::PPPOE_SESSION {
        let (protocol, field_len) = ppp::protocol(*frame.get(off + 6)?, *frame.get(off + 7)?);
        ether = match protocol {
            ppp::IPV4 => ether_type::IPV4,
            ppp::IPV6 => ether_type::IPV6,
            _ => return None,
        };
        off += ppp::PPPOE_LEN + field_len;
    }
    let (l4, ip_end) = match ether {
        ether_type::IPV4 => {
            let vihl = *frame.get(off)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            let (total, frags) = (usize::from(be16(frame, off + 2)?), be16(frame, off + 6)?);
            if vihl >> 4 != 4 || ihl < 20 || frags & 0x3fff != 0 || *frame.get(off + 9)? != ip_proto::TCP {
                return None;
            }
            (off + ihl, off + total)
        }
        ether_type::IPV6 => {
            if frame.get(off)? >> 4 != 6 {
                return None;
            }
            let ip_end = off + 40 + usize::from(be16(frame, off + 4)?);
            let (mut next, mut at) = (*frame.get(off + 6)?, off + 40);
            for _ in 0..MAX_IPV6_EXT_HEADERS {
                if !ip_proto::is_ipv6_extension(next) {
                    break;
                }
                let len = usize::from(*frame.get(at + 1)?);
                let this = next;
                next = *frame.get(at)?;
                at += match this {
                    ip_proto::IPV6_FRAGMENT => return None,
                    ip_proto::IPV6_AH => (len + 2) * 4,
                    _ => (len + 1) * 8,
                };
            }
            if next != ip_proto::TCP {
                return None;
            }
            (at, ip_end)
        }
        _ => return None,
    };
    let doff = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let end = ip_end.min(frame.len());
    // The payload must start where the kernel said, and the capture must reach it.
    if doff < 20 || l4 + doff != payload_off || end < payload_off {
        return None;
    }
    let seq = u32::from_be_bytes(frame.get(l4 + 4..l4 + 8)?.try_into().ok()?);
    Some(TcpSegment { seq, len: ip_end - payload_off, end })
}

/// The starts the kernel recognises HTTP by (agent_common's `is_http`, checked by a test).
const HTTP_STARTS: [&[u8]; 8] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"HTTP/1."];

/// Bytes that a following segment may turn into an HTTP head, or complete one: a strict prefix
/// of a method or of `HTTP/1.`, or a head the HTTP parser finds cut.
pub fn incomplete_head(b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    if HTTP_STARTS.iter().any(|s| b.len() < s.len() && s.starts_with(b)) {
        return true;
    }
    http::looks_like_http(b) && http::parse(b).is_ok_and(|ev| ev.truncated)
}

/// A head waiting for its continuation.
#[derive(Debug)]
struct Held {
    /// The first segment's header: its time and conversation go out with the message.
    header: SampleHeader,
    /// The payload so far, segments joined in sequence order.
    bytes: Vec<u8>,
    /// Where the first segment starts, and where the next one must.
    first_seq: u32,
    next_seq: u32,
    /// Segments joined after the first.
    joined: u64,
    /// The latest segment's time, and its place in the least-recently-used order.
    last_ns: u64,
    tick: u64,
}

/// See the module's documentation.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    held: HashMap<ConvKey, Held>,
    /// Held heads by their last use, oldest first.
    order: BTreeMap<u64, ConvKey>,
    tick: u64,
    /// Fingerprints of recent TCP segments, and their arrival order (oldest first).
    recent: HashSet<u64>,
    recent_order: VecDeque<u64>,
    pub stats: ReassemblyStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

fn kind_of(h: &SampleHeader) -> SampleKind {
    SampleKind::from_u8(h.kind).unwrap_or(SampleKind::Flow)
}

fn fingerprint(key: &ConvKey, seg: &TcpSegment, payload: &[u8]) -> u64 {
    // SipHash with fixed keys: the same on every run, so a replay's events are too.
    let mut h = DefaultHasher::new();
    (key, seg.seq, seg.len, payload).hash(&mut h);
    h.finish()
}

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            held: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// Heads held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes one sample (`h` and the frame's captured bytes); returns the messages it completes
    /// or lets go, oldest first: none (a repeat, or a head now held), one, or a few (held heads
    /// that it ends the wait of, then its own).
    pub fn push<'a>(&mut self, h: &SampleHeader, frame: &'a [u8]) -> Vec<Message<'a>> {
        let mut out = Vec::new();
        self.expire(h.ts_ns, &mut out);
        let kind = kind_of(h);
        let payload_off = usize::from(h.payload_off);
        let as_sent = |out: &mut Vec<Message<'a>>| {
            let payload = Cow::Borrowed(frame.get(payload_off..).unwrap_or_default());
            out.push(Message { header: *h, kind, payload });
        };
        let Some(seg) = (h.key.proto == ip_proto::TCP).then(|| tcp_segment(frame, payload_off)).flatten() else {
            as_sent(&mut out);
            return out;
        };
        let payload = frame.get(payload_off..seg.end).unwrap_or_default();
        if !self.remember(fingerprint(&h.key, &seg, payload)) {
            self.stats.retransmissions += 1;
            return out;
        }
        let whole = seg.whole(payload_off);
        if let Some(mut held) = self.take(&h.key) {
            if seg.seq == held.next_seq {
                let room = self.limits.max_bytes.saturating_sub(held.bytes.len());
                held.bytes.extend_from_slice(payload.get(..room).unwrap_or(payload));
                held.next_seq = held.next_seq.wrapping_add(seg.len as u32);
                held.last_ns = h.ts_ns;
                if whole && held.bytes.len() < self.limits.max_bytes && incomplete_head(&held.bytes) {
                    held.joined += 1;
                    self.stats.segments_joined += 1;
                    self.hold(held, &mut out);
                    return out;
                }
                if let Some(joined_kind) = classify_tcp(h.key.src_port, h.key.dst_port, Peek::of(&held.bytes)) {
                    self.stats.segments_joined += 1;
                    out.push(Message { header: held.header, kind: joined_kind, payload: Cow::Owned(held.bytes) });
                    return out;
                }
                // No protocol after all: both go out as they came.
                held.bytes.truncate(held.bytes.len() - payload.len().min(room));
                self.let_go(held, &mut out);
            } else if seg.seq == held.first_seq && payload.starts_with(&held.bytes) {
                // A retransmission that covers the held head with more bytes: it replaces it.
                self.stats.retransmissions += 1;
            } else {
                self.let_go(held, &mut out);
            }
        }
        if whole
            && payload.len() < self.limits.max_bytes
            && matches!(kind, SampleKind::Http | SampleKind::Flow)
            && incomplete_head(payload)
        {
            let held = Held {
                header: *h,
                bytes: payload.to_vec(),
                first_seq: seg.seq,
                next_seq: seg.seq.wrapping_add(seg.len as u32),
                joined: 0,
                last_ns: h.ts_ns,
                tick: 0,
            };
            self.hold(held, &mut out);
            return out;
        }
        as_sent(&mut out);
        out
    }

    /// Lets every held head go, as it came (least recently used first).
    pub fn flush(&mut self) -> Vec<Message<'static>> {
        let mut out = Vec::new();
        while let Some((_, key)) = self.order.pop_first() {
            if let Some(held) = self.held.remove(&key) {
                self.let_go(held, &mut out);
            }
        }
        out
    }

    /// Lets go of the heads that have waited longer than the bound at `now_ns`: the live agent
    /// asks on every poll, since a quiet network sends no sample that would end the wait.
    pub fn expire_at(&mut self, now_ns: u64) -> Vec<Message<'static>> {
        let mut out = Vec::new();
        self.expire(now_ns, &mut out);
        out
    }

    /// Whether the fingerprint is new (then remembered, the oldest forgotten past the bound).
    fn remember(&mut self, fp: u64) -> bool {
        if self.limits.recent_segments == 0 {
            return true;
        }
        if !self.recent.insert(fp) {
            return false;
        }
        self.recent_order.push_back(fp);
        if self.recent_order.len() > self.limits.recent_segments
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        true
    }

    fn take(&mut self, key: &ConvKey) -> Option<Held> {
        let held = self.held.remove(key)?;
        self.order.remove(&held.tick);
        Some(held)
    }

    /// Holds `held` as the most recently used, pushing the least recently used out if full.
    fn hold(&mut self, mut held: Held, out: &mut Vec<Message<'_>>) {
        while self.held.len() >= self.limits.max_held.max(1) {
            let Some((_, key)) = self.order.pop_first() else { break };
            if let Some(old) = self.held.remove(&key) {
                self.stats.evictions += 1;
                self.let_go(old, out);
            }
        }
        self.tick += 1;
        held.tick = self.tick;
        self.order.insert(held.tick, held.header.key);
        self.held.insert(held.header.key, held);
    }

    /// Held heads that waited longer than the bound by the clock of the sample at `now_ns`.
    fn expire(&mut self, now_ns: u64, out: &mut Vec<Message<'_>>) {
        while let Some((_, key)) = self.order.first_key_value() {
            let key = *key;
            if self.held.get(&key).is_some_and(|h| now_ns.saturating_sub(h.last_ns) <= self.limits.hold_ns) {
                break;
            }
            if let Some(held) = self.take(&key) {
                self.let_go(held, out);
            } else {
                self.order.pop_first();
            }
        }
    }

    /// A held head goes out without (the rest of) its continuation: as the segment it came in,
    /// or as what was joined of it, classified.
    fn let_go(&mut self, held: Held, out: &mut Vec<Message<'_>>) {
        self.stats.segments_unjoined += 1;
        let h = held.header;
        let kind = match held.joined {
            0 => kind_of(&h),
            _ => classify_tcp(h.key.src_port, h.key.dst_port, Peek::of(&held.bytes)).unwrap_or(kind_of(&h)),
        };
        out.push(Message { header: h, kind, payload: Cow::Owned(held.bytes) });
    }
}

/// A camera's TCP segment to 198.51.100.20:80 in Ethernet and IPv4, from port `sport`, with
/// `tcp_options` (a multiple of 4 bytes); its payload starts at 54 + `tcp_options.len()`.
#[cfg(test)]
pub(crate) fn test_frame(sport: u16, seq: u32, tcp_options: &[u8], payload: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + tcp_options.len();
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0x77, 0, 0, 0, 0x01]);
    f.extend_from_slice(&[0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + tcp_len + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 192, 168, 77, 151, 198, 51, 100, 20]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, ((tcp_len / 4) as u8) << 4, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(tcp_options);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{self, EventFields, http::Method};

    const CAM: [u8; 6] = [0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28];
    const GW: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
    const T0: u64 = 1_700_000_000_000_000_000;

    fn key(sport: u16) -> ConvKey {
        crate::ledger::v4_key(CAM, GW, [192, 168, 77, 151], [198, 51, 100, 20], 6, sport, 80)
    }

    /// A sample of a TCP segment from the camera's port `sport`, `ms` milliseconds after T0, of
    /// the kind the kernel gives it (its content check on the segment alone, else a flow sample).
    fn sample(sport: u16, seq: u32, payload: &[u8], ms: u64) -> (SampleHeader, Vec<u8>) {
        let frame = test_frame(sport, seq, &[], payload);
        let kind = classify_tcp(sport, 80, Peek::of(payload)).unwrap_or(SampleKind::Flow);
        let h = SampleHeader {
            ts_ns: T0 + ms * 1_000_000,
            ifindex: 3,
            wire_len: frame.len() as u32,
            cap_len: frame.len() as u32,
            payload_off: 54,
            kind: kind as u8,
            direction: 0,
            key: key(sport),
            batch_index: 0,
        };
        (h, frame)
    }

    /// What the reassembler lets out for each sample in turn: (sample index, kind, payload, ts).
    fn run(r: &mut Reassembler, samples: &[(SampleHeader, Vec<u8>)]) -> Vec<(SampleKind, Vec<u8>, u64)> {
        let mut got = Vec::new();
        for (h, frame) in samples {
            got.extend(r.push(h, frame).into_iter().map(|m| (m.kind, m.payload.into_owned(), m.header.ts_ns)));
        }
        got
    }

    fn http(m: &(SampleKind, Vec<u8>, u64)) -> proto::http::HttpEvent {
        match proto::parse(m.0, &m.1, true) {
            Ok(EventFields::Http(h)) => h,
            other => panic!("not HTTP: {other:?}"),
        }
    }

    const REST: &[u8] = b"/api/upload HTTP/1.1\r\nHost: cloud.example.com\r\nContent-Length: 2\r\n\r\nhi";

    #[test]
    fn the_kernel_recognises_every_start_held_for() {
        for start in HTTP_STARTS {
            let mut padded = start.to_vec();
            padded.resize(16, b'x');
            assert_eq!(classify_tcp(40_000, 80, Peek::of(&padded)), Some(SampleKind::Http), "{start:?}");
        }
    }

    #[test]
    fn a_method_alone_and_the_rest_make_one_request() {
        let mut r = Reassembler::default();
        let got = run(&mut r, &[sample(40_001, 1000, b"POST ", 0), sample(40_001, 1005, REST, 40)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, SampleKind::Http);
        assert_eq!(got[0].2, T0, "the first segment's time");
        let ev = http(&got[0]);
        assert_eq!(
            (ev.method, ev.uri.as_deref(), ev.host.as_deref(), ev.truncated),
            (Some(Method::Post), Some("/api/upload"), Some("cloud.example.com"), false)
        );
        assert_eq!(r.stats, ReassemblyStats { segments_joined: 1, ..ReassemblyStats::default() });
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn one_letter_then_the_rest() {
        let mut r = Reassembler::default();
        let got =
            run(&mut r, &[sample(40_002, 7, b"P", 0), sample(40_002, 8, b"OST /x HTTP/1.1\r\nHost: h\r\n\r\n", 1)]);
        let ev = http(&got[0]);
        assert_eq!((got.len(), ev.method, ev.uri.as_deref()), (1, Some(Method::Post), Some("/x")));
    }

    #[test]
    fn a_head_cut_in_its_uri_and_again_in_its_headers() {
        let mut r = Reassembler::default();
        let (a, b, c): (&[u8], &[u8], &[u8]) =
            (b"GET /firmware/cam-5.3", b".0.bin HTTP/1.1\r\nHost: fw.exa", b"mple.net\r\nRange: bytes=0-9\r\n\r\n");
        let seq = u32::MAX - 4; // the sequence numbers wrap between the segments
        let samples = [
            sample(40_003, seq, a, 0),
            sample(40_003, seq.wrapping_add(a.len() as u32), b, 1),
            sample(40_003, seq.wrapping_add((a.len() + b.len()) as u32), c, 2),
        ];
        let got = run(&mut r, &samples);
        assert_eq!(got.len(), 1, "{got:?}");
        let ev = http(&got[0]);
        assert_eq!(
            (ev.uri.as_deref(), ev.host.as_deref(), ev.range.as_deref()),
            (Some("/firmware/cam-5.3.0.bin"), Some("fw.example.net"), Some("bytes=0-9"))
        );
        assert_eq!(r.stats.segments_joined, 2);
    }

    #[test]
    fn a_retransmitted_segment_is_one_message() {
        let mut r = Reassembler::default();
        let full = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let got = run(&mut r, &[sample(40_004, 1, full, 0), sample(40_004, 1, full, 200)]);
        assert_eq!(got.len(), 1);
        // Held heads and their continuations, each twice (a capture where every frame passes
        // twice): still one request.
        let samples = [
            sample(40_005, 1, b"POST ", 0),
            sample(40_005, 1, b"POST ", 0),
            sample(40_005, 6, REST, 1),
            sample(40_005, 6, REST, 1),
        ];
        let got = run(&mut r, &samples);
        assert_eq!((got.len(), http(&got[0]).uri.as_deref()), (1, Some("/api/upload")));
        assert_eq!((r.stats.retransmissions, r.stats.segments_joined), (3, 1));
        // The same bytes at another sequence number, or in another conversation, are new.
        let got = run(&mut r, &[sample(40_004, 1 + full.len() as u32, full, 300), sample(40_006, 1, full, 300)]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_repacketized_retransmission_replaces_the_held_head() {
        let mut r = Reassembler::default();
        let mut whole = b"POST ".to_vec();
        whole.extend_from_slice(REST);
        let got = run(&mut r, &[sample(40_007, 1, b"POST ", 0), sample(40_007, 1, &whole, 200)]);
        assert_eq!((got.len(), http(&got[0]).uri.as_deref()), (1, Some("/api/upload")));
        assert_eq!((r.stats.retransmissions, r.stats.segments_unjoined), (1, 0));
    }

    #[test]
    fn a_held_head_goes_out_once_it_waited_longer_than_the_bound() {
        let mut r = Reassembler::default();
        assert!(run(&mut r, &[sample(40_009, 1, b"POST ", 0)]).is_empty());
        assert!(r.expire_at(T0 + r.limits.hold_ns).is_empty(), "not longer than the bound yet");
        let out = r.expire_at(T0 + r.limits.hold_ns + 1);
        assert_eq!((out.len(), &out[0].payload[..]), (1, &b"POST "[..]));
        assert_eq!((r.held(), r.stats.segments_unjoined), (0, 1));
    }

    #[test]
    fn a_held_head_with_no_continuation_goes_out_on_flush() {
        let mut r = Reassembler::default();
        assert!(run(&mut r, &[sample(40_008, 1, b"POST ", 0)]).is_empty());
        assert_eq!(r.held(), 1);
        let out = r.flush();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, &out[0].payload[..], out[0].header.ts_ns), (SampleKind::Flow, &b"POST "[..], T0));
        assert_eq!(r.stats.segments_unjoined, 1);
        assert!(r.flush().is_empty());
        // A head cut in its URI goes out as the kernel's HTTP sample, cut.
        run(&mut r, &[sample(40_008, 100, b"GET /firmware/cam-5.3", 0)]);
        let out = r.flush();
        assert_eq!(out[0].kind, SampleKind::Http);
        let ev = proto::http::parse(&out[0].payload).expect("HTTP");
        assert_eq!((ev.method, ev.uri, ev.truncated), (Some(Method::Get), None, true));
    }

    #[test]
    fn a_segment_that_does_not_continue_the_head_lets_it_go_first() {
        let mut r = Reassembler::default();
        let got = run(&mut r, &[sample(40_009, 1, b"POST ", 0), sample(40_009, 500, b"\x00\x01binary", 1)]);
        assert_eq!(
            got.iter().map(|m| (m.0, m.1.len())).collect::<Vec<_>>(),
            [(SampleKind::Flow, 5), (SampleKind::Flow, 8)]
        );
        assert_eq!(r.stats.segments_unjoined, 1);
    }

    #[test]
    fn bytes_that_are_no_protocol_after_all_go_out_as_they_came() {
        let mut r = Reassembler::default();
        let got = run(&mut r, &[sample(40_010, 1, b"P", 0), sample(40_010, 2, b"ING me\r\n", 1)]);
        assert_eq!(
            got.iter().map(|m| (m.0, m.1.clone())).collect::<Vec<_>>(),
            [(SampleKind::Flow, b"P".to_vec()), (SampleKind::Flow, b"ING me\r\n".to_vec())]
        );
        assert_eq!((r.stats.segments_joined, r.stats.segments_unjoined), (0, 1));
    }

    #[test]
    fn a_flow_segment_passes_through_unchanged() {
        let mut r = Reassembler::default();
        let (h, frame) = sample(40_011, 1, b"\x00\x01\x02binary stuff", 0);
        let out = r.push(&h, &frame);
        assert_eq!(out, [Message { header: h, kind: SampleKind::Flow, payload: Cow::Borrowed(&frame[54..]) }]);
        // Not TCP at all, or a frame the walk does not agree with: untouched, even twice.
        let mut udp = h;
        udp.key.proto = ip_proto::UDP;
        for _ in 0..2 {
            assert_eq!(r.push(&udp, &frame).len(), 1);
        }
        let mut lying = h;
        lying.payload_off = 50;
        for _ in 0..2 {
            assert_eq!(r.push(&lying, &frame)[0].payload, &frame[50..]);
        }
        assert_eq!(r.stats, ReassemblyStats::default());
    }

    #[test]
    fn the_table_is_bounded_and_evictions_counted() {
        let mut r = Reassembler::new(Limits { max_held: 2, ..Limits::default() });
        let got = run(&mut r, &[sample(1, 1, b"POST ", 0), sample(2, 1, b"GET ", 1), sample(3, 1, b"PUT ", 2)]);
        assert_eq!(got.len(), 1, "the least recently used head goes out");
        assert_eq!(got[0].1, b"POST ");
        assert_eq!((r.held(), r.stats.evictions, r.stats.segments_unjoined), (2, 1, 1));
        // The survivors still join.
        let got = run(&mut r, &[sample(2, 5, b"/ HTTP/1.1\r\n\r\n", 3), sample(3, 5, b"/p HTTP/1.1\r\n\r\n", 4)]);
        assert_eq!(got.iter().map(|m| http(m).uri.unwrap_or_default()).collect::<Vec<_>>(), ["/", "/p"]);
    }

    #[test]
    fn a_held_head_waits_a_bounded_time() {
        let mut r = Reassembler::default();
        run(&mut r, &[sample(40_012, 1, b"POST ", 0)]);
        let got = run(&mut r, &[sample(40_013, 1, b"\x00binary", 4_000)]);
        assert_eq!(got.len(), 1, "four seconds later it still waits");
        let got = run(&mut r, &[sample(40_013, 8, b"\x00binary", 6_000)]);
        assert_eq!(got.iter().map(|m| m.1.clone()).collect::<Vec<_>>(), [b"POST ".to_vec(), b"\x00binary".to_vec()]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_head_longer_than_the_bound_goes_out_cut() {
        let mut r = Reassembler::new(Limits { max_bytes: 64, ..Limits::default() });
        let a = b"GET /a HTTP/1.1\r\nHost: h\r\nX-Long: ".to_vec();
        let b = [b'x'; 100];
        let got = run(&mut r, &[sample(40_014, 1, &a, 0), sample(40_014, 1 + a.len() as u32, &b, 1)]);
        assert_eq!((got.len(), got[0].1.len()), (1, 64));
        let ev = http(&got[0]);
        assert_eq!((ev.host.as_deref(), ev.truncated), (Some("h"), true));
    }

    #[test]
    fn a_segment_cut_by_the_snapshot_is_not_held() {
        let mut r = Reassembler::default();
        let (mut h, frame) = sample(40_015, 1, b"GET /firmware/cam-5.3.0.bin HTTP/1.1\r\n", 0);
        let cut = &frame[..70];
        h.cap_len = 70;
        assert_eq!(r.push(&h, cut).len(), 1);
        assert_eq!(r.held(), 0);
    }

    /// Frames and headers mangled at random never panic the walk or the reassembly, and whatever
    /// goes in comes out or is counted (with no bound on time, every held head is flushed).
    #[test]
    fn mangled_frames_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            sample(40_100, 1, b"POST ", 0),
            sample(40_100, 6, REST, 1),
            sample(40_101, u32::MAX, b"GET /firmware/cam-5.3", 2),
            sample(40_102, 9, b"\x00\x01binary", 3),
        ];
        let mut r = Reassembler::new(Limits { max_held: 3, max_bytes: 40, recent_segments: 16, hold_ns: 1_000_000 });
        let (mut pushed, mut out) = (0u64, 0u64);
        for _ in 0..50_000 {
            let (mut h, mut f) = seeds[(next() % 4) as usize].clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % f.len().max(1);
                match next() % 4 {
                    0 if !f.is_empty() => f[at] = next() as u8,
                    1 => f.truncate(at),
                    2 => h.payload_off = (next() % 120) as u16,
                    _ => h.key.src_port = (next() % 3) as u16,
                }
            }
            h.ts_ns = T0 + next() % 10_000_000;
            pushed += 1;
            out += r.push(&h, &f).len() as u64;
        }
        out += r.flush().len() as u64;
        let s = r.stats;
        assert_eq!(pushed, out + s.retransmissions + s.segments_joined, "every sample comes out, joined or dropped");
    }

    #[test]
    fn the_walk_finds_tcp_behind_tags_pppoe_options_and_ipv6_extensions() {
        let plain = test_frame(40_000, 0xdead_beef, &[], b"GET ");
        let seg = TcpSegment { seq: 0xdead_beef, len: 4, end: 58 };
        assert_eq!(tcp_segment(&plain, 54), Some(seg));
        assert_eq!(tcp_segment(&plain, 50), None, "the kernel's offset must agree");
        // TCP options (timestamps), and Ethernet padding after a short segment.
        let mut ts = test_frame(40_000, 9, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], b"P");
        ts.resize(80, 0);
        assert_eq!(tcp_segment(&ts, 66), Some(TcpSegment { seq: 9, len: 1, end: 67 }));
        // Cut by the snapshot: not whole.
        let cut = tcp_segment(&plain[..56], 54).expect("parses");
        assert!(!cut.whole(54) && seg.whole(54));
        // Three VLAN tags (802.1ad, then 802.1Q twice).
        let mut tagged = plain[..12].to_vec();
        for tpid in [0x88a8u16, 0x8100, 0x8100] {
            tagged.extend_from_slice(&tpid.to_be_bytes());
            tagged.extend_from_slice(&[0, 7]);
        }
        tagged.extend_from_slice(&plain[12..]);
        assert_eq!(tcp_segment(&tagged, 66).map(|s| s.seq), Some(0xdead_beef));
        // PPPoE session, PPP protocol field full and compressed.
        for ppp_field in [&[0x00, 0x21][..], &[0x21]] {
            let mut pppoe = plain[..12].to_vec();
            pppoe.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 0]);
            pppoe.extend_from_slice(ppp_field);
            pppoe.extend_from_slice(&plain[14..]);
            let off = 54 + 6 + ppp_field.len();
            assert_eq!(tcp_segment(&pppoe, off).map(|s| s.seq), Some(0xdead_beef), "{ppp_field:?}");
        }
        // IPv4 options.
        let mut opts = plain[..14].to_vec();
        opts.extend_from_slice(&[0x46, 0, 0, 48]);
        opts.extend_from_slice(&plain[18..34]);
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&plain[34..]);
        assert_eq!(tcp_segment(&opts, 58).map(|s| s.len), Some(4));
        // A fragment is not joined.
        let mut frag = plain.clone();
        frag[20] = 0x20;
        assert_eq!(tcp_segment(&frag, 54), None);
        // IPv6 with hop-by-hop and destination options.
        let mut v6 = plain[..12].to_vec();
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 16 + 20 + 4, 0, 64]);
        v6.extend_from_slice(&[0xfd; 32]);
        v6.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        v6.extend_from_slice(&plain[34..]);
        assert_eq!(tcp_segment(&v6, 14 + 40 + 16 + 20), Some(TcpSegment { seq: 0xdead_beef, len: 4, end: 94 }));
        // Not TCP, or not IP.
        let mut udp = plain.clone();
        udp[23] = 17;
        assert_eq!(tcp_segment(&udp, 54), None);
        assert_eq!(tcp_segment(&plain[..30], 54), None);
        assert_eq!(tcp_segment(&[], 0), None);
    }
}
