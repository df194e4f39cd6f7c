//! Samples from the kernel become events: decoded, parsed by the protocol's parser, counted per
//! device and kind, kept (bounded) for the report, written to the event log, and mined for names.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::IpAddr,
};

use agent_common::{
    sample::{SampleHeader, SampleKind},
    wire::ip_proto,
};
use serde::Serialize;

use crate::{
    bounded::{TableSize, entry_bytes, evict_idlest, excess},
    clock::Clock,
    ledger::conv_ips,
    mac::Mac,
    names::Names,
    proto::{self, EventFields},
    reassembly::{Message, Reassembler},
};

/// Events kept for the report, in number and in bytes (their size in the report: a DNS answer
/// of compressed names can be 100 KB); older ones are dropped first and counted.
pub const MAX_REPORT_EVENTS: usize = 10_000;
pub const MAX_REPORT_EVENT_BYTES: usize = 8 << 20;
/// Devices whose events are counted by kind, and devices whose NTP servers are listed: past
/// them, the least recently seen make room (devices with metric series of their own never do).
pub const MAX_COUNTED_DEVICES: usize = 16_384;
/// NTP servers listed per device; more are not listed (the detector counts them).
pub const MAX_NTP_SERVERS: usize = 1024;

/// One record of the SAMPLES ring: its header and the captured bytes of the frame. `None` when
/// the record is shorter than a header or claims more bytes than it carries.
pub fn decode(record: &[u8]) -> Option<(SampleHeader, &[u8])> {
    let size = size_of::<SampleHeader>();
    if record.len() < size {
        return None;
    }
    // SAFETY: SampleHeader is repr(C) plain data, valid for any bytes; the read is unaligned-safe.
    let h: SampleHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let data = record.get(size..size + h.cap_len as usize)?;
    Some((h, data))
}

/// The ring record [`decode`] reads: `h` then the frame's bytes (tests make samples with it).
#[cfg(test)]
pub(crate) fn encode(h: &SampleHeader, frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; size_of::<SampleHeader>()];
    // SAFETY: writing a plain-data header into a buffer of its size.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), *h) };
    out.extend_from_slice(frame);
    out
}

/// A ring record of `payload` behind 42 bytes of (unread) headers, stamped `ts_ns` (tests).
#[cfg(test)]
pub(crate) fn sample_record(kind: SampleKind, key: agent_common::ConvKey, payload: &[u8], ts_ns: u64) -> Vec<u8> {
    let mut frame = vec![0u8; 42];
    frame.extend_from_slice(payload);
    let len = frame.len() as u32;
    let h = SampleHeader {
        ts_ns,
        ifindex: 3,
        wire_len: len,
        cap_len: len,
        payload_off: 42,
        kind: kind as u8,
        direction: 0,
        key,
        batch_index: 0,
    };
    encode(&h, &frame)
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Sequence number from 1, in the order events were made: findings cite their evidence by it.
    pub id: u64,
    pub ts: f64,
    #[serde(serialize_with = "kind_name")]
    pub kind: SampleKind,
    pub src_mac: Mac,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst_mac: Mac,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(flatten)]
    pub fields: EventFields,
}

