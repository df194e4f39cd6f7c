//! Samples from the kernel become events: decoded, parsed by the protocol's parser, counted per
//! device and kind, kept (bounded) for the report, written to the event log, and mined for names.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use agent_common::{
    sample::{SampleHeader, SampleKind},
    wire::ip_proto,
};
use serde::Serialize;

use crate::{
    clock::Clock,
    ledger::conv_ips,
    mac::Mac,
    names::Names,
    proto::{self, EventFields},
    reassembly::{Message, Reassembler},
};

/// Events kept for the report; older ones are dropped first and counted.
pub const MAX_REPORT_EVENTS: usize = 10_000;

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

/// Everything the events left behind.
#[derive(Debug, Default)]
pub struct EventStore {
    pub recent: VecDeque<Event>,
    pub dropped_from_report: u64,
    /// Events per source MAC and kind.
    pub counts: BTreeMap<(Mac, SampleKind), u64>,
    pub parse_errors: BTreeMap<SampleKind, u64>,
    pub undecodable: u64,
    pub names: Names,
    /// NTP servers each device asked (client mode).
    pub ntp_servers: BTreeMap<Mac, std::collections::BTreeSet<IpAddr>>,
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
        *self.counts.entry((src, kind)).or_default() += 1;
        let ips = conv_ips(&h.key);
        self.names.learn(ips, &ev.fields);
        if let (EventFields::Ntp(n), Some((_, server))) = (&ev.fields, ips)
            && n.is_client()
        {
            self.ntp_servers.entry(src).or_default().insert(server);
        }
        if self.recent.len() >= MAX_REPORT_EVENTS {
            self.recent.pop_front();
            self.dropped_from_report += 1;
        }
        self.recent.push_back(ev);
        if let Some(ev) = self.recent.back() {
            on_event(ev);
        }
    }
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
            _pad: [0; 4],
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
        assert_eq!(store.counts[&(Mac([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28]), SampleKind::Ssdp)], 1);
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
        assert_eq!(
            (store.counts.get(&(cam, SampleKind::Http)), store.counts.get(&(cam, SampleKind::Flow))),
            (Some(&1), None)
        );
        assert_eq!((store.reassembly.stats.segments_joined, store.reassembly.stats.retransmissions), (1, 1));
        // A head that never gets its continuation comes out on flush, as it came.
        assert!(handle(&mut store, &tcp_record(5000, b"GET ")).is_empty());
        let mut flushed = Vec::new();
        store.flush(Clock::Epoch, |ev| flushed.push(ev.clone()));
        assert_eq!(flushed.len(), 1);
        assert_eq!((flushed[0].kind, store.recent.len()), (SampleKind::Flow, 2));
    }
}