fn kind_name<S: serde::Serializer>(kind: &SampleKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// The event of a payload of `kind` (one segment's, or several joined by [`Reassembler`]) with the
/// addresses and time of `h`.
fn event_of(
    h: &SampleHeader,
    kind: SampleKind,
    payload: &[u8],
    clock: Clock,
) -> Result<Event, (SampleKind, proto::ParseError)> {
    let fields = proto::parse(kind, payload, h.key.proto == ip_proto::TCP).map_err(|e| (kind, e))?;
    let ips = conv_ips(&h.key);
    let ports = matches!(h.key.proto, ip_proto::TCP | ip_proto::UDP);
    Ok(Event {
        id: 0,
        ts: clock.seconds(h.ts_ns),
        kind,
        src_mac: Mac(h.key.src_mac),
        src_ip: ips.map(|(s, _)| s),
        src_port: ports.then_some(h.key.src_port),
        dst_mac: Mac(h.key.dst_mac),
        dst_ip: ips.map(|(_, d)| d),
        dst_port: ports.then_some(h.key.dst_port),
        fields,
    })
}

/// A device's events by kind, and the id of its latest (the least recently seen make room).
#[derive(Debug, Default, Clone)]
pub struct Counted {
    pub by_kind: BTreeMap<SampleKind, u64>,
    pub last_id: u64,
}

/// A device's NTP servers (client mode), and the id of its latest question.
#[derive(Debug, Default, Clone)]
pub struct NtpServers {
    pub servers: BTreeSet<IpAddr>,
    pub last_id: u64,
}

/// Everything the events left behind.
#[derive(Debug, Default)]
pub struct EventStore {
    pub recent: VecDeque<Event>,
    /// The size of each of `recent` in the report, and their sum.
    recent_sizes: VecDeque<usize>,
    recent_bytes: usize,
    pub dropped_from_report: u64,
    /// Events per source MAC and kind.
    pub counts: BTreeMap<Mac, Counted>,
    /// What the evicted devices of `counts` counted, by kind (metrics add it to `other`).
    pub counts_departed: BTreeMap<SampleKind, u64>,
    counts_evicted: u64,
    /// Devices of `counts` never evicted (see `Ledger::pin`).
    pinned: BTreeSet<Mac>,
    pub parse_errors: BTreeMap<SampleKind, u64>,
    pub undecodable: u64,
    pub names: Names,
    /// NTP servers each device asked (client mode).
    pub ntp_servers: BTreeMap<Mac, NtpServers>,
    ntp_evicted: u64,
    /// Events made so far (the last event's id).
    pub made: u64,
    /// TCP heads split over segments joined, retransmissions dropped, before parsing.
    pub reassembly: Reassembler,
}

impl EventStore {
    /// Handles one ring record: `on_event` gets each event it made, oldest first: none (a
    /// retransmission, a head held for its continuation),
    /// one, or a few (held heads that this record ended the wait of, then its own): see
    /// [`Reassembler::push`].
    pub fn handle(&mut self, record: &[u8], clock: Clock, mut on_event: impl FnMut(&Event)) {
        let Some((h, data)) = decode(record) else {
            self.undecodable += 1;
            return;
        };
        for message in self.reassembly.push(&h, data) {
            self.add(&message, clock, &mut on_event);
        }
    }

    /// Makes events of the heads still held for their continuation (replay's end, the agent's
    /// exit): nothing is lost in the reassembly.
    pub fn flush(&mut self, clock: Clock, mut on_event: impl FnMut(&Event)) {
        for message in self.reassembly.flush() {
            self.add(&message, clock, &mut on_event);
        }
    }

    /// Makes events of the heads held longer than the reassembly's bound at `now_ns` (the
    /// program's clock): the live agent calls it on every poll.
    pub fn expire(&mut self, now_ns: u64, clock: Clock, mut on_event: impl FnMut(&Event)) {
        for message in self.reassembly.expire_at(now_ns) {
            self.add(&message, clock, &mut on_event);
        }
    }

    /// The wall clock jumped by `delta` seconds: the kept events' times move with it.
    pub fn shift_times(&mut self, delta: f64) {
        for ev in &mut self.recent {
            ev.ts += delta;
        }
    }

    fn add(&mut self, message: &Message<'_>, clock: Clock, on_event: &mut impl FnMut(&Event)) {
        let (h, kind) = (&message.header, message.kind);
        let mut ev = match event_of(h, kind, &message.payload, clock) {
            Ok(ev) => ev,
            Err((kind, e)) => {
                tracing::debug!(kind = kind.name(), "sample not parsed: {e}");
                *self.parse_errors.entry(kind).or_default() += 1;
                return;
            }
        };
        self.made += 1;
        ev.id = self.made;
        let src = Mac(h.key.src_mac);
        self.count_event(src, kind, ev.id);
        let ips = conv_ips(&h.key);
        self.names.learn(ips, &ev.fields, ev.id);
        if let (EventFields::Ntp(n), Some((_, server))) = (&ev.fields, ips)
            && n.is_client()
        {
            self.add_ntp_server(src, server, ev.id);
        }
        let size = report_size(&ev);
        while !self.recent.is_empty()
            && (self.recent.len() >= MAX_REPORT_EVENTS || self.recent_bytes + size > MAX_REPORT_EVENT_BYTES)
        {
            self.recent.pop_front();
            self.recent_bytes -= self.recent_sizes.pop_front().unwrap_or(0);
            self.dropped_from_report += 1;
        }
        self.recent.push_back(ev);
        self.recent_sizes.push_back(size);
        self.recent_bytes += size;
        if let Some(ev) = self.recent.back() {
            on_event(ev);
        }
    }
}

impl EventStore {
    /// Keeps these devices' event counts whatever the bound (see `Ledger::pin`).
    pub fn pin(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.pinned.extend(macs);
    }

    /// Events of `kind` from `mac` (while it is kept).
    pub fn events_of(&self, mac: Mac, kind: SampleKind) -> u64 {
        self.counts.get(&mac).and_then(|c| c.by_kind.get(&kind)).copied().unwrap_or(0)
    }

    fn count_event(&mut self, src: Mac, kind: SampleKind, id: u64) {
        let c = self.counts.entry(src).or_default();
        *c.by_kind.entry(kind).or_default() += 1;
        c.last_id = id;
        let n = excess(self.counts.len(), MAX_COUNTED_DEVICES);
        let departed = &mut self.counts_departed;
        let pinned = &self.pinned;
        self.counts_evicted += evict_idlest(
            &mut self.counts,
            n,
            |c| c.last_id,
            |mac, _| pinned.contains(mac),
            |_, c| {
                for (k, n) in c.by_kind {
                    *departed.entry(k).or_default() += n;
                }
            },
        ) as u64;
    }

    fn add_ntp_server(&mut self, src: Mac, server: IpAddr, id: u64) {
        let s = self.ntp_servers.entry(src).or_default();
        if s.servers.len() < MAX_NTP_SERVERS {
            s.servers.insert(server);
        }
        s.last_id = id;
        let n = excess(self.ntp_servers.len(), MAX_COUNTED_DEVICES);
        self.ntp_evicted += evict_idlest(&mut self.ntp_servers, n, |s| s.last_id, |_, _| false, |_, _| {}) as u64;
    }

    /// The store's tables, for the metrics and the report.
    pub fn tables(&self) -> [TableSize; 4] {
        let kinds: usize = self.counts.values().map(|c| c.by_kind.len()).sum();
        let servers: usize = self.ntp_servers.values().map(|s| s.servers.len()).sum();
        [
            TableSize {
                table: "report_events",
                entries: self.recent.len(),
                bytes: self.recent_bytes,
                max_entries: MAX_REPORT_EVENTS,
                evicted: self.dropped_from_report,
            },
            TableSize {
                table: "event_counts",
                entries: self.counts.len(),
                bytes: self.counts.len() * entry_bytes::<Mac, Counted>() + kinds * entry_bytes::<SampleKind, u64>(),
                max_entries: MAX_COUNTED_DEVICES,
                evicted: self.counts_evicted,
            },
            TableSize {
                table: "ntp_servers",
                entries: self.ntp_servers.len(),
                bytes: self.ntp_servers.len() * entry_bytes::<Mac, NtpServers>()
                    + servers * entry_bytes::<IpAddr, ()>(),
                max_entries: MAX_COUNTED_DEVICES,
                evicted: self.ntp_evicted,
            },
            self.names.table(),
        ]
    }
}

/// What an event takes in the report: its JSON's length (counted, not written), plus the
/// struct itself. Its heap is about as large as its text.
fn report_size(ev: &Event) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, ev);
    size_of::<Event>() + c.0
}

#[cfg(test)]
mod tests {
    use agent_common::{ConvKey, sample::SAMPLE_MAX};

    use super::*;

    fn record(kind: SampleKind, key: ConvKey, frame: &[u8], payload_off: u16) -> Vec<u8> {
        let h = SampleHeader {
            ts_ns: 1_620_000_000_000_000_000,
            ifindex: 3,
            wire_len: frame.len() as u32,
            cap_len: frame.len() as u32,
            payload_off,
            kind: kind as u8,
            direction: 0,
            key,
            batch_index: 0,
        };
        let mut out = encode(&h, frame);
        // The ring hands over whole reserved records: padding after the captured bytes.
        out.resize(size_of::<SampleHeader>() + SAMPLE_MAX, 0);
        out
    }

    /// The events a record makes.
    fn handle(store: &mut EventStore, record: &[u8]) -> Vec<Event> {
        let mut made = Vec::new();
        store.handle(record, Clock::Epoch, |ev| made.push(ev.clone()));
        made
    }

    fn key(proto: u8, sport: u16, dport: u16) -> ConvKey {
        let (cam, ssdp_group) = ([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28], [1, 0, 0x5e, 0x7f, 0xff, 0xfa]);
        crate::ledger::v4_key(cam, ssdp_group, [192, 168, 2, 151], [239, 255, 255, 250], proto, sport, dport)
    }

    #[test]
    fn an_ssdp_sample_becomes_an_event_in_the_report_schema() {
        let payload = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n";
        let mut frame = vec![0u8; 42];
        frame.extend_from_slice(payload);
        let mut store = EventStore::default();
        let made = handle(&mut store, &record(SampleKind::Ssdp, key(17, 58002, 1900), &frame, 42));
        let [ev] = made.as_slice() else { panic!("one event: {made:?}") };
        let json = serde_json::to_value(ev).unwrap();
        assert_eq!(json["kind"], "ssdp");
        assert_eq!(json["method"], "M-SEARCH");
        assert_eq!(json["st"], "upnp:rootdevice");
        assert_eq!(json["src_mac"], "80:9f:9b:45:a3:28");
        assert_eq!(json["dst_ip"], "239.255.255.250");
        assert_eq!(json["src_port"], 58002);
        assert_eq!(json["ts"], 1_620_000_000.0);
        assert_eq!(store.events_of(Mac([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28]), SampleKind::Ssdp), 1);
    }

    #[test]
    fn the_events_kept_are_bounded_in_number_and_bytes_and_counts_in_devices() {
        let mut store = EventStore::default();
        let pinned = Mac([2, 0x66, 0, 0, 0, 0]);
        store.pin([pinned]);
        // Long SSDP answers (a 1,400-byte ST each) from 20,000 spoofed MACs.
        let mut frame = vec![0u8; 42];
        frame.extend_from_slice(b"HTTP/1.1 200 OK\r\nST: ");
        frame.extend(std::iter::repeat_n(b'x', 1400));
        frame.extend_from_slice(b"\r\n\r\n");
        let n = 20_000u32;
        for i in 0..n {
            let b = i.to_be_bytes();
            let mut k = key(17, 1900, 40000);
            k.src_mac = [2, 0x66, b[0], b[1], b[2], b[3]];
            assert_eq!(handle(&mut store, &record(SampleKind::Ssdp, k, &frame, 42)).len(), 1);
        }
        let json: usize = store.recent.iter().map(|e| serde_json::to_vec(e).unwrap().len()).sum();
        assert!(json <= MAX_REPORT_EVENT_BYTES, "{json} bytes of events kept");
        assert!(store.recent.len() < MAX_REPORT_EVENTS, "the bytes bound bit first: {}", store.recent.len());
        assert_eq!(store.recent.len() as u64 + store.dropped_from_report, u64::from(n));
        assert_eq!(store.recent.back().map(|e| e.id), Some(u64::from(n)), "the latest is kept");
        // Counts: bounded in devices, the pinned one kept, nothing lost from the sums.
        assert!(store.counts.len() <= MAX_COUNTED_DEVICES);
        assert_eq!(store.events_of(pinned, SampleKind::Ssdp), 1);
        let kept: u64 = store.counts.values().flat_map(|c| c.by_kind.values()).sum();
        assert_eq!(kept + store.counts_departed[&SampleKind::Ssdp], u64::from(n));
        let [_, counts, ..] = store.tables();
        assert_eq!(counts.evicted as usize, n as usize - store.counts.len());
    }

    #[test]
    fn unparsable_and_undecodable_samples_are_counted() {
        let mut store = EventStore::default();
        let frame = vec![0u8; 44];
        assert!(handle(&mut store, &record(SampleKind::Ntp, key(17, 40000, 123), &frame, 42)).is_empty());
        assert_eq!(store.parse_errors[&SampleKind::Ntp], 1);
        assert!(handle(&mut store, &[1, 2, 3]).is_empty());
        let mut lying = record(SampleKind::Ntp, key(17, 40000, 123), &frame, 42);
        lying.truncate(size_of::<SampleHeader>() + 10);
        assert!(decode(&lying).is_none());
        assert!(handle(&mut store, &lying).is_empty());
        assert_eq!(store.undecodable, 2);
        assert!(store.recent.is_empty());
    }

    /// The camera's TCP segment to port 80 (see `reassembly::test_frame`), as the kernel samples
    /// it: HTTP when its first 12 bytes say so, else one of the conversation's first packets.
    fn tcp_record(seq: u32, payload: &[u8]) -> Vec<u8> {
        let frame = crate::reassembly::test_frame(40_001, seq, &[], payload);
        let kind = agent_common::sample::classify_tcp(40_001, 80, agent_common::sample::Peek::of(payload));
        let cam = [0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28];
        let k =
            crate::ledger::v4_key(cam, [2, 0x77, 0, 0, 0, 1], [192, 168, 77, 151], [198, 51, 100, 20], 6, 40_001, 80);
        record(kind.unwrap_or(SampleKind::Flow), k, &frame, 54)
    }

    #[test]
    fn a_method_alone_and_the_rest_make_one_http_event_and_a_repeat_none() {
        let mut store = EventStore::default();
        assert!(handle(&mut store, &tcp_record(100, b"POST ")).is_empty(), "held for the rest");
        let rest = b"/api/upload HTTP/1.1\r\nHost: cloud.example.com\r\n\r\n";
        let made = handle(&mut store, &tcp_record(105, rest));
        let [ev] = made.as_slice() else { panic!("one event: {made:?}") };
        let json = serde_json::to_value(ev).unwrap();
        assert_eq!(
            (&json["kind"], &json["method"], &json["uri"], &json["host"]),
            (&"http".into(), &"POST".into(), &"/api/upload".into(), &"cloud.example.com".into())
        );
        assert!(handle(&mut store, &tcp_record(105, rest)).is_empty(), "a retransmission");
        let cam = Mac([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28]);
        assert_eq!((store.events_of(cam, SampleKind::Http), store.events_of(cam, SampleKind::Flow)), (1, 0));
        assert_eq!((store.reassembly.stats.segments_joined, store.reassembly.stats.retransmissions), (1, 1));
        // A head that never gets its continuation comes out on flush, as it came.
        assert!(handle(&mut store, &tcp_record(5000, b"GET ")).is_empty());
        let mut flushed = Vec::new();
        store.flush(Clock::Epoch, |ev| flushed.push(ev.clone()));
        assert_eq!(flushed.len(), 1);
        assert_eq!((flushed[0].kind, store.recent.len()), (SampleKind::Flow, 2));
    }
}
